"""The access policy: one place that decides, deny by default.

The decision follows Vietnam's health-data rules (Decree 102/2025/NĐ-CP): a
person's health data is read with their consent or where the law allows; a
clinician sees a patient's record while treating that patient; other uses
need consent. In terms of this platform:

- ``data_admin`` and ``system`` clients: every record, within their scopes;
- ``clinician`` and ``commune_staff``: patients with a treatment relationship
  — an Encounter at the user's organisation in progress or ended within
  ``treatment_window_days`` — or an active Consent (scope patient-privacy,
  provision permit, purpose treatment or unspecified, period covering now)
  naming the user's organisation or practitioner; break-the-glass lifts the
  restriction for reads, with the reason recorded and an alert raised;
- ``citizen``: their own Patient and its compartment; they manage their own
  Consents;
- ``analyst``: searches and reads come back de-identified (no names,
  identifiers, contacts, addresses, narrative; birth dates cut to the year);
- ``auditor``: the audit trail, no clinical data.

SMART on FHIR v2 scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html)
narrow what a token may do; they never widen the role.

The engine does not call this module per route: :class:`GuardedStore` wraps
the store, so every interaction — reads, searches, history, includes,
``$everything``, bundles — passes through the same checks.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from lienthong.access.auth import Principal
from lienthong.fhir.errors import FhirError, Issue
from lienthong.fhir.search_parse import SearchParser
from lienthong.settings import Settings
from lienthong.storage.base import Session

UNRESTRICTED_ROLES = {"data_admin", "system"}
CARE_ROLES = {"clinician", "commune_staff"}
# What each role may do at most: on patient data, on other data (organisations, ...)
ROLE_PERMS: dict[str, tuple[str, str]] = {
    "data_admin": ("cruds", "cruds"),
    "system": ("cruds", "cruds"),
    "clinician": ("crus", "rs"),
    "commune_staff": ("crus", "rs"),
    "citizen": ("rs", "rs"),
    "analyst": ("rs", "rs"),
    "auditor": ("", ""),
}
TREATMENT_PURPOSES = {"TREAT", "ETREAT", "CAREMGT", "CLINTRCH", "POPHLTH"}
CACHE_SECONDS = 5
# written only by the platform itself: the audit trail is not a door for clients
SYSTEM_WRITTEN = {"AuditEvent"}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([cruds]+|read|write|\*)$")


def forbidden(message: str) -> FhirError:
    return FhirError(403, [Issue("forbidden", message)])


@dataclass(frozen=True)
class Scope:
    context: str
    resource_type: str
    perms: frozenset[str]


def parse_scopes(scopes: frozenset[str] | set[str]) -> list[Scope]:
    """SMART v2 scopes (``user/Observation.rs``) and their v1 forms (``.read``, ``.write``,
    ``.*``); other scopes (``openid``, ``launch``...) grant nothing here."""
    out = []
    for raw in scopes:
        m = _SCOPE.match(raw)
        if m is None:
            continue
        context, rtype, perms = m.groups()
        letters = {"read": "rs", "write": "cud", "*": "cruds"}.get(perms, perms)
        out.append(Scope(context, rtype, frozenset(letters)))
    return out


@dataclass
class AccessContext:
    """Who is asking, why, from where — and what the request touched, for the audit."""

    principal: Principal
    break_glass: str | None = None
    purpose: str | None = None
    source_ip: str | None = None
    touched: set[str] = field(default_factory=set)
    denied: str | None = None

    @property
    def role(self) -> str:
        return self.principal.role


@dataclass(frozen=True)
class Visibility:
    """Which patients' data a request may see: None is every patient."""

    patients: frozenset[str] | None
    deidentify: bool = False

    def sees(self, compartment: frozenset[str]) -> bool:
        return self.patients is None or compartment <= self.patients


