"""Property test: random worlds and requests against an independent oracle.

Hypothesis draws organisations, patients, their visits (at which organisation,
ended how many days ago or still in progress) and consents (to which
organisation, active or not, for which purpose), then users of every role and
requests of every kind. A few lines of plain Python — written from the rules,
not from the implementation — say what each request must return; the server
must agree every time. Some persons arrive from a second source too (the same
name, birth date and CCCD under another id, with no visits of its own): the
person index links the two, so the person's citizen sees both records, while a
clinician's relationship covers only the record the visits and consents name.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lienthong.access.auth import TokenIssuer, UserDirectory
from lienthong.server.app import create_app
from lienthong.settings import Settings
from tests.factories import observation, patient
from tests.test_access import FHIR, consent, encounter

ORGS = ("oa", "ob", "oc")
WINDOW = 30
TREATMENT = ("TREAT", "ETREAT")


@dataclass(frozen=True)
class Visit:
    org: str
    ended_days_ago: int | None  # None: in progress


@dataclass(frozen=True)
class Grant:
    org: str
    active: bool
    purpose: str


@dataclass(frozen=True)
class Person:
    visits: tuple[Visit, ...]
    grants: tuple[Grant, ...]
    second_source: bool = False  # a second record of the person, under id q<i>


# days away from the window edge, so the clock moving during a test cannot flip a case
visits = st.builds(
    Visit, st.sampled_from(ORGS), st.one_of(st.none(), st.sampled_from([0, 1, 5, 20, 45, 60, 90]))
)
grants = st.builds(
    Grant, st.sampled_from(ORGS), st.booleans(), st.sampled_from(["TREAT", "HRESCH", "ETREAT"])
)
people = st.lists(
    st.builds(
        Person,
        st.lists(visits, max_size=2).map(tuple),
        st.lists(grants, max_size=2).map(tuple),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
)
USERS = [("admin", "data_admin", None), ("audit", "auditor", None), ("stat", "analyst", None)]
USERS += [(f"doc-{o}", "clinician", o) for o in ORGS]
requests = st.lists(
    st.tuples(
        st.sampled_from(["read-patient", "read-obs", "search-obs", "everything", "history"]),
        st.integers(0, 3),
        st.integers(0, len(USERS) + 3),
    ),
    min_size=4,
    max_size=16,
)


def oracle_sees(role: str, org: str | None, own: str | None, pid: str, person: Person) -> bool:
    if role in ("data_admin", "analyst"):
        return True
    if role == "citizen":
        return pid == own
    if role == "clinician":
        for v in person.visits:
            if v.org == org and (v.ended_days_ago is None or v.ended_days_ago < WINDOW):
                return True
        return any(g.org == org and g.active and g.purpose in TREATMENT for g in person.grants)
    return False


def oracle_sees_record(
    role: str, org: str | None, own: str | None, rid: str, person: Person
) -> bool:
    """A record ``p<i>`` or ``q<i>`` of person ``i``: a citizen sees each record of their
    person; visits and consents name ``p<i>`` only."""
    if role == "citizen":
        return own is not None and rid[1:] == own[1:]
    if rid.startswith("q") and role == "clinician":
        return False
    return oracle_sees(role, org, own, f"p{rid[1:]}", person)


def expected_status(kind: str, role: str, sees: bool) -> int:
    if role == "auditor":
        return 403
    if kind == "search-obs":
        return 200  # a search shows what may be seen, possibly nothing
    if role == "analyst":
        return 200 if kind == "search-obs" else 403  # analysts' tokens may search only
    return 200 if sees else 404


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=people, asks=requests)
def test_server_agrees_with_oracle(world: list[Person], asks: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'oracle.db'}"
        cfg = Settings.from_env({}).model_copy(
            update={
                "database_url": url,
                "base_url": "http://testserver/fhir",
                "auth": "on",
                "treatment_window_days": WINDOW,
            }
        )
        directory = UserDirectory(url)
        issuer = TokenIssuer(url, cfg.token_issuer, cfg.token_audience)
        users = list(USERS) + [(f"cit-{i}", "citizen", None) for i in range(len(world))]
        for name, role, org in users:
            pid = f"p{name.split('-')[1]}" if role == "citizen" else None
            directory.add(name, role, organization=org, patient=pid)
        tokens = {n: issuer.issue(directory.get(n), None, 600) for n, _, _ in users}  # type: ignore[arg-type]
        try:
            with TestClient(create_app(cfg)) as client:
                admin = {"Authorization": f"Bearer {tokens['admin']}", **FHIR}

                def put(resource: dict[str, Any], rid: str) -> None:
                    r = client.put(
                        f"/fhir/{resource['resourceType']}/{rid}",
                        json={**resource, "id": rid},
                        headers=admin,
                    )
                    assert r.status_code in (200, 201), r.text

                obs: dict[str, str] = {}
                for o in ORGS:
                    put({"resourceType": "Organization", "name": o}, o)
                for i, person in enumerate(world):
                    pid = f"p{i}"
                    # different given names and birth dates: one person each to the
                    # person index, as the oracle counts them
                    given = ["Văn", ("Bình", "Cường", "Dũng", "Hải")[i]]
                    record = patient(
                        given=given, birth=f"1990-0{i + 1}-1{i}", cccd=f"00109000123{i}"
                    )
                    put(record, pid)
                    put(observation(f"Patient/{pid}"), f"obs-{i}")
                    obs[pid] = f"obs-{i}"
                    if person.second_source:
                        put(record, f"q{i}")
                        put(observation(f"Patient/q{i}"), f"obs-q{i}")
                    for j, v in enumerate(person.visits):
                        end = None if v.ended_days_ago is None else -v.ended_days_ago
                        start = -100 if end is not None else -1
                        put(encounter(pid, v.org, start, end), f"e-{i}-{j}")
                    for j, g in enumerate(person.grants):
                        status = "active" if g.active else "inactive"
                        put(consent(pid, f"Organization/{g.org}", status, g.purpose), f"c-{i}-{j}")

                for kind, pindex, uindex in asks:
                    name, role, org = users[uindex % len(users)]
                    own = f"p{name.split('-')[1]}" if role == "citizen" else None
                    pid = f"p{pindex % len(world)}"
                    h = {"Authorization": f"Bearer {tokens[name]}"}
                    sees = oracle_sees(role, org, own, pid, world[int(pid[1:])])
                    want = expected_status(kind, role, sees)
                    if kind == "search-obs":
                        r = client.get("/fhir/Observation", headers=h)
                        assert r.status_code == want, (name, kind, r.text)
                        if want == 200:
                            got = {
                                e["resource"]["subject"]["reference"][8:]
                                for e in r.json().get("entry", [])
                            }
                            records = [(f"p{k}", per) for k, per in enumerate(world)]
                            records += [
                                (f"q{k}", per) for k, per in enumerate(world) if per.second_source
                            ]
                            expect = {
                                rid
                                for rid, per in records
                                if oracle_sees_record(role, org, own, rid, per)
                            }
                            assert got == expect, (name, got, expect)
                        continue
                    path = {
                        "read-patient": f"/fhir/Patient/{pid}",
                        "read-obs": f"/fhir/Observation/{obs[pid]}",
                        "everything": f"/fhir/Patient/{pid}/$everything",
                        "history": f"/fhir/Observation/{obs[pid]}/_history",
                    }[kind]
                    r = client.get(path, headers=h)
                    assert r.status_code == want, (name, role, kind, pid, r.status_code, r.text)
        finally:
            directory.close()
            issuer.close()
