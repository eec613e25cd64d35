"""``lienthong synth population``: write a synthetic population and its noisy records.

Record-linkage tests and benchmarks need realistic Vietnamese people without
touching real patients; this command makes them reproducibly from a seed::

    lienthong synth population --people 100000 --seed 7 --out ./synth
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from lienthong.cli_common import cli_console, sized_progress
from lienthong.synth.population import NOISE_PROFILES, communes_of, generate

synth_app = typer.Typer(
    name="synth",
    help="Synthetic Vietnamese population for record-linkage tests and benchmarks.",
    no_args_is_help=True,
    add_completion=False,
)
console = cli_console()
err_console = cli_console(stderr=True, soft_wrap=True)


ProvinceOpt = Annotated[
    str | None,
    typer.Option(
        "--province",
        help="A current two-digit province code (01 Hà Nội, 79 TP Hồ Chí Minh, ...): "
        "everyone lives there and visits its facilities (default: the whole country).",
    ),
]


TodayOpt = Annotated[
    datetime | None,
    typer.Option(
        "--today",
        formats=["%Y-%m-%d"],
        help="The day the data is made for, YYYY-MM-DD (default: today): ages, visits and "
        "vaccinations are dated back from it; the same seed and day give the same data.",
    ),
]
EARLIEST_DAY = date(2025, 7, 1)
"""The synthetic places are the administrative units in force from this day."""


def synth_day(today: datetime | None) -> date | None:
    """``--today`` as a date; exits 2 naming the option for a day before the units the
    synthetic places follow came into force."""
    if today is None:
        return None
    if today.date() < EARLIEST_DAY:
        err_console.print(
            f"--today: {today.date()} is before {EARLIEST_DAY}, when the provinces and "
            "communes the synthetic data uses came into force"
        )
        raise typer.Exit(2)
    return today.date()


def _check_province(province: str | None) -> None:
    if province is None:
        return
    try:
        communes_of(province)
    except ValueError as exc:
        err_console.print(f"--province: {exc}")
        raise typer.Exit(2) from None


@synth_app.callback()
def _synth() -> None:
    """Synthetic data generators (a callback keeps ``population`` a subcommand)."""


@synth_app.command("population")
def population_command(
    people: Annotated[int, typer.Option("--people", "-n", min=1, help="How many people.")],
    seed: Annotated[int, typer.Option("--seed", "-s", help="Same seed, same files.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("synth"),
    records_per_person: Annotated[
        float,
        typer.Option("--records-per-person", min=0.0, help="Mean records per person."),
    ] = 2.0,
    province: ProvinceOpt = None,
    noise: Annotated[
        str,
        typer.Option(
            "--noise",
            help="Data-entry noise profile: 'default' (the newer kinds - Telex/VNI/VIQR "
            "residue, i/y spellings, slips, other people's CCCDs, ... - at a quarter of "
            "their rates) or 'real' (at their full rates).",
        ),
    ] = "default",
    today: TodayOpt = None,
) -> None:
    """Write register.csv, records.csv, truth.csv and noise.csv into OUT."""
    day = synth_day(today)
    if noise not in NOISE_PROFILES:
        err_console.print(
            f"--noise: no profile {noise!r}; the profiles are: " + ", ".join(NOISE_PROFILES)
        )
        raise typer.Exit(2)
    _check_province(province)
    with sized_progress(console, "[bold]people") as bar:
        task = bar.add_task("people", total=people)
        summary = generate(
            people,
            seed,
            out,
            records_per_person=records_per_person,
            progress=lambda done: bar.update(task, completed=done),
            province=province,
            noise=noise,
            today=day,
        )
    console.print(
        f"{summary.people:,} people in {summary.households:,} households, "
        f"{summary.register_rows:,} in the register, {summary.records:,} records "
        f"in {summary.seconds:.1f} s"
    )
    for source, count in summary.records_by_source.items():
        console.print(f"  {source}: {count:,} records")
    for name, path in summary.files.items():
        console.print(f"  {name}: {path}")


@synth_app.command("xml130")
def xml130_command(
    visits: Annotated[int, typer.Option("--visits", "-n", min=0, help="How many visits.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path(
        "synth-xml130"
    ),
    seed: Annotated[int, typer.Option("--seed", "-s", help="Same seed, same files.")] = 0,
    defects: Annotated[
        float,
        typer.Option("--defects", min=0.0, max=1.0, help="Share of visits given one defect."),
    ] = 0.0,
    population: Annotated[
        Path | None,
        typer.Option(help="A 'synth population' folder to take patients from (default: new)."),
    ] = None,
    per_file: Annotated[int, typer.Option("--per-file", min=1, help="Visits per file.")] = 500,
    province: ProvinceOpt = None,
    vendor_quirks: Annotated[
        float,
        typer.Option(
            "--vendor-quirks",
            min=0.0,
            max=1.0,
            help="Share of files written the way HIS products write them (xsi namespace URI "
            "with a space, byte-order mark, CRLF, wrapped base64, LOAIHOSO spelling) with "
            "the content quirks of real files (decimal commas, no district code after "
            "1 July 2025, empty TEN_CHI_SO); each is listed in quirks.csv.",
        ),
    ] = 0.0,
    today: TodayOpt = None,
) -> None:
    """Write hospital XML exports (QĐ 130 envelopes, some QĐ 4210) into OUT/<facility>/."""
    from lienthong.synth.xml130 import generate_xml130

    day = synth_day(today)
    _check_province(province)
    if population is not None and not (population / "register.csv").exists():
        console.print(f"{population}: no register.csv (make one with 'synth population')")
        raise typer.Exit(2)
    with sized_progress(console, "[bold]visits") as bar:
        task = bar.add_task("visits", total=visits)
        summary = generate_xml130(
            visits,
            out,
            seed=seed,
            defects=defects,
            population=population,
            visits_per_file=per_file,
            progress=lambda done: bar.update(task, completed=done),
            province=province,
            quirks=vendor_quirks,
            today=day,
        )
    standards = ", ".join(f"QĐ {k}: {v:,}" for k, v in sorted(summary.visits_by_standard.items()))
    console.print(
        f"{summary.visits:,} visits ({standards}) from {len(summary.visits_by_facility)} "
        f"facilities in {summary.files} files under {out}, {summary.defects:,} with a seeded "
        f"defect, in {summary.seconds:.1f} s"
    )
    if vendor_quirks:
        console.print(
            f"{summary.quirky_files} files in a vendor style, {summary.quirks:,} quirks listed"
        )
    for name, path in summary.paths.items():
        console.print(f"  {name}: {path}")
