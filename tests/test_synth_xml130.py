"""Synthetic hospital exports: realistic, consistent, reproducible, linked to the register."""

from __future__ import annotations

import base64
import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lienthong.cli import app
from lienthong.identity.identifiers import check_bhyt, check_cccd
from lienthong.ingest.xml130 import STANDARD_130, STANDARD_4210, Visit, parse
from lienthong.ingest.xml130.validate import validate_visit
from lienthong.synth.xml130 import (
    DEFECT_KINDS,
    QUIRK_KINDS,
    TABLE_LAYOUT,
    VENDOR_STYLES,
    Xml130Summary,
    generate_xml130,
    table_xml,
)
from lienthong.terminology.catalogue import WhoIcd10


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Visit]]:
    out = tmp_path_factory.mktemp("synth130")
    summary = generate_xml130(400, out, seed=21, visits_per_file=100)
    assert summary.visits == 400 and summary.defects == 0
    visits = [v for f in sorted(out.glob("*/*.xml")) for v in parse(f)]
    return out, visits


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_shape_of_the_exports(made: tuple[Path, list[Visit]]) -> None:
    out, visits = made
    assert len(visits) == 400
    assert len({v.ma_lk for v in visits}) == 400
    by_standard = Counter(v.standard for v in visits)
    assert by_standard[STANDARD_130] > 250 and by_standard[STANDARD_4210] > 20
    assert len({v.ma_cskcb for v in visits}) >= 5
    kinds = Counter(v.summary["MA_LOAI_KCB"] for v in visits if v.standard == STANDARD_130)
    assert kinds["01"] > 100 and kinds["03"] > 40  # consultations and inpatient stays
    # one folder per facility, files named by facility and standard, at most 100 visits each
    for path in out.glob("*/*.xml"):
        assert path.name.startswith(path.parent.name + "_")
        assert ("_130_" in path.name) or ("_4210_" in path.name)
    assert max(Counter(v.file for v in visits).values()) <= 100


def test_clinical_content_is_real(made: tuple[Path, list[Visit]]) -> None:
    _, visits = made
    icd = WhoIcd10()
    codes = Counter()
    for v in visits:
        s = v.summary
        main = s.get("MA_BENH_CHINH") or s.get("MA_BENH", "")
        codes[main] += 1
        assert icd.exists(main)
        others = s.get("MA_BENH_KT") or s.get("MA_BENHKHAC", "")
        assert all(icd.exists(c) for c in others.split(";") if c)
        assert v.rows("XML2"), "every visit has drugs"
    assert len(codes) >= 12
    labs = [r for v in visits for r in v.rows("XML4")]
    assert len(labs) > 100
    assert all(r["MA_CHI_SO"] and r["GIA_TRI"] for r in labs)
    units = {
        r["MA_CHI_SO"]: r.get("DON_VI_DO")
        for v in visits
        if v.standard == STANDARD_130
        for r in v.rows("XML4")
    }
    assert units["2345-7"] == "mmol/L" and units["718-7"] == "g/L"
    notes = [r for v in visits for r in v.rows("XML5")]
    assert notes and all(("DIEN_BIEN_LS" in r) or ("DIEN_BIEN" in r) for r in notes)


def test_patients_come_from_the_register(made: tuple[Path, list[Visit]]) -> None:
    out, visits = made
    with (out / "population" / "register.csv").open(encoding="utf-8") as fh:
        register = {r["cccd"]: r for r in csv.DictReader(fh)}
    for v in visits:
        s = v.summary
        if v.standard != STANDARD_130:
            continue
        person = register[s["SO_CCCD"]]
        assert s["HO_TEN"] == person["full_name"]
        assert s["NGAY_SINH"][:8] == person["birth_date"].replace("-", "")
        assert (
            check_cccd(s["SO_CCCD"], sex=s["GIOI_TINH"], birth_year=int(s["NGAY_SINH"][:4])) == []
        )
        if s["MA_THE_BHYT"]:
            assert check_bhyt(s["MA_THE_BHYT"]) == []


