"""``lienthong terminology``: load code lists into the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lienthong.cli_common import audit_run, cli_console, settings_for
from lienthong.cli_options import DatabaseOpt
from lienthong.settings import Settings
from lienthong.terminology.icd10 import DEFAULT_VERSION, ICD10_SYSTEM, WorkbookError

terminology_app = typer.Typer(no_args_is_help=True, add_completion=False)
console = cli_console(soft_wrap=True)
err_console = cli_console(stderr=True, soft_wrap=True)


@terminology_app.command("load")
def load_command(
    file: Annotated[Path, typer.Argument(help="the Ministry's ICD-10 workbook (QĐ 4469 .xlsx)")],
    database: DatabaseOpt = None,
    version: Annotated[
        str, typer.Option(help="version label of the list (CodeSystem.version)")
    ] = DEFAULT_VERSION,
) -> None:
    """Load the ICD-10 list as the ICD-10 CodeSystem (Vietnamese and English names).

    Loading a different list (or version label) replaces it with a new version of the
    same CodeSystem; loading the same list again changes nothing.
    """
    from lienthong.fhir.engine import FhirEngine
    from lienthong.fhir.errors import FhirError
    from lienthong.storage.base import open_store
    from lienthong.terminology.load import load_icd10_workbook

    if not file.is_file():
        err_console.print(f"{file}: no such file")
        raise typer.Exit(2)
    settings = settings_for(database)
    started = time.perf_counter()
    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        engine = FhirEngine(store, settings)
        with console.status(f"reading {file.name} and writing the CodeSystem"):
            try:
                result = load_icd10_workbook(engine, file, version)
            except WorkbookError as exc:
                err_console.print(str(exc))
                _audit(settings, file, f"rejected: {exc}", ok=False)
                raise typer.Exit(1) from None
            except FhirError as exc:
                for issue in exc.issues:
                    err_console.print(f"{file}: {issue.diagnostics}")
                _audit(settings, file, f"rejected: {exc}", ok=False)
                raise typer.Exit(1) from None
    finally:
        store.close()
    verb = (
        "loaded"
        if result.created
        else "unchanged (the same list is loaded already)"
        if result.unchanged
        else "replaced (new version)"
    )
    _audit(settings, file, f"CodeSystem/{result.res_id} {verb}, {result.concepts} codes", ok=True)
    console.print(
        f"ICD-10 {verb}: {result.concepts:,} codes ({result.english:,} with English names) as "
        f"CodeSystem/{result.res_id} version {result.version_id} ({ICD10_SYSTEM}) in "
        f"{settings.database_url}, {time.perf_counter() - started:.1f} s"
    )


def _audit(settings: Settings, file: Path, detail: str, ok: bool) -> None:
    """The terminology door is audited like the API: one entry per load."""
    audit_run(settings, "terminology-load", [file], detail, ok=ok, resource_type="CodeSystem")
