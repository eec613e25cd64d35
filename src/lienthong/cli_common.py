"""What the loading commands (``import``, ``xml130 ingest``/``validate``, ``terminology
load``) do alike: settings for ``--database``, refusing missing inputs, the progress bar,
the per-type count table and the audit entry of a run.

Each of these doors into the store must answer the same way - the same exit status for a
missing file, the same audit record an auditor searches for - so they share one piece of code
rather than copies that drift apart.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lienthong.settings import Settings


def settings_for(database: str | None, **overrides: object) -> Settings:
    """Settings from the environment, with ``--database`` and any option given (not None)."""
    update = {k: v for k, v in overrides.items() if v is not None}
    if database:
        update["database_url"] = database
    return Settings.from_env().model_copy(update=update)


def require_inputs(
    files: Sequence[Path], err_console: Console, none_found: str, *, present: str = "exists"
) -> None:
    """Exit 2 naming each input that is not there, or with `none_found` when there is none.

    `present` is the Path test an input must pass (``exists`` or ``is_file``).
    """
    missing = [p for p in files if not getattr(p, present)()]
    for p in missing:
        err_console.print(f"{p}: no such file")
    if missing:
        raise typer.Exit(2)
    if not files:
        err_console.print(none_found)
        raise typer.Exit(2)


def counting_progress(unit: str, console: Console, *, transient: bool = False) -> Progress:
    """A bar for a job of unknown size: description, count of `unit`, time elapsed."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn(f"{{task.completed:,.0f}} {unit}"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def sized_progress(console: Console, label: str | None = None) -> Progress:
    """A bar for a job whose size is known: `label` (else the task's description), done of
    total, time elapsed."""
    return Progress(
        TextColumn(label if label is not None else "[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def counts_table(
    title: str, column: str, counts: Mapping[str, int], *, total: int | None = None
) -> Table:
    """Resources per type, sorted by type; a bold total row when `total` is given."""
    table = Table(title=title)
    table.add_column("resource type")
    table.add_column(column, justify="right")
    for rtype, n in sorted(counts.items()):
        table.add_row(rtype, f"{n:,}")
    if total is not None:
        table.add_row("[bold]total[/]", f"[bold]{total:,}[/]")
    return table


def audit_run(
    settings: Settings,
    action: str,
    inputs: Sequence[Path],
    detail: str,
    *,
    ok: bool,
    resource_type: str | None = None,
) -> None:
    """The command-line doors are audited like the API: one entry per run, by the
    operating-system user acting as data administrator."""
    from lienthong.access.audit import AuditEntry, AuditLog

    log = AuditLog(settings.database_url, anchor_key=settings.audit_key)
    try:
        log.append(
            AuditEntry(
                user=f"cli:{getpass.getuser()}",
                role="data_admin",
                on_behalf_of=None,
                action=action,
                resource_type=resource_type,
                resource_id=None,
                query=" ".join(str(f) for f in inputs)[:2000],
                patients=(),
                outcome="success" if ok else "error",
                status=200 if ok else 422,
                purpose="HOPERAT",
                break_glass=None,
                source_ip=None,
                detail=detail[:500],
            )
        )
    finally:
        log.close()
