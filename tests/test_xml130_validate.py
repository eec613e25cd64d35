"""Conformance checks: each rule fails on a faulty visit and passes on a correct one."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import sys
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
    ("number money", "out", _set("XML1", "T_BNTT", "1,000,000"), ("XML1", "T_BNTT", "type.number")),
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
        "exemption date",
        "out",
        _set("XML1", "NGAY_MIEN_CCT", "2017040512"),
        ("XML1", "NGAY_MIEN_CCT", "date.format"),
    ),
    (
        "re-visit date",
        "out",
        _set("XML1", "NGAY_TAI_KHAM", "20250110;2025011"),
        ("XML1", "NGAY_TAI_KHAM", "date.format"),
    ),
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
    (
        "decimal comma",
        "out",
        lambda t: t["XML2"][0].update(SO_LUONG=t["XML2"][0]["SO_LUONG"] + ",0"),
        ("XML2", "SO_LUONG", "decimal_comma"),
    ),
    (
        "weight comma",
        "out",
        _set("XML1", "CAN_NANG", "52,5"),
        ("XML1", "CAN_NANG", "decimal_comma"),
    ),
    (
        "birth note",
        "out",
        lambda t: t.update(XML9=[{"MA_LK": t["XML1"][0]["MA_LK"], "SINHCON_PHAUTHUAT": "1"}]),
        ("XML9", "GHI_CHU", "conditional"),
    ),
    ("orphan row", "in", _set("XML5", "MA_LK", "ANOTHER"), ("XML5", "MA_LK", "link")),
    ("no summary", "out", lambda t: t.pop("XML1"), ("XML1", "MA_LK", "link")),
    (
        "summary without lines",
        "in",
        lambda t: (t.pop("XML2", None), t.pop("XML3", None)),
        ("XML1", "T_THUOC", "lines.missing"),
    ),
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


_TOTALS_130 = (
    "T_THUOC",
    "T_VTYT",
    "T_TONGCHI_BV",
    "T_TONGCHI_BH",
    "T_BNTT",
    "T_BNCCT",
    "T_BHTT",
    "T_NGUONKHAC",
)

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
    ("exemption from a paper: a date", "out", _set("XML1", "NGAY_MIEN_CCT", "20170405")),
    ("exemption computed: a time", "out", _set("XML1", "NGAY_MIEN_CCT", "201704051200")),
    ("five years in a row", "out", _set("XML1", "NAM_NAM_LIEN_TUC", "20200101")),
    ("two re-visit dates", "out", _set("XML1", "NGAY_TAI_KHAM", "20250110;20250117")),
    ("no district since July 2025", "out", _set("XML1", "MAHUYEN_CU_TRU", "")),
    ("district 000", "out", _set("XML1", "MAHUYEN_CU_TRU", "000")),
    ("no district element", "out", _del("XML1", "MAHUYEN_CU_TRU")),
    ("Defence office card DS", "out", _set("XML1", "MA_THE_BHYT", "DS4970123456789")),
    ("Police office card", "out", _set("XML1", "MA_THE_BHYT", "CA5980123456789")),
    ("result without indicator name", "in", _set("XML4", "TEN_CHI_SO", "")),
    ("result without indicator code", "in", _set("XML4", "MA_CHI_SO", "")),
    ("service code of 50 (gateway list)", "in", _set("XML4", "MA_DICH_VU", "2" * 50)),
    (
        "no lines and nothing spent",
        "out",
        lambda t: (
            t.pop("XML2", None),
            t.pop("XML3", None),
            t["XML1"][0].update({name: "0" for name in _TOTALS_130}),
        ),
    ),
]


@pytest.mark.parametrize("case", [c[0] for c in PASSING])
def test_rule_passes(case: str, inpatient: Visit, outpatient: Visit) -> None:
    _, which, mutate = next(c for c in PASSING if c[0] == case)
    visit = {"in": inpatient, "out": outpatient}[which]
    problems = _check(visit, mutate)
    assert problems == [], problems


def test_every_rule_has_a_failing_case() -> None:
    # duplicate, envelope, file, broken and table.unknown concern a file or its reading
    # (tested in test_xml130_parse and below); fhir the writer
    reading = {"duplicate", "envelope", "file", "broken", "table.unknown", "fhir"}
    covered = {c[3][2] for c in FAILING} | reading
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
    assert (
        "150 visits: 0 with blocking problems (not storable), 0 with conformance problems only "
        "(stored with them), 150 clean; 0 problems"
    ) in " ".join(clean.output.split())

    generate_xml130(60, tmp_path, seed=9, defects=0.4, population=exports / "population")
    result = runner.invoke(app, ["xml130", "validate", "--json", str(tmp_path)])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    problems = document["problems"]
    assert problems and all(
        list(p) == ["file", "ma_lk", "table", "field", "rule", "severity", "message", "value"]
        for p in problems
    )
    summary = document["summary"]
    visits = {(p["file"], p["ma_lk"]) for p in problems}
    blocked = {(p["file"], p["ma_lk"]) for p in problems if p["severity"] == "blocking"}
    assert summary["visits"] == 60
    assert summary["visits_blocking"] == len(blocked)
    assert summary["visits_conformance_only"] == len(visits - blocked)
    assert summary["visits_clean"] == 60 - len(visits)
    groups = document["groups"]
    counts = [g["visits"] for g in groups]
    assert counts == sorted(counts, reverse=True)
    for g in groups:  # visits, not lines, and a source for every kind
        touched = {
            (p["file"], p["ma_lk"])
            for p in problems
            if (p["table"], p["field"], p["rule"]) == (g["table"], g["field"], g["rule"])
        }
        assert g["visits"] == len(touched) and g["source"]
        assert g["severity"] in ("blocking", "conformance")
    for facility, numbers in document["facilities"].items():
        assert numbers["visits"] == (
            numbers["visits_blocking"]
            + numbers["visits_conformance_only"]
            + numbers["visits_clean"]
        )
        assert all(k["severity"] in ("blocking", "conformance") for k in numbers["problems"])
        assert facility in {p["file"][:5] for p in problems} | {"?"} or not numbers["problems"]
    table = runner.invoke(app, ["xml130", "validate", "--show", "3", str(tmp_path)])
    assert table.exit_code == 1
    text = " ".join(table.output.split())
    assert "By facility (MA_CSKCB)" in text and "blocking" in text and "conformance" in text
    assert f"{summary['visits_blocking']} with blocking problems" in text
    for facility in {p["file"][:5] for p in problems}:
        assert facility in text

    missing = runner.invoke(app, ["xml130", "validate", str(tmp_path / "absent.xml")])
    assert missing.exit_code == 2
    assert "no such file" in missing.output


def test_rule_table_matches_the_gateway_workbook(monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed field dictionary is what the generator makes of the official
    workbook (regenerate with scripts/build_xml130_dictionary.py when it changes)."""
    workbook = need_shared(SHARED / "standards" / "qd4750_validation_rules.xlsx")
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_xml130_dictionary.py"
    spec = importlib.util.spec_from_file_location("build_xml130_dictionary", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    appendix = need_shared(SHARED / "standards" / "qd4750_appendix.xlsx")
    tables = module.merge(module.read_gateway(workbook), module.read_appendix(appendix))
    expected = module.render(tables, workbook.name, appendix.name)
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
    assert json.loads(who.stdout)["problems"] == []

    loaded = runner.invoke(
        app, ["terminology", "load", str(tiny_workbook(tmp_path / "icd.xlsx")), "--database", url]
    )
    assert loaded.exit_code == 0, loaded.output
    result = runner.invoke(app, ["xml130", "validate", "--json", "--database", url, str(export)])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
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


# -- rules cite their sources --------------------------------------------------------


def _rule_ids_used(path: Path) -> set[str]:
    """Rule ids passed to ``self.add(table, field, rule, ...)`` and ``Problem(file, ma_lk,
    table, field, rule, ...)`` in a module's source."""
    import ast

    ids: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        at = None
        if isinstance(func, ast.Attribute) and func.attr == "add":
            at = 2
        elif isinstance(func, ast.Name) and func.id == "Problem":
            at = 4
        if at is not None and len(node.args) > at:
            arg = node.args[at]
            if isinstance(arg, ast.Name) and arg.id == "rule":
                continue  # the parameter of the add() that builds the Problem
            assert isinstance(arg, ast.Constant), ast.dump(arg)  # ids are literal, not built
            ids.add(arg.value)
    return ids


def test_every_rule_id_used_is_in_rules_with_a_source() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "lienthong" / "ingest" / "xml130"
    used = _rule_ids_used(src / "validate.py") | _rule_ids_used(src / "ingest.py")
    assert {"required", "decimal_comma", "broken", "link", "duplicate", "fhir"} <= used
    assert used <= set(RULES), used - set(RULES)
    assert all(RULES[r].source.strip() and RULES[r].checks.strip() for r in used)
    assert all(r.source.strip() for r in RULES.values())


def test_every_field_spec_cites_its_rows() -> None:
    from lienthong.ingest.xml130.rules import FIELDS

    for standard, tables in FIELDS.items():
        for table, specs in tables.items():
            for spec in specs.values():
                assert spec.source.strip(), (standard, table, spec.name)
                if standard == STANDARD_130:
                    sheet = "Check-in" if table == "XML0" else table[3:]  # XML0: check-in
                    assert f"Bảng {sheet} row" in spec.source, spec


def test_where_the_two_official_lists_disagree_the_report_says_which_is_followed(
    inpatient: Visit,
) -> None:
    """XML4 MA_DICH_VU: 15 characters in the QĐ 4750 appendix, 50 in the gateway's list.
    The larger is followed and the message names both."""
    from lienthong.ingest.xml130.rules import FIELDS

    spec = FIELDS[STANDARD_130]["XML4"]["MA_DICH_VU"]
    assert spec.max_size == 50
    assert "gateway 50, appendix 15" in spec.source and "larger size followed" in spec.source
    assert _check(inpatient, _set("XML4", "MA_DICH_VU", "2" * 40)) == []
    problems = _check(inpatient, _set("XML4", "MA_DICH_VU", "2" * 51))
    assert _rules(problems) == {("XML4", "MA_DICH_VU", "max_size")}
    assert "gateway 50, appendix 15" in problems[0].message


def test_fields_the_amended_texts_make_optional() -> None:
    from lienthong.ingest.xml130.rules import FIELDS

    f130 = FIELDS[STANDARD_130]
    assert not f130["XML4"]["TEN_CHI_SO"].required  # "chưa có tên chỉ số thì để trống"
    assert not f130["XML1"]["MAHUYEN_CU_TRU"].required  # no districts since 1 July 2025
    assert "72/2025/QH15" in f130["XML1"]["MAHUYEN_CU_TRU"].source
    assert not f130["XML9"]["GHI_CHU"].required  # conditional: surgery, under 32 weeks
    assert not f130["XML3"]["MA_BENH"].required  # empty means the main diagnosis
    assert f130["XML1"]["HO_TEN"].required and f130["XML9"]["HO_TEN_NND"].required
    assert f130["XML1"]["MA_DOITUONG_KCB"].max_size == 5  # appendix 3, amended to 4; list 5


# -- severity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_del("XML1", "HO_TEN"), ("XML1", "HO_TEN", "required")),
        (_set("XML1", "MA_LK", ""), ("XML1", "MA_LK", "required")),
        (_del("XML1", "NGAY_SINH"), ("XML1", "NGAY_SINH", "required")),
        (_set("XML1", "NGAY_SINH", "19800230"), ("XML1", "NGAY_SINH", "date.format")),
        (_set("XML1", "NGAY_VAO", "202513011200"), ("XML1", "NGAY_VAO", "date.format")),
        (_del("XML1", "NGAY_VAO"), ("XML1", "NGAY_VAO", "required")),
        (_set("XML2", "MA_LK", "ANOTHER"), ("XML2", "MA_LK", "link")),
        (lambda t: t["XML1"].append(dict(t["XML1"][0])), ("XML1", "MA_LK", "duplicate")),
    ],
)
def test_blocking_problems(
    outpatient: Visit, mutate: Callable[[Tables], object], expected: tuple[str, str, str]
) -> None:
    from lienthong.ingest.xml130.validate import blocking

    problems = _check(outpatient, mutate)
    found = [p for p in problems if (p.table, p.field, p.rule) == expected]
    assert found and all(p.severity == "blocking" for p in found)
    assert blocking(problems)
    assert found[0].as_dict()["severity"] == "blocking"


