"""Bulk load of FHIR data files: NDJSON and Bundle JSON, plain, ``.gz`` or ``.bz2``.

Everything goes through the FHIR engine (validation, ids and meta, the search
index), never straight into the store. NDJSON is loaded in batches, each one
write transaction that commits whole or not at all: a batch holding an
invalid line is rejected entirely and every problem is reported with its file
and line. A resource with an id is loaded as an update (create-on-update), so
re-running an import gives new versions, not duplicates. A transaction
Bundle is one atomic unit; a batch Bundle is processed entry by entry.

Every unit committed is noted in the import ledger (:mod:`lienthong.storage.ledger`) by
the sha256 of its bytes, in the same transaction as its resources: a Bundle file, an
NDJSON batch, and an NDJSON file once all its batches are in. A re-run skips what the
ledger holds, so an interrupted import resumes where it stopped without duplicates;
``force`` imports everything again. A batch Bundle runs entry by entry, each in a
transaction of its own, so it is noted only after its last entry: one interrupted
mid-way is run again whole on resume (entries with ids become new versions).

Structural validation is the costliest step, so it runs in worker processes
(``workers``), a few files or batches ahead of the single writer, which then
only rewrites references, indexes and writes.
"""

from __future__ import annotations

import bz2
import gc
import gzip
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lienthong.fhir.engine import FhirEngine, now_instant
from lienthong.fhir.errors import FhirError
from lienthong.fhir.interactions.transaction import process_bundle
from lienthong.fhir.validate import validate_resource
from lienthong.storage import ledger
from lienthong.storage.base import WriteOp, WriteSession
from lienthong.workers import worker_pool


@dataclass(frozen=True)
class Problem:
    """One rejected input: where it was and why."""

    file: str
    line: int | None  # NDJSON line, or None for a whole bundle
    entry: int | None  # bundle entry index
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.entry is not None:
            where += f" entry[{self.entry}]"
        return f"{where}: {self.message}"


@dataclass
class ImportReport:
    loaded: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0  # ifNoneExist found the resource already there
    rejected: int = 0
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # units the ledger holds, by kind
    skipped_resources: int = 0  # resources in skipped batches (Bundle files: not counted)

    @property
    def total_loaded(self) -> int:
        return sum(self.loaded.values())

    def skipped_text(self) -> str:
        """``skipped 3 bundles, 1 file already imported``, or '' when nothing was."""
        parts = [
            f"{n} {kind}{'' if n == 1 else ('es' if kind.endswith('ch') else 's')}"
            for kind, n in sorted(self.skipped.items())
            if n
        ]
        return f"skipped {', '.join(parts)} already imported" if parts else ""


def open_data(path: Path) -> IO[bytes]:
    """Open a possibly compressed file for binary reading."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def file_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".gz", ".bz2"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    if name.endswith(".json"):
        return "json"
    raise ValueError(f"{path}: not an .ndjson or .json file (optionally .gz or .bz2)")


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given, directories expanded to the data files inside, sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and _is_data_file(f)))
        else:
            out.append(p)
    return out


def _is_data_file(path: Path) -> bool:
    try:
        file_kind(path)
    except ValueError:
        return False
    return True


# -- work done in the worker processes (pure functions of their input) -----------


def _problem_text(exc: Exception) -> str:
    if isinstance(exc, orjson.JSONDecodeError):
        return f"not valid JSON: {exc}"
    return str(exc)


def check_lines(lines: list[bytes]) -> list[str | None]:
    """Parse and validate NDJSON lines: the problem of each line, or None."""
    out: list[str | None] = []
    for line in lines:
        try:
            validate_resource(orjson.loads(line))
            out.append(None)
        except (orjson.JSONDecodeError, FhirError) as exc:
            out.append(_problem_text(exc))
    return out


def read_and_check_json(path: Path) -> tuple[bytes, str | None, list[tuple[int, str]]]:
    """Read a JSON file and validate what it holds.

    Returns the raw bytes, a whole-file problem (unreadable, not JSON) and the
    problems of single bundle entries (index, message).
    """
    try:
        with open_data(path) as fh:
            raw = fh.read()
        doc = orjson.loads(raw)
    except (OSError, EOFError, ValueError) as exc:
        return b"", f"cannot read: {_problem_text(exc)}", []
    entries: list[tuple[int, str]] = []
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        for i, entry in enumerate(doc.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if resource is None:
                continue
            try:
                validate_resource(resource)
            except FhirError as exc:
                entries.append((i, str(exc)))
    else:
        try:
            validate_resource(doc)
        except FhirError as exc:
            entries.append((0, str(exc)))
    return raw, None, entries


def _worker_init() -> None:
    gc.set_threshold(100_000, 50, 100)


class _Inline(Executor):
    """Runs submitted work at once, for ``workers=0``."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            fut.set_exception(exc)
        return fut


