"""XML 130 to FHIR on visits shaped like real exports: imaging and functional-test results,
discharge-diagnosis strings listing several diagnoses, several insurance cards, invisible
and control characters in text."""

from __future__ import annotations

import unicodedata
from datetime import date
from typing import Any

import pytest

from lienthong.fhir.validate import validate_resource
from lienthong.ingest.xml130 import Visit, parse
from lienthong.ingest.xml130.to_fhir import (
    DIAGNOSTIC_SERVICE_SECTION,
    INITIAL_REGISTRATION,
    INSURANCE_NUMBER,
    OBSERVATION_CATEGORY,
    PROVIDER_CODE,
    fhir_text,
    result_kind,
    visit_bundle,
)
from lienthong.synth.xml130 import envelope_xml
from lienthong.terminology import ICD10_SYSTEM, default_icd10_catalogue

FACILITY = "01001"


def summary(**fields: str) -> dict[str, str]:
    row = {
        "MA_LK": "010012503150000001",
        "STT": "1",
        "MA_BN": "BN000123",
        "HO_TEN": "Nguyễn Thị Hoa",
        "SO_CCCD": "001185012345",
        "NGAY_SINH": "198503120000",
        "GIOI_TINH": "2",
        "MA_QUOCTICH": "000",
        "MA_DANTOC": "01",
        "DIA_CHI": "Số 12 Phố Huế, Phường Hai Bà Trưng, Thành phố Hà Nội",
        "MATINH_CU_TRU": "01",
        "MAHUYEN_CU_TRU": "000",
        "MAXA_CU_TRU": "00256",
        "MA_THE_BHYT": "DN4010123456789",
        "MA_DKBD": "01001",
        "GT_THE_TU": "20250101",
        "GT_THE_DEN": "20251231",
        "LY_DO_VV": "Sốt cao, đau bụng",
        "CHAN_DOAN_VAO": "Sốt xuất huyết Dengue",
        "CHAN_DOAN_RV": "Sốt xuất huyết Dengue có dấu hiệu cảnh báo",
        "MA_BENH_CHINH": "A97.1",
        "MA_BENH_KT": "",
        "MA_DOITUONG_KCB": "1",
        "NGAY_VAO": "202503150830",
        "NGAY_RA": "202503201000",
        "SO_NGAY_DTRI": "5",
        "KET_QUA_DTRI": "1",
        "MA_LOAI_RV": "1",
        "T_TONGCHI_BV": "1850000",
        "MA_LOAI_KCB": "03",
        "MA_KHOA": "K03",
        "MA_CSKCB": FACILITY,
    }
    row.update(fields)
    return row


def service(code: str, name: str, group: str, n: int = 1) -> dict[str, str]:
    return {
        "MA_LK": "010012503150000001",
        "STT": str(n),
        "MA_DICH_VU": code,
        "MA_VAT_TU": "",
        "MA_NHOM": group,
        "TEN_DICH_VU": name,
        "DON_VI_TINH": "Lần",
        "SO_LUONG": "1",
        "DON_GIA_BV": "150000",
        "THANH_TIEN_BV": "150000",
        "MA_BAC_SI": "01001-BS010",
        "NGAY_YL": "202503151000",
        "NGAY_TH_YL": "202503151015",
        "NGAY_KQ": "202503151100",
    }


def result(code: str, name: str, value: str = "", **fields: str) -> dict[str, str]:
    return {
        "MA_LK": "010012503150000001",
        "STT": "1",
        "MA_DICH_VU": code,
        "MA_CHI_SO": fields.pop("MA_CHI_SO", ""),
        "TEN_CHI_SO": name,
        "GIA_TRI": value,
        "DON_VI_DO": fields.pop("DON_VI_DO", ""),
        "NGAY_KQ": "202503151100",
        "MA_BS_DOC_KQ": "01001-BS020",
        **fields,
    }


def visit(xml1: dict[str, str] | None = None, **tables: list[dict[str, str]]) -> Visit:
    return Visit(
        file="export.xml",
        ma_lk="010012503150000001",
        standard="130",
        tables={"XML1": [xml1 or summary()], **tables},
        envelope={"MACSKCB": FACILITY},
    )


