"""``lienthong link``: one person per set of records, from many sources."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lienthong.cli_common import cli_console

console = cli_console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(message, markup=False, highlight=False)
    return typer.Exit(code)


def link_command(
    records: Annotated[
        Path,
        typer.Argument(
            help="records CSV: record_id,source,full_name,birth_date,sex,cccd,bhxh,bhyt,"
            "phone,address,province_code,commune_code (record_id, full_name and "
            "birth_date required)"
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="where to write record_id,person_id,match_probability"),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="a saved linkage model (Splink JSON) instead of the shipped one"),
    ] = None,
    train: Annotated[
        bool, typer.Option("--train", help="re-estimate the model on the input first")
    ] = False,
    save_model: Annotated[
        Path | None, typer.Option(help="also save the model used, for later runs")
    ] = None,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="match probability that links two records")
    ] = 0.95,
    backend: Annotated[
        str, typer.Option(help="duckdb (one machine) or spark (Spark, local mode)")
    ] = "duckdb",
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="processes normalising the records (default: one per core)"),
    ] = None,
) -> None:
    """Deduplicate and link records to persons (deterministic identifiers, then Splink)."""
    from lienthong.identity.linkage import (
        BACKENDS,
        LinkageModel,
        RecordsError,
        prepare,
        run_linkage,
    )
    from lienthong.identity.linkage import train as train_model

    if model is not None and train:
        raise _fail("--model and --train: choose one (a given model, or one trained now)", 2)
    if backend not in BACKENDS:
        raise _fail(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}", 2)
    if not records.exists():
        raise _fail(f"{records}: no such file", 2)
    used: LinkageModel | None = None
    if model is not None:
        try:
            used = LinkageModel.load(model)
        except ValueError as exc:
            raise _fail(f"--model: {exc}") from None
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            table = prepare(records, workers=workers, progress=progress)
        except (RecordsError, RuntimeError) as exc:
            raise _fail(str(exc)) from None
        normalising = time.perf_counter() - started
        if train:
            task = bar.add_task("training", total=None)
            try:
                used = train_model(table, backend=backend)
            except ValueError as exc:
                raise _fail(
                    f"--train: {exc}; link without --train to use the shipped model"
                ) from None
            bar.update(task, total=1, completed=1)
        if used is None:
            used = LinkageModel.default()
        try:
            result = run_linkage(
                table, used, threshold, backend=backend, progress=progress, workers=workers
            )
        except ImportError as exc:
            raise _fail(f"--backend {backend}: {exc} (pip install 'lienthong[spark]')") from None
        finally:
            if backend == "spark":
                from lienthong.identity.linkage import stop_spark

                stop_spark()
    if save_model is not None:
        used.save_model(save_model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["record_id", "person_id", "match_probability"])
        writer.writerows((r, p, f"{m:.6f}") for r, p, m in result.rows)
    elapsed = time.perf_counter() - started
    s = result.seconds
    typer.echo(
        f"{result.records:,} records -> {result.persons:,} persons; "
        f"{result.pairs_compared:,} pairs compared\n"
        f"links: {result.identifier_links:,} by identifier (CCCD/BHXH), "
        f"{result.probabilistic_links:,} probabilistic (match probability >= {threshold}), "
        f"{result.refused_links:,} refused (names, birth dates or identifiers contradict)\n"
        f"time: {elapsed:.1f} s (normalising {normalising:.1f} s, "
        f"scoring {s.get('scoring', 0.0):.1f} s, clustering {s.get('clustering', 0.0):.1f} s)\n"
        f"written to {out}" + (f"; model saved to {save_model}" if save_model else "")
    )
