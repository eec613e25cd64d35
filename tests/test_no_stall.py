"""A slow request does not hold up the others, on the real server (``lienthong serve``).

What is checked is order, not speed: small reads sent while a large transaction is being
processed are answered before that transaction is, one process or several. A server
that parsed, validated or encoded on its event loop, or let the slow request hold what
reads need, would answer them only after it.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.bench_load import person

from tests.factories import patient
from tests.live_server import live_server

FHIR = {"Content-Type": "application/fhir+json"}
ENTRIES = 1500


def big_transaction(n: int) -> dict[str, Any]:
    """``n`` different people (names, birth dates, phones) created in one transaction."""
    rng = random.Random(5)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                "resource": person(rng),
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(n)
        ],
    }


@pytest.mark.parametrize("workers", ["1", "2"])
def test_small_reads_are_answered_while_a_large_transaction_runs(
    tmp_path: Path, workers: str
) -> None:
    env = {
        "LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'stall.db'}",
        "LIENTHONG_AUTH": "off",
        "LIENTHONG_WORKERS": workers,
        # a line per request would fill the pipe live_server reads only at the end
        "LIENTHONG_LOG_LEVEL": "warning",
    }
    with live_server(env) as server, httpx.Client(base_url=server.fhir, timeout=300) as http:
        created = http.post("/Patient", json=patient(), headers=FHIR)
        assert created.status_code == 201, created.text
        small = f"/Patient/{created.json()['id']}"
        done: dict[str, Any] = {}

        def slow() -> None:
            with httpx.Client(base_url=server.fhir, timeout=300) as own:
                r = own.post(server.fhir, json=big_transaction(ENTRIES), headers=FHIR)
            done["status"], done["at"] = r.status_code, time.monotonic()

        worker = threading.Thread(target=slow)
        worker.start()
        answered: list[float] = []
        while worker.is_alive():
            r = http.get(small)
            assert r.status_code == 200, r.text
            answered.append(time.monotonic())
        worker.join()
        assert done["status"] == 200, done
        before = [t for t in answered if t < done["at"]]
        # reads kept being answered while the transaction was processed, not after it
        assert len(before) >= 10, f"{len(before)} of {len(answered)} reads before the slow one"
