"""``lienthong xml130``: hospital XML exports (QĐ 130/4750, legacy QĐ 4210).

``validate`` is the conformance report a facility or its software vendor needs: every
problem with file, visit, table, field, rule and value, then per facility how many visits
fail and on what::

    lienthong xml130 validate exports/*.xml
    lienthong xml130 validate --json exports/01012_130_0001.xml > problems.json
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lienthong.cli_common import counting_progress, require_inputs, settings_for
from lienthong.cli_options import DatabaseOpt
from lienthong.ingest.xml130.cli_ingest import expand_xml_paths, ingest_command
from lienthong.ingest.xml130.validate import (
    IcdCatalogue,
    ValidationReport,
    WhoIcd10Catalogue,
    validate_paths,
)
from lienthong.settings import Settings

xml130_app = typer.Typer(
    name="xml130",
    help="Hospital XML exports (QĐ 130/4750 and QĐ 4210): validate, ingest.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


@xml130_app.callback()
def _xml130() -> None:
    """Hospital XML exports (a callback keeps ``validate`` a subcommand)."""


def icd_catalogue(settings: Settings) -> tuple[IcdCatalogue, str]:
    """The ICD-10 list loaded into the database (``lienthong terminology load``) when
    there is one, else the WHO ICD-10; returns the catalogue and a label for it."""
    path = settings.sqlite_path()
    if path is not None and not path.exists():
        return WhoIcd10Catalogue(), "WHO ICD-10 2019 (no database)"
    from lienthong.storage.base import open_store
    from lienthong.terminology.catalogue import icd10_catalogue

    try:
        store = open_store(settings.database_url, 1)
    except Exception as exc:  # an unreachable database must not stop an offline check
        err_console.print(f"note: database not opened ({exc}); using the WHO ICD-10")
        return WhoIcd10Catalogue(), "WHO ICD-10"
    try:
        catalogue: IcdCatalogue = icd10_catalogue(store)
    finally:
        store.close()
    return catalogue, str(getattr(catalogue, "source", "ICD-10"))


@xml130_app.command("validate")
def validate_command(
    paths: Annotated[list[Path], typer.Argument(help="XML files or folders of them")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the problems as a JSON list on stdout.")
    ] = False,
    show: Annotated[
        int, typer.Option("--show", min=0, help="Problems listed in the terminal table.")
    ] = 50,
    top: Annotated[int, typer.Option("--top", min=1, help="Problems shown per facility.")] = 3,
    workers: Annotated[
        int | None,
        typer.Option(help="processes validating files side by side (default: CPU count)"),
    ] = None,
    database: DatabaseOpt = None,
) -> None:
    """Check exports against the data dictionary and the gateway's rules; exit 1 when a
    file fails (any problem), 2 when a file does not exist."""
    settings = settings_for(database)
    files = expand_xml_paths(paths)
    require_inputs(files, err_console, "no .xml files found")
    catalogue, catalogue_label = icd_catalogue(settings)
    with counting_progress("visits", err_console, transient=as_json) as progress:
        task = progress.add_task("validating", total=None)

        def advance(name: str, n: int) -> None:
            progress.update(task, advance=n, description=f"validating {name}")

        report = validate_paths(
            files,
            icd=catalogue,
            max_bytes=settings.xml130_max_bytes,
            on_visit=advance,
            workers=(os.cpu_count() or 1) if workers is None else workers,
        )
    if as_json:
        typer.echo(json.dumps([p.as_dict() for p in report.problems], ensure_ascii=False))
        _print_summary(report, err_console, top, catalogue_label)
    else:
        _print_problems(report, show)
        _print_summary(report, console, top, catalogue_label)
    if report.failed_files:
        raise typer.Exit(1)


def _print_problems(report: ValidationReport, show: int) -> None:
    if not report.problems or show == 0:
        return
    table = Table(title=f"Problems ({len(report.problems):,})", show_lines=False)
    for column in ("file", "MA_LK", "table", "field", "rule", "message", "value"):
        table.add_column(column, overflow="fold")
    for p in report.problems[:show]:
        table.add_row(p.file, p.ma_lk, p.table, p.field, p.rule, p.message, p.value[:40])
    console.print(table)
    if len(report.problems) > show:
        console.print(
            f"... {len(report.problems) - show:,} more problems (--show N, or --json for all)"
        )


def _print_summary(report: ValidationReport, out: Console, top: int, catalogue: str) -> None:
    table = Table(title="By facility (MA_CSKCB)")
    table.add_column("facility")
    table.add_column("visits", justify="right")
    table.add_column("with errors", justify="right")
    table.add_column("most frequent problems (table.field rule: count)")
    for code, facility in sorted(report.facilities.items()):
        frequent = Counter(facility.problems).most_common(top)
        table.add_row(
            code,
            f"{facility.visits:,}",
            f"{facility.visits_with_errors:,}",
            "; ".join(f"{t}.{f} {r}: {n:,}".replace("..", ".") for (t, f, r), n in frequent),
        )
    out.print(table)
    out.print(
        f"{report.files} files ({len(report.failed_files)} failed), {report.visits:,} visits, "
        f"{report.visits_with_errors:,} with errors, {len(report.problems):,} problems "
        f"(ICD-10 codes checked against the {catalogue})"
    )


xml130_app.command("ingest")(ingest_command)
