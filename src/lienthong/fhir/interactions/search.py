"""search-type, search-system and compartment search
(https://hl7.org/fhir/R4/http.html#search), with ``_include``/``_revinclude``
(https://hl7.org/fhir/R4/search.html#include)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, not_found, operation_outcome
from lienthong.fhir.search_parse import Include, SearchRequest
from lienthong.fhir.shaping import shape
from lienthong.fhir.validate import is_resource_type
from lienthong.storage.base import Session, Stored
from lienthong.storage.query import Criterion, ReferenceValue

#: Types a system-level or compartment search leaves out: the audit trail is served by
#: its own view (``GET [base]/AuditEvent``), never from the resource store.
OWN_VIEW_TYPES = frozenset({"AuditEvent"})


def search(
    engine: FhirEngine,
    res_type: str | None,
    params: list[tuple[str, str]],
    strict: bool = False,
) -> FhirResponse:
    req = engine.parse_search(res_type, params, strict=strict)
    engine.hide_masters(res_type, params, req.query)
    with engine.store.reader() as session:
        page = session.search(req.query)
        included = _included(session, req, page.matches)
    path = f"{engine.base_url}/{res_type}" if res_type else engine.base_url
    bundle = searchset(engine, req, path, page.matches, included, page.total)
    return FhirResponse(200, bundle)


def search_system(
    engine: FhirEngine, params: list[tuple[str, str]], strict: bool = False
) -> FhirResponse:
    """``GET [base]?_type=A,B&...``: the types named, or without ``_type`` every type
    (which the access gate narrows to those the caller may search)."""
    named, rest, echo = _types_param(engine, params)
    types = named if named is not None else searchable_types(engine)
    req = engine.parse_search(None, rest, strict=strict, types=types)
    req.echo[:0] = echo
    req.query.any_permitted_type = named is None
    return _run(engine, req, engine.base_url, None, rest)


def searchable_types(engine: FhirEngine) -> list[str]:
    """Every type a system-level search without ``_type`` looks at."""
    return [
        t
        for t in engine.registry.resource_types()
        if t not in OWN_VIEW_TYPES and is_resource_type(t)
    ]


def search_compartment(
    engine: FhirEngine,
    compartment: str,
    comp_id: str,
    res_type: str,
    params: list[tuple[str, str]],
    strict: bool = False,
) -> FhirResponse:
    """``GET [base]/Patient/[id]/[type]`` (or ``/*``): the type search, ANDed with the
    OR of the compartment's parameters of each type equal to ``Patient/[id]``
    (https://hl7.org/fhir/R4/compartmentdefinition-patient.html)."""
    table = compartment_params(compartment)
    if table is None:
        raise not_found(f"there is no {compartment} compartment")
    path = f"{engine.base_url}/{compartment}/{comp_id}/{res_type}"
    if res_type == "*":
        named, rest, echo = _types_param(engine, params)
        types = [t for t in sorted(table) if t not in OWN_VIEW_TYPES]
        if named is not None:
            outside = [t for t in named if t not in table]
            if outside:
                raise bad_request(
                    f"{', '.join(outside)} cannot be in the {compartment} compartment", "_type"
                )
            types = [t for t in types if t in named]
        req = engine.parse_search(None, rest, strict=strict, types=types)
        req.echo[:0] = echo
        req.query.any_permitted_type = named is None
        target_type = None
    else:
        if res_type not in table or res_type in OWN_VIEW_TYPES:
            raise bad_request(f"{res_type} cannot be in the {compartment} compartment")
        types, rest = [res_type], params
        req = engine.parse_search(res_type, rest, strict=strict)
        target_type = res_type
    pairs = [
        (t, code)
        for t in types
        for code in table[t]
        if (sp := engine.registry.get(t, code)) is not None
        and sp.type == "reference"
        and code not in engine.unindexed(t)
    ]
    if not pairs:
        raise bad_request(f"{res_type} has no searchable link to the {compartment} compartment")
    req.query.criteria.append(
        Criterion(
            pairs[0][0],
            pairs[0][1],
            "reference",
            values=[ReferenceValue(compartment, comp_id)],
            sp_pairs=tuple(pairs),
        )
    )
    return _run(engine, req, path, target_type, rest)


@cache
def compartment_params(compartment: str) -> dict[str, tuple[str, ...]] | None:
    """Resource type -> the parameters that put it in ``compartment`` (shipped as
    ``fhir/data/compartment_patient.json``, derived from the R4 CompartmentDefinition
    by ``scripts/build_patient_compartment.py``)."""
    if compartment != "Patient":
        return None
    data = resources.files("lienthong.fhir") / "data" / "compartment_patient.json"
    table = json.loads(data.read_text(encoding="utf-8"))
    return {t: tuple(ps) for t, ps in table["resources"].items()}


def _types_param(
    engine: FhirEngine, params: list[tuple[str, str]]
) -> tuple[list[str] | None, list[tuple[str, str]], list[tuple[str, str]]]:
    """(the ``_type`` list or None, the other parameters, ``_type`` for the links)."""
    named: list[str] | None = None
    rest, echo = [], []
    for name, raw in params:
        if name != "_type":
            rest.append((name, raw))
            continue
        echo.append((name, raw))
        for t in (v.strip() for v in raw.split(",")):
            if not t:
                continue
            if not is_resource_type(t) or not engine.registry.for_type(t):
                raise bad_request(f"_type: unknown resource type {t!r}", "_type")
            if t in OWN_VIEW_TYPES:
                raise bad_request(f"_type: {t} is searched at [base]/{t}", "_type")
            named = (named or []) + [t]
    if echo and not named:
        raise bad_request("_type has no value", "_type")
    if named is None:
        return None, rest, echo
    return sorted(set(named)), rest, echo


def _run(
    engine: FhirEngine,
    req: SearchRequest,
    path: str,
    res_type: str | None,
    params: list[tuple[str, str]],
) -> FhirResponse:
    q = req.query
    covers_patients = q.resource_types is None or "Patient" in q.resource_types
    engine.hide_masters(res_type or ("Patient" if covers_patients else None), params, q)
    with engine.store.reader() as session:
        page = session.search(q)
        included = _included(session, req, page.matches)
    bundle = searchset(engine, req, path, page.matches, included, page.total)
    return FhirResponse(200, bundle)


def _included(session: Session, req: SearchRequest, matches: list[Stored]) -> list[Stored]:
    if not matches or req.summary == "count":
        return []
    seen = {(m.res_type, m.res_id) for m in matches}
    out: list[Stored] = []

    def add(found: list[Stored], target: str | None) -> None:
        for s in found:
            key = (s.res_type, s.res_id)
            if key not in seen and (target is None or s.res_type == target):
                seen.add(key)
                out.append(s)

    for inc in req.includes:
        pks = [m.pk for m in matches if m.res_type == inc.source_type]
        add(session.referenced(pks, _params(inc)), inc.target_type)
    for inc in req.revincludes:
        targets = [(m.res_type, m.res_id) for m in matches]
        if inc.target_type:
            targets = [t for t in targets if t[0] == inc.target_type]
        found = session.referencing(targets, _params(inc))
        add([s for s in found if s.res_type == inc.source_type], None)
    return out


def _params(inc: Include) -> list[tuple[str, str]] | None:
    return None if inc.param is None else [(inc.source_type, inc.param)]


def searchset(
    engine: FhirEngine,
    req: SearchRequest,
    path: str,
    matches: list[Stored],
    included: list[Stored],
    total: int | None,
) -> dict[str, Any]:
    q = req.query
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    links = [{"relation": "self", "url": _page_url(path, req, q.offset)}]
    has_next = (total is not None and q.offset + q.count < total) or (
        total is None and q.count > 0 and len(matches) == q.count
    )
    if has_next:
        links.append({"relation": "next", "url": _page_url(path, req, q.offset + q.count)})
    if q.offset > 0:
        links.append(
            {"relation": "previous", "url": _page_url(path, req, max(0, q.offset - q.count))}
        )
    bundle["link"] = links
    entries: list[dict[str, Any]] = []
    for stored, mode in [(m, "match") for m in matches] + [(i, "include") for i in included]:
        assert stored.content is not None
        entries.append(
            {
                "fullUrl": engine.full_url(stored),
                "resource": shape(stored.content, req.summary, req.elements),
                "search": {"mode": mode},
            }
        )
    if req.warnings:
        entries.append({"resource": operation_outcome(req.warnings), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _page_url(path: str, req: SearchRequest, offset: int) -> str:
    params = [(k, v) for k, v in req.echo if k not in ("_count",)]
    params.append(("_count", str(req.query.count)))
    if offset:
        params.append(("_offset", str(offset)))
    return f"{path}?{urlencode(params)}"
