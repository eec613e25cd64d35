"""The relational schema shared by the SQLite and PostgreSQL adapters.

Resources are kept whole, every version in ``resource_version``; the
``resource`` row points at the current one. Search runs on ``idx_*`` tables
filled at write time from the SearchParameter expressions; each index row
names its parameter by a small integer ``sp`` (see ``search_param``) rather
than repeating the resource type and code.

The PostgreSQL tables carry a ``pk`` column first everywhere so they can be
distributed by resource (or, later, patient compartment) with Citus.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1  # of this baseline (ddl); later versions: storage/migrations.py

# name -> columns after (pk, sp): (column, kind) where kind is text|real
INDEX_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "idx_string": (("value", "text"), ("exact", "text")),
    "idx_token": (("system", "text"), ("code", "text"), ("text", "text")),
    "idx_date": (("low", "text"), ("high", "text")),
    "idx_number": (("low", "real"), ("high", "real")),
    "idx_quantity": (
        ("system", "text"),
        ("code", "text"),
        ("unit", "text"),
        ("low", "real"),
        ("high", "real"),
    ),
    "idx_reference": (("target_type", "text"), ("target_id", "text"), ("url", "text")),
    "idx_uri": (("uri", "text"),),
    "idx_composite": (
        ("system1", "text"),
        ("code1", "text"),
        ("system2", "text"),
        ("code2", "text"),
        ("str2", "text"),
        ("num_low2", "real"),
        ("num_high2", "real"),
        ("date_low2", "text"),
        ("date_high2", "text"),
    ),
}

# IndexRows attribute -> table
ROW_TABLES = {
    "string": "idx_string",
    "token": "idx_token",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "reference": "idx_reference",
    "uri": "idx_uri",
    "composite": "idx_composite",
    "special": "idx_quantity",  # Location.near as coordinates (search_index.near_rows)
}

# the lookup index of each table, after the (pk, sp) one every table has
LOOKUP_INDEXES: dict[str, tuple[str, ...]] = {
    "idx_string": ("sp", "value"),
    "idx_token": ("sp", "code", "system"),
    "idx_date": ("sp", "low", "high"),
    "idx_number": ("sp", "low"),
    "idx_quantity": ("sp", "low"),
    "idx_reference": ("target_id", "target_type", "sp"),
    "idx_uri": ("sp", "uri"),
    "idx_composite": ("sp", "code1", "code2"),
}


@dataclass(frozen=True)
class Types:
    """Column types of one SQL dialect."""

    bigint: str
    text: str
    real: str
    content: str
    pk_column: str


SQLITE_TYPES = Types("INTEGER", "TEXT", "REAL", "BLOB", "pk INTEGER PRIMARY KEY")
# COLLATE "C": byte order, so prefix searches can run as index range scans
POSTGRES_TYPES = Types(
    "BIGINT", 'TEXT COLLATE "C"', "DOUBLE PRECISION", "JSONB", "pk BIGINT PRIMARY KEY"
)


def ddl(t: Types) -> list[str]:
    """CREATE statements for the whole schema, idempotent."""
    stmts = [
        f"CREATE TABLE IF NOT EXISTS meta_info (key {t.text} PRIMARY KEY, value {t.text})",
        f"""CREATE TABLE IF NOT EXISTS search_param (
            sp {t.bigint} PRIMARY KEY, res_type {t.text} NOT NULL, code {t.text} NOT NULL,
            UNIQUE (res_type, code))""",
        f"""CREATE TABLE IF NOT EXISTS resource (
            {t.pk_column},
            res_type {t.text} NOT NULL,
            res_id {t.text} NOT NULL,
            version {t.bigint} NOT NULL,
            last_updated {t.text} NOT NULL,
            deleted SMALLINT NOT NULL DEFAULT 0,
            UNIQUE (res_type, res_id))""",
        "CREATE INDEX IF NOT EXISTS resource_type_updated ON resource (res_type, last_updated)",
        f"""CREATE TABLE IF NOT EXISTS resource_version (
            pk {t.bigint} NOT NULL,
            version {t.bigint} NOT NULL,
            res_type {t.text} NOT NULL,
            res_id {t.text} NOT NULL,
            last_updated {t.text} NOT NULL,
            method {t.text} NOT NULL,
            content {t.content},
            PRIMARY KEY (pk, version))""",
        "CREATE INDEX IF NOT EXISTS resource_version_updated ON resource_version (last_updated)",
    ]
    for table, cols in INDEX_TABLES.items():
        coldefs = ", ".join(f"{c} {t.text if k == 'text' else t.real}" for c, k in cols)
        stmts.append(
            f"CREATE TABLE IF NOT EXISTS {table} (pk {t.bigint} NOT NULL, sp {t.bigint} NOT NULL, "
            f"{coldefs})"
        )
        if table == "idx_reference":
            # covering: the patient-compartment probes of access control and _include
            # read only these columns, so they never touch the table itself
            stmts.append(
                "CREATE INDEX IF NOT EXISTS idx_reference_pk_cover "
                "ON idx_reference (pk, target_type, target_id, sp)"
            )
        else:
            stmts.append(f"CREATE INDEX IF NOT EXISTS {table}_pk ON {table} (pk, sp)")
        lookup = ", ".join(LOOKUP_INDEXES[table])
        stmts.append(f"CREATE INDEX IF NOT EXISTS {table}_lookup ON {table} ({lookup})")
    return stmts + mpi_ddl(t) + ledger_ddl(t)


def mpi_ddl(t: Types) -> list[str]:
    """The master person index (``lienthong.identity.mpi``): in the main database so a
    Patient's resolution commits or rolls back with the write that caused it.

    ``mpi_record``: each source Patient's master and normalised matching features;
    ``mpi_key``: its blocking keys; ``mpi_pair``: pairs for review and the decisions
    taken on them; ``mpi_event``: merges, unmerges and decisions, who and when.
    """
    return [
        f"""CREATE TABLE IF NOT EXISTS mpi_record (
            res_id {t.text} PRIMARY KEY, master_id {t.text} NOT NULL,
            features {t.text} NOT NULL, score {t.real}, how {t.text} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS mpi_record_master ON mpi_record (master_id)",
        f"CREATE TABLE IF NOT EXISTS mpi_key (key {t.text} NOT NULL, res_id {t.text} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS mpi_key_key ON mpi_key (key)",
        "CREATE INDEX IF NOT EXISTS mpi_key_res ON mpi_key (res_id)",
        # covering: the candidate ranking counts a key's records from the index alone
        "CREATE INDEX IF NOT EXISTS mpi_key_key_res ON mpi_key (key, res_id)",
        f"""CREATE TABLE IF NOT EXISTS mpi_pair (
            a_id {t.text} NOT NULL, b_id {t.text} NOT NULL, score {t.real} NOT NULL,
            status {t.text} NOT NULL, detail {t.text}, decided_by {t.text},
            decided_at {t.text}, PRIMARY KEY (a_id, b_id))""",
        "CREATE INDEX IF NOT EXISTS mpi_pair_status ON mpi_pair (status)",
        f"""CREATE TABLE IF NOT EXISTS mpi_event (
            id {t.text} PRIMARY KEY, at {t.text} NOT NULL, who {t.text} NOT NULL,
            action {t.text} NOT NULL, detail {t.text} NOT NULL)""",
    ]


def ledger_ddl(t: Types) -> list[str]:
    """The import ledger (``lienthong.storage.ledger``): what an import has committed, by
    the sha256 of its bytes, written in the same transaction as the data it describes."""
    return [
        f"""CREATE TABLE IF NOT EXISTS import_ledger (
            digest {t.text} PRIMARY KEY, kind {t.text} NOT NULL, source {t.text} NOT NULL,
            resources {t.bigint} NOT NULL, at {t.text} NOT NULL)""",
    ]
