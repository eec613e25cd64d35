"""Binary on the REST API (https://hl7.org/fhir/R4/binary.html#rest).

A read that does not explicitly ask for a FHIR media type (or ``_format``) gets
the content itself, under the Binary's own ``contentType``. A create or update
whose body is not a FHIR type is taken as the content: it becomes
``Binary.data`` (base64) with the request's Content-Type as ``contentType``,
and the ``X-Security-Context`` header, when sent, as ``securityContext``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, error
from lienthong.fhir.interactions import formats
from lienthong.fhir.interactions.read import read, vread

FHIR_BODY_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
"""Content types a FHIR body is sent as; any other one on Binary is the content itself."""


def is_raw_upload(content_type: str | None) -> bool:
    """Whether a Binary create/update body is the content rather than a Binary resource."""
    main = (content_type or "").split(";")[0].strip().lower()
    return bool(main) and main not in FHIR_BODY_TYPES


def from_upload(
    content: bytes, content_type: str, security_context: str | None, res_id: str | None
) -> dict[str, Any]:
    """The Binary resource a raw upload stands for."""
    ctype = content_type.strip()
    resource: dict[str, Any] = {"resourceType": "Binary", "contentType": ctype}
    if res_id is not None:
        resource["id"] = res_id
    if security_context is not None:
        ref = security_context.strip()
        if "/" not in ref.strip("/") or " " in ref:
            raise bad_request(
                f"X-Security-Context {security_context!r} is not a reference such as Patient/123",
                "Binary.securityContext",
            )
        resource["securityContext"] = {"reference": ref}
    if content:
        resource["data"] = base64.b64encode(content).decode("ascii")
    return resource


def read_binary(
    engine: FhirEngine,
    res_id: str,
    version: str | None,
    accept: str | None,
    raw_format: str | None,
    if_none_match: str | None = None,
) -> FhirResponse:
    """Read (or vread) a Binary: the resource when a FHIR type is asked for, else its bytes."""
    if version is None:
        resp = read(engine, "Binary", res_id, if_none_match)
    else:
        resp = vread(engine, "Binary", res_id, version)
    if formats.wants_fhir(accept, raw_format):
        formats.negotiate(accept, raw_format)
        return resp
    if resp.status != 200:
        return resp
    resource = resp.json() or {}
    ctype = str(resource.get("contentType") or "application/octet-stream")
    if not formats.accepts_media(accept, ctype):
        raise error(
            406,
            "not-supported",
            f"Binary/{res_id} holds {ctype}, which the Accept header {accept!r} does not "
            "admit; ask for it, */* or application/fhir+json",
        )
    try:
        content = base64.b64decode(resource.get("data") or "", validate=True)
    except binascii.Error:
        raise error(500, "exception", f"Binary/{res_id} holds data that is not base64") from None
    headers = dict(resp.headers)
    headers["Content-Type"] = ctype
    # the content is the sender's, not the server's: never sniff or run it as a page
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = "sandbox"
    context = (resource.get("securityContext") or {}).get("reference")
    if context:
        headers["X-Security-Context"] = str(context)
    return FhirResponse(200, content, headers)
