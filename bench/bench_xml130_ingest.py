#!/usr/bin/env python
"""Ingest of hospital XML exports end to end, beside its baselines and its CPU budget.

Usage: ``.venv/bin/python -m bench.bench_xml130_ingest --visits 100000 [--seed 0]
[--defects 0.05] [--workers N] [--no-mpi] [--out bench/out/xml130_ingest]``

Generates the exports once (kept in ``--out``, reused for the same parameters), then in
one run, each on a fresh SQLite database:

* parse alone and validate alone (the conformance report's work), for the rate of the
  reading side;
* ingest: ``Xml130Ingest.ingest_paths`` — parse, validate against the standard, map to
  FHIR, check the FHIR models (in worker processes), then one transaction per visit
  through the engine (conditional Patient/Encounter updates, the person index, search
  index, history), 50 visits per commit — what ``lienthong xml130 ingest`` runs, with
  the person index on as it is by default;
* bulk import of the resources that ingest wrote, read back out as NDJSON and loaded with
  ``BulkImporter`` (what ``lienthong import`` runs): the engine's bulk rate for the same
  resources, without the XML work and the per-visit transactions;
* storage floor: the very rows ingest wrote (resources, versions, search index) inserted
  into a fresh database of the same schema with plain ``executemany``, 50 visits per
  commit — the most any writer of this schema could do on this machine;
* CPU per visit of each stage, measured in one process on the first files (parse,
  validate, map, FHIR model check; the write from the ingest run), and the ceiling
  they put on visits per second with every core busy.

Prints one line per figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from bench.bench_import import run_import
from bench.bench_xml130 import bench_parse, bench_validate, exports
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
) -> tuple[Xml130Ingest, float, float]:
    """The ingest run: its report, seconds end to end, and seconds the writer (this
    process) spent writing batches."""
    store = open_store(url)
    try:
        engine = FhirEngine(store, settings)
        ingest = Xml130Ingest(engine)
        writing = [0.0]
        write_batch = ingest._write_batch

        def timed(batch: list[Any]) -> None:
            started = time.perf_counter()
            write_batch(batch)
            writing[0] += time.perf_counter() - started

        ingest._write_batch = timed  # type: ignore[method-assign]
        started = time.perf_counter()
        ingest.ingest_paths(files, workers)
        return ingest, time.perf_counter() - started, writing[0]
    finally:
        store.close()


def storage_floor(db: Path, target: Path, visits: int, per_commit: int = 50) -> tuple[int, float]:
    """Rows of ``db`` (resources, versions, search index) inserted into a fresh database
    of the same schema with plain executemany, in ``visits / per_commit`` commits."""
    src = sqlite3.connect(db)
    fresh(target)
    open_store(f"sqlite:///{target}").close()  # the schema, as the store makes it
    dst = sqlite3.connect(target, isolation_level=None)
    dst.execute("PRAGMA journal_mode = WAL")
    dst.execute("PRAGMA synchronous = NORMAL")
    dst.execute("PRAGMA cache_size = -65536")
    tables = [
        t
        for (t,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if t in ("resource", "resource_version") or t.startswith("idx_")
    ]
    data = {t: src.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    src.close()
    commits = max(1, visits // per_commit)
    rows = sum(len(v) for v in data.values())
    started = time.perf_counter()
    for i in range(commits):
        dst.execute("BEGIN")
        for table, table_rows in data.items():
            n = len(table_rows)
            chunk = table_rows[i * n // commits : (i + 1) * n // commits]
            if chunk:
                marks = ", ".join("?" for _ in chunk[0])
                dst.executemany(f"INSERT INTO {table} VALUES ({marks})", chunk)
        dst.execute("COMMIT")
    seconds = time.perf_counter() - started
    dst.close()
    return rows, seconds


def stage_costs(files: list[Path], sample: int = 1000) -> dict[str, float]:
    """CPU seconds per visit of each reading stage, in this process, on the first
    ``sample`` visits (files whole)."""
    from lienthong.fhir.validate import validate_resource
    from lienthong.ingest.xml130.parse import parse
    from lienthong.ingest.xml130.to_fhir import visit_bundle
    from lienthong.ingest.xml130.validate import FileValidation
    from lienthong.terminology.catalogue import WhoIcd10

    icd = WhoIcd10()
    chosen: list[Path] = []
    n = 0
    for path in files:
        if n >= sample:
            break
        chosen.append(path)
        n += sum(1 for _ in parse(path))
    clock = time.process_time
    started = clock()
    for path in chosen:
        for _ in parse(path):
            pass
    parse_s = clock() - started
    started = clock()
    valid = [v for path in chosen for v, problems in FileValidation(path, icd=icd) if not problems]
    validate_s = clock() - started - parse_s
    started = clock()
    bundles = [visit_bundle(v, icd) for v in valid]
    map_s = clock() - started
    started = clock()
    for bundle in bundles:
        for entry in bundle["entry"]:
            validate_resource(entry["resource"])
    models_s = clock() - started
    return {
        "visits": n,
        "parse": parse_s / n,
        "validate": validate_s / n,
        "map": map_s / max(1, len(valid)),
        "FHIR models": models_s / max(1, len(valid)),
    }


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
        "--no-mpi",
        dest="mpi",
        action="store_false",
        help="without the person index (it is on by default, in both runs)",
    )
    args = parser.parse_args()
    settings = Settings.from_env({}).model_copy(update={"mpi": args.mpi})
    files = exports(args.visits, args.seed, args.defects, args.out / "exports")
    gc.set_threshold(100_000, 50, 100)
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"exports: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:,.0f} MB")

    n, seconds = bench_parse(files)
    print(f"parse alone: {n / seconds:,.0f} visits/s ({n:,} visits in {seconds:.1f} s, 1 process)")
    checked, seconds = bench_validate(files, args.workers)
    print(
        f"validate alone: {checked.visits / seconds:,.0f} visits/s ({checked.visits:,} visits "
        f"in {seconds:.1f} s; {args.workers} workers; {checked.visits_with_errors:,} with errors)"
    )

    db = args.out / "ingest.db"
    ingest, seconds, writing = run_ingest(fresh(db), files, args.workers, settings)
    report = ingest.report
    visits = report.visits_written + report.visits_rejected
    resources = sum(report.resources.values())
    print(
        f"ingest end to end: {visits / seconds:,.0f} visits/s ({visits:,} visits in "
        f"{seconds:.1f} s: {report.visits_written:,} written, {report.visits_rejected:,} "
        f"rejected; {resources:,} resources, {resources / seconds:,.0f} resources/s; "
        f"{args.workers} workers; person index {'on' if args.mpi else 'off'}; the writer "
        f"busy {writing / seconds:.0%} of the time)"
    )

    ndjson = dump_ndjson(db, args.out / "ndjson", skip_masters=args.mpi)
    loaded, seconds = run_import(fresh(args.out / "import.db"), ndjson, args.workers, settings)
    per_visit = loaded / max(1, report.visits_written)
    print(
        f"bulk import of the same resources (baseline): {loaded / seconds:,.0f} resources/s "
        f"({loaded:,} in {seconds:.1f} s; {loaded / seconds / per_visit:,.0f} visits/s "
        f"at {per_visit:.1f} resources per visit)"
    )
    rows, seconds = storage_floor(db, args.out / "floor.db", report.visits_written)
    floor = report.visits_written / seconds
    print(
        f"storage floor (plain inserts of the rows ingest wrote, 50 visits per commit): "
        f"{floor:,.0f} visits/s ({rows:,} rows in {seconds:.1f} s, "
        f"{rows / max(1, report.visits_written):.0f} rows per visit)"
    )

    costs = stage_costs(files)
    write = writing / max(1, visits)
    steps = {k: v for k, v in costs.items() if k != "visits"} | {"write (writer)": write}
    total = sum(steps.values())
    print(
        "CPU per visit: "
        + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in steps.items())
        + f"; total {total * 1000:.2f} ms (stages on the first {costs['visits']:,.0f} visits)"
    )
    print(
        f"ceiling with {cores} cores all busy: {cores / total:,.0f} visits/s; the single "
        f"writer alone: {1 / write:,.0f} visits/s; storage alone: {floor:,.0f} visits/s"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
