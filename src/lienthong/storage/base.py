"""The storage interface every adapter implements.

A store hands out sessions: :meth:`ResourceStore.reader` for reads and
:meth:`ResourceStore.writer` for one atomic unit of writes (a transaction
bundle, an import batch, a single update). Sessions speak in stored JSON
bytes plus the search index rows computed by the FHIR engine; they know
nothing of HTTP, validation or policy.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass

from lienthong.fhir.search_index import IndexRows
from lienthong.storage.paging import Key, PagingSnapshots
from lienthong.storage.query import SearchQuery

_PAGING_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of one resource as kept in the store."""

    pk: int
    res_type: str
    res_id: str
    version: int
    last_updated: str  # FHIR instant, e.g. 2026-11-22T01:02:03.456789+00:00
    deleted: bool
    content: bytes | None  # the resource JSON with id and meta; None when deleted
    method: str = "PUT"


@dataclass(slots=True)
class WriteOp:
    """A new version to write. ``pk`` is the existing resource's key, None when new."""

    res_type: str
    res_id: str
    version: int
    last_updated: str
    method: str  # POST, PUT or DELETE
    content: bytes | None
    index: IndexRows | None
    pk: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[Stored]
    total: int


@dataclass(frozen=True, slots=True)
class SearchPage:
    matches: list[Stored]
    total: int | None


@dataclass(frozen=True, slots=True)
class KeyList:
    """The ``(pk, version)`` keys of the first matches of a search or history, in result
    order (for a paging snapshot), with the total when asked for."""

    keys: list[Key]
    total: int | None


class Session(ABC):
    """Reads, consistent within the session."""

    @abstractmethod
    def read(self, res_type: str, res_id: str) -> Stored | None:
        """The current version (possibly a deletion marker), or None if never existed."""

    @abstractmethod
    def vread(self, res_type: str, res_id: str, version: int) -> Stored | None: ...

    @abstractmethod
    def history(
        self,
        res_type: str | None,
        res_id: str | None,
        since: str | None,
        at: str | None,
        count: int,
        offset: int,
    ) -> HistoryPage:
        """Versions newest first; ``since``/``at`` are UTC index timestamps."""

    @abstractmethod
    def history_keys(
        self,
        res_type: str | None,
        res_id: str | None,
        since: str | None,
        at: str | None,
        limit: int,
    ) -> KeyList:
        """The keys of the first ``limit`` versions :meth:`history` lists, in its order,
        and the total."""

    @abstractmethod
    def search(self, query: SearchQuery) -> SearchPage: ...

    @abstractmethod
    def search_keys(self, query: SearchQuery, limit: int) -> KeyList:
        """The keys of the first ``limit`` matches in the query's order (its own offset and
        count aside), and the total when ``query.with_total``."""

    @abstractmethod
    def versions(self, keys: list[Key]) -> list[Stored]:
        """The given versions (a deletion marker included) that exist, in the order given."""

    @abstractmethod
    def read_many(self, keys: list[tuple[str, str]], include_deleted: bool = False) -> list[Stored]:
        """Current versions of the given (type, id) pairs that exist (deleted ones only
        when asked)."""

    @abstractmethod
    def referenced(self, pks: list[int], ref_params: list[tuple[str, str]] | None) -> list[Stored]:
        """Resources that the resources ``pks`` point to through ``ref_params``
        ((type, code) pairs; None for every reference parameter) — for ``_include``."""

    @abstractmethod
    def referencing(
        self, targets: list[tuple[str, str]], ref_params: list[tuple[str, str]] | None
    ) -> list[Stored]:
        """Resources pointing at ``targets`` through ``ref_params`` — for ``_revinclude``."""

    @abstractmethod
    def references_from(self, query: SearchQuery, ref_code: str, target_type: str) -> set[str]:
        """Ids of the ``target_type`` resources that the resources matching ``query``
        refer to through their ``ref_code`` parameter (all matches, no paging)."""

    @abstractmethod
    def compartments(self, stored: list[Stored]) -> dict[int, frozenset[str]]:
        """The patient ids whose compartment each current resource is in (by pk), from
        the reference index; a Patient is in its own."""


class WriteSession(Session):
    """A session inside one atomic write transaction."""

    @abstractmethod
    def write(self, ops: list[WriteOp]) -> list[int]:
        """Write new versions and replace their index rows; returns the resource keys."""

    @abstractmethod
    def savepoint(self) -> AbstractContextManager[None]:
        """A unit nested in this transaction: when its block raises, its writes alone are
        undone and the transaction goes on (several transaction bundles in one commit,
        each whole or not at all)."""

    def current_versions(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
        """The current version (a deletion marker included) of each key that exists, as
        :meth:`read` gives it; sessions answer them in one query where they can."""
        found: dict[tuple[str, str], Stored] = {}
        for key in keys:
            stored = self.read(*key)
            if stored is not None:
                found[key] = stored
        return found


class ResourceStore(ABC):
    """One database holding every version of every resource and its search index."""

    url: str
    _paging: PagingSnapshots | None = None

    def paging(self) -> PagingSnapshots:
        """The paging snapshots kept beside this store (opened on first use)."""
        with _PAGING_LOCK:
            if self._paging is None:
                self._paging = PagingSnapshots(self.url)
            return self._paging

    def close_paging(self) -> None:
        with _PAGING_LOCK:
            if self._paging is not None:
                self._paging.close()
                self._paging = None

    @abstractmethod
    def reader(self) -> AbstractContextManager[Session]: ...

    @abstractmethod
    def writer(self) -> AbstractContextManager[WriteSession]:
        """An atomic unit of work: committed when the block ends normally, rolled
        back entirely when it raises."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Current (non-deleted) resources per type."""

    @abstractmethod
    def optimize(self) -> None:
        """Refresh planner statistics after a large load."""


def open_store(url: str, pool_size: int = 8) -> ResourceStore:
    """Open the store a database URL names (``sqlite:///PATH`` or ``postgresql://...``)."""
    if url.startswith("sqlite:"):
        from lienthong.storage.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from lienthong.storage.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
