"""Fixtures: a fresh store per test on a real SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from lienthong.fhir.engine import FhirEngine
from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore, open_store
from tests.pg_server import PostgresServer, find_bindir

SHARED = Path(__file__).resolve().parents[2] / "shared"
BASE_URL = "http://testserver/fhir"
_counter = itertools.count()


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared test material sits beside the project checkout")
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("LIENTHONG_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL binaries not found but LIENTHONG_REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PostgresServer(bindir)
    server.start()
    # a template with the schema, so each test's database is a cheap copy
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE lienthong_template")
    open_store(server.url("lienthong_template")).close()
    try:
        yield server
    finally:
        server.stop()


def fresh_postgres_url(server: PostgresServer) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE lienthong_template")
    return server.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lienthong.db'}"
    return fresh_postgres_url(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(store_url: str) -> Iterator[ResourceStore]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings(store_url: str) -> Settings:
    # The API tests act as the local operator; access control has its own tests. They
    # check the store's own semantics exactly (counts, history totals), so the person
    # index, which adds a master Patient per person, is off here and tested in test_mpi.
    return Settings.from_env({}).model_copy(
        update={"database_url": store_url, "base_url": BASE_URL, "auth": "off", "mpi": False}
    )


@pytest.fixture
def engine(store: ResourceStore, settings: Settings) -> FhirEngine:
    return FhirEngine(store, settings)


@pytest.fixture
def client(store: ResourceStore, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store=store)) as c:
        yield c
