"""The ``lienthong`` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lienthong import __version__
from lienthong.access.cli_audit import alerts_command, audit_app
from lienthong.access.cli_users import token_command, user_app
from lienthong.cli_options import DatabaseOpt
from lienthong.demo import demo_command
from lienthong.identity.cli_link import link_command
from lienthong.identity.cli_mpi import mpi_app
from lienthong.identity.cli_verify import verify_command
from lienthong.ingest.cli_xml130 import xml130_app
from lienthong.settings import Settings
from lienthong.synth.cli_synth import synth_app
from lienthong.terminology.cli_terminology import terminology_app

app = typer.Typer(
    name="lienthong",
    help="lienthong: Vietnam's health-data interoperability platform (FHIR R4).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(user_app, name="user", help="Users of the embedded token issuer.")
app.command("token", help="Print an access token for a user (the token alone on stdout).")(
    token_command
)
app.add_typer(audit_app, name="audit", help="The hash-chained audit trail: verify, list.")
app.command("alerts", help="Alerts raised by the access rules.")(alerts_command)
app.add_typer(synth_app, name="synth", help="Synthetic Vietnamese data for tests and demos.")
app.command("link", help="Deduplicate and link records from many sources to persons.")(link_command)
app.command("verify", help="Verify records against the population register.")(verify_command)
app.add_typer(mpi_app, name="mpi", help="Master person index: review, decide, merge, rebuild.")
app.add_typer(terminology_app, name="terminology", help="Code systems: load ICD-10.")
app.add_typer(xml130_app, name="xml130", help="Hospital XML exports (QĐ 130/4750, QĐ 4210).")
app.command("demo", help="Build, load and serve synthetic health records to try.")(demo_command)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _settings(database: str | None, **overrides: object) -> Settings:
    settings = Settings.from_env()
    update = {k: v for k, v in overrides.items() if v is not None}
    if database:
        update["database_url"] = database
    return settings.model_copy(update=update)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8080)")] = None,
    database: DatabaseOpt = None,
) -> None:
    """Start the FHIR API (embedded SQLite database by default)."""
    import os

    import uvicorn

    settings = _settings(database, host=host, port=port)
    # the app factory reads its settings from the environment: hand the options over there
    for name, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"LIENTHONG_{name.upper()}"] = str(value)
    from lienthong.access.gate import auth_is_off

    try:
        auth_is_off(settings)
    except ValueError as exc:
        err_console.print(f"cannot start: {exc}")
        raise typer.Exit(2) from None
    if settings.auth == "off":
        err_console.print(
            "[bold red]WARNING: authentication is OFF[/] — every request acts as the local "
            "operator with full access. Allowed only on a loopback address."
        )
    console.print(
        f"lienthong {__version__}: FHIR R4 API at "
        f"[bold]http://{settings.host}:{settings.port}/fhir[/] "
        f"(database {settings.database_url})"
    )
    uvicorn.run(
        "lienthong.server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level="warning",
    )


@app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(help="NDJSON or Bundle JSON files or folders (plain, .gz or .bz2)"),
    ],
    database: DatabaseOpt = None,
    batch_size: Annotated[
        int | None, typer.Option(help="resources per all-or-nothing NDJSON batch")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="processes validating ahead of the writer (default: CPU count; 0: none)"),
    ] = None,
) -> None:
    """Load FHIR data files through the FHIR engine (validated and indexed)."""
    import gc
    import os

    from lienthong.fhir.engine import FhirEngine
    from lienthong.ingest.bulk import BulkImporter, expand_paths
    from lienthong.storage.base import open_store

    settings = _settings(database, import_batch_size=batch_size)
    files = expand_paths(paths)
    missing = [p for p in files if not p.exists()]
    for p in missing:
        err_console.print(f"{p}: no such file")
    if missing:
        raise typer.Exit(2)
    if not files:
        err_console.print("no .ndjson or .json files found")
        raise typer.Exit(2)
    # Loading allocates millions of short-lived objects; a full GC pass every few
    # thousand allocations costs more than the memory it frees here.
    gc.set_threshold(100_000, 50, 100)
    store = open_store(settings.database_url, settings.pg_pool_size)
    started = time.perf_counter()
    try:
        engine = FhirEngine(store, settings)
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} resources"),
            TimeElapsedColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("importing", total=None)

            def advance(path: Path, n: int) -> None:
                progress.update(task, advance=n, description=f"importing {path.name}")

            importer = BulkImporter(
                engine,
                settings.import_batch_size,
                workers=(os.cpu_count() or 1) if workers is None else workers,
                on_progress=advance,
            )
            report = importer.run(files)
        store.optimize()
    finally:
        store.close()
    _audit_import(settings.database_url, files, report)
    elapsed = time.perf_counter() - started
    table = Table(title=f"Imported into {settings.database_url}")
    table.add_column("resource type")
    table.add_column("loaded", justify="right")
    for rtype, n in sorted(report.loaded.items()):
        table.add_row(rtype, str(n))
    table.add_row("[bold]total[/]", f"[bold]{report.total_loaded}[/]")
    console.print(table)
    rate = report.total_loaded / elapsed if elapsed > 0 else 0.0
    unchanged = f", {report.unchanged} already present" if report.unchanged else ""
    console.print(
        f"{report.files} files, {report.total_loaded} resources loaded{unchanged}, "
        f"{report.rejected} rejected in {elapsed:.1f} s ({rate:,.0f} resources/s)"
    )
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    if report.rejected:
        raise typer.Exit(1)


def _audit_import(database_url: str, files: list[Path], report: object) -> None:
    """The bulk-import door is audited like the API: one entry per run."""
    import getpass

    from lienthong.access.audit import AuditEntry, AuditLog

    loaded = getattr(report, "total_loaded", 0)
    rejected = getattr(report, "rejected", 0)
    log = AuditLog(database_url, anchor_key=Settings.from_env().audit_key)
    try:
        log.append(
            AuditEntry(
                user=f"cli:{getpass.getuser()}",
                role="data_admin",
                on_behalf_of=None,
                action="import",
                resource_type=None,
                resource_id=None,
                query=" ".join(str(f) for f in files)[:2000],
                patients=(),
                outcome="error" if rejected else "success",
                status=422 if rejected else 200,
                purpose="HOPERAT",
                break_glass=None,
                source_ip=None,
                detail=f"{loaded} resources loaded, {rejected} rejected",
            )
        )
    finally:
        log.close()


if __name__ == "__main__":
    app()
