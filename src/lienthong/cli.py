"""The ``lienthong`` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lienthong import __version__
from lienthong.access.cli_audit import alerts_command, audit_app
from lienthong.access.cli_users import client_app, token_command, user_app
from lienthong.cli_common import (
    audit_run,
    cli_console,
    counting_progress,
    counts_table,
    require_inputs,
    settings_for,
)
from lienthong.cli_options import DatabaseOpt
from lienthong.demo import demo_command
from lienthong.identity.cli_link import link_command
from lienthong.identity.cli_mpi import mpi_app
from lienthong.identity.cli_verify import verify_command
from lienthong.ingest.cli_xml130 import xml130_app
from lienthong.storage.cli_backup import (
    backup_command,
    backup_key_command,
    migrate_command,
    restore_command,
)
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
app.add_typer(client_app, name="client", help="Client systems that get tokens themselves.")
app.add_typer(audit_app, name="audit", help="The hash-chained audit trail: verify, list.")
app.command("alerts", help="Alerts raised by the access rules.")(alerts_command)
app.add_typer(synth_app, name="synth", help="Synthetic Vietnamese data for tests and demos.")
app.command("link", help="Deduplicate and link records from many sources to persons.")(link_command)
app.command("verify", help="Verify records against the population register.")(verify_command)
app.add_typer(mpi_app, name="mpi", help="Master person index: review, decide, merge, rebuild.")
app.add_typer(terminology_app, name="terminology", help="Code systems: load ICD-10.")
app.add_typer(xml130_app, name="xml130", help="Hospital XML exports (QĐ 130/4750, QĐ 4210).")
app.command("demo", help="Build, load and serve synthetic health records to try.")(demo_command)
app.command("backup", help="Back up the store and its side databases, online.")(backup_command)
app.command("restore", help="Restore a backup and verify it.")(restore_command)
app.command("backup-key", help="Write a new backup encryption key file.")(backup_key_command)
app.command("migrate", help="Apply the schema migrations the database needs.")(migrate_command)
console = cli_console()
err_console = cli_console(stderr=True, soft_wrap=True)


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

    settings = settings_for(database, host=host, port=port)
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
    from lienthong.server.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    console.print(
        f"lienthong {__version__}: FHIR R4 API at "
        f"[bold]http://{settings.host}:{settings.port}/fhir[/] "
        f"(database {settings.database_url})"
    )
    from lienthong.fhir.limits import Limits
    from lienthong.server.http_protocol import Utf8TargetProtocol
    from lienthong.server.limits import h11_event_size

    uvicorn.run(
        "lienthong.server.app:create_app",
        factory=True,
        http=Utf8TargetProtocol,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # logging is lienthong's (LIENTHONG_LOG_FORMAT): uvicorn's access log would write
        # raw query strings, which carry CCCD numbers and names
        log_config=None,
        access_log=False,
        # forwarding headers are lienthong's to judge (LIENTHONG_TRUSTED_PROXIES), so the
        # app sees the connection's real peer rather than uvicorn's rewrite of it
        proxy_headers=False,
        # the request head h11 buffers: long enough for LIENTHONG_URL_MAX_CHARS, so a
        # longer URL gets the app's 414 OperationOutcome rather than h11's bare 400
        h11_max_incomplete_event_size=h11_event_size(Limits.from_settings(settings)),
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
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="import again what the import ledger says is already imported"
        ),
    ] = False,
) -> None:
    """Load FHIR data files through the FHIR engine (validated and indexed). What is
    committed is noted by content hash, so a re-run skips it (resuming an interrupted
    import); --force imports everything again."""
    import gc
    import os

    from lienthong.fhir.engine import FhirEngine
    from lienthong.ingest.bulk import BulkImporter, expand_paths
    from lienthong.storage.base import open_store

    settings = settings_for(database, import_batch_size=batch_size)
    files = expand_paths(paths)
    require_inputs(files, err_console, "no .ndjson or .json files found")
    # Loading allocates millions of short-lived objects; a full GC pass every few
    # thousand allocations costs more than the memory it frees here.
    gc.set_threshold(100_000, 50, 100)
    store = open_store(settings.database_url, settings.pg_pool_size)
    started = time.perf_counter()
    try:
        engine = FhirEngine(store, settings)
        with counting_progress("resources", err_console) as progress:
            task = progress.add_task("importing", total=None)

            def advance(path: Path, n: int) -> None:
                progress.update(task, advance=n, description=f"importing {path.name}")

            importer = BulkImporter(
                engine,
                settings.import_batch_size,
                workers=(os.cpu_count() or 1) if workers is None else workers,
                on_progress=advance,
                force=force,
            )
            report = importer.run(files)
        store.optimize()
    finally:
        store.close()
    audit_run(
        settings,
        "import",
        files,
        f"{report.total_loaded} resources loaded, {report.rejected} rejected",
        ok=not report.rejected,
    )
    elapsed = time.perf_counter() - started
    console.print(
        counts_table(
            f"Imported into {settings.database_url}",
            "loaded",
            report.loaded,
            total=report.total_loaded,
        )
    )
    rate = report.total_loaded / elapsed if elapsed > 0 else 0.0
    unchanged = f", {report.unchanged} already present" if report.unchanged else ""
    console.print(
        f"{report.files} files, {report.total_loaded} resources loaded{unchanged}, "
        f"{report.rejected} rejected in {elapsed:.1f} s ({rate:,.0f} resources/s)"
    )
    if report.skipped:
        console.print(f"{report.skipped_text()} (--force imports them again)")
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    if report.rejected:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
