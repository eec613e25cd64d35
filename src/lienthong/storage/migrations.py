"""Schema versions of the resource store and the ordered migrations between them.

The version is recorded in the database itself, one row per applied migration in
``schema_version``. A database made before versions were recorded (the schema of
``schema.ddl`` with no ``schema_version`` table) is version 1; an empty database is 0.

Each migration is a number, a description, whether it only *adds* things (tables,
indexes, nullable columns: old rows stay valid and nothing is rewritten), and the
step itself, a function of a DB-API cursor and the backend's name. Additive
migrations run by themselves when a store is opened; any other kind must be run
by the operator with ``lienthong migrate`` (after a backup), and until then the
store refuses to open. A database whose version is newer than this code knows
also refuses, rather than be written by code that does not know its tables.

``schema.ddl`` is the version-1 baseline. It is only ``CREATE ... IF NOT EXISTS`` and is
run on every open (before the pending migrations), so a table or index added there
reaches existing databases; anything else (a new column, a changed type, rewritten
rows, a dropped table) is a new entry at the end of :data:`MIGRATIONS`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lienthong.storage.schema import POSTGRES_TYPES, SQLITE_TYPES, ddl

#: PostgreSQL advisory lock held while a store's schema is created or migrated
INIT_LOCK = 727274


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this code as it is."""


Step = Callable[[Any, str], None]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    additive: bool
    step: Step


def _sql(backend: str, text: str) -> str:
    return text.replace("?", "%s") if backend == "postgresql" else text


def _baseline(cur: Any, backend: str) -> None:
    if backend == "postgresql":
        cur.execute("CREATE SEQUENCE IF NOT EXISTS resource_pk_seq")
    for stmt in ddl(POSTGRES_TYPES if backend == "postgresql" else SQLITE_TYPES):
        cur.execute(stmt)


def _version_table(cur: Any, backend: str) -> None:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "description TEXT NOT NULL, applied TEXT NOT NULL)"
    )
    # the baseline was applied before there was anywhere to record it
    cur.execute(
        _sql(
            backend,
            "INSERT INTO schema_version (version, description, applied) "
            "SELECT 1, ?, ? WHERE NOT EXISTS (SELECT 1 FROM schema_version WHERE version = 1)",
        ),
        (MIGRATIONS[0].description, _now()),
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "resources, versions, search index and person index", True, _baseline),
    Migration(2, "schema versions recorded in schema_version", True, _version_table),
)


def latest(migrations: Sequence[Migration] | None = None) -> int:
    return (MIGRATIONS if migrations is None else migrations)[-1].version


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _has_table(cur: Any, backend: str, table: str) -> bool:
    if backend == "postgresql":
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    else:
        cur.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
    return bool(cur.fetchone()[0])


def current_version(cur: Any, backend: str) -> int:
    """The database's schema version: 0 empty, 1 made before versions were recorded."""
    if _has_table(cur, backend, "schema_version"):
        cur.execute("SELECT MAX(version) FROM schema_version")
        return int(cur.fetchone()[0] or 0)
    return 1 if _has_table(cur, backend, "resource") else 0


def pending(
    cur: Any, backend: str, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """The migrations not yet applied, in order; :class:`SchemaError` when the database
    is newer than ``migrations``."""
    migrations = MIGRATIONS if migrations is None else migrations
    version = current_version(cur, backend)
    if version > latest(migrations):
        raise SchemaError(
            f"the database has schema version {version}, newer than this lienthong knows "
            f"({latest(migrations)}): upgrade lienthong"
        )
    return [m for m in migrations if m.version > version]


def migrate(
    cur: Any,
    backend: str,
    *,
    on_open: bool,
    migrations: Sequence[Migration] | None = None,
) -> list[Migration]:
    """Apply the pending migrations in order, recording each; returns those applied.

    The caller holds the transaction (and, on PostgreSQL, the initialisation lock), so
    a failing step leaves the database at the version it had. ``on_open``: refuse with
    :class:`SchemaError`, before applying anything, when a pending migration is not
    additive.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    todo = pending(cur, backend, migrations)
    if on_open:
        blocked = [m for m in todo if not m.additive]
        if blocked:
            names = ", ".join(f"{m.version} ({m.description})" for m in blocked)
            raise SchemaError(
                f"the database needs schema migrations that change existing data: {names}; "
                "back it up, then run `lienthong migrate`"
            )
    if migrations and (not todo or todo[0].version > migrations[0].version):
        migrations[0].step(cur, backend)  # the idempotent baseline, see the module's notes
    for m in todo:
        m.step(cur, backend)
        if m.version >= 2:  # from 2 on there is a schema_version table to record in
            cur.execute(
                _sql(
                    backend,
                    "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
                ),
                (m.version, m.description, _now()),
            )
    return todo


def migrate_database(
    url: str, migrations: Sequence[Migration] | None = None
) -> tuple[int, list[Migration]]:
    """``lienthong migrate``: bring the database ``url`` names to the newest schema, all
    migrations in one transaction; returns the version it had and the ones applied."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not os.path.exists(path):
            raise SchemaError(f"no database at {path}")
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.cursor()
                before = current_version(cur, "sqlite")
                applied = migrate(cur, "sqlite", on_open=False, migrations=migrations)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()
        return before, applied
    if url.startswith(("postgresql:", "postgres:")):
        import psycopg

        with psycopg.connect(url) as pg, pg.transaction(), pg.cursor() as pcur:
            pcur.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK,))
            before = current_version(pcur, "postgresql")
            return before, migrate(pcur, "postgresql", on_open=False, migrations=migrations)
    raise SchemaError(f"unsupported database URL {url!r}")
