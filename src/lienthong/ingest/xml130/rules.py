"""The conformance rules the validator applies, each with its source.

Field types, sizes and required flags for QĐ 130/4750 come from the generated
:mod:`dictionary_130` (the QĐ 4750 appendix and the gateway's field list, merged as
``scripts/build_xml130_dictionary.py`` says), corrected by :data:`FIELD_OVERRIDES` where
later law overtook both; :data:`BLOCKING_PROBLEMS` says which problems keep a visit out
of the store (the others are conformance problems); :func:`is_checkin` tells a check-in
(the check-in table XML0 alone, sent at admission before the visit's XML1) from a visit
that lost its XML1. The legacy QĐ 4210 field set below is
written from QĐ 4210/QĐ-BYT (2017) Bảng 1-5 as mapped field by field in the VN Core
implementation guide (``qd_4210.xml``). Code lists and cross-field rules are written from
the descriptions in the QĐ 130 appendix (as amended by QĐ 4750) and the "VALID" notes of
the gateway's validation workbook; each :class:`Rule` cites where it comes from, so that a
vendor reading a report can look the rule up.
"""

from __future__ import annotations

from dataclasses import dataclass

from lienthong.ingest.xml130.dictionary_130 import FIELDS_130
from lienthong.ingest.xml130.model import STANDARD_130, STANDARD_4210, Visit

CHECKIN = "XML0"
"""The check-in table (bảng check-in, "Bảng chỉ tiêu dữ liệu về trạng thái khám bệnh, chữa
bệnh", sheet "Bang Check-in" of the QĐ 4750 appendix): sent at admission, before the visit's
XML1 exists."""


def is_checkin(visit: Visit) -> bool:
    """A check-in: the visit holds rows of the check-in table and of no other table (no
    XML1, no detail table, nothing unreadable). A visit with detail tables but no XML1 is
    no check-in, even with an XML0: its rows belong to no summary."""
    return (
        not visit.broken
        and bool(visit.tables.get(CHECKIN))
        and all(not rows for table, rows in visit.tables.items() if table != CHECKIN)
    )


@dataclass(frozen=True)
class FieldSpec:
    """One field of a table: its kind (``S`` string, ``N`` number), maximum size (None:
    unbounded), whether the gateway requires it, and where that was read."""

    name: str
    kind: str
    max_size: int | None
    required: bool
    source: str


