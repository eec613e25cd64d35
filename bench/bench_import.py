"""Bulk import rate of the Synthea bundles, beside plain inserts of the same JSON.

For each store (SQLite file; PostgreSQL server started here, fsync on), in one run:
- import: ``BulkImporter`` (validation, reference rewriting, full search
  index, history), the code ``lienthong import`` runs;
- baseline: the same files read and decompressed, each resource serialised
  and inserted as-is into a plain ``(id, content)`` table of a fresh
  database of the same kind, one transaction per file, no FHIR processing.

Prints one line per figure.  Usage: python bench/bench_import.py [--store sqlite|postgres]
"""

from __future__ import annotations

import argparse
import bz2
import gc
import os
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from bench.common import machine, synthea_files
from lienthong.fhir.engine import FhirEngine
from lienthong.ingest.bulk import BulkImporter
from lienthong.settings import Settings
from lienthong.storage.base import open_store


def run_import(
    url: str, files: list[Path], workers: int, settings: Settings | None = None
) -> tuple[int, float]:
    """Resources loaded and seconds taken by the bulk importer; fails on any rejection,
    since a figure for a partly rejected load would measure less work."""
    store = open_store(url)
    try:
        engine = FhirEngine(store, settings)
        started = time.perf_counter()
        report = BulkImporter(engine, workers=workers).run(files)
        elapsed = time.perf_counter() - started
        assert report.rejected == 0, report.problems[:3]
        return report.total_loaded, elapsed
    finally:
        store.close()


def baseline_sqlite(path: Path, files: list[Path]) -> tuple[int, float]:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, content BLOB)")
    n = 0
    started = time.perf_counter()
    for f in files:
        with bz2.open(f) as fh:
            doc = orjson.loads(fh.read())
        rows = [(str(uuid.uuid4()), orjson.dumps(e["resource"])) for e in doc["entry"]]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO raw VALUES (?, ?)", rows)
        conn.execute("COMMIT")
        n += len(rows)
    elapsed = time.perf_counter() - started
    conn.close()
    return n, elapsed


def baseline_postgres(url: str, files: list[Path]) -> tuple[int, float]:
    import psycopg

    n = 0
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, content JSONB)")
        conn.commit()
        started = time.perf_counter()
        for f in files:
            with bz2.open(f) as fh:
                doc = orjson.loads(fh.read())
            rows = [(str(uuid.uuid4()), orjson.dumps(e["resource"]).decode()) for e in doc["entry"]]
            with conn.cursor() as cur, cur.copy("COPY raw (id, content) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            n += len(rows)
        elapsed = time.perf_counter() - started
    return n, elapsed


def report(store: str, loaded: int, elapsed: float, base_n: int, base_elapsed: float) -> None:
    rate, base = loaded / elapsed, base_n / base_elapsed
    print(
        f"import {store}: {loaded} resources in {elapsed:.1f} s = {rate:,.0f} resources/s "
        "(validated, fully indexed)"
    )
    print(
        f"baseline {store} plain insert of the same JSON: {base_n} in {base_elapsed:.1f} s = "
        f"{base:,.0f} resources/s"
    )
    print(f"import/baseline {store}: {rate / base:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    gc.set_threshold(100_000, 50, 100)  # as `lienthong import` does
    files = synthea_files()
    print(f"machine: {machine()}; {len(files)} Synthea bundles; import workers={args.workers}")
    if args.store in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            loaded, elapsed = run_import(f"sqlite:///{tmp}/import.db", files, args.workers)
            base_n, base_elapsed = baseline_sqlite(Path(tmp) / "baseline.db", files)
            report("sqlite", loaded, elapsed, base_n, base_elapsed)
    if args.store in ("postgres", "both"):
        import psycopg
        from tests.pg_server import PostgresServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("PostgreSQL binaries not found")
        server = PostgresServer(bindir)
        server.start(durable=True)
        try:
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE import_bench")
                conn.execute("CREATE DATABASE baseline_bench")
            loaded, elapsed = run_import(server.url("import_bench"), files, args.workers)
            base_n, base_elapsed = baseline_postgres(server.url("baseline_bench"), files)
            report("postgres", loaded, elapsed, base_n, base_elapsed)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
