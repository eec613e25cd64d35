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
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lienthong.identity.normalize import name_key, parse_date, split_name
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
        self.by_cccd = {r["cccd"]: r for r in self.rows}
        self.blocks: dict[tuple[object, ...], list[str]] = defaultdict(list)
        for r in self.rows:
            for key in _keys(r["full_name"], r["birth_date"]):
                self.blocks[key].append(r["cccd"])

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
    def lookup(self, numbers: list[str]) -> list[dict[str, str]]:
        return [self.by_cccd[n] for n in numbers if n in self.by_cccd]

    def search(self, queries: list[dict[str, str]]) -> list[dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for q in queries:
            for key in _keys(q.get("full_name", ""), q.get("birth_date", "")):
                for n in self.blocks.get(key, ()):
                    found[n] = self.by_cccd[n]
            number = (q.get("cccd") or "").strip()
            for near in _one_keystroke(number):
                if near in self.by_cccd:
                    found[near] = self.by_cccd[near]
        return list(found.values())


def _keys(full_name: str, birth_date: str) -> list[tuple[object, ...]]:
    """Blocks a person is found by: family + given + year, given + date, family + date,
    the same words + year."""
    parts = split_name(full_name)
    fam, giv = name_key(parts.family), name_key(parts.given)
    words = " ".join(sorted(name_key(full_name).split()))
    try:
        d = parse_date(birth_date)
    except ValueError:
        return [("words", words)]
    keys: list[tuple[object, ...]] = [("fgy", fam, giv, d.year), ("wy", words, d.year)]
    if d.day is not None:
        keys += [("gd", giv, d.year, d.month, d.day), ("fd", fam, d.year, d.month, d.day)]
        if d.month is not None and d.day <= 12:
            keys.append(("fgy", fam, giv, d.year))  # day/month swap stays in the year block
    return keys


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
            {"register_version": service.version, "persons": service.lookup(numbers)}
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
            {"register_version": service.version, "persons": service.search(queries)}
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