@dataclass(frozen=True)
class Rule:
    """A rule identifier as it appears in reports, what it checks and its source."""

    id: str
    checks: str
    source: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "required",
            "a required field is present and not empty",
            "QĐ 4750 gateway field list (Bắt buộc column), less what either official text "
            "makes optional; QĐ 4210 Bảng 1-5 for legacy files",
        ),
        Rule(
            "type.number",
            "a numeric field holds a number",
            "QĐ 130 appendix and gateway list, type Số (a number only where both say so)",
        ),
        Rule(
            "decimal_comma",
            "a number uses the decimal point, not a comma (reported once per field and visit, "
            "the value read as the decimal it means)",
            "QĐ 130 appendix Bảng 2-3 SO_LUONG, DON_GIA, THANH_TIEN_BV: 'Sử dụng dấu chấm "
            "“.” để phân cách giữa số Nguyên với số thập phân'; Bảng 1 CAN_NANG",
        ),
        Rule(
            "max_size",
            "a value is not longer than the field's maximum size",
            "QĐ 130 appendix as amended by QĐ 4750 and the gateway list (the larger limit)",
        ),
        Rule("code", "a coded field holds a code of its list", "QĐ 130 appendix / QĐ 4210"),
        Rule(
            "date.format",
            "a time is yyyymmddHHMM (12) or a date yyyymmdd (8)",
            "QĐ 130 appendix Bảng 1 NGAY_SINH, NGAY_VAO, NGAY_RA, GT_THE_TU descriptions",
        ),
        Rule(
            "date.order",
            "a later event is not before an earlier one",
            "QĐ 4750 gateway VALID notes (NGAY_VAO_NOI_TRU, NGAY_TH_YL, NGAY_KQ >= NGAY_YL)",
        ),
        Rule(
            "days",
            "SO_NGAY_DTRI agrees with MA_LOAI_KCB and the stay",
            "QĐ 4750 appendix Bảng 1 SO_NGAY_DTRI amendment and gateway VALID note",
        ),
        Rule(
            "cccd",
            "SO_CCCD is 9 or 12 digits or a passport number",
            "QĐ 4750 gateway VALID note, Bảng 1 SO_CCCD",
        ),
        Rule(
            "bhyt",
            "each health-insurance card code is well formed",
            "QĐ 1351/QĐ-BHXH (2015) card code, as amended (lienthong.identity.identifiers)",
        ),
        Rule(
            "facility",
            "a facility code is 5 characters with a province prefix",
            "QĐ 130 appendix Bảng 1 MA_CSKCB, MA_DKBD ('gồm có 05 ký tự')",
        ),
        Rule(
            "icd10",
            "diagnosis codes exist in ICD-10",
            "QĐ 130 appendix Bảng 1 MA_BENH_CHINH, MA_BENH_KT (ICD-10 of QĐ 4469/QĐ-BYT)",
        ),
        Rule(
            "money.line",
            "a line's amount is quantity × price (× rates)",
            "QĐ 130 appendix Bảng 2 THANH_TIEN_BV/BH, Bảng 3 as corrected by QĐ 4750",
        ),
        Rule(
            "money.split",
            "a line's payers add up to its amount",
            "QĐ 130 appendix Bảng 2-3 T_BHTT, T_BNCCT, T_BNTT, T_NGUONKHAC",
        ),
        Rule(
            "money.total",
            "XML1 totals are the sums of the lines",
            "QĐ 130 appendix Bảng 1 T_THUOC ... T_NGUONKHAC descriptions",
        ),
        Rule(
            "lines.missing",
            "a summary with non-zero totals comes with its drug and service lines (one "
            "problem instead of one per total; the totals are checked only against lines "
            "that were sent)",
            "QĐ 130 appendix Bảng 1 T_THUOC ... T_TONGCHI_BV descriptions (sums of Bảng 2-3)",
        ),
        Rule(
            "conditional",
            "a field required under a condition is present",
            "QĐ 4750 gateway list (conditions in the Bắt buộc column, e.g. check-in table "
            "LY_DO_VNT, MA_DICH_VU, MA_THUOC, MA_VAT_TU) and appendix notes",
        ),
        Rule(
            "pattern",
            "a field has the structure its note gives",
            "QĐ 4750 gateway VALID notes (GOI_VTYT: 'Ký tự G + số từ 1-999')",
        ),
        Rule(
            "link",
            "every detail row belongs to a visit with an XML1 (a check-in, the check-in table "
            "alone, needs none)",
            "QĐ 130 appendix Bảng 1 MA_LK (PRIMARY KEY linking all tables); QĐ 4750 appendix "
            "check-in table MA_LK",
        ),
        Rule(
            "duplicate",
            "a MA_LK is sent once per file",
            "QĐ 130 appendix Bảng 1 MA_LK (PRIMARY KEY)",
        ),
        Rule(
            "table.unknown",
            "every table of a visit is a table of the standard under its own name (one that is "
            "not is ignored; one sent under a wrong LOAIHOSO is read by its root element)",
            "QĐ 130 gateway envelope (LOAIHOSO XML1 ... XML15) and QĐ 4750 appendix, the "
            "check-in table and Bảng 1-15",
        ),
        Rule(
            "broken",
            "every table of a visit can be read (base64, well-formed XML, a known LOAIHOSO)",
            "QĐ 130 gateway envelope (FILEHOSO: LOAIHOSO, NOIDUNGFILE as base64 of the table)",
        ),
        Rule(
            "envelope",
            "the envelope agrees with its content",
            "QĐ 130 gateway envelope (THONGTINDONVI/MACSKCB, SOLUONGHOSO)",
        ),
        Rule("file", "the file can be read safely and completely", "platform safety rules"),
        Rule(
            "fhir",
            "the visit maps to resources the FHIR R4 models and the store accept",
            "HL7 FHIR R4 (4.0.1) and VN Core, through lienthong.fhir.validate",
        ),
    )
}

# ---------------------------------------------------------------- severity
BLOCKING = "blocking"
CONFORMANCE = "conformance"

