"""``lienthong xml130``: hospital XML exports (QĐ 130/4750, legacy QĐ 4210).

``validate`` is the conformance report a facility or its software vendor needs: the kinds
of problem (table, field, rule, severity) ordered by how many visits each touches, with an
example and the clause it enforces, how many visits are kept out (blocking), stored with
conformance problems, or clean, then the same per facility. Bare-table files of one folder
(``XML1.xml``, ``XML2.xml`` ...) are read as one export. ``--json`` prints one object:
``summary`` (counts, failed files, notes), ``groups`` (kinds of problem), ``facilities``
and every problem (file, visit, table, field, rule, severity, message, value)::

    lienthong xml130 validate exports/*.xml
    lienthong xml130 validate --json exports/01012_130_0001.xml > problems.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lienthong.cli_common import cli_console, counting_progress, require_inputs, settings_for
from lienthong.cli_options import DatabaseOpt
from lienthong.ingest.xml130.cli_ingest import expand_xml_paths, ingest_command
from lienthong.ingest.xml130.rules import BLOCKING, RULES
from lienthong.ingest.xml130.validate import (
    IcdCatalogue,
    ValidationReport,
    validate_paths,
)
from lienthong.settings import Settings

xml130_app = typer.Typer(
    name="xml130",
    help="Hospital XML exports (QĐ 130/4750 and QĐ 4210): validate, ingest.",
    no_args_is_help=True,
    add_completion=False,
)
console = cli_console()
err_console = cli_console(stderr=True, soft_wrap=True)


@xml130_app.callback()
def _xml130() -> None:
    """Hospital XML exports (a callback keeps ``validate`` a subcommand)."""


def icd_catalogue(settings: Settings) -> tuple[IcdCatalogue, str]:
    """The ICD-10 list loaded into the database (``lienthong terminology load``) when
    there is one, else the Ministry's list shipped with the package (or the WHO edition
    when ``LIENTHONG_ICD10_FALLBACK=who``); returns the catalogue and a label for it."""
    from lienthong.terminology.catalogue import icd10_catalogue

    path = settings.sqlite_path()
    if path is not None and not path.exists():
        shipped: IcdCatalogue = icd10_catalogue(None)
        return shipped, f"{getattr(shipped, 'source', 'ICD-10')} (no database)"
    from lienthong.storage.base import open_store

    try:
        store = open_store(settings.database_url, 1)
    except Exception as exc:  # an unreachable database must not stop an offline check
        shipped = icd10_catalogue(None)
        label = str(getattr(shipped, "source", "ICD-10"))
        err_console.print(f"note: database not opened ({exc}); using {label}")
        return shipped, label
    try:
        catalogue: IcdCatalogue = icd10_catalogue(store)
    finally:
        store.close()
    return catalogue, str(getattr(catalogue, "source", "ICD-10"))


@xml130_app.command("validate")
def validate_command(
    paths: Annotated[list[Path], typer.Argument(help="XML files or folders of them")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the summary, the problem groups and every problem as JSON on stdout.",
        ),
    ] = False,
    show: Annotated[
        int,
        typer.Option("--show", min=0, help="Kinds of problem listed in the terminal table."),
    ] = 50,
    top: Annotated[int, typer.Option("--top", min=1, help="Problems shown per facility.")] = 3,
    workers: Annotated[
        int | None,
        typer.Option(help="processes validating files side by side (default: CPU count)"),
    ] = None,
    database: DatabaseOpt = None,
) -> None:
    """Check exports against the data dictionary and the gateway's rules; exit 1 when a
    file fails (any problem, blocking or conformance), 2 when a file does not exist."""
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
        typer.echo(json.dumps(report_json(report, catalogue_label), ensure_ascii=False))
        _print_summary(report, err_console, top, catalogue_label)
    else:
        _print_problems(report, show)
        _print_summary(report, console, top, catalogue_label)
    if report.failed_files:
        raise typer.Exit(1)


def report_json(report: ValidationReport, catalogue: str) -> dict[str, Any]:
    """The ``--json`` document: counts, problem groups (most visits first), problems."""
    return {
        "summary": {
            "files": report.files,
            "failed_files": report.failed_files,
            "visits": report.visits,
            "visits_blocking": report.visits_blocking,
            "visits_conformance_only": report.visits_conformance,
            "visits_clean": report.visits_clean,
            "problems": len(report.problems),
            "icd10": catalogue,
            "notes": report.notes,
        },
        "groups": [g.as_dict() for g in report.groups()],
        "facilities": {
            code: {
                "visits": f.visits,
                "visits_blocking": f.visits_blocking,
                "visits_conformance_only": f.visits_conformance,
                "visits_clean": f.visits_clean,
                "problems": [
                    {
                        "table": t,
                        "field": fl,
                        "rule": r,
                        "severity": f.severities[(t, fl, r)],
                        "visits": n,
                    }
                    for (t, fl, r), n in f.problems.most_common()
                ],
            }
            for code, f in sorted(report.facilities.items())
        },
        "problems": [p.as_dict() for p in report.problems],
    }


def _where(table: str, field: str) -> str:
    return ".".join(x for x in (table, field) if x) or "(file)"


def _print_problems(report: ValidationReport, show: int) -> None:
    groups = report.groups()
    if not groups or show == 0:
        return
    table = Table(
        title=f"Problems ({len(report.problems):,}) by kind, most visits first", show_lines=False
    )
    for column in ("severity", "table.field", "rule", "visits", "problems", "example", "source"):
        table.add_column(column, overflow="fold")
    for g in groups[:show]:
        e = g.example
        example = f"{e.file} {e.ma_lk}: {e.message}".strip() + (
            f" (value {e.value[:40]!r})" if e.value else ""
        )
        rule = RULES.get(g.rule)
        table.add_row(
            g.severity,
            _where(g.table, g.field),
            g.rule,
            f"{g.visits:,}",
            f"{g.problems:,}",
            example,
            rule.source if rule is not None else "",
        )
    console.print(table)
    if len(groups) > show:
        console.print(f"... {len(groups) - show:,} more kinds (--show N, or --json for all)")


def _print_summary(report: ValidationReport, out: Console, top: int, catalogue: str) -> None:
    for note in report.notes:
        out.print(f"note: {note}")
    table = Table(title="By facility (MA_CSKCB)")
    table.add_column("facility")
    table.add_column("visits", justify="right")
    table.add_column("blocking", justify="right")
    table.add_column("conformance only", justify="right")
    table.add_column("clean", justify="right")
    table.add_column("most frequent problems (severity table.field rule: visits)")
    for code, facility in sorted(report.facilities.items()):
        frequent = sorted(
            facility.problems.items(),
            key=lambda kv: (-kv[1], facility.severities[kv[0]] != BLOCKING),
        )[:top]
        table.add_row(
            code,
            f"{facility.visits:,}",
            f"{facility.visits_blocking:,}",
            f"{facility.visits_conformance:,}",
            f"{facility.visits_clean:,}",
            "; ".join(
                f"{facility.severities[(t, f, r)]} {_where(t, f)} {r}: {n:,}"
                for (t, f, r), n in frequent
            ),
        )
    out.print(table)
    out.print(
        f"{report.files} files ({len(report.failed_files)} failed), {report.visits:,} visits: "
        f"{report.visits_blocking:,} with blocking problems (not storable), "
        f"{report.visits_conformance:,} with conformance problems only (stored with them), "
        f"{report.visits_clean:,} clean; {len(report.problems):,} problems "
        f"(ICD-10 codes checked against the {catalogue})"
    )


xml130_app.command("ingest")(ingest_command)
