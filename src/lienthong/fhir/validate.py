"""Validation of resources against the FHIR R4 (4.0.1) definitions on the write path.

The structure check is :mod:`lienthong.fhir.structure`, compiled once per type from the
official R4 StructureDefinitions; its issues carry as ``expression`` the FHIRPath of the
element at fault, e.g. ``Patient.name[0].family``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from lienthong.fhir import structure as r4
from lienthong.fhir.errors import FhirError, Issue

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@cache
def model_class(resource_type: str) -> Any:
    """The ``fhir.resources`` R4B model of a resource type, or None when R4 has no such
    concrete resource type. Not used on the write path any more (the R4 definitions are);
    kept for callers that want a model object."""
    if not r4.is_resource_type(resource_type):
        return None
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete FHIR R4 resource type."""
    return r4.is_resource_type(name)


def valid_id(value: str) -> bool:
    """FHIR id: 1-64 characters of A-Z a-z 0-9 - . (https://hl7.org/fhir/R4/datatypes.html#id)."""
    return 0 < len(value) <= 64 and all(c in ID_CHARS for c in value)


def validate_resource(
    resource: Any, expected_type: str | None = None, structure: bool = True
) -> str:
    """Check ``resource`` is a valid FHIR R4 resource; return its type or raise 400/422.

    With ``structure=False`` only the resource type and id are checked: for
    callers that validated the structure already (bulk import validates in
    worker processes before the writer sees a resource).
    """
    if not isinstance(resource, dict):
        raise FhirError(400, [Issue("structure", "the body is not a JSON object")])
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise FhirError(
            400, [Issue("required", "resourceType is missing", expression=("resourceType",))]
        )
    if not r4.is_resource_type(rtype):
        raise FhirError(
            400,
            [
                Issue(
                    "not-supported",
                    f"unknown resource type {rtype!r}",
                    expression=("resourceType",),
                )
            ],
        )
    if expected_type is not None and rtype != expected_type:
        raise FhirError(
            400,
            [
                Issue(
                    "invalid",
                    f"resourceType {rtype} does not match the URL's {expected_type}",
                    expression=("resourceType",),
                )
            ],
        )
    rid = resource.get("id")
    if rid is not None and not (isinstance(rid, str) and valid_id(rid)):
        raise FhirError(400, [Issue("value", f"invalid id {rid!r}", expression=(f"{rtype}.id",))])
    if not structure:
        return rtype
    try:
        issues = r4.validate(resource)
    except RecursionError:  # only without the request limits (LIENTHONG_JSON_MAX_DEPTH)
        raise FhirError(
            400,
            [Issue("too-costly", f"{rtype}: elements are nested too deep", expression=(rtype,))],
        ) from None
    if issues:
        raise FhirError(422, issues)
    return rtype