# What identifies the patient and starts the encounter, in the table a visit is stored
# from: XML1, or the check-in table of a check-in (validate.py reports the check-in
# table's problems of a visit that has its XML1 as conformance problems: the record is
# made from XML1 then).
_IDENTITY_PROBLEMS: dict[tuple[str, str], str] = {
    ("required", "MA_LK"): "MA_LK is the visit's key: without it nothing links",
    ("required", "HO_TEN"): "a patient without a name cannot be identified",
    ("required", "NGAY_SINH"): "a patient without a birth date cannot be identified",
    ("date.format", "NGAY_SINH"): "a birth date that is not a date cannot be stored",
    ("required", "NGAY_VAO"): "an encounter without its start cannot be stored",
    ("date.format", "NGAY_VAO"): "the encounter's start must be a time",
}

# (rule, table, field) -> why a visit with this problem cannot be stored faithfully; "*"
# matches any table or field. Everything else is a conformance problem: the visit is
# stored as sent, with its problems beside it.
BLOCKING_PROBLEMS: dict[tuple[str, str, str], str] = {
    **{
        (rule, table, name): why
        for table in ("XML1", CHECKIN)
        for (rule, name), why in _IDENTITY_PROBLEMS.items()
    },
    ("broken", "*", "*"): "a table that cannot be read would be stored as missing",
    ("link", "*", "*"): "rows of a visit that is not there belong to no encounter",
    ("duplicate", "*", "*"): "two visits under one MA_LK would overwrite each other",
    ("file", "*", "*"): "a file that cannot be read to its end is refused whole",
    ("fhir", "*", "*"): "the FHIR models or the store refuse the mapped resources",
}


def severity(rule: str, table: str, field: str) -> str:
    """``blocking`` or ``conformance`` for a problem (see :data:`BLOCKING_PROBLEMS`)."""
    for key in ((rule, table, field), (rule, table, "*"), (rule, "*", "*")):
        if key in BLOCKING_PROBLEMS:
            return BLOCKING
    return CONFORMANCE


# Where the official field lists are out of date, and what is followed instead: (table,
# field) -> (required, source). The dictionary stays as derived from the workbooks.
FIELD_OVERRIDES: dict[tuple[str, str], tuple[bool, str]] = {
    ("XML1", "MAHUYEN_CU_TRU"): (
        False,
        "not required since 1 July 2025: Law 72/2025/QH15 on the organisation of local "
        "government abolished the district tier (Resolution 202/2025/QH15 merged provinces); "
        "empty or 000 is accepted",
    ),
    ("XML9", "MAHUYEN_CU_TRU"): (
        False,
        "not required since 1 July 2025, as XML1 MAHUYEN_CU_TRU (Law 72/2025/QH15: no "
        "district tier); empty or 000 is accepted",
    ),
    ("XML9", "GHI_CHU"): (
        False,
        "conditional, not required: QĐ 130 appendix Bảng 9 GHI_CHU (appendix row 31) asks for "
        "it only for a birth by surgery or under 32 weeks (checked as a conditional rule)",
    ),
}


def _fields_130() -> dict[str, dict[str, FieldSpec]]:
    out: dict[str, dict[str, FieldSpec]] = {}
    for table, rows in FIELDS_130.items():
        sheet = "Check-in" if table == CHECKIN else table[3:]
        specs: dict[str, FieldSpec] = {}
        for name, kind, size, required, g_row, a_row, note in rows:
            cited = []
            if g_row:
                cited.append(f"QĐ 4750 gateway list Bảng {sheet} row {g_row}")
            if a_row:
                cited.append(f"QĐ 4750 appendix Bảng {sheet} row {a_row}")
            source = ", ".join(cited)
            if note:  # the sources differ: the note says how, the script what is followed
                followed = "; the larger size followed" if "size:" in note else ""
                source = f"{source} ({note}{followed})"
            override = FIELD_OVERRIDES.get((table, name))
            if override is not None:
                required, why = override
                source = f"{source}; {why}"
            specs[name] = FieldSpec(name, kind, size, required, source)
        out[table] = specs
    return out


