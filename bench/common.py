"""Shared pieces of the benchmarks: where the test data is, timing, percentiles."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.pg_server, tests.synthea_data

from tests.synthea_data import SYNTHEA  # noqa: E402
from tests.synthea_data import synthea_files as load_order  # noqa: E402


def synthea_files(directory: Path = SYNTHEA) -> list[Path]:
    """The Synthea bundles in load order; stops with a message when they are absent."""
    if not directory.exists():
        raise SystemExit(f"{directory} is absent: the Synthea bundles sit in ../shared")
    return load_order(directory)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
        f"mean {statistics.fmean(ms):.2f} ms, n={len(ms)}"
    )


GENERATORS = ("synth", "alt")
"""The two independently built populations everything that scores is measured on."""


def add_generator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generator",
        choices=GENERATORS,
        default="synth",
        help="synth: lienthong.synth; alt: bench.altpop, an independently built population",
    )


def generate_population(generator: str, people: int, seed: int, out: Path, **kw: Any) -> Any:
    """Write a population of `generator` into `out` (records, register, truth); `kw` go to
    lienthong.synth's generator only. Returns the generator's summary."""
    if generator == "alt":
        from bench.altpop import generate as generate_alt

        return generate_alt(people, seed, out)
    from lienthong.synth.population import generate

    return generate(people, seed, out, **kw)
