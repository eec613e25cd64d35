"""Crash drills, a few cycles of each (``bench/drill_crash.py`` runs a hundred): SIGKILL of
``lienthong import``, ``lienthong xml130 ingest`` and the real server under concurrent
transactions, then integrity, whole bundles, acknowledged writes present, the audit
chain, and an exact re-run; and a backup taken through the real server under load,
restored with exact counts. First, that the drill's checks catch what they look for."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from bench import drill_crash as drill

from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.delete import delete
from lienthong.fhir.interactions.transaction import process_bundle
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> drill.Databases:
    if request.param == "sqlite":
        return drill.SqliteDatabases(tmp_path / "db")
    server: PostgresServer = request.getfixturevalue("pg_server")
    return drill.PostgresDatabases(server)


def _clean(tally: drill.Tally, cycles: int) -> None:
    assert tally.problems == []
    assert tally.ok and tally.cycles == cycles
    assert tally.acknowledged > 0  # the drill did check acknowledged writes


# -- the checks find what they look for ---------------------------------------------


def _ids(resp_body: dict[str, object]) -> set[tuple[str, str]]:
    out = set()
    for entry in resp_body["entry"]:  # type: ignore[attr-defined]
        rtype, rid = entry["response"]["location"].split("/_history")[0].split("/")[-2:]
        out.add((rtype, rid))
    return out


def test_the_checks_report_partial_lost_and_dangling(engine: FhirEngine, store_url: str) -> None:
    acked = {}
    for m in ("a", "b", "c"):
        body = process_bundle(engine, drill.drill_bundle(m, conditional=True)).json()
        acked[m] = _ids(body)  # type: ignore[arg-type]
    tally = drill.Tally("check", "any")
    drill.check_bundles(tally, 0, drill.held(store_url), acked)
    assert tally.ok and tally.acknowledged == 3

    # one Observation of b gone: b is partial, and an acknowledged write is lost
    obs = sorted(i for t, i in acked["b"] if t == "Observation")[0]
    delete(engine, "Observation", obs)
    # a's Patient gone: its Observations point at nothing
    patient = next(i for t, i in acked["a"] if t == "Patient")
    delete(engine, "Patient", patient)
    # d was acknowledged (said the client) but is not there at all
    acked["d"] = {("Patient", "nowhere")}
    tally = drill.Tally("check", "any")
    drill.check_bundles(tally, 0, drill.held(store_url), acked)
    assert (tally.partial, tally.lost, tally.dangling) == (2, 3, drill.OBS_PER_BUNDLE)
    assert not tally.ok
    assert any("partial: 2 bundles" in p for p in tally.problems)


def test_the_integrity_check_reports_a_damaged_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lienthong.db'}"
    assert drill.integrity_problems(url) == []
    side = tmp_path / "lienthong-paging.db"  # a side file of the deployment
    conn = sqlite3.connect(side)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("CREATE INDEX t_x ON t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i:06d}" * 20,) for i in range(2000)])
    conn.commit()
    conn.close()
    assert drill.integrity_problems(url) == []
    raw = bytearray(side.read_bytes())
    page = 4096
    middle = len(raw) // page // 2 * page
    raw[middle : middle + 3 * page] = b"\x07" * (3 * page)  # three pages overwritten
    side.write_bytes(bytes(raw))
    problems = drill.integrity_problems(url)
    assert len(problems) == 1 and problems[0].startswith("lienthong-paging.db: "), problems


# -- the drills ---------------------------------------------------------------------


def test_import_killed_at_random_keeps_whole_bundles_and_reruns_exactly(
    databases: drill.Databases, tmp_path: Path
) -> None:
    tally = drill.drill_import(databases, tmp_path, 3, random.Random(1), bundles=150)
    _clean(tally, 3)


def test_xml130_ingest_killed_at_random_keeps_whole_visits_and_reruns_exactly(
    databases: drill.Databases, tmp_path: Path
) -> None:
    tally = drill.drill_xml130(databases, tmp_path, 3, random.Random(2), visits=60)
    _clean(tally, 3)


def test_server_killed_under_concurrent_transactions_loses_no_acknowledged_write(
    databases: drill.Databases, tmp_path: Path
) -> None:
    tally = drill.drill_server(databases, tmp_path, 2, random.Random(3), bundles=150)
    _clean(tally, 2)
    assert tally.killed_mid == 2  # each kill came while the clients were writing


def test_backup_during_load_through_the_server_restores_exact(
    databases: drill.Databases, tmp_path: Path
) -> None:
    tally = drill.drill_backup(databases, tmp_path, 1, random.Random(4))
    _clean(tally, 1)
