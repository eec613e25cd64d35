"""history: instance, type and system (https://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse, etag
from lienthong.fhir.errors import bad_request, not_found
from lienthong.fhir.search_index import date_range


def history(
    engine: FhirEngine,
    res_type: str | None,
    res_id: str | None,
    params: list[tuple[str, str]],
) -> FhirResponse:
    args = dict(params)
    count = _int(args.get("_count"), engine.settings.default_page_size, "_count")
    count = min(count, engine.settings.max_page_size)
    offset = _int(args.get("_offset"), 0, "_offset")
    since = _instant(args.get("_since"), "_since")
    at = _instant(args.get("_at"), "_at", upper=True)
    with engine.store.reader() as session:
        if res_id is not None and session.read(res_type or "", res_id) is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        page = session.history(res_type, res_id, since, at, count, offset)
    path = engine.base_url + "".join(f"/{p}" for p in (res_type, res_id) if p) + "/_history"
    echo = [(k, v) for k, v in params if k in ("_since", "_at")]
    links = [{"relation": "self", "url": _url(path, echo, count, offset)}]
    if offset + count < page.total:
        links.append({"relation": "next", "url": _url(path, echo, count, offset + count)})
    if offset > 0:
        links.append(
            {"relation": "previous", "url": _url(path, echo, count, max(0, offset - count))}
        )
    entries: list[dict[str, Any]] = []
    for s in page.entries:
        entry: dict[str, Any] = {"fullUrl": engine.full_url(s)}
        if s.content is not None:
            entry["resource"] = orjson.Fragment(s.content)
        url = f"{s.res_type}/{s.res_id}" if s.method != "POST" else s.res_type
        entry["request"] = {"method": s.method, "url": url}
        status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(s.method, "200 OK")
        entry["response"] = {
            "status": status,
            "etag": etag(s.version),
            "lastModified": s.last_updated,
        }
        entries.append(entry)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "total": page.total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, bundle)


def _url(path: str, echo: list[tuple[str, str]], count: int, offset: int) -> str:
    params = [*echo, ("_count", str(count))]
    if offset:
        params.append(("_offset", str(offset)))
    return f"{path}?{urlencode(params)}"


def _int(raw: str | None, default: int, name: str) -> int:
    if raw is None:
        return default
    if not raw.isdigit():
        raise bad_request(f"{name} must be a non-negative integer", name)
    return int(raw)


def _instant(raw: str | None, name: str, upper: bool = False) -> str | None:
    if raw is None:
        return None
    try:
        low, high = date_range(raw)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}", name) from None
    return high if upper else low