@dataclass
class _File:
    """An input file on its way in: its ledger key, and whether any part was refused."""

    digest: str
    clean: bool = True


@dataclass
class _Job:
    path: Path
    kind: str  # "lines" or "json"
    file: _File
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    digest: str = ""  # the ledger key of this unit
    last: bool = True  # the file's last unit


class BulkImporter:
    def __init__(
        self,
        engine: FhirEngine,
        batch_size: int = 1000,
        workers: int = 0,
        on_progress: Callable[[Path, int], None] | None = None,
        force: bool = False,
    ) -> None:
        self.engine = engine
        self.force = force
        self.batch_size = batch_size
        self.workers = workers
        self.on_progress = on_progress or (lambda path, n: None)

    def run(self, paths: list[Path]) -> ImportReport:
        report = ImportReport()
        executor: Executor = (
            worker_pool(self.workers, initializer=_worker_init) if self.workers > 0 else _Inline()
        )
        window: deque[tuple[_Job, Future[Any]]] = deque()
        ahead = max(2, self.workers * 3)
        try:
            for job in self._jobs(paths, report):
                fut: Future[Any]
                if job.kind == "json":
                    fut = executor.submit(read_and_check_json, job.path)
                else:
                    fut = executor.submit(check_lines, [line for _, line in job.lines])
                window.append((job, fut))
                if len(window) >= ahead:
                    self._finish(*window.popleft(), report)
            while window:
                self._finish(*window.popleft(), report)
        finally:
            executor.shutdown(cancel_futures=True)
        return report

    def _known(self, digests: list[str]) -> set[str]:
        """Which of ``digests`` the ledger holds (none when forced)."""
        if self.force or not digests:
            return set()
        with self.engine.store.reader() as session:
            return ledger.recorded(session, digests)

    def _jobs(self, paths: list[Path], report: ImportReport) -> Iterator[_Job]:
        for path in paths:
            report.files += 1
            try:
                kind = file_kind(path)
                state = _File(ledger.file_digest(path))
            except (ValueError, OSError) as exc:
                report.problems.append(Problem(str(path), None, None, str(exc)))
                report.rejected += 1
                continue
            if self._known([state.digest]):
                report.skipped[ledger.BUNDLE if kind == "json" else ledger.FILE] += 1
                self.on_progress(path, 0)
                continue
            if kind == "json":
                yield _Job(path, "json", state, digest=state.digest)
                continue
            try:
                yield from self._batches(path, state, report)
            except (OSError, EOFError) as exc:
                report.problems.append(Problem(str(path), None, None, f"cannot read: {exc}"))
                report.rejected += 1

    def _batches(self, path: Path, state: _File, report: ImportReport) -> Iterator[_Job]:
        """The file's batches that the ledger does not hold, the last one marked (it
        notes the whole file in the ledger too, when none of the file was refused)."""
        held: _Job | None = None
        with open_data(path) as fh:
            batch: list[tuple[int, bytes]] = []
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                batch.append((lineno, line))
                if len(batch) >= self.batch_size:
                    if held is not None:
                        yield held
                    held = self._batch_job(path, state, batch, report)
                    batch = []
            if batch:
                if held is not None:
                    yield held
                held = self._batch_job(path, state, batch, report)
        if held is not None:
            held.last = True
            yield held
        elif state.clean:  # empty, or every batch already in: the file is in
            with self.engine.store.writer() as session:
                ledger.record(session, state.digest, ledger.FILE, str(path), 0)

    def _batch_job(
        self, path: Path, state: _File, batch: list[tuple[int, bytes]], report: ImportReport
    ) -> _Job | None:
        key = ledger.digest(*(line for _, line in batch))
        if self._known([key]):
            report.skipped[ledger.BATCH] += 1
            report.skipped_resources += len(batch)
            self.on_progress(path, len(batch))
            return None
        return _Job(path, "lines", state, batch, key, last=False)

    def _finish(self, job: _Job, fut: Future[Any], report: ImportReport) -> None:
        if job.kind == "json":
            raw, whole, entries = fut.result()
            self._json(job, raw, whole, entries, report)
        else:
            self._lines(job, job.lines, fut.result(), report)

    # -- NDJSON ---------------------------------------------------------------

    def _notes(self, job: _Job, kind: str, resources: int) -> list[tuple[str, str, int]]:
        """The ledger rows a unit's transaction writes: the unit, and its file when it is
        the file's last and nothing of the file was refused."""
        rows = [(job.digest, kind, resources)]
        if job.last and job.file.clean and job.file.digest != job.digest:
            rows.append((job.file.digest, ledger.FILE, 0))
        return rows

    def _held(self, session: WriteSession, job: _Job) -> bool:
        """Whether the unit went in meanwhile (another import of the same input): looked
        up inside the unit's own write transaction, so it is never written twice."""
        return not self.force and ledger.claim(session, job.digest)

    def _record(self, session: WriteSession, job: _Job, rows: list[tuple[str, str, int]]) -> None:
        for key, kind, n in rows:
            ledger.record(session, key, kind, str(job.path), n)

    def _lines(
        self,
        job: _Job,
        batch: list[tuple[int, bytes]],
        problems: list[str | None],
        report: ImportReport,
        kind: str = ledger.BATCH,
    ) -> None:
        path = job.path
        found = [
            Problem(str(path), lineno, None, message)
            for (lineno, _), message in zip(batch, problems, strict=True)
            if message is not None
        ]
        if found:
            job.file.clean = False
            report.problems.extend(found)
            report.rejected += len(batch)
            report.problems.append(
                Problem(
                    str(path),
                    batch[0][0],
                    None,
                    f"batch of lines {batch[0][0]}-{batch[-1][0]} not loaded "
                    f"({len(batch)} resources) because of the problems above",
                )
            )
        else:
            resources = [orjson.loads(line) for _, line in batch]
            try:
                written = self._write(resources, job, kind)
            except FhirError as exc:
                job.file.clean = False
                report.problems.append(
                    Problem(str(path), batch[0][0], None, f"batch rejected: {exc}")
                )
                report.rejected += len(batch)
            else:
                if written:
                    report.loaded.update(r["resourceType"] for r in resources)
                else:
                    report.skipped[kind] += 1
                    report.skipped_resources += len(batch)
        self.on_progress(path, len(batch))

    def _write(self, resources: list[dict[str, Any]], job: _Job, kind: str) -> bool:
        """Write one batch and note it in the ledger, in one transaction; False when the
        ledger held it already."""
        engine = self.engine
        now = now_instant()
        with engine.store.writer() as session:
            if self._held(session, job):
                return False
            keys = [(r["resourceType"], r["id"]) for r in resources if r.get("id")]
            current = {
                (s.res_type, s.res_id): s
                for s in (session.read_many(keys, include_deleted=True) if keys else [])
            }
            ops: list[WriteOp] = []
            for resource in resources:
                validate_resource(resource, structure=False)
                rid = resource.get("id")
                key = (resource["resourceType"], rid) if rid else None
                prev = current.get(key) if key else None
                if key is not None and any(
                    op.res_type == key[0] and op.res_id == key[1] for op in ops
                ):
                    # the same resource twice in one batch: each line a version of its own
                    session.write(ops)
                    engine.after_write(session, ops)
                    ops = []
                    prev = session.read(*key)
                op = engine.prepare(
                    resource,
                    rid or engine.new_id(),
                    prev.version + 1 if prev is not None else 1,
                    now,
                    "PUT" if rid else "POST",
                    prev,
                    validate=False,
                )
                ops.append(op)
            session.write(ops)
            engine.after_write(session, ops)
            self._record(session, job, self._notes(job, kind, len(resources)))
        return True

    # -- Bundle / single resource JSON -----------------------------------------

    def _json(
        self,
        job: _Job,
        raw: bytes,
        whole: str | None,
        entry_problems: list[tuple[int, str]],
        report: ImportReport,
    ) -> None:
        path = job.path
        if whole is not None:
            job.file.clean = False
            report.problems.append(Problem(str(path), None, None, whole))
            report.rejected += 1
            self.on_progress(path, 1)
            return
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            kind = doc.get("type")
            if kind == "transaction" and entry_problems:
                job.file.clean = False
                self._reject_bundle(path, doc, entry_problems, report)
            elif kind in ("transaction", "batch"):
                self._bundle(job, doc, report, transaction=kind == "transaction")
            else:
                entries = [e.get("resource") for e in doc.get("entry") or []]
                lines = [(i, orjson.dumps(r)) for i, r in enumerate(entries, start=1)]
                messages = self._entry_messages(len(lines), entry_problems)
                self._lines(job, lines, messages, report, ledger.BUNDLE)
            return
        self._lines(job, [(1, raw)], self._entry_messages(1, entry_problems), report, ledger.FILE)

    @staticmethod
    def _entry_messages(n: int, problems: list[tuple[int, str]]) -> list[str | None]:
        messages: list[str | None] = [None] * n
        for i, message in problems:
            messages[i] = message
        return messages

    def _reject_bundle(
        self, path: Path, doc: dict[str, Any], problems: list[tuple[int, str]], report: ImportReport
    ) -> None:
        n = len(doc.get("entry") or [])
        for i, message in problems:
            report.problems.append(
                Problem(str(path), None, i, f"transaction rejected: Bundle.entry[{i}]: {message}")
            )
        report.rejected += n
        self.on_progress(path, n)

    def _bundle(
        self, job: _Job, doc: dict[str, Any], report: ImportReport, transaction: bool
    ) -> None:
        path = job.path
        entries = doc.get("entry") or []
        types = [
            (e.get("resource") or {}).get("resourceType", "?") if isinstance(e, dict) else "?"
            for e in entries
        ]
        methods = [
            str((e.get("request") or {}).get("method", "")).upper() if isinstance(e, dict) else ""
            for e in entries
        ]
        try:
            if transaction:
                # the bundle's writes and its ledger row in one commit
                with self.engine.store.writer() as session:
                    if self._held(session, job):
                        report.skipped[ledger.BUNDLE] += 1
                        self.on_progress(path, len(entries))
                        return
                    resp = process_bundle(self.engine, doc, None, validated=True, session=session)
                    self._record(session, job, self._notes(job, ledger.BUNDLE, len(entries)))
            else:
                resp = process_bundle(self.engine, doc, None)
        except FhirError as exc:
            job.file.clean = False
            report.problems.append(Problem(str(path), None, None, f"transaction rejected: {exc}"))
            report.rejected += len(entries)
            self.on_progress(path, len(entries))
            return
        body = resp.json() or {}
        outs = body.get("entry", [])
        for i, (rtype, method, out) in enumerate(zip(types, methods, outs, strict=False)):
            status = str(out.get("response", {}).get("status", ""))
            if status.startswith("200") and method == "POST":
                report.unchanged += 1  # ifNoneExist found it already there
            elif status.startswith("2"):
                report.loaded[rtype] += 1
            else:
                report.rejected += 1
                job.file.clean = False
                outcome = out.get("response", {}).get("outcome", {})
                message = "; ".join(x.get("diagnostics", "") for x in outcome.get("issue", []))
                report.problems.append(Problem(str(path), None, i, f"{status} {message}"))
        if not transaction and job.file.clean:
            # a batch Bundle's entries committed one by one: noted once all are in
            with self.engine.store.writer() as session:
                self._record(session, job, self._notes(job, ledger.BUNDLE, len(entries)))
        self.on_progress(path, len(entries))
