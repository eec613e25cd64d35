"""The embedded store keeps the SQLite planner's statistics fresh as it grows, so an
identifier look-up (every conditional update, every ingested visit) is driven by the
search index and the primary key rather than by a scan of every resource of the type."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl

from lienthong.fhir.engine import FhirEngine, now_instant
from lienthong.settings import Settings
from lienthong.storage.sql_search import compile_search
from lienthong.storage.sqlite import SqliteStore

SYSTEM = "http://example.org/visit"


def encounters(engine: FhirEngine, start: int, n: int) -> None:
    with engine.store.writer() as session:
        ops = [
            engine.prepare(
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "identifier": [{"system": SYSTEM, "value": f"v{i}"}],
                },
                f"e{i}",
                1,
                now_instant(),
                "POST",
                None,
            )
            for i in range(start, start + n)
        ]
        session.write(ops)


def plan(store: SqliteStore, engine: FhirEngine, value: str) -> str:
    req = engine.parse_search("Encounter", parse_qsl(f"identifier={SYSTEM}|{value}"), strict=True)
    req.query.count = 2
    compiled = compile_search(req.query, store.params)
    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {compiled.page_sql}", compiled.page_args)
        return " / ".join(str(r[3]) for r in rows)
    finally:
        conn.close()


def test_statistics_follow_the_store_as_it_grows(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'grow.db'}")
    engine = FhirEngine(store, Settings.from_env({}).model_copy(update={"mpi": False}))
    try:
        encounters(engine, 0, 500)
        assert store._analyzed_rows == 0  # small: the planner's guesses do
        encounters(engine, 500, 700)
        first = store._analyzed_rows
        assert first >= 1000
        shown = plan(store, engine, "v42")
        assert "INTEGER PRIMARY KEY" in shown and "resource_type_updated" not in shown, shown
        encounters(engine, 1200, 300)
        assert store._analyzed_rows == first  # not doubled yet: no new statistics
        encounters(engine, 1500, 1000)
        assert store._analyzed_rows >= 2 * first
    finally:
        store.close()
    reopened = SqliteStore(f"sqlite:///{tmp_path / 'grow.db'}")
    try:  # the last statistics are known after a restart
        assert reopened._analyzed_rows >= 2 * first
    finally:
        reopened.close()
