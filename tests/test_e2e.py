"""End to end: ``lienthong serve`` as a real process on a free port, driven by fhirpy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirpy import SyncFHIRClient

from tests.factories import CCCD, observation, patient
from tests.pg_server import free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}",
        "LIENTHONG_AUTH": "off",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"server did not start: {proc.stdout.read() if proc.stdout else ''}"
                )
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/fhir" in out  # it said where it listens


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
