"""``lienthong backup``, ``restore``, ``backup-key`` and ``migrate``: keeping a deployment's
data safe and its schema current (see docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lienthong.cli_common import settings_for
from lienthong.cli_options import DatabaseOpt


def _fail(problems: list[str], code: int = 1) -> typer.Exit:
    for line in problems:
        typer.echo(line, err=True)
    return typer.Exit(code)


def backup_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="new (or empty) backup directory")],
    database: DatabaseOpt = None,
    encrypt_key_file: Annotated[
        Path | None,
        typer.Option(help="encrypt every file with this 256-bit key (see `lienthong backup-key`)"),
    ] = None,
) -> None:
    """Back up the store and its side databases while the server runs, with a manifest."""
    from lienthong.storage.backup import BackupError, backup, load_key

    settings = settings_for(database)
    try:
        key = load_key(encrypt_key_file) if encrypt_key_file else None
        manifest = backup(settings.database_url, out, key)
    except BackupError as exc:
        raise _fail(exc.problems) from None
    size = sum(f.size for f in manifest.files)
    typer.echo(
        f"backed up {manifest.source} to {out}: {manifest.resources} resources, "
        f"{manifest.audit_entries} audit entries, schema version {manifest.schema_version}, "
        f"{len(manifest.files)} files, {size:,} bytes"
        + (", encrypted" if manifest.encryption else "")
    )


def restore_command(
    backup_dir: Annotated[Path, typer.Argument(help="a directory `lienthong backup` made")],
    database: DatabaseOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace a target that already holds data")
    ] = False,
    decrypt_key_file: Annotated[
        Path | None, typer.Option(help="the key file the backup was encrypted with")
    ] = None,
) -> None:
    """Check a backup, restore it, verify the audit chain; exit 1 with one line per problem."""
    from lienthong.access.cli_audit import anchor_key
    from lienthong.storage.backup import BackupError, load_key, restore

    settings = settings_for(database)
    try:
        key = load_key(decrypt_key_file) if decrypt_key_file else None
        report = restore(
            backup_dir, settings.database_url, key=key, force=force, audit_key=anchor_key(settings)
        )
    except BackupError as exc:
        raise _fail(exc.problems) from None
    typer.echo(
        f"restored {report.manifest.source} (backup of {report.manifest.created}) into "
        f"{settings.database_url}: {report.resources} resources, "
        f"{report.audit_entries} audit entries"
        + ("; audit chain intact" if report.audit_ok else "")
    )
    if report.problems:
        raise _fail(report.problems)


def backup_key_command(
    path: Annotated[Path, typer.Argument(help="where to write the new key (must not exist)")],
) -> None:
    """Write a new random backup encryption key, readable by its owner only."""
    from lienthong.storage.backup import new_key_file

    try:
        new_key_file(path)
    except FileExistsError:
        raise _fail([f"{path}: already exists"], 2) from None
    typer.echo(f"new backup key in {path}: keep it apart from the backups")


def migrate_command(database: DatabaseOpt = None) -> None:
    """Bring the database's schema to this version of lienthong (back up first)."""
    from lienthong.storage.migrations import SchemaError, latest, migrate_database

    settings = settings_for(database)
    try:
        before, applied = migrate_database(settings.database_url)
    except SchemaError as exc:
        raise _fail([str(exc)]) from None
    if not applied:
        typer.echo(f"schema version {before}: up to date")
        return
    for m in applied:
        typer.echo(f"applied {m.version}: {m.description}")
    typer.echo(f"schema version {before} -> {latest()}")
