"""The independently built population (`bench.altpop`): its files are what `lienthong link`
and `lienthong verify` read, its truth holds together, every noise kind shows in the
records, and both commands score sanely on it."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from bench.altpop import generate, telex, viqr, vni

from lienthong.identity.layouts import RECORDS_COLUMNS, REGISTER_COLUMNS

LIENTHONG = Path(sys.executable).with_name("lienthong")

NOISE_KINDS = (
    "telex", "vni", "viqr", "no_marks", "caps", "spelling_variant", "slip", "spaces",
    "given_first", "sex_wrong", "middle_dropped", "no_sex", "id_swap", "id_digit",
    "id_lost_zero", "cmnd", "no_id", "child_on_parent_id", "other_id_spouse",
    "other_id_parent", "other_id_child", "other_id_sibling", "other_id_namesake",
    "year_off_by_one", "day_month_swapped", "year_only", "unknown_day_month", "date_iso",
    "date_ymd8", "date_xml12", "date_dmy_short", "date_dmy_dash", "date_dmy_dot",
    "legacy_address", "previous_address", "address_text_only", "address_codes_only",
    "address_abbreviated", "no_address", "phone_84", "phone_plus84", "phone_dots",
    "phone_11_digit", "phone_no_zero", "same_source_twice",
)  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh))


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("altpop")
    generate(4000, 5, out)
    return out


def test_the_files_have_the_layouts_link_and_verify_read(population: Path) -> None:
    assert _header(population / "records.csv") == list(RECORDS_COLUMNS)
    assert _header(population / "register.csv") == list(REGISTER_COLUMNS)
    assert _header(population / "truth.csv") == ["record_id", "person_id"]
    register = _rows(population / "register.csv")
    for r in register:
        assert re.fullmatch(r"\d{12}", r["cccd"]), r
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["birth_date"]), r
        assert r["sex"] in ("M", "F"), r
        assert re.fullmatch(r"\d{2}", r["province_code"]), r
        assert re.fullmatch(r"\d{5}", r["commune_code"]), r
        # digits 4-6 of the number: century and sex, then the birth year
        year, century = int(r["birth_date"][:4]), int(r["cccd"][3])
        assert century == (year // 100 - 19) * 2 + (r["sex"] == "F"), r
        assert r["cccd"][4:6] == r["birth_date"][2:4], r
    # the register's current codes are the 34 provinces in force since 1 July 2025
    assert len({r["province_code"] for r in register}) > 20
    current = "01 04 08 11 12 14 15 19 20 22 24 25 31 33 37 38 40 42 44 46 48 51 52 56 66 68 "
    current += "75 79 80 82 86 91 92 96"
    assert {r["province_code"] for r in register} <= set(current.split())


def test_truth_holds_together(population: Path) -> None:
    records = _rows(population / "records.csv")
    truth = _rows(population / "truth.csv")
    register = _rows(population / "register.csv")
    ids = [r["record_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert [t["record_id"] for t in truth] == ids
    numbers = Counter(r["cccd"] for r in register)
    assert max(numbers.values()) == 1  # each person with a number once
    people = {t["person_id"] for t in truth}
    for person in people:
        assert person in numbers or person.startswith("NOID"), person
    assert any(p.startswith("NOID") for p in people)
    per_person = len(records) / 4000
    assert 1.5 <= per_person <= 2.5, per_person
    assert {r["source"] for r in records} == {
        "hospital", "commune_station", "immunization", "telehealth", "insurance",
    }  # fmt: skip


def test_the_population_has_households_twins_namesakes_and_all_ages(population: Path) -> None:
    register = _rows(population / "register.csv")
    years = [int(r["birth_date"][:4]) for r in register]
    assert min(years) < 1940 and max(years) >= 2024 and min(years) >= 1930
    homes = Counter(r["address"] for r in register)
    assert sum(n for n in homes.values() if n >= 3) > 0.4 * len(register)
    names = Counter(r["full_name"] for r in register)
    assert sum(n for n in names.values() if n >= 2) > 0.05 * len(register)
    assert names.most_common(1)[0][0].startswith("Nguyễn")
    surnames = Counter(r["full_name"].split()[0] for r in register)
    assert 0.25 < surnames["Nguyễn"] / len(register) < 0.40
    # twins: same home and birth date, same family name, different names
    twins = Counter((r["address"], r["birth_date"], r["full_name"].split()[0]) for r in register)
    pairs = [k for k, n in twins.items() if n == 2]
    assert pairs
    by_key: dict[tuple[str, str, str], list[str]] = {}
    for r in register:
        by_key.setdefault((r["address"], r["birth_date"], r["full_name"].split()[0]), []).append(
            r["full_name"]
        )
    assert all(len(set(by_key[k])) == 2 for k in pairs)
    # the number says where the birth was registered: not always where one lives now
    moved = sum(r["cccd"][1:3] != r["province_code"] for r in register)
    assert moved > 0.1 * len(register)


def test_every_noise_kind_appears_and_shows(population: Path) -> None:
    records = {r["record_id"]: r for r in _rows(population / "records.csv")}
    truth = {t["record_id"]: t["person_id"] for t in _rows(population / "truth.csv")}
    register = {r["cccd"]: r for r in _rows(population / "register.csv")}
    kinds: dict[str, list[str]] = {}
    for row in _rows(population / "noise.csv"):
        for kind in filter(None, row["noise"].split(";")):
            kinds.setdefault(kind, []).append(row["record_id"])
    missing = [k for k in NOISE_KINDS if k not in kinds]
    assert not missing, missing

    def each(kind: str) -> list[tuple[dict[str, str], str]]:
        return [(records[i], truth[i]) for i in kinds[kind]]

    for r, _ in each("no_marks") + each("telex"):
        assert r["full_name"].isascii(), r
    vni_names = [r["full_name"] for r, _ in each("vni")]
    assert sum(bool(re.search(r"[1-9]", n)) for n in vni_names) > 0.8 * len(vni_names)
    viqr_names = [r["full_name"] for r, _ in each("viqr")]
    assert sum(bool(re.search(r"[\^(+'`?~.]", n)) for n in viqr_names) > 0.8 * len(viqr_names)
    assert all(r["full_name"].upper() == r["full_name"] for r, _ in each("caps"))
    assert all("  " in r["full_name"] for r, _ in each("spaces"))
    assert all(re.fullmatch(r"\d{9}", r["cccd"]) for r, _ in each("cmnd"))
    assert all(r["cccd"] == "" for r, _ in each("no_id"))
    for r, person in each("id_swap"):
        diff = [i for i in range(12) if r["cccd"].zfill(12)[i] != person[i]]
        assert len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and sorted(r["cccd"].zfill(12)) == sorted(person)
        ), r
    for r, person in each("id_digit"):
        assert sum(a != b for a, b in zip(r["cccd"].zfill(12), person, strict=True)) == 1, r
    for r, person in each("id_lost_zero"):
        assert r["cccd"] != person and len(r["cccd"]) < 12 and not r["cccd"].startswith("0"), r
    others = [k for k in kinds if k.startswith("other_id_")] + ["child_on_parent_id"]
    for kind in others:
        for r, person in each(kind):
            assert r["cccd"] in register and r["cccd"] != person, (kind, r)
    for r, person in each("other_id_namesake"):
        own = register.get(person)
        if own is not None:
            assert _plain_key(register[r["cccd"]]["full_name"]) == _plain_key(own["full_name"])
    for r, _ in each("child_on_parent_id"):
        # the parent's number is older than the child's record says the child is
        assert int(register[r["cccd"]]["birth_date"][:4]) < int(_year(r["birth_date"])), r
    assert all(re.fullmatch(r"\d{12}", r["birth_date"]) for r, _ in each("date_xml12"))
    assert all(re.fullmatch(r"\d{8}", r["birth_date"]) for r, _ in each("date_ymd8"))
    assert all(re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2}", r["birth_date"]) or
               re.fullmatch(r"\d{4}|\d{2}/\d{4}", r["birth_date"])
               for r, _ in each("date_dmy_short"))  # fmt: skip
    assert all(re.fullmatch(r"\d{4}", r["birth_date"]) or r["birth_date"].endswith("0000")
               or "00/" in r["birth_date"] for r, _ in each("year_only"))  # fmt: skip
    for r, person in each("year_off_by_one"):
        if person in register and (y := _year(r["birth_date"])):
            assert abs(int(y) - int(register[person]["birth_date"][:4])) == 1, r
    assert all(r["address"] == "" and r["commune_code"] for r, _ in each("address_codes_only"))
    assert all(r["address"] and not r["commune_code"] for r, _ in each("address_text_only"))
    # legacy addresses name the district (four parts), current ones do not (three)
    legacy = set(kinds["legacy_address"])
    for i, r in records.items():
        if r["address"]:
            assert len(r["address"].split(", ")) == (4 if i in legacy else 3), r
    assert all(r["phone"].startswith("01") and len(r["phone"]) == 11
               for r, _ in each("phone_11_digit"))  # fmt: skip
    # the same person twice in one source
    seen = Counter((truth[i], r["source"]) for i, r in records.items())
    assert all(seen[(person, r["source"])] >= 2 for r, person in each("same_source_twice"))


def _plain_key(name: str) -> str:
    from bench.altpop import no_marks

    return no_marks(name).lower()


def _year(raw: str) -> str:
    m = re.search(r"(?:^|/|-|\.)(\d{4})(?:$|/|-|\.)|^(\d{4})\d{4}", raw)
    if m:
        return m.group(1) or m.group(2)
    m = re.fullmatch(r"\d{1,2}/\d{1,2}/(\d{2})", raw)
    if m:
        yy = int(m.group(1))
        return str(2000 + yy if yy <= 25 else 1900 + yy)
    return ""


def test_keyboard_residues() -> None:
    assert telex("Nguyễn") == "Nguyeenx"
    assert telex("Thắng") == "Thawngs"
    assert telex("Thị") == "Thij"
    assert telex("Đức") == "Dduwcs"
    assert vni("Nguyễn") == "Nguye6n4"
    assert vni("Đức") == "D9u7c1"
    assert viqr("Nguyễn") == "Nguye^~n"
    assert viqr("Thắng") == "Tha('ng"
    assert viqr("Quý") == "Quy'"
    assert viqr("Đặng") == "Dda(.ng"


def test_a_seed_gives_the_same_files(tmp_path: Path) -> None:
    generate(300, 9, tmp_path / "a")
    generate(300, 9, tmp_path / "b")
    generate(300, 10, tmp_path / "c")
    for name in ("records.csv", "register.csv", "truth.csv", "noise.csv"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()
    assert not list((tmp_path / "a").glob(".*.part"))


def test_bad_people_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="people"):
        generate(-1, 0, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bench.altpop", "--people", "-5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode != 0 and "--people" in done.stderr


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("altpop-2000")
    done = subprocess.run(
        [sys.executable, "-m", "bench.altpop", "--people", "2000", "--seed", "3", "--out",
         str(out)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2,000 people" in done.stdout
    return out


def test_lienthong_link_scores_it(small: Path) -> None:
    from bench.bench_link import pairwise

    persons = small / "persons.csv"
    done = subprocess.run(
        [str(LIENTHONG), "link", str(small / "records.csv"), "--out", str(persons)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    con = duckdb.connect()
    precision, recall, f1 = pairwise(
        con, f"read_csv('{persons}', all_varchar = true)", small / "truth.csv"
    )
    assert f1 > 0.9, (precision, recall, f1)
    assert precision > 0.95, (precision, recall, f1)
    assert recall < 1.0  # the population is not trivially linkable


def test_lienthong_verify_scores_it(small: Path, tmp_path: Path) -> None:
    from bench.bench_verify import _accuracy

    report = tmp_path / "report.csv"
    done = subprocess.run(
        [str(LIENTHONG), "verify", str(small / "records.csv"), "--register",
         str(small / "register.csv"), "--out", str(report), "--no-cache"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    con = duckdb.connect()
    con.execute(f"CREATE TABLE report AS SELECT * FROM read_csv('{report}', all_varchar = true)")
    acc = _accuracy(con, small)
    assert acc["own"] > 1000 and acc["others"] > 100, acc
    assert acc["false_mismatch"] < 0.05 * acc["own"], acc
    assert acc["false_accept"] < 0.10 * acc["others"], acc
    assert acc["right"] > 0.5 * acc["wanted"], acc
