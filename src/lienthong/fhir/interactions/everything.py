"""``Patient/[id]/$everything`` (https://hl7.org/fhir/R4/patient-operation-everything.html).

Returns the patient, every resource that refers to the patient (the patient
compartment as the index sees it), and the resources those refer to one hop
on (practitioners, organizations, locations, medications) so the record can
be read on its own. On a master person record (the person index's) it spans
the source records the master links.

Parameters, by GET query or in a POST ``Parameters`` body:

* ``start`` / ``end``: the care dates of interest, not record dates. A compartment
  resource is kept when one of its care dates (:data:`CARE_DATES`, else its ``date``
  search parameter) overlaps the range; one without a care date cannot be placed
  outside it and is kept. The patient records themselves are always kept.
* ``_since``: only resources whose ``meta.lastUpdated`` is at or after the instant.
* ``_type``: only these resource types (comma-separated, may repeat).
* ``_count`` (with ``_offset``): page the result; ``next``/``previous`` links carry
  every parameter. Without ``_count`` the whole record is one page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, gone, not_found
from lienthong.fhir.interactions.search import searchset
from lienthong.fhir.search_index import date_range
from lienthong.fhir.search_parse import SearchRequest
from lienthong.fhir.validate import is_resource_type
from lienthong.storage.base import Stored
from lienthong.storage.query import SearchQuery

CARE_DATES: dict[str, tuple[str, ...]] = {
    "Condition": ("onset-date", "recorded-date"),
    "MedicationRequest": ("authoredon",),
    "MedicationAdministration": ("effective-time",),
    "MedicationDispense": ("whenhandedover", "whenprepared"),
    "MedicationStatement": ("effective",),
    "Claim": ("created",),
    "ClaimResponse": ("created",),
    "ExplanationOfBenefit": ("created",),
    "ImagingStudy": ("started",),
    "DocumentReference": ("period", "date"),
    "ServiceRequest": ("occurrence", "authored"),
    "Goal": ("start-date",),
    "Media": ("created",),
    "Specimen": ("collected",),
    "Communication": ("sent", "received"),
    "CommunicationRequest": ("occurrence", "authored"),
    "DeviceRequest": ("event-date", "authored-on"),
    "NutritionOrder": ("datetime",),
    "QuestionnaireResponse": ("authored",),
    "Provenance": ("when", "recorded"),
    "DetectedIssue": ("identified",),
    "Basic": ("created",),
    "Account": ("period",),
}
"""The search parameters giving a resource's care date, by type, first found wins.
Types not listed use their ``date`` parameter (R4 ``clinical-date`` and the like:
Encounter period, Observation effective, Procedure performed, Immunization
occurrence, DiagnosticReport effective, CarePlan period, ...)."""

_VALUE_KEYS = (
    "valueDate",
    "valueDateTime",
    "valueInstant",
    "valueCode",
    "valueString",
    "valueUri",
    "valueInteger",
    "valueUnsignedInt",
    "valuePositiveInt",
)
_PARAMS = ("start", "end", "_since", "_type", "_count", "_offset")


def parameters_from_body(body: Any) -> list[tuple[str, str]]:
    """The (name, value) pairs of a POST ``Parameters`` body (None: no parameters)."""
    if body is None:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("the body of POST $everything must be a Parameters resource")
    out: list[tuple[str, str]] = []
    for i, param in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        name = param.get("name") if isinstance(param, dict) else None
        if not isinstance(name, str):
            raise bad_request("a parameter has no name", f"{where}.name")
        values = [param[k] for k in _VALUE_KEYS if k in param]
        if len(values) != 1 or isinstance(values[0], (dict, list, bool)):
            raise bad_request(
                f"parameter {name!r} needs one value (valueDate, valueInstant, valueCode, "
                "valueUnsignedInt, ...)",
                where,
            )
        out.append((name, str(values[0])))
    return out


def _date(args: dict[str, str], name: str) -> tuple[str, str] | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return date_range(raw)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}", name) from None


def _int(args: dict[str, str], name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise bad_request(f"{name} must be a non-negative integer, not {raw!r}", name)
    return int(raw)


def _types(params: list[tuple[str, str]]) -> list[str] | None:
    found = [t.strip() for k, v in params if k == "_type" for t in v.split(",") if t.strip()]
    if not any(k == "_type" for k, _ in params):
        return None
    for t in found:
        if not is_resource_type(t):
            raise bad_request(f"_type: {t!r} is not a FHIR R4 resource type", "_type")
    return list(dict.fromkeys(found))


def _person_records(content: bytes | None) -> list[tuple[str, str]]:
    """A master person record spans its source records (``Patient.link`` seealso)."""
    from lienthong.identity.mpi import is_master

    resource = orjson.loads(content or b"{}")
    if not is_master(resource):
        return []
    return [
        ("Patient", link["other"]["reference"][8:])
        for link in resource.get("link") or []
        if link.get("type") == "seealso"
        and str((link.get("other") or {}).get("reference", "")).startswith("Patient/")
    ]


def _is_master(stored: Stored) -> bool:
    from lienthong.identity.mpi import is_master

    return stored.res_type == "Patient" and is_master(orjson.loads(stored.content or b"{}"))


def _care_dates(engine: FhirEngine, stored: Stored) -> list[tuple[str, str]]:
    """The (low, high) UTC ranges of the resource's care date; empty when it has none."""
    codes = CARE_DATES.get(stored.res_type)
    if codes is None:
        sp = engine.registry.get(stored.res_type, "date")
        codes = ("date",) if sp is not None and sp.type == "date" else ()
    if not codes or stored.content is None:
        return []
    rows = engine.extractor.extract(orjson.loads(stored.content)).date
    for code in codes:
        found = [(low, high) for c, low, high in rows if c == code]
        if found:
            return found
    return []


