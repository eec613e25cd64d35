"""search-type and search-system (https://hl7.org/fhir/R4/http.html#search),
with ``_include``/``_revinclude`` (https://hl7.org/fhir/R4/search.html#include)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, error, operation_outcome
from lienthong.fhir.search_parse import Include, SearchRequest
from lienthong.fhir.shaping import shape
from lienthong.storage.base import Session, Stored
from lienthong.storage.paging import Snapshot

SNAPSHOT_PARAM = "_snapshot"
# what a page link may carry besides the snapshot id: the rest comes from the snapshot
PAGE_PARAMS = {SNAPSHOT_PARAM, "_offset", "_count", "_format", "_pretty"}


def search(
    engine: FhirEngine,
    res_type: str | None,
    params: list[tuple[str, str]],
    strict: bool = False,
) -> FhirResponse:
    """One page of a search. A search with more than one page keeps its matches in a
    paging snapshot (:mod:`lienthong.storage.paging`) and its links page through it."""
    if any(k == SNAPSHOT_PARAM for k, _ in params):
        return _snapshot_page(engine, res_type, params)
    req = engine.parse_search(res_type, params, strict=strict)
    engine.hide_masters(res_type, params, req.query)
    q = req.query
    path = f"{engine.base_url}/{res_type}" if res_type else engine.base_url
    limit = engine.settings.paging_max_ids
    if q.count == 0 or q.offset + q.count > limit:
        # a count alone, or a page past what a snapshot keeps: run the search for it alone
        with engine.store.reader() as session:
            page = session.search(q)
            included = _included(session, req, page.matches)
        bundle = searchset(engine, req, path, page.matches, included, page.total)
        return with_link_header(FhirResponse(200, bundle))
    with engine.store.reader() as session:
        found = session.search_keys(q, limit)
        matches = session.versions(found.keys[q.offset : q.offset + q.count])
        included = _included(session, req, matches)
    complete = len(found.keys) < limit
    if q.offset == 0 and complete and len(found.keys) <= q.count:
        bundle = searchset(engine, req, path, matches, included, found.total)
        return with_link_header(FhirResponse(200, bundle))
    snap = engine.store.paging().save(
        kind="search",
        target=res_type or "",
        params=req.echo,
        keys=found.keys,
        total=found.total,
        complete=complete,
        ttl=engine.settings.paging_ttl,
    )
    links = snapshot_links(
        path,
        snap,
        q.offset,
        q.count,
        _page_url(path, req, q.offset),
        lambda o: _page_url(path, req, o),
    )
    bundle = searchset(engine, req, path, matches, included, found.total, links)
    return with_link_header(FhirResponse(200, bundle))


def _snapshot_page(
    engine: FhirEngine, res_type: str | None, params: list[tuple[str, str]]
) -> FhirResponse:
    snap, offset, count = open_snapshot(engine, params, "search", res_type or "")
    req = engine.parse_search(res_type, snap.params)
    req.query.count, req.query.offset = count, offset
    path = f"{engine.base_url}/{res_type}" if res_type else engine.base_url
    if offset >= snap.size and not snap.complete:
        # past what the snapshot keeps: the live search at that offset
        return search(
            engine, res_type, [*snap.params, ("_count", str(count)), ("_offset", str(offset))]
        )
    keys = engine.store.paging().keys(snap, offset, offset + count)
    with engine.store.reader() as session:
        matches = session.versions(keys)
        included = _included(session, req, matches)
    links = snapshot_links(
        path,
        snap,
        offset,
        count,
        snapshot_url(path, snap, offset, count),
        lambda o: _page_url(path, req, o),
    )
    bundle = searchset(engine, req, path, matches, included, snap.total, links)
    return with_link_header(FhirResponse(200, bundle))


def open_snapshot(
    engine: FhirEngine, params: list[tuple[str, str]], kind: str, target: str
) -> tuple[Snapshot, int, int]:
    """The snapshot a page link names, with the page's offset and count; 410 Gone when
    it is unknown, expired, another user's or of another search."""
    args: dict[str, str] = {}
    for name, value in params:
        if name not in PAGE_PARAMS:
            raise bad_request(
                f"{name}: a page link ({SNAPSHOT_PARAM}) takes only _offset and _count; "
                "the search's other parameters are those of the search that made it",
                name,
            )
        if name in args and args[name] != value:
            raise bad_request(f"{name} is given twice", name)
        args[name] = value
    for name in ("_offset", "_count"):
        if name in args and not args[name].isdigit():
            raise bad_request(f"{name} must be a non-negative integer, got {args[name]!r}", name)
    snap = engine.store.paging().load(args[SNAPSHOT_PARAM])
    if snap is None or snap.kind != kind or snap.target != target:
        raise error(
            410,
            "not-found",
            f"the page link's snapshot {args[SNAPSHOT_PARAM]!r} is unknown or has expired "
            f"(snapshots are kept {engine.settings.paging_ttl} s); run the "
            f"{'search' if kind == 'search' else 'history'} again",
        )
    settings = engine.settings
    count = min(int(args.get("_count", settings.default_page_size)), settings.max_page_size)
    return snap, int(args.get("_offset", "0")), count


def snapshot_url(path: str, snap: Snapshot, offset: int, count: int) -> str:
    params = [(SNAPSHOT_PARAM, snap.id), ("_count", str(count))]
    if offset:
        params.append(("_offset", str(offset)))
    return f"{path}?{urlencode(params)}"


def snapshot_links(
    path: str,
    snap: Snapshot,
    offset: int,
    count: int,
    self_url: str,
    live_url: Callable[[int], str],
) -> list[dict[str, str]]:
    """self, first, previous, next and last of a page cut from a snapshot. Past the
    snapshot's bound (it keeps the first ``LIENTHONG_PAGING_MAX_IDS``), ``next`` and
    ``last`` are ``live_url(offset)``: the search run again at that offset."""
    links = [
        {"relation": "self", "url": self_url},
        {"relation": "first", "url": snapshot_url(path, snap, 0, count)},
    ]
    if offset > 0:
        prev = max(0, offset - count)
        links.append({"relation": "previous", "url": snapshot_url(path, snap, prev, count)})
    if count > 0 and offset + count < snap.size:
        links.append({"relation": "next", "url": snapshot_url(path, snap, offset + count, count)})
    elif count > 0 and not snap.complete:
        links.append({"relation": "next", "url": live_url(offset + count)})
    if count > 0 and snap.complete:
        last = max(0, (snap.size - 1) // count * count)
        links.append({"relation": "last", "url": snapshot_url(path, snap, last, count)})
    elif count > 0 and snap.total is not None:
        links.append(
            {"relation": "last", "url": live_url(max(0, (snap.total - 1) // count * count))}
        )
    return links


REL = {"previous": "prev"}  # RFC 8288 registers "prev"; FHIR's Bundle says "previous"


def with_link_header(resp: FhirResponse) -> FhirResponse:
    """The Bundle's links as an HTTP ``Link`` header too (RFC 8288)."""
    body = resp.body
    if isinstance(body, dict) and body.get("link"):
        resp.headers["Link"] = ", ".join(
            f'<{link["url"]}>; rel="{REL.get(link["relation"], link["relation"])}"'
            for link in body["link"]
        )
    return resp


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
    links: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A searchset Bundle; without ``links``, offset links to the search run again
    (``_count=0``, as ``_summary=count`` makes it, has no next page)."""
    q = req.query
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    if links is None:
        links = [{"relation": "self", "url": _page_url(path, req, q.offset)}]
        has_next = q.count > 0 and (
            (total is not None and q.offset + q.count < total)
            or (total is None and len(matches) == q.count)
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
