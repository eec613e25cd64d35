"""The synthetic population: reproducible, structurally valid identifiers, realistic noise."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lienthong.synth import generate, names
from lienthong.synth.cli_synth import synth_app
from lienthong.synth.population import (
    LEGACY_PROVINCES,
    RECORDS_HEADER,
    REGISTER_HEADER,
    TRUTH_HEADER,
    _package_data,
    old_tone_style,
    strip_diacritics,
)

PEOPLE = 20_000


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("synth")
    summary = generate(PEOPLE, 42, out)
    assert summary.people == PEOPLE
    data = {}
    for name, header in (
        ("register", REGISTER_HEADER),
        ("records", RECORDS_HEADER),
        ("truth", TRUTH_HEADER),
    ):
        fields, rows = _rows(out / f"{name}.csv")
        assert fields == list(header)
        data[name] = rows
    assert len(data["register"]) == summary.register_rows
    assert len(data["records"]) == summary.records == sum(summary.records_by_source.values())
    return data


@pytest.fixture(scope="module")
def current_units() -> tuple[set[str], set[str], set[str], set[str]]:
    with sqlite3.connect(_package_data() / "dataset.db") as conn:
        provinces = {r[0] for r in conn.execute("SELECT provinceCode FROM admin_units")}
        communes = {r[0] for r in conn.execute("SELECT wardCode FROM admin_units")}
        old_p = {r[0] for r in conn.execute("SELECT provinceCode FROM admin_units_legacy")}
        old_c = {r[0] for r in conn.execute("SELECT wardCode FROM admin_units_legacy")}
    assert len(provinces) == 34 and len(communes) == 3321
    return provinces, communes, old_p, old_c


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate(1500, seed, tmp_path / name, records_per_person=1.5)
    for f in ("register.csv", "records.csv", "truth.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "records.csv").read_bytes() != (
        tmp_path / "c" / "records.csv"
    ).read_bytes()


def test_exact_people_count_and_zero(tmp_path: Path) -> None:
    assert generate(123, 1, tmp_path / "x").people == 123
    s = generate(0, 1, tmp_path / "y")
    assert s.people == s.records == 0
    assert (tmp_path / "y" / "register.csv").read_text(encoding="utf-8").startswith("cccd,")


def test_register_cccd_structure(population: dict[str, list[dict[str, str]]]) -> None:
    register = population["register"]
    cccds = [r["cccd"] for r in register]
    assert len(set(cccds)) == len(cccds)
    for r in register:
        cccd, year = r["cccd"], int(r["birth_date"][:4])
        assert re.fullmatch(r"\d{12}", cccd), cccd
        assert cccd[:3] in LEGACY_PROVINCES
        century = year // 100 - 19
        assert int(cccd[3]) == century * 2 + (r["sex"] == "F")
        assert cccd[4:6] == f"{year % 100:02d}"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["birth_date"])
        assert r["sex"] in ("M", "F")


def test_truth_covers_every_record_once(population: dict[str, list[dict[str, str]]]) -> None:
    record_ids = [r["record_id"] for r in population["records"]]
    truth = [r["record_id"] for r in population["truth"]]
    assert len(set(record_ids)) == len(record_ids)
    assert Counter(truth) == Counter(record_ids)
    registered = {r["cccd"] for r in population["register"]}
    persons = {r["person_id"] for r in population["truth"]}
    assert all(p in registered or p.startswith("NOID") for p in persons)
    assert any(p.startswith("NOID") for p in persons)


def test_surname_shares(population: dict[str, list[dict[str, str]]]) -> None:
    surnames = Counter(r["full_name"].split(" ")[0] for r in population["register"])
    n = len(population["register"])
    assert abs(surnames["Nguyễn"] / n - 0.38) < 0.02
    assert abs(surnames["Trần"] / n - 0.11) < 0.015
    assert surnames.most_common(1)[0][0] == "Nguyễn"


def test_households_share_surname_and_twins_differ(
    population: dict[str, list[dict[str, str]]],
) -> None:
    by_home: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in population["register"]:
        by_home[(r["address"], r["commune_code"])].append(r)
    twins = 0
    for members in by_home.values():
        births = Counter(m["birth_date"] for m in members)
        for birth, count in births.items():
            if count >= 2:
                same = [m for m in members if m["birth_date"] == birth]
                givens = {m["full_name"] for m in same}
                assert len(givens) == len(same)  # twins never share the full name
                if len({m["full_name"].split(" ")[0] for m in same}) == 1:
                    twins += 1
    assert twins >= 20
    assert max(len(m) for m in by_home.values()) >= 4


def test_common_names_collide_within_a_province(
    population: dict[str, list[dict[str, str]]],
) -> None:
    seen = Counter((r["full_name"], r["province_code"]) for r in population["register"])
    assert sum(1 for c in seen.values() if c > 1) > 100


def test_noise_forms_appear(population: dict[str, list[dict[str, str]]]) -> None:
    records = population["records"]
    n = len(records)
    assert 0.3 < sum(1 for r in records if not r["cccd"]) / n < 0.8
    ascii_names = [r for r in records if r["full_name"].isascii()]
    assert len(ascii_names) > 0.05 * n
    assert any(r["full_name"].isupper() for r in records)
    formats = Counter(
        "iso"
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["birth_date"])
        else "dmy"
        if re.fullmatch(r"\d{2}/\d{2}/\d{4}", r["birth_date"])
        else "his"
        if re.fullmatch(r"\d{12}", r["birth_date"])
        else "ymd"
        if re.fullmatch(r"\d{8}", r["birth_date"])
        else "year"
        if re.fullmatch(r"\d{4}", r["birth_date"])
        else "other"
        for r in records
    )
    assert set(formats) == {"iso", "dmy", "his", "ymd", "year"}
    assert any(r["birth_date"].endswith("00000000") for r in records)
    assert {r["sex"] for r in records} >= {"Nam", "Nữ", "1", "2", "M", "F", ""}
    phones = [r["phone"] for r in records if r["phone"]]
    assert any(p.startswith("0") for p in phones)
    assert any(p.startswith("84") for p in phones)
    assert any(p.startswith("+84 ") for p in phones)
    assert any("Huyện" in r["address"] or "Quận" in r["address"] for r in records)
    assert any(re.fullmatch(r"[A-Z]{2}[1-5]\d{12}", r["bhyt"]) for r in records)
    assert any(re.fullmatch(r"\d{10}", r["bhxh"]) for r in records)


def test_records_disagree_with_truth_in_the_expected_ways(
    population: dict[str, list[dict[str, str]]],
) -> None:
    register = {r["cccd"]: r for r in population["register"]}
    person_of = {t["record_id"]: t["person_id"] for t in population["truth"]}
    wrong_cccd = mother_cccd = 0
    for r in population["records"]:
        person = person_of[r["record_id"]]
        if r["cccd"] and r["cccd"] != person:
            wrong_cccd += 1
            other = register.get(r["cccd"])
            if other is not None and other["sex"] == "F" and person in register:
                mother_cccd += 1
    assert wrong_cccd > 0 and mother_cccd > 0
    assert any(len(r["cccd"]) == 9 for r in population["records"])  # old CMND


def test_namesakes_in_same_province_and_year(
    population: dict[str, list[dict[str, str]]],
) -> None:
    """Unrelated people with the same name, province and birth year: the false-match trap."""
    seen = Counter(
        (r["full_name"], r["province_code"], r["birth_date"][:4]) for r in population["register"]
    )
    assert sum(1 for c in seen.values() if c > 1) >= 20


def test_codes_are_valid(
    population: dict[str, list[dict[str, str]]],
    current_units: tuple[set[str], set[str], set[str], set[str]],
) -> None:
    provinces, communes, old_p, old_c = current_units
    for r in population["register"]:
        assert r["province_code"] in provinces
        assert r["commune_code"] in communes
    seen_legacy = False
    for r in population["records"]:
        if not r["province_code"]:
            continue
        current = r["province_code"] in provinces and r["commune_code"] in communes
        # island districts (Côn Đảo, Lý Sơn, ...) had no communes before July 2025
        legacy = r["province_code"] in old_p and r["commune_code"] in old_c | {""}
        assert current or legacy
        seen_legacy |= not current
    assert seen_legacy
    assert len({r["province_code"] for r in population["register"]}) == 34


def test_name_tables_are_nfc_and_text_helpers() -> None:
    assert names.SURNAMES["Nguyễn"] == 38.0
    assert abs(sum(names.SURNAMES.values()) - 100.0) < 1e-6
    assert len(names.GIVEN_MALE) + len(names.GIVEN_FEMALE) > 300
    assert strip_diacritics("Đặng Thị Thuỷ") == "Dang Thi Thuy"
    assert old_tone_style("Hoà") == "Hòa"
    assert old_tone_style("Thuỷ") == "Thủy"
    assert old_tone_style("Quý") == "Quý"
    assert old_tone_style("Hoàng") == "Hoàng"


def test_cli_population(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        synth_app, ["population", "--people", "300", "--seed", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "300 people" in result.output
    assert (tmp_path / "truth.csv").exists()


def test_register_identifiers_pass_the_identity_checks(tmp_path: Path) -> None:
    """The generator and the validators agree on what a real CCCD looks like."""

    from lienthong.identity.identifiers import check_bhyt, check_cccd
    from lienthong.synth import generate

    generate(800, 11, tmp_path)
    with (tmp_path / "register.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        assert check_cccd(row["cccd"], row["sex"], int(row["birth_date"][:4])) == [], row
    with (tmp_path / "records.csv").open(encoding="utf-8") as fh:
        cards = [r["bhyt"] for r in csv.DictReader(fh) if r["bhyt"]]
    valid = sum(1 for c in cards if not check_bhyt(c))
    assert cards and valid / len(cards) > 0.9  # the rest carry deliberate typos


def test_a_synthetic_province(tmp_path: Path) -> None:
    """With a province, every household lives there (the register's current codes),
    while some people's CCCD still says their birth was registered elsewhere."""
    from lienthong.synth.population import communes_of, provinces

    generate(600, 5, tmp_path, province="48")
    with (tmp_path / "register.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 300
    assert {r["province_code"] for r in rows} == {"48"}
    assert {r["commune_code"] for r in rows} <= {c.code for c in communes_of("48")}
    assert len({r["commune_code"] for r in rows}) > 10  # spread over the province
    born = Counter(r["cccd"][:3] for r in rows)
    legacy = {"0" + c.legacy_province_code for c in communes_of("48")}
    assert sum(n for p, n in born.items() if p in legacy) > 0.7 * len(rows)
    assert provinces()["48"] == "Thành phố Đà Nẵng"
    with pytest.raises(ValueError, match="no province with code '99'"):
        generate(10, 5, tmp_path / "x", province="99")
    result = CliRunner().invoke(
        synth_app, ["population", "-n", "10", "--province", "99", "--out", str(tmp_path / "y")]
    )
    assert result.exit_code == 2 and not (tmp_path / "y").exists()
