"""The synthetic population: reproducible, structurally valid identifiers, realistic noise."""

from __future__ import annotations

import csv
import math
import re
import sqlite3
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lienthong.identity.normalize import (
    fold_key,
    is_form_difference,
    name_key,
    normalize_name,
    normalize_sex,
    parse_date,
)
from lienthong.synth import generate, names
from lienthong.synth import population as pop
from lienthong.synth.cli_synth import synth_app
from lienthong.synth.population import (
    LEGACY_PROVINCES,
    RECORDS_HEADER,
    REGISTER_HEADER,
    TRUTH_HEADER,
    _package_data,
    keystrokes,
    old_tone_style,
    strip_diacritics,
    swap_i_y,
)

PEOPLE = 20_000
SYNTH_DAY = date(2025, 12, 31)
"""The day the inspected populations are made for: the same data whatever day tests run."""


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("synth")
    summary = generate(PEOPLE, 42, out, today=SYNTH_DAY)
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


# ------------------------------------------------------------- data-entry noise and truth

NOISY_PEOPLE = 20_000


def _noisy(out: Path, noise: str) -> dict[str, Any]:
    summary = generate(NOISY_PEOPLE, 7, out, noise=noise, today=SYNTH_DAY)
    data: dict[str, Any] = {"summary": summary}
    for name in ("register", "records", "truth", "noise"):
        fields, rows = _rows(out / f"{name}.csv")
        data[name] = rows
    data["kinds"] = {
        r["record_id"]: set(filter(None, r["noise"].split(";"))) for r in data["noise"]
    }
    return data


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _noisy(tmp_path_factory.mktemp("real"), "real")


@pytest.fixture(scope="module")
def modest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _noisy(tmp_path_factory.mktemp("modest"), "default")


RATES = {
    "telex": pop.TELEX_RATE,
    "vni": pop.VNI_RATE,
    "viqr": pop.VIQR_RATE,
    "i_y": pop.I_Y_SWAP_RATE,
    "key_slip": pop.KEY_SLIP_RATE,
    "doubled_letter": pop.DOUBLED_LETTER_RATE,
    "double_space": pop.DOUBLE_SPACE_RATE,
    "given_first_sex_wrong": pop.WESTERN_WRONG_SEX_RATE,
    "cccd_transposed": pop.CCCD_TRANSPOSE_RATE,
    "year_off_by_one": pop.YEAR_OFF_RATE,
    "cccd_of_namesake": pop.NAMESAKE_CCCD_RATE,
    "cccd_of_relative": pop.RELATIVE_CCCD_RATE,
    "duplicate": pop.DUPLICATE_RATE,
}


def _within(hits: int, n: int, rate: float) -> bool:
    """Binomial bounds: within 4.5 standard deviations (and one) of n * rate."""
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(hits - n * rate) <= 4.5 * sd + 1


@pytest.mark.parametrize("profile", ["real", "modest"])
@pytest.mark.parametrize("kind", sorted(RATES))
def test_each_noise_kind_appears_at_its_rate(
    kind: str, profile: str, request: pytest.FixtureRequest
) -> None:
    data = request.getfixturevalue(profile)
    scale = pop.NOISE_PROFILES["real" if profile == "real" else "default"]
    chances = data["summary"].chances[kind]
    hits = sum(1 for kinds in data["kinds"].values() if kind in kinds)
    assert chances > 500, (kind, chances)
    assert _within(hits, chances, RATES[kind] * scale), (kind, hits, chances)
    assert hits > 0


def test_every_record_has_a_noise_row_and_a_truth_owner_column(real: dict[str, Any]) -> None:
    assert list(real["truth"][0]) == list(pop.TRUTH_HEADER)
    assert [r["record_id"] for r in real["noise"]] == [r["record_id"] for r in real["records"]]
    assert [r["record_id"] for r in real["truth"]] == [r["record_id"] for r in real["records"]]


def test_year_only_where_the_source_allows_it(real: dict[str, Any]) -> None:
    """New year-only dates: hospital (QĐ 130 "yyyy00000000") and commune station ("yyyy")
    records of people the older rules never give one (born 1960 or later; under 50)."""
    born = {r["cccd"]: date.fromisoformat(r["birth_date"]) for r in real["register"]}
    person = {t["record_id"]: t["person_id"] for t in real["truth"]}
    n = hits = 0
    for r in real["records"]:
        b = born.get(person[r["record_id"]])
        if b is None or r["source"] not in ("hospital", "commune_station") or b.year < 1976:
            continue
        n += 1
        year_only = re.fullmatch(r"\d{4}(00000000)?", r["birth_date"]) is not None
        hits += year_only
        assert year_only == ("year_only" in real["kinds"][r["record_id"]])
    assert _within(hits, n, pop.YEAR_ONLY_RATE), (hits, n)
    others = {r["birth_date"] for r in real["records"] if r["source"] in ("immunization",)}
    assert not any(re.fullmatch(r"\d{4}", d) for d in others)


