"""Crash drills: kill lienthong with SIGKILL at a random moment, then check what is left.

Targets (``--target``):

- ``import``: ``lienthong import`` of a folder of transaction Bundle files;
- ``xml130``: ``lienthong xml130 ingest`` of synthetic XML 130 exports;
- ``server``: ``lienthong serve`` receiving transaction Bundles from a few concurrent
  clients, each 2xx answer noted with the ids the server returned;
- ``backup``: not a crash: ``lienthong backup`` while clients post to the server, then
  ``lienthong restore`` into an empty database.

After each kill: every SQLite file passes ``PRAGMA integrity_check`` (on PostgreSQL the
store and the audit log open), no bundle is partly stored (every resource of a bundle
carries the bundle's marker identifier, so a bundle's resources are counted: all or
none), every acknowledged write is present (import: the bundles the import ledger holds;
XML 130: the visits of the files the ledger holds; server: every id a 2xx answer
returned), no stored reference points at nothing, the audit chain verifies (server), and
running the same input again completes with exact counts (import and ingest: the same
command; server: the clients send every bundle again, as conditional creates).

Usage: python -m bench.drill_crash [--cycles 100] [--backend sqlite|postgresql]
       [--target import|xml130|server|backup|all] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pg_server import PostgresServer, find_bindir, free_port  # noqa: E402

MARK = "urn:lienthong:drill:bundle"  # every resource of a bundle: the bundle's marker
PART = "urn:lienthong:drill:part"  # each resource's own identifier (conditional creates)
AUDIT_KEY = "drill-audit-key"
OBS_PER_BUNDLE = 4
XML_SYSTEM = re.compile(r"/sid/xml130/([^/]+)/(record|ma-lk)$")
REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


# -- figures ------------------------------------------------------------------------


@dataclass
class Tally:
    """What the cycles of one target found; `problems` says what, cycle by cycle."""

    target: str
    backend: str
    cycles: int = 0
    killed_mid: int = 0  # the kill left some units in and not all
    acknowledged: int = 0  # acknowledged units over all cycles (bundles, visits, answers)
    lost: int = 0
    partial: int = 0
    integrity: int = 0
    dangling: int = 0
    audit: int = 0
    rerun: int = 0
    # server: bundles stored whose answer never came and that have no audit entry (the
    # entry is committed after the write; not a failure: nothing acknowledged is missing)
    unaudited: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def fail(self, cycle: int, kind: str, detail: str, count: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + count)
        self.problems.append(f"{self.target} cycle {cycle}: {kind}: {detail}")

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.partial or self.integrity or self.dangling or self.audit or self.rerun
        )

    def lines(self) -> list[str]:
        head = f"{self.target} ({self.backend})"
        rows = [
            ("cycles", self.cycles),
            ("killed while writing" if self.target != "backup" else "backups during load", 0),
            ("acknowledged writes checked", self.acknowledged),
            ("lost acknowledged writes", self.lost),
            ("partial bundles", self.partial),
            ("integrity failures", self.integrity),
            ("dangling references", self.dangling),
            ("audit chain failures", self.audit),
            (
                "re-run mismatches" if self.target != "backup" else "restore mismatches",
                self.rerun,
            ),
        ]
        out = []
        for name, value in rows:
            if name in ("killed while writing", "backups during load"):
                value = self.killed_mid if self.target != "backup" else self.cycles
            out.append(f"{head} {name}: {value}")
        if self.target == "server":
            name = "unacknowledged bundles stored without audit entry"
            out.append(f"{head} {name}: {self.unaudited}")
        out.append(f"{head} seconds: {self.seconds:.0f}")
        return out


# -- databases ----------------------------------------------------------------------


class Databases(Protocol):
    """Where each cycle gets an empty database of the backend under test."""

    backend: str

    def new(self) -> str: ...

    def drop(self, url: str) -> None: ...


class SqliteDatabases:
    backend = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = itertools.count()

    def new(self) -> str:
        folder = self.root / f"db{next(self._n)}"
        while folder.exists():  # left by an earlier run in the same place
            folder = self.root / f"db{next(self._n)}"
        folder.mkdir(parents=True)
        return f"sqlite:///{folder / 'lienthong.db'}"

    def drop(self, url: str) -> None:
        shutil.rmtree(sqlite_file(url).parent, ignore_errors=True)


class PostgresDatabases:
    backend = "postgresql"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._n = itertools.count()

    def new(self) -> str:
        import psycopg

        name = f"drill_{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.server.url(name)

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.server.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sqlite_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


# -- what a store holds -------------------------------------------------------------


@dataclass
class Held:
    """The current (not deleted) resources of a store."""

    docs: dict[tuple[str, str], dict[str, Any]]

    def counts(self) -> Counter[str]:
        return Counter(t for t, _ in self.docs)

    def markers(self) -> Counter[str]:
        """How many resources carry each bundle marker."""
        out: Counter[str] = Counter()
        for doc in self.docs.values():
            for ident in doc.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("system") == MARK:
                    out[str(ident.get("value"))] += 1
        return out

    def marked_ids(self) -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = {}
        for key, doc in self.docs.items():
            for ident in doc.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("system") == MARK:
                    out.setdefault(str(ident.get("value")), set()).add(key)
        return out

    def visits(self) -> dict[str, Counter[str]]:
        """How many resources of each type each XML 130 visit has, by facility and MA_LK
        (their identifiers; the Encounter's id is the server's, so ids are not compared)."""
        out: dict[str, Counter[str]] = {}
        for key, doc in self.docs.items():
            for ident in doc.get("identifier") or []:
                if not isinstance(ident, dict):
                    continue
                m = XML_SYSTEM.search(str(ident.get("system", "")))
                if m:
                    visit = f"{m.group(1)}|{str(ident.get('value', '')).split('#', 1)[0]}"
                    out.setdefault(visit, Counter())[key[0]] += 1
                    break
        return out

    def dangling(self) -> list[str]:
        """Relative references that name no stored resource."""
        missing: list[str] = []

        def walk(node: Any, owner: tuple[str, str]) -> None:
            if isinstance(node, dict):
                ref = node.get("reference")
                if isinstance(ref, str):
                    m = REFERENCE.match(ref)
                    if m and (m.group(1), m.group(2)) not in self.docs:
                        missing.append(f"{owner[0]}/{owner[1]} -> {ref}")
                for value in node.values():
                    walk(value, owner)
            elif isinstance(node, list):
                for value in node:
                    walk(value, owner)

        for key, doc in self.docs.items():
            walk(doc, key)
        return missing


def held(url: str) -> Held:
    from lienthong.storage.base import open_store

    store = open_store(url, 1)
    try:
        with store.reader() as session:
            rows = session.side(  # type: ignore[attr-defined]
                "SELECT r.res_type, r.res_id, v.content FROM resource r JOIN resource_version v "
                "ON v.pk = r.pk AND v.version = r.version WHERE r.deleted = 0"
            )
    finally:
        store.close()
    docs = {}
    for rtype, rid, content in rows:
        doc = content if isinstance(content, dict) else orjson.loads(content)
        docs[(str(rtype), str(rid))] = doc
    return Held(docs)


def ledger_digests(url: str, kind: str) -> set[str]:
    from lienthong.storage.base import open_store

    store = open_store(url, 1)
    try:
        with store.reader() as session:
            rows = session.side(  # type: ignore[attr-defined]
                "SELECT digest FROM import_ledger WHERE kind = ?", (kind,)
            )
    finally:
        store.close()
    return {str(r[0]) for r in rows}


def integrity_problems(url: str) -> list[str]:
    """SQLite: every database file of the deployment passes ``integrity_check``.
    PostgreSQL: the store and the audit log open and answer."""
    from lienthong.access.audit import AuditLog
    from lienthong.storage.base import open_store

    problems = []
    if url.startswith("sqlite:"):
        for path in sorted(sqlite_file(url).parent.glob("*.db")):
            conn = sqlite3.connect(path)
            try:
                result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            except sqlite3.DatabaseError as exc:
                result = [str(exc)]
            finally:
                conn.close()
            if result != ["ok"]:
                problems.append(f"{path.name}: {'; '.join(result)[:300]}")
    try:
        store = open_store(url, 1)
        try:
            store.counts()
        finally:
            store.close()
        AuditLog(url).close()
    except Exception as exc:  # reported as a figure: the drill goes on
        problems.append(f"the store does not open: {exc}")
    return problems


def audit_problems(url: str) -> list[str]:
    from lienthong.access.audit import AuditLog

    log = AuditLog(url, anchor_key=AUDIT_KEY)
    try:
        result = log.verify()
    finally:
        log.close()
    return [] if result.ok else [f"audit chain: {result}"]


def audited_patients(url: str) -> set[str]:
    from lienthong.access.audit import AuditLog

    log = AuditLog(url)
    try:
        return {str(r[0]) for r in log._db.query("SELECT patient_id FROM audit_patient")}
    finally:
        log.close()


def audit_entries(url: str) -> int:
    from lienthong.access.audit import AuditLog

    log = AuditLog(url)
    try:
        return int(log._db.query("SELECT COUNT(*) FROM audit_log")[0][0])
    finally:
        log.close()


# -- processes ----------------------------------------------------------------------


def environment(url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "LIENTHONG_DATABASE_URL": url,
        "LIENTHONG_MPI": "false",  # exact counts: no master Patients beside the records
        "LIENTHONG_AUDIT_KEY": AUDIT_KEY,
        **extra,
    }
    bindir = find_bindir()
    if bindir is not None:
        env.setdefault("LIENTHONG_PG_BINDIR", str(bindir))
    env.pop("LIENTHONG_CONFIG", None)
    return env


def lienthong(url: str, cwd: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    """``lienthong ARGS`` in a process group of its own (it and its workers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", *args],
        env=environment(url, **extra),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen[str]) -> bool:
    """SIGKILL the process and its group; whether it was still running."""
    running = proc.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return running


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, " ".join(out.replace(",", "").split()), err


