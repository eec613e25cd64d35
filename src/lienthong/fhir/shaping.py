"""Shaping returned resources: ``_summary`` and ``_elements``
(https://hl7.org/fhir/R4/search.html#summary, #elements), and bundle assembly.

Stored resources are passed through as pre-serialised JSON fragments, so a
search page is never parsed and re-serialised unless the client asked for a
subset.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from lienthong.fhir.errors import FhirError, Issue
from lienthong.fhir.structure import elements

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
ALWAYS = ("resourceType", "id", "meta")


def _json_names(name: str, types: tuple[str, ...]) -> list[str]:
    """The JSON names of an element: ``value[x]`` is ``valueQuantity``, ``valueString`` ..."""
    if len(types) == 1:
        return [name]
    return [name + t[0].upper() + t[1:] for t in types]


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements marked isSummary in the R4 definitions, plus mandatory ones
    (JSON names, choice types expanded)."""
    names: set[str] = set(ALWAYS)
    for name, types, low, _high, summary in elements(resource_type):
        if summary or low > 0:
            names.update(_json_names(name, types))
    return frozenset(names)


@cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    names: set[str] = set(ALWAYS)
    for name, types, low, _high, _summary in elements(resource_type):
        if low > 0:
            names.update(_json_names(name, types))
    return frozenset(names)


@cache
def choice_bases(resource_type: str) -> dict[str, str]:
    """JSON names of choice elements to their base name: ``valueQuantity`` -> ``value``."""
    out: dict[str, str] = {}
    for name, types, _low, _high, _summary in elements(resource_type):
        if len(types) > 1:
            for json_name in _json_names(name, types):
                out[json_name] = name
    return out


def _tag_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return resource


def shape(content: bytes, summary: str | None, elements: list[str] | None) -> Any:
    """The resource as the client asked to see it: bytes fragment or a reduced dict."""
    if summary in (None, "false") and not elements:
        return orjson.Fragment(content)
    resource: dict[str, Any] = orjson.loads(content)
    rtype = resource["resourceType"]
    keep: frozenset[str] | set[str]
    if elements:
        keep = set(elements) | mandatory_elements(rtype)
        choices = choice_bases(rtype)
        out = {
            k: v
            for k, v in resource.items()
            if _element_name(k) in keep or choices.get(_element_name(k)) in keep
        }
        return _tag_subsetted(out)
    if summary == "true":
        keep = summary_elements(rtype)
        return _tag_subsetted({k: v for k, v in resource.items() if _element_name(k) in keep})
    if summary == "text":
        keep = {"text"} | mandatory_elements(rtype)
        return _tag_subsetted({k: v for k, v in resource.items() if _element_name(k) in keep})
    if summary == "data":
        resource.pop("text", None)
        return _tag_subsetted(resource)
    return resource


def _element_name(key: str) -> str:
    """``_birthDate`` (primitive extension) belongs with ``birthDate``."""
    return key[1:] if key.startswith("_") else key


def shape_one(content: bytes, summary: str | None, elements: str | None) -> bytes:
    """A single resource (read, vread, the CapabilityStatement) as ``_summary`` or
    ``_elements`` asked for it; R4 lets both apply to a read as to a search."""
    if summary not in (None, "true", "false", "text", "data"):
        raise FhirError(
            400,
            [
                Issue(
                    "invalid",
                    f"_summary must be one of true, false, text or data on a read, not {summary!r}",
                    expression=("_summary",),
                )
            ],
        )
    names = [e.strip() for e in elements.split(",") if e.strip()] if elements else None
    if summary in (None, "false") and not names:
        return content
    return orjson.dumps(shape(content, summary, names))
