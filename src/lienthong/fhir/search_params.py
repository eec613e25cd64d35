"""Registry of the FHIR R4 search parameters supported by lienthong.

The data comes from the official R4 SearchParameter bundle
(https://hl7.org/fhir/R4/searchparameter-registry.html), compacted at build time by
``scripts/gen_search_parameters.py`` into ``fhir/data/search_parameters.json``. At run
time nothing outside the package is read.

A SearchParameter may list several ``base`` types and a FHIRPath ``expression`` that is
a union with one branch per base (``clinical-patient``: ``AllergyIntolerance.patient |
CarePlan.subject.where(resolve() is Patient) | ...``). The registry expands such a
parameter into one :class:`SearchParam` per concrete resource type, keeping only the
union branches rooted at that type, and expands ``Resource``-level parameters
(https://hl7.org/fhir/R4/search.html#all: ``_id``, ``_lastUpdated``, ``_tag``,
``_profile``, ``_security``, ``_source``) to every resource type.

Parameters whose semantics are not expressible as index rows are left out entirely:
``_text``, ``_content``, ``_query``, ``_list``, ``_has`` and ``_type`` (the query side
implements them, if at all, by other means). ``_id`` and ``_lastUpdated`` *are* in the
registry, so the query side can recognise them, but the index extractor skips them
because the store keeps them as columns (see :data:`COLUMN_PARAMS`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMN_PARAMS",
    "SKIPPED_PARAMS",
    "SearchParam",
    "SearchParamRegistry",
    "split_union",
]

#: Common parameters that never produce index rows because the store keeps them as
#: columns of the resource table.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})

#: Common parameters not registered at all (not indexable by value).
SKIPPED_PARAMS = frozenset({"_text", "_content", "_query", "_list", "_has", "_type"})

# Abstract bases whose parameters apply to every resource type.
_ABSTRACT_BASES = ("Resource", "DomainResource")

_WHERE_RESOLVE_IS = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)\s*$")


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one concrete resource type."""

    code: str  # e.g. "family"
    resource_type: str  # concrete type this instance is for, e.g. "Patient"
    type: str  # string|token|date|reference|number|quantity|uri|composite|special
    expression: str  # FHIRPath restricted to this type's union branches
    targets: tuple[str, ...]  # reference target types
    components: tuple[tuple[str, str], ...]  # composite: (component type, sub-expression)


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression at its top-level ``|`` operators.

    Parentheses and string literals are respected, so ``(A.b as X) | A.c.where(d='|')``
    yields two terms. Terms are returned stripped, in order.
    """
    terms: list[str] = []
    depth = 0
    in_str = False
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == "'":
                in_str = False
        elif ch == "'":
            in_str = True
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            terms.append(expression[start:i].strip())
            start = i + 1
        i += 1
    terms.append(expression[start:].strip())
    return [t for t in terms if t]


def _root_name(term: str) -> str:
    """First identifier of a union term: its root type (``(X.y as Z)`` -> ``X``)."""
    m = re.match(r"[\s(]*([A-Za-z_%][A-Za-z0-9_]*)", term)
    return m.group(1) if m else ""


def _restrict(expression: str, resource_type: str, bases: list[str]) -> str:
    """Keep the union terms of ``expression`` that apply to ``resource_type``."""
    if len(bases) == 1:
        # Nothing to separate. Also keeps the few R4 expressions written relative to
        # the resource (InsurancePlan-name is ``name | alias``).
        return expression
    terms = split_union(expression)
    kept = [t for t in terms if _root_name(t) in (resource_type, *_ABSTRACT_BASES)]
    return " | ".join(kept)


def _narrow_targets(expression: str, targets: Iterable[str]) -> tuple[str, ...]:
    """Narrow reference targets when every term filters with ``resolve() is X``.

    ``Observation.subject.where(resolve() is Patient)`` can only ever point at a
    Patient, whatever the (multi-base) SearchParameter's ``target`` list says; the query
    side uses targets to validate chains such as ``patient.name=...``.
    """
    targets = tuple(sorted(set(targets)))
    terms = split_union(expression)
    if not terms:
        return targets
    resolved: set[str] = set()
    for term in terms:
        m = _WHERE_RESOLVE_IS.search(term)
        if not m:
            return targets
        resolved.add(m.group(1))
    return tuple(sorted(resolved))


class SearchParamRegistry:
    """All search parameters, indexed by concrete resource type and code."""

    _default: SearchParamRegistry | None = None
    _default_lock = threading.Lock()

    def __init__(
        self,
        definitions: list[dict[str, Any]],
        element_types: dict[str, Any] | None = None,
    ) -> None:
        self._element_types = element_types
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        known_types: set[str] = set()
        if element_types is not None:
            known_types.update(element_types.get("resources", ()))
        for d in definitions:
            known_types.update(b for b in d.get("base", ()) if b not in _ABSTRACT_BASES)
        self._types = sorted(known_types)

        for d in definitions:
            code = d["code"]
            if code in SKIPPED_PARAMS:
                continue
            bases = d.get("base", ())
            abstract = any(b in _ABSTRACT_BASES for b in bases)
            concrete = self._types if abstract else list(bases)
            components = tuple(
                (c.get("type") or "", c["expression"]) for c in d.get("component", ())
            )
            for rt in concrete:
                expression = _restrict(d.get("expression", ""), rt, list(bases))
                param = SearchParam(
                    code=code,
                    resource_type=rt,
                    type=d["type"],
                    expression=expression,
                    targets=_narrow_targets(expression, d.get("target", ())),
                    components=components,
                )
                self._by_type.setdefault(rt, {})[code] = param

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_files(
        cls, search_parameters: Path | str, element_types: Path | str | None = None
    ) -> SearchParamRegistry:
        """Build a registry from generated JSON files (used by the generator/tests)."""
        defs = json.loads(Path(search_parameters).read_text(encoding="utf-8"))
        types = (
            json.loads(Path(element_types).read_text(encoding="utf-8"))
            if element_types is not None
            else None
        )
        return cls(defs, types)

    @classmethod
    def default(cls) -> SearchParamRegistry:
        """The registry built from the JSON shipped in ``lienthong.fhir.data`` (cached)."""
        if cls._default is None:
            with cls._default_lock:
                if cls._default is None:
                    data = resources.files("lienthong.fhir") / "data"
                    defs = json.loads((data / "search_parameters.json").read_text(encoding="utf-8"))
                    types = json.loads((data / "element_types.json").read_text(encoding="utf-8"))
                    cls._default = cls(defs, types)
        return cls._default

    # -- lookup -----------------------------------------------------------------------

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        """The parameter ``code`` of ``resource_type``, or None if not supported."""
        params = self._by_type.get(resource_type)
        return params.get(code) if params else None

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """All parameters of ``resource_type`` by code (a copy; empty if unknown)."""
        return dict(self._by_type.get(resource_type, {}))

    def resource_types(self) -> list[str]:
        """Every resource type known to the registry, sorted.

        The union of the R4 bundle's concrete bases and the resource models of
        ``fhir.resources.R4B`` used for the element-type tables.
        """
        return list(self._types)

    @property
    def element_types(self) -> dict[str, Any]:
        """Element-type tables (``element_types.json``) used to compile extractors."""
        if self._element_types is None:
            data = resources.files("lienthong.fhir") / "data"
            self._element_types = json.loads(
                (data / "element_types.json").read_text(encoding="utf-8")
            )
        return self._element_types