def number(pattern: str, text: str) -> int | None:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def resources_written(url: str) -> int:
    """Rows of the store's resource table (0 before the schema exists), read without
    opening the store, so that polling it disturbs the writer little."""
    try:
        if url.startswith("sqlite:"):
            path = sqlite_file(url)
            if not path.exists():
                return 0
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM resource").fetchone()[0])
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            row = pg.execute("SELECT COUNT(*) FROM resource").fetchone()
            return int(row[0]) if row else 0
    except Exception:  # no schema yet, or the file is being created
        return 0


def until_first_write(url: str, proc: subprocess.Popen[str], timeout: float = 300) -> float:
    """Wait until the process has committed something (or ended); the seconds waited."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if resources_written(url) > 0:
            break
        time.sleep(0.02)
    return time.monotonic() - t0


def calibrate(url: str, work: Path, *args: str) -> float:
    """Run the command to the end; how long it writes (from its first commit)."""
    proc = lienthong(url, work, *args)
    until_first_write(url, proc)
    t0 = time.monotonic()
    code, out, err = finish(proc)
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed: {out[-1000:]} {err[-2000:]}")
    return time.monotonic() - t0


def kill_while_writing(
    url: str, work: Path, args: tuple[str, ...], writing: float, rng: random.Random
) -> None:
    """Start the command, wait for its first commit, then SIGKILL it at a random moment
    of the time an uninterrupted run goes on writing."""
    proc = lienthong(url, work, *args)
    until_first_write(url, proc)
    time.sleep(rng.uniform(0, 0.85) * writing)
    kill(proc)


# -- bundles ------------------------------------------------------------------------


def drill_bundle(marker: str, *, conditional: bool) -> dict[str, Any]:
    """A transaction: a Patient and its Observations, each carrying the bundle's marker.
    POSTed without ids, so a bundle stored twice shows as twice the resources;
    ``conditional`` adds ``ifNoneExist`` on each resource's own identifier, which is how
    a client sends a bundle again safely after a lost answer."""
    pid = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, MARK + marker)}"

    def entry(resource: dict[str, Any], part: str, full_url: str) -> dict[str, Any]:
        resource["identifier"] = [
            {"system": MARK, "value": marker},
            {"system": PART, "value": f"{marker}-{part}"},
        ]
        request = {"method": "POST", "url": resource["resourceType"]}
        if conditional:
            request["ifNoneExist"] = f"identifier={PART}|{marker}-{part}"
        return {"fullUrl": full_url, "resource": resource, "request": request}

    entries = [
        entry(
            {
                "resourceType": "Patient",
                "name": [{"family": "Trần", "given": ["Thị", f"Mai {marker}"]}],
                "gender": "female",
                "birthDate": "1988-02-29",
            },
            "p",
            pid,
        )
    ]
    for j in range(OBS_PER_BUNDLE):
        entries.append(
            entry(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": pid},
                    "effectiveDateTime": f"2025-03-0{j + 1}T08:30:00+07:00",
                    "valueQuantity": {
                        "value": 60 + j,
                        "unit": "/min",
                        "system": "http://unitsofmeasure.org",
                        "code": "/min",
                    },
                },
                f"o{j}",
                f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{MARK}{marker}/{j}')}",
            )
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


PER_BUNDLE = 1 + OBS_PER_BUNDLE


def check_bundles(
    tally: Tally, cycle: int, have: Held, acked: dict[str, set[tuple[str, str]]]
) -> None:
    """No partial bundle, every acknowledged bundle whole (with the ids it was given)."""
    markers = have.markers()
    partial = sorted(m for m, n in markers.items() if n != PER_BUNDLE)
    if partial:
        tally.fail(cycle, "partial", f"{len(partial)} bundles, e.g. {partial[:3]}", len(partial))
    ids = have.marked_ids()
    lost = [m for m, want in acked.items() if markers.get(m) != PER_BUNDLE or ids[m] < want]
    if lost:
        tally.fail(cycle, "lost", f"{len(lost)} acknowledged bundles, e.g. {lost[:3]}", len(lost))
    tally.acknowledged += len(acked)
    dangling = have.dangling()
    if dangling:
        tally.fail(cycle, "dangling", f"{len(dangling)}, e.g. {dangling[:3]}", len(dangling))


def check_integrity(tally: Tally, cycle: int, url: str) -> None:
    problems = integrity_problems(url)
    if problems:
        tally.fail(cycle, "integrity", "; ".join(problems))


# -- the import target --------------------------------------------------------------


def write_bundles(folder: Path, n: int) -> dict[str, str]:
    """n transaction Bundle files; returns the marker of each file's ledger digest."""
    from lienthong.storage import ledger

    folder.mkdir(parents=True, exist_ok=True)
    by_digest = {}
    for i in range(n):
        path = folder / f"b{i:05d}.json"
        path.write_bytes(orjson.dumps(drill_bundle(f"b{i}", conditional=False)))
        by_digest[ledger.file_digest(path)] = f"b{i}"
    return by_digest


