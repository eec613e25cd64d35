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
import json
import os
import shutil
import time
from pathlib import Path

from bench.common import ROOT, machine
from lienthong.ingest.xml130 import parse
from lienthong.ingest.xml130.validate import validate_paths
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


def bench_validate(files: list[Path], workers: int = 0) -> tuple[int, int, int, float]:
    started = time.perf_counter()
    report = validate_paths(files, workers=workers)
    return (
        report.visits,
        report.visits_with_errors,
        len(report.problems),
        time.perf_counter() - started,
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
    n, bad, problems, seconds = bench_validate(files)
    print(
        f"validate: {n / seconds:,.0f} visits/s ({n:,} visits in {seconds:.1f} s; "
        f"{bad:,} with errors, {problems:,} problems)"
    )
    if args.workers > 1:
        n, bad, problems, seconds = bench_validate(files, args.workers)
        print(
            f"validate, {args.workers} worker processes: {n / seconds:,.0f} visits/s "
            f"({n:,} visits in {seconds:.1f} s; {problems:,} problems)"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
