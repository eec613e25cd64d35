"""update, create-on-update and conditional update (https://hl7.org/fhir/R4/http.html#update)."""

from __future__ import annotations

from typing import Any

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
) -> tuple[int, Stored]:
    """Write a new version of ``res_type/res_id``; creates it (201) when absent.

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
    version = previous.version + 1 if previous is not None else 1
    op = engine.prepare(
        resource, res_id, version, now or now_instant(), "PUT", previous, validate=False
    )
    session.write([op])
    engine.after_write(session, [op])
    created = previous is None or previous.deleted
    return (201 if created else 200), stored_from(op)


def conditional_update_in(
    engine: FhirEngine,
    session: WriteSession,
    res_type: str,
    query_string: str,
    resource: dict[str, Any],
    if_match: str | None = None,
    now: str | None = None,
    validated: bool = False,
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
    return update_in(engine, session, res_type, target, resource, if_match, now, validated)


def update(
    engine: FhirEngine,
    res_type: str,
    res_id: str | None,
    resource: dict[str, Any],
    query_string: str | None = None,
    if_match: str | None = None,
    prefer_return: str | None = None,
) -> FhirResponse:
    validate_resource(resource, res_type)  # before taking the writer
    with engine.store.writer() as session:
        if res_id is None:
            status, stored = conditional_update_in(
                engine, session, res_type, query_string or "", resource, if_match, validated=True
            )
        else:
            status, stored = update_in(
                engine, session, res_type, res_id, resource, if_match, validated=True
            )
    verb = "created" if status == 201 else "updated"
    return write_response(
        engine, status, stored, prefer_return, f"{verb} {res_type}/{stored.res_id}"
    )