def drill_import(
    dbs: Databases, work: Path, cycles: int, rng: random.Random, bundles: int = 300
) -> Tally:
    from lienthong.storage import ledger

    tally = Tally("import", dbs.backend)
    started = time.monotonic()
    folder = work / "import-input"
    by_digest = write_bundles(folder, bundles)
    args = ("import", str(folder), "--workers", "1")

    url = dbs.new()  # how long one whole run goes on writing
    writing = calibrate(url, work, *args, "--database", url)
    dbs.drop(url)

    for cycle in range(cycles):
        url = dbs.new()
        kill_while_writing(url, work, (*args, "--database", url), writing, rng)
        tally.cycles += 1
        check_integrity(tally, cycle, url)
        try:
            noted = ledger_digests(url, ledger.BUNDLE)
        except Exception:  # killed before the schema was made: nothing noted
            noted = set()
        have = held_or_nothing(url)
        acked: dict[str, set[tuple[str, str]]] = {by_digest[d]: set() for d in noted}
        check_bundles(tally, cycle, have, acked)
        present = len(have.markers())
        if 0 < present < bundles:
            tally.killed_mid += 1
        if present != len(noted):
            tally.fail(cycle, "rerun", f"{present} bundles stored but {len(noted)} noted")

        code, out, err = finish(lienthong(url, work, *args, "--database", url))
        skipped = number(r"skipped (\d+) bundles? already imported", out) or 0
        loaded = number(r"(\d+) resources loaded", out)
        after = held(url)
        counts = after.counts()
        expect = Counter({"Patient": bundles, "Observation": bundles * OBS_PER_BUNDLE})
        if (
            code != 0
            or skipped != len(noted)
            or loaded != (bundles - len(noted)) * PER_BUNDLE
            or counts != expect
            or set(after.markers().values()) != {PER_BUNDLE}
        ):
            tally.fail(
                cycle,
                "rerun",
                f"exit {code}, skipped {skipped} of {len(noted)} noted, loaded {loaded}, "
                f"counts {dict(counts)}: {out[-300:]} {err[-300:]}",
            )
        if tally.ok:
            dbs.drop(url)
    tally.seconds = time.monotonic() - started
    return tally


