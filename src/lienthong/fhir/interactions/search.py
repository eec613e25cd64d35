"""search-type, search-system and compartment search
(https://hl7.org/fhir/R4/http.html#search), with ``_include``/``_revinclude``
(https://hl7.org/fhir/R4/search.html#include)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any, TypeAlias
from urllib.parse import urlencode

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, error, not_found, operation_outcome
from lienthong.fhir.search_parse import Include, SearchRequest
from lienthong.fhir.shaping import shape
from lienthong.fhir.validate import is_resource_type
from lienthong.storage.base import Session, Stored
from lienthong.storage.paging import Snapshot
from lienthong.storage.query import Criterion, ReferenceValue

#: Types a system-level or compartment search leaves out: the audit trail is served by
#: its own view (``GET [base]/AuditEvent``), never from the resource store.
OWN_VIEW_TYPES = frozenset({"AuditEvent"})

SNAPSHOT_PARAM = "_snapshot"
# what a page link may carry besides the snapshot id: the rest comes from the snapshot
PAGE_PARAMS = {SNAPSHOT_PARAM, "_offset", "_count", "_format", "_pretty"}


Build: TypeAlias = Callable[
    [list[tuple[str, str]], bool], tuple[SearchRequest, str | None, list[tuple[str, str]]]
]
"""Parses a search's parameters (strictly or not) into (the request, the one type
searched or None, the parameters left once a ``_type`` is taken out)."""

SYSTEM_TARGET = "[system]"
"""The snapshot target of a system-level search (a type search's is its type, a
compartment search's its path below the base)."""


def search(
    engine: FhirEngine,
    res_type: str | None,
    params: list[tuple[str, str]],
    strict: bool = False,
) -> FhirResponse:
    """One page of a search. A search with more than one page keeps its matches in a
    paging snapshot (:mod:`lienthong.storage.paging`) and its links page through it."""

    def build(
        ps: list[tuple[str, str]], strict_: bool
    ) -> tuple[SearchRequest, str | None, list[tuple[str, str]]]:
        return engine.parse_search(res_type, ps, strict=strict_), res_type, ps

    path = f"{engine.base_url}/{res_type}" if res_type else engine.base_url
    return _search(engine, path, res_type or "", build, params, strict)


def _search(
    engine: FhirEngine,
    path: str,
    target: str,
    build: Build,
    params: list[tuple[str, str]],
    strict: bool,
) -> FhirResponse:
    if any(k == SNAPSHOT_PARAM for k, _ in params):
        return _snapshot_page(engine, path, target, build, params)
    req, res_type, rest = build(params, strict)
    q = req.query
    covers_patients = q.resource_types is None or "Patient" in q.resource_types
    engine.hide_masters(res_type or ("Patient" if covers_patients else None), rest, q)
    limit = engine.settings.paging_max_ids
    if q.count == 0 or q.offset + q.count > limit:
        # a count alone, or a page past what a snapshot keeps: run the search for it alone
        with engine.store.reader() as session:
            engine.resolve_persons(session, res_type, rest, q)
            page = session.search(q)
            included = _included(session, req, page.matches)
        bundle = searchset(engine, req, path, page.matches, included, page.total)
        return with_link_header(FhirResponse(200, bundle))
    with engine.store.reader() as session:
        engine.resolve_persons(session, res_type, rest, q)
        found = session.search_keys(q, limit)
        matches = session.versions(found.keys[q.offset : q.offset + q.count])
        included = _included(session, req, matches)
    complete = len(found.keys) < limit
    if q.offset == 0 and complete and len(found.keys) <= q.count:
        bundle = searchset(engine, req, path, matches, included, found.total)
        return with_link_header(FhirResponse(200, bundle))
    snap = engine.store.paging().save(
        kind="search",
        target=target,
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
    engine: FhirEngine,
    path: str,
    target: str,
    build: Build,
    params: list[tuple[str, str]],
) -> FhirResponse:
    snap, offset, count = open_snapshot(engine, params, "search", target)
    req, _, _ = build(snap.params, False)
    req.query.count, req.query.offset = count, offset
    if offset >= snap.size and not snap.complete:
        # past what the snapshot keeps: the live search at that offset
        again = [*snap.params, ("_count", str(count)), ("_offset", str(offset))]
        return _search(engine, path, target, build, again, False)
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


def search_system(
    engine: FhirEngine, params: list[tuple[str, str]], strict: bool = False
) -> FhirResponse:
    """``GET [base]?_type=A,B&...``: the types named, or without ``_type`` every type
    (which the access gate narrows to those the caller may search)."""

    def build(
        ps: list[tuple[str, str]], strict_: bool
    ) -> tuple[SearchRequest, str | None, list[tuple[str, str]]]:
        named, rest, echo = _types_param(engine, ps)
        types = named if named is not None else searchable_types(engine)
        req = engine.parse_search(None, rest, strict=strict_, types=types)
        req.echo[:0] = echo
        req.query.any_permitted_type = named is None
        return req, None, rest

    return _search(engine, engine.base_url, SYSTEM_TARGET, build, params, strict)


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

    def build(
        ps: list[tuple[str, str]], strict_: bool
    ) -> tuple[SearchRequest, str | None, list[tuple[str, str]]]:
        assert table is not None
        return _compartment_request(engine, table, compartment, comp_id, res_type, ps, strict_)

    target = f"{compartment}/{comp_id}/{res_type}"
    return _search(engine, f"{engine.base_url}/{target}", target, build, params, strict)


def _compartment_request(
    engine: FhirEngine,
    table: dict[str, tuple[str, ...]],
    compartment: str,
    comp_id: str,
    res_type: str,
    params: list[tuple[str, str]],
    strict: bool,
) -> tuple[SearchRequest, str | None, list[tuple[str, str]]]:
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
    return req, target_type, rest


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

    # a round over the matches, then further rounds over what the :iterate ones
    # brought in, until a round adds nothing (bounded: each resource enters once)
    frontier, first = matches, True
    while frontier:
        before = len(out)
        for inc in req.includes:
            if not (first or inc.iterate):
                continue
            pks = [m.pk for m in frontier if m.res_type == inc.source_type]
            if pks:
                add(session.referenced(pks, _params(inc)), inc.target_type)
        for inc in req.revincludes:
            if not (first or inc.iterate):
                continue
            targets = [(m.res_type, m.res_id) for m in frontier]
            if inc.target_type:
                targets = [t for t in targets if t[0] == inc.target_type]
            if targets:
                found = session.referencing(targets, _params(inc))
                add([s for s in found if s.res_type == inc.source_type], None)
        frontier, first = out[before:], False
        if not any(i.iterate for i in (*req.includes, *req.revincludes)):
            break
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