@pytest.mark.parametrize(
    "mutate",
    [
        _set("XML1", "GIOI_TINH", "4"),
        _set("XML1", "MA_THE_BHYT", "ZZ4010123456789"),
        _set("XML1", "HO_TEN", "A" * 300),
        _set("XML1", "NGAY_RA", "2025010112"),
        _shift("XML1", "T_TONGCHI_BV", 2),
        _set("XML1", "MA_BENH_CHINH", "K99.9"),
        _del("XML2", "TT_THAU"),
    ],
)
def test_conformance_problems_do_not_block(
    outpatient: Visit, mutate: Callable[[Tables], object]
) -> None:
    from lienthong.ingest.xml130.validate import blocking

    problems = _check(outpatient, mutate)
    assert problems and {p.severity for p in problems} == {"conformance"}
    assert not blocking(problems)


def test_the_severity_table_names_known_rules_and_gives_reasons() -> None:
    from lienthong.ingest.xml130.rules import BLOCKING_PROBLEMS, severity

    for (rule, _table, _field), reason in BLOCKING_PROBLEMS.items():
        assert rule in RULES and reason.strip()
    assert severity("required", "XML1", "HO_TEN") == "blocking"
    assert severity("required", "XML1", "DIA_CHI") == "conformance"
    assert severity("broken", "XML7", "") == "blocking"