# QĐ 4210/QĐ-BYT (2017), tables 1-5: (field, kind, max size, required). Sizes as published
# in QĐ 4210; "required" marks the fields the gateway refused to do without.
_FIELDS_4210: dict[str, tuple[tuple[str, str, int | None, bool], ...]] = {
    "XML1": (
        ("MA_LK", "S", 100, True),
        ("STT", "N", 10, False),
        ("MA_BN", "S", 100, True),
        ("HO_TEN", "S", 255, True),
        ("NGAY_SINH", "N", 8, True),
        ("GIOI_TINH", "N", 1, True),
        ("DIA_CHI", "S", 1024, False),
        ("MA_THE", "S", None, False),
        ("MA_DKBD", "S", None, False),
        ("GT_THE_TU", "S", None, False),
        ("GT_THE_DEN", "S", None, False),
        ("MIEN_CUNG_CT", "N", 8, False),
        ("TEN_BENH", "S", None, True),
        ("MA_BENH", "S", 15, True),
        ("MA_BENHKHAC", "S", 255, False),
        ("MA_LYDO_VVIEN", "N", 1, True),
        ("MA_NOI_CHUYEN", "S", 5, False),
        ("MA_TAI_NAN", "N", 1, False),
        ("NGAY_VAO", "N", 12, True),
        ("NGAY_RA", "N", 12, True),
        ("SO_NGAY_DTRI", "N", 3, True),
        ("KET_QUA_DTRI", "N", 1, True),
        ("TINH_TRANG_RV", "N", 1, True),
        ("NGAY_TTOAN", "N", 12, False),
        ("T_THUOC", "N", 15, True),
        ("T_VTYT", "N", 15, True),
        ("T_TONGCHI", "N", 15, True),
        ("T_BNTT", "N", 15, True),
        ("T_BNCCT", "N", 15, False),
        ("T_BHTT", "N", 15, True),
        ("T_NGUONKHAC", "N", 15, True),
        ("T_NGOAIDS", "N", 15, True),
        ("NAM_QT", "N", 4, True),
        ("THANG_QT", "N", 2, True),
        ("MA_LOAI_KCB", "N", 1, True),
        ("MA_KHOA", "S", 15, True),
        ("MA_CSKCB", "S", 5, True),
        ("MA_KHUVUC", "S", 2, False),
        ("MA_PTTT_QT", "S", 255, False),
        ("CAN_NANG", "N", 6, False),
    ),
    "XML2": (
        ("MA_LK", "S", 100, True),
        ("STT", "N", 10, True),
        ("MA_THUOC", "S", 255, True),
        ("MA_NHOM", "N", 2, True),
        ("TEN_THUOC", "S", 1024, True),
        ("DON_VI_TINH", "S", 50, True),
        ("HAM_LUONG", "S", 1024, False),
        ("DUONG_DUNG", "S", 4, False),
        ("LIEU_DUNG", "S", 1024, False),
        ("SO_DANG_KY", "S", 255, False),
        ("TT_THAU", "S", 50, False),
        ("PHAM_VI", "N", 1, True),
        ("TYLE_TT", "N", 3, True),
        ("SO_LUONG", "N", 10, True),
        ("DON_GIA", "N", 15, True),
        ("THANH_TIEN", "N", 15, True),
        ("MUC_HUONG", "N", 3, True),
        ("T_NGUONKHAC", "N", 15, False),
        ("T_BNTT", "N", 15, True),
        ("T_BHTT", "N", 15, True),
        ("T_BNCCT", "N", 15, True),
        ("T_NGOAIDS", "N", 15, False),
        ("MA_KHOA", "S", 15, True),
        ("MA_BAC_SI", "S", 255, True),
        ("MA_BENH", "S", 255, False),
        ("NGAY_YL", "N", 12, True),
        ("MA_PTTT", "N", 1, True),
    ),
    "XML3": (
        ("MA_LK", "S", 100, True),
        ("STT", "N", 10, True),
        ("MA_DICH_VU", "S", 50, False),
        ("MA_VAT_TU", "S", 255, False),
        ("MA_NHOM", "N", 2, True),
        ("GOI_VTYT", "S", 3, False),
        ("TEN_VAT_TU", "S", 1024, False),
        ("TEN_DICH_VU", "S", 1024, False),
        ("DON_VI_TINH", "S", 50, True),
        ("PHAM_VI", "N", 1, True),
        ("SO_LUONG", "N", 10, True),
        ("DON_GIA", "N", 15, True),
        ("TT_THAU", "S", 25, False),
        ("TYLE_TT", "N", 3, True),
        ("THANH_TIEN", "N", 15, True),
        ("T_TRANTT", "N", 15, False),
        ("MUC_HUONG", "N", 3, True),
        ("T_NGUONKHAC", "N", 15, False),
        ("T_BNTT", "N", 15, True),
        ("T_BHTT", "N", 15, True),
        ("T_BNCCT", "N", 15, True),
        ("T_NGOAIDS", "N", 15, False),
        ("MA_KHOA", "S", 15, True),
        ("MA_GIUONG", "S", 14, False),
        ("MA_BAC_SI", "S", 255, False),
        ("MA_BENH", "S", 255, False),
        ("NGAY_YL", "N", 12, True),
        ("NGAY_KQ", "N", 12, False),
        ("MA_PTTT", "N", 1, True),
    ),
    "XML4": (
        ("MA_LK", "S", 100, True),
        ("STT", "N", 10, True),
        ("MA_DICH_VU", "S", 15, True),
        ("MA_CHI_SO", "S", 50, False),
        ("TEN_CHI_SO", "S", 255, False),
        ("GIA_TRI", "S", 50, False),
        ("MA_MAY", "S", 50, False),
        ("MO_TA", "S", None, False),
        ("KET_LUAN", "S", None, False),
        ("NGAY_KQ", "N", 12, True),
    ),
    "XML5": (
        ("MA_LK", "S", 100, True),
        ("STT", "N", 10, True),
        ("DIEN_BIEN", "S", None, True),
        ("HOI_CHAN", "S", None, False),
        ("PHAU_THUAT", "S", None, False),
        ("NGAY_YL", "N", 12, True),
    ),
}


