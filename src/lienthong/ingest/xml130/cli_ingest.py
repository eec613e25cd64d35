"""``lienthong xml130 ingest``: hospital XML exports into the FHIR store.

::

    lienthong xml130 ingest exports/ --database sqlite:///./lienthong-data/lienthong.db
"""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lienthong.cli_options import DatabaseOpt
from lienthong.settings import Settings

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _xml_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() == ".xml"))
        else:
            files.append(path)
    return files


def ingest_command(
    paths: Annotated[
        list[Path], typer.Argument(help="XML 130 / 4210 export files or folders of them")
    ],
    database: DatabaseOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="processes preparing files ahead of the writer (default: CPU count; 0: none)"
        ),
    ] = None,
) -> None:
    """Write each valid visit as FHIR resources (one transaction per visit); report the
    others, one line per problem. Exit status 1 when any visit or file was rejected."""
    from lienthong.fhir.engine import FhirEngine
    from lienthong.ingest.xml130.ingest import Xml130Ingest
    from lienthong.storage.base import open_store

    settings = Settings.from_env()
    if database:
        settings = settings.model_copy(update={"database_url": database})
    files = _xml_files(paths)
    missing = [p for p in files if not p.is_file()]
    for p in missing:
        err_console.print(f"{p}: no such file")
    if missing:
        raise typer.Exit(2)
    if not files:
        err_console.print("no .xml files found")
        raise typer.Exit(2)
    started = time.perf_counter()
    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        engine = FhirEngine(store, settings)
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} visits"),
            TimeElapsedColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("ingesting", total=None)

            def advance(file: str, ok: bool) -> None:
                progress.update(task, advance=1, description=f"ingesting {file}")

            ingest = Xml130Ingest(engine, max_bytes=settings.xml130_max_bytes, on_visit=advance)
            ingest.ingest_paths(files, (os.cpu_count() or 1) if workers is None else workers)
        report = ingest.report
        source = getattr(ingest.icd, "source", "ICD-10")
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    _audit(settings, files, report.summary(), ok=not report.problems)
    for problem in report.problems:
        where = ".".join(x for x in (problem.table, problem.field) if x)
        value = f" (value {problem.value!r})" if problem.value else ""
        ma_lk = f" {problem.ma_lk}" if problem.ma_lk else ""
        where = f"{where}: " if where else ""
        typer.echo(f"{problem.file}{ma_lk}: {where}{problem.message}{value}", err=True)
    table = Table(title=f"Ingested into {settings.database_url}")
    table.add_column("resource type")
    table.add_column("written", justify="right")
    for rtype, n in sorted(report.resources.items()):
        table.add_row(rtype, f"{n:,}")
    console.print(table)
    visits = report.visits_written + report.visits_rejected
    rate = visits / elapsed if elapsed > 0 else 0.0
    console.print(f"{report.summary()} in {elapsed:.1f} s ({rate:,.0f} visits/s); ICD-10: {source}")
    if report.visits_rejected or report.refused_files:
        raise typer.Exit(1)


def _audit(settings: Settings, files: list[Path], detail: str, ok: bool) -> None:
    """The XML door is audited like the API: one entry per run."""
    from lienthong.access.audit import AuditEntry, AuditLog

    log = AuditLog(settings.database_url, anchor_key=settings.audit_key)
    try:
        log.append(
            AuditEntry(
                user=f"cli:{getpass.getuser()}",
                role="data_admin",
                on_behalf_of=None,
                action="xml130-ingest",
                resource_type=None,
                resource_id=None,
                query=" ".join(str(f) for f in files)[:2000],
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