def bundle_of(v: Visit) -> dict[str, Any]:
    """The visit's bundle, each resource checked with the FHIR models as ingest does."""
    bundle = visit_bundle(v, default_icd10_catalogue())
    for entry in bundle["entry"]:
        validate_resource(entry["resource"])
    return bundle


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def observation_kinds(bundle: dict[str, Any]) -> dict[str, str]:
    out = {}
    for obs in resources(bundle, "Observation"):
        (category,) = obs["category"]
        (coding,) = category["coding"]
        assert coding["system"] == OBSERVATION_CATEGORY
        if coding["code"] != "vital-signs":
            out[obs["code"]["text"]] = coding["code"]
    return out


def report_sections(bundle: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for report in resources(bundle, "DiagnosticReport"):
        codes = []
        for category in report["category"]:
            (coding,) = category["coding"]
            assert coding["system"] == DIAGNOSTIC_SERVICE_SECTION
            codes.append(coding["code"])
        out[report["code"]["coding"][0]["code"]] = codes
    return out


ULTRASOUND = "18.0015.0001"
CHEST_XRAY = "18.0071.0028"
ECG = "02.0085.1778"
GLUCOSE = "23.0075.1494"
BONE_DENSITY = "18.0360.0041"


def test_imaging_and_functional_tests_take_their_category_from_the_xml3_group() -> None:
    xml3 = [
        service(ULTRASOUND, "Siêu âm ổ bụng (gan mật, tụy, lách, thận, bàng quang)", "2", 1),
        service(CHEST_XRAY, "Chụp X-quang ngực thẳng", "2", 2),
        service(ECG, "Điện tim thường", "3", 3),
        service(GLUCOSE, "Định lượng Glucose [Máu]", "1", 4),
        # named without any imaging word: the group alone says what it is
        service(BONE_DENSITY, "Đo mật độ xương 2 vị trí", "2", 5),
    ]
    xml4 = [
        result(
            ULTRASOUND,
            "Siêu âm ổ bụng",
            MO_TA="Gan không to, nhu mô đều. Túi mật không sỏi. Lách kích thước bình thường.",
            KET_LUAN="Hình ảnh siêu âm ổ bụng trong giới hạn bình thường",
        ),
        result(CHEST_XRAY, "Chụp X-quang ngực thẳng", KET_LUAN="Tim phổi bình thường"),
        result(ECG, "Điện tim thường", KET_LUAN="Nhịp xoang 78 ck/ph"),
        result(GLUCOSE, "Glucose", "5.6", MA_CHI_SO="2345-7", DON_VI_DO="mmol/L"),
        result(BONE_DENSITY, "Kết quả đo", "-1.2", KET_LUAN="Giảm mật độ xương"),
    ]
    bundle = bundle_of(visit(XML3=xml3, XML4=xml4))
    assert observation_kinds(bundle) == {
        "Siêu âm ổ bụng": "imaging",
        "Chụp X-quang ngực thẳng": "imaging",
        "Điện tim thường": "procedure",
        "Glucose": "laboratory",
        "Kết quả đo": "imaging",
    }
    assert report_sections(bundle) == {
        ULTRASOUND: ["RAD", "RUS"],
        CHEST_XRAY: ["RAD", "RX"],
        ECG: ["EC"],
        GLUCOSE: ["LAB"],
        BONE_DENSITY: ["RAD"],
    }
    reports = {r["code"]["coding"][0]["code"]: r for r in resources(bundle, "DiagnosticReport")}
    ultrasound = reports[ULTRASOUND]
    assert ultrasound["code"]["text"].startswith("Siêu âm ổ bụng")
    assert ultrasound["conclusion"] == "Hình ảnh siêu âm ổ bụng trong giới hạn bình thường"
    # each report points at the service request of its XML3 line
    requests = {r["code"]["coding"][0]["code"]: r for r in resources(bundle, "ServiceRequest")}
    assert set(requests) == set(reports)
    by_url = {e["resource"].get("id"): e["fullUrl"] for e in bundle["entry"]}
    assert ultrasound["basedOn"] == [{"reference": by_url[requests[ULTRASOUND]["id"]]}]


def test_without_a_group_the_service_name_or_code_decides() -> None:
    xml3 = [service("XQ.NGUC", "Chụp X-quang ngực thẳng", "", 1)]  # a line without its group
    xml4 = [
        result("XQ.NGUC", "Kết luận", KET_LUAN="Không thấy tổn thương nhu mô phổi"),
        result("SA.OB", "Siêu âm ổ bụng tổng quát", KET_LUAN="Sỏi túi mật"),
        result("NS.DD", "Nội soi thực quản - dạ dày - tá tràng", KET_LUAN="Viêm hang vị"),
        result("CT.SN", "Chụp cắt lớp vi tính sọ não không tiêm thuốc cản quang"),
        result("MRI.CS", "Chụp cộng hưởng từ cột sống thắt lưng"),
        result(ULTRASOUND, "Mô tả"),  # the code's chapter (XVIII điện quang) only
        result(GLUCOSE, "Glucose", "7.1", MA_CHI_SO="2345-7", DON_VI_DO="mmol/L"),
    ]
    bundle = bundle_of(visit(XML3=xml3, XML4=xml4))
    assert observation_kinds(bundle) == {
        "Kết luận": "imaging",
        "Siêu âm ổ bụng tổng quát": "imaging",
        "Nội soi thực quản - dạ dày - tá tràng": "procedure",
        "Chụp cắt lớp vi tính sọ não không tiêm thuốc cản quang": "imaging",
        "Chụp cộng hưởng từ cột sống thắt lưng": "imaging",
        "Mô tả": "imaging",
        "Glucose": "laboratory",
    }
    assert report_sections(bundle) == {
        "XQ.NGUC": ["RAD", "RX"],
        "SA.OB": ["RAD", "RUS"],
        "NS.DD": ["OTH"],
        "CT.SN": ["RAD", "CT"],
        "MRI.CS": ["RAD", "NMR"],
        ULTRASOUND: ["RAD"],
        GLUCOSE: ["LAB"],
    }


@pytest.mark.parametrize(
    ("group", "code", "name", "kind"),
    [
        ("02", "x", "Định lượng Glucose", "imaging"),  # the group wins over the name
        ("1", "x", "Siêu âm ổ bụng", "laboratory"),
        ("3", "x", "", "procedure"),
        ("", "x", "Ghi điện tâm đồ", "procedure"),
        ("", "x", "XQUANG CỘT SỐNG", "imaging"),
        ("", "21.0014.1778", "", "procedure"),
        ("", "x", "Định lượng CRP", "laboratory"),
        ("", "x", "Tế bào CTM", "laboratory"),  # CT only as a word
        ("13", "x", "Khám Nội", "laboratory"),
    ],
)
def test_result_kind(group: str, code: str, name: str, kind: str) -> None:
    assert result_kind(group, code, name) == kind


def test_each_diagnosis_is_named_by_its_own_part_of_the_discharge_diagnosis() -> None:
    full = (
        "Sốt xuất huyết Dengue có dấu hiệu cảnh báo; Tăng huyết áp vô căn; "
        "Đái tháo đường type 2 chưa biến chứng"
    )
    xml1 = summary(CHAN_DOAN_RV=full, MA_BENH_CHINH="A97.1", MA_BENH_KT="E11.9;I10")
    bundle = bundle_of(visit(xml1))
    conditions = {c["code"]["coding"][0]["code"]: c for c in resources(bundle, "Condition")}
    assert {k: c["code"]["text"] for k, c in conditions.items()} == {
        "A97.1": "Sốt xuất huyết Dengue có dấu hiệu cảnh báo",
        "E11.9": "Đái tháo đường type 2 chưa biến chứng",
        "I10": "Tăng huyết áp vô căn",
    }
    icd = default_icd10_catalogue()
    for code, condition in conditions.items():
        (coding,) = condition["code"]["coding"]
        assert coding == {"system": ICD10_SYSTEM, "code": code, "display": icd.display(code)}
    # the whole string stays on the main diagnosis
    assert conditions["A97.1"]["note"] == [{"text": f"Chẩn đoán ra viện: {full}"}]
    assert "note" not in conditions["I10"]


def test_diagnosis_parts_with_codes_and_without_a_match() -> None:
    coded = "(I10) Tăng huyết áp; K21.9 - Trào ngược dạ dày thực quản; E78.5: Rối loạn mỡ máu"
    xml1 = summary(CHAN_DOAN_RV=coded, MA_BENH_CHINH="K21.9", MA_BENH_KT="I10; e785")
    texts = {
        c["code"]["coding"][0]["code"]: c["code"]["text"]
        for c in resources(bundle_of(visit(xml1)), "Condition")
    }
    assert texts == {
        "K21.9": "Trào ngược dạ dày thực quản",
        "I10": "Tăng huyết áp",
        "E78.5": "Rối loạn mỡ máu",
    }
    # no part names the main diagnosis: the catalogue's name, never the whole string
    xml1 = summary(
        CHAN_DOAN_RV="Tăng huyết áp; Rối loạn mỡ máu", MA_BENH_CHINH="J18.9", MA_BENH_KT="I10"
    )
    conditions = resources(bundle_of(visit(xml1)), "Condition")
    main = next(c for c in conditions if c["code"]["coding"][0]["code"] == "J18.9")
    assert main["code"]["text"] == "Viêm phổi, không đặc hiệu"
    assert main["note"] == [{"text": "Chẩn đoán ra viện: Tăng huyết áp; Rối loạn mỡ máu"}]
    # one diagnosis written freely is the main diagnosis' own name
    xml1 = summary(CHAN_DOAN_RV="Viêm phổi thùy dưới phải", MA_BENH_CHINH="J18.9")
    (main,) = resources(bundle_of(visit(xml1)), "Condition")
    assert main["code"]["text"] == "Viêm phổi thùy dưới phải" and "note" not in main


def test_every_insurance_card_goes_on_the_patient_and_the_claim() -> None:
    xml1 = summary(
        MA_THE_BHYT="DN4010123456789;HT3010198765432",
        MA_DKBD="01001;01002",
        GT_THE_TU="20250101;20250316",
        GT_THE_DEN="20250315;20251231",
    )
    bundle = bundle_of(visit(xml1))
    (patient,) = resources(bundle, "Patient")
    cards = [i for i in patient["identifier"] if i["system"] == INSURANCE_NUMBER]
    assert [(c["value"], c["period"]) for c in cards] == [
        ("DN4010123456789", {"start": "2025-01-01", "end": "2025-03-15"}),
        ("HT3010198765432", {"start": "2025-03-16", "end": "2025-12-31"}),
    ]
    assert [c["extension"] for c in cards] == [
        [
            {
                "url": INITIAL_REGISTRATION,
                "valueIdentifier": {"system": PROVIDER_CODE, "value": place},
            }
        ]
        for place in ("01001", "01002")
    ]
    (claim,) = resources(bundle, "Claim")
    assert [(i["sequence"], i["focal"]) for i in claim["insurance"]] == [(1, True), (2, False)]
    assert [i["coverage"]["identifier"] for i in claim["insurance"]] == cards
    # no card: one insurance saying so
    (claim,) = resources(bundle_of(visit(summary(MA_THE_BHYT="", MA_DKBD=""))), "Claim")
    assert claim["insurance"] == [
        {"sequence": 1, "focal": True, "coverage": {"display": "Không có thẻ BHYT"}}
    ]


FORBIDDEN = {chr(c) for c in range(0x20) if chr(c) not in "\t\n"} | {
    "\x7f", "\x85", "\x9c", "\u00ad", "\u200b", "\u200d", "\u2028", "\u202e", "\u2060", "\ufeff",
}  # fmt: skip


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_invisible_and_control_characters_never_reach_fhir() -> None:
    decomposed = unicodedata.normalize("NFD", "Lê Thị Hồng")
    xml1 = summary(
        HO_TEN="\ufeffNguyễn Thị\x07 Hoa\ufeff",
        DIA_CHI="Số 12\u200b Phố Huế,\u00a0Hai Bà Trưng\x1f",
        CHAN_DOAN_RV="Sốt xuất huyết Dengue\u200d có dấu hiệu cảnh báo\x0b",
        LY_DO_VV=f"Sốt\u2028đau bụng (người nhà: {decomposed})",
    )
    xml2 = [
        {
            "MA_LK": "010012503150000001",
            "STT": "1",
            "MA_THUOC": "40.17",
            "TEN_THUOC": "Paracetamol\u00ad 500mg\ufeff",
            "DON_VI_TINH": "Viên",
            "HAM_LUONG": "500mg\x00",
            "LIEU_DUNG": "1 viên/lần\r\nx 3 lần/ngày",
            "SO_LUONG": "10",
            "DON_GIA": "500",
            "THANH_TIEN_BV": "5000",
            "NGAY_YL": "202503151000",
        }
    ]
    xml4 = [
        result(ULTRASOUND, "Siêu âm ổ bụng\u202e", MO_TA="Gan:\tbình thường\r\nLách: bình thường")
    ]
    bundle = bundle_of(visit(xml1, XML2=xml2, XML4=xml4))
    every = strings(bundle)
    assert not [s for s in every if FORBIDDEN & set(s)]
    assert all(unicodedata.is_normalized("NFC", s) for s in every)
    (patient,) = resources(bundle, "Patient")
    assert patient["name"][0]["text"] == "Nguyễn Thị Hoa"
    assert patient["name"][0]["family"] == "Nguyễn" and patient["name"][0]["given"] == [
        "Thị",
        "Hoa",
    ]
    assert patient["address"][0]["text"] == "Số 12 Phố Huế,\u00a0Hai Bà Trưng"
    (condition,) = resources(bundle, "Condition")
    assert condition["code"]["text"] == "Sốt xuất huyết Dengue có dấu hiệu cảnh báo"
    (encounter,) = resources(bundle, "Encounter")
    assert encounter["reasonCode"] == [{"text": "Sốt\nđau bụng (người nhà: Lê Thị Hồng)"}]
    (drug,) = resources(bundle, "MedicationRequest")
    assert drug["medicationCodeableConcept"]["text"] == "Paracetamol 500mg"
    assert drug["dosageInstruction"][0]["text"] == "1 viên/lần\nx 3 lần/ngày"
    observation = next(o for o in resources(bundle, "Observation") if "note" in o)
    assert observation["note"] == [{"text": "Gan:\tbình thường\nLách: bình thường"}]


def test_characters_that_survive_xml_parsing_are_removed_too() -> None:
    # XML 1.0 admits C1 controls, zero-width and direction characters in text
    row = summary(HO_TEN="Trần Văn Bình\x9c\u200b", DIA_CHI="\u2060Thôn 3, Xã Tân Lập")
    data = envelope_xml(FACILITY, date(2025, 3, 20), [{"XML1": [row]}])
    (parsed,) = parse(data, name="export.xml")
    assert parsed.summary["HO_TEN"] != "Trần Văn Bình"  # the parser keeps them
    (patient,) = resources(bundle_of(parsed), "Patient")
    assert patient["name"][0]["text"] == "Trần Văn Bình"
    assert patient["address"][0]["text"] == "Thôn 3, Xã Tân Lập"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\ufeffA\u200bB\u200c\u200dC\u2060", "ABC"),
        ("a\x00b\x08c\x7fd\x9fe", "abcde"),
        ("one\r\ntwo\rthree\u2028four", "one\ntwo\nthree\nfour"),
        ("keep\ttab", "keep\ttab"),
        ("  trimmed \ufeff", "trimmed"),
        (unicodedata.normalize("NFD", "Đặng Thị Thủy"), "Đặng Thị Thủy"),
        ("", ""),
        (None, ""),
    ],
)
def test_fhir_text(raw: str | None, clean: str) -> None:
    assert fhir_text(raw) == clean


