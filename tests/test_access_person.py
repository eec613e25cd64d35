"""A citizen sees their whole person: the master and every source record the person
index links to it at request time, over HTTP with real tokens.

One person arrives from three sources (a hospital, the vaccination registry, a
commune station); a twin brother shares the family name, birth date, phone and
commune but not the given name, so the index keeps him apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lienthong.access.auth import TokenIssuer, UserDirectory
from lienthong.identity.scoring import patient_from_record
from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from tests.factories import observation
from tests.test_access import consent, encounter

FHIR = {"Content-Type": "application/fhir+json"}
MASTER = "http://fhir.lienthong.vn/mpi|master"
HCM, TAN_AN_HOI = "79", "27496"
SOURCES = ("hosp-1", "vacc-1", "stat-1")


def rec(name: str, birth: str, sex: str, **kw: str) -> dict[str, Any]:
    row = {"full_name": name, "birth_date": birth, "sex": sex, "province_code": HCM}
    row["commune_code"] = TAN_AN_HOI
    row.update(kw)
    return patient_from_record(row)


def immunization(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "08"}]},
        "patient": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": "2019-05-12",
    }


@dataclass
class World:
    client: TestClient
    issuer: TokenIssuer
    users: UserDirectory
    obs: dict[str, str] = field(default_factory=dict)  # patient id -> observation id

    def headers(self, name: str) -> dict[str, str]:
        user = self.users.get(name)
        assert user is not None
        return {"Authorization": f"Bearer {self.issuer.issue(user, None, 600)}", **FHIR}

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=self.headers(who))

    def post(self, who: str, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body, headers=self.headers(who))

    def put(self, resource: dict[str, Any], rid: str) -> None:
        r = self.client.put(
            f"/fhir/{resource['resourceType']}/{rid}",
            json={**resource, "id": rid},
            headers=self.headers("adm"),
        )
        assert r.status_code in (200, 201), r.text

    def master_of(self, pid: str) -> str:
        r = self.get("adm", "/fhir/Patient", _tag=MASTER, link=f"Patient/{pid}")
        assert r.status_code == 200, r.text
        found = [e["resource"]["id"] for e in r.json().get("entry", [])]
        assert len(found) == 1, r.text
        return str(found[0])

    def subjects(self, who: str, res_type: str) -> set[str]:
        r = self.get(who, f"/fhir/{res_type}", _count="100")
        assert r.status_code == 200, r.text
        key = "patient" if res_type == "Immunization" else "subject"
        return {
            e["resource"][key]["reference"].removeprefix("Patient/")
            for e in r.json().get("entry", [])
        }

    def sees(self, who: str, pid: str) -> bool:
        r = self.get(who, f"/fhir/Patient/{pid}")
        assert r.status_code in (200, 404), r.text
        return bool(r.status_code == 200)


def build(store: ResourceStore, store_url: str, mpi: bool) -> Iterator[World]:
    settings = Settings.from_env({}).model_copy(
        update={
            "database_url": store_url,
            "base_url": "http://testserver/fhir",
            "auth": "on",
            "mpi": mpi,
        }
    )
    users = UserDirectory(store_url)
    issuer = TokenIssuer(store_url, settings.token_issuer, settings.token_audience)
    users.add("adm", "data_admin")
    users.add("cit-hosp", "citizen", patient="hosp-1")
    users.add("cit-twin", "citizen", patient="twin-1")
    with TestClient(create_app(settings, store=store)) as client:
        w = World(client, issuer, users)
        w.put({"resourceType": "Organization", "name": "Bệnh viện A"}, "org-a")
        cccd = "079090001234"
        w.put(rec("Trần Văn Minh", "1990-03-15", "M", cccd=cccd, phone="0912345678"), "hosp-1")
        w.put(rec("TRAN VAN MINH", "15/03/1990", "Nam", phone="+84 912 345 678"), "vacc-1")
        w.put(rec("Tran Van Minh", "1990-03-15", "1", cccd=cccd), "stat-1")
        w.put(rec("Trần Văn Phúc", "1990-03-15", "M", phone="0912345678"), "twin-1")
        for pid in (*SOURCES, "twin-1"):
            r = w.post("adm", "/fhir/Observation", observation(f"Patient/{pid}"))
            assert r.status_code == 201, r.text
            w.obs[pid] = r.json()["id"]
            r = w.post("adm", "/fhir/Immunization", immunization(pid))
            assert r.status_code == 201, r.text
        w.put(encounter("hosp-1", "org-a", -3, -1), "enc-hosp")
        w.put(encounter("twin-1", "org-a", -3, -1), "enc-twin")
        if mpi:
            users.add("cit-master", "citizen", patient=w.master_of("hosp-1"))
        yield w
    users.close()
    issuer.close()


@pytest.fixture
def world(store: ResourceStore, store_url: str) -> Iterator[World]:
    yield from build(store, store_url, mpi=True)


@pytest.fixture
def world_without_index(store: ResourceStore, store_url: str) -> Iterator[World]:
    yield from build(store, store_url, mpi=False)


@pytest.mark.parametrize("who", ["cit-master", "cit-hosp"])
def test_citizen_sees_every_source_of_their_person_and_nothing_of_the_twin(
    world: World, who: str
) -> None:
    master = world.master_of("hosp-1")
    assert world.master_of("vacc-1") == master == world.master_of("stat-1")
    assert world.master_of("twin-1") != master  # the index keeps the twin apart
    assert world.sees(who, master)
    assert all(world.sees(who, pid) for pid in SOURCES)
    assert not world.sees(who, "twin-1")
    assert not world.sees(who, world.master_of("twin-1"))
    assert world.subjects(who, "Observation") == set(SOURCES)
    assert world.subjects(who, "Immunization") == set(SOURCES)
    assert world.subjects(who, "Encounter") == {"hosp-1"}
    assert world.get(who, f"/fhir/Observation/{world.obs['vacc-1']}").status_code == 200
    assert world.get(who, f"/fhir/Observation/{world.obs['twin-1']}").status_code == 404
    # the twin, in turn, sees his own person only
    assert world.subjects("cit-twin", "Observation") == {"twin-1"}
    assert not world.sees("cit-twin", "hosp-1") and not world.sees("cit-twin", master)


@pytest.mark.parametrize("who", ["cit-master", "cit-hosp"])
def test_everything_on_the_master_spans_the_sources(world: World, who: str) -> None:
    master = world.master_of("hosp-1")
    r = world.get(who, f"/fhir/Patient/{master}/$everything")
    assert r.status_code == 200, r.text
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json()["entry"]}
    assert {("Patient", master)} | {("Patient", p) for p in SOURCES} <= found
    assert {("Observation", world.obs[p]) for p in SOURCES} <= found
    assert ("Patient", "twin-1") not in found
    assert ("Observation", world.obs["twin-1"]) not in found
    assert ("Encounter", "enc-twin") not in found
    r = world.get(who, f"/fhir/Patient/{world.master_of('twin-1')}/$everything")
    assert r.status_code == 404


def test_split_record_leaves_the_view_and_merged_records_join_it(world: World) -> None:
    master = world.master_of("hosp-1")
    twin_master = world.master_of("twin-1")
    users = world.users
    users.add("cit-stat", "citizen", patient="stat-1")
    users.add("cit-twin-master", "citizen", patient=twin_master)
    assert world.subjects("cit-master", "Observation") == set(SOURCES)  # cached now
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/stat-1"}}],
    }
    r = world.post("adm", "/fhir/Patient/$unmerge", body)
    assert r.status_code == 200, r.text
    for who in ("cit-master", "cit-hosp"):
        assert world.subjects(who, "Observation") == {"hosp-1", "vacc-1"}
        assert not world.sees(who, "stat-1")
        assert world.sees(who, master)
    assert world.subjects("cit-stat", "Observation") == {"stat-1"}
    assert not world.sees("cit-stat", "hosp-1") and not world.sees("cit-stat", master)

    # a merge brings the twin's record into the person, and the citizen linked to the
    # twin's retired master follows it to the person it went into
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "source-patient", "valueReference": {"reference": "Patient/twin-1"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{master}"}},
        ],
    }
    r = world.post("adm", "/fhir/Patient/$merge", body)
    assert r.status_code == 200, r.text
    assert world.subjects("cit-hosp", "Observation") == {"hosp-1", "vacc-1", "twin-1"}
    assert world.sees("cit-hosp", "twin-1")
    assert world.subjects("cit-twin-master", "Observation") == {"hosp-1", "vacc-1", "twin-1"}
    assert world.sees("cit-twin-master", master)
    assert not world.sees("cit-hosp", "stat-1")


def test_citizen_manages_consents_for_their_person_only(world: World) -> None:
    for pid in ("hosp-1", "vacc-1"):
        r = world.post("cit-master", "/fhir/Consent", consent(pid, "Organization/org-a"))
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        assert world.get("cit-hosp", f"/fhir/Consent/{cid}").status_code == 200
        assert world.get("cit-twin", f"/fhir/Consent/{cid}").status_code == 404
    r = world.post("cit-master", "/fhir/Consent", consent("twin-1", "Organization/org-a"))
    assert r.status_code == 403, r.text
    r = world.post("cit-hosp", "/fhir/Observation", observation("Patient/hosp-1"))
    assert r.status_code == 403, r.text


def test_citizen_audit_view_covers_the_person_and_names_no_one_else(world: World) -> None:
    assert world.get("adm", "/fhir/Patient/vacc-1").status_code == 200
    assert world.get("adm", "/fhir/Observation", subject="Patient/twin-1").status_code == 200
    r = world.get("cit-hosp", "/fhir/AuditEvent", _count="200")
    assert r.status_code == 200, r.text
    text = str(r.json())
    assert "Patient/vacc-1" in text and "Patient/hosp-1" in text
    assert "twin-1" not in text
    r = world.get("cit-hosp", "/fhir/AuditEvent", patient="Patient/vacc-1")
    assert r.status_code == 200 and r.json()["total"] >= 1
    seq = r.json()["entry"][0]["resource"]["id"]
    assert world.get("cit-master", f"/fhir/AuditEvent/{seq}").status_code == 200
    assert world.get("cit-twin", f"/fhir/AuditEvent/{seq}").status_code == 404
    r = world.get("cit-hosp", "/fhir/AuditEvent", patient="Patient/twin-1")
    assert r.status_code == 403, r.text


def test_without_the_index_a_citizen_sees_their_one_record(world_without_index: World) -> None:
    w = world_without_index
    r = w.get("adm", "/fhir/Patient", _tag=MASTER)
    assert r.status_code == 200 and r.json().get("total", 0) == 0
    assert w.subjects("cit-hosp", "Observation") == {"hosp-1"}
    assert w.sees("cit-hosp", "hosp-1")
    assert not w.sees("cit-hosp", "vacc-1")
    r = w.post("cit-hosp", "/fhir/Consent", consent("vacc-1", "Organization/org-a"))
    assert r.status_code == 403, r.text
