#!/usr/bin/env python
"""Throughput, memory and accuracy of verification against the population register.

Usage: ``.venv/bin/python -m bench.bench_verify [--people 1000000] [--seed 11]
[--records-per-person 1.0] [--generator synth|alt] [--out bench/out/verify]``

Generates (once, kept under ``--out``) a synthetic population with `lienthong.synth`:
about a million records against a register of about a million people; with
``--generator alt``, with ``bench.altpop`` instead (built apart from `lienthong.synth`,
about two records per person, kept under ``bench/out/verify-alt``), which also gives the
accuracy per kind of wrong number (a relative's, a namesake's, a typo, the old card).
Then, each in a fresh process so that peak memory is its own:

* the baseline: an exact DuckDB join on the CCCD and the raw fields (what a naive
  "cleaning" does, and why it reports false mismatches);
* lienthong's verification with the register normalised from scratch (cold) and again
  with its normalised form read from the cache (warm).

Prints one line per figure: records/s, seconds, peak memory, and the accuracy against
the truth (false mismatch, false accept, suggestion right) for both.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_generator_option, generate_population, machine  # noqa: E402


def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024


# "wanted" is set by the truth, not by the outcome: every record that does not carry its
# own number (none, an old CMND, a malformed one, someone else's) while its person is in the
# register needs the right number suggested, whatever status it was given; a record carrying
# its own number is counted once, as a false mismatch when it is not verified.
ACCURACY_SQL = """
    SELECT
      count(*) FILTER (WHERE c.cccd <> '' AND c.cccd = t.person_id) AS own,
      count(*) FILTER (WHERE c.cccd <> '' AND c.cccd = t.person_id
                         AND r.status NOT IN ('verified', 'corrected')) AS false_mismatch,
      count(*) FILTER (WHERE c.cccd <> '' AND c.cccd <> t.person_id) AS others,
      count(*) FILTER (WHERE c.cccd <> '' AND c.cccd <> t.person_id
                         AND r.status IN ('verified', 'corrected')) AS false_accept,
      count(*) FILTER (WHERE c.cccd <> t.person_id AND g.cccd IS NOT NULL) AS wanted,
      count(*) FILTER (WHERE c.cccd <> t.person_id AND g.cccd IS NOT NULL
                         AND r.cccd_suggested = t.person_id) AS right,
      count(*) FILTER (WHERE r.cccd_suggested IS NOT NULL AND r.cccd_suggested <> t.person_id)
        AS wrong
    FROM report r
    JOIN records c USING (record_id)
    JOIN truth t USING (record_id)
    LEFT JOIN register g ON g.cccd = t.person_id