def _fields_4210() -> dict[str, dict[str, FieldSpec]]:
    return {
        table: {
            name: FieldSpec(name, kind, size, required, f"QĐ 4210 Bảng {table[3:]}")
            for name, kind, size, required in rows
        }
        for table, rows in _FIELDS_4210.items()
    }


FIELDS: dict[str, dict[str, dict[str, FieldSpec]]] = {
    STANDARD_130: _fields_130(),
    STANDARD_4210: _fields_4210(),
}
"""standard -> table -> field name -> spec."""

# Text fields that hold a decimal number all the same: checked as numbers (a decimal comma
# reported once, read as the point). QĐ 130 appendix Bảng 1 CAN_NANG: "biểu thị đầy đủ cả
# số thập phân, dấu thập phân là dấu chấm".
DECIMAL_TEXT_FIELDS: frozenset[tuple[str, str]] = frozenset({("XML1", "CAN_NANG")})

# ---------------------------------------------------------------- code lists
# (standard, table, field) -> (allowed codes, source)
CODE_LISTS: dict[tuple[str, str, str], tuple[frozenset[str], str]] = {
    (STANDARD_130, "XML1", "GIOI_TINH"): (
        frozenset({"1", "2", "3"}),
        "QĐ 130 Bảng 1 GIOI_TINH: 1 male, 2 female, 3 undetermined",
    ),
    (STANDARD_130, "XML1", "KET_QUA_DTRI"): (
        frozenset("12345678"),
        "QĐ 130 Bảng 1 KET_QUA_DTRI 1-7, code 8 (died outside hospital) added by QĐ 4750",
    ),
    (STANDARD_130, "XML1", "MA_LOAI_RV"): (
        frozenset("12345"),
        "QĐ 130 Bảng 1 MA_LOAI_RV: 1 discharged, 2 referred, 3 absconded, 4 left on request, "
        "5 referred on request",
    ),
    (STANDARD_130, "XML1", "MA_LOAI_KCB"): (
        frozenset(f"{i:02d}" for i in range(1, 11)),
        "QĐ 130 Bảng 1 MA_LOAI_KCB, common code set of QĐ 5937/QĐ-BYT: 01 consultation, "
        "02 outpatient treatment, 03 inpatient, 04 day inpatient, 05 chronic outpatient, "
        "06 commune-station stay, 07 repeat prescription, 08 chronic outpatient with "
        "procedures, 09 inpatient under 4 hours, 10 other",
    ),
    (STANDARD_130, CHECKIN, "GIOI_TINH"): (
        frozenset({"1", "2", "3"}),
        "QĐ 4750 appendix check-in table GIOI_TINH: 1 male, 2 female, 3 undetermined",
    ),
    (STANDARD_130, CHECKIN, "MA_LOAI_KCB"): (
        frozenset(f"{i:02d}" for i in range(1, 11)),
        "QĐ 4750 appendix check-in table MA_LOAI_KCB, the code set of Bảng 1 (QĐ 5937/QĐ-BYT): "
        "01 consultation ... 10 other",
    ),
    (STANDARD_130, "XML2", "PHAM_VI"): (
        frozenset("123"),
        "QĐ 130 Bảng 2 PHAM_VI: 1 within insurance scope, 2 outside, 3 outside (military)",
    ),
    (STANDARD_130, "XML3", "PHAM_VI"): (
        frozenset("123"),
        "QĐ 130 Bảng 3 PHAM_VI: 1 within insurance scope, 2 outside, 3 outside (military)",
    ),
    (STANDARD_130, "XML2", "VET_THUONG_TP"): (frozenset({"1"}), "QĐ 4750 VALID: null or 1"),
    (STANDARD_130, "XML3", "VET_THUONG_TP"): (frozenset({"1"}), "QĐ 4750 VALID: null or 1"),
    (STANDARD_130, "XML3", "TAI_SU_DUNG"): (frozenset({"1"}), "QĐ 4750 VALID: null or 1"),
    (STANDARD_4210, "XML1", "GIOI_TINH"): (
        frozenset({"1", "2", "3"}),
        "QĐ 4210 Bảng 1 GIOI_TINH: 1 male, 2 female, 3 undetermined",
    ),
    (STANDARD_4210, "XML1", "KET_QUA_DTRI"): (
        frozenset("12345"),
        "QĐ 4210 Bảng 1 KET_QUA_DTRI: 1 cured, 2 improved, 3 unchanged, 4 worse, 5 died",
    ),
    (STANDARD_4210, "XML1", "TINH_TRANG_RV"): (
        frozenset("1234"),
        "QĐ 4210 Bảng 1 TINH_TRANG_RV: 1 discharged, 2 referred, 3 absconded, 4 on request",
    ),
    (STANDARD_4210, "XML1", "MA_LOAI_KCB"): (
        frozenset("123"),
        "QĐ 4210 Bảng 1 MA_LOAI_KCB: 1 outpatient visit, 2 outpatient treatment, 3 inpatient",
    ),
    (STANDARD_4210, "XML1", "MA_LYDO_VVIEN"): (
        frozenset("1234"),
        "QĐ 4210 Bảng 1 MA_LYDO_VVIEN: 1 right level, 2 emergency, 3 wrong level, 4 open level",
    ),
}

