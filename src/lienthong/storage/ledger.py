"""The import ledger: which input units an import has committed, by content hash.

An import unit is a Bundle file, an NDJSON batch, or a whole file once every part of it is
in. Its key is the sha256 of its bytes. The row is written inside the write session that
stores the unit's resources, so it commits and rolls back with them: after a crash the
ledger names exactly what is in the store, and a re-run skips those units and does the
rest. The table lives in the store's own database (``schema.ledger_ddl``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from lienthong.storage.base import Session
from lienthong.storage.sql import SqlSession

FILE = "file"
BUNDLE = "bundle"
BATCH = "batch"
XML_FILE = "xml130-file"


def digest(*parts: bytes) -> str:
    """The sha256 (hex) of the bytes given, in order."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def file_digest(path: Any) -> str:
    """The sha256 (hex) of a file's bytes as they are on disk."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sql(session: Session) -> SqlSession:
    inner: Any = session
    while not isinstance(inner, SqlSession):
        inner = getattr(inner, "inner", None)
        if inner is None:
            raise TypeError("the import ledger needs a SQL store session")
    return inner


def recorded(session: Session, digests: Iterable[str]) -> set[str]:
    """Those of ``digests`` the ledger holds."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    raw = _sql(session)
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = raw.side(f"SELECT digest FROM import_ledger WHERE digest IN ({marks})", chunk)
        found.update(str(r[0]) for r in rows)
    return found


def claim(session: Session, key: str) -> bool:
    """Inside a write session, before writing the unit ``key``: whether the ledger holds
    it already. SQLite serialises write transactions; on PostgreSQL a transaction-scoped
    advisory lock on the key makes a second import of the same unit wait for the first to
    commit, and then see its row, so the unit is never written twice."""
    raw = _sql(session)
    if raw.dialect.name == "postgresql":
        raw.side("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))
    return bool(recorded(session, [key]))


def record(session: Session, key: str, kind: str, source: str, resources: int) -> None:
    """Note ``key`` as committed with this session's transaction (again, when re-imported
    with ``--force``: the row is brought up to date)."""
    _sql(session).side(
        "INSERT INTO import_ledger (digest, kind, source, resources, at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (digest) DO UPDATE SET kind = excluded.kind, source = excluded.source, "
        "resources = excluded.resources, at = excluded.at",
        (key, kind, source, resources, datetime.now(UTC).isoformat(timespec="seconds")),
    )