def test_a_legacy_4210_visit_gets_the_same_treatment() -> None:
    legacy = {
        "MA_LK": "LK4210-1",
        "MA_BN": "BN77",
        "HO_TEN": "Phạm Văn Nam\ufeff",
        "NGAY_SINH": "19700101",
        "GIOI_TINH": "1",
        "DIA_CHI": "Xã Yên Sở, Huyện Hoài Đức, Hà Nội",
        "MA_THE": "HT2010112345678;HT2010112345678",
        "MA_DKBD": "01002;01003",
        "GT_THE_TU": "20180101;20190101",
        "GT_THE_DEN": "20181231;20191231",
        "MA_BENH": "E11.9",
        "MA_BENHKHAC": "I10",
        "TEN_BENH": "Tăng huyết áp; Đái tháo đường type 2",
        "NGAY_VAO": "201906011000",
        "NGAY_RA": "201906011130",
        "KET_QUA_DTRI": "1",
        "TINH_TRANG_RV": "1",
        "MA_LOAI_KCB": "1",
        "T_TONGCHI": "90000",
        "MA_CSKCB": FACILITY,
    }
    v = Visit("legacy.xml", "LK4210-1", "4210", {"XML1": [legacy]}, {"MACSKCB": FACILITY})
    bundle = bundle_of(v)
    (patient,) = resources(bundle, "Patient")
    assert patient["name"][0]["text"] == "Phạm Văn Nam"
    cards = [i for i in patient["identifier"] if i["system"] == INSURANCE_NUMBER]
    assert [(c["value"], c["period"]["start"]) for c in cards] == [
        ("HT2010112345678", "2018-01-01"),
        ("HT2010112345678", "2019-01-01"),
    ]
    (claim,) = resources(bundle, "Claim")
    assert [i["focal"] for i in claim["insurance"]] == [True, False]
    texts = {
        c["code"]["coding"][0]["code"]: c["code"]["text"] for c in resources(bundle, "Condition")
    }
    assert texts == {"E11.9": "Đái tháo đường type 2", "I10": "Tăng huyết áp"}