def held_or_nothing(url: str) -> Held:
    """What the store holds; nothing when the killed process had not made its schema."""
    try:
        return held(url)
    except Exception:
        return Held({})


# -- the xml130 target --------------------------------------------------------------


@dataclass
class Xml130Input:
    folder: Path
    visits_of_file: dict[str, set[str]]  # ledger digest -> visit keys
    reference: Held
    visits: dict[str, Counter[str]]
    seconds: float  # how long an uninterrupted ingest writes


def xml130_input(dbs: Databases, work: Path, visits: int, args: tuple[str, ...]) -> Xml130Input:
    """Synthetic exports, and what one uninterrupted ingest of them stores."""
    from tests.factories import SYNTH_DAY

    from lienthong.ingest.xml130 import parse
    from lienthong.storage import ledger
    from lienthong.synth.xml130 import generate_xml130

    folder = work / "xml130-input"
    generate_xml130(visits, folder, seed=11, visits_per_file=5, today=SYNTH_DAY)
    of_file = {}
    for path in sorted(folder.rglob("*.xml")):
        of_file[ledger.file_digest(path)] = {
            f"{quote(v.ma_cskcb.strip(), safe='')}|{v.ma_lk.strip()}" for v in parse(path)
        }
    url = dbs.new()
    seconds = calibrate(url, work, *args, "-d", url)
    reference = held(url)
    dbs.drop(url)
    if reference.dangling():
        raise RuntimeError(f"the reference ingest has dangling references: {reference.dangling()}")
    return Xml130Input(folder, of_file, reference, reference.visits(), seconds)


