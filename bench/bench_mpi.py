"""The master person index: import rate with resolution on and off, accuracy, $match.

In one run, on a generated population (``lienthong.synth``) whose records are written as
FHIR Patients (each source's spelling kept):
- import: the Patients through ``BulkImporter`` (what ``lienthong import`` runs) into a
  fresh store with the index off (the baseline), then into another with it on;
  Patients/s for each;
- accuracy: the persons the index made, pairwise precision / recall / F1 against the
  generator's truth;
- $match: records held out of the import are matched (``Patient/$match`` in process,
  through the engine) — latency p50/p99, and how often the top candidate is the right
  person (when that person has records in the index) — beside the latency of the search
  a client would run without the index (family name + birth date).

Usage: python -m bench.bench_mpi [--people N] [--queries Q] [--store sqlite|postgres]
[--generator synth|alt]
Outputs go to bench/out/mpi/.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson

from bench.common import ROOT, add_generator_option, generate_population, machine, summary_ms
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.match import match
from lienthong.fhir.interactions.search import search
from lienthong.identity.mpi import raw_session
from lienthong.identity.scoring import patient_from_record
from lienthong.ingest.bulk import BulkImporter
from lienthong.settings import Settings
from lienthong.storage.base import open_store

OUT = ROOT / "bench" / "out" / "mpi"


def pairs(assignment: dict[str, str]) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for record, person in assignment.items():
        groups[person].append(record)
    return {p for members in groups.values() for p in combinations(sorted(members), 2)}


def store_url(kind: str, name: str, pg: Any) -> str:
    if kind == "sqlite":
        return f"sqlite:///{OUT / name}.db"
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return str(pg.url(name))


def load(url: str, files: list[Path], mpi: bool) -> tuple[FhirEngine, int, float]:
    settings = Settings.from_env({}).model_copy(
        update={"database_url": url, "mpi": mpi, "base_url": "http://bench/fhir"}
    )
    store = open_store(url)
    engine = FhirEngine(store, settings)
    started = time.perf_counter()
    report = BulkImporter(engine, workers=2).run(files)
    elapsed = time.perf_counter() - started
    assert report.rejected == 0, report.problems[:3]
    return engine, report.loaded.get("Patient", 0), elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    add_generator_option(parser)
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    pop = generate_population(args.generator, args.people, args.seed, OUT / "population")
    with (OUT / "population" / "records.csv").open(encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    with (OUT / "population" / "truth.csv").open(encoding="utf-8", newline="") as fh:
        truth = {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)}
    rng = random.Random(args.seed)
    held = set(rng.sample(range(len(records)), min(args.queries, len(records) // 10)))
    loaded = [r for i, r in enumerate(records) if i not in held]
    queries = [r for i, r in enumerate(records) if i in held]
    ndjson = OUT / "patients.ndjson"
    with ndjson.open("wb") as fh:
        for r in loaded:
            fh.write(orjson.dumps(patient_from_record(r)) + b"\n")
    print(f"machine: {machine()}")
    print(f"population: {pop.people:,} people, {len(loaded):,} Patients to import, "
          f"{len(queries):,} held out for $match")  # fmt: skip

    pg = None
    if args.store == "postgres":
        from tests.pg_server import PostgresServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("PostgreSQL server binaries are not installed")
        pg = PostgresServer(bindir)
        pg.start()
    try:
        off_engine, n_off, t_off = load(store_url(args.store, "mpi_off", pg), [ndjson], False)
        off_engine.store.close()
        print(f"import, index off (baseline): {n_off:,} Patients in {t_off:.1f} s, "
              f"{n_off / t_off:,.0f} Patients/s")  # fmt: skip
        engine, n_on, t_on = load(store_url(args.store, "mpi_on", pg), [ndjson], True)
        print(f"import, index on: {n_on:,} Patients in {t_on:.1f} s, "
              f"{n_on / t_on:,.0f} Patients/s ({t_on / t_off:.1f}x the baseline time)")  # fmt: skip

        with engine.store.reader() as session:
            stats = engine.mpi.stats(session)
            got = dict(raw_session(session).side("SELECT res_id, master_id FROM mpi_record"))
        true_pairs = pairs({k: truth[k] for k in got})
        made = pairs(got)
        tp = len(true_pairs & made)
        precision = tp / len(made) if made else 1.0
        recall = tp / len(true_pairs) if true_pairs else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        print(f"persons: {stats['persons']:,} for {stats['records']:,} records "
              f"(truth: {len(set(truth[k] for k in got)):,}), "
              f"{stats['pending_reviews']:,} pairs to review")  # fmt: skip
        print(f"accuracy: pairwise precision {precision:.4f}, recall {recall:.4f}, F1 {f1:.4f}")

        person_records: dict[str, set[str]] = defaultdict(set)
        for rid, master in got.items():
            person_records[master].add(truth[rid])
        indexed_people = {truth[k] for k in got}
        latencies: list[float] = []
        search_latencies: list[float] = []
        right = answerable = false_certain = absent = 0
        for q in queries:
            patient = patient_from_record({**q, "record_id": ""})
            body = {"resourceType": "Parameters",
                    "parameter": [{"name": "resource", "resource": patient},
                                  {"name": "count", "valueInteger": 5}]}  # fmt: skip
            started = time.perf_counter()
            bundle = match(engine, body).json() or {}
            latencies.append(time.perf_counter() - started)
            entries = bundle.get("entry", [])
            top = entries[0] if entries else None
            top_people = person_records.get(top["resource"]["id"], set()) if top else set()
            if truth[q["record_id"]] in indexed_people:
                answerable += 1
                right += truth[q["record_id"]] in top_people
            else:
                absent += 1
                grade = top["search"]["extension"][0]["valueCode"] if top else None
                false_certain += grade == "certain"
            name = (patient.get("name") or [{}])[0].get("text", "").split()
            criteria = [("family", name[0])] if name else []
            if patient.get("birthDate"):
                criteria.append(("birthdate", patient["birthDate"]))
            started = time.perf_counter()
            search(engine, "Patient", [*criteria, ("_count", "5")])
            search_latencies.append(time.perf_counter() - started)
        print(f"$match latency: {summary_ms(latencies)}")
        print(f"baseline search Patient?family&birthdate latency: {summary_ms(search_latencies)}")
        print(f"$match top candidate is the right person: {right}/{answerable} "
              f"({right / max(answerable, 1):.1%}) of queries whose person is indexed")  # fmt: skip
        print(f"$match 'certain' for a person not in the index: {false_certain}/{absent}")
        engine.store.close()
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
