"""``lienthong mpi``: the master person index from the command line.

Review the uncertain pairs and decide them, merge and unmerge persons, see the
counts, and rebuild the index over every stored Patient. The commands act as the
local operator on the database directly (as ``lienthong import`` does) and log each
decision with the operator's name.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lienthong.cli_common import cli_console
from lienthong.cli_options import DatabaseOpt

mpi_app = typer.Typer(no_args_is_help=True)
console = cli_console(soft_wrap=True)  # ids stay whole on one line, for copying
err_console = cli_console(stderr=True, soft_wrap=True)


@contextmanager
def _engine(database: str | None) -> Iterator[Any]:
    from lienthong.cli_common import settings_for
    from lienthong.fhir.engine import FhirEngine
    from lienthong.storage.base import open_store

    settings = settings_for(database, mpi=True)
    store = open_store(settings.database_url, settings.pg_pool_size)
    try:
        yield FhirEngine(store, settings)
    finally:
        store.close()


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (containers)
        return "cli:operator"


def _run(engine: Any, action: str, what: str, fn: Callable[[], Any]) -> Any:
    """Run an operation that changes persons; a FHIR error becomes one line per problem
    and exit status 1. Either way the run is written to the audit trail, as the API's
    $merge/$unmerge are."""
    from lienthong.cli_common import audit_run
    from lienthong.fhir.errors import FhirError

    try:
        result = fn()
    except FhirError as exc:
        lines = []
        for issue in exc.issues:
            where = f"{', '.join(issue.expression)}: " if issue.expression else ""
            lines.append(f"{where}{issue.diagnostics}")
            err_console.print(lines[-1])
        audit_run(engine.settings, action, [], f"{what}: {'; '.join(lines)}", ok=False,
                  resource_type="Patient")  # fmt: skip
        raise typer.Exit(1) from None
    audit_run(engine.settings, action, [], f"{what}: {result}", ok=True, resource_type="Patient")
    return result


@mpi_app.command("stats")
def stats_command(database: DatabaseOpt = None) -> None:
    """Records, persons and pending reviews."""
    with _engine(database) as engine, engine.store.reader() as session:
        stats = engine.mpi.stats(session)
    for key, value in stats.items():
        console.print(f"{key.replace('_', ' ')}: {value:,}")


@mpi_app.command("review")
def review_command(
    database: DatabaseOpt = None,
    limit: Annotated[int, typer.Option(help="pairs to list, highest score first")] = 50,
) -> None:
    """The uncertain pairs waiting for a decision, with what agrees and what does not."""
    with _engine(database) as engine, engine.store.reader() as session:
        pairs = engine.mpi.review(session, limit)
    # one line per pair, the pair first, so it can be pasted into `lienthong mpi decide`
    console.print(f"{len(pairs)} pairs to review (highest score first)")
    for p in pairs:
        agree = ", ".join(p.get("agree", [])) or "-"
        disagree = ", ".join(p.get("disagree", [])) or "-"
        bridge = (
            f"  bridged by {p['bridged_by']}, but the two cannot be one person"
            if p.get("bridged_by")
            else ""
        )
        console.print(
            f"{p['pair']}  score {p['score']:.3f}  agree: {agree}  disagree: {disagree}{bridge}",
            soft_wrap=True,
        )


@mpi_app.command("decide")
def decide_command(
    pair: Annotated[str, typer.Argument(help="the pair as listed by review: ID:ID")],
    decision: Annotated[str, typer.Argument(help="match or no-match")],
    database: DatabaseOpt = None,
) -> None:
    """Decide a pair; the decision holds for every later resolution."""
    a, sep, b = pair.partition(":")
    if not sep or not a or not b:
        err_console.print(f"pair: expected ID:ID, got {pair!r}")
        raise typer.Exit(2)
    with _engine(database) as engine:

        def run() -> Any:
            with engine.store.writer() as session:
                return engine.mpi.decide(session, a, b, decision, _operator())

        result = _run(engine, "mpi-decide", f"{pair} {decision}", run)
    done = (
        f"; merged into Patient/{result['target']}"
        if decision == "match" and "target" in result
        else ""
    )
    if decision == "no-match" and "target" in result:
        done = f"; Patient/{b} split out into Patient/{result['target']}"
    console.print(f"pair {result['pair']}: {decision}{done}")


@mpi_app.command("merge")
def merge_command(
    source: Annotated[str, typer.Argument(help="Patient id (record or master) to merge away")],
    target: Annotated[str, typer.Argument(help="Patient id (record or master) to keep")],
    database: DatabaseOpt = None,
) -> None:
    """Merge the person of SOURCE into the person of TARGET."""
    with _engine(database) as engine:

        def run() -> Any:
            with engine.store.writer() as session:
                return engine.mpi.merge(session, source, target, _operator())

        result = _run(engine, "mpi-merge", f"{source} into {target}", run)
    console.print(
        f"merged Patient/{result['source']} into Patient/{result['target']}: "
        f"{len(result['records'])} records moved (event {result['event']})"
    )


@mpi_app.command("unmerge")
def unmerge_command(
    event: Annotated[str | None, typer.Option(help="the merge event to undo")] = None,
    record: Annotated[str | None, typer.Option(help="a record to split out on its own")] = None,
    database: DatabaseOpt = None,
) -> None:
    """Undo a merge (--event) or split one record out into its own person (--record)."""
    if (event is None) == (record is None):
        err_console.print("unmerge: give exactly one of --event and --record")
        raise typer.Exit(2)
    with _engine(database) as engine:

        def run() -> Any:
            with engine.store.writer() as session:
                return engine.mpi.unmerge(session, _operator(), event_id=event, record=record)

        what = f"event {event}" if event else f"record {record}"
        result = _run(engine, "mpi-unmerge", what, run)
    console.print(
        f"unmerged: {len(result['records'])} records now under Patient/"
        f"{result['source'] if event else result['target']} (event {result['event']})"
    )


@mpi_app.command("events")
def events_command(
    database: DatabaseOpt = None,
    limit: Annotated[int, typer.Option(help="events to list, newest first")] = 50,
) -> None:
    """The log of merges, unmerges and decisions: who, when, which records."""
    with _engine(database) as engine, engine.store.reader() as session:
        events = engine.mpi.events(session, limit)
    for e in events:
        rest = {k: v for k, v in e.items() if k not in ("id", "at", "who", "action")}
        console.print(f"{e['at']} {e['who']} {e['action']} {e['id']} {rest}")


@mpi_app.command("rebuild")
def rebuild_command(database: DatabaseOpt = None) -> None:
    """Re-resolve every stored Patient (masters are remade; decisions are kept)."""
    with _engine(database) as engine, Progress(
        TextColumn("resolving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console,
    ) as progress:  # fmt: skip
        task = progress.add_task("resolving", total=None)

        def advance(n: int, total: int) -> None:
            progress.update(task, advance=n, total=total)

        stats = _run(engine, "mpi-rebuild", "every Patient", lambda: engine.mpi.rebuild(advance))
    console.print(
        f"rebuilt: {stats['resolved']:,} records resolved to {stats['persons']:,} persons, "
        f"{stats['pending_reviews']:,} pairs to review ({stats['masters_retired']:,} "
        "earlier masters deleted)"
    )
