"""Small tables beside the resource store: users, signing keys, the audit log, alerts.

They are not FHIR resources and do not go through the engine, but they live
with the store they belong to: in the same PostgreSQL database, or for SQLite
in a file next to the main one (``lienthong.db`` -> ``lienthong-<name>.db``),
so that appending an audit entry never waits behind a long write transaction.
SQL is written with ``?`` placeholders and runs on both engines.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: every side database a deployment has (for SQLite, one file each beside the store)
SIDE_NAMES = ("access", "audit", "paging")


def sqlite_side_path(main: Path, name: str) -> Path:
    """The file of side database ``name`` beside the SQLite store file ``main``."""
    return main.with_name(f"{main.stem}-{name}{main.suffix or '.db'}")


class SideDB:
    """One connection (guarded by a lock) to a side database."""

    def __init__(self, database_url: str, name: str) -> None:
        self.url = database_url
        self.name = name
        self._lock = threading.RLock()
        if database_url.startswith("sqlite:///"):
            main = Path(database_url[len("sqlite:///") :])
            self.path: Path | None = sqlite_side_path(main, name)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn: Any = conn
            self.kind = "sqlite"
        elif database_url.startswith(("postgresql:", "postgres:")):
            import psycopg

            self.path = None
            self._conn = psycopg.connect(database_url, autocommit=True)
            self.kind = "postgresql"
        else:
            raise ValueError(f"unsupported database URL {database_url!r}")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    @contextmanager
    def transaction(self) -> Iterator[SideDB]:
        """Serialised, atomic: ``BEGIN IMMEDIATE`` on SQLite, a transaction on PostgreSQL."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
            try:
                yield self
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self._lock:
            cur = self._conn.execute(self._sql(sql), args)
            return int(cur.rowcount or 0)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return [tuple(r) for r in self._conn.execute(self._sql(sql), args).fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