def test_every_broken_table_is_a_blocking_problem(outpatient: Visit) -> None:
    v = copy.deepcopy(outpatient)
    v.broken = [("XML2", "bad base64 in NOIDUNGFILE"), ("XML99", "unknown LOAIHOSO")]
    problems = validate_visit(v)
    broken = [p for p in problems if p.rule == "broken"]
    assert [(p.table, p.severity) for p in broken] == [
        ("XML2", "blocking"),
        ("XML99", "blocking"),
    ]
    assert "bad base64" in broken[0].message and "unknown LOAIHOSO" in broken[1].message


def test_a_reading_notice_is_a_conformance_problem(outpatient: Visit) -> None:
    """A vendor's own table, ignored by the reader, leaves the visit storable."""
    from lienthong.ingest.xml130.validate import blocking

    v = copy.deepcopy(outpatient)
    v.notices = [("XML99", "<BANG_RIENG> is no table of the standard: ignored")]
    problems = validate_visit(v)
    notice = [p for p in problems if p.rule == "table.unknown"]
    assert [(p.table, p.severity) for p in notice] == [("XML99", "conformance")]
    assert "BANG_RIENG" in notice[0].message
    assert not blocking(problems)


# -- real-world shaped exports (tests/fixtures/xml130_validate) ----------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "xml130_validate"
REAL_TABLES = ("XML1", "XML2", "XML3", "XML4", "XML9")


def real_world_export(edit: Callable[[str, str], str] | None = None) -> bytes:
    """The hand-written delivery visit of a Hà Nội hospital (Aug 2025), its tables as a
    HIS on a Vietnamese locale writes them, in a gateway envelope; ``edit(table, text)``
    changes a table's XML text first."""
    import base64

    files = []
    for table in REAL_TABLES:
        text = (FIXTURES / f"{table}.xml").read_text(encoding="utf-8")
        if edit is not None:
            text = edit(table, text)
        content = base64.b64encode(text.encode("utf-8")).decode("ascii")
        files.append(
            f"<FILEHOSO><LOAIHOSO>{table}</LOAIHOSO><NOIDUNGFILE>{content}</NOIDUNGFILE></FILEHOSO>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><GIAMDINHHS><THONGTINDONVI><MACSKCB>01012'
        "</MACSKCB></THONGTINDONVI><THONGTINHOSO><NGAYLAP>20250816</NGAYLAP><SOLUONGHOSO>1"
        "</SOLUONGHOSO><DANHSACHHOSO><HOSO>" + "".join(files) + "</HOSO></DANHSACHHOSO>"
        "</THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>"
    ).encode("utf-8")


def _only_visit(data: bytes) -> tuple[Visit, list[Problem]]:
    check = FileValidation(data, name="real.xml")
    results = list(check)
    assert len(results) == 1 and check.file_problems == []
    return results[0]