class Policy:
    def __init__(self, settings: Settings, parser: SearchParser) -> None:
        self.settings = settings
        self.parser = parser
        self._generation = 0  # bumped by writes that change relationships or consents
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str | None, str | None, int], frozenset[str]] = {}

    # -- what a role and its scopes allow ------------------------------------

    def require(
        self, ctx: AccessContext, res_type: str | None, perm: str, patient_data: bool
    ) -> None:
        """Raise 403 unless the role and the token's scopes allow ``perm`` on the type."""
        role = ctx.role
        on_patient, on_other = ROLE_PERMS.get(role, ("", ""))
        allowed = on_patient if patient_data else on_other
        if role == "citizen" and res_type == "Consent":
            allowed = "cruds"
        if perm in "cud" and res_type in SYSTEM_WRITTEN:
            self._deny(ctx, f"{res_type} is written by the platform only")
        if perm not in allowed:
            self._deny(ctx, f"role {role} may not {_VERB[perm]} {res_type or 'resources'}")
        granted = any(
            perm in s.perms and s.resource_type in ("*", res_type)
            for s in parse_scopes(ctx.principal.scopes)
        )
        if not granted:
            self._deny(ctx, f"the token's scopes do not allow {_VERB[perm]} on {res_type}")

    def _deny(self, ctx: AccessContext, reason: str) -> None:
        ctx.denied = reason
        raise forbidden(reason)

    # -- whose data a request may see ----------------------------------------

    def visibility(self, ctx: AccessContext, session: Session) -> Visibility:
        role = ctx.role
        if role in UNRESTRICTED_ROLES:
            return Visibility(None)
        if role == "analyst":
            return Visibility(None, deidentify=True)
        if role == "citizen":
            own = ctx.principal.patient
            return Visibility(frozenset([own]) if own else frozenset())
        if role in CARE_ROLES:
            if ctx.break_glass:
                return Visibility(None)
            return Visibility(self.treated_patients(ctx.principal, session))
        return Visibility(frozenset())

    def treated_patients(self, principal: Principal, session: Session) -> frozenset[str]:
        """Patients with a treatment relationship or a treatment consent for this user.

        Cached per user until a write of an Encounter or a Consent, so a revoked
        consent takes effect with the next request.
        """
        # writes through this process bump the generation at once; writes by other
        # processes (another server, an import) are picked up within CACHE_SECONDS
        epoch = int(time.monotonic() // CACHE_SECONDS)
        key = (
            principal.name,
            principal.organization,
            principal.practitioner,
            self._generation * 1_000_000_007 + epoch,
        )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        patients = self._encounter_patients(principal, session) | self._consent_patients(
            principal, session
        )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = patients
        return patients

    def _encounter_patients(self, principal: Principal, session: Session) -> frozenset[str]:
        if not principal.organization:
            return frozenset()
        since = datetime.now(UTC) - timedelta(days=self.settings.treatment_window_days)
        query = self.parser.parse(
            "Encounter",
            [
                ("service-provider", f"Organization/{principal.organization}"),
                ("date", "ge" + since.strftime("%Y-%m-%dT%H:%M:%SZ")),
            ],
            strict=True,
        ).query
        return frozenset(session.references_from(query, "patient", "Patient"))

    def _consent_patients(self, principal: Principal, session: Session) -> frozenset[str]:
        actors = [
            ("Organization", principal.organization),
            ("Practitioner", principal.practitioner),
        ]
        actors = [(t, i) for t, i in actors if i]
        if not actors:
            return frozenset()
        query = self.parser.parse(
            "Consent",
            [("actor", ",".join(f"{t}/{i}" for t, i in actors)), ("status", "active")],
            strict=True,
            max_count=100_000,
            default_count=100_000,
        ).query
        query.with_total = False
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        out: set[str] = set()
        for stored in session.search(query).matches:
            patient = _consent_permits(orjson.loads(stored.content or b"{}"), actors, now)
            if patient:
                out.add(patient)
        return frozenset(out)

    def relationship_changed(self) -> None:
        with self._lock:
            self._generation += 1
            self._cache.clear()


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def _consent_permits(
    consent: dict[str, Any], actors: list[tuple[str, str | None]], now: str
) -> str | None:
    """The patient id when this Consent permits one of ``actors`` to treat now."""
    if consent.get("status") != "active":
        return None
    patient_ref = (consent.get("patient") or {}).get("reference", "")
    if not patient_ref.startswith("Patient/"):
        return None
    provision = consent.get("provision") or {}
    if provision.get("type", "permit") != "permit":
        return None
    period = provision.get("period") or {}
    if period.get("start") and period["start"][:19] > now:
        return None
    if period.get("end") and period["end"][:19] < now[: len(period["end"][:19])]:
        return None
    wanted = {f"{t}/{i}" for t, i in actors}
    named = {(a.get("reference") or {}).get("reference") for a in provision.get("actor") or []}
    if not wanted & named:
        return None
    purposes = {p.get("code") for p in provision.get("purpose") or []}
    if purposes and not purposes & TREATMENT_PURPOSES:
        return None
    return patient_ref.split("/", 1)[1].split("/")[0]


# -- de-identification for analysts ---------------------------------------------

IDENTIFYING = {
    "identifier",
    "name",
    "telecom",
    "address",
    "photo",
    "contact",
    "text",
    "communication",
    "link",
}
PERSON_TYPES = {"Patient", "Person", "RelatedPerson", "Practitioner"}
REDACTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}


def deidentify(content: bytes) -> bytes:
    """Drop direct identifiers; birth dates keep the year (a Safe-Harbor-like cut)."""
    resource: dict[str, Any] = orjson.loads(content)
    rtype = resource.get("resourceType")
    drop = IDENTIFYING if rtype in PERSON_TYPES else {"identifier", "text"}
    out = {k: v for k, v in resource.items() if k.lstrip("_") not in drop}
    if "birthDate" in out and isinstance(out["birthDate"], str):
        out["birthDate"] = out["birthDate"][:4]
    meta = dict(out.get("meta") or {})
    meta["security"] = [*meta.get("security", []), REDACTED]
    out["meta"] = meta
    return orjson.dumps(out)
