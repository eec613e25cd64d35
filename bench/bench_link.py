#!/usr/bin/env python
"""Record linkage at scale: `lienthong link` with the shipped model against plain Splink.

Usage: ``.venv/bin/python -m bench.bench_link [--people 500000] [--seed 0]
[--generator synth|alt] [--out DIR]``

Generates a synthetic population (``--generator synth``: ``lienthong.synth``, about two
records per person, so 500,000 people give about 1,000,000 records; ``alt``:
``bench.altpop``, built apart from it so that the shipped model meets data it was not
tuned on) into ``bench/out/link`` (``link-alt``) unless it is already there, then in the
same run:

1. ``lienthong link RECORDS --out PERSONS`` as a subprocess, with the shipped model (no
   training): wall time, peak memory (largest process: the command or one of its
   normalisation workers), pairwise precision, recall and F1 against ``truth.csv``;
2. the baseline: a plain Splink model on DuckDB with generic comparisons on the raw
   columns (``NameComparison`` on the full name, ``DateOfBirthComparison``, exact matches
   on identifiers, phone and commune), no Vietnamese normalisation, trained the usual way
   on the same file (prior from identifier rules, u by random sampling, m by EM),
   clustered by Splink at the same 0.95 threshold.

Pairwise figures are counted per (cluster, true person) group in DuckDB, never by
listing pairs. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from bench.common import ROOT, add_generator_option, generate_population, machine

THRESHOLD = 0.95


def _population(people: int, seed: int, out: Path, generator: str = "synth") -> Path:
    marker = out / "population.json"
    wanted: dict[str, object] = {"people": people, "seed": seed}
    if generator != "synth":
        wanted["generator"] = generator
    if not (marker.exists() and json.loads(marker.read_text()) == wanted):
        started = time.perf_counter()
        records = generate_population(generator, people, seed, out).records
        marker.write_text(json.dumps(wanted))
        label = "" if generator == "synth" else f" ({generator})"
        print(f"generated{label}: {records:,} records of {people:,} people in "
              f"{time.perf_counter() - started:.0f} s -> {out}")  # fmt: skip
    return out / "records.csv"


def pairwise(con: duckdb.DuckDBPyConnection, persons: str, truth: Path) -> tuple[float, ...]:
    """Pairwise precision, recall and F1 of `persons` (a table or query with record_id,
    person_id) against truth.csv; a group of k records holds k(k-1)/2 pairs."""
    row = con.sql(
        f"""
        WITH p AS (SELECT record_id, person_id FROM {persons}),
        t AS (SELECT record_id, person_id AS true_id
              FROM read_csv('{truth}', all_varchar = true)),
        j AS (SELECT p.person_id, t.true_id FROM p JOIN t USING (record_id)),
        pairs AS (SELECT count(*) AS k FROM j GROUP BY person_id, true_id)
        SELECT
            (SELECT sum(k * (k - 1) / 2) FROM pairs),
            (SELECT sum(k * (k - 1) / 2) FROM (SELECT count(*) AS k FROM j GROUP BY person_id)),
            (SELECT sum(k * (k - 1) / 2) FROM (SELECT count(*) AS k FROM j GROUP BY true_id))
        """
    ).fetchall()[0]
    tp, predicted, true = (float(x or 0) for x in row)
    precision = tp / predicted if predicted else 0.0
    recall = tp / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


NOISE_SQL = """
    WITH j AS (
        SELECT record_id, p.person_id AS cluster, t.person_id AS person
        FROM {persons} p JOIN read_csv('{truth}', all_varchar = true) t USING (record_id)
    ),
    main_cluster AS (
        SELECT person, arg_max(cluster, n) AS main, sum(n) AS k
        FROM (SELECT person, cluster, count(*) AS n FROM j GROUP BY ALL) GROUP BY person
    ),
    main_person AS (
        SELECT cluster, arg_max(person, n) AS main
        FROM (SELECT cluster, person, count(*) AS n FROM j GROUP BY ALL) GROUP BY cluster
    ),
    flags AS (
        SELECT record_id, (c.k > 1 AND j.cluster <> c.main) AS split, j.person <> m.main AS merged
        FROM j JOIN main_cluster c USING (person) JOIN main_person m USING (cluster)
    ),
    kinds AS (
        SELECT record_id, unnest(string_split(coalesce(noise, ''), ';')) AS kind
        FROM read_csv('{noise}', all_varchar = true)
    )
    SELECT kind, count(*), count(*) FILTER (WHERE split), count(*) FILTER (WHERE merged)
    FROM (SELECT record_id, kind FROM kinds WHERE kind <> ''
          UNION ALL SELECT record_id, '(all records)' FROM flags)
    JOIN flags USING (record_id)
    GROUP BY kind ORDER BY count(*) FILTER (WHERE split) DESC, kind
