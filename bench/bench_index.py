#!/usr/bin/env python
"""Throughput of the search index extractor over the Synthea test bundles.

Usage: ``.venv/bin/python -m bench.bench_index [synthea_dir] [--repeat N]``

Prints two lines: the ``IndexExtractor.extract`` rate, then ``orjson.dumps`` of the
same resources as a baseline (serialising a resource is work ingest does anyway).
References are rewritten the way a transaction would resolve them (``urn:uuid:`` and
conditional ``Type?identifier=`` references -> ``Type/id``) before timing, so the
``where(resolve() is X)`` filters see realistic input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson
from tests.synthea_data import load_synthea

from lienthong.fhir import search_index
from lienthong.fhir.search_index import IndexExtractor

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--repeat", type=int, default=3, help="best of N passes")
    args = parser.parse_args()

    resources = load_synthea(args.directory)
    extractor = IndexExtractor()
    for res in resources:  # compile every type and warm the caches outside the timing
        extractor.extract(res)

    def best(fn: Any) -> float:
        times = []
        for _ in range(args.repeat):
            # Start every pass with empty memo caches (dates, folded text, parsed
            # references): a second pass over the same data would otherwise hit them
            # 100% and overstate what ingesting new data costs.
            search_index.date_range.cache_clear()
            search_index._fold.cache_clear()
            extractor._refs.parse.cache_clear()
            t0 = time.perf_counter()
            for res in resources:
                fn(res)
            times.append(time.perf_counter() - t0)
        return min(times)

    t_extract = best(extractor.extract)
    t_dumps = best(orjson.dumps)
    n = len(resources)
    print(
        f"extract: {n / t_extract:,.0f} resources/s "
        f"({t_extract / n * 1e6:.1f} us/resource, {n} resources)"
    )
    print(
        f"orjson.dumps baseline: {n / t_dumps:,.0f} resources/s "
        f"({t_dumps / n * 1e6:.1f} us/resource)"
    )


if __name__ == "__main__":
    main()
