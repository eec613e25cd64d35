"""The links a transaction rewrites, found by element type (https://hl7.org/fhir/R4/bundle.html#references).

When a transaction gives its entries their ids, R4 (http.html#trules) has the server
replace every link to an entry's ``fullUrl``: ``Reference.reference``, elements of type
``uri``, ``url``, ``uuid`` and ``oid``, and ``<a href>`` / ``<img src>`` in narrative.
Elements of type ``canonical`` are not links to rewrite, nor are strings: an
``Identifier.value`` that happens to spell an entry's ``urn:uuid:`` stays as sent.

The types come from ``element_types.json`` (generated from the ``fhir.resources``
models by ``scripts/gen_search_parameters.py``, the table the search index compiler
uses too). :class:`LinkTypes` turns it, per complex type and on first use, into a plan
``json key -> (kind, type)`` so a walk only descends into elements that can hold a
link and looks at no string whose type is not a link type.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from typing import Any

REFERENCE = 0  # Reference.reference
URI = 1  # uri, url, uuid, oid
NARRATIVE = 2  # an href / src in Narrative.div
_COMPLEX = 3
_RESOURCE = 4
_XHTML = 5

LINK_PRIMITIVES = frozenset({"uri", "url", "uuid", "oid"})

Step = tuple[int, str]
# fix(kind, value) -> the replacement, or None to keep the value
Fix = Callable[[int, str], "str | None"]

_NARRATIVE_LINK = re.compile(
    r"(<a\b[^>]*?\shref|<img\b[^>]*?\ssrc)(\s*=\s*)(\"([^\"]*)\"|'([^']*)')", re.IGNORECASE
)


class LinkTypes:
    """Where links sit in resources of each type, from the element-type tables."""

    def __init__(self, element_types: dict[str, Any]) -> None:
        self._types: dict[str, dict[str, Any]] = element_types["types"]
        self._primitives = frozenset(element_types["primitives"])
        self._plans: dict[str, dict[str, Step]] = {}
        self._lock = threading.Lock()

    def plan(self, type_name: str) -> dict[str, Step]:
        """``json key -> (kind, type)`` for the elements of ``type_name`` that are links
        or may contain one (complex types, contained resources, primitive extensions)."""
        found = self._plans.get(type_name)
        if found is None:
            with self._lock:
                found = self._plans.get(type_name)
                if found is None:
                    found = self._plans[type_name] = self._build(type_name)
        return found

    def _build(self, type_name: str) -> dict[str, Step]:
        plan: dict[str, Step] = {}
        for name, (spec, _is_list) in self._types.get(type_name, {}).items():
            branches = spec.items() if isinstance(spec, dict) else ((name, spec),)
            for key, t in branches:
                if t in self._primitives:
                    if t in LINK_PRIMITIVES:
                        plan[key] = (URI, t)
                    elif t == "xhtml":
                        plan[key] = (_XHTML, t)
                    # a primitive's id and extensions sit beside it in ``_key``
                    plan["_" + key] = (_COMPLEX, "Element")
                elif t == "Resource":
                    plan[key] = (_RESOURCE, t)
                else:
                    plan[key] = (_COMPLEX, t)
        if type_name == "Reference":
            plan["reference"] = (REFERENCE, "string")
        return plan

    def rewrite(self, resource: dict[str, Any], fix: Fix) -> bool:
        """Replace, in place, each link of ``resource`` (and of the resources it contains)
        for which ``fix`` gives a new value; whether anything changed."""
        return self._walk(resource, self.plan(str(resource.get("resourceType", ""))), fix)

    def _walk(self, node: dict[str, Any], plan: dict[str, Step], fix: Fix) -> bool:
        changed = False
        for key, value in node.items():
            step = plan.get(key)
            if step is None:
                continue
            kind, sub = step
            if kind in (_COMPLEX, _RESOURCE):
                for item in value if isinstance(value, list) else (value,):
                    if not isinstance(item, dict):
                        continue
                    of = str(item.get("resourceType", "")) if kind == _RESOURCE else sub
                    if self._walk(item, self.plan(of), fix):
                        changed = True
            elif kind == _XHTML:
                if isinstance(value, str):
                    new = _narrative(value, fix)
                    if new is not None:
                        node[key] = new  # an existing key: the dict keeps its size
                        changed = True
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, str):
                        new = fix(kind, item)
                        if new is not None and new != item:
                            value[i] = new
                            changed = True
            elif isinstance(value, str):
                new = fix(kind, value)
                if new is not None and new != value:
                    node[key] = new
                    changed = True
        return changed


def _narrative(div: str, fix: Fix) -> str | None:
    """``div`` with its ``<a href>`` and ``<img src>`` links fixed; None when unchanged."""
    if "href" not in div and "src" not in div:
        return None
    changed = False

    def one(m: re.Match[str]) -> str:
        nonlocal changed
        quoted = m.group(4) if m.group(4) is not None else m.group(5)
        new = fix(NARRATIVE, html.unescape(quoted))
        if new is None or new == html.unescape(quoted):
            return m.group(0)
        changed = True
        quote = m.group(3)[0]
        return f"{m.group(1)}{m.group(2)}{quote}{html.escape(new, quote=True)}{quote}"

    out = _NARRATIVE_LINK.sub(one, div)
    return out if changed else None
