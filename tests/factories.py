"""Builders of test resources (Vietnamese people, their visits and results)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from lienthong.access.audit import AuditEntry

SYNTH_DAY = date(2026, 6, 15)
"""The day test populations are generated for (``today`` of `lienthong.synth`): synthetic
dates are reckoned back from the day they are made, and tests must not change with the
calendar."""

CCCD = "http://fhir.ehealth.gov.vn/core/sid/citizen_id"
LOINC = "http://loinc.org"


def patient(
    family: str = "Nguyễn",
    given: list[str] | None = None,
    cccd: str | None = "001090012345",
    birth: str = "1990-05-17",
    gender: str = "male",
    **extra: Any,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": given if given is not None else ["Văn", "An"]}],
        "gender": gender,
        "birthDate": birth,
    }
    if cccd:
        p["identifier"] = [{"system": CCCD, "value": cccd}]
    p.update(extra)
    return p


def observation(
    subject: str,
    code: str = "8867-4",
    value: float = 72,
    unit: str = "/min",
    when: str = "2025-03-01T08:30:00+07:00",
    **extra: Any,
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": "Heart rate"}],
            "text": "Nhịp tim",
        },
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }
    o.update(extra)
    # an extra given as None removes the element (R4 JSON has no null elements)
    return {k: v for k, v in o.items() if v is not None}


def organization(name: str = "Bệnh viện Bạch Mai", code: str = "01929") -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [
            {"system": "http://fhir.ehealth.gov.vn/core/sid/provider-code", "value": code}
        ],
        "name": name,
        "active": True,
    }


def audit_entry(
    user: str = "u1",
    patients: Sequence[str] = ("p1",),
    outcome: str = "success",
    action: str = "read",
    **kw: Any,
) -> AuditEntry:
    """One interaction as the gate records it; keyword arguments override any field."""
    values: dict[str, Any] = {
        "user": user,
        "role": "practitioner",
        "on_behalf_of": "Practitioner/pr1",
        "action": action,
        "resource_type": "Patient",
        "resource_id": patients[0] if patients else None,
        "query": None,
        "patients": tuple(patients),
        "outcome": outcome,
        "status": {"denied": 403, "error": 500}.get(outcome, 200),
        "purpose": "TREAT",
        "break_glass": None,
        "source_ip": "10.1.2.3",
    }
    values.update(kw)
    return AuditEntry(**values)