"""


def _accuracy(con: Any, data: Path) -> dict[str, int]:
    for name in ("records", "truth", "register"):
        con.execute(
            f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM "
            f"read_csv('{data / (name + '.csv')}', all_varchar = true)"
        )
    con.execute("UPDATE records SET cccd = coalesce(cccd, '')")
    # A number that lost its leading zeros (a spreadsheet took it for a number) is still
    # the person's own number: counted with the own numbers, not as somebody else's.
    con.execute(
        "UPDATE records SET cccd = lpad(cccd, 12, '0') "
        "WHERE regexp_full_match(cccd, '[0-9]{10,11}')"
    )
    row = con.execute(ACCURACY_SQL).fetchall()[0]
    keys = ("own", "false_mismatch", "others", "false_accept", "wanted", "right", "wrong")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def baseline(data: Path, queue: Any) -> None:
    """Exact join on the CCCD and the raw name, date and sex: verified when all equal."""
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        f"""
        CREATE TABLE report AS
        WITH r AS (SELECT * FROM read_csv('{data / "records.csv"}', all_varchar = true)),
             g AS (SELECT * FROM read_csv('{data / "register.csv"}', all_varchar = true))
        SELECT r.record_id,
               CASE WHEN coalesce(r.cccd, '') = '' THEN 'missing_id'
                    WHEN g.cccd IS NULL THEN 'not_found'
                    WHEN r.full_name = g.full_name AND r.birth_date = g.birth_date
                         AND r.sex = g.sex THEN 'verified'
                    ELSE 'mismatch' END AS status,
               CAST(NULL AS VARCHAR) AS cccd_suggested
        FROM r LEFT JOIN g ON g.cccd = r.cccd
        """
    )
    seconds = time.perf_counter() - started
    n = con.execute("SELECT count(*) FROM report").fetchall()[0][0]
    queue.put({"records": n, "seconds": seconds, "peak_mb": _peak_mb(), **_accuracy(con, data)})


def lienthong_run(data: Path, cache_home: Path, queue: Any) -> None:
    import os

    os.environ["XDG_CACHE_HOME"] = str(cache_home)
    from lienthong.identity.register import FileRegister
    from lienthong.identity.verify import VerifyEngine

    started = time.perf_counter()
    cpu_started = time.process_time()  # all threads of this process: DuckDB's too
    connector = FileRegister(data / "register.csv")  # hashing the file is part of the cost
    engine = VerifyEngine()
    people = engine.load_register(connector.path, cache=connector.cache_path())
    loaded = time.perf_counter()
    cpu_loaded = time.process_time()
    result = engine.verify(data / "records.csv")
    out = data / "report.csv"
    engine.write_csv(out)
    done = time.perf_counter()
    cpu_done = time.process_time()
    engine.con.execute(
        "CREATE OR REPLACE TABLE report AS SELECT record_id, status, cccd_suggested FROM report"
    )
    queue.put(
        {
            "records": result.records,
            "register": people,
            "load_seconds": loaded - started,
            "verify_seconds": done - loaded,
            "seconds": done - started,
            "cpu_load_seconds": cpu_loaded - cpu_started,
            "cpu_verify_seconds": cpu_done - cpu_loaded,
            "residue": result.residue,
            "by_status": result.by_status,
            "timings": dict(engine.timings),
            "peak_mb": _peak_mb(),
            **_accuracy(engine.con, data),
        }
    )


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.3f} % ({n:,} of {d:,})" if d else "n/a"


def _print_accuracy(name: str, r: dict[str, Any]) -> None:
    print(f"{name} false mismatch: {_pct(r['false_mismatch'], r['own'])}")
    print(f"{name} false accept: {_pct(r['false_accept'], r['others'])}")
    right = _pct(r["right"], r["wanted"])
    print(f"{name} suggestion right (no number of their own, person in the register): {right}")
    print(f"{name} wrong suggestions: {r['wrong']:,}")


NUMBER_KINDS_SQL = """
    WITH n AS (
        SELECT record_id, unnest(string_split(coalesce(noise, ''), ';')) AS kind
        FROM read_csv('{noise}', all_varchar = true)
    )
    SELECT n.kind, count(*) AS records,
           count(*) FILTER (WHERE r.status IN ('verified', 'corrected')) AS accepted,
           count(*) FILTER (WHERE r.cccd_suggested = t.person_id) AS suggested_right
    FROM n
    JOIN read_csv('{report}', all_varchar = true) r USING (record_id)
    JOIN read_csv('{truth}', all_varchar = true) t USING (record_id)
    WHERE n.kind = 'child_on_parent_id' OR n.kind LIKE 'other_id_%' OR n.kind LIKE 'id_%'
       OR n.kind = 'cmnd'
    GROUP BY n.kind ORDER BY n.kind
"""


OWN_REFUSED_SQL = """
    WITH kinds AS (
        SELECT record_id, unnest(string_split(coalesce(noise, ''), ';')) AS kind
        FROM read_csv('{noise}', all_varchar = true)
    ),
    own AS (
        SELECT record_id, r.status NOT IN ('verified', 'corrected') AS refused
        FROM read_csv('{report}', all_varchar = true) r
        JOIN read_csv('{records}', all_varchar = true) c USING (record_id)
        JOIN read_csv('{truth}', all_varchar = true) t USING (record_id)
        WHERE c.cccd = t.person_id
    )
    SELECT kind, count(*), count(*) FILTER (WHERE refused)
    FROM kinds JOIN own USING (record_id) WHERE kind <> ''
    GROUP BY kind HAVING count(*) FILTER (WHERE refused) > 0
    ORDER BY count(*) FILTER (WHERE refused) DESC, kind