# -- the check-in message (XML0) ----------------------------------------------------------


def checkin(**fields: str) -> Visit:
    """The check-in a HIS sends at admission for the visit of :func:`summary`: a bare
    check-in table, no envelope (the facility is the row's MA_CSKCB)."""
    s = summary()
    row = {
        name: s[name]
        for name in (
            "MA_LK", "STT", "MA_BN", "HO_TEN", "SO_CCCD", "NGAY_SINH", "GIOI_TINH",
            "MA_THE_BHYT", "MA_DKBD", "GT_THE_TU", "GT_THE_DEN", "MA_DOITUONG_KCB",
            "NGAY_VAO", "MA_LOAI_KCB", "MA_CSKCB",
        )
    }  # fmt: skip
    row.update(MA_DICH_VU="01.0001.0001", TEN_DICH_VU="Khám bệnh", NGAY_YL="202503150845")
    row.update(fields)
    return Visit("checkin.xml", row["MA_LK"], "130", {"XML0": [row]})


def test_a_check_in_maps_to_the_patient_and_an_encounter_in_progress() -> None:
    from lienthong.ingest.xml130.to_fhir import CHECKIN_TAG, CITIZEN_ID, visit_system

    bundle = bundle_of(checkin(LY_DO_VNT="Sốt cao"))
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Organization", "Patient", "Encounter"]  # no claim, no diagnosis yet
    (encounter,) = resources(bundle, "Encounter")
    assert encounter["status"] == "in-progress"
    assert encounter["period"] == {"start": "2025-03-15T08:30:00+07:00"}
    assert encounter["class"]["code"] == "IMP"  # MA_LOAI_KCB 03
    assert encounter["type"][0]["coding"][0]["code"] == "03"
    assert encounter["meta"]["tag"] == [CHECKIN_TAG]
    assert encounter["reasonCode"] == [{"text": "Sốt cao"}]
    assert encounter["identifier"][0] == {
        "use": "official",
        "system": visit_system(FACILITY),
        "value": "010012503150000001",
    }
    (patient,) = resources(bundle, "Patient")
    ids = {(i["system"], i["value"]) for i in patient["identifier"]}
    assert (CITIZEN_ID, "001185012345") in ids and (INSURANCE_NUMBER, "DN4010123456789") in ids
    assert patient["name"][0]["text"] == "Nguyễn Thị Hoa" and patient["birthDate"] == "1985-03-12"
    assert encounter["subject"]["reference"] == bundle["entry"][1]["fullUrl"]


