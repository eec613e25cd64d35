"""batch and transaction bundles (https://hl7.org/fhir/R4/http.html#transaction).

A transaction runs in one write session: it commits whole or not at all.
Entries are processed in the order the spec requires — DELETE, then POST,
then PUT, then GET — after every entry's full URL (``urn:uuid:``, ``urn:oid:`` or
a RESTful ``[base]/[type]/[id]``) has been given its server id (or resolved
through ``ifNoneExist`` / a conditional PUT) and every link to it has been
rewritten: ``Reference.reference``, elements of type uri/url/uuid/oid and
narrative links, found by element type (:mod:`lienthong.fhir.links`), never
``canonical`` or string elements. Conditional references such as
``Organization?identifier=system|value`` are resolved too. A batch runs each
entry on its own and reports each entry's outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse, etag, now_instant
from lienthong.fhir.errors import FhirError, Issue, bad_request, not_found, precondition_failed
from lienthong.fhir.interactions.capabilities import capability_statement
from lienthong.fhir.interactions.create import create_in
from lienthong.fhir.interactions.delete import conditional_delete_in, delete_in
from lienthong.fhir.interactions.search import searchset
from lienthong.fhir.interactions.update import update_in
from lienthong.fhir.limits import ResponseBudget
from lienthong.fhir.links import REFERENCE
from lienthong.fhir.validate import is_resource_type, validate_resource
from lienthong.storage.base import Session, Stored, WriteSession

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}
_CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")
# a RESTful full URL: [base]/[type]/[id] (https://hl7.org/fhir/R4/references.html#regex)
_RESTFUL = re.compile(r"^(?P<base>https?://.+?)/(?P<tail>[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})$")
_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


@dataclass
class Entry:
    index: int
    method: str
    res_type: str
    res_id: str | None
    tail: list[str]
    query: str | None
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    if_none_match: str | None = None
    existing: Stored | None = None  # ifNoneExist matched an existing resource


@dataclass
class Targets:
    """What each entry's full URL becomes: ``by_url`` maps full URLs to ``Type/id``;
    ``by_tail`` maps the ``Type/id`` of RESTful full URLs to those, for relative
    references from entries whose own full URL is not RESTful."""

    by_url: dict[str, str] = field(default_factory=dict)
    by_tail: dict[str, list[str]] = field(default_factory=dict)
    only_urns: bool = True  # every full URL is a urn: (the common case, Synthea's)

    def add(self, full_url: str, target: str) -> None:
        self.by_url[full_url] = target
        if not full_url.startswith("urn:"):
            self.only_urns = False
        m = _RESTFUL.match(full_url)
        if m is not None and is_resource_type(m["tail"].split("/")[0]):
            self.by_tail.setdefault(m["tail"], []).append(target)

    def resolve(self, value: str, base: str | None) -> str | None:
        """The new ``Type/id`` for a link to an entry, or None when it names none.

        A relative ``Type/id`` is read against the referring entry's RESTful base
        (bundle.html#references); from an entry without one it names the entry whose
        RESTful full URL ends in it, when exactly one does."""
        found = self.by_url.get(value)
        if found is not None or not self.by_tail or not _RELATIVE.match(value):
            return found
        if base is not None:
            return self.by_url.get(f"{base}/{value}")
        tails = self.by_tail.get(value)
        return tails[0] if tails is not None and len(tails) == 1 else None


def _base_of(full_url: str | None) -> str | None:
    m = _RESTFUL.match(full_url) if full_url else None
    return m["base"] if m is not None else None


def process_bundle(
    engine: FhirEngine,
    bundle: Any,
    prefer_return: str | None = None,
    validated: bool = False,
    session: WriteSession | None = None,
) -> FhirResponse:
    """Process a batch or transaction. ``validated`` says the entries' resources were
    structurally validated already (bulk import does that in worker processes);
    ``session`` runs a transaction inside that open write session, in a savepoint."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("expected a Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise bad_request(
            f"Bundle.type must be batch or transaction to be processed, got {kind!r}", "Bundle.type"
        )
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise bad_request("Bundle.entry must be a list", "Bundle.entry")
    if kind == "transaction":
        entries = [_parse_entry(engine, i, e) for i, e in enumerate(raw_entries)]
        if not validated:
            # validate before taking the writer, so writes queue only for the write itself
            for e in entries:
                if e.resource is not None:
                    try:
                        validate_resource(e.resource)
                    except FhirError as err:
                        raise _in_entry(err, e.index, e.res_type) from None
        responses = run_transaction(engine, entries, prefer_return, True, session)
    else:
        if session is not None:
            raise bad_request("a batch runs each entry in a transaction of its own", "Bundle.type")
        responses = run_batch(engine, raw_entries, prefer_return)
    return FhirResponse(
        200, {"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses}
    )


def _parse_entry(engine: FhirEngine, i: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{i}]"
    if not isinstance(raw, dict):
        raise bad_request(f"{where} is not an object", where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise bad_request(f"{where}.request is missing", f"{where}.request")
    method = str(request.get("method", "")).upper()
    if method not in ORDER:
        raise FhirError(
            405 if method == "PATCH" else 400,
            [
                Issue(
                    "not-supported",
                    f"{where}.request.method {method!r} is not supported",
                    expression=(f"{where}.request.method",),
                )
            ],
        )
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request.url is missing", f"{where}.request.url")
    if "\x00" in url or "%00" in url:
        raise bad_request(f"{where}.request.url holds a NUL character", f"{where}.request.url")
    if engine.base_url and url.startswith(engine.base_url + "/"):
        url = url[len(engine.base_url) + 1 :]
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if parts == ["metadata"] and method in ("GET", "HEAD"):
        return Entry(i, method, "metadata", None, [], query or None, None, None, None, None)
    if not parts or not is_resource_type(parts[0]):
        raise bad_request(
            f"{where}.request.url {url!r} names no resource type", f"{where}.request.url"
        )
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise bad_request(f"{where}.resource is missing", f"{where}.resource")
        if resource.get("resourceType") != parts[0]:
            raise bad_request(
                f"{where}.resource is a {resource.get('resourceType')}, the url says {parts[0]}",
                f"{where}.resource.resourceType",
            )
    return Entry(
        index=i,
        method=method,
        res_type=parts[0],
        res_id=parts[1] if len(parts) > 1 else None,
        tail=parts[2:],
        query=query or None,
        resource=resource if isinstance(resource, dict) else None,
        full_url=raw.get("fullUrl"),
        if_none_exist=request.get("ifNoneExist"),
        if_match=request.get("ifMatch"),
        if_none_match=request.get("ifNoneMatch"),
    )


def _in_entry(err: FhirError, index: int, res_type: str) -> FhirError:
    """Point an error's expressions at the bundle entry it came from."""
    where = f"Bundle.entry[{index}]"
    issues = []
    for issue in err.issues:
        exprs = tuple(_entry_path(where, res_type, e) for e in issue.expression) or (where,)
        issues.append(Issue(issue.code, f"{where}: {issue.diagnostics}", issue.severity, exprs))
    return FhirError(err.status, issues, err.headers)


def _entry_path(where: str, res_type: str, expression: str) -> str:
    """An expression about an entry's resource, or (a search parameter of its url or
    ifNoneExist) its request, as a FHIRPath from the Bundle."""
    if expression == res_type or expression.startswith(res_type + "."):
        return f"{where}.resource{expression[len(res_type) :]}"
    if expression == "resourceType":
        return f"{where}.resource.resourceType"
    return f"{where}.request"


def run_transaction(
    engine: FhirEngine,
    entries: list[Entry],
    prefer_return: str | None,
    validated: bool = False,
    session: WriteSession | None = None,
) -> list[dict[str, Any]]:
    """Run a transaction's entries, all or nothing: in a transaction of its own, or, with
    ``session``, in a savepoint of that open transaction (several bundles per commit;
    a failed one leaves the others as they were). A response that would grow past
    ``LIENTHONG_RESPONSE_MAX_BYTES`` refuses the whole transaction (413), written nothing."""
    now = now_instant()
    budget = ResponseBudget(engine.settings.response_max_bytes)
    responses: dict[int, dict[str, Any]] = {}
    current: Entry | None = None
    unit: AbstractContextManager[Any] = (
        engine.store.writer() if session is None else _in_savepoint(session)
    )
    try:
        with unit as session:
            ids = Targets()
            targets: dict[tuple[str, str], int] = {}
            for current in entries:
                _assign_id(engine, session, current, ids)
                if current.method != "GET" and current.res_id and current.existing is None:
                    key = (current.res_type, current.res_id)
                    if key in targets:
                        raise bad_request(
                            f"{key[0]}/{key[1]} is written by entries {targets[key]} and "
                            f"{current.index}; a transaction changes each resource once"
                        )
                    targets[key] = current.index
            current = None
            cache: dict[str, str] = {}
            for current in entries:
                if current.resource is not None:
                    base = _base_of(current.full_url)
                    _rewrite(engine, session, current.resource, ids, base, cache)
            current = None
            ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
            versions: dict[tuple[str, str], Stored] | None = None
            for current in ordered:
                if current.method == "PUT" and versions is None:
                    # every PUT's current version in one read, before any of them is
                    # written: a read after a write would flush the write buffer first
                    versions = session.current_versions(
                        [(e.res_type, e.res_id) for e in ordered if e.method == "PUT" and e.res_id]
                    )
                answer = _execute(engine, session, current, now, prefer_return, validated, versions)
                if not budget.fits(answer):
                    raise budget.refuse_transaction()
                responses[current.index] = answer
    except FhirError as err:
        if current is None:
            raise
        raise _in_entry(err, current.index, current.res_type) from None
    return [responses[e.index] for e in entries]


@contextmanager
def _in_savepoint(session: WriteSession) -> Iterator[WriteSession]:
    with session.savepoint():
        yield session


def _assign_id(engine: FhirEngine, session: WriteSession, e: Entry, ids: Targets) -> None:
    """Decide which resource each POST/PUT entry will be, before any reference is rewritten."""
    if e.method == "POST":
        if e.res_id is not None:
            raise bad_request(
                "POST goes to [type], not to an id", f"Bundle.entry[{e.index}].request.url"
            )
        if e.if_none_exist:
            matches = engine.match_conditional(session, e.res_type, e.if_none_exist, "ifNoneExist")
            if len(matches) > 1:
                raise precondition_failed(f"ifNoneExist {e.if_none_exist!r} matches several")
            if matches:
                e.existing = matches[0]
                e.res_id = matches[0].res_id
        if e.res_id is None:
            e.res_id = engine.new_id()
    elif e.method == "PUT":
        if e.res_id is None:
            if not e.query:
                raise bad_request("PUT needs [type]/[id] or [type]?criteria")
            matches = engine.match_conditional(session, e.res_type, e.query, "conditional update")
            if len(matches) > 1:
                raise precondition_failed(f"conditional update {e.query!r} matches several")
            e.res_id = (
                matches[0].res_id if matches else ((e.resource or {}).get("id") or engine.new_id())
            )
            if e.resource is not None:
                e.resource["id"] = e.res_id
    else:
        return
    if e.full_url:
        ids.add(e.full_url, f"{e.res_type}/{e.res_id}")


def _rewrite(
    engine: FhirEngine,
    session: Session,
    resource: dict[str, Any],
    ids: Targets,
    base: str | None,
    cache: dict[str, str],
    in_batch: bool = False,
) -> None:
    """Rewrite, in place, the resource's links to bundle entries and its conditional
    references. A ``urn:`` reference that names no entry is an error (in a batch,
    where entries cannot refer to each other, any ``urn:`` reference is)."""
    if ids.only_urns:
        # cheap test first: when every full URL is a urn:, only urn: values and
        # conditional references (which hold a "?") can change
        raw = orjson.dumps(resource)
        if b"urn:" not in raw and b"?" not in raw:
            return

    def fix(kind: int, value: str) -> str | None:
        new = ids.resolve(value, base)
        if new is not None or kind != REFERENCE:
            return new
        if _CONDITIONAL_REF.match(value):
            return _conditional(engine, session, value, cache)
        if value.startswith(("urn:uuid:", "urn:oid:")):
            if in_batch:
                raise bad_request(
                    f"a batch entry cannot refer to other entries (reference {value})"
                )
            raise not_found(f"reference {value} names no entry of this bundle")
        return None

    engine.links.rewrite(resource, fix)


def _conditional(engine: FhirEngine, session: Session, ref: str, cache: dict[str, str]) -> str:
    if ref in cache:
        return cache[ref]
    m = _CONDITIONAL_REF.match(ref)
    if m is None:
        raise bad_request(f"invalid conditional reference {ref}")
    matches = engine.match_conditional(session, m.group(1), m.group(2), f"reference {ref}")
    if not matches:
        raise bad_request(f"conditional reference {ref} matches no resource")
    if len(matches) > 1:
        raise precondition_failed(f"conditional reference {ref} matches several resources")
    cache[ref] = f"{m.group(1)}/{matches[0].res_id}"
    return cache[ref]


def _execute(
    engine: FhirEngine,
    session: WriteSession,
    e: Entry,
    now: str,
    prefer_return: str | None,
    validated: bool = False,
    versions: dict[tuple[str, str], Stored] | None = None,
) -> dict[str, Any]:
    if e.method == "DELETE":
        if e.res_id is not None:
            version = delete_in(engine, session, e.res_type, e.res_id, now)
        else:
            version = conditional_delete_in(engine, session, e.res_type, e.query or "")
        out: dict[str, Any] = {"status": STATUS_TEXT[204]}
        if version is not None:
            out["etag"] = etag(version)
        return {"response": out}
    if e.method == "POST":
        if e.existing is not None:
            return _written(200, e.existing, prefer_return)
        assert e.resource is not None
        status, stored = create_in(engine, session, e.resource, None, e.res_id, now, validated)
        return _written(status, stored, prefer_return)
    if e.method == "PUT":
        assert e.resource is not None and e.res_id is not None
        status, stored = update_in(
            engine,
            session,
            e.res_type,
            e.res_id,
            e.resource,
            e.if_match,
            now,
            validated,
            versions,
            e.if_none_match,
        )
        return _written(status, stored, prefer_return)
    return _get(engine, session, e)


def _written(status: int, stored: Stored, prefer_return: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "response": {
            "status": STATUS_TEXT[status],
            "location": f"{stored.res_type}/{stored.res_id}/_history/{stored.version}",
            "etag": etag(stored.version),
            "lastModified": stored.last_updated,
        }
    }
    if prefer_return == "representation" and stored.content is not None:
        out["resource"] = orjson.Fragment(stored.content)
    return out


def _get(engine: FhirEngine, session: Session, e: Entry) -> dict[str, Any]:
    if e.res_type == "metadata":
        # the same statement as GET [base]/metadata, token endpoint included
        statement = capability_statement(
            engine.base_url, engine.registry, engine.extractor, engine.settings.token_endpoint()
        )
        return {"resource": statement, "response": {"status": STATUS_TEXT[200]}}
    if e.res_id is None:
        params = parse_qsl(e.query or "", keep_blank_values=True)
        req = engine.parse_search(e.res_type, params)
        engine.hide_masters(e.res_type, params, req.query)  # as an ordinary search does
        engine.resolve_persons(session, e.res_type, params, req.query)
        page = session.search(req.query)
        bundle = searchset(
            engine, req, f"{engine.base_url}/{e.res_type}", page.matches, [], page.total
        )
        return {"resource": bundle, "response": {"status": STATUS_TEXT[200]}}
    if e.tail[:1] == ["_history"] and len(e.tail) == 2 and e.tail[1].isdigit():
        stored = session.vread(e.res_type, e.res_id, int(e.tail[1]))
    elif not e.tail:
        stored = session.read(e.res_type, e.res_id)
    else:
        raise bad_request(
            f"unsupported GET {'/'.join([e.res_type, e.res_id, *e.tail])} in a bundle"
        )
    if stored is None:
        raise not_found(f"{e.res_type}/{e.res_id} is not known")
    if stored.deleted or stored.content is None:
        raise FhirError(410, [Issue("deleted", f"{e.res_type}/{e.res_id} was deleted")])
    return {
        "resource": orjson.Fragment(stored.content),
        "response": {
            "status": STATUS_TEXT[200],
            "etag": etag(stored.version),
            "lastModified": stored.last_updated,
        },
    }


def run_batch(
    engine: FhirEngine, raw_entries: list[Any], prefer_return: str | None
) -> list[dict[str, Any]]:
    """Each entry on its own: one failing entry does not stop the others. Once the
    response reaches ``LIENTHONG_RESPONSE_MAX_BYTES``, the entries left (and a read whose
    result does not fit) are answered 413 without being run; a write that ran is still
    reported, without its representation."""
    responses: list[dict[str, Any]] = []
    budget = ResponseBudget(engine.settings.response_max_bytes)
    for i, raw in enumerate(raw_entries):
        if budget.exhausted:
            responses.append(budget.not_answered(i))
            continue
        try:
            e = _parse_entry(engine, i, raw)
            if e.method in ("GET", "HEAD"):
                with engine.store.reader() as rsession:
                    answer = _get(engine, rsession, e)
                responses.append(answer if budget.fits(answer) else budget.not_answered(i))
                continue
            with engine.store.writer() as session:
                _assign_id(engine, session, e, Targets())
                if e.resource is not None:
                    _rewrite(engine, session, e.resource, Targets(), None, {}, in_batch=True)
                answer = _execute(engine, session, e, now_instant(), prefer_return)
        except FhirError as err:
            err = _in_entry(err, i, _resource_type_of(raw))
            answer = {"response": {"status": f"{err.status}", "outcome": err.outcome()}}
        if not budget.fits(answer):
            answer.pop("resource", None)  # done already: reported, if not shown
            budget.used += budget.size(answer)
        responses.append(answer)
    return responses


def _resource_type_of(raw: Any) -> str:
    resource = raw.get("resource") if isinstance(raw, dict) else None
    return str(resource.get("resourceType", "")) if isinstance(resource, dict) else ""
