"""Fuzz the FHIR API for longer than the test suite does: the strategies of
``tests/fuzz_shapes.py`` (grammar-grown and mutated Synthea resources, searches, bundles,
raw bodies), in-process (TestClient) on SQLite, and optionally through a real server.

Prints one line per figure: cases run per kind, 5xx answers, 4xx without an
OperationOutcome, cases per second, and whether the real server still answered. Exits 1
when any 5xx was seen, printing the first few requests that caused one.

    .venv/bin/python -m bench.bench_fuzz --cases 50000 [--live 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from tests.fuzz_shapes import Request, bundle_request, raw_request, read_request, write_request
from tests.live_server import live_server
from tests.test_fuzz import QUIET, seeded_client

from bench.common import machine

KINDS: dict[str, Any] = {
    "writes": write_request(),
    "reads": read_request(),
    "bundles": bundle_request(),
    "raw": raw_request(),
}


def run(send: Any, strategy: st.SearchStrategy[Request], cases: int, rng: int) -> Counter[str]:
    """Send ``cases`` drawn requests; count what came back (no shrinking: every case counts)."""
    seen: Counter[str] = Counter()

    @seed(rng)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(req=strategy)
    def one(req: Request) -> None:
        status, ctype, body = send(req)
        seen["cases"] += 1
        if status >= 500:
            seen["5xx"] += 1
            if seen["5xx"] <= 5:
                print(f"5xx {status}: {req!r} -> {body[:300]!r}")
        elif (
            status >= 400
            and req.url.startswith("/fhir")
            and (not ctype.startswith("application/fhir+json") or b"OperationOutcome" not in body)
        ):
            seen["4xx without OperationOutcome"] += 1

    one()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000, help="in-process cases in all")
    parser.add_argument("--live", type=int, default=0, help="cases through a real server")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    print(f"machine: {machine()}; seed {args.seed}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        client = seeded_client(f"sqlite:///{Path(tmp) / 'fuzz.db'}")

        def in_process(req: Request) -> tuple[int, str, bytes]:
            r = client.request(req.method, req.url, headers=req.headers, content=req.body)
            return r.status_code, r.headers.get("content-type", ""), r.content

        for name, strategy in KINDS.items():
            started = time.perf_counter()
            seen = run(in_process, strategy, args.cases // len(KINDS), args.seed)
            elapsed = time.perf_counter() - started
            print(f"in-process {name}: {seen['cases']} cases, {seen['cases'] / elapsed:.0f}/s")
            print(f"in-process {name} 5xx: {seen['5xx']}")
            print(
                f"in-process {name} 4xx without OperationOutcome: "
                f"{seen['4xx without OperationOutcome']}"
            )
            failed |= seen["5xx"] > 0
        client.__exit__(None, None, None)
        if args.live:
            env = {"LIENTHONG_DATABASE_URL": f"sqlite:///{Path(tmp) / 'live.db'}"}
            env.update({"LIENTHONG_AUTH": "off", **QUIET})
            with live_server(env) as server, httpx.Client(base_url=server.root, timeout=120) as h:

                def over_http(req: Request) -> tuple[int, str, bytes]:
                    r = h.request(req.method, req.url, headers=req.headers, content=req.body)
                    return r.status_code, r.headers.get("content-type", ""), r.content

                started = time.perf_counter()
                strategy = st.one_of(*KINDS.values())
                seen = run(over_http, strategy, args.live, args.seed)
                elapsed = time.perf_counter() - started
                alive = h.get("/fhir/metadata").status_code == 200
            print(f"real server: {seen['cases']} cases, {seen['cases'] / elapsed:.0f}/s")
            print(f"real server 5xx: {seen['5xx']}")
            print(f"real server still answering: {'yes' if alive else 'NO'}")
            failed |= seen["5xx"] > 0 or not alive
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
