#!/usr/bin/env python
"""Speed of the synthetic population generator.

Usage: ``.venv/bin/python -m bench.bench_synth --people 1000000 [--seed 0] [--out DIR]``

Prints one line per figure: people per second, records written, seconds, peak
memory. Linkage benchmarks need a million people, so generating them must take
minutes, not hours; the peak memory shows that the output is streamed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

from lienthong.synth.population import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records-per-person", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="keep the files here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        out = args.out or Path(tmp)
        s = generate(args.people, args.seed, out, records_per_person=args.records_per_person)
        size = sum(p.stat().st_size for p in s.files.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024
    print(f"people/s: {s.people / s.seconds:,.0f}")
    print(f"people: {s.people:,} in {s.households:,} households ({s.register_rows:,} registered)")
    print(f"records written: {s.records:,} ({size / 1e6:,.0f} MB of CSV)")
    print(f"seconds: {s.seconds:.1f}")
    print(f"peak memory: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
