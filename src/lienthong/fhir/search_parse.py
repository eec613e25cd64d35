"""Parse FHIR search parameters into a :class:`SearchQuery`.

Follows https://hl7.org/fhir/R4/search.html: modifiers (``:exact``,
``:contains``, ``:missing``, ``:not``, ``:text``, ``:[type]``, ``:below``,
``:above``, ``:mdm`` - the person of a Patient reference, expanded by
``lienthong.identity.person_search``), prefixes, escaping (``\\,`` ``\\|`` ``\\$``),
chaining one level (``subject:Patient.identifier=...``), reverse chaining (``_has``), and the
result parameters (``_count``, ``_sort``, ``_include``, ``_revinclude``,
``_summary``, ``_elements``, ``_total``). Unknown parameters raise 400 under
``Prefer: handling=strict`` and come back as warnings under ``lenient``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lienthong.fhir.errors import FhirError, Issue, bad_request, fhirpath_name
from lienthong.fhir.search_index import date_range, number_range
from lienthong.fhir.search_params import SearchParam, SearchParamRegistry
from lienthong.fhir.text import fold
from lienthong.storage.query import (
    PREFIXES,
    CanonicalValue,
    CompositeValue,
    Criterion,
    NearValue,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    TokenValue,
    Value,
)

RESULT_PARAMS = {
    "_count",
    "_offset",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_format",
    "_pretty",
}
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "mdm"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
    "special": set(),
}
# UCUM units of a near distance (location.html#positional), in km; km by default
NEAR_UNITS = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344}
#: The distance a near search without one looks within.
NEAR_DEFAULT_KM = 10.0
SUMMARY_MODES = {"true", "false", "text", "data", "count"}
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str | None  # None for *
    target_type: str | None
    iterate: bool = False  # :iterate (R4's older name :recurse): applied to included ones too


@dataclass
class SearchRequest:
    """A parsed search: the query the store runs plus how to shape the result."""

    query: SearchQuery
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    warnings: list[Issue] = field(default_factory=list)
    # the parameters that were understood, to build self/next links
    echo: list[tuple[str, str]] = field(default_factory=list)
    # a system-level search: the types whose common parameters it takes
    types: list[str] = field(default_factory=list)


def split_unescaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` not preceded by a backslash, then unescape ``\\,``, ``\\|``, ``\\$``."""
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", text)