def _in_care_range(engine: FhirEngine, stored: Stored, start: str | None, end: str | None) -> bool:
    ranges = _care_dates(engine, stored)
    if not ranges:
        return True
    return any(
        (start is None or high >= start) and (end is None or low <= end) for low, high in ranges
    )


def everything(
    engine: FhirEngine, patient_id: str, params: list[tuple[str, str]], body: Any = None
) -> FhirResponse:
    params = params + parameters_from_body(body)
    args = dict(params)
    types = _types(params)
    start_range, end_range = _date(args, "start"), _date(args, "end")
    start = start_range[0] if start_range else None
    end = end_range[1] if end_range else None
    since_range = _date(args, "_since")
    since = since_range[0] if since_range else None
    count = _int(args, "_count")
    if count is not None:
        count = min(count, engine.settings.max_page_size)
    offset = _int(args, "_offset") or 0
    with engine.store.reader() as session:
        patient = session.read("Patient", patient_id)
        if patient is None:
            raise not_found(f"Patient/{patient_id} is not known")
        if patient.deleted:
            raise gone(f"Patient/{patient_id} was deleted")
        targets = [("Patient", patient_id), *_person_records(patient.content)]
        sources = session.read_many(targets[1:])
        source_keys = {(s.res_type, s.res_id) for s in sources}
        referring = [
            s
            for s in session.referencing(targets, None)
            if (s.res_type, s.res_id) != targets[0]
            and (s.res_type, s.res_id) not in source_keys
            and not _is_master(s)
        ]
        if start is not None or end is not None:
            referring = [s for s in referring if _in_care_range(engine, s, start, end)]
        referring.sort(key=lambda s: (s.res_type, s.pk))
        compartment = sources + referring
        seen = {("Patient", patient_id)} | {(s.res_type, s.res_id) for s in compartment}
        related = sorted(
            (
                s
                for s in session.referenced([patient.pk] + [s.pk for s in compartment], None)
                if (s.res_type, s.res_id) not in seen
            ),
            key=lambda s: (s.res_type, s.pk),
        )
    found = [patient, *compartment, *related]
    if types is not None:
        found = [s for s in found if s.res_type in types]
    if since is not None:
        found = [s for s in found if s.last_updated[:26] >= since]
    total = len(found)
    page = found[offset:] if count is None else found[offset : offset + count]
    req = SearchRequest(SearchQuery("Patient", count=len(page), offset=offset))
    path = f"{engine.base_url}/Patient/{patient_id}/$everything"
    bundle = searchset(engine, req, path, page, [], total)
    echo = [(k, v) for k, v in params if k in _PARAMS[:3]]
    if types is not None:
        echo.append(("_type", ",".join(types)))
    bundle["link"] = _links(path, echo, count, offset, total)
    return FhirResponse(200, bundle)


def _links(
    path: str, echo: list[tuple[str, str]], count: int | None, offset: int, total: int
) -> list[dict[str, str]]:
    def url(at: int) -> str:
        query = list(echo)
        if count is not None:
            query.append(("_count", str(count)))
        if at:
            query.append(("_offset", str(at)))
        return f"{path}?{urlencode(query)}" if query else path

    links = [{"relation": "self", "url": url(offset)}]
    if count is None:
        return links
    links.append({"relation": "first", "url": url(0)})
    if count > 0 and offset + count < total:
        links.append({"relation": "next", "url": url(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    if count > 0 and total > 0:
        links.append({"relation": "last", "url": url(((total - 1) // count) * count)})
    return links
