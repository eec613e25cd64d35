"""The audit trail over the API: ``GET /fhir/AuditEvent`` and the alert list.

Auditors and data administrators read every entry; a citizen reads the
entries about their own records — those of their person, as the master person
index links them now: who looked at them, when, why — and nothing else.
Reading the audit trail is itself audited.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from lienthong.access.audit import AuditRecord
from lienthong.access.gate import AccessGate
from lienthong.access.policy import AccessContext, forbidden
from lienthong.fhir.engine import FhirEngine, FhirResponse
from lienthong.fhir.errors import bad_request, not_found
from lienthong.fhir.interactions.search import with_link_header
from lienthong.fhir.search_index import date_range

READERS = {"auditor", "data_admin"}


def _person(gate: AccessGate, ctx: AccessContext) -> frozenset[str]:
    """The Patient ids whose audit entries a citizen reads: their person's."""
    with gate.engine.store.reader() as session:
        return gate.policy.person_patients(ctx.principal, session)


def _for(
    ctx: AccessContext, record: AuditRecord, base_url: str, person: frozenset[str]
) -> dict[str, Any]:
    """The AuditEvent as this reader may see it: a citizen learns who accessed their
    record, when, why and with what outcome — not which other patients the same
    request touched, what was searched for, or the chain's hashes."""
    if ctx.role in READERS:
        return record.to_fhir(base_url)
    own = tuple(p for p in record.entry.patients if p in person)
    entry = replace(record.entry, patients=own, query=None, detail=None, source_ip=None)
    event = replace(record, entry=entry).to_fhir(base_url)
    event["extension"] = [
        x for x in event.get("extension", []) if "hash" not in str(x.get("url", ""))
    ]
    if not event["extension"]:
        del event["extension"]
    return event


def _patient_filter(
    ctx: AccessContext, requested: str | None, person: frozenset[str]
) -> list[str] | None:
    wanted = requested.split("/", 1)[1] if requested and "/" in requested else requested
    if ctx.role in READERS:
        return [wanted] if wanted else None
    if ctx.role == "citizen" and ctx.principal.patient:
        if wanted is not None and wanted not in person:
            raise forbidden("a citizen reads the audit entries about their own records only")
        return [wanted] if wanted else sorted(person | {ctx.principal.patient})
    raise forbidden(f"role {ctx.role} may not read the audit trail")


def search(
    gate: AccessGate, engine: FhirEngine, ctx: AccessContext, params: list[tuple[str, str]]
) -> FhirResponse:
    args = dict(params)
    person = _person(gate, ctx) if ctx.role == "citizen" else frozenset()
    patient = _patient_filter(ctx, args.get("patient"), person)
    try:
        count = min(int(args.get("_count", "50")), 1000)
        offset = int(args.get("_offset", "0"))
    except ValueError:
        raise bad_request("_count and _offset must be integers") from None
    since = until = None
    for name, value in params:
        if name == "date":
            prefix, rest = (
                (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt") else ("eq", value)
            )
            try:
                low, high = date_range(rest)
            except ValueError as exc:
                raise bad_request(f"date: {exc}", "date") from None
            if prefix in ("ge", "gt", "eq"):
                since = low
            if prefix in ("le", "lt", "eq"):
                until = high
    user = args.get("agent") or args.get("user")
    if ctx.role not in READERS:
        user = None
    records, total = gate.audit.search(
        patient=patient,
        user=user,
        since=since,
        until=until,
        outcome=args.get("outcome"),
        count=count,
        offset=offset,
    )
    path = f"{engine.base_url}/AuditEvent"
    echo = [(k, v) for k, v in params if k not in ("_count", "_offset")]
    links = [{"relation": "self", "url": f"{path}?{urlencode([*echo, ('_count', count)])}"}]
    if offset + count < total:
        nxt = urlencode([*echo, ("_count", count), ("_offset", offset + count)])
        links.append({"relation": "next", "url": f"{path}?{nxt}"})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
    }
    if records:
        bundle["entry"] = [
            {
                "fullUrl": f"{path}/{r.seq}",
                "resource": _for(ctx, r, engine.base_url, person),
                "search": {"mode": "match"},
            }
            for r in records
        ]
    return with_link_header(FhirResponse(200, bundle))


def read(gate: AccessGate, engine: FhirEngine, ctx: AccessContext, res_id: str) -> FhirResponse:
    person = _person(gate, ctx) if ctx.role == "citizen" else frozenset()
    _patient_filter(ctx, None, person)
    record = gate.audit.read(int(res_id)) if res_id.isdigit() else None
    if record is None or (ctx.role not in READERS and not person & set(record.entry.patients)):
        raise not_found(f"AuditEvent/{res_id} is not known")
    return FhirResponse(200, _for(ctx, record, engine.base_url, person))


def alerts(gate: AccessGate, ctx: AccessContext, params: dict[str, str]) -> FhirResponse:
    if ctx.role not in READERS:
        raise forbidden(f"role {ctx.role} may not read alerts")
    try:
        count = min(int(params.get("_count", "100")), 1000)
    except ValueError:
        raise bad_request("_count must be an integer") from None
    found, total = gate.alerts.list_alerts(
        since=params.get("since"), rule=params.get("rule"), user=params.get("user"), count=count
    )
    return FhirResponse(200, {"total": total, "alerts": [a.to_json() for a in found]})
