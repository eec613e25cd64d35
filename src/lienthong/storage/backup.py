"""Online backup and restore of a whole deployment: the store and its side databases.

A backup is a directory: the database files and ``manifest.json`` (lienthong and
schema versions, each file with its size and SHA-256, when and from where it was
taken, what it holds).

SQLite: the store and each side database (``lienthong.db``, ``lienthong-access.db``,
``lienthong-audit.db``, ``lienthong-paging.db``) are copied with SQLite's online backup
API while the server runs: each copy is one consistent snapshot of its file. The
files cannot be copied at one instant together, so they are copied in an order that
keeps the copy truthful: the store first, the audit log last (after a short pause for
the audit entries of requests that were finishing), so every write in the store copy
has its audit entry, and the audit log may only describe a few more.

PostgreSQL: the side tables live in the database itself. A request commits its write
and then, in its own transaction, its audit entry, so one snapshot of everything could
hold a write whose entry was still on its way. The backup is therefore two ``pg_dump
-Fc`` files, in the same order as on SQLite: everything but the audit tables from one
snapshot, then (after the same short pause) the audit tables from a later one. Each
dump runs on a snapshot exported by the connection that also counts what the manifest
records, so the counts describe exactly the dumps. Restore replays both in one
transaction (``pg_restore`` to SQL, into one ``psql --single-transaction``): the target
gets the whole backup or nothing.

Encryption (a backup holds the token signing keys and health records): with a key file
the operator keeps elsewhere, each file is encrypted with AES-256-GCM, bound to its
name in the backup. The library's one-shot ``AESGCM`` needs the whole file in memory,
so the streaming GCM cipher of the same library is used, for databases of any size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from glob import glob
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lienthong import __version__
from lienthong.storage.migrations import current_version
from lienthong.storage.side_tables import SIDE_NAMES, sqlite_side_path

MANIFEST = "manifest.json"
FORMAT = "lienthong-backup"
FORMAT_VERSION = 1
ENC_MAGIC = b"LTBK-AESGCM-1\n"
NONCE_BYTES = 12
TAG_BYTES = 16
CHUNK = 1 << 20
#: seconds between copying the store and copying the audit log, for the audit entries of
#: requests whose write was already in the store copy (the entry follows the write at once)
AUDIT_SETTLE_SECONDS = 1.0


class BackupError(RuntimeError):
    """A backup or restore cannot go on; ``problems`` has one line per reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class BackupFile:
    name: str  # in the backup directory
    role: str  # store, access, audit, paging (SQLite); database, audit (PostgreSQL)
    size: int
    sha256: str
    encrypted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "size": self.size,
            "sha256": self.sha256,
            "encrypted": self.encrypted,
        }


