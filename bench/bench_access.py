"""The cost of access control and audit on reads and searches.

One SQLite store holding the Synthea bundles; the same server code started
twice, one after the other, on the same database:

- baseline: ``LIENTHONG_AUTH=off`` (no token check, no policy; the audit entry
  of each request is still written, as it is whenever the server runs);
- guarded: authentication on, requests with bearer tokens of a ``data_admin``
  and of a ``clinician`` whose organisation has visits with many patients
  (the treatment window is widened to 200 years so Synthea's old visits count).

Each runs the same requests one after another: read by id of an Observation,
and ``Observation?subject=Patient/X&code=C`` for (patient, code) pairs the
clinician may see. Prints one line per figure.

Usage: python -m bench.bench_access [--db bench/out/synthea.db] [--samples 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.pg_server import free_port

from bench.common import ROOT, machine, summary_ms, synthea_files
from lienthong.access.auth import TokenIssuer, UserDirectory
from lienthong.fhir.engine import FhirEngine
from lienthong.ingest.bulk import BulkImporter
from lienthong.settings import Settings
from lienthong.storage.base import open_store


def build(url: str) -> None:
    store = open_store(url)
    try:
        if not store.counts():
            BulkImporter(FhirEngine(store), workers=os.cpu_count() or 1).run(synthea_files())
            store.optimize()
    finally:
        store.close()


def busiest_org(path: Path) -> tuple[str, list[str]]:
    conn = sqlite3.connect(path)
    sp = {(t, c): i for i, t, c in conn.execute("SELECT sp, res_type, code FROM search_param")}
    # the organisation whose visits cover the most patients: the largest visible set
    org, _ = conn.execute(
        "SELECT o.target_id, COUNT(DISTINCT p.target_id) n FROM idx_reference o "
        "JOIN idx_reference p ON p.pk = o.pk AND p.sp = ? WHERE o.sp = ? "
        "GROUP BY o.target_id ORDER BY n DESC LIMIT 1",
        (sp[("Encounter", "patient")], sp[("Encounter", "service-provider")]),
    ).fetchone()
    patients = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT p.target_id FROM idx_reference o JOIN idx_reference p ON p.pk = o.pk "
            "AND p.sp = ? WHERE o.sp = ? AND o.target_id = ?",
            (sp[("Encounter", "patient")], sp[("Encounter", "service-provider")], org),
        )
    ]
    conn.close()
    return org, patients


def samples(path: Path, patients: list[str], n: int) -> tuple[list[str], list[tuple[str, str]]]:
    conn = sqlite3.connect(path)
    sp = {(t, c): i for i, t, c in conn.execute("SELECT sp, res_type, code FROM search_param")}
    marks = ", ".join("?" for _ in patients)
    rows = conn.execute(
        "SELECT r.res_id, ref.target_id, tok.code FROM idx_reference ref "
        "JOIN resource r ON r.pk = ref.pk "
        "JOIN idx_token tok ON tok.pk = ref.pk AND tok.sp = ? AND tok.code IS NOT NULL "
        f"WHERE ref.sp = ? AND ref.target_type = 'Patient' AND ref.target_id IN ({marks})",
        (sp[("Observation", "code")], sp[("Observation", "subject")], *patients),
    ).fetchall()
    conn.close()
    random.seed(7)
    picked = random.sample(rows, min(n, len(rows)))
    return [r[0] for r in picked], [(r[1], r[2]) for r in picked]


def run_server(url: str, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "LIENTHONG_DATABASE_URL": url, **env_extra}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    for _ in range(150):
        try:
            httpx.get(f"{base}/metadata")
            break
        except httpx.TransportError:
            time.sleep(0.2)
    return proc, base


def measure(
    base: str, token: str | None, ids: list[str], pairs: list[tuple[str, str]]
) -> tuple[list[float], list[float]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=30, headers=headers) as client:
        for i, (p, c) in zip(ids[:50], pairs[:50], strict=False):  # warm both paths
            client.get(f"{base}/Observation/{i}").raise_for_status()
            client.get(f"{base}/Observation", params={"subject": f"Patient/{p}", "code": c})
        reads, searches = [], []
        for i in ids:
            t = time.perf_counter()
            client.get(f"{base}/Observation/{i}").raise_for_status()
            reads.append(time.perf_counter() - t)
        for p, c in pairs:
            t = time.perf_counter()
            r = client.get(f"{base}/Observation", params={"subject": f"Patient/{p}", "code": c})
            r.raise_for_status()
            assert r.json().get("total", 1) > 0
            searches.append(time.perf_counter() - t)
    return reads, searches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=Path, default=ROOT / "bench" / "out" / "synthea.db")
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{args.db}"
    build(url)
    org, patients = busiest_org(args.db)
    ids, pairs = samples(args.db, patients, args.samples)
    settings = Settings.from_env({})
    users = UserDirectory(url)
    issuer = TokenIssuer(url, settings.token_issuer, settings.token_audience)
    for name, role, organization in (
        ("bench-admin", "data_admin", None),
        ("bench-doc", "clinician", org),
    ):
        users.remove(name)  # the busiest organisation may differ from an earlier run's
        users.add(name, role, organization=organization)
    tokens = {n: issuer.issue(users.get(n), None, 3600) for n in ("bench-admin", "bench-doc")}  # type: ignore[arg-type]
    users.close()
    issuer.close()
    print(
        f"machine: {machine()}; store {args.db.name}: clinician's organisation has "
        f"{len(patients)} patients; {len(ids)} reads, {len(pairs)} searches per run"
    )

    # each configuration runs twice, alternating, and keeps its faster run: the machine's
    # own drift between runs is larger than some of the differences being measured
    configs = (
        ("auth off", {"LIENTHONG_AUTH": "off"}, None),
        ("data_admin", {"LIENTHONG_TREATMENT_WINDOW_DAYS": "73000"}, tokens["bench-admin"]),
        ("clinician", {"LIENTHONG_TREATMENT_WINDOW_DAYS": "73000"}, tokens["bench-doc"]),
    )
    results: dict[str, tuple[list[float], list[float]]] = {}
    for _ in range(2):
        for label, env, token in configs:
            proc, base = run_server(url, env)
            try:
                run = measure(base, token, ids, pairs)
            finally:
                proc.terminate()
                proc.wait(10)
            best = results.get(label)
            if best is None or sum(map(sum, run)) < sum(map(sum, best)):
                results[label] = run
    for label, _, _ in configs:
        reads, searches = results[label]
        print(f"{label} read by id: {summary_ms(reads)}")
        print(f"{label} Observation?subject&code: {summary_ms(searches)}")
    base_r, base_s = (statistics.fmean(x) for x in results["auth off"])
    for label in ("data_admin", "clinician"):
        r, s = (statistics.fmean(x) for x in results[label])
        print(
            f"{label} vs auth off: reads {100 * (r / base_r - 1):+.0f}%, "
            f"searches {100 * (s / base_s - 1):+.0f}% (mean latency)"
        )


if __name__ == "__main__":
    main()