# fields the fixture writes with a decimal comma, and on how many lines
COMMAS = {
    ("XML1", "CAN_NANG"): 1,
    ("XML1", "T_THUOC"): 1,
    ("XML1", "T_TONGCHI_BV"): 1,
    ("XML1", "T_TONGCHI_BH"): 1,
    ("XML1", "T_BNCCT"): 1,
    ("XML1", "T_BHTT"): 1,
    ("XML1", "T_BHTT_GDV"): 1,
    ("XML2", "SO_LUONG"): 1,
    ("XML2", "DON_GIA"): 2,
    ("XML2", "THANH_TIEN_BV"): 1,
    ("XML2", "THANH_TIEN_BH"): 1,
    ("XML2", "T_BNCCT"): 2,
    ("XML2", "T_BHTT"): 2,
    ("XML3", "DON_GIA_BV"): 1,
    ("XML3", "DON_GIA_BH"): 1,
    ("XML3", "T_BNCCT"): 1,
    ("XML3", "T_BHTT"): 1,
}


def test_a_real_world_export_has_only_its_decimal_commas_as_problems() -> None:
    """Post-2025 address (no district), a DS card issued by the Defence office (97), lab
    results without indicator name, a birth certificate without GHI_CHU, and decimal
    commas: one conformance problem per field and visit, with the count of lines, and
    the money arithmetic read through the commas (so no money problem)."""
    visit, problems = _only_visit(real_world_export())
    assert visit.summary["MAHUYEN_CU_TRU"] == "" and visit.summary["MA_THE_BHYT"][:2] == "DS"
    assert any(row["TEN_CHI_SO"] == "" for row in visit.rows("XML4"))
    assert "GHI_CHU" not in visit.rows("XML9")[0]
    assert {p.rule for p in problems} == {"decimal_comma"}
    assert {p.severity for p in problems} == {"conformance"}
    found = {(p.table, p.field): p for p in problems}
    assert set(found) == set(COMMAS)  # once per field, however many lines
    for (table, name), lines in COMMAS.items():
        p = found[(table, name)]
        assert (f"on {lines} lines" if lines > 1 else "on 1 line") in p.message, p.message
        assert "," in p.value and p.value.replace(",", ".") in p.message


@pytest.mark.parametrize("district", ["", "000", "001"])
def test_a_real_world_address_after_the_2025_reform(district: str) -> None:
    def edit(table: str, text: str) -> str:
        if district and table in ("XML1", "XML9"):
            text = text.replace(
                "<MAHUYEN_CU_TRU />", f"<MAHUYEN_CU_TRU>{district}</MAHUYEN_CU_TRU>"
            )
            text = text.replace(
                "<MAHUYEN_CU_TRU>000</MAHUYEN_CU_TRU>",
                f"<MAHUYEN_CU_TRU>{district}</MAHUYEN_CU_TRU>",
            )
        return text

    _, problems = _only_visit(real_world_export(edit))
    assert {p.rule for p in problems} == {"decimal_comma"}


def test_decimal_comma_values_count_in_the_money_arithmetic() -> None:
    """A comma value is read, not skipped: a wrong comma total is a money problem."""

    def edit(table: str, text: str) -> str:
        return text.replace("<T_THUOC>41801,6</T_THUOC>", "<T_THUOC>41901,6</T_THUOC>")

    _, problems = _only_visit(real_world_export(edit))
    assert ("XML1", "T_THUOC", "money.total") in _rules(problems)
    total = next(p for p in problems if p.rule == "money.total")
    assert "41801.60" in total.message  # the lines' sum, decimal commas read

    def drop_line(table: str, text: str) -> str:  # a comma line is counted in the sum
        if table != "XML2":
            return text
        start = text.rindex("<CHI_TIET_THUOC>")
        end = text.rindex("</CHI_TIET_THUOC>") + len("</CHI_TIET_THUOC>")
        return text[:start] + text[end:]

    _, problems = _only_visit(real_world_export(drop_line))
    assert ("XML1", "T_THUOC", "money.total") in _rules(problems)


def test_a_birth_by_surgery_needs_its_note() -> None:
    def surgery(table: str, text: str) -> str:
        return text.replace(
            "<SINHCON_PHAUTHUAT>0</SINHCON_PHAUTHUAT>", "<SINHCON_PHAUTHUAT>1</SINHCON_PHAUTHUAT>"
        )

    _, problems = _only_visit(real_world_export(surgery))
    note = [p for p in problems if p.rule == "conditional"]
    assert [(p.table, p.field, p.severity) for p in note] == [("XML9", "GHI_CHU", "conformance")]
    assert "SINHCON_PHAUTHUAT" in note[0].message

    def noted(table: str, text: str) -> str:
        return surgery(table, text).replace(
            "<SINHCON_DUOI32TUAN>0</SINHCON_DUOI32TUAN>",
            "<SINHCON_DUOI32TUAN>0</SINHCON_DUOI32TUAN><GHI_CHU>Sinh con phải phẫu thuật</GHI_CHU>",
        )

    _, problems = _only_visit(real_world_export(noted))
    assert {p.rule for p in problems} == {"decimal_comma"}