def test_money_adds_up_and_everything_conforms(made: tuple[Path, list[Visit]]) -> None:
    _, visits = made
    for v in visits:
        if v.standard == STANDARD_130:
            lines = v.rows("XML2") + v.rows("XML3")
            total = sum(float(r["THANH_TIEN_BV"]) for r in lines)
            assert abs(float(v.summary["T_TONGCHI_BV"]) - total) < 0.01
        assert validate_visit(v) == [], v.ma_lk


def test_same_seed_same_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_xml130(60, a, seed=3, defects=0.2)
    generate_xml130(60, b, seed=3, defects=0.2)
    generate_xml130(60, c, seed=4, defects=0.2)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_defects_are_named_and_listed(tmp_path: Path) -> None:
    summary = generate_xml130(300, tmp_path, seed=8, defects=0.3)
    with (tmp_path / "defects.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary.defects
    assert 50 < summary.defects < 130
    assert {r["defect"] for r in rows} == set(DEFECT_KINDS)
    assert all(DEFECT_KINDS[r["defect"]] == r["rule"] for r in rows)
    files = {p.name for p in tmp_path.glob("*/*.xml")}
    assert {r["file"] for r in rows} <= files


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate"):
        generate_xml130(1, tmp_path, defects=1.5)
    with pytest.raises(ValueError, match="visits"):
        generate_xml130(-1, tmp_path)


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "synth",
            "xml130",
            "--visits",
            "30",
            "--out",
            str(tmp_path / "x"),
            "--seed",
            "2",
            "--defects",
            "0.1",
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "30 visits" in text and "defects.csv" in text
    assert list((tmp_path / "x").glob("*/*.xml"))
    # patients from an existing population folder
    again = runner.invoke(
        app,
        [
            "synth",
            "xml130",
            "--visits",
            "10",
            "--out",
            str(tmp_path / "y"),
            "--population",
            str(tmp_path / "x" / "population"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert not (tmp_path / "y" / "population").exists()
    missing = runner.invoke(
        app,
        [
            "synth",
            "xml130",
            "--visits",
            "10",
            "--out",
            str(tmp_path / "z"),
            "--population",
            str(tmp_path / "nowhere"),
        ],
    )
    assert missing.exit_code == 2
    assert "register.csv" in missing.output


def test_mistyped_cards_of_the_sources_stay_out(tmp_path: Path) -> None:
    """The population's source records carry keying errors; a card that is not well
    formed must not reach an export (the hospital checks it on admission)."""
    pop = tmp_path / "pop"
    pop.mkdir()
    (pop / "register.csv").write_text(
        "cccd,full_name,birth_date,sex,province_code,commune_code,address\n"
        '082063800798,Nguyễn Văn An,1963-09-07,M,82,28366,"Ấp 7, Xã Hậu Mỹ, Tỉnh Đồng Tháp"\n'
        '079190000001,Lê Thị Hạnh,1990-08-19,F,79,26734,"Phường Sài Gòn, TP. Hồ Chí Minh"\n',
        encoding="utf-8",
    )
    (pop / "records.csv").write_text(
        "record_id,source,full_name,birth_date,sex,cccd,bhxh,bhyt,phone,address,"
        "province_code,commune_code\n"
        "BV1,hospital,Nguyễn Văn An,196309070000,1,,,DN9820123456789,,,82,28366\n"
        "BV2,hospital,Lê Thị Hạnh,199008190000,2,,,HT3790123456789,,,79,26734\n",
        encoding="utf-8",
    )
    (pop / "truth.csv").write_text(
        "record_id,person_id\nBV1,082063800798\nBV2,079190000001\n", encoding="utf-8"
    )
    generate_xml130(40, tmp_path / "out", seed=1, population=pop)
    cards = {
        v.summary.get("SO_CCCD", ""): v.summary.get("MA_THE_BHYT")
        for f in (tmp_path / "out").glob("*/*_130_*.xml")
        for v in parse(f)
    }
    assert cards["082063800798"] == ""  # benefit level 9: not a card
    assert cards["079190000001"] == "HT3790123456789"


def test_exports_of_one_province(tmp_path: Path) -> None:
    """With a province, the visits are to its facilities (codes under the legacy
    provinces merged into it, valid facility codes) by people who live there."""
    from lienthong.identity.identifiers import check_facility_code
    from lienthong.synth.population import communes_of
    from lienthong.synth.xml130 import province_facilities

    facilities = province_facilities("79")
    legacy = {c.legacy_province_code for c in communes_of("79")}
    assert len(facilities) >= 3 and len({code for code, _ in facilities}) == len(facilities)
    assert {code[:2] for code, _ in facilities} == legacy  # HCMC took in two provinces
    assert all(check_facility_code(code) == [] for code, _ in facilities)
    summary = generate_xml130(60, tmp_path, seed=3, province="79")
    assert set(summary.visits_by_facility) <= {code for code, _ in facilities}
    communes = {c.code for c in communes_of("79")}
    for f in sorted(tmp_path.rglob("*.xml")):
        for v in parse(f):
            assert v.ma_cskcb in summary.visits_by_facility
            if v.standard == STANDARD_130:
                assert v.summary["MATINH_CU_TRU"] == "79"
                assert v.summary["MAXA_CU_TRU"] in communes
            assert validate_visit(v, WhoIcd10()) == []


# ------------------------------------------------------------------ vendor quirks


@pytest.fixture(scope="module")
def quirky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Xml130Summary]:
    base = tmp_path_factory.mktemp("quirks")
    plain, styled = base / "plain", base / "styled"
    generate_xml130(300, plain, seed=12, visits_per_file=40)
    summary = generate_xml130(
        300, styled, seed=12, visits_per_file=40, quirks=0.6, population=plain / "population"
    )
    return plain, styled, summary


def _quirks(folder: Path) -> list[dict[str, str]]:
    with (folder / "quirks.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _file_at(folder: Path, name: str) -> Path:
    return folder / name.split("_", 1)[0] / name


def test_vendor_styled_files_look_like_real_exports(
    quirky: tuple[Path, Path, Xml130Summary],
) -> None:
    _, styled, summary = quirky
    rows = _quirks(styled)
    assert summary.quirks == len(rows)
    assert all(QUIRK_KINDS[r["quirk"]] == r["kind"] for r in rows)
    assert {r["quirk"] for r in rows} == set(QUIRK_KINDS)
    files = sorted(styled.glob("*/*.xml"))
    marked = {r["file"] for r in rows if not r["ma_lk"]}
    assert summary.quirky_files == len(marked) and 0 < len(marked) < len(files)
    for path in files:
        data = path.read_bytes()
        quirks = {r["quirk"] for r in rows if r["file"] == path.name and not r["ma_lk"]}
        assert data.startswith(b"\xef\xbb\xbf") == ("bom" in quirks), path.name
        assert (b"\r\n" in data) == ("crlf" in quirks), path.name
        assert (b"XMLSchema instance" in data) == ("xsi_namespace_space" in quirks), path.name
        content = re.findall(rb"<NOIDUNGFILE>([^<]*)</NOIDUNGFILE>", data)
        assert any(b"\n" in c for c in content) == ("wrapped_base64" in quirks), path.name
        types = set(re.findall(rb"<LOAIHOSO>([^<]*)</LOAIHOSO>", data))
        assert (types <= {b"XML1", b"XML2", b"XML3", b"XML4", b"XML5"}) == (
            "loaihoso_spelling" not in quirks
        ), path.name
        if "xsi_namespace_space" in quirks:
            inner = base64.b64decode(b"".join(content[0].split()))
            assert b'xmlns:xsi="http://www.w3.org/2001/XMLSchema instance"' in inner


def test_vendor_quirks_keep_the_visits_of_the_seed(
    quirky: tuple[Path, Path, Xml130Summary],
) -> None:
    """Quirks draw from their own stream: the same visits, written differently, and only
    the fields a content quirk names differ."""
    plain, styled, _ = quirky
    before = {v.ma_lk: v for f in sorted(plain.glob("*/*.xml")) for v in parse(f)}
    after = {v.ma_lk: v for f in sorted(styled.glob("*/*.xml")) for v in parse(f)}
    assert set(before) == set(after) and len(after) == 300
    assert all(v.broken == [] for v in after.values())
    given: dict[str, set[str]] = {}
    for r in _quirks(styled):
        if r["ma_lk"]:
            given.setdefault(r["ma_lk"], set()).add(r["quirk"])
    for ma_lk, visit in after.items():
        old = before[ma_lk]
        quirks = given.get(ma_lk, set())
        if not quirks:
            assert visit.tables == old.tables
            continue
        summary = visit.summary
        if "empty_mahuyen" in quirks:
            assert summary["MAHUYEN_CU_TRU"] == "" and old.summary["MAHUYEN_CU_TRU"] == "000"
            assert summary["NGAY_VAO"] >= "202507010000"
        else:
            assert summary == old.summary
        if "empty_ten_chi_so" in quirks:
            assert "" in {r["TEN_CHI_SO"] for r in visit.rows("XML4")}
        lines = visit.rows("XML2") + visit.rows("XML3")
        commas = [v for r in lines for v in r.values() if re.fullmatch(r"\d+,\d+", v)]
        assert (len(commas) == 1) == ("decimal_comma" in quirks), ma_lk


def test_visits_without_content_quirks_stay_conformant(
    quirky: tuple[Path, Path, Xml130Summary],
) -> None:
    """How a file is written is never a problem of its visits."""
    _, styled, _ = quirky
    with_content = {r["ma_lk"] for r in _quirks(styled) if r["ma_lk"]}
    styled_files = {r["file"] for r in _quirks(styled) if not r["ma_lk"]}
    checked = 0
    for name in sorted(styled_files):
        for visit in parse(_file_at(styled, name)):
            if visit.ma_lk not in with_content:
                assert validate_visit(visit) == [], visit.ma_lk
                checked += 1
    assert checked > 20


def test_no_quirks_no_quirks_file(tmp_path: Path) -> None:
    summary = generate_xml130(20, tmp_path, seed=1)
    assert not (tmp_path / "quirks.csv").exists()
    assert summary.quirky_files == 0 and "quirks" not in summary.paths
    with pytest.raises(ValueError, match="quirks"):
        generate_xml130(1, tmp_path / "x", quirks=1.5)


def test_every_table_can_be_written() -> None:
    for table, (root, lst, row_tag) in TABLE_LAYOUT.items():
        row = {"MA_LK": f"LK-{table}", "GHI_CHU": "a < b"}
        rows = [row] if lst is None else [row, {**row, "STT": "2"}]
        (visit,) = parse(table_xml(table, rows))
        assert visit.tables == {table: rows}, table
        plain = table_xml(table, rows)
        assert plain.count(f"<{row_tag}>".encode()) == len(rows)
        styled = table_xml(table, rows, VENDOR_STYLES[0])
        assert styled.startswith(b"\xef\xbb\xbf") and b"\r\n" in styled
        assert f"<{root} xmlns:xsd=".encode() in styled
        (again,) = parse(styled)
        assert again.tables == visit.tables
    with pytest.raises(ValueError, match="one row"):
        table_xml("XML7", [{"MA_LK": "1"}, {"MA_LK": "2"}])


def test_cli_vendor_quirks(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["synth", "xml130", "--visits", "40", "--out", str(tmp_path / "q"), "--per-file", "5"]
    result = runner.invoke(app, [*args, "--vendor-quirks", "0.5"])
    assert result.exit_code == 0, result.output
    assert "vendor style" in " ".join(result.output.split())
    assert _quirks(tmp_path / "q")
    bad = runner.invoke(app, [*args, "--vendor-quirks", "1.5"])
    assert bad.exit_code == 2