def test_truth_stays_right_under_the_noise(real: dict[str, Any]) -> None:
    """Each noise kind changes the record the way its name says, and the truth follows:
    the person, and whose CCCD the record carries."""
    register = {r["cccd"]: r for r in real["register"]}
    truth = {t["record_id"]: t for t in real["truth"]}
    seen: Counter[str] = Counter()
    name_noise = {"letter_lost", "key_slip", "doubled_letter", "middle_dropped"}
    for r in real["records"]:
        kinds = real["kinds"][r["record_id"]]
        t = truth[r["record_id"]]
        me = register.get(t["person_id"])
        owner = t["cccd_owner"]
        # whose CCCD
        if owner:
            assert r["cccd"] == owner and owner in register
        elif r["cccd"]:
            assert r["cccd"] not in register or len(r["cccd"]) != 12
        if owner and owner != t["person_id"]:
            seen["someone_else"] += 1
            other = register[owner]
            assert kinds & {"cccd_of_mother", "cccd_of_relative", "cccd_of_namesake",
                            "cccd_digit", "cccd_transposed"}, kinds  # fmt: skip
            if "cccd_of_namesake" in kinds:
                assert me is not None and other["full_name"] == me["full_name"]
                seen["namesake"] += 1
            if "cccd_of_relative" in kinds:
                assert me is not None and other["address"] == me["address"]
                seen["relative"] += 1
        if kinds & {"cccd_of_namesake", "cccd_of_relative"} and not kinds & {
            "cccd_digit",
            "cccd_transposed",
        }:
            assert owner and owner != t["person_id"]
        if (
            "cccd_transposed" in kinds
            and me is not None
            and not kinds & {"cccd_of_namesake", "cccd_of_relative", "cccd_digit", "cccd_of_mother"}
        ):
            a, b = r["cccd"], me["cccd"]
            diff = [i for i in range(12) if a[i] != b[i]]
            assert len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
            seen["transposed"] += 1
        if me is None:
            continue
        # names
        if kinds & {"telex", "vni", "viqr"}:
            assert r["full_name"].isascii()
            if not kinds & name_noise:
                assert is_form_difference(r["full_name"], me["full_name"]), r["full_name"]
                assert normalize_name(r["full_name"]).lower() in {
                    normalize_name(me["full_name"]).lower(),
                    normalize_name(swap_i_y(me["full_name"])).lower(),
                } or "given_first" in " ".join(kinds), (r["full_name"], me["full_name"])
                seen["decoded"] += 1
        if "i_y" in kinds and not kinds & (name_noise | {"telex", "vni", "viqr"}):
            assert name_key(r["full_name"]) != fold_key(me["full_name"]) or (
                fold_key(r["full_name"]) != fold_key(me["full_name"])
            )
            assert is_form_difference(r["full_name"], me["full_name"])
            seen["i_y"] += 1
        if "double_space" in kinds:
            assert "  " in r["full_name"]
        if "given_first_sex_wrong" in kinds:
            if r["sex"]:
                assert normalize_sex(r["sex"]) != me["sex"]
                seen["sex_wrong"] += 1
            if not kinds & name_noise:
                assert is_form_difference(r["full_name"], me["full_name"])
                assert not r["full_name"].upper().startswith(me["full_name"].split()[0].upper())
        elif r["sex"] and "given_first_sex_wrong" not in kinds:
            assert normalize_sex(r["sex"]) == me["sex"]
        # dates
        year = parse_date(r["birth_date"]).year
        true_year = int(me["birth_date"][:4])
        if "year_off_by_one" in kinds:
            assert abs(year - true_year) == 1
            seen["year_off"] += 1
        else:
            assert year == true_year
    for what in ("someone_else", "namesake", "relative", "transposed", "decoded", "i_y",
                 "sex_wrong", "year_off"):  # fmt: skip
        assert seen[what] >= 10, (what, seen)


def test_duplicates_are_the_same_record_under_a_new_id(real: dict[str, Any]) -> None:
    person = {t["record_id"]: t["person_id"] for t in real["truth"]}

    def content(r: dict[str, str]) -> tuple[str, ...]:
        return tuple(v for k, v in r.items() if k != "record_id")

    by_content: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for r in real["records"]:
        by_content[content(r)].append(r["record_id"])
    dups = [r for r in real["records"] if "duplicate" in real["kinds"][r["record_id"]]]
    assert len(dups) > 50
    for r in dups:
        same = by_content[content(r)]
        assert len(same) >= 2, r  # the original is there under another id
        assert len({person[i] for i in same}) == 1
        assert any("duplicate" not in real["kinds"][i] for i in same)


def test_keystroke_and_spelling_helpers() -> None:
    assert keystrokes("Nguyễn Thị Thắng", "telex") == "Nguyeenx Thij Thawngs"
    assert keystrokes("Đường", "telex") == "DDuwowngf"
    assert keystrokes("Nguyễn Trần", "vni") == "Nguye6n4 Tra6n2"
    assert keystrokes("Nguyễn Trần Thị", "viqr") == "Nguye^~n Tra^`n Thi."
    assert keystrokes("Anh", "telex") == "Anh"
    for name in ("Nguyễn Thị Thắng", "Đỗ Hương Giang", "Phạm Quốc Việt"):
        for scheme in pop.KEYSTROKE_SCHEMES:
            assert normalize_name(keystrokes(name, scheme)) == name
    assert swap_i_y("Nguyễn Thị Mỹ") == "Nguyễn Thị Mĩ"
    assert swap_i_y("Lí Quí Vy") == "Lý Quý Vi"
    assert swap_i_y("LÝ THỊ KỲ") == "LÍ THỊ KÌ"
    assert swap_i_y("Thi Chi Kim Mai Huy") == "Thi Chi Kim Mai Huy"


def test_noise_profile_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="noise: no profile 'loud'"):
        generate(10, 1, tmp_path / "x", noise="loud")
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(
        synth_app, ["population", "-n", "10", "--noise", "loud", "--out", str(tmp_path / "y")]
    )
    assert result.exit_code == 2 and "--noise" in result.output
    assert not (tmp_path / "y").exists()
    result = CliRunner().invoke(
        synth_app, ["population", "-n", "200", "--noise", "real", "--out", str(tmp_path / "z")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "z" / "noise.csv").exists()