def drill_xml130(
    dbs: Databases, work: Path, cycles: int, rng: random.Random, visits: int = 150
) -> Tally:
    from lienthong.storage import ledger

    tally = Tally("xml130", dbs.backend)
    started = time.monotonic()
    folder = work / "xml130-input"
    args = ("xml130", "ingest", str(folder), "--workers", "1", "--batch", "5")
    data = xml130_input(dbs, work, visits, args)
    for cycle in range(cycles):
        url = dbs.new()
        kill_while_writing(url, work, (*args, "-d", url), data.seconds, rng)
        tally.cycles += 1
        check_integrity(tally, cycle, url)
        have = held_or_nothing(url)
        noted = ledger_digests(url, ledger.XML_FILE) if have.docs else set()
        stored = have.visits()
        partial = sorted(v for v, kinds in stored.items() if kinds != data.visits.get(v))
        if partial:
            tally.fail(cycle, "partial", f"{len(partial)} visits, e.g. {partial[:3]}", len(partial))
        acked = set().union(*(data.visits_of_file[d] for d in noted)) if noted else set()
        tally.acknowledged += len(acked)
        lost = sorted(v for v in acked if stored.get(v) != data.visits[v])
        if lost:
            tally.fail(cycle, "lost", f"{len(lost)} visits, e.g. {lost[:3]}", len(lost))
        dangling = have.dangling()
        if dangling:
            tally.fail(cycle, "dangling", f"{len(dangling)}, e.g. {dangling[:3]}", len(dangling))
        if 0 < len(stored) < len(data.visits):
            tally.killed_mid += 1

        code, out, err = finish(lienthong(url, work, *args, "-d", url))
        skipped = number(r"skipped (\d+) files? already ingested", out) or 0
        after = held(url)
        visits_after = after.visits()
        if (
            code != 0
            or skipped != len(noted)
            or visits_after != data.visits
            or after.counts() != data.reference.counts()
        ):
            wrong = sorted(v for v in data.visits if visits_after.get(v) != data.visits[v])
            tally.fail(
                cycle,
                "rerun",
                f"exit {code}, skipped {skipped} of {len(noted)} noted, counts "
                f"{dict(after.counts())} for {dict(data.reference.counts())}, visits not as "
                f"in one run {wrong[:3]}: {out[-300:]} {err[-300:]}",
            )
        if tally.ok:
            dbs.drop(url)
    tally.seconds = time.monotonic() - started
    return tally


