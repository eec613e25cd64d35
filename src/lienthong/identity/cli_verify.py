"""``lienthong verify``: check records against the population register and report why.

Three ways in::

    lienthong verify records.csv --register register.csv --out report.csv [--format xlsx]
    lienthong verify records.csv --register-url https://register.example/api --out report.csv
    lienthong verify --store --register register.csv      # the Patients in the FHIR store
    lienthong verify --progress                           # how far each source has got

The HTTP mode appends each finished batch to the report, so that a run the service
interrupts loses nothing: ``--resume`` continues after the last reported record.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from lienthong.cli_common import cli_console, sized_progress
from lienthong.cli_options import DatabaseOpt
from lienthong.identity import layouts

if TYPE_CHECKING:
    from lienthong.identity.register import FileRegister, HttpRegister

# From `layouts`, not `verify`, so that the CLI starts without DuckDB.
RECORD_COLUMNS = layouts.VERIFY_RECORD_COLUMNS
REPORT_COLUMNS = layouts.VERIFY_REPORT_COLUMNS
STATUSES = layouts.VERIFY_STATUSES

out_console = cli_console()
console = cli_console(stderr=True, soft_wrap=True)

STATUS_LABELS = {
    "verified": (
        "Khớp với CSDL dân cư",
        "Verified: the register's person, differences of form only",
    ),
    "corrected": ("Khớp, cần sửa thông tin", "Corrected: the register's person, fields to correct"),
    "mismatch": ("Số định danh của người khác", "Mismatch: the number belongs to someone else"),
    "not_found": (
        "Không có trong CSDL dân cư",
        "Not found: a well-formed number the register lacks",
    ),
    "invalid_id": ("Số định danh không hợp lệ", "Invalid: malformed or contradicts sex/birth year"),
    "missing_id": ("Thiếu số định danh", "Missing: the record has no number"),
}
"""Vietnamese and English labels of each status, for the summary sheet."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    for line in message.splitlines():
        console.print(line, markup=False, highlight=False)
    return typer.Exit(code)


def verify_command(
    records: Annotated[
        Path | None, typer.Argument(help="records CSV or Parquet (the columns of `lienthong link`)")
    ] = None,
    register: Annotated[
        Path | None,
        typer.Option(help="register extract, CSV or Parquet: cccd,full_name,birth_date,sex,..."),
    ] = None,
    register_url: Annotated[
        str | None, typer.Option(help="base URL of a register service (docs/register-service.md)")
    ] = None,
    register_token: Annotated[
        str | None,
        typer.Option(envvar="LIENTHONG_REGISTER_TOKEN", help="bearer token for the service"),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="report file")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or xlsx")] = "csv",
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted run: skip records already in the report")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="records per service call")] = 500,
    rate_limit: Annotated[
        float, typer.Option(min=0.0, help="most service calls per second (0: no limit)")
    ] = 10.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds per service call")] = 10.0,
    retries: Annotated[int, typer.Option(min=1, help="attempts per service call")] = 5,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="do not keep the normalised register for later runs")
    ] = False,
    store: Annotated[
        bool, typer.Option("--store", help="verify the Patients in the FHIR store")
    ] = False,
    progress_report: Annotated[
        bool, typer.Option("--progress", help="report progress per source and facility")
    ] = False,
    database: DatabaseOpt = None,
) -> None:
    """Verify records against the national population register."""
    if progress_report:
        from lienthong.identity.verify_store import print_progress

        print_progress(database, out_console)
        return
    if fmt not in ("csv", "xlsx"):
        raise _fail(f"--format: must be csv or xlsx, got {fmt!r}")
    if (register is None) == (register_url is None):
        raise _fail("give exactly one of --register FILE and --register-url URL")
    connector = _connector(register, register_url, register_token, rate_limit, timeout, retries)
    if store:
        from lienthong.identity.register import RegisterUnavailable
        from lienthong.identity.verify_store import verify_store

        try:
            verify_store(database, connector, console=console, out_console=out_console)
        except RegisterUnavailable as exc:
            # finished batches are committed; a rerun skips Patients whose outcome stands
            raise _fail(f"register service failed: {exc}; run again to continue", 1) from None
        finally:
            connector.close()
        return
    if records is None or out is None:
        raise _fail("give the RECORDS file and --out (or --store, or --progress)")
    if not records.exists():
        raise _fail(f"{records}: no such file")
    try:
        _verify_file(records, connector, out, fmt, resume, batch_size, no_cache)
    finally:
        connector.close()


