"""Load on the real server: closed-loop clients and a fixed arrival rate, mixed requests.

The mix, drawn with a fixed seed: 50 % reads (``GET Patient/{id}``), 30 % searches
(``Patient?family=&birthdate=``, ``Observation?subject=``), 20 % small transactions
(a new Patient - a different person each time - and one Observation referring to it).
The server is ``lienthong serve`` in a subprocess on a fresh SQLite file (or the
PostgreSQL database given with ``--database``), seeded with 300 Patients first.

Figures, one line each:

* closed loop with 1, 8 and 32 clients (each sends its next request when the last one
  answered): requests/s, p50, p99 and the longest wait;
* a stall probe: small reads while one large transaction (``--slow-entries`` Patients)
  is processed, against the same reads alone;
* open loop at a fixed arrival rate of ``--load`` (70 %) of the best closed-loop
  throughput: requests start on schedule whether or not earlier ones have answered, and
  each latency is counted from its scheduled start (no coordinated omission); p50/p99
  against the idle p99 (the 1-client run's).

``--minutes M`` runs the open-loop phase for M minutes (a soak); ``--seconds`` sets the
length of each closed-loop phase. The client is one asyncio process with httpx.

Usage: python -m bench.bench_load [--workers 2] [--seconds 30] [--minutes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from tests.pg_server import free_port

from bench.common import machine, percentile
from lienthong.synth.names import GIVEN_FEMALE, GIVEN_MALE, MIDDLE_MALE_OLDER, SURNAMES

FHIR = {"Content-Type": "application/fhir+json"}
SEED_PATIENTS = 300


def _pick(rng: random.Random, table: dict[str, float]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


def person(rng: random.Random) -> dict[str, Any]:
    """A Patient with a name drawn from the Vietnamese tables, a birth date and a commune."""
    male = rng.random() < 0.5
    given = _pick(rng, GIVEN_MALE if male else GIVEN_FEMALE)
    middle = _pick(rng, MIDDLE_MALE_OLDER) if male else "Thị"
    return {
        "resourceType": "Patient",
        "name": [{"family": _pick(rng, SURNAMES), "given": [middle, given]}],
        "gender": "male" if male else "female",
        "birthDate": f"{rng.randint(1940, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "telecom": [{"system": "phone", "value": f"09{rng.randint(10_000_000, 99_999_999)}"}],
        "address": [{"state": "01", "city": f"{rng.randint(1, 400):05d}"}],
    }


def transaction(rng: random.Random, patients: int = 1) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for i in range(patients):
        url = f"urn:uuid:{rng.getrandbits(128):032x}"
        entries.append(
            {
                "fullUrl": url,
                "resource": person(rng),
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        if i == 0:
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": url},
                        "effectiveDateTime": "2025-03-01T08:30:00+07:00",
                        "valueQuantity": {"value": rng.randint(50, 120), "unit": "/min"},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@dataclass
class World:
    """What the seeded store holds, for the mix to draw from."""

    ids: list[str]
    people: list[dict[str, Any]]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0

    def add(self, kind: str, seconds: float, ok: bool) -> None:
        self.latencies.append(seconds)
        self.by_kind[kind].append(seconds)
        self.errors += not ok

    def line(self) -> str:
        ms = [v * 1000 for v in self.latencies]
        kinds = ", ".join(
            f"{k} p99 {percentile([v * 1000 for v in vs], 99):.0f} ms"
            for k, vs in sorted(self.by_kind.items())
        )
        return (
            f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
            f"max {max(ms):.0f} ms, {self.errors} errors ({kinds})"
        )


def next_request(rng: random.Random, world: World) -> tuple[str, str, str, Any]:
    """(kind, method, url, body) of the mix's next request."""
    roll = rng.random()
    if roll < 0.5:
        return "read", "GET", f"/fhir/Patient/{rng.choice(world.ids)}", None
    if roll < 0.65:
        p = rng.choice(world.people)
        query = f"family={p['name'][0]['family']}&birthdate={p['birthDate']}"
        return "search", "GET", f"/fhir/Patient?{query}", None
    if roll < 0.8:
        return "search", "GET", f"/fhir/Observation?subject=Patient/{rng.choice(world.ids)}", None
    return "transaction", "POST", "/fhir", transaction(rng)


async def send(client: httpx.AsyncClient, method: str, url: str, body: Any) -> bool:
    try:
        r = await client.request(method, url, json=body, headers=FHIR if body else None)
    except httpx.HTTPError:
        return False
    return r.status_code < 400


async def closed_loop(base: str, world: World, clients: int, seconds: float) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        stop = time.perf_counter() + seconds

        async def one(n: int) -> None:
            rng = random.Random(1000 + n)
            while time.perf_counter() < stop:
                kind, method, url, body = next_request(rng, world)
                t = time.perf_counter()
                ok = await send(client, method, url, body)
                tally.add(kind, time.perf_counter() - t, ok)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(clients)))
        tally_seconds = time.perf_counter() - started
    tally.by_kind["_seconds"] = [tally_seconds]
    return tally


