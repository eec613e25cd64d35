"""`lienthong link` end to end: the installed command on generated records, and its errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lienthong.cli import app
from lienthong.synth import generate
from tests.factories import SYNTH_DAY

LIENTHONG = Path(sys.executable).with_name("lienthong")


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("link-cli")
    generate(1500, 11, out, today=SYNTH_DAY)
    return out


def _ids(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [r["record_id"] for r in csv.DictReader(fh)]


def _persons(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["record_id", "person_id", "match_probability"]
    assert all(0.0 < float(r["match_probability"]) <= 1.0 for r in rows)
    return {r["record_id"]: r["person_id"] for r in rows}


def test_the_command_links_with_the_shipped_model(population: Path, tmp_path: Path) -> None:
    """The installed console script, as a user runs it: no model given, no training."""
    out = tmp_path / "persons.csv"
    done = subprocess.run(
        [str(LIENTHONG), "link", str(population / "records.csv"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ids = _ids(population / "records.csv")
    persons = _persons(out)
    assert list(persons) == ids  # every record exactly once, in input order
    with (population / "truth.csv").open(encoding="utf-8", newline="") as fh:
        truth = {r["record_id"]: r["person_id"] for r in csv.DictReader(fh)}
    # Far fewer persons than records, and about as many as the truth has.
    found, true = len(set(persons.values())), len(set(truth.values()))
    assert abs(found - true) <= 0.01 * true
    summary = done.stdout
    assert f"{len(ids):,} records -> {found:,} persons" in summary
    assert "pairs compared" in summary
    assert "by identifier" in summary and "probabilistic" in summary
    assert "time:" in summary and str(out) in summary
    assert "normalising" in done.stderr and "scoring" in done.stderr  # the progress bars


def test_train_model_and_save_model(population: Path, tmp_path: Path) -> None:
    records = str(population / "records.csv")
    runner = CliRunner()
    trained, model = tmp_path / "trained.csv", tmp_path / "model.json"
    result = runner.invoke(
        app, ["link", records, "--out", str(trained), "--train", "--save-model", str(model)]
    )
    assert result.exit_code == 0, result.output
    assert f"model saved to {model}" in result.stdout
    assert model.read_text(encoding="utf-8").lstrip().startswith("{")
    again = tmp_path / "again.csv"
    result = runner.invoke(app, ["link", records, "--out", str(again), "--model", str(model)])
    assert result.exit_code == 0, result.output
    assert again.read_text(encoding="utf-8") == trained.read_text(encoding="utf-8")


def _write(path: Path, header: str, *rows: str) -> Path:
    # surrogateescape: "\udce9" writes the single byte 0xE9 (Latin-1 "é", not UTF-8)
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode("utf-8", "surrogateescape"))
    return path


HEADER = "record_id,source,full_name,birth_date,sex,cccd"


@pytest.mark.parametrize(
    ("content", "args", "code", "message"),
    [
        (None, [], 2, "absent.csv: no such file"),
        (
            ("record_id,name,birth_date", "R1,An,1990"),
            [],
            1,
            "missing required column(s): full_name",
        ),
        (
            (HEADER, "R1,h,Lê An,1990,M,", "R2,h,Lê Bình,1991,F,", "R1,h,Lê Chi,1992,F,"),
            [],
            1,
            "record_id 'R1' appears more than once",
        ),
        ((HEADER, ",h,Lê An,1990,M,"), [], 1, "record 1: record_id is empty"),
        ((HEADER, "R1,h,Lê An,1990,M,,extra"), [], 1, "Expected 6 columns, got 7"),
        ((HEADER, "R1,h,Nguy\udce9n,1990,M,"), [], 1, "column 'full_name'"),
        ((HEADER, "R1,h,Lê An,1990,M,"), ["--train", "--model", "m.json"], 2, "choose one"),
        ((HEADER, "R1,h,Lê An,1990,M,"), ["--backend", "oracle"], 2, "--backend"),
        ((HEADER, "R1,h,Lê An,1990,M,"), ["--model", "absent.json"], 1, "--model:"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(
    tmp_path: Path, content: tuple[str, ...] | None, args: list[str], code: int, message: str
) -> None:
    records = tmp_path / "absent.csv"
    if content is not None:
        records = _write(tmp_path / "records.csv", *content)
    out = tmp_path / "persons.csv"
    args = [str(tmp_path / a) if a.endswith(".json") else a for a in args]
    result = CliRunner().invoke(app, ["link", str(records), "--out", str(out), *args])
    assert result.exit_code == code, result.output
    problem = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(problem) == 1 and message in problem[0], result.stderr
    assert not out.exists()


def test_a_small_file_links_without_training(tmp_path: Path) -> None:
    """Few records cannot train a model; the shipped one links them."""
    records = _write(
        tmp_path / "records.csv",
        HEADER + ",phone,province_code,commune_code",
        "A1,hospital,Nguyễn Văn An,1985-03-02,M,,0903111222,79,27496",
        "A2,telehealth,NGUYEN VAN AN,02/03/1985,Nam,,+84 903 111 222,79,27496",
        "B1,hospital,Nguyễn Văn An,1985-11-20,M,,0988777666,79,25750",
    )
    out = tmp_path / "persons.csv"
    result = CliRunner().invoke(app, ["link", str(records), "--out", str(out)])
    assert result.exit_code == 0, result.output
    persons = _persons(out)
    assert persons["A1"] == persons["A2"] != persons["B1"]
    failed = CliRunner().invoke(app, ["link", str(records), "--out", str(out), "--train"])
    assert failed.exit_code == 1
    assert "--train: cannot train on 3 records" in failed.stderr
