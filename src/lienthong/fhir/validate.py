"""Structural validation of resources against the FHIR R4 models.

Uses the ``fhir.resources`` R4B pydantic models (R4B shares R4's resource
structures for everything lienthong stores) and turns their errors into
OperationOutcome issues whose ``expression`` is the FHIRPath of the element
at fault, e.g. ``Patient.name[0].family``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from lienthong.fhir.bindings import check_codes
from lienthong.fhir.errors import FhirError, Issue, fhirpath_step

ABSTRACT_TYPES = frozenset({"Resource", "DomainResource"})
"""Resource types no instance may have (https://hl7.org/fhir/R4/resource.html)."""
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@cache
def model_class(resource_type: str) -> Any:
    """The model of a resource type, or None when the type does not exist or is abstract."""
    if resource_type in ABSTRACT_TYPES:
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None
    fields = getattr(cls, "model_fields", {})
    # data types share the lookup; only resources have these elements
    if "meta" not in fields or "implicitRules" not in fields:
        return None
    return cls


def is_resource_type(name: str) -> bool:
    return bool(name) and name[0].isupper() and model_class(name) is not None


def valid_id(value: str) -> bool:
    """FHIR id: 1-64 characters of A-Z a-z 0-9 - . (https://hl7.org/fhir/R4/datatypes.html#id)."""
    return 0 < len(value) <= 64 and all(c in ID_CHARS for c in value)


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the FHIRPath of the element: list positions as
    ``[n]``, and a primitive's ``_name`` sibling (its id and extensions in JSON) as the
    element itself, as FHIRPath sees them (``Patient.birthDate.extension[0]``)."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            name = str(part)
            if name.startswith("_") and len(name) > 1 and name[1].isalpha():
                name = name[1:]
            out += f".{fhirpath_step(name)}"
    return out


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
    cls = model_class(rtype)
    if cls is None:
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
    bad_text = _control_character(resource, rtype)
    if bad_text is not None:
        raise FhirError(
            422,
            [
                Issue(
                    "value",
                    f"{bad_text}: a string may not hold control characters other than tab, "
                    "carriage return and line feed",
                    expression=(bad_text,),
                )
            ],
        )
    try:
        nested = _nested_resource_problem(resource)
        if nested is not None:
            steps, problem = nested
            where = _path(rtype, tuple(reversed(steps)))
            raise FhirError(422, [Issue("structure", f"{where}: {problem}", expression=(where,))])
        cls.model_validate(resource)
    except ValidationError as exc:
        issues = [
            Issue(
                "structure" if err["type"] == "extra_forbidden" else "value",
                f"{_path(rtype, tuple(err['loc']))}: {err['msg']}"
                + (f" (got {err['input']!r})" if _short(err.get("input")) else ""),
                expression=(_path(rtype, tuple(err["loc"])),),
            )
            for err in exc.errors()
        ]
        raise FhirError(422, issues) from None
    except (ValueError, TypeError) as exc:
        raise FhirError(422, [Issue("value", f"{rtype}: {exc}", expression=(rtype,))]) from None
    except RecursionError:
        raise FhirError(
            400,
            [Issue("too-costly", f"{rtype}: elements are nested too deep", expression=(rtype,))],
        ) from None
    code_issues = check_codes(resource, cls)
    if code_issues:
        raise FhirError(422, code_issues)
    return rtype


def _nested_resource_problem(value: dict[str, Any]) -> tuple[list[str | int], str] | None:
    """The first resource held inside ``value`` (contained, a Bundle's entries, a
    parameter's value) whose ``resourceType`` is missing, unknown or abstract: the steps to
    it, innermost first, and what is wrong; the models would fail on it without saying."""
    for key, item in value.items():
        if type(item) is dict:
            found = _nested_resource(item, key == "contained")
            if found is not None:
                found[0].append(key)
                return found
        elif type(item) is list:
            for i, each in enumerate(item):
                if type(each) is dict:
                    found = _nested_resource(each, key == "contained")
                    if found is not None:
                        found[0].extend((i, key))
                        return found
    return None


def _nested_resource(value: dict[str, Any], must_be: bool) -> tuple[list[str | int], str] | None:
    if "resourceType" in value or must_be:
        kind = value.get("resourceType")
        if not isinstance(kind, str) or not kind:
            return [], "a resource here needs a resourceType"
        if not is_resource_type(kind):
            what = "abstract" if kind in ABSTRACT_TYPES else "unknown"
            return [], f"resourceType {kind!r} is {what}"
    return _nested_resource_problem(value)


_ALLOWED_CONTROL = frozenset("\t\r\n")


def _control_character(value: Any, path: str) -> str | None:
    """The FHIRPath of the first string holding a code point below 32 other than tab,
    CR or LF, which R4 forbids in every string (https://hl7.org/fhir/R4/datatypes.html#string)."""
    if isinstance(value, str):
        if any(c < " " and c not in _ALLOWED_CONTROL for c in value):
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            name = key[1:] if key.startswith("_") and len(key) > 1 else key
            found = _control_character(item, f"{path}.{name}" if name != "resourceType" else path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _control_character(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 80
