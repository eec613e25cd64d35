"""search-type and search-system (https://hl7.org/fhir/R4/http.html#search),
with ``_include``/``_revinclude`` (https://hl7.org/fhir/R4/search.html#include)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import operation_outcome
from lienthong.fhir.search_parse import Include, SearchRequest
from lienthong.fhir.shaping import shape
from lienthong.storage.base import Session, Stored


def search(
    engine: FhirEngine,
    res_type: str | None,
    params: list[tuple[str, str]],
    strict: bool = False,
) -> FhirResponse:
    req = engine.parse_search(res_type, params, strict=strict)
    engine.hide_masters(res_type, params, req.query)
    with engine.store.reader() as session:
        engine.resolve_persons(session, res_type, params, req.query)
        page = session.search(req.query)
        included = _included(session, req, page.matches)
    path = f"{engine.base_url}/{res_type}" if res_type else engine.base_url
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
