"""Online backup and restore of a whole deployment, on a real SQLite file and a real
PostgreSQL server (pg_dump / pg_restore from the server's own binaries)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.access.auth import UserDirectory
from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.fhir.interactions.create import create
from lienthong.settings import Settings
from lienthong.storage import backup as bk
from lienthong.storage.base import ResourceStore, open_store
from tests.conftest import fresh_postgres_url
from tests.factories import audit_entry, patient
from tests.pg_server import PostgresServer, find_bindir

AUDIT_KEY = "backup-test-audit-key"


@pytest.fixture(autouse=True)
def _pg_tools() -> Iterator[None]:
    """pg_dump and pg_restore from the same binaries as the test server."""
    bindir = find_bindir()
    old = os.environ.get("LIENTHONG_PG_BINDIR")
    if bindir is not None:
        os.environ["LIENTHONG_PG_BINDIR"] = str(bindir)
    yield
    if old is None:
        os.environ.pop("LIENTHONG_PG_BINDIR", None)
    else:
        os.environ["LIENTHONG_PG_BINDIR"] = old


@pytest.fixture
def target_url(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of the same kind to restore into."""
    if store_url.startswith("sqlite:"):
        return f"sqlite:///{tmp_path / 'restored' / 'lienthong.db'}"
    return fresh_postgres_url(request.getfixturevalue("pg_server"))


