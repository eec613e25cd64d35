"""``Patient/$match`` (https://hl7.org/fhir/R4/patient-operation-match.html).

Scores the persons of the master person index against a Patient that need not be
stored, and answers a searchset Bundle: one entry per candidate person (its master
record, or the best matching source record when the user may see only that), with
``search.score`` and the ``match-grade`` extension (certain, probable, possible).
"""

from __future__ import annotations

from typing import Any

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request
from lienthong.fhir.validate import validate_resource

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def parameter(body: Any, name: str) -> dict[str, Any] | None:
    """The first parameter called ``name`` of a Parameters body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("the operation takes a Parameters resource", "Parameters")
    for p in body.get("parameter") or []:
        if isinstance(p, dict) and p.get("name") == name:
            return p
    return None


def guard_of(engine: FhirEngine) -> Any:
    """The access guard of this engine's store (None for the platform's own tools)."""
    from lienthong.access.guard import GuardedStore

    return engine.store if isinstance(engine.store, GuardedStore) else None


def match(engine: FhirEngine, body: Any) -> FhirResponse:
    if engine.mpi is None:
        raise bad_request("the master person index is switched off (LIENTHONG_MPI)")
    guard = guard_of(engine)
    if guard is not None:
        guard.policy.require(guard.ctx, "Patient", "s", True)
    resource_param = parameter(body, "resource")
    resource = resource_param.get("resource") if resource_param else None
    if not isinstance(resource, dict):
        raise bad_request("$match needs a Patient in parameter 'resource'", "Parameters.resource")
    if resource.get("resourceType") != "Patient":
        raise bad_request("$match matches Patients only", "Parameters.resource.resourceType")
    validate_resource(dict(resource), "Patient")
    only = parameter(body, "onlyCertainMatches")
    only_certain = bool(only.get("valueBoolean")) if only else False
    count_param = parameter(body, "count")
    count = 10
    if count_param is not None:
        value = count_param.get("valueInteger", count_param.get("valuePositiveInt"))
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_request("count must be a positive integer", "Parameters.count")
        count = min(value, engine.settings.max_page_size)
    entries: list[dict[str, Any]] = []
    with engine.store.reader() as session:
        if guard is not None:
            from lienthong.access.policy import forbidden
            from lienthong.identity.mpi import raw_session

            if guard.visibility(raw_session(session)).deidentify:
                # matching demographics is singling a person out, which de-identified
                # access may not do (as with identifying search parameters)
                guard.ctx.denied = "de-identified access cannot match persons"
                raise forbidden(guard.ctx.denied)
        candidates = engine.mpi.match(session, resource, count, only_certain)
        # the guarded session decides what this user may see of each person: its master,
        # else the record that matched best
        seen = {
            s.res_id: s for s in session.read_many([("Patient", c.master_id) for c in candidates])
        }
        missing = [("Patient", c.record_id) for c in candidates if c.master_id not in seen]
        if missing:
            seen.update({s.res_id: s for s in session.read_many(missing)})
        for c in candidates:
            shown = [s for s in (seen.get(c.master_id), seen.get(c.record_id)) if s is not None]
            if not shown or shown[0].content is None:
                continue
            entries.append(
                {
                    "fullUrl": engine.full_url(shown[0]),
                    "resource": orjson.loads(shown[0].content),
                    "search": {
                        "extension": [{"url": MATCH_GRADE, "valueCode": c.grade}],
                        "mode": "match",
                        "score": round(c.score.probability, 6),
                    },
                }
            )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": f"{engine.base_url}/Patient/$match"}],
    }
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, bundle)
