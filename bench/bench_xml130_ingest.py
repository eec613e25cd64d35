#!/usr/bin/env python
"""Ingest of hospital XML exports end to end, beside bulk import of the same resources.

Usage: ``.venv/bin/python -m bench.bench_xml130_ingest --visits 10000 [--seed 0]
[--defects 0.05] [--workers N] [--out bench/out/xml130_ingest]``

Generates the exports once (kept in ``--out``, reused for the same parameters), then in
one run, each on a fresh SQLite database:

* ingest: ``Xml130Ingest.ingest_paths`` — parse, validate against the standard, map to
  FHIR, check the FHIR models (in worker processes), then one transaction per visit
  through the engine (conditional Patient/Encounter updates, search index, history) —
  what ``lienthong xml130 ingest`` runs;
* baseline: the resources that ingest wrote, read back out as NDJSON and loaded with
  ``BulkImporter`` (what ``lienthong import`` runs) — the engine's bulk rate for the same
  resources, without the XML work and without one transaction per visit.

Prints one line per figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import time
from pathlib import Path

import orjson

from bench.bench_import import run_import
from bench.bench_xml130 import exports
from bench.common import ROOT, machine
from lienthong.fhir.engine import FhirEngine
from lienthong.ingest.xml130.ingest import Xml130Ingest
from lienthong.settings import Settings
from lienthong.storage.base import open_store


def fresh(path: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def run_ingest(
    url: str, files: list[Path], workers: int, settings: Settings
) -> tuple[Xml130Ingest, float]:
    store = open_store(url)
    try:
        engine = FhirEngine(store, settings)
        ingest = Xml130Ingest(engine)
        started = time.perf_counter()
        ingest.ingest_paths(files, workers)
        return ingest, time.perf_counter() - started
    finally:
        store.close()


def dump_ndjson(
    db: Path, out: Path, per_file: int = 20_000, skip_masters: bool = False
) -> list[Path]:
    """The current version of every resource in ``db``, as NDJSON files (meta dropped);
    without the index's master Patients when the import makes its own."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.ndjson"):
        old.unlink()
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT v.content FROM resource r JOIN resource_version v "
        "ON v.pk = r.pk AND v.version = r.version WHERE r.deleted = 0 ORDER BY r.pk"
    )
    paths: list[Path] = []
    fh = None
    written = 0
    for (content,) in rows:
        resource = orjson.loads(content)
        if skip_masters and any(
            t.get("code") == "master" for t in (resource.get("meta") or {}).get("tag", [])
        ):
            continue
        resource.pop("meta", None)
        if written % per_file == 0:
            if fh is not None:
                fh.close()
            paths.append(out / f"part-{len(paths):04d}.ndjson")
            fh = paths[-1].open("wb")
        assert fh is not None
        fh.write(orjson.dumps(resource) + b"\n")
        written += 1
    if fh is not None:
        fh.close()
    conn.close()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--visits", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--defects", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "xml130_ingest")
    parser.add_argument(
        "--mpi", action="store_true", help="resolve every Patient to a person (both runs)"
    )
    args = parser.parse_args()
    settings = Settings.from_env({}).model_copy(update={"mpi": args.mpi})
    files = exports(args.visits, args.seed, args.defects, args.out / "exports")
    gc.set_threshold(100_000, 50, 100)
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"exports: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:,.0f} MB")

    db = args.out / "ingest.db"
    ingest, seconds = run_ingest(fresh(db), files, args.workers, settings)
    report = ingest.report
    visits = report.visits_written + report.visits_rejected
    resources = sum(report.resources.values())
    print(
        f"ingest end to end: {visits / seconds:,.0f} visits/s ({visits:,} visits in "
        f"{seconds:.1f} s: {report.visits_written:,} written, {report.visits_rejected:,} "
        f"rejected; {resources:,} resources, {resources / seconds:,.0f} resources/s; "
        f"{args.workers} workers; person index {'on' if args.mpi else 'off'})"
    )

    ndjson = dump_ndjson(db, args.out / "ndjson", skip_masters=args.mpi)
    loaded, seconds = run_import(fresh(args.out / "import.db"), ndjson, args.workers, settings)
    per_visit = loaded / max(1, report.visits_written)
    print(
        f"bulk import of the same resources (baseline): {loaded / seconds:,.0f} resources/s "
        f"({loaded:,} in {seconds:.1f} s; {loaded / seconds / per_visit:,.0f} visits/s "
        f"at {per_visit:.1f} resources per visit)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