# ---------------------------------------------------------------- dates
# Fields holding a time yyyymmddHHMM (12 characters).
TIME_FIELDS: dict[str, frozenset[str]] = {
    STANDARD_130: frozenset(
        {
            "NGAY_VAO",
            "NGAY_VAO_NOI_TRU",
            "NGAY_RA",
            "NGAY_TTOAN",
            "NGAY_YL",
            "NGAY_TH_YL",
            "NGAY_KQ",
            "THOI_DIEM_DBLS",
        }
    ),
    STANDARD_4210: frozenset({"NGAY_VAO", "NGAY_RA", "NGAY_TTOAN", "NGAY_YL", "NGAY_KQ"}),
}
# Fields holding one or several (";") dates yyyymmdd: QĐ 130 appendix Bảng 1 GT_THE_TU,
# GT_THE_DEN, NAM_NAM_LIEN_TUC ("gồm 08 ký tự theo định dạng yyyymmdd"), NGAY_TAI_KHAM
# (several separated by ";").
DATE_FIELDS: dict[str, frozenset[str]] = {
    STANDARD_130: frozenset({"GT_THE_TU", "GT_THE_DEN", "NAM_NAM_LIEN_TUC", "NGAY_TAI_KHAM"}),
    STANDARD_4210: frozenset({"GT_THE_TU", "GT_THE_DEN", "MIEN_CUNG_CT"}),
}
# Fields holding a date yyyymmdd or a time yyyymmddHHMM: QĐ 130 appendix Bảng 1
# NGAY_MIEN_CCT (8 characters from the exemption paper, 12 when computed per QĐ 6556).
DATE_OR_TIME_FIELDS: dict[str, frozenset[str]] = {
    STANDARD_130: frozenset({"NGAY_MIEN_CCT"}),
    STANDARD_4210: frozenset(),
}
# (earlier, later) pairs within one row: QĐ 4750 VALID notes (NGAY_VAO_NOI_TRU >= NGAY_VAO,
# NGAY_TH_YL >= NGAY_YL, NGAY_KQ >= NGAY_YL) and the plain sense of NGAY_RA.
DATE_ORDER: dict[str, tuple[tuple[str, str], ...]] = {
    CHECKIN: (("NGAY_VAO", "NGAY_VAO_NOI_TRU"),),  # gateway check-in sheet row 15
    "XML1": (("NGAY_VAO", "NGAY_RA"), ("NGAY_VAO", "NGAY_VAO_NOI_TRU")),
    "XML2": (("NGAY_YL", "NGAY_TH_YL"),),
    "XML3": (("NGAY_YL", "NGAY_TH_YL"), ("NGAY_YL", "NGAY_KQ")),
}

