"""Lawful access over HTTP: who may read and write what, and what leaks nothing.

A small world on each store: two organisations, patients with and without a
treatment relationship or consent, users of every role with real tokens from
the embedded issuer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from lienthong.access.audit import AuditLog
from lienthong.access.auth import TokenIssuer, UserDirectory
from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from tests.factories import observation, patient

FHIR = {"Content-Type": "application/fhir+json"}


def day(offset: int) -> str:
    return (datetime.now(UTC) + timedelta(days=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def encounter(pid: str, org: str, start: int, end: int | None) -> dict[str, Any]:
    period = {"start": day(start)}
    if end is not None:
        period["end"] = day(end)
    return {
        "resourceType": "Encounter",
        "status": "finished" if end is not None else "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "serviceProvider": {"reference": f"Organization/{org}"},
        "period": period,
    }


def consent(pid: str, actor: str, status: str = "active", purpose: str = "TREAT") -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "provision": {
            "type": "permit",
            "actor": [{"role": {"coding": [{"code": "PRCP"}]}, "reference": {"reference": actor}}],
            "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}
            ],
        },
    }


@dataclass
class World:
    client: TestClient
    issuer: TokenIssuer
    users: UserDirectory
    settings: Settings
    obs: dict[str, str] = field(default_factory=dict)  # patient id -> observation id

    def token(
        self, name: str, scopes: str | None = None, ttl: int = 600, now: float | None = None
    ) -> str:
        user = self.users.get(name)
        assert user is not None
        return self.issuer.issue(user, scopes, ttl, now=now)

    def as_(self, name: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}", **FHIR, **extra}

    def put(self, resource: dict[str, Any], rid: str) -> None:
        r = self.client.put(
            f"/fhir/{resource['resourceType']}/{rid}",
            json={**resource, "id": rid},
            headers=self.as_("adm"),
        )
        assert r.status_code in (200, 201), r.text

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.as_(who))


@pytest.fixture
def world(store: ResourceStore, store_url: str) -> Iterator[World]:
    settings = Settings.from_env({}).model_copy(
        update={"database_url": store_url, "base_url": "http://testserver/fhir", "auth": "on"}
    )
    users = UserDirectory(store_url)
    issuer = TokenIssuer(store_url, settings.token_issuer, settings.token_audience)
    users.add("adm", "data_admin")
    users.add("doc-a", "clinician", organization="org-a", practitioner="pr-a")
    users.add("doc-b", "clinician", organization="org-b")
    users.add("cit-1", "citizen", patient="p1")
    users.add("cit-3", "citizen", patient="p3")
    users.add("ana", "analyst")
    users.add("aud", "auditor")
    with TestClient(create_app(settings, store=store)) as client:
        w = World(client, issuer, users, settings)
        w.put({"resourceType": "Organization", "name": "Bệnh viện A"}, "org-a")
        w.put({"resourceType": "Organization", "name": "Trạm y tế B"}, "org-b")
        for i in range(1, 6):
            # different given names: five persons to the person index, not one
            given = ["Văn", ("Bình", "Cường", "Dũng", "Hải", "Khoa")[i - 1]]
            w.put(patient(family=f"Nguyễn{i}", given=given, cccd=f"00109001234{i}"), f"p{i}")
            r = client.post(
                "/fhir/Observation", json=observation(f"Patient/p{i}"), headers=w.as_("adm")
            )
            w.obs[f"p{i}"] = r.json()["id"]
        w.put(encounter("p1", "org-a", -10, -5), "e1")  # ended 5 days ago: in the window
        w.put(encounter("p2", "org-a", -70, -60), "e2")  # ended 60 days ago: outside
        w.put(consent("p3", "Organization/org-a"), "c3")  # consent instead of a visit
        w.put(consent("p4", "Organization/org-a", status="inactive"), "c4")  # revoked
        w.put(encounter("p5", "org-b", -1, None), "e5")  # in progress elsewhere
        yield w
    users.close()
    issuer.close()


def visible_obs(w: World, who: str, **headers: str) -> set[str]:
    r = w.client.get("/fhir/Observation", headers=w.as_(who, **headers))
    assert r.status_code == 200, r.text
    body = r.json()
    got = {e["resource"]["subject"]["reference"].split("/")[1] for e in body.get("entry", [])}
    assert body["total"] == len(body.get("entry", []))  # totals count what is visible only
    return got


def test_missing_bad_expired_and_foreign_tokens_are_401(world: World) -> None:
    c = world.client
    r = c.get("/fhir/Patient")
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["www-authenticate"].startswith("Bearer")
    expired = world.token("doc-a", ttl=60, now=time.time() - 3600)
    r = c.get("/fhir/Patient", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["issue"][0]["diagnostics"]
    good = world.token("doc-a")
    head, payload, sig = good.split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}AAAA"
    r = c.get("/fhir/Patient", headers={"Authorization": f"Bearer {tampered}"})
    assert r.status_code == 401
    other = Settings.from_env({}).model_copy(update={"token_audience": "someone-else"})
    foreign = TokenIssuer(world.settings.database_url, other.token_issuer, "someone-else")
    user = world.users.get("doc-a")
    assert user is not None
    r = c.get(
        "/fhir/Patient", headers={"Authorization": f"Bearer {foreign.issue(user, None, 600)}"}
    )
    foreign.close()
    assert r.status_code == 401 and "audience" in r.json()["issue"][0]["diagnostics"]


def test_clinician_sees_treated_and_consenting_patients_only(world: World) -> None:
    assert visible_obs(world, "doc-a") == {"p1", "p3"}
    assert visible_obs(world, "doc-b") == {"p5"}
    for pid, status in (("p1", 200), ("p2", 404), ("p3", 200), ("p4", 404), ("p5", 404)):
        assert world.get("doc-a", f"/fhir/Patient/{pid}").status_code == status, pid
        r = world.get("doc-a", f"/fhir/Observation/{world.obs[pid]}")
        assert r.status_code == status, pid
        if status == 404:
            assert "etag" not in r.headers
    # organisations are not patient data
    assert world.get("doc-a", "/fhir/Organization/org-b").status_code == 200


def test_no_side_channels(world: World) -> None:
    hidden_obs = world.obs["p5"]
    # totals, _include and _revinclude
    r = world.get("doc-a", "/fhir/Patient", _revinclude="Observation:subject").json()
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r["entry"]}
    assert r["total"] == 2 and ("Observation", hidden_obs) not in ids
    r = world.get("doc-a", "/fhir/Encounter", _include="Encounter:subject").json()
    assert {e["resource"]["id"] for e in r.get("entry", [])} <= {"e1", "p1"}
    # chained and _has criteria look only at visible resources
    assert (
        world.get("doc-a", "/fhir/Observation", **{"subject.family": "nguyen5"}).json()["total"]
        == 0
    )
    assert (
        world.get("doc-a", "/fhir/Observation", **{"subject:Patient.family": "nguyen1"}).json()[
            "total"
        ]
        == 1
    )
    assert (
        world.get(
            "doc-a", "/fhir/Organization", **{"_has:Encounter:service-provider:patient": "p5"}
        ).json()["total"]
        == 0
    )
    # history, vread, $everything, deleted resources and errors
    assert world.get("doc-a", f"/fhir/Observation/{hidden_obs}/_history").status_code == 404
    assert world.get("doc-a", f"/fhir/Observation/{hidden_obs}/_history/1").status_code == 404
    assert world.get("doc-a", "/fhir/Patient/p5/$everything").status_code == 404
    assert world.get("doc-a", "/fhir/Observation/_history").status_code == 403
    world.client.delete(f"/fhir/Observation/{hidden_obs}", headers=world.as_("adm"))
    gone = world.get("doc-a", f"/fhir/Observation/{hidden_obs}")
    assert gone.status_code == 404 and "etag" not in gone.headers
    assert world.get("doc-b", f"/fhir/Observation/{hidden_obs}").status_code == 410
    everything = world.get("doc-a", "/fhir/Patient/p1/$everything").json()
    patients = {
        e["resource"]["id"]
        for e in everything["entry"]
        if e["resource"]["resourceType"] == "Patient"
    }
    assert patients == {"p1"}


def test_break_the_glass_reads_with_reason_and_alert(world: World) -> None:
    reason = "bệnh nhân cấp cứu, bất tỉnh"
    headers = {"X-Break-Glass": quote(reason)}  # percent-encoded UTF-8: headers are ASCII
    r = world.client.get(
        f"/fhir/Observation/{world.obs['p5']}", headers=world.as_("doc-a", **headers)
    )
    assert r.status_code == 200
    assert visible_obs(world, "doc-a", **headers) == {"p1", "p2", "p3", "p4", "p5"}
    # break-the-glass opens reads, not writes
    r = world.client.post(
        "/fhir/Observation", json=observation("Patient/p5"), headers=world.as_("doc-a", **headers)
    )
    assert r.status_code == 403
    log = AuditLog(world.settings.database_url)
    try:
        records, _ = log.search(user="doc-a", count=50)
        glass = [rec for rec in records if rec.entry.break_glass]
        assert glass and glass[-1].entry.break_glass == reason
        assert glass[-1].entry.purpose == "ETREAT" and "p5" in glass[-1].entry.patients
    finally:
        log.close()
    alerts = world.get("adm", "/api/alerts", rule="break_glass").json()
    assert alerts["total"] >= 1 and alerts["alerts"][0]["user"] == "doc-a"
    assert world.get("doc-a", "/api/alerts").status_code == 403


def test_citizen_reads_own_record_and_manages_own_consents(world: World) -> None:
    assert visible_obs(world, "cit-1") == {"p1"}
    assert world.get("cit-1", "/fhir/Patient/p1").status_code == 200
    assert world.get("cit-1", "/fhir/Patient/p2").status_code == 404
    r = world.client.post(
        "/fhir/Consent", json=consent("p1", "Organization/org-b"), headers=world.as_("cit-1")
    )
    assert r.status_code == 201, r.text
    assert "p1" in visible_obs(world, "doc-b")  # enforced at once
    r = world.client.post(
        "/fhir/Consent", json=consent("p2", "Organization/org-b"), headers=world.as_("cit-1")
    )
    assert r.status_code == 403
    r = world.client.post(
        "/fhir/Observation", json=observation("Patient/p1"), headers=world.as_("cit-1")
    )
    assert r.status_code == 403


def test_revoking_consent_takes_effect_at_once(world: World) -> None:
    assert "p3" in visible_obs(world, "doc-a")
    revoked = {**consent("p3", "Organization/org-a", status="inactive"), "id": "c3"}
    r = world.client.put("/fhir/Consent/c3", json=revoked, headers=world.as_("cit-3"))
    assert r.status_code == 200, r.text
    assert "p3" not in visible_obs(world, "doc-a")
    assert world.get("doc-a", "/fhir/Patient/p3").status_code == 404


def test_clinician_writes_need_a_relationship(world: World) -> None:
    c = world.client
    assert (
        c.post(
            "/fhir/Observation", json=observation("Patient/p1"), headers=world.as_("doc-a")
        ).status_code
        == 201
    )
    assert (
        c.post(
            "/fhir/Observation", json=observation("Patient/p5"), headers=world.as_("doc-a")
        ).status_code
        == 403
    )
    # a new visit at the clinician's own organisation starts a relationship
    assert (
        c.post(
            "/fhir/Encounter", json=encounter("p2", "org-a", 0, None), headers=world.as_("doc-a")
        ).status_code
        == 201
    )
    assert "p2" in visible_obs(world, "doc-a")
    assert (
        c.post(
            "/fhir/Encounter", json=encounter("p5", "org-b", 0, None), headers=world.as_("doc-a")
        ).status_code
        == 403
    )
    assert (
        c.delete(f"/fhir/Observation/{world.obs['p1']}", headers=world.as_("doc-a")).status_code
        == 403
    )


def test_writing_an_unseen_resource_is_refused_not_created(world: World) -> None:
    body = {**patient(family="Giả"), "id": "p5"}
    r = world.client.put("/fhir/Patient/p5", json=body, headers=world.as_("doc-a"))
    assert r.status_code == 403
    assert world.get("adm", "/fhir/Patient/p5").json()["name"][0]["family"] == "Nguyễn5"


def test_nobody_writes_audit_events_through_the_api(world: World) -> None:
    forged = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "someone"}}],
        "source": {"observer": {"display": "forger"}},
    }
    r = world.client.post("/fhir/AuditEvent", json=forged, headers=world.as_("adm"))
    assert r.status_code == 403


def test_scopes_narrow_the_role(world: World) -> None:
    token = world.token("doc-a", scopes="user/Observation.rs")
    h = {"Authorization": f"Bearer {token}"}
    assert world.client.get(f"/fhir/Observation/{world.obs['p1']}", headers=h).status_code == 200
    r = world.client.get("/fhir/Patient/p1", headers=h)
    assert r.status_code == 403 and "scope" in r.json()["issue"][0]["diagnostics"]


def test_analyst_gets_de_identified_results_only(world: World) -> None:
    r = world.get("ana", "/fhir/Patient")
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 5
    for e in body["entry"]:
        res = e["resource"]
        assert "name" not in res and "identifier" not in res
        assert len(res["birthDate"]) == 4
        assert any(t["code"] == "REDACTED" for t in res["meta"]["security"])
    assert world.get("ana", "/fhir/Patient/p1").status_code == 403  # no record-level reads
    assert world.get("ana", "/fhir/Patient", _summary="count").json()["total"] == 5


def test_audit_trail_for_citizen_and_auditor(world: World) -> None:
    world.get("doc-a", "/fhir/Patient/p1")
    world.get("doc-b", "/fhir/Patient/p1")  # denied (404): recorded too
    r = world.get("cit-1", "/fhir/AuditEvent", patient="Patient/p1")
    assert r.status_code == 200
    events = r.json()["entry"]
    who = {e["resource"]["agent"][0]["who"]["display"] for e in events}
    assert "doc-a" in who
    assert world.get("cit-1", "/fhir/AuditEvent", patient="Patient/p2").status_code == 403
    everything = world.get("aud", "/fhir/AuditEvent", _count=500).json()
    assert everything["total"] > len(events)
    assert world.get("aud", "/fhir/Patient/p1").status_code == 403
    assert world.get("doc-a", "/fhir/AuditEvent").status_code == 403
    log = AuditLog(world.settings.database_url)
    try:
        assert log.verify().ok
    finally:
        log.close()


def test_consent_with_a_reference_the_index_reads_differently_grants_nothing(world: World) -> None:
    sly = consent("p5", "Organization/org-a")
    sly["patient"]["reference"] = "Patient/p5/"
    r = world.client.post("/fhir/Consent", json=sly, headers=world.as_("doc-a"))
    assert r.status_code == 403
    sly_citizen = consent("p2", "Organization/org-b")
    sly_citizen["performer"] = [{"reference": "Patient/p1"}]
    r = world.client.post("/fhir/Consent", json=sly_citizen, headers=world.as_("cit-1"))
    assert r.status_code == 403
    assert "p2" not in visible_obs(world, "doc-b")


def test_patient_data_without_a_visible_patient_link_is_not_public(world: World) -> None:
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {**patient(family="Ẩn"), "id": "x"}}],
    }
    world.put(doc, "bundle-1")
    by_identifier = observation("Patient/p5")
    by_identifier["subject"] = {"identifier": {"system": "urn:x", "value": "048085000333"}}
    world.put(by_identifier, "obs-ident")
    for who in ("doc-a", "cit-1"):
        assert world.get(who, "/fhir/Bundle/bundle-1").status_code == 404
        assert world.get(who, "/fhir/Bundle").json()["total"] == 0
        assert world.get(who, "/fhir/Observation/obs-ident").status_code == 404
    assert world.get("adm", "/fhir/Bundle/bundle-1").status_code == 200


def test_analysts_cannot_single_out_a_person(world: World) -> None:
    for params in (
        {"identifier": "001090012341"},
        {"birthdate": "1990-05-17"},
        {"family": "nguyen1"},
    ):
        assert world.get("ana", "/fhir/Patient", **params).status_code == 403, params
    assert (
        world.get("ana", "/fhir/Observation", **{"subject:Patient.family": "nguyen5"}).status_code
        == 403
    )
    r = world.get("ana", "/fhir/Observation", **{"code": "8867-4"}).json()
    assert r["total"] == 5
    for e in r["entry"]:
        assert "display" not in e["resource"]["subject"]


def test_chained_and_has_types_need_their_own_scope(world: World) -> None:
    token = world.token("doc-a", scopes="user/Observation.rs")
    h = {"Authorization": f"Bearer {token}"}
    r = world.client.get(
        "/fhir/Observation", params={"subject:Patient.family": "nguyen1"}, headers=h
    )
    assert r.status_code == 403
    token = world.token("doc-a", scopes="user/Patient.rs")
    r = world.client.get(
        "/fhir/Patient",
        params={"_has:Observation:subject:code": "8867-4"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403


def test_citizen_audit_view_names_only_the_citizen(world: World) -> None:
    world.get("doc-a", "/fhir/Patient", family="nguyen")  # touches p1 and p3
    events = world.get("cit-1", "/fhir/AuditEvent", patient="Patient/p1").json()["entry"]
    text = str(events)
    assert "p3" not in text and "family" not in text
    assert "Patient/p1" in text


def test_history_across_resources_records_whose_data_it_showed(world: World) -> None:
    world.get("adm", "/fhir/Observation/_history")
    log = AuditLog(world.settings.database_url)
    try:
        records, _ = log.search(user="adm", count=1)
        assert set(records[0].entry.patients) == {"p1", "p2", "p3", "p4", "p5"}
    finally:
        log.close()


def test_only_care_given_starts_a_relationship(world: World) -> None:
    wrong = encounter("p5", "org-a", -3, None)
    wrong["status"] = "entered-in-error"
    world.put(wrong, "e-err")
    assert "p5" not in visible_obs(world, "doc-a")


def test_consent_must_be_privacy_scoped_and_nested_denials_win(world: World) -> None:
    research = consent("p2", "Organization/org-b")
    research["scope"]["coding"][0]["code"] = "research"
    world.put(research, "c-research")
    assert "p2" not in visible_obs(world, "doc-b")
    denied = consent("p4", "Organization/org-b")
    denied["provision"]["provision"] = [{"type": "deny", "actor": denied["provision"]["actor"]}]
    world.put(denied, "c-deny")
    assert "p4" not in visible_obs(world, "doc-b")


def test_has_through_a_hidden_patient_reveals_nothing(world: World) -> None:
    linked = {
        **patient(family="Nguyễn5", cccd="001090012345"),
        "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}],
    }
    world.put(linked, "p5")
    r = world.get(
        "doc-a", "/fhir/Patient", **{"_has:Patient:link:identifier": "001090012345"}
    ).json()
    assert r["total"] == 0
