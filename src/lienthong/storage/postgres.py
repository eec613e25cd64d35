"""The production store: PostgreSQL through psycopg 3, resources as JSONB.

Same schema and SQL as the embedded store (see ``schema.py``); keys come from
a sequence so concurrent writers never collide, and optimistic version checks
in ``SqlSession.write`` turn a lost race into a clear conflict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg_pool import ConnectionPool

from lienthong.storage.base import ResourceStore, Session, WriteSession
from lienthong.storage.migrations import INIT_LOCK, current_version, migrate
from lienthong.storage.registry_sync import load_param_ids
from lienthong.storage.sql import Dialect, SqlSession


class PostgresDialect(Dialect):
    name = "postgresql"
    content_param = "?::jsonb"
    content_column = "v.content::text"

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def sql(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            out = self._cache[text] = text.replace("?", "%s")
        return out

    def content_in(self, content: bytes | None) -> Any:
        return None if content is None else content.decode()

    def content_out(self, value: Any) -> bytes | None:
        return None if value is None else value.encode()

    def insert_rows(
        self, cur: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        # COPY: one stream per table instead of a protocol round of messages per row
        if len(rows) < 4:
            super().insert_rows(cur, table, columns, rows)
            return
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def allocate_pks(self, cur: Any, n: int, last: int) -> list[int]:
        cur.execute("SELECT nextval('resource_pk_seq') FROM generate_series(1, %s)", (n,))
        return [int(r[0]) for r in cur.fetchall()]


class PostgresStore(ResourceStore):
    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        self.dialect = PostgresDialect()
        self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True)
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK,))  # one at a time
                migrate(cur, "postgresql", on_open=True)  # only additive ones; else SchemaError
                self.schema_version = current_version(cur, "postgresql")
                self.params = load_param_ids(cur, self.dialect)
        except BaseException:
            self.pool.close()
            raise

    @contextmanager
    def reader(self) -> Iterator[Session]:
        with self.pool.connection() as conn, conn.transaction():
            yield SqlSession(conn, self.dialect, self.params, writable=False)

    @contextmanager
    def writer(self) -> Iterator[WriteSession]:
        with self.pool.connection() as conn, conn.transaction():
            session = SqlSession(conn, self.dialect, self.params, writable=True)
            yield session
            session.flush()

    def counts(self) -> dict[str, int]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT res_type, COUNT(*) FROM resource WHERE deleted = 0 GROUP BY res_type"
            )
            return {t: int(n) for t, n in cur.fetchall()}

    def optimize(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("ANALYZE")

    def close(self) -> None:
        self.close_paging()
        self.pool.close()
