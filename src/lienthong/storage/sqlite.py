"""The embedded default store: one SQLite file in WAL mode.

Writes are serialised through one writer connection (``BEGIN IMMEDIATE``,
guarded by a lock so threads queue instead of spinning on SQLITE_BUSY), and
across processes (several server workers, an import beside the server) by an
exclusive ``flock`` on a lock file beside the database, taken before ``BEGIN``:
a waiting writer sleeps in the kernel until the lock is free instead of polling
SQLite's busy handler, whose sleeps grow to 100 ms; readers each use their own
connection, per thread, and run in parallel with the writer thanks to WAL.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lienthong.storage.base import ResourceStore, Session, WriteSession
from lienthong.storage.migrations import current_version, migrate
from lienthong.storage.registry_sync import load_param_ids
from lienthong.storage.sql import Dialect, SqlSession
from lienthong.storage.sql_search import ParamIds

ANALYZE_FROM_ROWS = 1000  # below this the planner's guesses are good enough
ANALYZE_SAMPLE = 1000  # rows ANALYZE looks at per index (PRAGMA analysis_limit)


class SqliteDialect(Dialect):
    name = "sqlite"

    def allocate_pks(self, cur: Any, n: int, last: int) -> list[int]:
        # Safe: called inside BEGIN IMMEDIATE, so no other writer can interleave; keys
        # handed out but not yet written are above MAX(pk) and are skipped.
        cur.execute("SELECT COALESCE(MAX(pk), 0) FROM resource")
        start = max(int(cur.fetchone()[0]), last)
        return list(range(start + 1, start + n + 1))


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA mmap_size = 1073741824")
    return conn


def writer_lock_path(path: Path) -> Path:
    """The lock file writers of every process take their turn on (``lienthong.db.lock``)."""
    return path.with_name(path.name + ".lock")


class SqliteStore(ResourceStore):
    def __init__(self, url: str) -> None:
        if not url.startswith("sqlite:///"):
            raise ValueError(f"expected sqlite:///PATH, got {url!r}")
        self.url = url
        self.path = Path(url[len("sqlite:///") :])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dialect = SqliteDialect()
        self._write_lock = threading.Lock()
        self._lock_fd = os.open(writer_lock_path(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        self._writer = _connect(self.path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                cur = self._writer.cursor()
                migrate(cur, "sqlite", on_open=True)  # only additive ones; else SchemaError
                self.schema_version = current_version(cur, "sqlite")
                self.params: ParamIds = load_param_ids(self._writer.cursor(), self.dialect)
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                self._writer.close()
                os.close(self._lock_fd)
                raise
            self._analyzed_rows = self._rows_at_last_analyze()

    def _reader_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def reader(self) -> Iterator[Session]:
        conn = self._reader_conn()
        conn.execute("BEGIN")  # one snapshot for the whole session
        try:
            yield SqlSession(conn, self.dialect, self.params, writable=False)
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def writer(self) -> Iterator[WriteSession]:
        with self._write_lock, self._process_lock():
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                session = SqlSession(self._writer, self.dialect, self.params, writable=True)
                yield session
                session.flush()
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            else:
                self._writer.execute("COMMIT")
            self._analyze_when_grown()

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        """The writer's turn among processes (the interpreter lock is released while
        waiting)."""
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _analyze_when_grown(self) -> None:
        """Refresh the planner's statistics each time the store has doubled since they
        were taken (sampled: ``analysis_limit``, milliseconds even for gigabytes). Without
        them SQLite would drive a conditional update's identifier look-up through the
        resource table's type index — a scan of every resource of the type, so each
        write would cost more as the store grows; with them it goes through the search
        index row and the primary key. PostgreSQL's autovacuum does this by itself."""
        (rows,) = self._writer.execute("SELECT COALESCE(MAX(pk), 0) FROM resource").fetchone()
        if rows < max(ANALYZE_FROM_ROWS, 2 * self._analyzed_rows):
            return
        self._writer.execute(f"PRAGMA analysis_limit = {ANALYZE_SAMPLE}")
        self._writer.execute("ANALYZE")
        self._analyzed_rows = int(rows)

    def _rows_at_last_analyze(self) -> int:
        try:
            row = self._writer.execute(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = 'resource' LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0  # never analysed: no sqlite_stat1 table yet
        return int(str(row[0]).split()[0]) if row else 0

    def counts(self) -> dict[str, int]:
        with self.reader() as s:
            assert isinstance(s, SqlSession)
            rows = s._all(
                "SELECT res_type, COUNT(*) FROM resource WHERE deleted = 0 GROUP BY res_type"
            )
        return {t: int(n) for t, n in rows}

    def optimize(self) -> None:
        """Refresh the planner's statistics after a large load."""
        with self._write_lock:
            self._writer.execute("PRAGMA optimize")
            self._writer.execute("ANALYZE")

    def close(self) -> None:
        self.close_paging()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()
            os.close(self._lock_fd)
