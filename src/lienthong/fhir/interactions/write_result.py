"""Turning a written version into the response the client asked for (``Prefer: return``)."""

from __future__ import annotations

from lienthong.fhir.engine import FhirEngine, FhirResponse, stored_headers
from lienthong.fhir.errors import Issue, operation_outcome
from lienthong.storage.base import Stored, WriteOp


def stored_from(op: WriteOp) -> Stored:
    assert op.pk is not None
    return Stored(
        pk=op.pk,
        res_type=op.res_type,
        res_id=op.res_id,
        version=op.version,
        last_updated=op.last_updated,
        deleted=op.content is None,
        content=op.content,
        method=op.method,
    )


def write_response(
    engine: FhirEngine, status: int, stored: Stored, prefer_return: str | None, message: str
) -> FhirResponse:
    headers = stored_headers(stored, engine.base_url, location=True)
    if prefer_return == "minimal":
        return FhirResponse(status, None, headers)
    if prefer_return == "OperationOutcome":
        return FhirResponse(
            status, operation_outcome([Issue("informational", message, "information")]), headers
        )
    return FhirResponse(status, stored.content, headers)
