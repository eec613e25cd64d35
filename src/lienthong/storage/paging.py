"""Paging snapshots: the ordered result of a search or history, kept so its pages hold still.

A search that needs more than one page stores the keys of what it matched -
``(pk, version)`` of each resource version, in result order, at most
``LIENTHONG_PAGING_MAX_IDS`` of them - under an unguessable id, and its page
links name that id and an offset. Every later page is cut from that list, so
resources created, updated or deleted meanwhile neither shift, repeat nor drop
entries, and any server process on the same database can answer the link.

The snapshot lives beside the store (:class:`~lienthong.storage.side_tables.SideDB`:
the same PostgreSQL database, or ``lienthong-paging.db`` next to the SQLite
file), so saving it never waits behind a long write transaction on the
resources. Keys are kept in chunks of :data:`CHUNK` per row. A snapshot expires
``LIENTHONG_PAGING_TTL`` seconds after the search; expired snapshots are deleted
lazily, when a later search saves one (at most once a minute per process).

Tables (created on first use, idempotent)::

    search_snapshot (id PK, owner, kind, target, params, total, size, complete,
                     created, expires)
    search_snapshot_chunk (id, chunk, keys, PK (id, chunk))
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from lienthong.storage.side_tables import SideDB

CHUNK = 1000  # keys per stored row
CLEANUP_EVERY = 60.0  # seconds between two sweeps of expired snapshots in one process

Key = tuple[int, int]  # (resource pk, version)


@dataclass(frozen=True)
class Snapshot:
    """One stored result list. ``kind`` is ``search`` or ``history``; ``target`` what was
    searched (a resource type, ``Patient/1`` for an instance history, "" for all);
    ``params`` the search parameters as understood; ``size`` how many keys are kept;
    ``complete`` whether they are all the matches (else the search hit the bound)."""

    id: str
    owner: str | None
    kind: str
    target: str
    params: list[tuple[str, str]]
    total: int | None
    size: int
    complete: bool
    created: float
    expires: float


class PagingSnapshots:
    """Save, find and cut pages from snapshots; one per store, shared by its threads."""

    def __init__(self, database_url: str, clock: Callable[[], float] = time.time) -> None:
        self.db = SideDB(database_url, "paging")
        self.clock = clock
        self._last_cleanup = 0.0
        self._lock = threading.Lock()
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        integer = "INTEGER" if self.db.kind == "sqlite" else "BIGINT"
        statements = [
            f"""CREATE TABLE IF NOT EXISTS search_snapshot (
                id TEXT PRIMARY KEY,
                owner TEXT,
                kind TEXT NOT NULL,
                target TEXT NOT NULL,
                params TEXT NOT NULL,
                total {integer},
                size {integer} NOT NULL,
                complete SMALLINT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                expires DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS search_snapshot_expires ON search_snapshot (expires)",
            f"""CREATE TABLE IF NOT EXISTS search_snapshot_chunk (
                id TEXT NOT NULL,
                chunk {integer} NOT NULL,
                keys TEXT NOT NULL,
                PRIMARY KEY (id, chunk))""",
        ]
        with self.db.transaction():
            if self.db.kind == "postgresql":
                # concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL
                self.db.query("SELECT pg_advisory_xact_lock(7305431002)")
            for sql in statements:
                self.db.execute(sql)

    def save(
        self,
        *,
        kind: str,
        target: str,
        params: list[tuple[str, str]],
        keys: list[Key],
        total: int | None,
        complete: bool,
        ttl: float,
        owner: str | None = None,
    ) -> Snapshot:
        now = self.clock()
        self._cleanup(now)
        snap = Snapshot(
            id=secrets.token_urlsafe(18),
            owner=owner,
            kind=kind,
            target=target,
            params=list(params),
            total=total,
            size=len(keys),
            complete=complete,
            created=now,
            expires=now + ttl,
        )
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO search_snapshot (id, owner, kind, target, params, total, size, "
                "complete, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    snap.id,
                    owner,
                    kind,
                    target,
                    orjson.dumps(snap.params).decode(),
                    total,
                    snap.size,
                    1 if complete else 0,
                    now,
                    snap.expires,
                ),
            )
            for n in range(0, len(keys), CHUNK):
                flat = [x for key in keys[n : n + CHUNK] for x in key]
                self.db.execute(
                    "INSERT INTO search_snapshot_chunk (id, chunk, keys) VALUES (?, ?, ?)",
                    (snap.id, n // CHUNK, orjson.dumps(flat).decode()),
                )
        return snap

    def load(self, snapshot_id: str, owner: str | None = None) -> Snapshot | None:
        """The snapshot, None when it is unknown, expired, or another owner's."""
        rows = self.db.query(
            "SELECT id, owner, kind, target, params, total, size, complete, created, expires "
            "FROM search_snapshot WHERE id = ?",
            (snapshot_id,),
        )
        if not rows:
            return None
        sid, own, kind, target, params, total, size, complete, created, expires = rows[0]
        if float(expires) <= self.clock() or own != owner:
            return None
        return Snapshot(
            id=sid,
            owner=own,
            kind=kind,
            target=target,
            params=[(str(k), str(v)) for k, v in orjson.loads(params)],
            total=None if total is None else int(total),
            size=int(size),
            complete=bool(complete),
            created=float(created),
            expires=float(expires),
        )

    def keys(self, snap: Snapshot, start: int, stop: int) -> list[Key]:
        """Keys ``start`` to ``stop`` (exclusive) of the snapshot's list."""
        stop = min(stop, snap.size)
        if start >= stop:
            return []
        rows = self.db.query(
            "SELECT chunk, keys FROM search_snapshot_chunk WHERE id = ? AND chunk >= ? "
            "AND chunk <= ? ORDER BY chunk",
            (snap.id, start // CHUNK, (stop - 1) // CHUNK),
        )
        out: list[Key] = []
        for chunk, raw in rows:
            flat = orjson.loads(raw)
            base = int(chunk) * CHUNK
            for i in range(0, len(flat), 2):
                if start <= base + i // 2 < stop:
                    out.append((int(flat[i]), int(flat[i + 1])))
        return out

    def _cleanup(self, now: float) -> None:
        with self._lock:
            if now - self._last_cleanup < CLEANUP_EVERY:
                return
            self._last_cleanup = now
        with self.db.transaction():
            self.db.execute(
                "DELETE FROM search_snapshot_chunk WHERE id IN "
                "(SELECT id FROM search_snapshot WHERE expires <= ?)",
                (now,),
            )
            self.db.execute("DELETE FROM search_snapshot WHERE expires <= ?", (now,))

    def close(self) -> None:
        self.db.close()


class OwnedSnapshots(PagingSnapshots):
    """The snapshots of one user: what they save is theirs, and they find only their own
    (another user's page link is as unknown to them as an expired one)."""

    def __init__(
        self, inner: PagingSnapshots, owner: str
    ) -> None:  # a view: the connection is inner's
        self.inner = inner
        self.owner = owner

    def close(self) -> None:  # the view does not own the connection
        pass

    def save(
        self,
        *,
        kind: str,
        target: str,
        params: list[tuple[str, str]],
        keys: list[Key],
        total: int | None,
        complete: bool,
        ttl: float,
        owner: str | None = None,
    ) -> Snapshot:
        return self.inner.save(
            kind=kind,
            target=target,
            params=params,
            keys=keys,
            total=total,
            complete=complete,
            ttl=ttl,
            owner=self.owner,
        )

    def load(self, snapshot_id: str, owner: str | None = None) -> Snapshot | None:
        return self.inner.load(snapshot_id, self.owner)

    def keys(self, snap: Snapshot, start: int, stop: int) -> list[Key]:
        return self.inner.keys(snap, start, stop)