def test_the_report_groups_kinds_by_visits_and_counts_visits_by_severity(
    outpatient: Visit, inpatient: Visit
) -> None:
    from lienthong.ingest.xml130.validate import ValidationReport

    report = ValidationReport()
    comma = _check(
        outpatient, lambda t: [r.update(SO_LUONG=r["SO_LUONG"] + ",0") for r in t["XML2"]]
    )
    name = _check(outpatient, _del("XML1", "HO_TEN"))
    sex = _check(inpatient, _set("XML1", "GIOI_TINH", "4"))
    report.add_visit("01012", comma)  # conformance, several lines of one field
    report.add_visit("01012", name)  # blocking
    report.add_visit("01012", sex)  # conformance
    report.add_visit("01012", _check(inpatient, _set("XML1", "GIOI_TINH", "5")))
    report.add_visit("79024", [])
    assert (report.visits, report.visits_blocking, report.visits_conformance) == (5, 1, 3)
    assert report.visits_clean == 1 and report.visits_with_errors == 4
    groups = report.groups()
    assert [(g.table, g.field, g.rule, g.visits) for g in groups] == [
        ("XML1", "GIOI_TINH", "code", 2),
        ("XML1", "HO_TEN", "required", 1),
        ("XML2", "SO_LUONG", "decimal_comma", 1),
    ]
    assert groups[1].severity == "blocking" and groups[0].severity == "conformance"
    facility = report.facilities["01012"]
    assert (facility.visits_blocking, facility.visits_conformance, facility.visits_clean) == (
        1,
        3,
        0,
    )
    assert facility.problems[("XML1", "GIOI_TINH", "code")] == 2  # visits, not lines


def test_the_default_icd10_list_is_the_ministry_s(outpatient: Visit) -> None:
    """Without a catalogue, codes are checked against the shipped QĐ 4469 list: A90
    (dengue, absent from the WHO 2019 edition) is accepted."""
    from lienthong.ingest.xml130.validate import default_icd_catalogue
    from lienthong.terminology.catalogue import default_icd10_catalogue

    assert default_icd_catalogue() is default_icd10_catalogue()
    assert _check(outpatient, _set("XML1", "MA_BENH_CHINH", "A90")) == []
    problems = _check(outpatient, _set("XML1", "MA_BENH_CHINH", "K99.9"))
    assert _rules(problems) == {("XML1", "MA_BENH_CHINH", "icd10")}


# -- bare-table files of one folder read as one export --------------------------------

BARE_SET = Path(__file__).resolve().parent / "fixtures" / "xml130_bare_set" / "01012"
BARE_MA_LK = "01012.2508.0001234"


def test_a_summary_without_lines_is_one_problem_not_one_per_total(inpatient: Visit) -> None:
    problems = _check(inpatient, lambda t: (t.pop("XML2", None), t.pop("XML3", None)))
    assert [p.rule for p in problems] == ["lines.missing"], problems
    assert problems[0].severity == "conformance"
    assert "XML2, XML3" in problems[0].message and "are missing" in problems[0].message
    # one line table is enough for the totals to be checked against it
    problems = _check(inpatient, lambda t: t.pop("XML3", None))
    assert "lines.missing" not in {p.rule for p in problems}
    assert ("XML1", "T_TONGCHI_BV", "money.total") in _rules(problems)


def bare_copy(root: Path, tables: tuple[str, ...] = ("XML1", "XML2", "XML3", "XML4")) -> Path:
    """The clean bare-table set copied into ``root`` (a folder of its own)."""
    root.mkdir(parents=True, exist_ok=True)
    for table in tables:
        (root / f"{table}.xml").write_bytes((BARE_SET / f"{table}.xml").read_bytes())
    return root


def second_visit(folder: Path, *, break_xml2: bool) -> str:
    """Another visit of the same batch in ``<MA_LK>_XML1.xml`` and ``<MA_LK>_XML2.xml``;
    with ``break_xml2`` its XML2 file stops in the middle (not well-formed)."""
    ma_lk = "01012.2508.0009999"
    for table in ("XML1", "XML2"):
        text = (BARE_SET / f"{table}.xml").read_text(encoding="utf-8").replace(BARE_MA_LK, ma_lk)
        text = text.replace("Nguyễn Thị Hoa", "Trần Thị Lan")
        if table == "XML2" and break_xml2:
            text = text[: text.rindex("<CHI_TIET_THUOC>") + 40]
        (folder / f"{ma_lk}_{table}.xml").write_text(text, encoding="utf-8")
    return ma_lk


def test_a_folder_of_bare_tables_is_one_clean_visit() -> None:
    from lienthong.ingest.xml130.cli_ingest import expand_xml_paths

    report = validate_paths(expand_xml_paths([BARE_SET]))
    assert (report.files, report.visits, report.visits_clean) == (4, 1, 1)
    assert report.problems == [] and report.failed_files == [] and report.notes == []


def test_bare_files_are_joined_by_ma_lk_and_name_their_folder_and_files(tmp_path: Path) -> None:
    from lienthong.ingest.xml130.parse import BareGroup, GroupReader, group_inputs

    folder = bare_copy(tmp_path / "exports" / "01012")
    files = sorted(folder.glob("*.xml"))
    jobs, notes = group_inputs(files)
    assert notes == [] and len(jobs) == 1 and isinstance(jobs[0], BareGroup)
    group = jobs[0]
    assert group.label == f"{folder}/{{XML1.xml,XML2.xml,XML3.xml,XML4.xml}}"
    ((visit, sources),) = list(GroupReader(group))
    assert visit.ma_lk == BARE_MA_LK and visit.ma_cskcb == "01012" and visit.file == group.label
    assert [len(visit.rows(t)) for t in ("XML1", "XML2", "XML3", "XML4")] == [1, 3, 5, 3]
    assert sources == {t: f"{folder}/{t}.xml" for t in ("XML1", "XML2", "XML3", "XML4")}


