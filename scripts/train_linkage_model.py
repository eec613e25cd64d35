#!/usr/bin/env python
"""Train the linkage model shipped with lienthong (`identity/data/linkage_model.json`).

Usage: ``.venv/bin/python scripts/train_linkage_model.py [--people 50000] [--seed 2025]``

No labelled record pairs exist for Vietnam, so the model is estimated without labels
(Splink: u by random sampling, m by expectation maximisation) on a synthetic population
from `lienthong.synth` (with its data-entry noise: Telex and VNI keystrokes, dropped
letters, swapped days and months, mistyped digits) with a fixed seed: the same command
writes the same model (up to the last digits of floating-point sums, and Splink's random
`linker_uid`). Levels for errors the population shows rarely or never (the birth year
off by one, the sex recorded wrong, a move to another province) get the least m of
`linkage.KEYING_ERROR_M` rather than the near-zero one training would give them, so the
model does not learn from one generator that those errors never happen.
The prior is saved for `REFERENCE_RECORDS` records and rescaled to each file linked.

Never train on the alternative population (`bench.altpop`): it is the held-out check.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lienthong.identity.linkage import SHIPPED_MODEL, prepare, train
from lienthong.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", type=Path, default=SHIPPED_MODEL)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="linkage-model-") as tmp:
        summary = generate(args.people, args.seed, Path(tmp))
        table = prepare(Path(tmp) / "records.csv")
    model = train(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_model(args.out)
    print(
        f"trained on {summary.records:,} records of {summary.people:,} people "
        f"(seed {args.seed}) in {time.perf_counter() - started:.0f} s; written to {args.out}"
    )


if __name__ == "__main__":
    main()
