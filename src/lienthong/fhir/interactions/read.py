"""read and vread (https://hl7.org/fhir/R4/http.html#read)."""

from __future__ import annotations

from lienthong.fhir.engine import FhirEngine, FhirResponse, parse_etag, stored_headers
from lienthong.fhir.errors import gone, not_found
from lienthong.fhir.shaping import shape_one
from lienthong.storage.base import Stored


def read(
    engine: FhirEngine,
    res_type: str,
    res_id: str,
    if_none_match: str | None = None,
    summary: str | None = None,
    elements: str | None = None,
) -> FhirResponse:
    with engine.store.reader() as session:
        stored = session.read(res_type, res_id)
    resp = _respond(engine, stored, f"{res_type}/{res_id}", if_none_match)
    if isinstance(resp.body, bytes):
        resp.body = shape_one(resp.body, summary, elements)
    return resp


def vread(engine: FhirEngine, res_type: str, res_id: str, version: str) -> FhirResponse:
    if not version.isdigit():
        raise not_found(f"{res_type}/{res_id} has no version {version!r}")
    with engine.store.reader() as session:
        stored = session.vread(res_type, res_id, int(version))
    return _respond(engine, stored, f"{res_type}/{res_id}/_history/{version}", None)


def _respond(
    engine: FhirEngine, stored: Stored | None, what: str, if_none_match: str | None
) -> FhirResponse:
    if stored is None:
        raise not_found(f"{what} is not known")
    if stored.deleted:
        err = gone(f"{what} was deleted")
        err.headers = stored_headers(stored, engine.base_url)
        raise err
    headers = stored_headers(stored, engine.base_url)
    if if_none_match and parse_etag(if_none_match) == stored.version:
        return FhirResponse(304, None, headers)
    return FhirResponse(200, stored.content, headers)