"""


def by_noise(
    con: duckdb.DuckDBPyConnection, persons: str, truth: Path, noise: Path
) -> list[tuple[str, int, int, int]]:
    """Per noise kind (``noise.csv`` of ``bench.altpop``): records, records split off from
    the cluster holding most of their person's records, records in a cluster that mostly
    holds another person."""
    sql = NOISE_SQL.format(persons=persons, truth=truth, noise=noise)
    return [(str(k), int(n), int(s), int(m)) for k, n, s, m in con.sql(sql).fetchall()]


def _peak_mb(who: int) -> float:
    peak = resource.getrusage(who).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


def run_lienthong(records: Path, out: Path) -> tuple[float, str]:
    persons = out / "persons.csv"
    cli = Path(sys.executable).with_name("lienthong")
    command = [str(cli), "link", str(records), "--out", str(persons)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lienthong link failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def run_baseline(records: Path) -> tuple[float, duckdb.DuckDBPyConnection, str]:
    """Plain Splink: generic comparisons on raw columns, trained on the file itself."""
    import logging

    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE TABLE raw AS SELECT * FROM read_csv('{records}', all_varchar = true)")
    db = DuckDBAPI(connection=con)
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        comparisons=[
            cl.NameComparison("full_name"),
            cl.DateOfBirthComparison(
                "birth_date", input_is_string=True, datetime_format="%Y-%m-%d"
            ),
            cl.ExactMatch("sex"),
            cl.ExactMatch("cccd"),
            cl.ExactMatch("bhxh"),
            cl.ExactMatch("phone"),
            cl.ExactMatch("commune_code"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("full_name", "birth_date"),
            block_on("full_name", "commune_code"),
            block_on("birth_date", "commune_code"),
            block_on("cccd"),
            block_on("bhxh"),
            block_on("phone"),
        ],
    )
    linker = Linker(db.register("raw"), settings, log_level=None)
    training = linker.training
    training.estimate_probability_two_random_records_match(
        [block_on("cccd"), block_on("bhxh")], recall=0.5
    )
    training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
    training.estimate_parameters_using_expectation_maximisation(block_on("cccd"))
    training.estimate_parameters_using_expectation_maximisation(
        block_on("full_name", "commune_code")
    )
    predictions = linker.inference.predict(threshold_match_probability=THRESHOLD)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=THRESHOLD
    )
    con.execute(
        "CREATE TABLE baseline_persons AS SELECT record_id, cluster_id AS person_id "
        f"FROM {clusters.physical_name}"
    )
    return time.perf_counter() - started, con, str(predictions.physical_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    add_generator_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/link[-alt]")
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.generator == "synth" else f"-{args.generator}"
        args.out = ROOT / "bench" / "out" / f"link{suffix}"
    args.out.mkdir(parents=True, exist_ok=True)
    records = _population(args.people, args.seed, args.out, args.generator)
    truth = args.out / "truth.csv"
    n = duckdb.sql(f"SELECT count(*) FROM read_csv('{records}', all_varchar = true)")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    if args.generator != "synth":
        print(f"generator: {args.generator}")
    print(f"records: {n.fetchall()[0][0]:,}")

    seconds, summary = run_lienthong(records, args.out)
    peak = _peak_mb(resource.RUSAGE_CHILDREN)
    con = duckdb.connect()
    persons = f"read_csv('{args.out / 'persons.csv'}', all_varchar = true)"
    precision, recall, f1 = pairwise(con, persons, truth)
    for line in summary.strip().splitlines():
        print(f"lienthong link | {line}")
    print(f"lienthong link wall time: {seconds:.1f} s")
    print(f"lienthong link peak memory: {peak:,.0f} MB")
    print(f"lienthong link precision: {precision:.4f}")
    print(f"lienthong link recall: {recall:.4f}")
    print(f"lienthong link F1: {f1:.4f}")
    print(f"load average after lienthong link: {os.getloadavg()[0]:.1f}")
    noise = args.out / "noise.csv"
    if args.generator != "synth" and noise.exists():
        for kind, n, split, merged in by_noise(con, persons, truth, noise):
            print(
                f"lienthong link by noise | {kind}: {n:,} records, split off "
                f"{100 * split / n:.2f} %, merged with another person {100 * merged / n:.2f} %"
            )

    seconds, base_con, _ = run_baseline(records)
    precision, recall, f1 = pairwise(base_con, "baseline_persons", truth)
    print(f"baseline (plain Splink) wall time, training included: {seconds:.1f} s")
    print(f"baseline peak memory (this process): {_peak_mb(resource.RUSAGE_SELF):,.0f} MB")
    print(f"baseline precision: {precision:.4f}")
    print(f"baseline recall: {recall:.4f}")
    print(f"baseline F1: {f1:.4f}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
