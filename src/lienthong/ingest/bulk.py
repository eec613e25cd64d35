"""Bulk load of FHIR data files: NDJSON and Bundle JSON, plain, ``.gz`` or ``.bz2``.

Everything goes through the FHIR engine (validation, ids and meta, the search
index), never straight into the store. NDJSON is loaded in batches, each one
write transaction that commits whole or not at all: a batch holding an
invalid line is rejected entirely and every problem is reported with its file
and line. A resource with an id is loaded as an update (create-on-update), so
re-running an import gives new versions, not duplicates. A transaction
Bundle is one atomic unit; a batch Bundle is processed entry by entry.
"""

from __future__ import annotations

import bz2
import gzip
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lienthong.fhir.engine import FhirEngine, now_instant
from lienthong.fhir.errors import FhirError
from lienthong.fhir.interactions.transaction import process_bundle
from lienthong.fhir.validate import valid_id, validate_resource
from lienthong.storage.base import WriteOp


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
    rejected: int = 0
    problems: list[Problem] = field(default_factory=list)
    files: int = 0

    @property
    def total_loaded(self) -> int:
        return sum(self.loaded.values())


def open_text(path: Path) -> IO[bytes]:
    """Open a possibly compressed file for binary reading."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def file_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".gz", ".bz2"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".ndjson") or name.endswith(".jsonl"):
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


class BulkImporter:
    def __init__(
        self,
        engine: FhirEngine,
        batch_size: int = 1000,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.on_progress = on_progress or (lambda n: None)

    def run(self, paths: list[Path]) -> ImportReport:
        report = ImportReport()
        for path in paths:
            report.files += 1
            try:
                kind = file_kind(path)
                if kind == "ndjson":
                    self._ndjson(path, report)
                else:
                    self._json(path, report)
            except (OSError, EOFError, ValueError) as exc:
                report.problems.append(Problem(str(path), None, None, f"cannot read: {exc}"))
                report.rejected += 1
        return report

    # -- NDJSON ---------------------------------------------------------------

    def _ndjson(self, path: Path, report: ImportReport) -> None:
        batch: list[tuple[int, Any]] = []
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                batch.append((lineno, line))
                if len(batch) >= self.batch_size:
                    self._load_batch(path, batch, report)
                    batch = []
        if batch:
            self._load_batch(path, batch, report)

    def _load_batch(self, path: Path, batch: list[tuple[int, bytes]], report: ImportReport) -> None:
        parsed: list[tuple[int, dict[str, Any]]] = []
        problems: list[Problem] = []
        for lineno, line in batch:
            try:
                resource = orjson.loads(line)
                validate_resource(resource)
                rid = resource.get("id")
                if rid is not None and not valid_id(rid):
                    raise ValueError(f"invalid id {rid!r}")
                parsed.append((lineno, resource))
            except orjson.JSONDecodeError as exc:
                problems.append(Problem(str(path), lineno, None, f"not valid JSON: {exc}"))
            except FhirError as exc:
                problems.append(Problem(str(path), lineno, None, str(exc)))
        if problems:
            report.problems.extend(problems)
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
            self.on_progress(len(batch))
            return
        try:
            self._write(parsed)
        except FhirError as exc:
            report.problems.append(Problem(str(path), batch[0][0], None, f"batch rejected: {exc}"))
            report.rejected += len(batch)
        else:
            report.loaded.update(r["resourceType"] for _, r in parsed)
        self.on_progress(len(batch))

    def _write(self, parsed: list[tuple[int, dict[str, Any]]]) -> None:
        engine = self.engine
        now = now_instant()
        with engine.store.writer() as session:
            keys = [(r["resourceType"], r["id"]) for _, r in parsed if r.get("id")]
            existing = {(s.res_type, s.res_id): s for s in _current(session, keys)}
            ops: list[WriteOp] = []
            seen: dict[tuple[str, str], WriteOp] = {}
            for _, resource in parsed:
                rid = resource.get("id")
                key = (resource["resourceType"], rid) if rid else None
                if key is not None and key in seen:
                    # the same resource twice in one batch: later line wins, one version each
                    prev_op = seen[key]
                    session.write(ops)
                    ops = []
                    prev = session.read(*key)
                    assert prev is not None and prev_op.pk is not None
                else:
                    prev = existing.get(key) if key else None
                version = prev.version + 1 if prev is not None else 1
                op = engine.prepare(
                    resource,
                    rid or engine.new_id(),
                    version,
                    now,
                    "PUT" if rid else "POST",
                    prev,
                    validate=False,
                )
                ops.append(op)
                if key is not None:
                    seen[key] = op
            session.write(ops)

    # -- Bundle / single resource JSON -----------------------------------------

    def _json(self, path: Path, report: ImportReport) -> None:
        with open_text(path) as fh:
            raw = fh.read()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            report.problems.append(Problem(str(path), None, None, f"not valid JSON: {exc}"))
            report.rejected += 1
            return
        if (
            isinstance(doc, dict)
            and doc.get("resourceType") == "Bundle"
            and doc.get("type")
            in (
                "transaction",
                "batch",
            )
        ):
            self._bundle(path, doc, report)
            return
        if (
            isinstance(doc, dict)
            and doc.get("resourceType") == "Bundle"
            and doc.get("type") == "collection"
        ):
            lines = [
                (i, orjson.dumps(e.get("resource"))) for i, e in enumerate(doc.get("entry", []))
            ]
            self._load_batch(path, lines, report)
            return
        self._load_batch(path, [(1, raw)], report)

    def _bundle(self, path: Path, doc: dict[str, Any], report: ImportReport) -> None:
        entries = doc.get("entry") or []
        types = [
            (e.get("resource") or {}).get("resourceType", "?") if isinstance(e, dict) else "?"
            for e in entries
        ]
        try:
            resp = process_bundle(self.engine, doc, None)
        except FhirError as exc:
            report.problems.append(Problem(str(path), None, None, f"transaction rejected: {exc}"))
            report.rejected += len(entries)
            self.on_progress(len(entries))
            return
        body = resp.json() or {}
        for i, (rtype, out) in enumerate(zip(types, body.get("entry", []), strict=False)):
            status = str(out.get("response", {}).get("status", ""))
            if status.startswith("2"):
                report.loaded[rtype] += 1
            else:
                report.rejected += 1
                outcome = out.get("response", {}).get("outcome", {})
                message = "; ".join(i.get("diagnostics", "") for i in outcome.get("issue", []))
                report.problems.append(Problem(str(path), None, i, f"{status} {message}"))
        self.on_progress(len(entries))


def _current(session: Any, keys: list[tuple[str, str]]) -> list[Any]:
    """Current versions, deleted ones included, so a re-import continues their history."""
    return session.read_many(keys, include_deleted=True) if keys else []
