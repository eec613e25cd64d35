"""delete and conditional delete (https://hl7.org/fhir/R4/http.html#delete).

Deletion is logical: a new version marks the resource deleted, its earlier
versions stay readable through history and vread, and its index rows go so
searches no longer find it. Deleting a resource that was never there, or
is deleted already, changes nothing and succeeds (204, as R4 allows).
"""

from __future__ import annotations

from lienthong.fhir.engine import FhirEngine, FhirResponse, etag, now_instant
from lienthong.fhir.errors import precondition_failed
from lienthong.storage.base import WriteSession


def delete_in(
    engine: FhirEngine, session: WriteSession, res_type: str, res_id: str, now: str | None = None
) -> int | None:
    """Delete one resource; returns the deletion's version, None if there was nothing
    to delete (never created, or deleted already)."""
    previous = session.read(res_type, res_id)
    if previous is None or previous.deleted:
        return None
    op = engine.deletion(previous, now or now_instant())
    session.write([op])
    engine.after_write(session, [op])
    return op.version


def conditional_delete_in(
    engine: FhirEngine, session: WriteSession, res_type: str, query_string: str
) -> int | None:
    matches = engine.match_conditional(session, res_type, query_string, "conditional delete")
    if len(matches) > 1:
        raise precondition_failed(f"conditional delete {query_string!r} matches several {res_type}")
    if not matches:
        return None
    return delete_in(engine, session, res_type, matches[0].res_id)


def delete(
    engine: FhirEngine, res_type: str, res_id: str | None, query_string: str | None = None
) -> FhirResponse:
    with engine.store.writer() as session:
        if res_id is None:
            version = conditional_delete_in(engine, session, res_type, query_string or "")
        else:
            version = delete_in(engine, session, res_type, res_id)
    headers = {"ETag": etag(version)} if version is not None else {}
    return FhirResponse(204, None, headers)
