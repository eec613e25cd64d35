"""A local population-register service for the tests, speaking the protocol of
``docs/register-service.md`` over real HTTP (uvicorn on a free port, in a thread).

It fails on demand, as remote services do: `fail_next` queues answers for the next calls
(an HTTP status, with an optional Retry-After, or "slow" to exceed the client's timeout),
and `down_after` makes it answer 503 to every call after that many successful ones, until
`recover` - a service that dies in the middle of a run.
"""

from __future__ import annotations

import csv
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lienthong.identity.normalize import name_key, parse_date, split_name
from lienthong.identity.verify import place_readings
from tests.pg_server import free_port

MAX_BATCH = 1000


@dataclass
class RegisterService:
    """In-memory register plus the failure plan; `url` once started."""

    rows: list[dict[str, str]]
    version: str = "test-register-2026-11"
    token: str | None = None
    url: str = ""
    calls: int = 0
    served: int = 0
    planned: list[tuple[int | str, float | None]] = field(default_factory=list)
    down_after_calls: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.blocks: dict[tuple[object, ...], list[str]] = defaultdict(list)
        names: Counter[str] = Counter()
        family_given: Counter[tuple[str, str]] = Counter()
        for r in self.rows:
            for key in _keys(r["full_name"], r["birth_date"]) + _place_keys(r):
                self.blocks[key].append(r["cccd"])
            names[_words(r["full_name"])] += 1
            family_given[_family_given(r["full_name"])] += 1
        # each person with the register's name counts (the same words; family + given)
        self.by_cccd: dict[str, dict[str, Any]] = {
            r["cccd"]: {
                **r,
                "name_count": names[_words(r["full_name"])],
                "family_given_count": family_given[_family_given(r["full_name"])],
            }
            for r in self.rows
        }

    # -- failure plan -------------------------------------------------------------
    def fail_next(self, *answers: int | str, retry_after: float | None = None) -> None:
        with self.lock:
            self.planned.extend((a, retry_after) for a in answers)

    def down_after(self, successful_calls: int) -> None:
        with self.lock:
            self.down_after_calls = self.served + successful_calls

    def recover(self) -> None:
        with self.lock:
            self.down_after_calls = None
            self.planned.clear()

    # -- answers ------------------------------------------------------------------
    def lookup(self, numbers: list[str]) -> list[dict[str, Any]]:
        return [self.by_cccd[n] for n in numbers if n in self.by_cccd]

    def search(self, queries: list[dict[str, str]]) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for q in queries:
            keys = _keys(q.get("full_name", ""), q.get("birth_date", ""), query=True)
            keys += _place_keys(q)
            for key in keys:
                for n in self.blocks.get(key, ()):
                    found[n] = self.by_cccd[n]
            number = (q.get("cccd") or "").strip()
            for near in _one_keystroke(number):
                if near in self.by_cccd:
                    found[near] = self.by_cccd[near]
        return list(found.values())


def _words(full_name: str) -> str:
    return " ".join(sorted(name_key(full_name).split()))


def _family_given(full_name: str) -> tuple[str, str]:
    parts = split_name(full_name)
    return name_key(parts.family), name_key(parts.given)


def _keys(full_name: str, birth_date: str, query: bool = False) -> list[tuple[object, ...]]:
    """Blocks a person is found by: family + given + year (a query with a year alone or
    1 January: also one year off, and given + year), given + date, family + date, the
    same words + year, the same words + date with the year one off."""
    fam, giv = _family_given(full_name)
    words = _words(full_name)
    try:
        d = parse_date(birth_date)
    except ValueError:
        return [("words", words)]
    keys: list[tuple[object, ...]] = [("fgy", fam, giv, d.year), ("wy", words, d.year)]
    vague = d.month is None or (d.month == 1 and d.day == 1)
    if query and vague:
        keys += [("fgy", fam, giv, d.year + k) for k in (-1, 1)] + [("gy", giv, d.year)]
    elif not query:
        keys.append(("gy", giv, d.year))
    if d.day is not None:
        keys += [("gd", giv, d.year, d.month, d.day), ("fd", fam, d.year, d.month, d.day)]
        years = (d.year - 1, d.year + 1) if query else (d.year,)
        keys += [("wd", words, y, d.month, d.day) for y in years]
    return keys


def _place_keys(q: dict[str, str]) -> list[tuple[object, ...]]:
    """The full birth date and the commune, the codes read as current or pre-2025 ones
    (a register's own entries are current)."""
    try:
        d = parse_date(q.get("birth_date", ""))
    except ValueError:
        return []
    if d.day is None:
        return []
    communes, _ = place_readings()
    pair = ((q.get("province_code") or "").strip(), (q.get("commune_code") or "").strip())
    return [("dc", d.year, d.month, d.day, c) for c in communes.get(pair, ())]


def _one_keystroke(number: str) -> Iterator[str]:
    if len(number) != 12 or not number.isdigit():
        return
    for i in range(12):
        for digit in "0123456789":
            if digit != number[i]:
                yield number[:i] + digit + number[i + 1 :]
    for i in range(11):
        if number[i] != number[i + 1]:
            yield number[:i] + number[i + 1] + number[i] + number[i + 2 :]


def create_app(service: RegisterService) -> FastAPI:
    app = FastAPI()

    async def planned_failure(request: Request) -> JSONResponse | None:
        with service.lock:
            service.calls += 1
            if service.token and request.headers.get("authorization") != f"Bearer {service.token}":
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            if service.planned:
                answer, retry_after = service.planned.pop(0)
            elif (
                service.down_after_calls is not None and service.served >= service.down_after_calls
            ):
                answer, retry_after = 503, None
            else:
                service.served += 1
                return None
        if answer == "slow":
            import asyncio

            await asyncio.sleep(2.0)
            return JSONResponse({"error": "too late"}, status_code=504)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return JSONResponse({"error": "planned failure"}, status_code=int(answer), headers=headers)

    @app.post("/persons/lookup")
    async def lookup(request: Request) -> JSONResponse:
        failed = await planned_failure(request)
        if failed is not None:
            return failed
        body: dict[str, Any] = await request.json()
        numbers = body.get("cccd")
        if not isinstance(numbers, list) or len(numbers) > MAX_BATCH:
            return JSONResponse({"error": f"cccd: a list of at most {MAX_BATCH}"}, 400)
        return JSONResponse(
            {
                "register_version": service.version,
                "register_size": len(service.rows),
                "persons": service.lookup(numbers),
            }
        )

    @app.post("/persons/search")
    async def search(request: Request) -> JSONResponse:
        failed = await planned_failure(request)
        if failed is not None:
            return failed
        body: dict[str, Any] = await request.json()
        queries = body.get("queries")
        if not isinstance(queries, list) or len(queries) > MAX_BATCH:
            return JSONResponse({"error": f"queries: a list of at most {MAX_BATCH}"}, 400)
        return JSONResponse(
            {
                "register_version": service.version,
                "register_size": len(service.rows),
                "persons": service.search(queries),
            }
        )

    return app


def read_register(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@contextmanager
def running(service: RegisterService) -> Iterator[RegisterService]:
    """Serve `service` on a free local port for the duration of the block."""
    port = free_port()
    config = uvicorn.Config(
        create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the register service did not start")
        time.sleep(0.05)
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        server.should_exit = True
        thread.join(timeout=10)
