#!/usr/bin/env python
"""Speed of reading and validating hospital XML exports (QĐ 130/4750 and QĐ 4210).

Usage: ``.venv/bin/python -m bench.bench_xml130 --visits 100000 [--seed 0] [--defects 0.05]
[--out bench/out/xml130] [--workers N]``

Generates the exports once (``lienthong synth xml130``; kept in ``--out`` and reused when
the same visits, seed and defect rate are asked for again), then in the same run measures:

* parse: reading every visit out of the envelopes (base64, table XML) — the baseline;
* validate: parse plus every conformance rule, the work of ``lienthong xml130 validate``,
  in one process and then in ``--workers`` processes (default: CPU count).

Prints one line per figure; the difference between the two lines is the cost of the rules.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

from bench.common import ROOT, machine
from lienthong.ingest.xml130 import parse
from lienthong.ingest.xml130.validate import ValidationReport, validate_paths
from lienthong.synth.xml130 import generate_xml130


def exports(visits: int, seed: int, defects: float, out: Path) -> list[Path]:
    """The export files for these parameters, generated unless already there."""
    marker = out / "params.json"
    wanted = {"visits": visits, "seed": seed, "defects": defects}
    if not (marker.exists() and json.loads(marker.read_text()) == wanted):
        shutil.rmtree(out, ignore_errors=True)
        summary = generate_xml130(visits, out, seed=seed, defects=defects)
        marker.write_text(json.dumps(wanted))
        print(
            f"generate: {visits / summary.seconds:,.0f} visits/s "
            f"({summary.files} files, {summary.seconds:.1f} s)"
        )
    return sorted(out.glob("*/*.xml"))


def bench_parse(files: list[Path]) -> tuple[int, float]:
    started = time.perf_counter()
    visits = sum(1 for path in files for _ in parse(path))
    return visits, time.perf_counter() - started


def bench_validate(files: list[Path], workers: int = 0) -> tuple[ValidationReport, float]:
    started = time.perf_counter()
    report = validate_paths(files, workers=workers)
    return report, time.perf_counter() - started


def seeded_defects(out: Path, report: ValidationReport) -> str:
    """How the problems found compare with the defects the generator seeded."""
    with (out / "defects.csv").open(encoding="utf-8", newline="") as fh:
        seeded = {(r["file"], r["ma_lk"], r["rule"]) for r in csv.DictReader(fh)}
    found = {(p.file, p.ma_lk, p.rule) for p in report.problems}
    seeded_visits = {(f, m) for f, m, _ in seeded}
    unseeded = {(p.file, p.ma_lk) for p in report.problems} - seeded_visits
    return (
        f"seeded defects found: {len(seeded & found):,} of {len(seeded):,}; "
        f"visits with problems but no seeded defect: {len(unseeded):,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--defects", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "xml130")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes for the last figure"
    )
    args = parser.parse_args()
    files = exports(args.visits, args.seed, args.defects, args.out)
    size = sum(p.stat().st_size for p in files)
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"exports: {len(files)} files, {size / 1e6:,.0f} MB")
    n, seconds = bench_parse(files)
    print(f"parse (baseline): {n / seconds:,.0f} visits/s ({n:,} visits in {seconds:.1f} s)")
    report, seconds = bench_validate(files)
    n = report.visits
    print(
        f"validate: {n / seconds:,.0f} visits/s ({n:,} visits in {seconds:.1f} s; "
        f"{report.visits_with_errors:,} with errors, {len(report.problems):,} problems)"
    )
    print(seeded_defects(args.out, report))
    if args.workers > 1:
        report, seconds = bench_validate(files, args.workers)
        print(
            f"validate, {args.workers} worker processes: {n / seconds:,.0f} visits/s "
            f"({report.visits:,} visits in {seconds:.1f} s; {len(report.problems):,} problems)"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