# ---------------------------------------------------------------- money
# QĐ 5937/QĐ-BYT appendix 3 cost groups of medical supplies (T_VTYT sums them).
SUPPLY_GROUPS = frozenset({"10", "11"})
# Rounding: every amount is rounded to 2 decimals (QĐ 130 Bảng 2-3); sums of rounded
# lines may differ from a rounded total by a few hundredths. One đồng is allowed.
MONEY_TOLERANCE = 1.0

# XML1 total -> (tables, line field) summed, per standard (QĐ 130 Bảng 1 descriptions).
TOTALS: dict[str, tuple[tuple[str, tuple[str, ...], str, frozenset[str] | None], ...]] = {
    STANDARD_130: (
        ("T_THUOC", ("XML2",), "THANH_TIEN_BV", None),
        ("T_VTYT", ("XML3",), "THANH_TIEN_BV", SUPPLY_GROUPS),
        ("T_TONGCHI_BV", ("XML2", "XML3"), "THANH_TIEN_BV", None),
        ("T_TONGCHI_BH", ("XML2", "XML3"), "THANH_TIEN_BH", None),
        ("T_BNTT", ("XML2", "XML3"), "T_BNTT", None),
        ("T_BNCCT", ("XML2", "XML3"), "T_BNCCT", None),
        ("T_BHTT", ("XML2", "XML3"), "T_BHTT", None),
        ("T_NGUONKHAC", ("XML2", "XML3"), "T_NGUONKHAC", None),
    ),
    STANDARD_4210: (
        ("T_THUOC", ("XML2",), "THANH_TIEN", None),
        ("T_VTYT", ("XML3",), "THANH_TIEN", SUPPLY_GROUPS),
        ("T_TONGCHI", ("XML2", "XML3"), "THANH_TIEN", None),
        ("T_BNTT", ("XML2", "XML3"), "T_BNTT", None),
        ("T_BHTT", ("XML2", "XML3"), "T_BHTT", None),
    ),
}

# Visit types whose SO_NGAY_DTRI is 0, and those counted as discharge day - admission day
# + 1 (QĐ 4750 validation workbook, Bảng 1 SO_NGAY_DTRI note).
ZERO_DAY_VISITS = frozenset({"01", "07", "09"})
COUNTED_DAY_VISITS = frozenset({"02", "03", "04", "06"})

# Diagnosis fields: (single code field, list field) per standard.
DIAGNOSIS_FIELDS: dict[str, tuple[str, str]] = {
    STANDARD_130: ("MA_BENH_CHINH", "MA_BENH_KT"),
    STANDARD_4210: ("MA_BENH", "MA_BENHKHAC"),
}
CARD_FIELD: dict[str, str] = {STANDARD_130: "MA_THE_BHYT", STANDARD_4210: "MA_THE"}
