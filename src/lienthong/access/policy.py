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
- ``citizen``: their person — with the master person index on, the master
  and every source record the index links to it now (whether the user is
  linked by the master's id or by one record's id), else the one Patient —
  and those records' compartments; they manage their own Consents;
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
from lienthong.fhir.search_index import date_range
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
# Reference data: visible to everyone who may read the type. Every other type is
# patient data and is visible to a restricted user only when it names at least one
# patient and every patient it names is visible to them (a Bundle, a Binary or an
# Observation whose subject is given only by identifier is therefore not visible).
PUBLIC_TYPES = frozenset(
    {
        "Organization",
        "OrganizationAffiliation",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "HealthcareService",
        "Endpoint",
        "Medication",
        "MedicationKnowledge",
        "Substance",
        "Device",
        "DeviceDefinition",
        "CodeSystem",
        "ValueSet",
        "ConceptMap",
        "NamingSystem",
        "StructureDefinition",
        "StructureMap",
        "SearchParameter",
        "OperationDefinition",
        "CapabilityStatement",
        "CompartmentDefinition",
        "ImplementationGuide",
        "Questionnaire",
        "PlanDefinition",
        "ActivityDefinition",
        "Library",
        "Measure",
        "InsurancePlan",
        "TerminologyCapabilities",
        "GraphDefinition",
        "MessageDefinition",
        "EventDefinition",
        "ObservationDefinition",
        "SpecimenDefinition",
        "ChargeItemDefinition",
    }
)
# Encounter statuses that stand for care actually given (not planned, cancelled or
# entered in error): only these start a treatment relationship
CARE_STATUSES = "arrived,triaged,in-progress,onleave,finished"
# search parameters that single out a person, refused to analysts (who see
# de-identified data only); chains and _has are refused to them as well
IDENTIFYING_PARAMS = frozenset(
    {
        "name",
        "family",
        "given",
        "phonetic",
        "identifier",
        "telecom",
        "phone",
        "email",
        "address",
        "address-city",
        "address-district",
        "address-state",
        "address-postalcode",
        "address-country",
        "address-use",
        "birthdate",
        "death-date",
        "link",
    }
)
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
    note: str | None = None  # what the audit entry should say beyond the outcome

    @property
    def role(self) -> str:
        return self.principal.role


@dataclass(frozen=True)
class Visibility:
    """Which patients' data a request may see: None is every patient."""

    patients: frozenset[str] | None
    deidentify: bool = False

    def sees(self, compartment: frozenset[str], res_type: str) -> bool:
        if self.patients is None:
            return True
        if not compartment:
            return res_type in PUBLIC_TYPES
        return compartment <= self.patients