class Deployment:
    """A store with its engine, audit log (keyed) and user directory, as a server has."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store: ResourceStore = open_store(url)
        settings = Settings.from_env({}).model_copy(
            update={"database_url": url, "auth": "off", "mpi": False}
        )
        self.engine = FhirEngine(self.store, settings)
        self.audit = AuditLog(url, anchor_key=AUDIT_KEY)
        self.users = UserDirectory(url)
        self.written: list[str] = []

    def write(self, i: int) -> str:
        """One create and its audit entry, in the order the API records them."""
        resp = create(self.engine, "Patient", patient(cccd=f"{i:012d}", given=[f"Số {i}"]))
        res_id = str((resp.json() or {})["id"])
        self.audit.append(audit_entry(action="create", patients=(res_id,)))
        self.written.append(res_id)
        return res_id

    def close(self) -> None:
        self.users.db.close()
        self.audit.close()
        self.store.close()


@pytest.fixture
def deployment(store_url: str) -> Iterator[Deployment]:
    d = Deployment(store_url)
    try:
        yield d
    finally:
        d.close()


def _audited_patients(url: str) -> set[str]:
    log = AuditLog(url)
    try:
        rows = log._db.query("SELECT patient_id FROM audit_patient")
    finally:
        log.close()
    return {str(r[0]) for r in rows}


def _restored_ids(url: str) -> set[str]:
    store = open_store(url, pool_size=1)
    try:
        with store.reader() as s:
            rows = s._all("SELECT res_id FROM resource WHERE deleted = 0")  # type: ignore[attr-defined]
    finally:
        store.close()
    return {str(r[0]) for r in rows}


def test_backup_during_concurrent_writes_restores_exact_counts_and_intact_chain(
    deployment: Deployment, target_url: str, tmp_path: Path
) -> None:
    deployment.users.add("dr.lan", "clinician", organization="org-1", practitioner="pr-1")
    for i in range(10):
        deployment.write(i)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 10
        try:
            while not stop.is_set():
                deployment.write(i)
                i += 1
        except BaseException as exc:  # reported below: a failing writer must fail the test
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(deployment.written) < 20:
            stop.wait(0.01)
        before = len(deployment.written)
        manifest = bk.backup(deployment.url, tmp_path / "backup")
        during = len(deployment.written)
        while len(deployment.written) < during + 5:  # more writes after the backup
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert before <= manifest.resources < len(deployment.written)
    assert manifest.audit_entries >= manifest.resources  # never older than the store copy
    assert during > before, "the writer did not write while the backup ran"

    report = bk.restore(tmp_path / "backup", target_url, audit_key=AUDIT_KEY)
    assert report.problems == []
    assert report.audit_ok
    assert report.resources == manifest.resources
    assert report.audit_entries == manifest.audit_entries
    restored = _restored_ids(target_url)
    assert len(restored) == manifest.resources
    assert restored <= set(deployment.written)
    # every write in the restored store has its audit entry
    assert restored <= _audited_patients(target_url)
    users = UserDirectory(target_url)
    try:
        assert users.get("dr.lan") is not None  # the side tables came back too
    finally:
        users.db.close()


def test_manifest_describes_the_backup(deployment: Deployment, tmp_path: Path) -> None:
    deployment.write(1)
    out = tmp_path / "backup"
    bk.backup(deployment.url, out)
    data = json.loads((out / "manifest.json").read_text())
    assert data["format"] == "lienthong-backup"
    assert data["schema_version"] == deployment.store.schema_version  # type: ignore[attr-defined]
    assert data["contents"] == {"resources": 1, "audit_entries": 1}
    assert data["encryption"] is None
    for f in data["files"]:
        assert (out / f["name"]).stat().st_size == f["size"]
        assert bk._sha256(out / f["name"]) == f["sha256"]
    roles = [f["role"] for f in data["files"]]
    if deployment.url.startswith("sqlite:"):
        assert roles[0] == "store" and roles[-1] == "audit"
        assert set(roles) == {"store", "access", "audit"}  # paging: never opened here
    else:  # the audit tables from a later snapshot than the rest
        assert roles == ["database", "audit"]


@pytest.mark.postgres
def test_postgres_restore_commits_whole_or_nothing(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    deployment = Deployment(fresh_postgres_url(pg_server))
    try:
        for i in range(3):
            deployment.write(i)
        out = tmp_path / "backup"
        bk.backup(deployment.url, out)
    finally:
        deployment.close()
    # the second dump is unreadable, but consistent with its manifest: the first has
    # already been replayed when the second fails
    data = json.loads((out / "manifest.json").read_text())
    audit = next(f for f in data["files"] if f["role"] == "audit")
    (out / audit["name"]).write_bytes(b"not a pg_dump archive" * 10)
    audit["size"] = (out / audit["name"]).stat().st_size
    audit["sha256"] = bk._sha256(out / audit["name"])
    (out / "manifest.json").write_text(json.dumps(data))
    target_url = fresh_postgres_url(pg_server)
    with pytest.raises(bk.BackupError) as exc:
        bk.restore(out, target_url, audit_key=AUDIT_KEY)
    assert any(p.startswith("pg_restore: ") for p in exc.value.problems), exc.value.problems
    assert bk._pg_has_data(target_url) == []  # nothing of the first dump was committed


def test_corrupted_file_is_refused_naming_it(
    deployment: Deployment, target_url: str, tmp_path: Path
) -> None:
    deployment.write(1)
    out = tmp_path / "backup"
    manifest = bk.backup(deployment.url, out)
    damaged = manifest.files[0].name
    with (out / damaged).open("r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(bk.BackupError) as exc:
        bk.restore(out, target_url, audit_key=AUDIT_KEY)
    assert exc.value.problems == [f"{damaged}: checksum mismatch (file damaged or altered)"]
    if target_url.startswith("sqlite:"):
        assert not bk.sqlite_path(target_url).exists()  # nothing was written
    # and through the command line: exit 1, one line naming the file
    result = CliRunner().invoke(app, ["restore", str(out), "--database", target_url])
    assert result.exit_code == 1
    assert f"{damaged}: checksum mismatch" in result.output


def test_missing_file_is_refused(deployment: Deployment, target_url: str, tmp_path: Path) -> None:
    deployment.write(1)
    out = tmp_path / "backup"
    manifest = bk.backup(deployment.url, out)
    (out / manifest.files[-1].name).unlink()
    with pytest.raises(bk.BackupError) as exc:
        bk.restore(out, target_url)
    assert exc.value.problems == [f"{manifest.files[-1].name}: missing from the backup"]


def test_encrypted_round_trip(deployment: Deployment, target_url: str, tmp_path: Path) -> None:
    for i in range(3):
        deployment.write(i)
    key_file = tmp_path / "backup.key"
    bk.new_key_file(key_file)
    assert key_file.stat().st_mode & 0o077 == 0
    key = bk.load_key(key_file)
    out = tmp_path / "backup"
    manifest = bk.backup(deployment.url, out, key)
    assert manifest.encryption is not None
    for f in manifest.files:
        assert f.encrypted
        raw = (out / f.name).read_bytes()
        assert raw.startswith(bk.ENC_MAGIC)
        assert b"SQLite format 3" not in raw and b"PGDMP" not in raw
        assert b"Nguy" not in raw
    data = json.loads((out / "manifest.json").read_text())
    assert data["encryption"]["algorithm"] == "AES-256-GCM"

    with pytest.raises(bk.BackupError) as no_key:
        bk.restore(out, target_url)
    assert no_key.value.problems == ["the backup is encrypted: give --decrypt-key-file"]
    other = tmp_path / "other.key"
    bk.new_key_file(other)
    with pytest.raises(bk.BackupError) as wrong:
        bk.restore(out, target_url, key=bk.load_key(other))
    assert wrong.value.problems == ["the decryption key is not the one the backup was made with"]

    report = bk.restore(out, target_url, key=key, audit_key=AUDIT_KEY)
    assert report.problems == []
    assert (report.resources, report.audit_entries) == (3, 3)
    assert _restored_ids(target_url) == set(deployment.written)


def test_encrypted_file_altered_with_matching_checksum_is_refused(
    deployment: Deployment, target_url: str, tmp_path: Path
) -> None:
    """Someone who rewrites a file and its manifest entry still cannot forge the GCM tag."""
    deployment.write(1)
    key = os.urandom(32)
    out = tmp_path / "backup"
    manifest = bk.backup(deployment.url, out, key)
    name = manifest.files[0].name
    path = out / name
    raw = bytearray(path.read_bytes())
    raw[len(bk.ENC_MAGIC) + bk.NONCE_BYTES + 10] ^= 1
    path.write_bytes(bytes(raw))
    data = json.loads((out / "manifest.json").read_text())
    data["files"][0]["sha256"] = bk._sha256(path)
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(bk.BackupError) as exc:
        bk.restore(out, target_url, key=key)
    assert exc.value.problems == [f"{name}: decryption failed (wrong key or altered file)"]


def test_non_empty_target_is_refused_unless_forced(deployment: Deployment, tmp_path: Path) -> None:
    for i in range(2):
        deployment.write(i)
    out = tmp_path / "backup"
    bk.backup(deployment.url, out)
    deployment.write(2)  # the live store moves on
    with pytest.raises(bk.BackupError) as exc:
        bk.restore(out, deployment.url, audit_key=AUDIT_KEY)
    if deployment.url.startswith("sqlite:"):
        main = bk.sqlite_path(deployment.url)
        assert f"{main}: already exists (stop the server; --force replaces it)" in (
            exc.value.problems
        )
        assert any(
            p.startswith(f"{main.with_name('lienthong-audit.db')}:") for p in exc.value.problems
        )
    else:
        assert exc.value.problems == [
            f"{bk.redact(deployment.url)}: holds 3 resources (--force replaces it)",
            f"{bk.redact(deployment.url)}: holds 3 audit entries (--force replaces it)",
        ]
    result = CliRunner().invoke(app, ["restore", str(out), "--database", deployment.url])
    assert result.exit_code == 1
    deployment.close()  # the operator stops the server before a forced restore
    report = bk.restore(out, deployment.url, force=True, audit_key=AUDIT_KEY)
    assert report.problems == []
    assert (report.resources, report.audit_entries) == (2, 2)
    assert _restored_ids(deployment.url) == set(deployment.written[:2])
    deployment.store = open_store(deployment.url)  # for the fixture's close
    deployment.audit = AuditLog(deployment.url)
    deployment.users = UserDirectory(deployment.url)


def test_restore_reports_a_broken_audit_chain(
    deployment: Deployment, target_url: str, tmp_path: Path
) -> None:
    for i in range(3):
        deployment.write(i)
    deployment.audit._db.execute(
        "UPDATE audit_log SET recorded = ? WHERE seq = 2", ("2020-01-01T00:00:00.000000Z",)
    )
    out = tmp_path / "backup"
    bk.backup(deployment.url, out)
    report = bk.restore(out, target_url, audit_key=AUDIT_KEY)
    assert not report.audit_ok
    assert report.problems == [
        "audit chain broken at entry 2: hash does not match the content (entry altered) "
        "(1 entries intact before it)"
    ]
    result = CliRunner().invoke(
        app,
        ["restore", str(out), "--database", target_url, "--force"],
        env={"LIENTHONG_AUDIT_KEY": AUDIT_KEY},
    )
    assert result.exit_code == 1
    assert "audit chain broken at entry 2" in result.output


def test_cli_backup_and_restore(deployment: Deployment, target_url: str, tmp_path: Path) -> None:
    for i in range(4):
        deployment.write(i)
    key_file = tmp_path / "k"
    runner = CliRunner()
    assert runner.invoke(app, ["backup-key", str(key_file)]).exit_code == 0
    assert runner.invoke(app, ["backup-key", str(key_file)]).exit_code == 2  # never overwritten
    out = tmp_path / "backup"
    env = {"LIENTHONG_AUDIT_KEY": AUDIT_KEY}
    made = runner.invoke(
        app,
        [
            "backup",
            "--out",
            str(out),
            "--database",
            deployment.url,
            "--encrypt-key-file",
            str(key_file),
        ],
        env=env,
    )
    assert made.exit_code == 0, made.output
    assert "4 resources, 4 audit entries" in made.output
    again = runner.invoke(app, ["backup", "--out", str(out), "--database", deployment.url])
    assert again.exit_code == 1
    assert "the backup directory is not empty" in again.output
    done = runner.invoke(
        app,
        ["restore", str(out), "--database", target_url, "--decrypt-key-file", str(key_file)],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert "4 resources, 4 audit entries; audit chain intact" in done.output
    # the signed head: verifying with another key than the server's fails
    other = runner.invoke(
        app, ["audit", "verify", "--database", target_url], env={"LIENTHONG_AUDIT_KEY": "x"}
    )
    assert other.exit_code == 1


def test_password_is_not_in_the_manifest() -> None:
    assert bk.redact("postgresql://lt:s3cret@db.example:5432/lt") == (
        "postgresql://lt:***@db.example:5432/lt"
    )
    assert bk.redact("postgresql://lt@db/lt") == "postgresql://lt@db/lt"


def test_key_file_formats(tmp_path: Path) -> None:
    key = os.urandom(32)
    for name, content in {
        "raw": key,
        "hex": key.hex().encode() + b"\n",
        "b64": __import__("base64").standard_b64encode(key) + b"\n",
    }.items():
        (tmp_path / name).write_bytes(content)
        assert bk.load_key(tmp_path / name) == key
    (tmp_path / "short").write_text("abc")
    with pytest.raises(bk.BackupError) as exc:
        bk.load_key(tmp_path / "short")
    assert "expected a 256-bit key" in exc.value.problems[0]
