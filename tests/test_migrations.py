"""Schema versions and migrations: a store made before versions were recorded opens,
migrates and reads as before; migrations that change data wait for `lienthong migrate`."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.read import read
from lienthong.fhir.interactions.search import search
from lienthong.settings import Settings
from lienthong.storage import migrations as mg
from lienthong.storage.base import open_store

FIXTURE = Path(__file__).parent / "fixtures" / "schema_v1" / "lienthong-v1.db"
CCCD = "http://fhir.ehealth.gov.vn/core/sid/citizen_id"


@pytest.fixture
def v1_url(tmp_path: Path) -> str:
    copy = tmp_path / "lienthong.db"
    shutil.copyfile(FIXTURE, copy)
    return f"sqlite:///{copy}"


def _sqlite_version(url: str) -> int:
    conn = sqlite3.connect(url[len("sqlite:///") :])
    try:
        return mg.current_version(conn.cursor(), "sqlite")
    finally:
        conn.close()


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        return [tuple(r) for r in pg.execute(sql).fetchall()]


def _total(resp: Any) -> int:
    return int(resp.json()["total"])


def test_version_1_fixture_opens_migrates_and_reads(v1_url: str) -> None:
    assert _sqlite_version(v1_url) == 1
    store = open_store(v1_url)
    try:
        assert store.schema_version == mg.latest()  # type: ignore[attr-defined]
        assert store.counts() == {"Patient": 3, "Observation": 2}
        engine = FhirEngine(
            store, Settings.from_env({}).model_copy(update={"database_url": v1_url, "mpi": False})
        )
        pt1 = read(engine, "Patient", "pt-1").json()
        assert pt1 is not None
        assert pt1["meta"]["versionId"] == "2"
        assert pt1["telecom"][0]["value"] == "+84912345678"
        assert pt1["name"][0]["family"] == "Nguyễn"
        # the search index written by version 1 answers
        found = search(engine, "Patient", [("identifier", f"{CCCD}|079201000003")])
        assert _total(found) == 1
        assert _total(search(engine, "Observation", [("subject", "Patient/pt-2")])) == 1
        assert _total(search(engine, "Patient", [("family", "Phạm")])) == 0  # deleted
        with store.reader() as s:
            assert s.history("Patient", "pt-1", None, None, 10, 0).total == 2
    finally:
        store.close()
    rows = _query(v1_url, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in mg.MIGRATIONS]
    # opening again applies nothing more
    store = open_store(v1_url)
    store.close()
    assert len(_query(v1_url, "SELECT version FROM schema_version")) == len(mg.MIGRATIONS)


def test_migrate_command_on_the_version_1_fixture(v1_url: str) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["migrate", "--database", v1_url])
    assert done.exit_code == 0, done.output
    assert f"schema version 1 -> {mg.latest()}" in done.output
    assert "applied 2: schema versions recorded in schema_version" in done.output
    assert _sqlite_version(v1_url) == mg.latest()
    again = runner.invoke(app, ["migrate", "--database", v1_url])
    assert again.exit_code == 0
    assert f"schema version {mg.latest()}: up to date" in again.output


def test_migrate_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "--database", f"sqlite:///{tmp_path / 'no.db'}"])
    assert result.exit_code == 1
    assert "no database at" in result.output


def test_a_new_database_starts_at_the_latest_version(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.schema_version == mg.latest()  # type: ignore[attr-defined]
    finally:
        store.close()
    assert [r[0] for r in _query(store_url, "SELECT version FROM schema_version")] == [
        m.version for m in mg.MIGRATIONS
    ]


def _add_note(cur: Any, backend: str) -> None:
    cur.execute("ALTER TABLE mpi_event ADD COLUMN note TEXT")
    cur.execute("UPDATE resource SET last_updated = last_updated")  # rewrites rows


def test_a_migration_that_changes_data_waits_for_the_operator(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(store_url).close()
    rewrite = mg.Migration(mg.latest() + 1, "a note on person-index events", False, _add_note)
    monkeypatch.setattr(mg, "MIGRATIONS", (*mg.MIGRATIONS, rewrite))
    with pytest.raises(mg.SchemaError) as exc:
        open_store(store_url)
    assert f"{rewrite.version} (a note on person-index events)" in str(exc.value)
    assert "lienthong migrate" in str(exc.value)
    before, applied = mg.migrate_database(store_url)
    assert before == rewrite.version - 1
    assert applied == [rewrite]
    store = open_store(store_url)
    try:
        assert store.schema_version == rewrite.version  # type: ignore[attr-defined]
    finally:
        store.close()
    assert _query(store_url, "SELECT COUNT(note) FROM mpi_event") == [(0,)]


def test_a_failing_migration_leaves_the_version_as_it_was(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(store_url).close()

    def half_done(cur: Any, backend: str) -> None:
        cur.execute("CREATE TABLE half_done (x TEXT)")
        raise RuntimeError("step failed")

    broken = mg.Migration(mg.latest() + 1, "fails half way", True, half_done)
    monkeypatch.setattr(mg, "MIGRATIONS", (*mg.MIGRATIONS, broken))
    with pytest.raises(RuntimeError, match="step failed"):
        mg.migrate_database(store_url)
    monkeypatch.undo()
    store = open_store(store_url)  # still opens at the version it had
    try:
        assert store.schema_version == mg.latest()  # type: ignore[attr-defined]
    finally:
        store.close()
    if store_url.startswith("sqlite:"):
        sql = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'"
    else:
        sql = "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'half_done'"
    assert _query(store_url, sql) == [(0,)]


def test_a_database_newer_than_the_code_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    newer = mg.latest() + 5
    sql = (
        "INSERT INTO schema_version (version, description, applied) "
        f"VALUES ({newer}, 'from the future', '2030-01-01T00:00:00Z')"
    )
    if store_url.startswith("sqlite:"):
        conn = sqlite3.connect(store_url[len("sqlite:///") :])
        with conn:
            conn.execute(sql)
        conn.close()
    else:
        with psycopg.connect(store_url) as pg:
            pg.execute(sql)
    with pytest.raises(mg.SchemaError) as exc:
        open_store(store_url)
    assert f"schema version {newer}, newer than this lienthong knows" in str(exc.value)
    result = CliRunner().invoke(app, ["migrate", "--database", store_url])
    assert result.exit_code == 1
    assert "upgrade lienthong" in result.output


def test_a_backup_of_a_version_1_store_restores_at_the_latest_version(
    v1_url: str, tmp_path: Path
) -> None:
    from lienthong.storage import backup as bk

    manifest = bk.backup(v1_url, tmp_path / "backup")
    assert manifest.schema_version == 1  # the backup is the store as it was
    target = f"sqlite:///{tmp_path / 'restored' / 'lienthong.db'}"
    report = bk.restore(tmp_path / "backup", target)
    assert report.problems == []
    assert report.resources == 5
    assert _sqlite_version(target) == mg.latest()
