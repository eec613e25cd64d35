"""Command line for the audit trail and its alerts: verify, investigate, review.

``audit_app`` is meant to be mounted as ``lienthong audit`` and
``alerts_command`` as ``lienthong alerts``. Entries are the rows behind the
FHIR AuditEvent resources (https://hl7.org/fhir/R4/auditevent.html).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lienthong.access.alerts import AlertEngine
from lienthong.access.audit import AuditLog
from lienthong.cli_common import cli_console, settings_for
from lienthong.settings import Settings

audit_app = typer.Typer(
    help="The tamper-evident audit trail: check the hash chain, list entries.",
    no_args_is_help=True,
    add_completion=False,
)
console = cli_console()

Database = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        help="sqlite:///PATH or postgresql://... (default: LIENTHONG_DATABASE_URL)",
    ),
]


def _short(instant: str) -> str:
    """``2024-05-01T16:00:00.123456Z`` -> ``2024-05-01 16:00:00`` for tables."""
    return instant[:19].replace("T", " ")


def _require_log(url: str) -> None:
    """Refuse a SQLite path without an audit file: a typo must not read as "intact: 0"."""
    if url.startswith("sqlite:///"):
        main = Path(url[len("sqlite:///") :])
        side = main.with_name(f"{main.stem}-audit{main.suffix or '.db'}")
        if not side.exists():
            typer.echo(f"no audit log at {side}", err=True)
            raise typer.Exit(2)


def anchor_key(settings: Settings) -> str | None:
    """The audit anchor key, once settings carry one (``audit_key``); None until then."""
    key = getattr(settings, "audit_key", None)
    if key is not None and hasattr(key, "get_secret_value"):
        key = key.get_secret_value()
    return str(key) if key else None


@audit_app.command("verify")
def verify(database: Database = None) -> None:
    """Walk the whole hash chain; exit 1 at the first altered, missing or forged entry.

    Exit codes: 0 intact, 1 broken (the entry and the reason are printed), 2 the
    log could not be opened.
    """
    settings = settings_for(database)
    _require_log(settings.database_url)
    try:
        log = AuditLog(settings.database_url, anchor_key=anchor_key(settings))
    except Exception as exc:  # cannot check at all: not the same as a broken chain
        typer.echo(f"cannot open the audit log: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        result = log.verify()
    finally:
        log.close()
    if result.ok:
        typer.echo(f"audit chain intact: {result.checked} entries")
        return
    typer.echo(
        f"audit chain broken at entry {result.first_bad_seq}: {result.reason} "
        f"({result.checked} entries intact before it)"
    )
    raise typer.Exit(1)


@audit_app.command("list")
def list_entries(
    patient: Annotated[str | None, typer.Option(help="patient id (or Patient/ID)")] = None,
    user: Annotated[str | None, typer.Option(help="user (token subject)")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or date-time (UTC)")] = None,
    outcome: Annotated[str | None, typer.Option(help="success, denied or error")] = None,
    count: Annotated[int, typer.Option(help="entries to show, newest first")] = 50,
    database: Database = None,
) -> None:
    """List audit entries, newest first."""
    settings = settings_for(database)
    _require_log(settings.database_url)
    log = AuditLog(settings.database_url)
    try:
        records, total = log.search(
            patient=patient, user=user, since=since, outcome=outcome, count=count
        )
    finally:
        log.close()
    table = Table(title=f"Audit entries ({len(records)} of {total})")
    for column in ("seq", "recorded (UTC)", "user", "role", "action", "target", "patients"):
        table.add_column(column)
    table.add_column("outcome")
    for r in records:
        e = r.entry
        target = f"{e.resource_type or ''}{'/' + e.resource_id if e.resource_id else ''}"
        if e.query:
            target += f"?{e.query}"
        outcome_text = f"{e.outcome} {e.status}"
        if e.break_glass is not None:
            outcome_text += " [bold red]break-glass[/]"
        table.add_row(
            str(r.seq),
            _short(r.recorded),
            e.user,
            e.role,
            e.action,
            target,
            ", ".join(e.patients),
            outcome_text,
        )
    console.print(table)
    typer.echo(f"{total} matching entries")


def alerts_command(
    since: Annotated[str | None, typer.Option(help="ISO date or date-time (UTC)")] = None,
    rule: Annotated[
        str | None,
        typer.Option(help="break_glass, many_patients, repeated_denials or quiet_hours"),
    ] = None,
    database: Database = None,
) -> None:
    """List raised alerts, newest first."""
    settings = settings_for(database)
    _require_log(settings.database_url)
    engine = AlertEngine(settings, settings.database_url, rebuild=False)
    try:
        alerts, total = engine.list_alerts(since=since, rule=rule, count=1000)
    finally:
        engine.close()
    table = Table(title=f"Alerts ({len(alerts)} of {total})")
    for column in ("id", "raised (UTC)", "rule", "user", "detail", "audit entry"):
        table.add_column(column)
    for a in alerts:
        table.add_row(str(a.id), _short(a.raised), a.rule, a.user, a.detail, str(a.audit_seq))
    console.print(table)
    typer.echo(f"{total} alerts")
