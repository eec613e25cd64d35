"""create and conditional create (https://hl7.org/fhir/R4/http.html#create)."""

from __future__ import annotations

from typing import Any

from lienthong.fhir.engine import FhirEngine, FhirResponse, now_instant
from lienthong.fhir.errors import precondition_failed
from lienthong.fhir.interactions.write_result import stored_from, write_response
from lienthong.fhir.validate import validate_resource
from lienthong.storage.base import Stored, WriteSession


def create_in(
    engine: FhirEngine,
    session: WriteSession,
    resource: dict[str, Any],
    if_none_exist: str | None = None,
    res_id: str | None = None,
    now: str | None = None,
    validated: bool = False,
) -> tuple[int, Stored]:
    """Create ``resource`` with a server id (or ``res_id`` chosen by a transaction).

    With ``If-None-Exist`` an existing single match is returned (200) instead,
    and several matches are a 412.
    """
    rtype = validate_resource(resource, structure=not validated)
    if if_none_exist:
        matches = engine.match_conditional(session, rtype, if_none_exist, "If-None-Exist")
        if len(matches) > 1:
            raise precondition_failed(
                f"If-None-Exist {if_none_exist!r} matches more than one {rtype}"
            )
        if matches:
            return 200, matches[0]
    op = engine.prepare(
        resource, res_id or engine.new_id(), 1, now or now_instant(), "POST", None, validate=False
    )
    session.write([op])
    engine.after_write(session, [op])
    return 201, stored_from(op)


def create(
    engine: FhirEngine,
    res_type: str,
    resource: dict[str, Any],
    if_none_exist: str | None = None,
    prefer_return: str | None = None,
) -> FhirResponse:
    # validate before taking the writer, so writes queue only for the write itself
    validate_resource(resource, res_type)
    with engine.store.writer() as session:
        status, stored = create_in(engine, session, resource, if_none_exist, validated=True)
    return write_response(
        engine, status, stored, prefer_return, f"created {res_type}/{stored.res_id}"
    )
