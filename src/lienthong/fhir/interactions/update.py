"""update, create-on-update and conditional update (https://hl7.org/fhir/R4/http.html#update).

An update whose content is the current version's (``id`` and ``meta.versionId`` /
``meta.lastUpdated`` aside) writes nothing: the answer is the current version, its
ETag unchanged, and the history keeps one version. ``If-None-Match: *`` (or a list of
ETags, RFC 9110 §13.1.2) makes the update refuse, 412, to overwrite a resource that
exists (or is at one of those versions); it still creates one that does not.
"""

from __future__ import annotations

from typing import Any

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse, now_instant, parse_etag
from lienthong.fhir.errors import bad_request, precondition_failed
from lienthong.fhir.interactions.write_result import stored_from, write_response
from lienthong.fhir.validate import valid_id, validate_resource
from lienthong.storage.base import Stored, WriteSession


def update_in(
    engine: FhirEngine,
    session: WriteSession,
    res_type: str,
    res_id: str,
    resource: dict[str, Any],
    if_match: str | None = None,
    now: str | None = None,
    validated: bool = False,
    versions: dict[tuple[str, str], Stored] | None = None,
    if_none_match: str | None = None,
) -> tuple[int, Stored]:
    """Write a new version of ``res_type/res_id``; creates it (201) when absent, and
    answers the current version (200) without writing when the content is unchanged.

    ``versions``, when given, holds the current versions read ahead for a whole
    transaction (``WriteSession.current_versions``): a resource not in it is absent."""
    validate_resource(resource, res_type, structure=not validated)
    if not valid_id(res_id):
        raise bad_request(f"invalid resource id {res_id!r}", f"{res_type}.id")
    body_id = resource.get("id")
    if body_id is None:
        raise bad_request("the resource in an update must carry its id", f"{res_type}.id")
    if body_id != res_id:
        raise bad_request(
            f"the resource id {body_id!r} does not match the URL id {res_id!r}", f"{res_type}.id"
        )
    if versions is not None:
        previous = versions.get((res_type, res_id))
    else:
        previous = session.read(res_type, res_id)
    if if_match is not None:
        expected = parse_etag(if_match)
        if previous is None or previous.deleted or previous.version != expected:
            current = (
                "absent" if previous is None or previous.deleted else f'W/"{previous.version}"'
            )
            raise precondition_failed(
                f"If-Match {if_match} does not match {res_type}/{res_id} "
                f"(current version {current})"
            )
    if if_none_match is not None and previous is not None and not previous.deleted:
        tags = [t.strip() for t in if_none_match.split(",") if t.strip()]
        if "*" in tags or any(parse_etag(t) == previous.version for t in tags):
            raise precondition_failed(
                f"If-None-Match {if_none_match}: {res_type}/{res_id} exists "
                f'(current version W/"{previous.version}") and is not overwritten'
            )
    if previous is not None and not previous.deleted and _same_content(resource, previous):
        return 200, previous
    version = previous.version + 1 if previous is not None else 1
    op = engine.prepare(
        resource, res_id, version, now or now_instant(), "PUT", previous, validate=False
    )
    session.write([op])
    engine.after_write(session, [op])
    created = previous is None or previous.deleted
    return (201 if created else 200), stored_from(op)


_OWN_META = ("versionId", "lastUpdated")


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what every version has of its own: id, versionId, lastUpdated."""
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _OWN_META}
    if meta:
        out["meta"] = meta
    return out


def _same_content(resource: dict[str, Any], previous: Stored) -> bool:
    if previous.content is None:
        return False
    return _comparable(resource) == _comparable(orjson.loads(previous.content))


def conditional_update_in(
    engine: FhirEngine,
    session: WriteSession,
    res_type: str,
    query_string: str,
    resource: dict[str, Any],
    if_match: str | None = None,
    now: str | None = None,
    validated: bool = False,
    if_none_match: str | None = None,
) -> tuple[int, Stored]:
    """``PUT [type]?criteria``: update the one match, create when none, 412 when several."""
    validate_resource(resource, res_type, structure=False)
    matches = engine.match_conditional(session, res_type, query_string, "conditional update")
    if len(matches) > 1:
        raise precondition_failed(f"conditional update {query_string!r} matches several {res_type}")
    if matches:
        target = matches[0].res_id
        if resource.get("id") not in (None, target):
            raise bad_request(
                f"the resource id {resource.get('id')!r} does not match the resource found "
                f"({target})",
                f"{res_type}.id",
            )
    else:
        target = resource.get("id") or engine.new_id()
    resource["id"] = target
    return update_in(
        engine, session, res_type, target, resource, if_match, now, validated, None, if_none_match
    )


def update(
    engine: FhirEngine,
    res_type: str,
    res_id: str | None,
    resource: dict[str, Any],
    query_string: str | None = None,
    if_match: str | None = None,
    prefer_return: str | None = None,
    if_none_match: str | None = None,
) -> FhirResponse:
    validate_resource(resource, res_type)  # before taking the writer
    with engine.store.writer() as session:
        if res_id is None:
            status, stored = conditional_update_in(
                engine,
                session,
                res_type,
                query_string or "",
                resource,
                if_match,
                validated=True,
                if_none_match=if_none_match,
            )
        else:
            status, stored = update_in(
                engine,
                session,
                res_type,
                res_id,
                resource,
                if_match,
                validated=True,
                if_none_match=if_none_match,
            )
    verb = "created" if status == 201 else "updated"
    return write_response(
        engine, status, stored, prefer_return, f"{verb} {res_type}/{stored.res_id}"
    )
