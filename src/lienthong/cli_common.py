"""What the commands do alike: settings for ``--database`` (saying which database they
open), the consoles they print to (tables as plain aligned text when the output is not a
terminal), refusing missing inputs, the progress bar, the per-type count table and the
audit entry of a run.

Each of these doors into the store must answer the same way - the same exit status for a
missing file, the same audit record an auditor searches for - so they share one piece of code
rather than copies that drift apart.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lienthong.settings import Settings

PIPE_WIDTH = 1000
"""Width of a console that does not write to a terminal: lines and tables keep their
natural width in a pipe or a log instead of being folded to 80 columns."""


class CliConsole(Console):
    """A console that prints as rich does on a terminal, and plain text elsewhere.

    Written to a pipe or a file, a table loses its box (columns aligned by spaces, one row
    a line, so ``grep`` and ``awk`` can read it) and nothing is folded to a terminal's
    width. One class for every command, so that no command's tables collapse into
    one-word cells when its output is captured."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal:
            return size
        return ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        width, height = new_size
        self._width, self._height = width, height

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if not self.is_terminal:
            for obj in objects:
                if isinstance(obj, Table):
                    obj.box = None
        super().print(*objects, **kwargs)


def cli_console(*, stderr: bool = False, soft_wrap: bool = False) -> CliConsole:
    """The console a command prints to (``stderr`` for messages beside its output)."""
    return CliConsole(stderr=stderr, soft_wrap=soft_wrap)


_err = cli_console(stderr=True, soft_wrap=True)


def settings_for(database: str | None, *, announce: bool = True, **overrides: object) -> Settings:
    """Settings from the environment and the settings file, with ``--database`` and any
    option given (not None).

    With ``announce`` (commands that open the store) one line on stderr says which database
    and where that came from, so nobody works on an empty default database unawares. A
    broken settings file or variable exits 2 with the reason."""
    update = {k: v for k, v in overrides.items() if v is not None}
    if database:
        update["database_url"] = database
    try:
        settings = Settings.from_env().model_copy(update=update)
    except ValueError as exc:
        _err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None
    if announce:
        origin = "--database" if database else settings.origin("database_url")
        _err.print(
            f"database: {display_url(settings.database_url)} ({origin})",
            markup=False,
            highlight=False,
        )
    return settings


def display_url(url: str) -> str:
    """A database URL fit to print: a password in it is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


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
