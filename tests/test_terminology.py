"""ICD-10: code forms, the Ministry's workbook as a CodeSystem, the shipped Ministry list
and the WHO option, ``CodeSystem/$lookup`` and ``ValueSet/$validate-code``."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.cli import app
from lienthong.fhir.engine import FhirEngine
from lienthong.storage.base import ResourceStore, open_store
from lienthong.terminology import (
    ICD10_SYSTEM,
    Designation,
    LoadedIcd10,
    ShippedIcd10,
    WhoIcd10,
    WorkbookError,
    default_icd10_catalogue,
    icd10_catalogue,
    normalize_icd10,
    read_workbook,
)
from lienthong.terminology.load import load_icd10_workbook
from lienthong.terminology.shipped import SHIPPED_PATH, ShippedListError, encode, read_shipped
from tests.conftest import SHARED, need_shared

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_icd10_list.py"

FHIR = {"Content-Type": "application/fhir+json"}
HEADER = (
    "STT CHƯƠNG", "MÃ CHƯƠNG", "CHAPTER NAME", "TÊN CHƯƠNG", "MÃ NHÓM CHÍNH",
    "MAIN GROUP NAME I", "TÊN NHÓM CHÍNH", "MÃ LOẠI", "TYPE NAME", "TÊN LOẠI",
    "MÃ BỆNH", "MÃ BỆNH KHÔNG DẤU", "DISEASE NAME", "TÊN BỆNH", "GHI CHÚ",
)  # fmt: skip
CHAPTER_I = ("I", "A00-B99", "Certain infectious diseases", "Bệnh nhiễm trùng")


def row(code: str, en: str, vi: str, chapter: tuple[str, ...] = CHAPTER_I) -> tuple[str, ...]:
    plain = code.replace(".", "").rstrip("*†")
    return (*chapter, "A00-A09", "", "", code[:3], "", "", code, plain, en, vi, "")


TINY = [
    row("A00", "Cholera", "Bệnh tả"),
    row("A00.0", "Cholera due to Vibrio cholerae 01, biovar cholerae", "Bệnh tả do Vibrio 01"),
    row("A00.9", "Cholera, unspecified", "Bệnh tả, không đặc hiệu"),
    row("A17†", "Tuberculosis of nervous system", "Lao hệ thần kinh"),
    row("A17", "Tuberculosis of nervous system", "Lao hệ thần kinh"),
    row("A17.0†", "Tuberculous meningitis", "Viêm màng não do lao"),
    row("G01*", "Meningitis in bacterial diseases", "Viêm màng não trong bệnh nhiễm khuẩn"),
    row("M01.00*", "Meningococcal arthritis, multiple sites", "Viêm khớp do não mô cầu"),
]


def tiny_workbook(path: Path, rows: list[tuple[str, ...]] = TINY, sheet: str = "ICD10") -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = sheet
    ws.append(("Phụ lục 1: Danh mục mã bệnh ICD-10",))
    ws.append(("(Ban hành kèm theo Quyết định số 4469/QĐ-BYT)",))
    ws.append(HEADER)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A09.0", "A09.0"),
        ("a090", "A09.0"),
        (" A09 ", "A09"),
        ("A17.0†", "A17.0"),
        ("A17.0+", "A17.0"),
        ("G01*", "G01"),
        ("M01.00*", "M01.00"),
        ("M0100", "M01.00"),
        ("U07.1", "U07.1"),
        ("", None),
        ("A0", None),
        ("09A", None),
        ("A00-B99", None),
        ("XXII", None),
        (None, None),
    ],
)
def test_normalised_forms(raw: str | None, expected: str | None) -> None:
    assert normalize_icd10(raw) == expected


def test_workbook_rows_become_concepts_with_marks_and_parents(tmp_path: Path) -> None:
    concepts = {c.code: c for c in read_workbook(tiny_workbook(tmp_path / "icd.xlsx"))}
    assert list(concepts) == ["A00", "A00.0", "A00.9", "A17", "A17.0", "G01", "M01.00"]
    assert concepts["A17"].marks == {"†"}  # listed with and without the dagger: one code
    assert concepts["G01"].marks == {"*"} and concepts["A00"].marks == set()
    assert concepts["A00.0"].parent == "A00" and concepts["A00"].parent is None
    assert concepts["M01.00"].parent is None  # its category is not in this list
    assert concepts["A00.9"].display_vi == "Bệnh tả, không đặc hiệu"
    assert concepts["A00.9"].display_en == "Cholera, unspecified"
    assert concepts["A00"].chapter == "A00-B99"


def test_workbooks_that_are_not_the_list_say_why(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError, match="no sheet 'ICD10'"):
        read_workbook(tiny_workbook(tmp_path / "a.xlsx", sheet="Sheet1"))
    with pytest.raises(WorkbookError, match="row 5: MÃ BỆNH '1234' is not an ICD-10 code"):
        read_workbook(tiny_workbook(tmp_path / "b.xlsx", [TINY[0], row("1234", "x", "y")]))
    with pytest.raises(WorkbookError, match="lists no codes"):
        read_workbook(tiny_workbook(tmp_path / "c.xlsx", []))
    (tmp_path / "d.xlsx").write_text("not a zip", encoding="utf-8")
    with pytest.raises(WorkbookError, match="not an Excel workbook"):
        read_workbook(tmp_path / "d.xlsx")


def test_loading_twice_makes_a_new_version_not_a_duplicate(
    tmp_path: Path, engine: FhirEngine, store: ResourceStore
) -> None:
    first = load_icd10_workbook(engine, tiny_workbook(tmp_path / "v1.xlsx"), "v1")
    assert first.created and first.version_id == "1" and first.concepts == 7
    catalogue = icd10_catalogue(store)
    assert isinstance(catalogue, LoadedIcd10) and catalogue.version == "v1"
    assert not catalogue.exists("A01")
    newer = [*TINY, row("A01", "Typhoid and paratyphoid fevers", "Bệnh thương hàn")]
    second = load_icd10_workbook(engine, tiny_workbook(tmp_path / "v2.xlsx", newer), "v2")
    assert not second.created and second.res_id == first.res_id and second.version_id == "2"
    assert store.counts() == {"CodeSystem": 1}
    catalogue = icd10_catalogue(store)
    assert catalogue.version == "v2" and catalogue.exists("a01")
    assert catalogue.display("A01", "vi") == "Bệnh thương hàn"
    assert catalogue.display("A01", "en") == "Typhoid and paratyphoid fevers"
    assert catalogue.display("A17.0†") == "Viêm màng não do lao"
    assert catalogue.parent("A00.9") == "A00"
    # the CodeSystem is searchable by the codes it defines
    with store.reader() as session:
        hits = session.search(engine.parse_search("CodeSystem", [("code", "A00.0")]).query)
    assert [h.res_id for h in hits.matches] == [first.res_id]


def test_the_who_classification_answers_when_chosen(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIENTHONG_ICD10_FALLBACK", "who")
    assert isinstance(icd10_catalogue(None), WhoIcd10)
    monkeypatch.delenv("LIENTHONG_ICD10_FALLBACK")
    catalogue = icd10_catalogue(store, fallback="who")
    assert isinstance(catalogue, WhoIcd10)
    assert catalogue.exists("J18.9") and catalogue.exists("j189") and catalogue.exists("E11")
    assert not catalogue.exists("A00.5") and not catalogue.exists("Z99.99")
    assert not catalogue.exists("not a code")
    assert catalogue.display("I10", "en") == "Essential (primary) hypertension"
    assert catalogue.display("I10", "vi") is None  # the WHO names are English only
    assert catalogue.parent("A09.0") == "A09"
    assert not catalogue.exists("A90")  # dengue fever as Vietnamese hospitals code it


def lookup(client: TestClient, **params: str) -> Any:
    return client.get("/fhir/CodeSystem/$lookup", params=params)


def parts(parameters: dict[str, Any], name: str) -> list[Any]:
    return [p for p in parameters["parameter"] if p["name"] == name]


def value(parameters: dict[str, Any], name: str) -> Any:
    found = parts(parameters, name)
    assert len(found) == 1, parameters
    p = found[0]
    return next(v for k, v in p.items() if k.startswith("value"))


@pytest.fixture
def loaded(tmp_path: Path, engine: FhirEngine) -> None:
    load_icd10_workbook(engine, tiny_workbook(tmp_path / "icd.xlsx"), "test-list")


def test_lookup_gives_name_display_and_designations(client: TestClient, loaded: None) -> None:
    r = lookup(client, system=ICD10_SYSTEM, code="a000")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Parameters"
    assert value(body, "name") == "ICD-10" and value(body, "version") == "test-list"
    assert value(body, "display") == "Bệnh tả do Vibrio 01"
    designations = {
        (d["part"][0]["valueCode"], d["part"][1]["valueString"]) for d in parts(body, "designation")
    }
    assert designations == {
        ("en", "Cholera due to Vibrio cholerae 01, biovar cholerae"),
        ("vi", "Bệnh tả do Vibrio 01"),
    }
    english = lookup(client, system=ICD10_SYSTEM, code="A00.0", displayLanguage="en").json()
    assert value(english, "display") == "Cholera due to Vibrio cholerae 01, biovar cholerae"
    # POST with a Parameters body and a coding
    r = client.post(
        "/fhir/CodeSystem/$lookup",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "coding", "valueCoding": {"system": ICD10_SYSTEM, "code": "G01*"}},
                {"name": "displayLanguage", "valueCode": "en"},
            ],
        },
        headers=FHIR,
    )
    assert r.status_code == 200, r.text
    assert value(r.json(), "display") == "Meningitis in bacterial diseases"


def test_lookup_errors_name_the_parameter(client: TestClient, loaded: None) -> None:
    r = lookup(client, system=ICD10_SYSTEM, code="A01")
    assert r.status_code == 404 and "'A01' is not in" in r.json()["issue"][0]["diagnostics"]
    r = lookup(client, system="http://snomed.info/sct", code="22298006")
    assert r.status_code == 404 and "no code system" in r.text
    r = lookup(client, system=ICD10_SYSTEM)
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["code"]
    r = lookup(client, code="A00")
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["system"]


def test_lookup_without_a_loaded_list_answers_from_the_shipped_list(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = lookup(client, system=ICD10_SYSTEM, code="a970")
    assert r.status_code == 200, r.text
    body = r.json()
    assert value(body, "display") == "Sốt xuất huyết không có dấu hiệu cảnh báo"
    assert value(body, "version") == "QĐ 4469/QĐ-BYT"
    english = lookup(client, system=ICD10_SYSTEM, code="A97.0", displayLanguage="en").json()
    assert value(english, "display") == "Dengue without warning signs"
    parent = [p["part"][1]["valueCode"] for p in parts(body, "property")]
    assert parent == ["A97.0", "A97"]
    assert lookup(client, system=ICD10_SYSTEM, code="A90").status_code == 200
    assert lookup(client, system=ICD10_SYSTEM, code="A91").status_code == 404
    assert lookup(client, system=ICD10_SYSTEM, code="A00.5").status_code == 404
    ok = validate(client, url="http://hl7.org/fhir/ValueSet/icd-10", code="C84.2")
    assert value(ok, "result") is True and value(ok, "display") == "U lympho vùng T"
    # the WHO edition, when chosen, knows no A90 but has English names of its own
    monkeypatch.setenv("LIENTHONG_ICD10_FALLBACK", "who")
    assert lookup(client, system=ICD10_SYSTEM, code="A90").status_code == 404
    r = lookup(client, system=ICD10_SYSTEM, code="I10", displayLanguage="en")
    assert r.status_code == 200, r.text
    assert value(r.json(), "display") == "Essential (primary) hypertension"


def validate(client: TestClient, **params: str) -> dict[str, Any]:
    r = client.get("/fhir/ValueSet/$validate-code", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_validate_code_against_the_implicit_value_set(client: TestClient, loaded: None) -> None:
    vs = "http://hl7.org/fhir/ValueSet/icd-10"
    ok = validate(client, url=vs, code="A00.9")
    assert value(ok, "result") is True and value(ok, "display") == "Bệnh tả, không đặc hiệu"
    ok = validate(client, system=ICD10_SYSTEM, code="A009", display="cholera,  UNSPECIFIED")
    assert value(ok, "result") is True  # an English display is a display too
    wrong = validate(client, url=vs, system=ICD10_SYSTEM, code="A00.9", display="Bệnh sởi")
    assert value(wrong, "result") is False and "expected 'Bệnh tả" in value(wrong, "message")
    unknown = validate(client, url=vs, code="A01")
    assert value(unknown, "result") is False and "'A01' is not in" in value(unknown, "message")
    r = client.post(
        "/fhir/ValueSet/$validate-code",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "url", "valueUri": vs},
                {
                    "name": "codeableConcept",
                    "valueCodeableConcept": {
                        "coding": [
                            {"system": "http://snomed.info/sct", "code": "63650001"},
                            {"system": ICD10_SYSTEM, "code": "A00"},
                        ]
                    },
                },
            ],
        },
        headers=FHIR,
    )
    assert r.status_code == 200 and value(r.json(), "result") is True


def test_validate_code_against_a_stored_value_set(client: TestClient, loaded: None) -> None:
    small = {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/cholera",
        "status": "active",
        "compose": {"include": [{"system": ICD10_SYSTEM, "concept": [{"code": "A00.0"}]}]},
    }
    assert client.post("/fhir/ValueSet", json=small, headers=FHIR).status_code == 201
    assert value(validate(client, url=small["url"], system=ICD10_SYSTEM, code="A00.0"), "result")
    outside = validate(client, url=small["url"], system=ICD10_SYSTEM, code="A00.9")
    assert value(outside, "result") is False and "not in the value set" in value(outside, "message")
    mixed = {
        **small,
        "url": "http://example.org/vs/mixed",
        "compose": {"include": [{"system": "http://snomed.info/sct"}, {"system": ICD10_SYSTEM}]},
    }
    assert client.post("/fhir/ValueSet", json=mixed, headers=FHIR).status_code == 201
    r = client.get(
        "/fhir/ValueSet/$validate-code",
        params={"url": mixed["url"], "system": ICD10_SYSTEM, "code": "A00"},
    )
    assert r.status_code == 422 and "only ICD-10" in r.text
    r = client.get("/fhir/ValueSet/$validate-code", params={"url": "http://x/none", "code": "A00"})
    assert r.status_code == 404
    r = client.get("/fhir/ValueSet/$validate-code", params={"code": "A00"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["url"]


def test_capability_statement_lists_the_terminology_operations(client: TestClient) -> None:
    resources = {r["type"]: r for r in client.get("/fhir/metadata").json()["rest"][0]["resource"]}
    assert [o["name"] for o in resources["CodeSystem"]["operation"]] == ["lookup"]
    assert [o["name"] for o in resources["ValueSet"]["operation"]] == ["validate-code"]
    # each listed operation is served
    assert lookup(client, system=ICD10_SYSTEM, code="I10").status_code == 200


def test_cli_load_reports_counts_replaces_and_is_audited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    book = tiny_workbook(tmp_path / "icd.xlsx")
    runner = CliRunner()
    result = runner.invoke(app, ["terminology", "load", str(book), "--database", url])
    assert result.exit_code == 0, result.stderr
    assert "ICD-10 loaded: 7 codes" in result.stdout and "version 1" in result.stdout
    result = runner.invoke(app, ["terminology", "load", str(book), "--database", url])
    assert result.exit_code == 0 and "unchanged" in result.stdout  # the same list again
    assert "version 1" in result.stdout
    again = ["terminology", "load", str(book), "--database", url, "--version", "2026"]
    result = runner.invoke(app, again)
    assert result.exit_code == 0 and "replaced (new version)" in result.stdout
    assert "version 2" in result.stdout
    bad = tiny_workbook(tmp_path / "bad.xlsx", sheet="Other")
    result = runner.invoke(app, ["terminology", "load", str(bad), "--database", url])
    assert result.exit_code == 1 and "no sheet 'ICD10'" in result.stderr
    result = runner.invoke(app, ["terminology", "load", str(tmp_path / "nope.xlsx"), "-d", url])
    assert result.exit_code == 2 and "no such file" in result.stderr
    store = open_store(url)
    try:
        assert store.counts() == {"CodeSystem": 1}
    finally:
        store.close()
    log = AuditLog(url)
    try:
        records, total = log.search(count=10)
    finally:
        log.close()
    # three loads (new, unchanged, replaced) and the refused one
    assert total == 4 and {r.entry.action for r in records} == {"terminology-load"}
    assert sorted(r.entry.outcome for r in records) == ["error", "success", "success", "success"]


def test_the_ministry_workbook(tmp_path: Path) -> None:
    book = need_shared(SHARED / "standards" / "icd10_qd4469.xlsx")
    concepts = read_workbook(book)
    assert len(concepts) > 12_000
    by_code = {c.code: c for c in concepts}
    assert len(by_code) == len(concepts)  # marked duplicates are folded into one code
    assert "*" in by_code["M36.2"].marks and "†" in by_code["A17"].marks
    assert all(c.display_vi and c.display_en for c in concepts)
    store = open_store(f"sqlite:///{tmp_path / 'icd.db'}")
    try:
        result = load_icd10_workbook(FhirEngine(store), book)
        assert result.concepts == len(concepts)
        catalogue = icd10_catalogue(store)
        assert isinstance(catalogue, LoadedIcd10) and len(catalogue) == len(concepts)
        for c in concepts[::500]:
            assert catalogue.exists(c.code) and catalogue.exists(c.code.replace(".", ""))
            assert catalogue.display(c.code, "vi") == c.display_vi
            assert catalogue.display(c.code, "en") == c.display_en
        # most of the Ministry's codes are WHO codes too; the WHO fallback knows them
        who = WhoIcd10()
        known = sum(who.exists(c.code) for c in concepts)
        assert known > 0.9 * len(concepts)
    finally:
        store.close()


def test_a_fresh_store_accepts_the_codes_vietnamese_facilities_use(store: ResourceStore) -> None:
    catalogue = icd10_catalogue(store)
    assert isinstance(catalogue, ShippedIcd10) and catalogue is default_icd10_catalogue()
    assert catalogue.version == "QĐ 4469/QĐ-BYT" and len(catalogue) > 12_000
    for code in ("A90", "a90", "A97.0", "A970", "C84.2", "U07.1", "a090", "A09.0†", "A09.0*"):
        assert catalogue.exists(code), code
    # the Ministry's list has no A91 (and the WHO's none of Zika A92.5 in the Ministry's)
    assert not catalogue.exists("A91") and not catalogue.exists("A92.5")
    assert not catalogue.exists("not a code") and not catalogue.exists("A00.5")
    assert catalogue.display("A90") == "Sốt Dengue (Dengue cổ điển)"
    assert catalogue.display("A90", "en") == "Dengue fever (classical Dengue)"
    assert catalogue.display("A90", "fr") is None
    assert catalogue.designations("A970") == [
        Designation("vi", "Sốt xuất huyết không có dấu hiệu cảnh báo"),
        Designation("en", "Dengue without warning signs"),
    ]
    assert catalogue.parent("A97.0") == "A97" and catalogue.parent("A97") is None
    assert catalogue.chapter("C84.2") == "C00-D48" and catalogue.group("A00.0") == "A00-A09"
    assert catalogue.marks("A17") == "†" and catalogue.marks("A00") == ""
    # worker processes get the shared list back, not a copy of its rows
    assert pickle.loads(pickle.dumps(catalogue)) is default_icd10_catalogue()


def test_the_fallback_setting_is_checked(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIENTHONG_ICD10_FALLBACK", "WHO ")
    assert isinstance(icd10_catalogue(store), WhoIcd10)
    assert isinstance(icd10_catalogue(store, fallback="ministry"), ShippedIcd10)
    monkeypatch.setenv("LIENTHONG_ICD10_FALLBACK", "icd11")
    with pytest.raises(ValueError, match="LIENTHONG_ICD10_FALLBACK: 'icd11' is not one of"):
        icd10_catalogue(store)
    with pytest.raises(ValueError, match="fallback: 'x' is not one of ministry, who"):
        icd10_catalogue(None, fallback="x")


def test_a_loaded_list_wins_over_the_shipped_one(
    tmp_path: Path, engine: FhirEngine, store: ResourceStore
) -> None:
    assert icd10_catalogue(store).exists("A90")
    newer = [*TINY, row("A91", "Dengue haemorrhagic fever", "Sốt xuất huyết Dengue")]
    load_icd10_workbook(engine, tiny_workbook(tmp_path / "newer.xlsx", newer), "2026")
    catalogue = icd10_catalogue(store, fallback="ministry")
    assert isinstance(catalogue, LoadedIcd10) and catalogue.version == "2026"
    assert catalogue.exists("A91") and not catalogue.exists("A90")


def test_a_broken_shipped_file_says_why(tmp_path: Path) -> None:
    (tmp_path / "a.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ShippedListError, match="cannot be read"):
        read_shipped(tmp_path / "a.json.gz")
    (tmp_path / "b.json.gz").write_bytes(encode({"format": 99}))
    with pytest.raises(ShippedListError, match="not an ICD-10 list of format 1"):
        ShippedIcd10(tmp_path / "b.json.gz")


def test_the_shipped_list_is_what_the_script_derives_from_the_workbook(tmp_path: Path) -> None:
    book = need_shared(SHARED / "standards" / "icd10_qd4469.xlsx")
    spec = importlib.util.spec_from_file_location("build_icd10_list", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "icd10.json.gz"
    assert script.main(["build_icd10_list.py", str(book), str(out)]) == 0
    derived = read_shipped(out)
    shipped = read_shipped(SHIPPED_PATH)
    assert derived["about"] == shipped["about"]
    assert derived == shipped
    # the build is reproducible (bytes compared within one zlib; across zlib builds the
    # content above is what must agree)
    assert encode(derived) == out.read_bytes()
    about = shipped["about"]
    assert "4469/QĐ-BYT" in about["decision"] and about["workbook"] == book.name
    assert about["built_by"] == "scripts/build_icd10_list.py"
    assert SHIPPED_PATH.stat().st_size < 1_000_000
    # the catalogue answers what the workbook's rows say (derive() took them in file order)
    catalogue = ShippedIcd10(out)
    rows = derived["codes"]
    assert len(rows) == about["codes"] > 12_000 and catalogue.codes() == [r[0] for r in rows]
    for code, vi, en, parent, chapter, group, marks in rows[::250]:
        assert catalogue.display(code) == vi and catalogue.display(code, "en") == en
        assert catalogue.parent(code) == parent and catalogue.chapter(code) == chapter
        assert catalogue.group(code) == group and catalogue.marks(code) == (marks or "")