class SearchParser:
    def __init__(
        self,
        registry: SearchParamRegistry,
        base_url: str = "",
        unindexed: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        """``unindexed(type)`` maps the codes the index cannot answer to the reason."""
        self.registry = registry
        self.base_url = base_url.rstrip("/")
        self.unindexed = unindexed or (lambda rtype: {})

    def parse(
        self,
        resource_type: str | None,
        params: list[tuple[str, str]],
        *,
        strict: bool = False,
        default_count: int = 50,
        max_count: int = 1000,
        types: list[str] | None = None,
    ) -> SearchRequest:
        """Parse ``params`` of a search of ``resource_type``; with ``resource_type`` None,
        a system-level search over ``types`` (every type when None), which takes the
        parameters all of those types share."""
        query = SearchQuery(resource_type, count=default_count)
        if resource_type is None and types is not None:
            query.resource_types = tuple(types)
        req = SearchRequest(query)
        if resource_type is None:
            req.types = types if types is not None else self.registry.resource_types()
        for name, raw in params:
            try:
                self._one(req, resource_type, name, raw, default_count, max_count)
            except UnknownParameter as exc:
                if strict:
                    raise bad_request(str(exc), fhirpath_name(name)) from None
                req.warnings.append(
                    Issue("not-supported", str(exc), "warning", (fhirpath_name(name),))
                )
            except FhirError as exc:
                raise exc.with_expressions(fhirpath_name) from None
        if req.summary == "count":
            query.count = 0
        return req

    # -- one parameter --------------------------------------------------

    def _one(
        self,
        req: SearchRequest,
        rtype: str | None,
        name: str,
        raw: str,
        default_count: int,
        max_count: int,
    ) -> None:
        q = req.query
        base_name, _, modifier = name.partition(":")
        if base_name in ("_include", "_revinclude") and modifier:
            if modifier not in ("iterate", "recurse"):
                raise bad_request(f"{base_name} has no modifier {modifier!r}", base_name)
            inc = self._include(rtype, base_name, raw, iterate=True)
            (req.includes if base_name == "_include" else req.revincludes).append(inc)
            req.echo.append((name, raw))
            return
        if name in RESULT_PARAMS:
            self._result_param(req, rtype, name, raw, max_count)
            if name not in ("_format", "_pretty", "_offset"):
                req.echo.append((name, raw))
            return
        if rtype is None:
            q.criteria.append(self._common(req.types, name, raw))
        else:
            q.criteria.append(self.criterion(rtype, name, raw))
        req.echo.append((name, raw))

    def _common(self, types: list[str], name: str, raw: str) -> Criterion:
        """A criterion of a system-level search: a parameter every searched type has,
        with the same type, answered by each type's own index rows."""
        base = name.split(":")[0]
        if not types:
            raise UnknownParameter(f"search parameter {name!r} needs a resource type")
        if name.startswith("_has:") or "." in base or "." in name.partition(":")[2]:
            raise UnknownParameter(f"{name!r}: chains and _has need a resource type")
        kinds = set()
        for t in types:
            sp = self._param(t, base)
            kinds.add(sp.type)
        if len(kinds) > 1:
            raise UnknownParameter(
                f"search parameter {base!r} has different types across the searched types"
            )
        crit = self.criterion(types[0], name, raw)
        if base not in ("_id", "_lastUpdated") and len(types) > 1:
            crit.sp_pairs = tuple((t, base) for t in types)
            if any(isinstance(v, CanonicalValue) for v in crit.values):
                raise UnknownParameter(f"{name}: url|version needs one resource type")
        return crit

    def _result_param(
        self, req: SearchRequest, rtype: str | None, name: str, raw: str, max_count: int
    ) -> None:
        q = req.query
        if name in ("_count", "_offset"):
            if not raw.isdigit():
                raise bad_request(f"{name} must be a non-negative integer, got {raw!r}", name)
            if name == "_count":
                q.count = min(int(raw), max_count)
            else:
                q.offset = int(raw)
        elif name == "_sort":
            for item in raw.split(","):
                desc = item.startswith("-")
                code = item[1:] if desc else item
                if code in ("_id", "_lastUpdated"):
                    q.sort.append(SortKey(code, "special", desc))
                    continue
                sp = self.registry.get(rtype, code) if rtype else None
                if sp is None or sp.type in ("special",):
                    raise bad_request(f"cannot sort by unknown parameter {code!r}", "_sort")
                q.sort.append(SortKey(code, sp.type, desc))
        elif name in ("_include", "_revinclude"):
            (req.includes if name == "_include" else req.revincludes).append(
                self._include(rtype, name, raw)
            )
        elif name == "_summary":
            if raw not in SUMMARY_MODES:
                raise bad_request(f"_summary must be one of {sorted(SUMMARY_MODES)}", "_summary")
            req.summary = raw
        elif name == "_elements":
            req.elements = [e.strip() for e in raw.split(",") if e.strip()]
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise bad_request("_total must be none, estimate or accurate", "_total")
            q.with_total = raw != "none"

    def _include(self, rtype: str | None, name: str, raw: str, iterate: bool = False) -> Include:
        parts = raw.split(":")
        if parts and parts[-1] == "iterate":
            parts = parts[:-1]
        if raw == "*":
            if rtype is None:
                raise bad_request(f"{name}=* needs a resource type", name)
            return Include(rtype, None, None, iterate)
        if len(parts) not in (2, 3):
            raise bad_request(f"{name} must be Type:param[:TargetType], got {raw!r}", name)
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if code == "*":
            return Include(source, None, target, iterate)
        sp = self.registry.get(source, code)
        if sp is None or sp.type != "reference":
            raise bad_request(f"{name}: {source} has no reference parameter {code!r}", name)
        if name == "_include" and rtype is not None and source != rtype and not iterate:
            raise bad_request(
                f"_include source type {source} is not the searched type {rtype}", name
            )
        return Include(source, code, target, iterate)

    # -- criteria -------------------------------------------------------

    def criterion(self, rtype: str, name: str, raw: str) -> Criterion:
        if name.startswith("_has:"):
            return self._has(rtype, name, raw)
        base, _, modifier = name.partition(":")
        chain_rest = None
        if "." in base:
            base, chain_rest = base.split(".", 1)
        elif modifier and "." in modifier:
            modifier, chain_rest = modifier.split(".", 1)
        sp = self._param(rtype, base)
        if chain_rest is not None:
            return self._chain(rtype, sp, modifier or None, chain_rest, raw)
        mod = modifier or None
        ptype = "token" if base == "_id" else ("date" if base == "_lastUpdated" else sp.type)
        if mod is not None:
            allowed = MODIFIERS.get(ptype, set())
            if ptype == "reference" and self.registry_type(mod):
                if sp.targets and mod not in sp.targets:
                    raise bad_request(f"{base} cannot refer to {mod}", name)
            elif mod not in allowed:
                raise UnknownParameter(
                    f"modifier :{mod} is not supported on {ptype} parameter {base}"
                )
        crit = Criterion(rtype, base, ptype, mod)
        if mod == "missing":
            if raw not in ("true", "false"):
                raise bad_request(f"{name} must be true or false", name)
            crit.values = [raw == "true"]
            return crit
        values = [v for v in split_unescaped(raw, ",") if v != ""]
        if not values:
            raise bad_request(f"parameter {name} has no value", name)
        crit.values = [self._value(sp, ptype, mod, v, name) for v in values]
        if mod == "mdm":
            _person_reference(sp, crit.values, name)
        return crit

    def registry_type(self, name: str) -> bool:
        return bool(self.registry.for_type(name)) if name[:1].isupper() else False

    def _param(self, rtype: str, code: str) -> SearchParam:
        sp = self.registry.get(rtype, code)
        if sp is None or (sp.type == "special" and (rtype, code) != ("Location", "near")):
            raise UnknownParameter(f"unknown search parameter {code!r} for {rtype}")
        reason = self.unindexed(rtype).get(code)
        if reason is not None:
            raise UnknownParameter(
                f"search parameter {code!r} of {rtype} is not supported: {reason}"
            )
        return sp

    def _chain(
        self, rtype: str, sp: SearchParam, target: str | None, rest: str, raw: str
    ) -> Criterion:
        if sp.type != "reference":
            raise bad_request(
                f"{sp.code} is not a reference parameter, so it cannot be chained", sp.code
            )
        if "." in rest.split(":")[0]:
            raise bad_request("only one level of chaining is supported", f"{sp.code}.{rest}")
        targets = [target] if target else list(sp.targets)
        chain = []
        for t in targets:
            sub_name = rest.split(":")[0]
            if self.registry.get(t, sub_name) is None and sub_name not in ("_id", "_lastUpdated"):
                continue
            chain.append(self.criterion(t, rest, raw))
        if not chain:
            raise UnknownParameter(f"no target of {rtype}.{sp.code} has a parameter {rest!r}")
        return Criterion(rtype, sp.code, "reference", None, chain=chain)

    def _has(self, rtype: str, name: str, raw: str) -> Criterion:
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise bad_request("_has must be _has:Type:reference:parameter", name)
        _, source, ref, rest = parts
        if rest.startswith("_has:"):
            raise bad_request("only one level of _has is supported", name)
        ref_sp = self.registry.get(source, ref)
        if ref_sp is None or ref_sp.type != "reference":
            raise bad_request(f"{source} has no reference parameter {ref!r}", name)
        if ref_sp.targets and rtype not in ref_sp.targets:
            raise bad_request(f"{source}.{ref} does not refer to {rtype}", name)
        inner = self.criterion(source, rest, raw)
        return Criterion(
            rtype, ref, "reference", has=inner, has_ref_param=ref, has_source_type=source
        )

    # -- values ---------------------------------------------------------

    def _value(self, sp: SearchParam, ptype: str, mod: str | None, raw: str, name: str) -> Value:
        try:
            if ptype == "token":
                return _token(raw, mod)
            if ptype == "string":
                text = unescape(raw)
                return text if mod == "exact" else fold(text)
            if ptype in ("date", "number", "quantity"):
                return _ranged(ptype, raw)
            if ptype == "reference":
                return self._reference(unescape(raw), sp, mod)
            if ptype == "uri":
                return self._uri(sp, mod, raw)
            if ptype == "special":
                return _near(raw)
            if ptype == "composite":
                return self._composite(sp, raw)
        except ValueError as exc:
            raise bad_request(f"invalid value {raw!r} for {name}: {exc}", name) from None
        raise bad_request(f"search parameter type {ptype} is not supported", name)

    def _uri(self, sp: SearchParam, mod: str | None, raw: str) -> str | CanonicalValue:
        """A uri, or on a canonical resource's uri parameter ``url|version``
        (https://hl7.org/fhir/R4/search.html#versions)."""
        parts = split_unescaped(raw, "|")
        version_sp = self.registry.get(sp.resource_type, "version")
        if len(parts) != 2 or version_sp is None or version_sp.type != "token":
            return unescape(raw)
        url, version = unescape(parts[0]), unescape(parts[1])
        if not url or not version:
            raise ValueError("a canonical is url|version")
        if mod == "above":
            raise ValueError(":above does not take a version")
        return CanonicalValue(url, version)

    def _reference(self, raw: str, sp: SearchParam, mod: str | None) -> ReferenceValue:
        if self.base_url and raw.startswith(self.base_url + "/"):
            raw = raw[len(self.base_url) + 1 :]
        if "://" in raw or raw.startswith("urn:"):
            # another server's resource or a canonical: stored rows keep the full URL
            return ReferenceValue(None, None, raw)
        parts = raw.split("/")
        if len(parts) >= 2 and parts[0][:1].isupper():
            return ReferenceValue(parts[0], parts[1])
        if mod and mod not in ("missing", "mdm"):
            return ReferenceValue(mod, raw)
        return ReferenceValue(None, raw)

    def _composite(self, sp: SearchParam, raw: str) -> CompositeValue:
        pieces = split_unescaped(raw, "$")
        if len(pieces) != 2 or len(sp.components) != 2:
            raise ValueError("a composite value is code$value")
        first = _token(pieces[0], None)
        kind = sp.components[1][0]
        second: TokenValue | RangeValue | str
        if kind == "token":
            second = _token(pieces[1], None)
        elif kind in ("quantity", "date", "number"):
            second = _ranged(kind, pieces[1])
        else:
            second = fold(unescape(pieces[1]))
        return CompositeValue(first, second)


def _person_reference(sp: SearchParam, values: list[Value], name: str) -> None:
    """``:mdm`` names Patients (a person stands for its records): 400 otherwise."""
    if sp.targets and "Patient" not in sp.targets:
        raise bad_request(
            f":mdm needs a parameter that refers to a Patient; {sp.code} does not", name
        )
    for v in values:
        if not isinstance(v, ReferenceValue) or v.target_id is None:
            raise bad_request(f"{name} takes Patient/[id] or the id of a Patient", name)
        if v.target_type not in (None, "Patient"):
            raise bad_request(f"{name} takes Patient/[id], not a {v.target_type}", name)


def _token(raw: str, mod: str | None) -> TokenValue:
    if mod == "text":
        return TokenValue(None, fold(unescape(raw)))
    parts = split_unescaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    if len(parts) == 2:
        system, code = unescape(parts[0]), unescape(parts[1])
        return TokenValue(system, code or None)
    raise ValueError("a token is [system|]code")


def _ranged(ptype: str, raw: str) -> RangeValue:
    m = _PREFIX_RE.match(raw)
    prefix = m.group(1) if m else "eq"
    rest = raw[2:] if m else raw
    if ptype == "date":
        low, high = date_range(rest)
        return RangeValue(prefix, low, high)
    system = code = None
    if ptype == "quantity":
        parts = split_unescaped(rest, "|")
        if len(parts) not in (1, 3):
            raise ValueError("a quantity is [prefix]number|system|code")
        rest = parts[0]
        if len(parts) == 3:
            system = unescape(parts[1]) or None
            code = unescape(parts[2]) or None
    number_low, number_high = number_range(rest)
    return RangeValue(prefix, number_low, number_high, system, code, float(rest))


def _near(raw: str) -> NearValue:
    """``latitude|longitude[|distance[|units]]`` (https://hl7.org/fhir/R4/location.html#positional)."""
    parts = split_unescaped(raw, "|")
    if not 2 <= len(parts) <= 4:
        raise ValueError("near is latitude|longitude|distance|units")
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError("latitude and longitude must be decimal degrees") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude must be within [-90, 90] and longitude within [-180, 180]")
    km = NEAR_DEFAULT_KM
    if len(parts) >= 3 and parts[2] != "":
        try:
            distance = float(parts[2])
        except ValueError:
            raise ValueError(f"distance {parts[2]!r} is not a number") from None
        if distance < 0 or distance != distance:
            raise ValueError("distance must not be negative")
        units = unescape(parts[3]) if len(parts) == 4 and parts[3] else "km"
        if units not in NEAR_UNITS:
            raise ValueError(f"units must be one of {', '.join(sorted(NEAR_UNITS))}")
        km = distance * NEAR_UNITS[units]
    return NearValue(lat, lon, km)


class UnknownParameter(Exception):
    pass


__all__ = ["SearchParser", "SearchRequest", "Include", "FhirError", "PREFIXES"]