def _connector(
    register: Path | None,
    url: str | None,
    token: str | None,
    rate_limit: float,
    timeout: float,
    retries: int,
) -> FileRegister | HttpRegister:
    from lienthong.identity.register import FileRegister, HttpRegister, RetryPolicy

    if register is not None:
        try:
            return FileRegister(register)
        except FileNotFoundError as exc:
            raise _fail(f"--register: {exc}") from None
    assert url is not None
    if not url.startswith(("http://", "https://")):
        raise _fail(f"--register-url: must start with http:// or https://, got {url!r}")
    return HttpRegister(
        url,
        token=token,
        rate_limit=rate_limit,
        retry=RetryPolicy(attempts=retries, timeout=timeout),
    )


def _working_csv(out: Path, fmt: str) -> Path:
    """The CSV the run appends to: the report itself, or a side file for xlsx."""
    return out if fmt == "csv" else out.with_name(out.name + ".partial.csv")


def _done_ids(path: Path) -> list[str]:
    """Record ids already in an interrupted report; a torn last line is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != REPORT_COLUMNS:
            raise _fail(f"{path}: not a verification report (its header differs); cannot resume")
        return [row[0] for row in reader if row]


def _verify_file(
    records: Path,
    connector: FileRegister | HttpRegister,
    out: Path,
    fmt: str,
    resume: bool,
    batch_size: int,
    no_cache: bool = False,
) -> None:
    import pyarrow as pa

    from lienthong.identity.register import FileRegister, RegisterUnavailable
    from lienthong.identity.verify import VerifyEngine

    work = _working_csv(out, fmt)
    work.parent.mkdir(parents=True, exist_ok=True)
    done = _done_ids(work) if resume else []
    if not resume and work.exists():
        work.unlink()
    started = time.perf_counter()
    engine = VerifyEngine()
    totals: dict[str, dict[str, int]] = {}
    whole = connector.whole
    try:
        with sized_progress(console) as bar:
            if whole:
                task = bar.add_task("loading the register", total=None)
                assert isinstance(connector, FileRegister)
                path = connector.path
                cache = None if no_cache else connector.cache_path()
                try:
                    n = engine.load_register(path, cache=cache)
                except (ValueError, duckdb_error()) as exc:
                    raise _fail(f"{path}: {exc}", 1) from None
                bar.update(task, description=f"register loaded ({n:,} people); verifying")
                skip = pa.table({"record_id": pa.array(done, pa.string())}) if done else None
                try:
                    result = engine.verify(
                        records,
                        skip_ids=skip,
                        on_step=lambda name: bar.update(task, description=name),
                    )
                except (ValueError, duckdb_error()) as exc:
                    raise _fail(f"{records}: {exc}", 1) from None
                bar.update(task, description=f"writing {work.name}")
                engine.write_csv(work, append=bool(done))
                bar.update(
                    task, description="verified", total=result.records, completed=result.records
                )
                _merge(totals, result.by_source)
            else:
                rows = _read_records(records)
                skip_set = set(done)
                todo = [r for r in rows if r["record_id"] not in skip_set]
                task = bar.add_task("verifying", total=len(rows), completed=len(rows) - len(todo))
                if not work.exists():
                    with work.open("w", encoding="utf-8", newline="") as fh:
                        csv.writer(fh, lineterminator="\n").writerow(REPORT_COLUMNS)
                for batch in _batches(todo, batch_size):
                    try:
                        entries = connector.entries_for(batch)
                    except RegisterUnavailable as exc:
                        bar.stop()
                        written = (
                            len(rows) - len(todo) + sum(sum(s.values()) for s in totals.values())
                        )
                        raise _fail(
                            f"register service failed: {exc}\n"
                            f"{written:,} of {len(rows):,} records are in {work}; run again "
                            "with --resume to continue",
                            1,
                        ) from None
                    engine.load_register(entries, register_size=connector.register_size)
                    table = pa.table(
                        {
                            c: pa.array([r.get(c, "") for r in batch], pa.string())
                            for c in (*RECORD_COLUMNS, "address")
                        }
                    )
                    result = engine.verify(table)
                    engine.write_csv(work, append=True)
                    _merge(totals, result.by_source)
                    bar.update(task, advance=len(batch))
    finally:
        engine.close()
    if done:
        _merge(totals, _count_report(work, records, done))
    if fmt == "xlsx":
        write_xlsx(work, out, totals, getattr(connector, "version", ""))
        work.unlink()
    elapsed = time.perf_counter() - started
    print_summary(totals, out_console)
    total = sum(sum(s.values()) for s in totals.values())
    rate = (total - len(done)) / elapsed if elapsed > 0 else 0.0
    version = getattr(connector, "version", "")
    out_console.print(
        f"{total:,} records verified against {version or 'the register'} in {elapsed:.1f} s "
        f"({rate:,.0f} records/s); report written to {out}"
    )


def duckdb_error() -> type[Exception]:
    import duckdb

    return duckdb.Error


def _merge(totals: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for source, statuses in more.items():
        mine = totals.setdefault(source, {})
        for status, n in statuses.items():
            mine[status] = mine.get(status, 0) + n


def _count_report(work: Path, records: Path, done: list[str]) -> dict[str, dict[str, int]]:
    """Per-source counts of the records reported by earlier runs (for the summary)."""
    source_of = {r["record_id"]: r.get("source", "") for r in _read_records(records)}
    wanted = set(done)
    counts: dict[str, dict[str, int]] = {}
    with work.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["record_id"] in wanted:
                wanted.discard(row["record_id"])
                per = counts.setdefault(source_of.get(row["record_id"], ""), {})
                per[row["status"]] = per.get(row["status"], 0) + 1
    return counts


def _read_records(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return [
            {k: "" if v is None else str(v) for k, v in row.items()}
            for row in pq.read_table(path).to_pylist()
        ]
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"record_id", "full_name", "birth_date"} - set(reader.fieldnames or ())
        if missing:
            raise _fail(f"{path}: the records lack the column(s) {', '.join(sorted(missing))}", 1)
        return [{k: v or "" for k, v in row.items() if k is not None} for row in reader]


def _batches(rows: list[dict[str, str]], size: int) -> Iterator[list[dict[str, str]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def print_summary(totals: dict[str, dict[str, int]], out: Console) -> None:
    """Counts per status (rows) and per source (columns)."""
    sources = sorted(totals)
    table = Table(title="Verification against the population register")
    table.add_column("status")
    for s in sources:
        table.add_column(s or "(no source)", justify="right")
    table.add_column("total", justify="right")
    for status in STATUSES:
        counts = [totals[s].get(status, 0) for s in sources]
        table.add_row(status, *(f"{n:,}" for n in counts), f"{sum(counts):,}")
    all_counts = [sum(totals[s].values()) for s in sources]
    table.add_row(
        "[bold]records[/]", *(f"{n:,}" for n in all_counts), f"[bold]{sum(all_counts):,}[/]"
    )
    out.print(table)


def write_xlsx(
    report_csv: Path, out: Path, totals: dict[str, dict[str, int]], version: str
) -> None:
    """The report as a workbook for officials: a Vietnamese/English summary sheet first,
    then the findings. Excel holds at most 1,048,575 rows under a header."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    summary = wb.create_sheet("Tóm tắt - Summary")
    bold = Font(bold=True)

    def cells(*values: object, strong: bool = False) -> list[object]:
        if not strong:
            return list(values)
        from openpyxl.cell import WriteOnlyCell

        out_cells = []
        for v in values:
            c = WriteOnlyCell(summary, value=v)  # type: ignore[arg-type]
            c.font = bold
            out_cells.append(c)
        return out_cells

    summary.append(cells("Đối chiếu với Cơ sở dữ liệu quốc gia về dân cư", strong=True))
    summary.append(cells("Verification against the National Population Database", strong=True))
    summary.append(["Phiên bản CSDL - Register version", version])
    summary.append([])
    sources = sorted(totals)
    summary.append(
        cells(
            "Trạng thái",
            "Status",
            *[s or "(no source)" for s in sources],
            "Tổng - Total",
            strong=True,
        )
    )
    for status in STATUSES:
        vi, en = STATUS_LABELS[status]
        counts = [totals[s].get(status, 0) for s in sources]
        summary.append([vi, en, *counts, sum(counts)])
    counts = [sum(totals[s].values()) for s in sources]
    summary.append(cells("Tổng số bản ghi", "Records", *counts, sum(counts), strong=True))
    sheet = wb.create_sheet("Kết quả - Findings")
    with report_csv.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        sheet.append(header)
        for i, row in enumerate(reader, 1):
            if i >= 1_048_576:
                raise _fail(f"{out}: more rows than a worksheet holds; use --format csv", 1)
            row_out: list[object] = list(row)
            score = header.index("score")
            if row[score]:
                row_out[score] = float(row[score])
            sheet.append(row_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wb.save(out)
