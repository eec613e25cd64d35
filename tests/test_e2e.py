"""End to end: ``lienthong serve`` as a real process on a free port, driven by fhirpy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirpy import SyncFHIRClient

from tests.factories import CCCD, observation, patient
from tests.live_server import live_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    env = {"LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}", "LIENTHONG_AUTH": "off"}
    with live_server(env) as live:
        yield live.fhir
    assert live.fhir in live.output  # it said where it listens


def test_fhir_client_round_trip(server: str) -> None:
    client = SyncFHIRClient(server)
    p = client.resource(
        "Patient", **patient("Lê", ["Thị", "Hồng"], "079301000999", "2001-02-03", gender="female")
    )
    p.save()
    assert p.id and p["meta"]["versionId"] == "1"
    o = client.resource("Observation", **observation(f"Patient/{p.id}", value=88))
    o.save()

    found = client.resources("Patient").search(family="le", given="hong").fetch_all()
    assert [r.id for r in found] == [p.id]
    by_id = client.resources("Patient").search(identifier=f"{CCCD}|079301000999").first()
    assert by_id is not None and by_id.id == p.id

    p["name"][0]["family"] = "Lý"
    p.save()
    again = client.reference("Patient", p.id).to_resource()
    assert again["name"][0]["family"] == "Lý" and again["meta"]["versionId"] == "2"

    obs = client.resources("Observation").search(subject=f"Patient/{p.id}", code="8867-4").fetch()
    assert len(obs) == 1 and obs[0]["valueQuantity"]["value"] == 88
    chained = client.resources("Observation").search(**{"subject:Patient.family": "ly"}).fetch()
    assert [r.id for r in chained] == [o.id]
    assert client.resources("Observation").search(subject=f"Patient/{p.id}").count() == 1

    o.delete()
    assert client.resources("Observation").search(subject=f"Patient/{p.id}").count() == 0
    r = httpx.get(f"{server}/Observation/{o.id}")
    assert r.status_code == 410 and r.json()["resourceType"] == "OperationOutcome"
