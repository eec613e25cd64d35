"""``lienthong link``: one person per set of records, from many sources."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def link_command(
    records: Annotated[Path, typer.Argument(help="records CSV (record_id,source,full_name,...)")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="where to write record_id,person_id,match_probability"),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="a saved linkage model (JSON); trained on the input if absent"),
    ] = None,
    save_model: Annotated[
        Path | None, typer.Option(help="also save the model used, for later runs")
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="match probability that links two records")
    ] = 0.95,
) -> None:
    """Deduplicate and link records to persons (deterministic identifiers, then Splink)."""
    from lienthong.identity.linkage import LinkageModel, link, prepare, train

    if not records.exists():
        console.print(f"{records}: no such file")
        raise typer.Exit(2)
    started = time.perf_counter()
    with console.status("normalising records…"):
        try:
            table = prepare(records)
        except ValueError as exc:
            console.print(f"{records}: {exc}")
            raise typer.Exit(1) from None
    prepared = time.perf_counter()
    with console.status("training the model…" if model is None else "loading the model…"):
        try:
            used = LinkageModel.load(model) if model is not None else train(table)
        except ValueError as exc:
            # Splink's estimation can fail on small or unusual inputs; say what to do
            console.print(
                f"could not {'load' if model else 'train'} the linkage model: {exc}\n"
                "pass --model with a model trained on a larger set of records"
            )
            raise typer.Exit(1) from None
    with console.status(f"linking {table.num_rows:,} records…"):
        result = link(table, model=used, threshold=threshold)
    if save_model is not None:
        used.save_model(save_model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["record_id", "person_id", "match_probability"])
        writer.writerows((r, p, f"{m:.6f}") for r, p, m in result)
    elapsed = time.perf_counter() - started
    persons = len({p for _, p, _ in result})
    typer.echo(
        f"{len(result):,} records -> {persons:,} persons in {elapsed:.1f} s "
        f"(normalising {prepared - started:.1f} s); written to {out}"
    )