def test_a_check_in_writes_under_the_ids_of_the_full_visit() -> None:
    """The Encounter and Patient are found by the same conditions as the full visit's, so
    the full visit updates them; the check-in's Patient is only created, never updated
    (it has no address: a Patient already stored keeps its own)."""
    early, full = bundle_of(checkin()), bundle_of(visit())

    def entry(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
        return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)

    assert entry(early, "Encounter")["request"] == entry(full, "Encounter")["request"]
    patient, full_patient = entry(early, "Patient"), entry(full, "Patient")
    assert patient["request"]["method"] == "POST"
    assert patient["request"]["ifNoneExist"] == full_patient["request"]["url"].split("?", 1)[1]
    assert patient["resource"]["identifier"] == full_patient["resource"]["identifier"]
    assert entry(early, "Organization") == entry(full, "Organization")
    assert resources(full, "Encounter")[0]["status"] == "finished"
    assert "meta" not in resources(full, "Encounter")[0]


def test_a_full_visit_with_its_check_in_is_mapped_from_xml1() -> None:
    """XML0 beside XML1 is not read for mapping, even when it says something else."""
    plain = bundle_of(visit())
    other = checkin(HO_TEN="Tên Khác", NGAY_VAO="202503140000").tables["XML0"]
    assert bundle_of(visit(XML0=other)) == plain
