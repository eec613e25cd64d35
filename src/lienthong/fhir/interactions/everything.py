"""``Patient/[id]/$everything`` (https://hl7.org/fhir/R4/patient-operation-everything.html).

Returns the patient, every resource that refers to the patient (the patient
compartment as the index sees it), and the resources those refer to one hop
on (practitioners, organizations, locations, medications) so the record can
be read on its own.
"""

from __future__ import annotations

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import gone, not_found
from lienthong.fhir.interactions.search import searchset
from lienthong.fhir.search_index import date_range
from lienthong.fhir.search_parse import SearchRequest
from lienthong.storage.base import Stored
from lienthong.storage.query import SearchQuery


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


def everything(engine: FhirEngine, patient_id: str, params: list[tuple[str, str]]) -> FhirResponse:
    args = dict(params)
    types = set(args["_type"].split(",")) if args.get("_type") else None
    since = date_range(args["_since"])[0] if args.get("_since") else None
    with engine.store.reader() as session:
        patient = session.read("Patient", patient_id)
        if patient is None:
            raise not_found(f"Patient/{patient_id} is not known")
        if patient.deleted:
            raise gone(f"Patient/{patient_id} was deleted")
        targets = [("Patient", patient_id), *_person_records(patient.content)]
        compartment = [
            s
            for s in session.referencing(targets, None)
            if (s.res_type, s.res_id) != targets[0] and not _is_master(s)
        ]
        sources = session.read_many(targets[1:])
        compartment = sources + [s for s in compartment if s not in sources]
        seen = {("Patient", patient_id)} | {(s.res_type, s.res_id) for s in compartment}
        related = [
            s
            for s in session.referenced([s.pk for s in compartment], None)
            if (s.res_type, s.res_id) not in seen
        ]
    found = [patient, *compartment, *related]
    if types is not None:
        found = [s for s in found if s.res_type in types]
    if since is not None:
        found = [s for s in found if s.last_updated[:26] >= since]
    req = SearchRequest(SearchQuery("Patient", count=len(found)))
    bundle = searchset(
        engine, req, f"{engine.base_url}/Patient/{patient_id}/$everything", found, [], len(found)
    )
    bundle["link"] = bundle["link"][:1]
    return FhirResponse(200, bundle)
