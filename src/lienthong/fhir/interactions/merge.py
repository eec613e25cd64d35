"""``Patient/$merge`` and ``Patient/$unmerge``: explicit person operations of the master
person index, for data administrators.

``$merge`` follows the parameters of the FHIR R5 operation
(https://hl7.org/fhir/R5/patient-operation-merge.html): ``source-patient`` and
``target-patient`` references (a source record or a master; each stands for its
person). The source person's master is retired (``active=false`` and a ``replaced-by``
link); every version stays in the history. ``$unmerge`` takes ``event`` (the id a merge
answered with) to undo that merge, or ``patient`` (a source record) to split one record
out into a person of its own. Both answer Parameters with ``outcome``, ``result`` (the
target master as it now is) and ``event``.
"""

from __future__ import annotations

from typing import Any

import orjson

from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import Issue, bad_request, operation_outcome
from lienthong.fhir.interactions.match import guard_of, parameter


def _require_admin(engine: FhirEngine) -> tuple[str, Any]:
    guard = guard_of(engine)
    if guard is None:
        return "local-operator", None
    guard.policy.require(guard.ctx, "Patient", "u", True)
    if guard.ctx.role != "data_admin":
        from lienthong.access.policy import forbidden

        guard.ctx.denied = "merging persons needs the data_admin role"
        raise forbidden(guard.ctx.denied)
    return str(guard.ctx.principal.name), guard.ctx


def _reference(body: Any, name: str) -> str | None:
    p = parameter(body, name)
    if p is None:
        return None
    ref = (p.get("valueReference") or {}).get("reference")
    if not isinstance(ref, str) or not ref.startswith("Patient/") or "/" in ref[8:]:
        raise bad_request(f"{name} must be a reference Patient/<id>", f"Parameters.{name}")
    return ref[8:]


def _answer(engine: FhirEngine, result: dict[str, Any], message: str, ctx: Any) -> FhirResponse:
    if ctx is not None:
        ctx.touched.update(result["records"])
    with engine.store.reader() as session:
        target = session.read("Patient", result["target"])
    params: list[dict[str, Any]] = [
        {
            "name": "outcome",
            "resource": operation_outcome([Issue("informational", message, "information")]),
        },
        {"name": "event", "valueString": result["event"]},
    ]
    if target is not None and target.content is not None:
        params.append({"name": "result", "resource": orjson.loads(target.content)})
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": params})


def merge(engine: FhirEngine, body: Any) -> FhirResponse:
    if engine.mpi is None:
        raise bad_request("the master person index is switched off (LIENTHONG_MPI)")
    who, ctx = _require_admin(engine)
    source = _reference(body, "source-patient")
    target = _reference(body, "target-patient")
    if source is None or target is None:
        raise bad_request(
            "$merge needs source-patient and target-patient", "Parameters.source-patient"
        )
    with engine.store.writer() as session:
        result = engine.mpi.merge(session, source, target, who)
    message = (
        f"merged person Patient/{result['source']} into Patient/{result['target']} "
        f"({len(result['records'])} records moved)"
    )
    return _answer(engine, result, message, ctx)


def unmerge(engine: FhirEngine, body: Any) -> FhirResponse:
    if engine.mpi is None:
        raise bad_request("the master person index is switched off (LIENTHONG_MPI)")
    who, ctx = _require_admin(engine)
    event = parameter(body, "event")
    event_id = event.get("valueString") if event else None
    record = _reference(body, "patient")
    if (event_id is None) == (record is None):
        raise bad_request("$unmerge needs either event or patient", "Parameters.event")
    with engine.store.writer() as session:
        result = engine.mpi.unmerge(session, who, event_id=event_id, record=record)
    message = (
        f"split Patient/{record} out into person Patient/{result['target']}"
        if record
        else f"undid merge {event_id}: person Patient/{result['source']} restored"
    )
    return _answer(engine, result, message, ctx)