@dataclass
class Manifest:
    backend: str
    source: str
    schema_version: int
    resources: int
    audit_entries: int
    files: list[BackupFile] = field(default_factory=list)
    encryption: dict[str, str] | None = None
    created: str = ""
    lienthong_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "lienthong_version": self.lienthong_version,
            "schema_version": self.schema_version,
            "created": self.created,
            "backend": self.backend,
            "source": self.source,
            "encryption": self.encryption,
            "contents": {"resources": self.resources, "audit_entries": self.audit_entries},
            "files": [f.to_json() for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        contents = data["contents"]
        return cls(
            backend=str(data["backend"]),
            source=str(data["source"]),
            schema_version=int(data["schema_version"]),
            resources=int(contents["resources"]),
            audit_entries=int(contents["audit_entries"]),
            files=[
                BackupFile(
                    str(f["name"]),
                    str(f["role"]),
                    int(f["size"]),
                    str(f["sha256"]),
                    bool(f["encrypted"]),
                )
                for f in data["files"]
            ],
            encryption=data.get("encryption"),
            created=str(data["created"]),
            lienthong_version=str(data["lienthong_version"]),
        )


# -- keys and encryption ---------------------------------------------------------


def new_key_file(path: Path) -> None:
    """Write a new random 256-bit key (base64 text), readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(os.urandom(32)).decode() + "\n")


def load_key(path: Path) -> bytes:
    """A 256-bit key from a file: 32 raw bytes, or 64 hex digits, or base64 text."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BackupError([f"key file {path}: {exc.strerror or exc}"]) from None
    if len(raw) == 32:
        return raw
    text = raw.strip()
    decoders: tuple[Callable[[bytes], bytes], ...] = (
        lambda t: bytes.fromhex(t.decode("ascii")),
        base64.urlsafe_b64decode,
        base64.standard_b64decode,
    )
    for decode in decoders:
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise BackupError(
        [f"key file {path}: expected a 256-bit key (32 raw bytes, 64 hex digits or base64)"]
    )


def key_id(key: bytes) -> str:
    """Names the key in the manifest (to tell a wrong key from a damaged file)."""
    return hashlib.sha256(b"lienthong-backup-key\n" + key).hexdigest()[:16]


def _encrypt_stream(key: bytes, name: str, src: IO[bytes], dst: IO[bytes]) -> None:
    nonce = os.urandom(NONCE_BYTES)
    enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(ENC_MAGIC + name.encode())
    dst.write(ENC_MAGIC + nonce)
    while chunk := src.read(CHUNK):
        dst.write(enc.update(chunk))
    dst.write(enc.finalize() + enc.tag)


def _decrypt_file(key: bytes, name: str, src: Path, dst: Path) -> None:
    size = src.stat().st_size
    head = len(ENC_MAGIC) + NONCE_BYTES
    with src.open("rb") as f, dst.open("wb") as out:
        if size < head + TAG_BYTES or f.read(len(ENC_MAGIC)) != ENC_MAGIC:
            raise BackupError([f"{name}: not an encrypted backup file"])
        nonce = f.read(NONCE_BYTES)
        f.seek(size - TAG_BYTES)
        tag = f.read(TAG_BYTES)
        f.seek(head)
        dec = Cipher(algorithms.AES(key), modes.GCM(nonce, tag)).decryptor()
        dec.authenticate_additional_data(ENC_MAGIC + name.encode())
        left = size - head - TAG_BYTES
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            left -= len(chunk)
            out.write(dec.update(chunk))
        try:
            dec.finalize()
        except Exception:  # InvalidTag: altered, or another key
            raise BackupError([f"{name}: decryption failed (wrong key or altered file)"]) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _seal(out: Path, plain: Path, name: str, role: str, key: bytes | None) -> BackupFile:
    """Move ``plain`` to ``out/name`` (encrypted when ``key``) and describe it."""
    target = out / name
    if key is None:
        os.replace(plain, target)
    else:
        with plain.open("rb") as src, _private(target).open("wb") as dst:
            _encrypt_stream(key, name, src, dst)
        plain.unlink()
    return BackupFile(name, role, target.stat().st_size, _sha256(target), key is not None)


def _private(path: Path) -> Path:
    """Create ``path`` empty, readable by its owner only."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return path


# -- URLs ------------------------------------------------------------------------


def redact(url: str) -> str:
    """The database URL without its password."""
    if url.startswith("sqlite:"):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise BackupError([f"expected sqlite:///PATH, got {url!r}"])
    return Path(url[len("sqlite:///") :])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise BackupError([f"{out}: the backup directory is not empty"])
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)


def _write_manifest(out: Path, manifest: Manifest) -> None:
    manifest.created = manifest.created or _now()
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / MANIFEST)  # written last: a backup without it is incomplete


# -- SQLite ----------------------------------------------------------------------


def _sqlite_copy(source: Path, dest: Path) -> None:
    """One consistent snapshot of ``source`` into a new file, by the online backup API
    (all pages in one step, so writers of other connections never restart it)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    try:
        dst = sqlite3.connect(_private(dest))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    finally:
        src.close()


def _sqlite_scalar(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:  # the table was never created
        return 0
    finally:
        conn.close()


def _sqlite_schema_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return current_version(conn.cursor(), "sqlite")
    finally:
        conn.close()


RESOURCE_COUNT = "SELECT COUNT(*) FROM resource WHERE deleted = 0"
AUDIT_COUNT = "SELECT COUNT(*) FROM audit_log"


def backup_sqlite(
    url: str,
    out: Path,
    key: bytes | None = None,
    *,
    settle: float = AUDIT_SETTLE_SECONDS,
    after_store: Callable[[], None] | None = None,
) -> Manifest:
    main = sqlite_path(url)
    if not main.is_file():
        raise BackupError([f"no database at {main}"])
    _prepare_out(out)
    manifest = Manifest("sqlite", redact(url), 0, 0, 0, encryption=_encryption(key), created=_now())
    # the store first, the audit log last: the audit copy is never older than the store's
    order = ["store", *(n for n in SIDE_NAMES if n != "audit"), "audit"]
    for role in order:
        source = main if role == "store" else sqlite_side_path(main, role)
        if not source.is_file():
            continue
        if role == "audit" and settle > 0:
            time.sleep(settle)
        plain = out / f".{role}.partial"
        _sqlite_copy(source, plain)
        if role == "store":
            manifest.schema_version = _sqlite_schema_version(plain)
            manifest.resources = _sqlite_scalar(plain, RESOURCE_COUNT)
            if after_store is not None:
                after_store()
        elif role == "audit":
            manifest.audit_entries = _sqlite_scalar(plain, AUDIT_COUNT)
        manifest.files.append(_seal(out, plain, f"{role}.db", role, key))
    _write_manifest(out, manifest)
    return manifest


def _encryption(key: bytes | None) -> dict[str, str] | None:
    return None if key is None else {"algorithm": "AES-256-GCM", "key_id": key_id(key)}


# -- PostgreSQL ------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """Path of ``pg_dump`` / ``pg_restore``: ``LIENTHONG_PG_BINDIR``, else the PATH, else
    the newest ``/usr/lib/postgresql/*/bin`` (use one at least as new as the server)."""
    env = os.environ.get("LIENTHONG_PG_BINDIR")
    if env and Path(env, name).exists():
        return str(Path(env, name))
    found = shutil.which(name)
    if found:
        return found
    for bindir in sorted(glob("/usr/lib/postgresql/*/bin"), reverse=True, key=_major):
        if Path(bindir, name).exists():
            return str(Path(bindir, name))
    raise BackupError(
        [f"{name} not found: install the PostgreSQL client or set LIENTHONG_PG_BINDIR"]
    )


def _major(bindir: str) -> int:
    try:
        return int(Path(bindir).parent.name)
    except ValueError:
        return 0


def _pg_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment carrying it (not the argv)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), env


def _pg_count(cur: Any, table: str, where: str = "") -> int:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    if not cur.fetchone()[0]:
        return 0
    cur.execute(f"SELECT COUNT(*) FROM {table} {where}")
    return int(cur.fetchone()[0])


#: the audit tables on PostgreSQL, dumped from the later snapshot
PG_AUDIT_TABLES = ("audit_log", "audit_patient", "audit_head")


def _pg_dump_snapshot(
    conn: Any, conninfo: str, env: dict[str, str], dest: Path, selection: list[str]
) -> str:
    """``pg_dump -Fc`` of ``selection`` into ``dest`` on the snapshot the open
    transaction of ``conn`` exports; the error text when it fails, else ''."""
    cur: Any = conn.cursor()
    cur.execute("SELECT pg_export_snapshot()")
    snapshot = str(cur.fetchone()[0])
    with dest.open("wb") as f:
        done = subprocess.run(
            [
                pg_tool("pg_dump"),
                "-Fc",
                "--no-owner",
                f"--snapshot={snapshot}",
                *selection,
                f"--dbname={conninfo}",
            ],
            stdout=f,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        dest.unlink(missing_ok=True)
        return done.stderr.decode(errors="replace").strip() or "pg_dump failed"
    return ""


def _pg_existing(cur: Any, tables: tuple[str, ...]) -> list[str]:
    found = []
    for table in tables:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if cur.fetchone()[0]:
            found.append(table)
    return found


def backup_postgres(
    url: str, out: Path, key: bytes | None = None, settle: float = AUDIT_SETTLE_SECONDS
) -> Manifest:
    import psycopg

    _prepare_out(out)
    pg_tool("pg_dump")  # a clear error before anything is written
    conninfo, env = _pg_env(url)
    manifest = Manifest(
        "postgresql", redact(url), 0, 0, 0, encryption=_encryption(key), created=_now()
    )
    plain_db = _private(out / ".database.partial")
    plain_audit = _private(out / ".audit.partial")
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise BackupError([f"cannot connect to {redact(url)}: {exc}"]) from None
    with conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur: Any = conn.cursor()
        audit_tables = _pg_existing(cur, PG_AUDIT_TABLES)
        manifest.schema_version = current_version(cur, "postgresql")
        manifest.resources = _pg_count(cur, "resource", "WHERE deleted = 0")
        failed = _pg_dump_snapshot(
            conn, conninfo, env, plain_db, [f"--exclude-table={t}" for t in PG_AUDIT_TABLES]
        )
        conn.execute("COMMIT")
        if not failed and audit_tables:
            if settle > 0:
                time.sleep(settle)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            manifest.audit_entries = _pg_count(cur, "audit_log")
            failed = _pg_dump_snapshot(
                conn, conninfo, env, plain_audit, [f"--table={t}" for t in audit_tables]
            )
            conn.execute("COMMIT")
    if failed:
        plain_db.unlink(missing_ok=True)
        raise BackupError([f"pg_dump failed: {failed}"])
    manifest.files.append(_seal(out, plain_db, "database.dump", "database", key))
    if audit_tables:
        manifest.files.append(_seal(out, plain_audit, "audit.dump", "audit", key))
    _write_manifest(out, manifest)
    return manifest


def backup(url: str, out: Path, key: bytes | None = None) -> Manifest:
    """Back up the deployment whose database ``url`` names into the new directory ``out``."""
    if url.startswith("sqlite:"):
        return backup_sqlite(url, out, key)
    if url.startswith(("postgresql:", "postgres:")):
        return backup_postgres(url, out, key)
    raise BackupError([f"unsupported database URL {url!r}"])


# -- restore ---------------------------------------------------------------------


@dataclass
class RestoreReport:
    manifest: Manifest
    resources: int
    audit_entries: int
    audit_ok: bool
    problems: list[str]


def read_manifest(backup_dir: Path) -> Manifest:
    path = backup_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError([f"{path}: no manifest (not a backup, or an incomplete one)"]) from None
    except (OSError, ValueError) as exc:
        raise BackupError([f"{path}: unreadable manifest: {exc}"]) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BackupError([f"{path}: not a lienthong backup manifest"])
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise BackupError(
            [f"{path}: backup format {data['format_version']} is newer than this lienthong"]
        )
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError([f"{path}: manifest field missing or wrong: {exc}"]) from None


def check_backup(backup_dir: Path, key: bytes | None) -> Manifest:
    """The manifest, once every file is there with its size and checksum and the key
    (when the backup is encrypted) is the one it was made with."""
    manifest = read_manifest(backup_dir)
    problems = []
    for f in manifest.files:
        path = backup_dir / f.name
        if not path.is_file():
            problems.append(f"{f.name}: missing from the backup")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.name}: size {path.stat().st_size}, manifest says {f.size}")
        elif _sha256(path) != f.sha256:
            problems.append(f"{f.name}: checksum mismatch (file damaged or altered)")
    if manifest.encryption is not None:
        if key is None:
            problems.append("the backup is encrypted: give --decrypt-key-file")
        elif key_id(key) != manifest.encryption.get("key_id"):
            problems.append("the decryption key is not the one the backup was made with")
    if problems:
        raise BackupError(problems)
    return manifest


@contextmanager
def _plain_files(
    backup_dir: Path, manifest: Manifest, key: bytes | None, work: Path
) -> Iterator[dict[str, Path]]:
    """Each file's plaintext by role (decrypted into ``work`` when needed)."""
    paths: dict[str, Path] = {}
    made: list[Path] = []
    try:
        for f in manifest.files:
            if f.encrypted:
                assert key is not None
                plain = _private(work / f".{f.role}.restoring")
                made.append(plain)
                _decrypt_file(key, f.name, backup_dir / f.name, plain)
                paths[f.role] = plain
            else:
                paths[f.role] = backup_dir / f.name
        yield paths
    finally:
        for p in made:
            p.unlink(missing_ok=True)


def _sqlite_targets(main: Path) -> dict[str, Path]:
    return {"store": main, **{n: sqlite_side_path(main, n) for n in SIDE_NAMES}}


def restore_sqlite(
    backup_dir: Path, manifest: Manifest, url: str, key: bytes | None, force: bool
) -> None:
    main = sqlite_path(url)
    targets = _sqlite_targets(main)
    existing = [
        p for t in targets.values() for p in (t, Path(f"{t}-wal"), Path(f"{t}-shm")) if p.exists()
    ]
    if existing and not force:
        raise BackupError(
            [f"{p}: already exists (stop the server; --force replaces it)" for p in existing]
        )
    main.parent.mkdir(parents=True, exist_ok=True)
    with _plain_files(backup_dir, manifest, key, main.parent) as plain:
        for p in existing:
            p.unlink()
        for role, source in plain.items():
            target = targets.get(role)
            if target is None:
                raise BackupError([f"{role}: not a file a SQLite deployment has"])
            tmp = target.with_name(target.name + ".restoring")
            shutil.copyfile(source, _private(tmp))
            os.replace(tmp, target)


def _pg_has_data(url: str) -> list[str]:
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise BackupError([f"cannot connect to {redact(url)}: {exc}"]) from None
    with conn, conn.cursor() as cur:
        found = []
        resources = _pg_count(cur, "resource")
        if resources:
            found.append(f"{redact(url)}: holds {resources} resources")
        audit = _pg_count(cur, "audit_log")
        if audit:
            found.append(f"{redact(url)}: holds {audit} audit entries")
        return found


def restore_postgres(
    backup_dir: Path, manifest: Manifest, url: str, key: bytes | None, force: bool
) -> None:
    """Replay the dumps (the database, then the audit tables of a later snapshot) in
    one transaction: each ``pg_restore`` writes SQL into the same ``psql``."""
    found = _pg_has_data(url)
    if found and not force:
        raise BackupError([f"{line} (--force replaces it)" for line in found])
    restore_tool, psql = pg_tool("pg_restore"), pg_tool("psql")
    conninfo, env = _pg_env(url)
    problems: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="lienthong-restore-") as work,
        _plain_files(backup_dir, manifest, key, Path(work)) as plain,
        tempfile.TemporaryFile() as psql_err,
    ):
        dumps = [plain[role] for role in ("database", "audit") if role in plain]
        loader = subprocess.Popen(
            [
                psql,
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                f"--dbname={conninfo}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=psql_err,
            env=env,
        )
        assert loader.stdin is not None
        try:
            for dump in dumps:
                done = subprocess.run(
                    [restore_tool, "--clean", "--if-exists", "--no-owner", "-f", "-", str(dump)],
                    stdout=loader.stdin,
                    stderr=subprocess.PIPE,
                    env=env,
                    check=False,
                )
                if done.returncode != 0:
                    problems += [
                        f"pg_restore: {line}"
                        for line in done.stderr.decode(errors="replace").strip().splitlines()
                    ] or ["pg_restore failed"]
                    loader.kill()  # nothing of a partly read backup is committed
                    break
        except BrokenPipeError:
            pass  # psql stopped on an error: reported below
        finally:
            with suppress(BrokenPipeError):
                loader.stdin.close()
            code = loader.wait()
        psql_err.seek(0)
        said = psql_err.read().decode(errors="replace").strip()
        if code != 0 and said:  # psql stopped first: its reason, not the broken pipe's
            problems = [f"psql: {line}" for line in said.splitlines()]
        elif code != 0 and not problems:
            problems = ["restore failed"]
    if problems:
        raise BackupError(problems)


def restore(
    backup_dir: Path,
    url: str,
    *,
    key: bytes | None = None,
    force: bool = False,
    audit_key: str | None = None,
) -> RestoreReport:
    """Check, restore into ``url`` and verify: counts as the manifest says, audit chain
    intact (with ``audit_key``, the one the server runs with, the signed head too)."""
    manifest = check_backup(backup_dir, key)
    backend = "sqlite" if url.startswith("sqlite:") else "postgresql"
    if not url.startswith(("sqlite:", "postgresql:", "postgres:")):
        raise BackupError([f"unsupported database URL {url!r}"])
    if manifest.backend != backend:
        raise BackupError([f"a {manifest.backend} backup cannot be restored into {backend}"])
    if backend == "sqlite":
        restore_sqlite(backup_dir, manifest, url, key, force)
    else:
        restore_postgres(backup_dir, manifest, url, key, force)
    return verify_restored(manifest, url, audit_key)


def verify_restored(manifest: Manifest, url: str, audit_key: str | None) -> RestoreReport:
    from lienthong.access.audit import AuditLog
    from lienthong.storage.base import open_store

    problems: list[str] = []
    store = open_store(url, pool_size=1)  # opening also brings an older schema up to date
    try:
        resources = sum(store.counts().values())
    finally:
        store.close()
    log = AuditLog(url, anchor_key=audit_key)
    try:
        result = log.verify()
        (seq, _) = log.head()
    finally:
        log.close()
    if resources != manifest.resources:
        problems.append(f"resources: {resources} restored, the backup holds {manifest.resources}")
    if result.checked != manifest.audit_entries and result.ok:
        problems.append(
            f"audit entries: {result.checked} restored, the backup holds {manifest.audit_entries}"
        )
    if not result.ok:
        problems.append(
            f"audit chain broken at entry {result.first_bad_seq}: {result.reason} "
            f"({result.checked} entries intact before it)"
        )
    entries = result.checked if result.ok else seq
    return RestoreReport(manifest, resources, entries, result.ok, problems)