def test_problems_of_a_bare_group_point_to_the_file_of_the_row(tmp_path: Path) -> None:
    """The real-world shaped set of separate files: read as one visit, only its decimal
    commas are problems (no false money totals, no missing XML1), each in its file."""
    from lienthong.ingest.xml130.cli_ingest import expand_xml_paths

    report = validate_paths(expand_xml_paths([FIXTURES]))
    assert (report.files, report.visits) == (len(REAL_TABLES), 1)
    assert {p.rule for p in report.problems} == {"decimal_comma"}
    assert {(p.table, p.field) for p in report.problems} == set(COMMAS)
    for p in report.problems:
        assert p.file == f"{FIXTURES}/{p.table}.xml", p
    assert report.visits_blocking == 0 and report.visits_conformance == 1


def test_a_bare_summary_alone_has_one_lines_missing_problem(tmp_path: Path) -> None:
    folder = bare_copy(tmp_path / "only", ("XML1",))
    report = validate_paths([folder / "XML1.xml"])
    assert [(p.table, p.rule, p.severity) for p in report.problems] == [
        ("XML1", "lines.missing", "conformance")
    ]
    assert "T_THUOC is 41801.6" in report.problems[0].message
    assert report.visits_conformance == 1


def test_a_broken_bare_file_costs_only_the_visit_it_holds(tmp_path: Path) -> None:
    folder = bare_copy(tmp_path / "batch")
    other = second_visit(folder, break_xml2=True)
    check = FileValidation(next(iter(_jobs(folder))))
    results = {visit.ma_lk: problems for visit, problems in check}
    assert check.file_problems == [] and check.error is None
    assert results[BARE_MA_LK] == []
    broken = [p for p in results[other] if p.rule == "broken"]
    assert [(p.table, p.severity) for p in broken] == [("XML2", "blocking")]
    assert broken[0].file == f"{folder}/{other}_XML2.xml"
    assert "not well-formed" in broken[0].message
    # its summary's lines are in the broken file: no false "lines missing" or totals
    assert {p.rule for p in results[other]} == {"broken"}


def test_an_unreadable_bare_file_naming_no_visit_is_a_problem_of_the_group(
    tmp_path: Path,
) -> None:
    folder = bare_copy(tmp_path / "batch")
    (folder / "XML5.xml").write_bytes(b"<CHITIEU_CHITIET_DIENBIENLAMSANG><DSACH")
    report = validate_paths(sorted(folder.glob("*.xml")))
    assert report.visits == 1 and report.visits_clean == 1
    assert [(p.file, p.rule) for p in report.problems] == [(f"{folder}/XML5.xml", "file")]
    assert report.failed_files and report.files == 5


def _jobs(folder: Path) -> list[object]:
    from lienthong.ingest.xml130.parse import group_inputs

    jobs, _notes = group_inputs(sorted(folder.glob("*.xml")))
    return list(jobs)


def test_grouping_never_mixes_two_folders(tmp_path: Path) -> None:
    """The same visit re-sent in two folders is two exports (no duplicate); a summary in
    one folder and its lines in another are not joined."""
    from lienthong.ingest.xml130.cli_ingest import expand_xml_paths

    bare_copy(tmp_path / "a")
    bare_copy(tmp_path / "b")
    report = validate_paths(expand_xml_paths([tmp_path]))
    assert (report.files, report.visits, report.visits_clean) == (8, 2, 2)
    assert report.problems == []
    bare_copy(tmp_path / "c", ("XML1",))
    bare_copy(tmp_path / "d", ("XML2", "XML3"))
    report = validate_paths(expand_xml_paths([tmp_path / "c", tmp_path / "d"]))
    rules = {(p.file, p.rule) for p in report.problems}
    assert ("XML1.xml", "lines.missing") in rules  # a bare file alone in its folder
    assert (f"{tmp_path / 'd'}/{{XML2.xml,XML3.xml}}", "link") in rules
    assert report.visits == 2 and report.visits_blocking == 1


def test_a_group_over_the_size_limit_is_read_file_by_file_with_a_note(tmp_path: Path) -> None:
    folder = bare_copy(tmp_path / "big")
    files = sorted(folder.glob("*.xml"))
    largest = max(f.stat().st_size for f in files)
    report = validate_paths(files, max_bytes=largest + 1)
    assert len(report.notes) == 1 and "LIENTHONG_XML130_MAX_BYTES" in report.notes[0]
    assert str(folder) in report.notes[0]
    assert report.visits == 4 and report.visits_blocking == 3  # XML2-4 without XML1


def test_envelopes_beside_bare_files_stay_files_of_their_own(tmp_path: Path) -> None:
    folder = bare_copy(tmp_path / "mixed")
    (folder / "envelope.xml").write_bytes(real_world_export())
    jobs = _jobs(folder)
    assert folder / "envelope.xml" in jobs and len(jobs) == 2
    report = validate_paths(sorted(folder.glob("*.xml")))
    assert report.visits == 2 and report.files == 5


def test_bare_groups_are_validated_in_worker_processes_alike(tmp_path: Path) -> None:
    bare_copy(tmp_path / "a")
    second_visit(bare_copy(tmp_path / "b"), break_xml2=True)
    files = sorted(tmp_path.glob("*/*.xml"))
    alone = validate_paths(files)
    pooled = validate_paths(files, workers=2)
    assert (pooled.files, pooled.visits, pooled.visits_blocking) == (10, 3, 1)
    assert sorted(p.as_dict().items() for p in pooled.problems) == sorted(
        p.as_dict().items() for p in alone.problems
    )