# -- the server target --------------------------------------------------------------


@contextlib.contextmanager
def server(
    url: str, work: Path, startup: float = 60
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``lienthong serve`` on a free port (authentication off: loopback), until the block
    ends (then stopped with SIGTERM, unless the block killed it)."""
    port = free_port()
    log = (work / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "serve", "--port", str(port)],
        env=environment(url, LIENTHONG_AUTH="off", LIENTHONG_LOG_LEVEL="warning"),
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + startup
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/metadata", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(work / log.name).read_text()}")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill(proc)
        log.close()


class Clients:
    """A few concurrent clients posting the bundles of a queue; each 2xx answer noted
    with the ids it returned, by bundle marker."""

    def __init__(self, base: str, markers: list[str], clients: int = 4) -> None:
        self.base = base
        self.queue = list(markers)
        self.lock = threading.Lock()
        self.acked: dict[str, set[tuple[str, str]]] = {}
        self.refused: list[str] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=120)

    def wait(self) -> None:
        for t in self.threads:
            t.join(timeout=600)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _next(self) -> str | None:
        with self.lock:
            return self.queue.pop(0) if self.queue and not self.stopped.is_set() else None

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while (marker := self._next()) is not None:
                body = orjson.dumps(drill_bundle(marker, conditional=True))
                try:
                    resp = http.post(
                        self.base,
                        content=body,
                        headers={"Content-Type": "application/fhir+json"},
                    )
                except httpx.TransportError:
                    return  # the server is gone: this answer never came
                if not 200 <= resp.status_code < 300:
                    with self.lock:
                        self.refused.append(f"{marker}: {resp.status_code} {resp.text[:200]}")
                    continue
                ids = set()
                for entry in resp.json().get("entry") or []:
                    location = str((entry.get("response") or {}).get("location", ""))
                    parts = location.split("/_history")[0].rstrip("/").split("/")
                    if len(parts) >= 2:
                        ids.add((parts[-2], parts[-1]))
                with self.lock:
                    self.acked[marker] = ids


def drill_server(
    dbs: Databases, work: Path, cycles: int, rng: random.Random, bundles: int = 400
) -> Tally:
    tally = Tally("server", dbs.backend)
    started = time.monotonic()
    markers = [f"s{i}" for i in range(bundles)]
    for cycle in range(cycles):
        url = dbs.new()
        at = rng.randint(1, int(bundles * 0.8))
        with server(url, work) as (base, proc), Clients(base, markers) as clients:
            while (
                clients.count() < at
                and proc.poll() is None
                and any(t.is_alive() for t in clients.threads)
            ):
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.02))
            kill(proc)
            clients.wait()
        tally.cycles += 1
        acked = dict(clients.acked)
        if clients.refused:
            tally.fail(cycle, "rerun", f"answers refused: {clients.refused[:3]}")
        check_integrity(tally, cycle, url)
        have = held(url)
        check_bundles(tally, cycle, have, acked)
        if any(len(ids) != PER_BUNDLE for ids in acked.values()):
            tally.fail(cycle, "lost", "an answer did not name every resource of its bundle")
        present = len(have.markers())
        if 0 < present < bundles:
            tally.killed_mid += 1
        for problem in audit_problems(url):
            tally.fail(cycle, "audit", problem)
        audited = audited_patients(url)
        unaudited = [
            m for m, ids in acked.items() if not {i for t, i in ids if t == "Patient"} <= audited
        ]
        if unaudited:
            tally.fail(cycle, "audit", f"{len(unaudited)} acknowledged bundles without audit entry")
        tally.unaudited += sum(
            1
            for m, ids in have.marked_ids().items()
            if m not in acked and not {i for t, i in ids if t == "Patient"} <= audited
        )

        # the clients send everything again; what was stored is found, not duplicated
        with server(url, work) as (base, _), Clients(base, markers) as again:
            again.wait()
        after = held(url)
        counts = after.counts()
        expect = Counter({"Patient": bundles, "Observation": bundles * OBS_PER_BUNDLE})
        ids = after.marked_ids()
        moved = [m for m, want in acked.items() if ids.get(m) != want]
        if (
            again.refused
            or len(again.acked) != bundles
            or counts != expect
            or set(after.markers().values()) != {PER_BUNDLE}
            or moved
        ):
            tally.fail(
                cycle,
                "rerun",
                f"{len(again.acked)} of {bundles} answered, refused {again.refused[:2]}, "
                f"counts {dict(counts)}, acknowledged ids changed {moved[:3]}",
            )
        for problem in audit_problems(url):
            tally.fail(cycle, "audit", problem)
        if tally.ok:
            dbs.drop(url)
    tally.seconds = time.monotonic() - started
    return tally


# -- the backup target --------------------------------------------------------------


def drill_backup(
    dbs: Databases, work: Path, cycles: int, rng: random.Random, bundles: int = 3000
) -> Tally:
    """While clients post transactions to the server, `lienthong backup`; then
    `lienthong restore` into an empty database and compare."""
    tally = Tally("backup", dbs.backend)
    started = time.monotonic()
    markers = [f"k{i}" for i in range(bundles)]
    for cycle in range(cycles):
        url = dbs.new()
        target = dbs.new()
        if target.startswith("sqlite:"):
            sqlite_file(target).parent.rmdir()  # restore makes it
        out = work / f"backup{cycle}"
        shutil.rmtree(out, ignore_errors=True)
        with server(url, work) as (base, _), Clients(base, markers) as clients:
            at = rng.randint(20, 200)
            while clients.count() < at and any(t.is_alive() for t in clients.threads):
                time.sleep(0.005)
            before = dict(clients.acked)
            code, text, err = finish(lienthong(url, work, "backup", "--out", str(out)))
            during = clients.count() - len(before)
            time.sleep(0.2)
            clients.stop()
        tally.cycles += 1
        if code != 0:
            tally.fail(cycle, "rerun", f"backup failed: {text} {err[-500:]}")
            continue
        if during == 0:
            tally.fail(cycle, "rerun", "no write was acknowledged while the backup ran")
        manifest = json.loads((out / "manifest.json").read_text())["contents"]
        code, text, err = finish(lienthong(target, work, "restore", str(out), "-d", target))
        if code != 0 or "audit chain intact" not in text:
            tally.fail(cycle, "rerun", f"restore failed: {text} {err[-500:]}")
            continue
        check_integrity(tally, cycle, target)
        restored = held(target)
        check_bundles(tally, cycle, restored, before)
        entries = audit_entries(target)
        if len(restored.docs) != manifest["resources"] or entries != manifest["audit_entries"]:
            tally.fail(
                cycle,
                "rerun",
                f"manifest {manifest}, restored {len(restored.docs)} resources, "
                f"{entries} audit entries",
            )
        for problem in audit_problems(target):
            tally.fail(cycle, "audit", problem)
        audited = audited_patients(target)
        unaudited = [i for t, i in restored.docs if t == "Patient" and i not in audited]
        if unaudited:
            tally.fail(cycle, "audit", f"{len(unaudited)} restored Patients without audit entry")
        if tally.ok:
            dbs.drop(url)
            dbs.drop(target)
            shutil.rmtree(out, ignore_errors=True)
    tally.seconds = time.monotonic() - started
    return tally


DRILLS: dict[str, Callable[[Databases, Path, int, random.Random], Tally]] = {
    "import": drill_import,
    "xml130": drill_xml130,
    "server": drill_server,
    "backup": drill_backup,
}


def main() -> None:
    from bench.common import machine

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--target", choices=(*DRILLS, "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work here and keep what failed")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="lienthong-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    pg: PostgresServer | None = None
    try:
        if args.backend == "postgresql":
            bindir = find_bindir()
            if bindir is None:
                raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
            pg = PostgresServer(bindir)
            pg.start(durable=True)
            dbs: Databases = PostgresDatabases(pg)
        else:
            dbs = SqliteDatabases(work / "db")
        targets = list(DRILLS) if args.target == "all" else [args.target]
        failed = False
        for target in targets:
            tally = DRILLS[target](dbs, work, args.cycles, rng)
            for line in tally.lines():
                print(line, flush=True)
            for problem in tally.problems[:20]:
                print(f"  {problem}", flush=True)
            failed = failed or not tally.ok
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        if pg is not None:
            pg.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
