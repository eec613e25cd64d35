"""The SQL session both adapters share.

Each adapter supplies a :class:`Dialect` (placeholders, how JSON content goes
in and out, how new keys are allocated) and a DB-API connection; everything
else — writing versions and index rows, reads, history, search execution — is
written once here, in the spirit of a base class that owns the shared steps
and backends that implement a few primitives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import Any

from lienthong.fhir.search_index import IndexRows
from lienthong.storage.base import (
    HistoryPage,
    KeyList,
    SearchPage,
    Stored,
    WriteOp,
    WriteSession,
)
from lienthong.storage.paging import Key
from lienthong.storage.query import SearchQuery
from lienthong.storage.schema import INDEX_TABLES, ROW_TABLES
from lienthong.storage.sql_search import ParamIds, compile_search


class Dialect:
    """What differs between SQL engines; the base is SQLite's."""

    name = "sqlite"
    content_param = "?"
    content_column = "v.content"

    def sql(self, text: str) -> str:
        return text

    def content_in(self, content: bytes | None) -> Any:
        return content

    def content_out(self, value: Any) -> bytes | None:
        return value

    def insert_rows(
        self, cur: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert many rows (``content`` already in the form ``content_in`` gives)."""
        marks = ", ".join(self.content_param if c == "content" else "?" for c in columns)
        cur.executemany(
            self.sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"), rows
        )

    def allocate_pks(self, cur: Any, n: int, last: int) -> list[int]:
        """``n`` fresh resource keys above ``last``, the highest this session holds."""
        raise NotImplementedError


_HISTORY_ORDER = "v.last_updated DESC, v.pk DESC, v.version DESC"
_STORED_COLS = "r.pk, r.res_type, r.res_id, r.version, r.last_updated, r.deleted"
_INDEX_ROW_FIELDS = [f.name for f in fields(IndexRows)]
_RESOURCE_COLS = ("pk", "res_type", "res_id", "version", "last_updated", "deleted")
_VERSION_COLS = ("pk", "version", "res_type", "res_id", "last_updated", "method", "content")
_INDEX_COLS = {table: ("pk", "sp", *(c for c, _ in cols)) for table, cols in INDEX_TABLES.items()}


class SqlSession(WriteSession):
    """A session on one DB-API connection; writable when ``writable`` is set."""

    def __init__(self, conn: Any, dialect: Dialect, params: ParamIds, writable: bool) -> None:
        self.conn = conn
        self.dialect = dialect
        self.params = params
        self.writable = writable
        self._pending: list[WriteOp] = []
        self._pk_pool: list[int] = []
        self._last_pk = 0  # the highest key this session has allocated
        self._savepoints = 0  # how deep the open savepoints are

    # -- primitives -----------------------------------------------------

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._pending:
            self.flush()  # reads in a write session see its own writes
        cur = self.conn.cursor()
        try:
            cur.execute(self.dialect.sql(sql), args)
            return list(cur.fetchall())
        finally:
            cur.close()

    def _stored(self, row: tuple[Any, ...]) -> Stored:
        pk, res_type, res_id, version, updated, deleted, content, method = row
        return Stored(
            pk=pk,
            res_type=res_type,
            res_id=res_id,
            version=version,
            last_updated=updated + "Z",
            deleted=bool(deleted),
            content=self.dialect.content_out(content),
            method=method,
        )

    def _current(self, where: str, args: Sequence[Any]) -> list[Stored]:
        rows = self._all(
            f"SELECT {_STORED_COLS}, {self.dialect.content_column}, v.method FROM resource r "
            f"JOIN resource_version v ON v.pk = r.pk AND v.version = r.version WHERE {where}",
            args,
        )
        return [self._stored(r) for r in rows]

    def side(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a side table of this database (the person index) inside
        this session's transaction; returns the rows it selects, if any."""
        if self._pending:
            self.flush()
        cur = self.conn.cursor()
        try:
            cur.execute(self.dialect.sql(sql), args)
            return list(cur.fetchall()) if cur.description is not None else []
        finally:
            cur.close()

    def side_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``side`` for one statement over many rows."""
        if not rows:
            return
        if self._pending:
            self.flush()
        cur = self.conn.cursor()
        try:
            cur.executemany(self.dialect.sql(sql), rows)
        finally:
            cur.close()

    # -- reads ----------------------------------------------------------

    def read(self, res_type: str, res_id: str) -> Stored | None:
        found = self._current("r.res_type = ? AND r.res_id = ?", (res_type, res_id))
        return found[0] if found else None

    def vread(self, res_type: str, res_id: str, version: int) -> Stored | None:
        rows = self._all(
            f"SELECT v.pk, v.res_type, v.res_id, v.version, v.last_updated, "
            f"CASE WHEN v.content IS NULL THEN 1 ELSE 0 END, {self.dialect.content_column}, "
            "v.method FROM resource r JOIN resource_version v ON v.pk = r.pk "
            "WHERE r.res_type = ? AND r.res_id = ? AND v.version = ?",
            (res_type, res_id, version),
        )
        return self._stored(rows[0]) if rows else None

    def read_many(self, keys: list[tuple[str, str]], include_deleted: bool = False) -> list[Stored]:
        out: list[Stored] = []
        live = "" if include_deleted else "r.deleted = 0 AND "
        for chunk in _chunks(sorted(set(keys)), 200):
            cond = " OR ".join("(r.res_type = ? AND r.res_id = ?)" for _ in chunk)
            args = [x for key in chunk for x in key]
            out.extend(self._current(f"{live}({cond})", args))
        return out

    def _by_pks(self, pks: Sequence[int]) -> list[Stored]:
        """Current versions of ``pks``, in the order given."""
        found: dict[int, Stored] = {}
        for chunk in _chunks(list(pks), 500):
            marks = ", ".join("?" for _ in chunk)
            for s in self._current(f"r.pk IN ({marks})", chunk):
                found[s.pk] = s
        return [found[pk] for pk in pks if pk in found]

    def history(
        self,
        res_type: str | None,
        res_id: str | None,
        since: str | None,
        at: str | None,
        count: int,
        offset: int,
    ) -> HistoryPage:
        where, args = self._history_where(res_type, res_id, since, at)
        total = self._all(f"SELECT COUNT(*) FROM resource_version v WHERE {where}", args)[0][0]
        rows = self._all(
            "SELECT v.pk, v.res_type, v.res_id, v.version, v.last_updated, "
            f"CASE WHEN v.content IS NULL THEN 1 ELSE 0 END, {self.dialect.content_column}, "
            f"v.method FROM resource_version v WHERE {where} "
            f"ORDER BY {_HISTORY_ORDER} LIMIT ? OFFSET ?",
            [*args, count, offset],
        )
        return HistoryPage([self._stored(r) for r in rows], int(total))

    def history_keys(
        self,
        res_type: str | None,
        res_id: str | None,
        since: str | None,
        at: str | None,
        limit: int,
    ) -> KeyList:
        where, args = self._history_where(res_type, res_id, since, at)
        rows = self._all(
            f"SELECT v.pk, v.version FROM resource_version v WHERE {where} "
            f"ORDER BY {_HISTORY_ORDER} LIMIT ?",
            [*args, limit],
        )
        keys = [(int(pk), int(version)) for pk, version in rows]
        if len(keys) < limit:
            return KeyList(keys, len(keys))
        total = self._all(f"SELECT COUNT(*) FROM resource_version v WHERE {where}", args)[0][0]
        return KeyList(keys, int(total))

    def _history_where(
        self, res_type: str | None, res_id: str | None, since: str | None, at: str | None
    ) -> tuple[str, list[Any]]:
        conds: list[str] = []
        args: list[Any] = []
        if res_id is not None:
            conds.append("v.pk = (SELECT pk FROM resource WHERE res_type = ? AND res_id = ?)")
            args += [res_type, res_id]
        elif res_type is not None:
            conds.append("v.res_type = ?")
            args.append(res_type)
        if since is not None:
            conds.append("v.last_updated >= ?")
            args.append(since)
        if at is not None:
            # the versions current at that instant: the newest of each resource not after it
            conds.append("v.last_updated <= ?")
            conds.append(
                "NOT EXISTS (SELECT 1 FROM resource_version w WHERE w.pk = v.pk "
                "AND w.version > v.version AND w.last_updated <= ?)"
            )
            args += [at, at]
        return " AND ".join(conds) or "1 = 1", args

    def versions(self, keys: list[Key]) -> list[Stored]:
        found: dict[Key, Stored] = {}
        for chunk in _chunks(sorted(set(keys)), 200):
            cond = " OR ".join("(v.pk = ? AND v.version = ?)" for _ in chunk)
            rows = self._all(
                "SELECT v.pk, v.res_type, v.res_id, v.version, v.last_updated, "
                f"CASE WHEN v.content IS NULL THEN 1 ELSE 0 END, {self.dialect.content_column}, "
                f"v.method FROM resource_version v WHERE {cond}",
                [x for key in chunk for x in key],
            )
            for row in rows:
                s = self._stored(row)
                found[(s.pk, s.version)] = s
        return [found[key] for key in keys if key in found]

    def search(self, query: SearchQuery) -> SearchPage:
        compiled = compile_search(query, self.params)
        pks = [row[0] for row in self._all(compiled.page_sql, compiled.page_args)]
        total = None
        if query.with_total:
            if query.offset == 0 and len(pks) < query.count:
                total = len(pks)
            else:
                total = int(self._all(compiled.count_sql, compiled.count_args)[0][0])
        return SearchPage(self._by_pks(pks), total)

    def search_keys(self, query: SearchQuery, limit: int) -> KeyList:
        compiled = compile_search(replace(query, count=limit, offset=0), self.params)
        rows = self._all(compiled.key_sql, compiled.page_args)
        keys = [(int(pk), int(version)) for pk, version in rows]
        total = None
        if query.with_total:
            if len(keys) < limit:
                total = len(keys)
            else:
                total = int(self._all(compiled.count_sql, compiled.count_args)[0][0])
        return KeyList(keys, total)

    def referenced(self, pks: list[int], ref_params: list[tuple[str, str]] | None) -> list[Stored]:
        if not pks:
            return []
        keys: list[tuple[str, str]] = []
        for chunk in _chunks(pks, 500):
            cond = f"pk IN ({', '.join('?' for _ in chunk)})"
            args: list[Any] = list(chunk)
            if ref_params is not None:
                sps = [self.params.id(t, c) for t, c in ref_params]
                cond += f" AND sp IN ({', '.join('?' for _ in sps)})"
                args += sps
            rows = self._all(
                "SELECT DISTINCT target_type, target_id FROM idx_reference "
                f"WHERE {cond} AND target_id IS NOT NULL",
                args,
            )
            keys.extend((t, i) for t, i in rows if t)
        return self.read_many(keys)

    def referencing(
        self, targets: list[tuple[str, str]], ref_params: list[tuple[str, str]] | None
    ) -> list[Stored]:
        if not targets:
            return []
        found: list[int] = []
        for chunk in _chunks(targets, 200):
            cond = " OR ".join("(target_id = ? AND target_type = ?)" for _ in chunk)
            args: list[Any] = [x for t, i in chunk for x in (i, t)]
            sp_cond = ""
            if ref_params is not None:
                sps = [self.params.id(t, c) for t, c in ref_params]
                sp_cond = f" AND sp IN ({', '.join('?' for _ in sps)})"
                args += sps
            rows = self._all(f"SELECT DISTINCT pk FROM idx_reference WHERE ({cond}){sp_cond}", args)
            found.extend(r[0] for r in rows)
        return self._by_pks(sorted(set(found)))

    def references_from(self, query: SearchQuery, ref_code: str, target_type: str) -> set[str]:
        assert query.resource_type is not None
        compiled = compile_search(query, self.params)
        rows = self._all(
            "SELECT DISTINCT x.target_id FROM idx_reference x WHERE x.sp = ? "
            f"AND x.target_type = ? AND x.pk IN ({compiled.pk_sql})",
            [self.params.id(query.resource_type, ref_code), target_type, *compiled.count_args],
        )
        return {r[0] for r in rows}

    def compartments(self, stored: list[Stored]) -> dict[int, frozenset[str]]:
        found: dict[int, set[str]] = {s.pk: set() for s in stored}
        for s in stored:
            if s.res_type == "Patient":
                found[s.pk].add(s.res_id)
        pks = list(found)
        for chunk in _chunks(pks, 500):
            marks = ", ".join("?" for _ in chunk)
            for pk, patient in self._all(
                f"SELECT pk, target_id FROM idx_reference WHERE pk IN ({marks}) "
                "AND target_type = 'Patient'",
                chunk,
            ):
                found[pk].add(patient)
        return {pk: frozenset(p) for pk, p in found.items()}

    # -- writes ---------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[int]:
        """Write versions. New resources are buffered and written in bulk at the next read
        or at commit (one ``executemany`` per table for a whole transaction); a new
        version of an existing resource is written at once, after the buffer."""
        if not self.writable:
            raise RuntimeError("write on a read-only session")
        new = [op for op in ops if op.pk is None]
        existing = [op for op in ops if op.pk is not None]
        for op, pk in zip(new, self._allocate(len(new)), strict=True):
            op.pk = pk
        self._pending.extend(new)
        if existing or len(self._pending) >= 5000:
            self.flush()
        if existing:
            self._execute_writes([], existing)
        return [op.pk for op in ops if op.pk is not None]

    def current_versions(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
        return {(s.res_type, s.res_id): s for s in self.read_many(keys, include_deleted=True)}

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """``SAVEPOINT`` … ``RELEASE``, or ``ROLLBACK TO`` when the block raises; writes
        buffered before it are flushed first, so a rollback drops only its own."""
        if not self.writable:
            raise RuntimeError("savepoint on a read-only session")
        self.flush()
        self._savepoints += 1
        name = f"lt_sp{self._savepoints}"
        cur = self.conn.cursor()
        try:
            cur.execute(f"SAVEPOINT {name}")
            try:
                yield
                self.flush()
            except BaseException:
                self._pending = []
                cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
                cur.execute(f"RELEASE SAVEPOINT {name}")
                raise
            cur.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._savepoints -= 1
            cur.close()

    def flush(self) -> None:
        """Write the buffered new resources."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._execute_writes(pending, [])

    def _allocate(self, n: int) -> list[int]:
        if n == 0:
            return []
        if len(self._pk_pool) < n:
            cur = self.conn.cursor()
            try:
                fresh = self.dialect.allocate_pks(cur, max(n, 256), self._last_pk)
            finally:
                cur.close()
            self._pk_pool.extend(fresh)
            self._last_pk = max(fresh)
        taken, self._pk_pool = self._pk_pool[:n], self._pk_pool[n:]
        return taken

    def _execute_writes(self, new: list[WriteOp], existing: list[WriteOp]) -> None:
        cur = self.conn.cursor()
        ops = new + existing
        try:
            if new:
                self.dialect.insert_rows(
                    cur,
                    "resource",
                    _RESOURCE_COLS,
                    [
                        (
                            op.pk,
                            op.res_type,
                            op.res_id,
                            op.version,
                            _index_time(op.last_updated),
                            0 if op.content is not None else 1,
                        )
                        for op in new
                    ],
                )
            for op in existing:
                cur.execute(
                    self.dialect.sql(
                        "UPDATE resource SET version = ?, last_updated = ?, deleted = ? "
                        "WHERE pk = ? AND version = ?"
                    ),
                    (
                        op.version,
                        _index_time(op.last_updated),
                        0 if op.content is not None else 1,
                        op.pk,
                        op.version - 1,
                    ),
                )
                if cur.rowcount != 1:
                    raise ConcurrentUpdate(op.res_type, op.res_id)
            if existing:
                pk_args = [(op.pk,) for op in existing]
                for table in INDEX_TABLES:
                    cur.executemany(self.dialect.sql(f"DELETE FROM {table} WHERE pk = ?"), pk_args)
            self.dialect.insert_rows(
                cur,
                "resource_version",
                _VERSION_COLS,
                [
                    (
                        op.pk,
                        op.version,
                        op.res_type,
                        op.res_id,
                        _index_time(op.last_updated),
                        op.method,
                        self.dialect.content_in(op.content),
                    )
                    for op in ops
                ],
            )
            self._write_index(cur, ops)
        finally:
            cur.close()

    def _write_index(self, cur: Any, ops: Iterable[WriteOp]) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in INDEX_TABLES}
        sp_id = self.params.id
        for op in ops:
            if op.index is None or op.content is None:
                continue
            pk = op.pk
            for attr in _INDEX_ROW_FIELDS:
                entries = getattr(op.index, attr)
                if entries:
                    target = rows[ROW_TABLES[attr]]
                    rt = op.res_type
                    for entry in entries:
                        target.append((pk, sp_id(rt, entry[0]), *entry[1:]))
        for table, table_rows in rows.items():
            if table_rows:
                self.dialect.insert_rows(cur, table, _INDEX_COLS[table], table_rows)


class ConcurrentUpdate(Exception):
    """Another writer changed the resource between our read and our write."""

    def __init__(self, res_type: str, res_id: str) -> None:
        super().__init__(f"{res_type}/{res_id} was changed by another request; retry")
        self.res_type = res_type
        self.res_id = res_id


def _index_time(instant: str) -> str:
    """``2026-01-02T03:04:05.123456Z`` -> the 26-character UTC form the index compares."""
    return instant[:26]


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
