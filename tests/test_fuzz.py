"""Fuzz: hostile and odd requests (``tests/fuzz_shapes.py``: resources grown from the FHIR
element grammar, mutated Synthea resources, searches, bundles, raw bytes) never make a 5xx,
and a 4xx is an OperationOutcome. 10,000 cases in-process on SQLite, a smaller run on
PostgreSQL, and one through the real server, which must still answer afterwards.

``bench/bench_fuzz.py`` runs the same strategies for longer.
"""

from __future__ import annotations

import bz2
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from lienthong.server.app import create_app
from lienthong.settings import Settings
from tests.conftest import BASE_URL, fresh_postgres_url, need_shared
from tests.fuzz_shapes import (
    Request,
    any_request,
    bundle_request,
    raw_request,
    read_request,
    write_request,
)
from tests.live_server import live_server
from tests.pg_server import PostgresServer
from tests.synthea_data import SYNTHEA, synthea_files

QUIET = {"LIENTHONG_LOG_LEVEL": "error"}
"""The real server's log goes to a pipe ``live_server`` reads only when the server stops:
request lines of hundreds of requests would fill it and block the server's writes to it."""


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def answer_is_sound(status: int, content_type: str, body: bytes, req: Request) -> None:
    assert status < 500, (req, status, body[:3000])
    if status >= 400 and req.url.startswith("/fhir"):  # the token endpoint answers OAuth
        assert content_type.startswith("application/fhir+json"), (req, status, body[:500])
        assert b'"OperationOutcome"' in body[:200], (req, status, body[:500])


def send(client: TestClient, req: Request) -> None:
    r = client.request(req.method, req.url, headers=req.headers, content=req.body)
    answer_is_sound(r.status_code, r.headers.get("content-type", ""), r.content, req)


def seeded_client(database_url: str) -> TestClient:
    app_settings = Settings.from_env({}).model_copy(
        update={"database_url": database_url, "base_url": BASE_URL, "auth": "off"}
    )
    client = TestClient(create_app(app_settings), raise_server_exceptions=False)
    client.__enter__()
    if SYNTHEA.exists():  # real records for the searches and reads to find
        for path in synthea_files()[:3]:
            r = client.post(
                "/fhir",
                content=bz2.decompress(path.read_bytes()),
                headers={"Content-Type": "application/fhir+json"},
            )
            assert r.status_code == 200, r.text[:500]
    return client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    c = seeded_client(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}")
    yield c
    c.__exit__(None, None, None)


def test_synthea_sample_is_there() -> None:
    """The mutated-Synthea half of the fuzz needs the shared bundles."""
    need_shared(SYNTHEA)
    from tests.fuzz_shapes import synthea_sample

    assert len(synthea_sample()) > 50


@fuzz_settings(2500)
@given(req=write_request())
def test_fuzz_writes(client: TestClient, req: Request) -> None:
    send(client, req)


@fuzz_settings(3000)
@given(req=read_request())
def test_fuzz_searches_reads_and_operations(client: TestClient, req: Request) -> None:
    send(client, req)


@fuzz_settings(1500)
@given(req=bundle_request())
def test_fuzz_bundles(client: TestClient, req: Request) -> None:
    send(client, req)


@fuzz_settings(3000)
@given(req=raw_request())
def test_fuzz_raw_bodies(client: TestClient, req: Request) -> None:
    send(client, req)


@pytest.fixture(scope="module")
def pg_client(pg_server: PostgresServer) -> Iterator[TestClient]:
    c = seeded_client(fresh_postgres_url(pg_server))
    yield c
    c.__exit__(None, None, None)


@pytest.mark.postgres
@fuzz_settings(1000)
@given(req=any_request())
def test_fuzz_postgres(pg_client: TestClient, req: Request) -> None:
    send(pg_client, req)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("fuzz-live") / "live.db"
    env = {"LIENTHONG_DATABASE_URL": f"sqlite:///{db}", "LIENTHONG_AUTH": "off", **QUIET}
    with live_server(env) as server:
        yield server.root
    assert "Traceback" not in server.output, server.output[-3000:]


@fuzz_settings(300)
@given(req=any_request())
def test_fuzz_real_server_stays_up(live: str, req: Request) -> None:
    with httpx.Client(base_url=live, timeout=60) as http:
        r = http.request(req.method, req.url, headers=req.headers, content=req.body)
        answer_is_sound(r.status_code, r.headers.get("content-type", ""), r.content, req)
        assert http.get("/fhir/metadata").status_code == 200


def test_real_server_survives_the_measured_attacks(tmp_path: Path) -> None:
    """The inputs that once broke the server: a 50 MB Patient, a transaction of 2,000
    searches that match a large one, an abstract type, an extension nested 500 deep."""
    env = {"LIENTHONG_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "LIENTHONG_AUTH": "off"}
    env.update(QUIET)
    fhir = {"Content-Type": "application/fhir+json"}
    with live_server(env) as server, httpx.Client(base_url=server.fhir, timeout=120) as http:
        family = b"x" * (50 * 1024 * 1024)
        r = http.post(
            "/Patient", content=b'{"resourceType":"Patient","name":[{"family":"' + family + b'"}]}',
            headers=fhir,
        )  # fmt: skip
        assert r.status_code == 413 and "LIENTHONG_RESOURCE_MAX_BYTES" in r.text
        name = b'{"family":"' + b"y" * 1_000_000 + b'"}'
        big = b'{"resourceType":"Patient","name":[' + b",".join([name] * 3) + b"]}"
        assert http.post("/Patient", content=big, headers=fhir).status_code == 201
        searches = [{"request": {"method": "GET", "url": "Patient"}} for _ in range(2000)]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": searches}
        r = http.post(server.fhir, json=bundle, headers=fhir)
        assert r.status_code == 413 and "LIENTHONG_RESPONSE_MAX_BYTES" in r.text
        r = http.post("/Resource", json={"resourceType": "Resource"}, headers=fhir)
        assert r.status_code == 404
        deep = b'{"url":"http://x","valueString":"v"}'
        for _ in range(500):
            deep = b'{"url":"http://x","extension":[' + deep + b"]}"
        r = http.post(
            "/Patient", content=b'{"resourceType":"Patient","extension":[' + deep + b"]}",
            headers=fhir,
        )  # fmt: skip
        assert r.status_code == 400 and "LIENTHONG_JSON_MAX_DEPTH" in r.text
        assert http.get("/metadata").status_code == 200
