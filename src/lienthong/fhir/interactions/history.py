"""history: instance, type and system (https://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse, etag
from lienthong.fhir.errors import bad_request, not_found
from lienthong.fhir.interactions.search import (
    SNAPSHOT_PARAM,
    open_snapshot,
    snapshot_links,
    snapshot_url,
    with_link_header,
)
from lienthong.fhir.search_index import date_range
from lienthong.storage.base import Stored


def history(
    engine: FhirEngine,
    res_type: str | None,
    res_id: str | None,
    params: list[tuple[str, str]],
) -> FhirResponse:
    """One page of a history, newest first. A history of more than one page keeps the
    keys of its versions in a paging snapshot and its links page through it, so versions
    written meanwhile do not shift the pages."""
    path = engine.base_url + "".join(f"/{p}" for p in (res_type, res_id) if p) + "/_history"
    target = "/".join(p for p in (res_type, res_id) if p)
    if any(k == SNAPSHOT_PARAM for k, _ in params):
        snap, offset, count = open_snapshot(engine, params, "history", target)
        if offset >= snap.size and not snap.complete:
            live = [*snap.params, ("_count", str(count)), ("_offset", str(offset))]
            return history(engine, res_type, res_id, live)
        keys = engine.store.paging().keys(snap, offset, offset + count)
        with engine.store.reader() as session:
            entries = session.versions(keys)
        live_url = _live(path, snap.params, count)
        links = snapshot_links(
            path, snap, offset, count, snapshot_url(path, snap, offset, count), live_url
        )
        return _bundle(engine, entries, snap.total or 0, links)
    args = dict(params)
    count = _int(args.get("_count"), engine.settings.default_page_size, "_count")
    count = min(count, engine.settings.max_page_size)
    offset = _int(args.get("_offset"), 0, "_offset")
    since = _instant(args.get("_since"), "_since")
    at = _instant(args.get("_at"), "_at", upper=True)
    echo = [(k, v) for k, v in params if k in ("_since", "_at")]
    limit = engine.settings.paging_max_ids
    with engine.store.reader() as session:
        if res_id is not None and session.read(res_type or "", res_id) is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        if count == 0 or offset + count > limit:
            page = session.history(res_type, res_id, since, at, count, offset)
            entries, total, found = page.entries, page.total, None
        else:
            found = session.history_keys(res_type, res_id, since, at, limit)
            entries = session.versions(found.keys[offset : offset + count])
            total = found.total or 0
    if found is not None and (offset > 0 or len(found.keys) > count or len(found.keys) >= limit):
        snap = engine.store.paging().save(
            kind="history",
            target=target,
            params=echo,
            keys=found.keys,
            total=total,
            complete=len(found.keys) < limit,
            ttl=engine.settings.paging_ttl,
        )
        links = snapshot_links(
            path, snap, offset, count, _url(path, echo, count, offset), _live(path, echo, count)
        )
        return _bundle(engine, entries, total, links)
    links = [{"relation": "self", "url": _url(path, echo, count, offset)}]
    if count > 0 and offset + count < total:
        links.append({"relation": "next", "url": _url(path, echo, count, offset + count)})
    if offset > 0:
        links.append(
            {"relation": "previous", "url": _url(path, echo, count, max(0, offset - count))}
        )
    return _bundle(engine, entries, total, links)


def _live(path: str, echo: list[tuple[str, str]], count: int) -> Callable[[int], str]:
    return lambda offset: _url(path, echo, count, offset)


def _bundle(
    engine: FhirEngine, found: list[Stored], total: int, links: list[dict[str, str]]
) -> FhirResponse:
    entries: list[dict[str, Any]] = []
    for s in found:
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
        "total": total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return with_link_header(FhirResponse(200, bundle))


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
