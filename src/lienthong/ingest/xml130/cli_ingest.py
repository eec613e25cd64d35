"""``lienthong xml130 ingest``: hospital XML exports into the FHIR store.

::

    lienthong xml130 ingest exports/ --database sqlite:///./lienthong-data/lienthong.db
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from lienthong.cli_common import (
    audit_run,
    cli_console,
    counting_progress,
    counts_table,
    require_inputs,
    settings_for,
)
from lienthong.cli_options import DatabaseOpt

console = cli_console(soft_wrap=True)
err_console = cli_console(stderr=True, soft_wrap=True)


def expand_xml_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their ``*.xml`` files (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() == ".xml"))
        else:
            files.append(path)
    return files


_xml_files = expand_xml_paths


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
    batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="visits per database commit; each visit is still all or nothing on its own",
        ),
    ] = 50,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="refuse every visit with any problem, conformance problems included "
            "(by default those are stored with their problems)",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="ingest again the files the import ledger says went in whole"),
    ] = False,
) -> None:
    """Write each visit that can be stored faithfully as FHIR resources (one transaction
    per visit, in a savepoint of a commit of --batch visits; bare-table files of one
    folder, XML1.xml, XML2.xml ..., are read as one export): visits with only conformance
    problems go in with them (an OperationOutcome and a tag on the Encounter), visits with
    a blocking problem are reported, one line per problem, and not written. Exit status 1
    when any visit or file was rejected. A file that went in whole is noted by content
    hash and skipped when ingested again (--force: ingest it again); visits are keyed by
    facility and MA_LK, so one sent again updates its resources and never duplicates."""
    from lienthong.fhir.engine import FhirEngine
    from lienthong.ingest.xml130.ingest import Xml130Ingest
    from lienthong.storage.base import open_store

    settings = settings_for(database)
    files = expand_xml_paths(paths)
    require_inputs(files, err_console, "no .xml files found", present="is_file")
    started = time.perf_counter()
    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        engine = FhirEngine(store, settings)
        with counting_progress("visits", err_console) as progress:
            task = progress.add_task("ingesting", total=None)

            def advance(file: str, ok: bool) -> None:
                progress.update(task, advance=1, description=f"ingesting {file}")

            ingest = Xml130Ingest(
                engine,
                max_bytes=settings.xml130_max_bytes,
                on_visit=advance,
                batch=batch,
                strict=strict,
            )
            ingest.ingest_paths(
                files, (os.cpu_count() or 1) if workers is None else workers, resume=not force
            )
        report = ingest.report
        source = getattr(ingest.icd, "source", "ICD-10")
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    audit_run(settings, "xml130-ingest", files, report.summary(), ok=not report.problems)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    for kind, problems in (("not written", report.problems), ("stored", report.stored_problems)):
        for problem in problems:
            where = ".".join(x for x in (problem.table, problem.field) if x)
            value = f" (value {problem.value!r})" if problem.value else ""
            ma_lk = f" {problem.ma_lk}" if problem.ma_lk else ""
            where = f"{where}: " if where else ""
            typer.echo(
                f"{problem.file}{ma_lk}: [{problem.severity}, {kind}] {where}"
                f"{problem.message}{value}",
                err=True,
            )
    console.print(
        counts_table(f"Ingested into {settings.database_url}", "written", report.resources)
    )
    visits = report.visits_written + report.visits_rejected
    rate = visits / elapsed if elapsed > 0 else 0.0
    console.print(f"{report.summary()} in {elapsed:.1f} s ({rate:,.0f} visits/s); ICD-10: {source}")
    if report.skipped:
        console.print(
            f"skipped {report.skipped} files already ingested (--force ingests them again)"
        )
    if report.visits_updated:
        console.print(
            f"{report.visits_updated} visits were stored already and were updated in place: "
            "visits are keyed by facility and MA_LK, never duplicated"
        )
    if report.visits_rejected or report.refused_files:
        raise typer.Exit(1)