def test_cli_validate_json_reads_a_folder_as_one_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["xml130", "validate", "--json", "--workers", "0", str(FIXTURES)]
    )
    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"summary", "groups", "facilities", "problems"}
    assert document["summary"]["visits"] == 1 and document["summary"]["visits_blocking"] == 0
    assert document["summary"]["notes"] == []
    assert {p["rule"] for p in document["problems"]} == {"decimal_comma"}


# -- the check-in table (XML0): a visit that has begun -------------------------------

CHECKIN_FIELDS = (
    "MA_LK", "MA_BN", "HO_TEN", "SO_CCCD", "NGAY_SINH", "GIOI_TINH", "MA_DOITUONG_KCB",
    "NGAY_VAO", "NGAY_VAO_NOI_TRU", "LY_DO_VNT", "MA_LY_DO_VNT", "MA_LOAI_KCB", "MA_CSKCB",
)  # fmt: skip


def checkin_row(full: Visit) -> dict[str, str]:
    """The check-in row a HIS sends at admission for the visit ``full``: the identity and
    admission fields of its XML1 (the first card), and the first service ordered."""
    s = full.summary
    row = {"STT": "1", **{f: s[f] for f in CHECKIN_FIELDS if s.get(f)}}
    for name in ("MA_THE_BHYT", "MA_DKBD", "GT_THE_TU", "GT_THE_DEN"):
        if s.get(name):
            row[name] = s[name].split(";")[0]
    if row.get("NGAY_VAO_NOI_TRU") and not row.get("LY_DO_VNT"):
        row["LY_DO_VNT"] = s.get("LY_DO_VV") or "Điều trị nội trú"
    row.update(MA_DICH_VU="01.0001.0001", TEN_DICH_VU="Khám bệnh", NGAY_YL=s["NGAY_VAO"])
    return row


def checkin_of(full: Visit, **fields: str) -> Visit:
    """The check-in message alone for the visit ``full`` (no XML1, no detail table)."""
    row = {**checkin_row(full), **fields}
    return Visit(full.file, full.ma_lk, STANDARD_130, {"XML0": [row]})


def test_the_check_in_table_is_in_the_dictionary_from_both_workbooks() -> None:
    """Every field of the appendix's check-in sheet is in the dictionary as XML0, citing
    the row of each workbook; the gateway's required column is followed."""
    from lienthong.ingest.xml130.rules import FIELDS

    specs = FIELDS[STANDARD_130]["XML0"]
    assert {"MA_LK", "HO_TEN", "SO_CCCD", "NGAY_VAO", "NGAY_YL", "DU_PHONG"} <= set(specs)
    assert all("Bảng Check-in row" in s.source for s in specs.values())
    required = {n for n, s in specs.items() if s.required}
    assert {"MA_LK", "MA_BN", "HO_TEN", "NGAY_SINH", "NGAY_VAO", "MA_CSKCB"} <= required
    assert not {"SO_CCCD", "MA_THE_BHYT", "LY_DO_VNT", "MA_DICH_VU", "MA_THUOC"} & required
    assert specs["SO_CCCD"].kind == "S"  # appendix: "Đổi kiểu dữ liệu thành chuỗi"
    assert specs["TEN_THUOC"].max_size == 2000  # gateway 2000, appendix 1024
    appendix = need_shared(SHARED / "standards" / "qd4750_appendix.xlsx")
    import openpyxl

    sheet = openpyxl.load_workbook(appendix, read_only=True)["Bang Check-in"]
    names = [r[1] for r in sheet.iter_rows(min_row=3, values_only=True) if r[1]]
    assert len(names) == 26 and list(specs) == names


def test_a_check_in_alone_is_a_visit_that_has_begun(inpatient: Visit, outpatient: Visit) -> None:
    from lienthong.ingest.xml130.rules import is_checkin

    for full in (inpatient, outpatient):
        checkin = checkin_of(full)
        assert is_checkin(checkin) and not is_checkin(full)
        assert validate_visit(checkin) == []  # no "the visit has no XML1"