class Policy:
    def __init__(self, settings: Settings, parser: SearchParser) -> None:
        self.settings = settings
        self.parser = parser
        self._generation = 0  # bumped by writes that change relationships or consents
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str | None, str | None, int], frozenset[str]] = {}
        self._person_generation = 0  # bumped by writes that may change the person index
        self._person_cache: dict[tuple[str, str, int], frozenset[str]] = {}

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
            return Visibility(self.person_patients(ctx.principal, session))
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

    def person_patients(self, principal: Principal, session: Session) -> frozenset[str]:
        """The Patient ids a citizen's data spans: their person's master and source
        records as the index links them (:func:`lienthong.identity.mpi.person_patients`),
        or their one Patient when the index is off.

        Cached like a clinician's set, within the same bounds: writes through this
        process that may move a record between persons refresh it at once, writes by
        other processes (``lienthong mpi``, imports) within CACHE_SECONDS; so a split
        record leaves its former person's view by then, and a merged one joins it.
        """
        own = principal.patient
        if not own:
            return frozenset()
        if not self.settings.mpi:
            return frozenset([own])
        epoch = int(time.monotonic() // CACHE_SECONDS)
        key = (principal.name, own, self._person_generation * 1_000_000_007 + epoch)
        cached = self._person_cache.get(key)
        if cached is not None:
            return cached
        from lienthong.identity.mpi import person_patients

        patients = person_patients(session, own)
        with self._lock:
            if len(self._person_cache) > 10_000:
                self._person_cache.clear()
            self._person_cache[key] = patients
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
                ("status", CARE_STATUSES),
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
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        out: set[str] = set()
        for stored in session.search(query).matches:
            patient = _consent_permits(orjson.loads(stored.content or b"{}"), actors, now)
            # the patient must be the one the index filed the Consent under, so a
            # reference the index reads differently cannot grant anything
            if patient and patient in session.compartments([stored])[stored.pk]:
                out.add(patient)
        return frozenset(out)

    def relationship_changed(self) -> None:
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def persons_changed(self) -> None:
        with self._lock:
            self._person_generation += 1
            self._person_cache.clear()


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


_PATIENT_REF = re.compile(r"^Patient/([A-Za-z0-9\-.]{1,64})$")


def consent_patient(consent: dict[str, Any]) -> str | None:
    """The patient id of a Consent when its reference is exactly ``Patient/<id>``."""
    m = _PATIENT_REF.match(str((consent.get("patient") or {}).get("reference", "")))
    return m.group(1) if m else None


def _consent_permits(
    consent: dict[str, Any], actors: list[tuple[str, str | None]], now: str
) -> str | None:
    """The patient id when this Consent permits one of ``actors`` to treat now.

    https://hl7.org/fhir/R4/consent.html: scope patient-privacy, status active, the
    base provision a permit whose period covers now, naming the actor, for a
    treatment purpose (or no purpose); a nested deny provision naming the actor
    for treatment wins.
    """
    if consent.get("status") != "active":
        return None
    patient = consent_patient(consent)
    if patient is None:
        return None
    scope_codes = {c.get("code") for c in (consent.get("scope") or {}).get("coding", [])}
    if "patient-privacy" not in scope_codes:
        return None
    provision = consent.get("provision") or {}
    wanted = {f"{t}/{i}" for t, i in actors}
    if provision.get("type", "permit") != "permit" or not _applies(provision, wanted, now):
        return None
    for nested in provision.get("provision") or []:
        if nested.get("type") == "deny" and _applies(nested, wanted, now):
            return None
    return patient


def _applies(provision: dict[str, Any], wanted: set[str], now: str) -> bool:
    period = provision.get("period") or {}
    try:
        if period.get("start") and date_range(period["start"])[0] > now:
            return False
        if period.get("end") and date_range(period["end"])[1] < now:
            return False
    except ValueError:
        return False
    named = {(a.get("reference") or {}).get("reference") for a in provision.get("actor") or []}
    if named and not wanted & named:
        return False
    if not named and provision.get("type", "permit") == "permit":
        return False  # a permit must name who it permits
    purposes = {p.get("code") for p in provision.get("purpose") or []}
    return not purposes or bool(purposes & TREATMENT_PURPOSES)


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
    """Drop direct identifiers, everywhere in the resource: person names, identifiers,
    contacts and addresses; narrative, contained resources and extensions (free text
    and local data may identify); the display text and identifier of references.
    Birth dates keep the year only."""
    resource: dict[str, Any] = orjson.loads(content)
    rtype = resource.get("resourceType")
    drop = IDENTIFYING if rtype in PERSON_TYPES else {"identifier", "text"}
    out = {
        k: _scrub(v)
        for k, v in resource.items()
        if k.lstrip("_") not in drop and k not in ("contained", "extension", "modifierExtension")
    }
    if "birthDate" in out and isinstance(out["birthDate"], str):
        out["birthDate"] = out["birthDate"][:4]
    meta = dict(out.get("meta") or {})
    meta["security"] = [*meta.get("security", []), REDACTED]
    out["meta"] = meta
    return orjson.dumps(out)


def _scrub(node: Any) -> Any:
    if isinstance(node, list):
        return [_scrub(v) for v in node]
    if isinstance(node, dict):
        is_reference = "reference" in node
        return {
            k: _scrub(v)
            for k, v in node.items()
            if k not in ("extension", "modifierExtension", "text", "contained")
            and not (is_reference and k in ("display", "identifier"))
        }
    return node