"""


def _print_own_refused(data: Path) -> None:
    """False mismatches (own number, not accepted) per noise kind (alt generator)."""
    import duckdb

    sql = OWN_REFUSED_SQL.format(
        noise=data / "noise.csv",
        report=data / "report.csv",
        records=data / "records.csv",
        truth=data / "truth.csv",
    )
    for kind, n, refused in duckdb.sql(sql).fetchall():
        print(f"lienthong own number not accepted, records with {kind}: {_pct(refused, n)}")


def _print_number_kinds(data: Path) -> None:
    """Accepted and rightly suggested records per kind of wrong number (alt generator)."""
    import duckdb

    rows = duckdb.sql(
        NUMBER_KINDS_SQL.format(
            noise=data / "noise.csv", report=data / "report.csv", truth=data / "truth.csv"
        )
    ).fetchall()
    for kind, n, accepted, right in rows:
        print(
            f"lienthong records with {kind}: {n:,}; accepted {_pct(accepted, n)}; "
            f"suggestion right {_pct(right, n)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--records-per-person", type=float, default=None, help="synth only (default 1.0)"
    )
    add_generator_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/verify[-alt]")
    args = parser.parse_args()
    alt = args.generator == "alt"
    if alt and args.records_per_person is not None:
        parser.error("--records-per-person: applies to --generator synth only")
    rpp = 1.0 if args.records_per_person is None else args.records_per_person
    if args.out is None:
        args.out = ROOT / "bench" / "out" / ("verify-alt" if alt else "verify")
    data = args.out / (f"alt-p{args.people}-s{args.seed}" if alt else
                       f"p{args.people}-s{args.seed}-r{rpp}")  # fmt: skip
    if not (data / "truth.csv").exists():
        print(f"generating {args.people:,} people into {data} ...", flush=True)
        kw = {} if alt else {"records_per_person": rpp}
        generate_population(args.generator, args.people, args.seed, data, **kw)
    print(f"machine: {machine()}; load average before: {os.getloadavg()}")
    if alt:
        print("generator: alt (bench.altpop)")
    base = _in_child(baseline, data)
    print(f"baseline (exact DuckDB join) records/s: {base['records'] / base['seconds']:,.0f}")
    print(f"baseline seconds: {base['seconds']:.1f}")
    print(f"baseline peak memory: {base['peak_mb']:,.0f} MB")
    _print_accuracy("baseline", base)
    with tempfile.TemporaryDirectory(prefix="bench-verify-cache-") as cache:
        for label in ("cold", "warm"):
            r = _in_child(lienthong_run, data, Path(cache))
            print(
                f"lienthong ({label} register) records/s: {r['records'] / r['verify_seconds']:,.0f}"
                f" verifying, {r['records'] / r['seconds']:,.0f} with the register load"
            )
            print(
                f"lienthong ({label}) register of {r['register']:,} people loaded in "
                f"{r['load_seconds']:.1f} s; {r['records']:,} records verified in "
                f"{r['verify_seconds']:.1f} s (residue {r['residue']:,})"
            )
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in r["timings"].items())
            print(f"lienthong ({label}) steps: {steps}")
            print(
                f"lienthong ({label}) CPU seconds (all threads): register "
                f"{r['cpu_load_seconds']:.1f}, verifying {r['cpu_verify_seconds']:.1f} = "
                f"{r['records'] / r['cpu_verify_seconds']:,.0f} records per CPU-second"
            )
            print(f"lienthong ({label}) peak memory: {r['peak_mb']:,.0f} MB")
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(r["by_status"].items()))
    print(f"lienthong statuses: {counts}")
    _print_accuracy("lienthong", r)
    if alt:
        _print_number_kinds(data)
        _print_own_refused(data)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