def test_the_check_in_fixture_is_no_orphan() -> None:
    """The bare check-in file of a HIS: two check-ins, each with conformance problems only
    (MA_DOITUONG_KCB and NGAY_YL left out, no first service), none of them blocking."""
    from lienthong.ingest.xml130.validate import blocking

    fixture = Path(__file__).resolve().parent / "fixtures" / "xml130" / "bare_checkin_xml0.xml"
    for visit in parse(fixture):
        problems = validate_visit(visit)
        assert not blocking(problems), problems
        assert ("XML1", "MA_LK", "link") not in _rules(problems)
        assert _rules(problems) == {
            ("XML0", "MA_DOITUONG_KCB", "required"),
            ("XML0", "NGAY_YL", "required"),
            ("XML0", "MA_DICH_VU", "conditional"),
        }
        assert visit.ma_cskcb == "01012"  # the check-in's own facility code


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"HO_TEN": ""}, ("XML0", "HO_TEN", "required")),
        ({"MA_LK": ""}, ("XML0", "MA_LK", "required")),
        ({"NGAY_SINH": ""}, ("XML0", "NGAY_SINH", "required")),
        ({"NGAY_SINH": "198002300000"}, ("XML0", "NGAY_SINH", "date.format")),
        ({"NGAY_VAO": ""}, ("XML0", "NGAY_VAO", "required")),
        ({"NGAY_VAO": "202513011200"}, ("XML0", "NGAY_VAO", "date.format")),
    ],
)
def test_a_check_in_without_its_identity_is_blocking(
    outpatient: Visit, fields: dict[str, str], expected: tuple[str, str, str]
) -> None:
    from lienthong.ingest.xml130.validate import blocking

    problems = validate_visit(checkin_of(outpatient, **fields))
    found = [p for p in problems if (p.table, p.field, p.rule) == expected]
    assert found and all(p.severity == "blocking" for p in found)
    assert blocking(problems)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"SO_CCCD": "12345"}, ("XML0", "SO_CCCD", "cccd")),
        ({"MA_THE_BHYT": "XX123"}, ("XML0", "MA_THE_BHYT", "bhyt")),
        ({"MA_CSKCB": "1A"}, ("XML0", "MA_CSKCB", "facility")),
        ({"MA_DOITUONG_KCB": ""}, ("XML0", "MA_DOITUONG_KCB", "required")),
        ({"GIOI_TINH": "7"}, ("XML0", "GIOI_TINH", "code")),
        ({"MA_LOAI_KCB": "99"}, ("XML0", "MA_LOAI_KCB", "code")),
        ({"STT": "x"}, ("XML0", "STT", "type.number")),
        ({"MA_DICH_VU": "1" * 51}, ("XML0", "MA_DICH_VU", "max_size")),
        ({"NGAY_YL": "2025"}, ("XML0", "NGAY_YL", "date.format")),
        ({"GT_THE_DEN": "20251301"}, ("XML0", "GT_THE_DEN", "date.format")),
        ({"NGAY_SINH": "209901010000"}, ("XML0", "NGAY_SINH", "date.order")),
        ({"TEN_DICH_VU": ""}, ("XML0", "TEN_DICH_VU", "conditional")),
        ({"MA_DICH_VU": "", "TEN_DICH_VU": ""}, ("XML0", "MA_DICH_VU", "conditional")),
        ({"MA_THUOC": "40.17", "TEN_THUOC": ""}, ("XML0", "TEN_THUOC", "conditional")),
        (
            {"NGAY_VAO_NOI_TRU": "202001010000", "LY_DO_VNT": "Sốt"},
            ("XML0", "NGAY_VAO_NOI_TRU", "date.order"),
        ),
    ],
)
def test_a_check_in_is_checked_like_xml1(
    outpatient: Visit, fields: dict[str, str], expected: tuple[str, str, str]
) -> None:
    """Required, types, sizes, codes, dates, CCCD, card and facility: conformance problems
    of the check-in table, the visit still stored."""
    from lienthong.ingest.xml130.validate import blocking

    problems = validate_visit(checkin_of(outpatient, **fields))
    assert expected in _rules(problems), problems
    assert not blocking(problems), [p for p in problems if p.blocking]


def test_an_admission_without_its_reason_is_reported(inpatient: Visit) -> None:
    row = checkin_row(inpatient)
    row.update(NGAY_VAO_NOI_TRU=row["NGAY_VAO"], LY_DO_VNT="")
    visit = Visit(inpatient.file, inpatient.ma_lk, STANDARD_130, {"XML0": [row]})
    assert _rules(validate_visit(visit)) == {("XML0", "LY_DO_VNT", "conditional")}


def test_detail_tables_without_xml1_stay_orphans_even_with_a_check_in(inpatient: Visit) -> None:
    tables = {"XML0": [checkin_row(inpatient)], "XML2": copy.deepcopy(inpatient.tables["XML2"])}
    problems = validate_visit(Visit(inpatient.file, inpatient.ma_lk, STANDARD_130, tables))
    link = [p for p in problems if (p.table, p.field, p.rule) == ("XML1", "MA_LK", "link")]
    assert link and link[0].blocking


def test_a_full_visits_check_in_table_is_checked_but_never_blocks(inpatient: Visit) -> None:
    """A visit with its XML1 is stored from XML1: a check-in row without a name is a
    conformance problem of XML0, and the clean check-in row adds none."""
    from lienthong.ingest.xml130.validate import blocking

    with_checkin = copy.deepcopy(inpatient)
    with_checkin.tables["XML0"] = [checkin_row(inpatient)]
    assert validate_visit(with_checkin) == validate_visit(inpatient) == []
    with_checkin.tables["XML0"][0]["HO_TEN"] = ""
    problems = validate_visit(with_checkin)
    assert _rules(problems) == {("XML0", "HO_TEN", "required")}
    assert problems[0].severity == "conformance" and not blocking(problems)
    assert problems[0].as_dict()["severity"] == "conformance"
    # the per-facility summary says so too, beside a check-in alone where it blocks
    from lienthong.ingest.cli_xml130 import report_json
    from lienthong.ingest.xml130.validate import ValidationReport

    report = ValidationReport()
    report.add_visit("01012", problems)
    kinds = report_json(report, "test")["facilities"]["01012"]["problems"]
    assert [(k["table"], k["field"], k["severity"]) for k in kinds] == [
        ("XML0", "HO_TEN", "conformance")
    ]
    report.add_visit("01012", validate_visit(checkin_of(inpatient, HO_TEN="")))
    kinds = report_json(report, "test")["facilities"]["01012"]["problems"]
    assert [(k["table"], k["field"], k["severity"], k["visits"]) for k in kinds] == [
        ("XML0", "HO_TEN", "blocking", 2)
    ]


def test_two_check_in_rows_of_one_visit_are_a_duplicate(outpatient: Visit) -> None:
    visit = checkin_of(outpatient)
    visit.tables["XML0"].append(dict(visit.tables["XML0"][0]))
    problems = validate_visit(visit)
    assert ("XML0", "MA_LK", "duplicate") in _rules(problems)
    assert any(p.blocking for p in problems if p.rule == "duplicate")
