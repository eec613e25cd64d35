"""Conformance checks: each rule fails on a faulty visit and passes on a correct one."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lienthong.cli import app
from lienthong.ingest.xml130 import STANDARD_130, STANDARD_4210, Visit, parse
from lienthong.ingest.xml130.rules import RULES
from lienthong.ingest.xml130.validate import (
    FileValidation,
    Problem,
    validate_paths,
    validate_visit,
)
from lienthong.synth.xml130 import envelope_xml, generate_xml130
from tests.conftest import SHARED, need_shared

Tables = dict[str, list[dict[str, str]]]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xml130")
    generate_xml130(150, out, seed=11)
    return out


@pytest.fixture(scope="module")
def visits(exports: Path) -> list[Visit]:
    return [v for f in sorted(exports.glob("*/*.xml")) for v in parse(f)]


def _pick(visits: list[Visit], standard: str, kind: str | None = None) -> Visit:
    for v in visits:
        if v.standard != standard:
            continue
        k = v.summary.get("MA_LOAI_KCB")
        if kind is None or k == kind:
            if kind in ("03", "3") and not ("XML4" in v.tables and "XML5" in v.tables):
                continue
            return v
    raise AssertionError(f"no {standard} visit of kind {kind}")


@pytest.fixture(scope="module")
def inpatient(visits: list[Visit]) -> Visit:
    return _pick(visits, STANDARD_130, "03")


@pytest.fixture(scope="module")
def outpatient(visits: list[Visit]) -> Visit:
    return _pick(visits, STANDARD_130, "01")


@pytest.fixture(scope="module")
def legacy(visits: list[Visit]) -> Visit:
    return _pick(visits, STANDARD_4210, "3")


def _check(visit: Visit, mutate: Callable[[Tables], object]) -> list[Problem]:
    changed = copy.deepcopy(visit)
    mutate(changed.tables)
    return validate_visit(changed)


def _rules(problems: list[Problem]) -> set[tuple[str, str, str]]:
    return {(p.table, p.field, p.rule) for p in problems}


def test_generated_visits_conform(visits: list[Visit]) -> None:
    """The passing case of every rule at once: correct exports give no problem at all."""
    assert len(visits) == 150
    assert {v.standard for v in visits} == {STANDARD_130, STANDARD_4210}
    problems = [p for v in visits for p in validate_visit(v)]
    assert problems == []


def _set(table: str, field: str, value: str, row: int = 0) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        t[table][row][field] = value

    return mutate


def _del(table: str, field: str, row: int = 0) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        del t[table][row][field]

    return mutate


def _shift(table: str, field: str, delta: float, row: int = 0) -> Callable[[Tables], None]:
    def mutate(t: Tables) -> None:
        t[table][row][field] = f"{float(t[table][row][field]) + delta:.2f}"

    return mutate


def _lab_row(t: Tables) -> int:
    return next(i for i, r in enumerate(t["XML3"]) if r["MA_NHOM"] == "1")


# (case, which visit, mutation, expected (table, field, rule))
FAILING: list[tuple[str, str, Callable[[Tables], object], tuple[str, str, str]]] = [
    ("required missing", "out", _del("XML1", "HO_TEN"), ("XML1", "HO_TEN", "required")),
    ("required empty", "out", _set("XML1", "MA_BN", ""), ("XML1", "MA_BN", "required")),
    ("required 4210", "old", _del("XML1", "MA_BENH"), ("XML1", "MA_BENH", "required")),
    ("number", "out", _set("XML2", "SO_LUONG", "hai"), ("XML2", "SO_LUONG", "type.number")),
    ("number money", "out", _set("XML1", "T_BNTT", "1,000"), ("XML1", "T_BNTT", "type.number")),
    ("max size", "out", _set("XML1", "HO_TEN", "A" * 256), ("XML1", "HO_TEN", "max_size")),
    (
        "max size 4210",
        "old",
        _set("XML1", "NGAY_SINH", "1980010100"),
        ("XML1", "NGAY_SINH", "max_size"),
    ),
    ("sex code", "out", _set("XML1", "GIOI_TINH", "4"), ("XML1", "GIOI_TINH", "code")),
    ("result code", "out", _set("XML1", "KET_QUA_DTRI", "9"), ("XML1", "KET_QUA_DTRI", "code")),
    (
        "result code 4210",
        "old",
        _set("XML1", "KET_QUA_DTRI", "8"),
        ("XML1", "KET_QUA_DTRI", "code"),
    ),
    ("visit type", "out", _set("XML1", "MA_LOAI_KCB", "11"), ("XML1", "MA_LOAI_KCB", "code")),
    ("discharge type", "out", _set("XML1", "MA_LOAI_RV", "6"), ("XML1", "MA_LOAI_RV", "code")),
    (
        "discharge 4210",
        "old",
        _set("XML1", "TINH_TRANG_RV", "5"),
        ("XML1", "TINH_TRANG_RV", "code"),
    ),
    (
        "month 13",
        "out",
        _set("XML1", "NGAY_VAO", "202413011200"),
        ("XML1", "NGAY_VAO", "date.format"),
    ),
    (
        "short time",
        "out",
        _set("XML1", "NGAY_RA", "2025010112"),
        ("XML1", "NGAY_RA", "date.format"),
    ),
    ("hour 24", "in", _set("XML2", "NGAY_YL", "202501012400"), ("XML2", "NGAY_YL", "date.format")),
    (
        "card date",
        "out",
        _set("XML1", "GT_THE_TU", "20250230"),
        ("XML1", "GT_THE_TU", "date.format"),
    ),
    (
        "birth 8 in 130",
        "out",
        _set("XML1", "NGAY_SINH", "19800101"),
        ("XML1", "NGAY_SINH", "date.format"),
    ),
    (
        "birth 30 Feb",
        "out",
        _set("XML1", "NGAY_SINH", "198002300000"),
        ("XML1", "NGAY_SINH", "date.format"),
    ),
    (
        "discharge first",
        "out",
        lambda t: t["XML1"][0].update(NGAY_RA="200001010000"),
        ("XML1", "NGAY_RA", "date.order"),
    ),
    (
        "admitted as inpatient first",
        "in",
        _set("XML1", "NGAY_VAO_NOI_TRU", "200001010000"),
        ("XML1", "NGAY_VAO_NOI_TRU", "date.order"),
    ),
    (
        "result before order",
        "in",
        lambda t: t["XML3"][_lab_row(t)].update(NGAY_KQ="200001010000"),
        ("XML3", "NGAY_KQ", "date.order"),
    ),
    (
        "born after admission",
        "out",
        _set("XML1", "NGAY_SINH", "209901010000"),
        ("XML1", "NGAY_SINH", "date.order"),
    ),
    ("days outpatient", "out", _set("XML1", "SO_NGAY_DTRI", "2"), ("XML1", "SO_NGAY_DTRI", "days")),
    (
        "days inpatient",
        "in",
        lambda t: t["XML1"][0].update(SO_NGAY_DTRI=str(int(t["XML1"][0]["SO_NGAY_DTRI"]) + 3)),
        ("XML1", "SO_NGAY_DTRI", "days"),
    ),
    ("cccd shape", "out", _set("XML1", "SO_CCCD", "12345"), ("XML1", "SO_CCCD", "cccd")),
    (
        "cccd province",
        "out",
        lambda t: t["XML1"][0].update(SO_CCCD="999" + t["XML1"][0]["SO_CCCD"][3:]),
        ("XML1", "SO_CCCD", "cccd"),
    ),
    (
        "cccd sex digit",
        "out",
        lambda t: t["XML1"][0].update(GIOI_TINH="2" if t["XML1"][0]["GIOI_TINH"] == "1" else "1"),
        ("XML1", "SO_CCCD", "cccd"),
    ),
    (
        "card category",
        "out",
        _set("XML1", "MA_THE_BHYT", "ZZ4010123456789"),
        ("XML1", "MA_THE_BHYT", "bhyt"),
    ),
    (
        "second card",
        "out",
        _set("XML1", "MA_THE_BHYT", "DN4010123456789;DN401012345"),
        ("XML1", "MA_THE_BHYT", "bhyt"),
    ),
    ("card 4210", "old", _set("XML1", "MA_THE", "DN9010123456789"), ("XML1", "MA_THE", "bhyt")),
    ("facility", "out", _set("XML1", "MA_CSKCB", "1234"), ("XML1", "MA_CSKCB", "facility")),
    (
        "icd10 main",
        "out",
        _set("XML1", "MA_BENH_CHINH", "K99.9"),
        ("XML1", "MA_BENH_CHINH", "icd10"),
    ),
    ("icd10 other", "out", _set("XML1", "MA_BENH_KT", "I10;ZZZ"), ("XML1", "MA_BENH_KT", "icd10")),
    ("icd10 4210", "old", _set("XML1", "MA_BENH", "A00-A09"), ("XML1", "MA_BENH", "icd10")),
    (
        "drug amount",
        "out",
        _shift("XML2", "THANH_TIEN_BV", 1),
        ("XML2", "THANH_TIEN_BV", "money.line"),
    ),
    (
        "drug insured amount",
        "out",
        _set("XML2", "TYLE_TT_BH", "50"),
        ("XML2", "THANH_TIEN_BH", "money.line"),
    ),
    (
        "service amount",
        "in",
        _set("XML3", "TYLE_TT_DV", "50"),
        ("XML3", "THANH_TIEN_BV", "money.line"),
    ),
    ("amount 4210", "old", _shift("XML3", "THANH_TIEN", 10), ("XML3", "THANH_TIEN", "money.line")),
    ("payers", "out", _shift("XML2", "T_BHTT", 10), ("XML2", "THANH_TIEN_BV", "money.split")),
    ("total", "out", _shift("XML1", "T_TONGCHI_BV", 2), ("XML1", "T_TONGCHI_BV", "money.total")),
    ("drug total", "out", _shift("XML1", "T_THUOC", -5), ("XML1", "T_THUOC", "money.total")),
    ("supply total", "in", _shift("XML1", "T_VTYT", 100), ("XML1", "T_VTYT", "money.total")),
    ("insurer total", "out", _shift("XML1", "T_BHTT", 100), ("XML1", "T_BHTT", "money.total")),
    ("total 4210", "old", _shift("XML1", "T_TONGCHI", 100), ("XML1", "T_TONGCHI", "money.total")),
    (
        "lab performer",
        "in",
        lambda t: t["XML3"][_lab_row(t)].pop("NGUOI_THUC_HIEN"),
        ("XML3", "NGUOI_THUC_HIEN", "conditional"),
    ),
    ("result time", "in", _del("XML4", "NGAY_KQ"), ("XML4", "NGAY_KQ", "conditional")),
    ("drug tender", "out", _del("XML2", "TT_THAU"), ("XML2", "TT_THAU", "conditional")),
    ("package", "in", _set("XML3", "GOI_VTYT", "X1"), ("XML3", "GOI_VTYT", "pattern")),
    ("orphan row", "in", _set("XML5", "MA_LK", "ANOTHER"), ("XML5", "MA_LK", "link")),
    ("no summary", "out", lambda t: t.pop("XML1"), ("XML1", "MA_LK", "link")),
]


@pytest.mark.parametrize("case", [c[0] for c in FAILING])
def test_rule_fails(case: str, inpatient: Visit, outpatient: Visit, legacy: Visit) -> None:
    _, which, mutate, expected = next(c for c in FAILING if c[0] == case)
    visit = {"in": inpatient, "out": outpatient, "old": legacy}[which]
    assert expected not in _rules(validate_visit(visit))  # passes before
    problems = _check(visit, mutate)
    assert expected in _rules(problems), problems
    problem = next(p for p in problems if (p.table, p.field, p.rule) == expected)
    assert problem.file == visit.file and problem.ma_lk == visit.ma_lk
    assert problem.rule in RULES
    assert expected[1] in problem.message


# Values a strict-looking check must still accept.
PASSING: list[tuple[str, str, Callable[[Tables], object]]] = [
    ("optional field absent", "out", _del("XML1", "DIEN_THOAI")),
    (
        "decimal quantity",
        "in",
        lambda t: t["XML2"][0].update(
            SO_LUONG="0.5", DON_GIA=f"{2 * float(t['XML2'][0]['THANH_TIEN_BV']):.2f}"
        ),
    ),
    ("255 characters", "out", _set("XML1", "HO_TEN", "A" * 255)),
    ("died outside hospital (QĐ 4750)", "out", _set("XML1", "KET_QUA_DTRI", "8")),
    (
        "unknown birth day and time",
        "out",
        lambda t: t["XML1"][0].update(NGAY_SINH=t["XML1"][0]["NGAY_SINH"][:4] + "00000000"),
    ),
    (
        "same admission and discharge minute",
        "out",
        lambda t: t["XML1"][0].update(NGAY_RA=t["XML1"][0]["NGAY_VAO"]),
    ),
    ("old identity card", "out", _set("XML1", "SO_CCCD", "123456789")),
    ("passport", "out", _set("XML1", "SO_CCCD", "B1234567")),
    ("no CCCD", "out", _set("XML1", "SO_CCCD", "")),
    ("two valid cards", "out", _set("XML1", "MA_THE_BHYT", "DN4010123456789;HT3790123456789")),
    ("undotted and dagger codes", "out", _set("XML1", "MA_BENH_KT", "I10;E119;A17.0†")),
    ("amount within rounding", "out", _shift("XML2", "THANH_TIEN_BV", 0.004)),
    ("total within a đồng", "out", _shift("XML1", "T_TONGCHI_BV", 0.5)),
    ("value without result time", "in", lambda t: t["XML4"][0].update(GIA_TRI="", NGAY_KQ="")),
    ("oxygen needs no tender", "out", lambda t: t["XML2"][0].update(MA_NHOM="7", TT_THAU="")),
    ("package code", "in", _set("XML3", "GOI_VTYT", "G12")),
]


@pytest.mark.parametrize("case", [c[0] for c in PASSING])
def test_rule_passes(case: str, inpatient: Visit, outpatient: Visit) -> None:
    _, which, mutate = next(c for c in PASSING if c[0] == case)
    visit = {"in": inpatient, "out": outpatient}[which]
    problems = _check(visit, mutate)
    assert problems == [], problems


def test_every_rule_has_a_failing_case() -> None:
    covered = {c[3][2] for c in FAILING} | {"duplicate", "envelope", "file"}
    assert covered == set(RULES)


class _OnlyCommonCold:
    def exists(self, code: str) -> bool:
        return code == "J06.9"


def test_icd10_catalogue_is_a_parameter(outpatient: Visit) -> None:
    v = copy.deepcopy(outpatient)
    v.tables["XML1"][0].update(MA_BENH_CHINH="J06.9", MA_BENH_KT="")
    assert validate_visit(v, _OnlyCommonCold()) == []
    v.tables["XML1"][0]["MA_BENH_CHINH"] = "I10"  # exists in ICD-10, not in this catalogue
    assert ("XML1", "MA_BENH_CHINH", "icd10") in _rules(validate_visit(v, _OnlyCommonCold()))


def test_duplicates_and_envelope_counts(inpatient: Visit, outpatient: Visit) -> None:
    sender = inpatient.summary["MA_CSKCB"]
    data = envelope_xml(sender, date(2025, 1, 1), [inpatient.tables, inpatient.tables])
    check = FileValidation(data, name="dup.xml")
    results = list(check)
    assert results[0][1] == []
    assert _rules(results[1][1]) == {("XML1", "MA_LK", "duplicate")}
    assert check.file_problems == [] and check.error is None

    # the sender in the envelope is not the facility of the visit
    other = "48003" if inpatient.summary["MA_CSKCB"] != "48003" else "92006"
    (visit, problems) = next(
        iter(FileValidation(envelope_xml(other, date(2025, 1, 1), [inpatient.tables])))
    )
    assert ("XML1", "MA_CSKCB", "envelope") in _rules(problems)
    (_, same) = next(
        iter(
            FileValidation(
                envelope_xml(inpatient.summary["MA_CSKCB"], date(2025, 1, 1), [inpatient.tables])
            )
        )
    )
    assert same == []

    # SOLUONGHOSO says 3 visits, the file holds 2
    data = envelope_xml("01012", date(2025, 1, 1), [inpatient.tables, outpatient.tables])
    data = data.replace(b"<SOLUONGHOSO>2<", b"<SOLUONGHOSO>3<")
    check = FileValidation(data, name="count.xml")
    list(check)
    assert [(p.field, p.rule) for p in check.file_problems] == [("SOLUONGHOSO", "envelope")]


def test_unreadable_file_is_a_file_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')
    report = validate_paths([bad])
    assert report.failed_files == ["bad.xml"]
    assert [(p.file, p.rule) for p in report.problems] == [("bad.xml", "file")]
    assert "DOCTYPE" in report.problems[0].message


def test_every_seeded_defect_is_found(tmp_path: Path) -> None:
    generate_xml130(240, tmp_path, seed=4, defects=0.5)
    report = validate_paths(sorted(tmp_path.glob("*/*.xml")))
    found = {(p.file, p.ma_lk, p.rule) for p in report.problems}
    with (tmp_path / "defects.csv").open(encoding="utf-8") as fh:
        seeded = [(r["file"], r["ma_lk"], r["rule"]) for r in csv.DictReader(fh)]
    assert len(seeded) > 80
    missed = [s for s in seeded if s not in found]
    assert missed == []
    # and no problem in a visit without a seeded defect
    bad_visits = {(f, m) for f, m, _ in seeded}
    assert {(p.file, p.ma_lk) for p in report.problems} <= bad_visits
    assert report.visits_with_errors == len(bad_visits)
    assert sum(f.visits for f in report.facilities.values()) == 240


def test_cli_validate(exports: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(app, ["xml130", "validate", str(exports)])
    assert clean.exit_code == 0, clean.output
    assert "150 visits, 0 with errors, 0 problems" in " ".join(clean.output.split())

    generate_xml130(60, tmp_path, seed=9, defects=0.4, population=exports / "population")
    result = runner.invoke(app, ["xml130", "validate", "--json", str(tmp_path)])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert problems and all(
        list(p) == ["file", "ma_lk", "table", "field", "rule", "message", "value"] for p in problems
    )
    table = runner.invoke(app, ["xml130", "validate", "--show", "3", str(tmp_path)])
    assert table.exit_code == 1
    text = " ".join(table.output.split())
    assert "By facility (MA_CSKCB)" in text
    for facility in {p["file"][:5] for p in problems}:
        assert facility in text

    missing = runner.invoke(app, ["xml130", "validate", str(tmp_path / "absent.xml")])
    assert missing.exit_code == 2
    assert "no such file" in missing.output


def test_rule_table_matches_the_gateway_workbook() -> None:
    """The committed field dictionary is what the generator makes of the official
    workbook (regenerate with scripts/build_xml130_dictionary.py when it changes)."""
    workbook = need_shared(SHARED / "standards" / "qd4750_validation_rules.xlsx")
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_xml130_dictionary.py"
    spec = importlib.util.spec_from_file_location("build_xml130_dictionary", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render(module.read(workbook), workbook.name)
    assert module.OUT.read_text(encoding="utf-8") == expected


def test_cli_uses_the_loaded_icd10_list(outpatient: Visit, tmp_path: Path) -> None:
    """Once the Ministry's list is loaded, codes are checked against it, not the WHO's."""
    from tests.test_terminology import tiny_workbook

    tables = copy.deepcopy(outpatient.tables)
    tables["XML1"][0].update(MA_BENH_CHINH="A00.9", MA_BENH_KT="I10")  # I10: WHO only
    export = tmp_path / "one.xml"
    export.write_bytes(envelope_xml(outpatient.ma_cskcb, date(2025, 1, 1), [tables]))
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"

    who = runner.invoke(app, ["xml130", "validate", "--json", "--database", url, str(export)])
    assert who.exit_code == 0, who.output
    assert json.loads(who.stdout) == []

    loaded = runner.invoke(
        app, ["terminology", "load", str(tiny_workbook(tmp_path / "icd.xlsx")), "--database", url]
    )
    assert loaded.exit_code == 0, loaded.output
    result = runner.invoke(app, ["xml130", "validate", "--json", "--database", url, str(export)])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert [(p["field"], p["rule"], p["value"]) for p in problems] == [
        ("MA_BENH_KT", "icd10", "I10")
    ]


def test_worker_processes_give_the_same_report(tmp_path: Path) -> None:
    generate_xml130(120, tmp_path, seed=6, defects=0.3, visits_per_file=20)
    files = sorted(tmp_path.glob("*/*.xml"))
    (tmp_path / "01012" / "zz_broken.xml").write_bytes(b"<GIAMDINHHS><THONGTINHOSO>")
    files.append(tmp_path / "01012" / "zz_broken.xml")
    seen: list[int] = []
    one = validate_paths(files)
    two = validate_paths(files, workers=2, on_visit=lambda name, n: seen.append(n))
    assert sum(seen) == 120
    assert two.problems == one.problems and len(one.problems) > 30
    assert two.failed_files == one.failed_files and "zz_broken.xml" in one.failed_files
    assert (two.files, two.visits, two.visits_with_errors) == (
        one.files,
        120,
        one.visits_with_errors,
    )
    assert two.facilities == one.facilities
