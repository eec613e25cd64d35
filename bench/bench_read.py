"""Read latency with at least 1,000,000 resources in the store (SQLite).

Builds (or reuses) a database holding the Synthea bundles loaded again and
again through the importer (each round gets new ids, so the store grows like
real data: ~60 patients' records per round, shared organizations), then
measures, on random samples:

- read by id over HTTP (``GET /fhir/Observation/{id}``) against ``lienthong serve``;
- the patient-compartment search ``GET /fhir/Observation?subject=Patient/X&code=C``
  over HTTP, for (patient, code) pairs that exist;
- the same two through the engine in-process (no HTTP);
- baseline: a primary-key SELECT of the stored JSON in the same database.

Prints one line per figure. Usage:
    python bench/bench_read.py [--db bench/out/million.db] [--target 1000000] [--samples 2000]
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.pg_server import free_port

from bench.common import ROOT, machine, summary_ms, synthea_files
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.read import read
from lienthong.fhir.interactions.search import search
from lienthong.ingest.bulk import BulkImporter
from lienthong.storage.base import open_store


def build(url: str, target: int) -> int:
    store = open_store(url)
    try:
        total = sum(store.counts().values())
        if total >= target:
            return total
        engine = FhirEngine(store)
        files = synthea_files()
        importer = BulkImporter(engine, workers=os.cpu_count() or 1)
        if total == 0:
            importer.run(files[:2])
        started = time.perf_counter()
        loaded = 0
        while total < target:
            report = importer.run(files[2:])
            loaded += report.total_loaded
            total = sum(store.counts().values())
            print(f"  loaded {total:,} resources so far", file=sys.stderr)
        elapsed = time.perf_counter() - started
        print(
            f"build: {loaded:,} resources imported in {elapsed:.0f} s "
            f"({loaded / elapsed:,.0f} resources/s while the store grew)"
        )
        store.optimize()
        return total
    finally:
        store.close()


def samples(path: Path, n: int) -> tuple[list[str], list[tuple[str, str]]]:
    conn = sqlite3.connect(path)
    sp = dict(
        ((t, c), i) for i, t, c in conn.execute("SELECT sp, res_type, code FROM search_param")
    )
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT res_id FROM resource WHERE res_type = 'Observation' AND deleted = 0 "
            "ORDER BY random() LIMIT ?",
            (n,),
        )
    ]
    pairs = [
        (p, c)
        for p, c in conn.execute(
            "SELECT ref.target_id, tok.code FROM idx_reference ref JOIN idx_token tok "
            "ON tok.pk = ref.pk AND tok.sp = ? AND tok.code IS NOT NULL "
            "WHERE ref.sp = ? AND ref.target_type = 'Patient' "
            "ORDER BY random() LIMIT ?",
            (sp[("Observation", "code")], sp[("Observation", "subject")], n),
        )
    ]
    conn.close()
    return ids, pairs


def timed(fn, items) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=Path, default=ROOT / "bench" / "out" / "million.db")
    ap.add_argument("--target", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    gc.set_threshold(100_000, 50, 100)
    url = f"sqlite:///{args.db}"
    print(f"machine: {machine()}")
    total = build(url, args.target)
    print(
        f"store: {total:,} current resources in {args.db} "
        f"({args.db.stat().st_size / 2**30:.1f} GiB)"
    )
    ids, pairs = samples(args.db, args.samples)

    # baseline: primary-key lookup of the stored JSON
    conn = sqlite3.connect(args.db)
    keys = [
        conn.execute(
            "SELECT pk, version FROM resource WHERE res_type = 'Observation' AND res_id = ?", (i,)
        ).fetchone()
        for i in ids
    ]
    base = timed(
        lambda k: conn.execute(
            "SELECT content FROM resource_version WHERE pk = ? AND version = ?", k
        ).fetchone(),
        keys,
    )
    conn.close()
    print(f"baseline SELECT content by primary key: {summary_ms(base)}")

    store = open_store(url)
    engine = FhirEngine(store)
    r_engine = timed(lambda i: read(engine, "Observation", i), ids)
    s_engine = timed(
        lambda pc: search(
            engine, "Observation", [("subject", f"Patient/{pc[0]}"), ("code", pc[1])]
        ),
        pairs,
    )
    store.close()
    print(f"engine read by id: {summary_ms(r_engine)}")
    print(f"engine Observation?subject=Patient/X&code=C: {summary_ms(s_engine)}")

    port = free_port()
    env = {**os.environ, "LIENTHONG_DATABASE_URL": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/fhir"
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(150):
                try:
                    client.get(f"{base_url}/metadata")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            for i in ids[:50]:  # warm the connection and caches alike for both
                client.get(f"{base_url}/Observation/{i}")
            r_http = timed(
                lambda i: client.get(f"{base_url}/Observation/{i}").raise_for_status(), ids
            )
            s_http = timed(
                lambda pc: client.get(
                    f"{base_url}/Observation", params={"subject": f"Patient/{pc[0]}", "code": pc[1]}
                ).raise_for_status(),
                pairs,
            )
    finally:
        server.terminate()
        server.wait(10)
    print(f"HTTP read by id: {summary_ms(r_http)}")
    print(f"HTTP Observation?subject=Patient/X&code=C: {summary_ms(s_http)}")


if __name__ == "__main__":
    main()