async def open_loop(base: str, world: World, rate: float, seconds: float) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        tasks: set[asyncio.Task[None]] = set()

        async def one(scheduled: float, kind: str, method: str, url: str, body: Any) -> None:
            ok = await send(client, method, url, body)
            tally.add(kind, time.perf_counter() - scheduled, ok)

        start = time.perf_counter() + 0.1
        n = int(rate * seconds)
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) > 2000:
                raise SystemExit(
                    f"over 2,000 requests outstanding after {i}: the server fell behind"
                )
            task = asyncio.create_task(one(scheduled, *next_request(rng, world)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*list(tasks))
    return tally


async def stall_probe(base: str, world: World, entries: int) -> tuple[Tally, Tally, float]:
    """The mix from one client alone, then the same while one large transaction runs."""
    rng = random.Random(3)
    big = transaction(rng, entries)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def mix(tally: Tally, until: asyncio.Future[Any] | None, n: int) -> None:
            for _ in range(n):
                if until is not None and until.done():
                    return
                kind, method, url, body = next_request(rng, world)
                t = time.perf_counter()
                ok = await send(client, method, url, body)
                tally.add(kind, time.perf_counter() - t, ok)
                await asyncio.sleep(0.02)

        alone = Tally()
        await mix(alone, None, 200)
        during = Tally()
        t = time.perf_counter()
        slow = asyncio.ensure_future(send(client, "POST", "/fhir", big))
        await asyncio.sleep(0.2)  # the large body is in
        await mix(during, slow, 100_000)
        if not await slow:
            raise SystemExit("the large transaction failed")
        return alone, during, time.perf_counter() - t


@contextmanager
def server(database: str | None, workers: int, tmp: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "LIENTHONG_DATABASE_URL": database or f"sqlite:///{tmp}/load.db",
        "LIENTHONG_AUTH": "off",
    }
    cmd = [sys.executable, "-m", "lienthong.cli", "serve", "--port", str(port)]
    if workers != 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/fhir/metadata").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def seed(base: str) -> World:
    rng = random.Random(42)
    ids: list[str] = []
    people: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(SEED_PATIENTS // 30):
            bundle = transaction(rng, 30)
            r = client.post("/fhir", json=bundle, headers=FHIR)
            r.raise_for_status()
            for entry, got in zip(bundle["entry"], r.json()["entry"], strict=True):
                where = got["response"]["location"]
                if where.startswith("Patient/"):
                    ids.append(where.split("/")[1])
                    people.append(entry["resource"])
    return World(ids, people)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    ap.add_argument("--database", help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--clients", default="1,8,32", help="closed-loop client counts")
    ap.add_argument("--seconds", type=float, default=30, help="length of each closed-loop phase")
    ap.add_argument(
        "--minutes", type=float, help="length of the open-loop phase (default: --seconds)"
    )
    ap.add_argument("--load", type=float, default=0.7, help="open-loop rate, share of capacity")
    ap.add_argument("--rate", type=float, help="open-loop rate in requests/s (default: --load)")
    ap.add_argument("--slow-entries", type=int, default=2000, help="Patients in the stall probe")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, server(args.database, args.workers, tmp) as base:
        world = seed(base)
        db = "PostgreSQL" if args.database else "SQLite"
        print(f"machine: {machine()}; lienthong serve --workers {args.workers}, {db}, auth off")
        best, idle_p99 = 0.0, None
        for clients in (int(c) for c in args.clients.split(",")):
            tally = asyncio.run(closed_loop(base, world, clients, args.seconds))
            seconds = tally.by_kind.pop("_seconds")[0]
            rps = len(tally.latencies) / seconds
            best = max(best, rps)
            if idle_p99 is None:
                idle_p99 = percentile(tally.latencies, 99)
            print(f"closed loop, {clients} clients: {rps:,.1f} requests/s, {tally.line()}")
        alone, during, took = asyncio.run(stall_probe(base, world, args.slow_entries))
        print(
            f"stall probe: the mix alone {alone.line()}; the mix during a "
            f"{args.slow_entries}-Patient transaction ({took:.1f} s) {during.line()}"
        )
        rate = args.rate or args.load * best
        seconds = args.minutes * 60 if args.minutes else args.seconds
        tally = asyncio.run(open_loop(base, world, rate, seconds))
        p99 = percentile(tally.latencies, 99)
        ratio = (
            f", {p99 / idle_p99:.1f} x the idle p99 {idle_p99 * 1000:.1f} ms" if idle_p99 else ""
        )
        print(
            f"open loop at {rate:,.1f} requests/s ({rate / best:.0%} of {best:,.1f}) for "
            f"{seconds:.0f} s: {tally.line()}{ratio}"
        )


if __name__ == "__main__":
    main()
