"""One valid visit of a hospital XML export as one FHIR transaction Bundle.

The mapping follows VN Core's field-by-field table for the hospital XML tables
(``qd_4210.xml`` of the VN Core implementation guide) and carries it over to
the QĐ 130/4750 field names:

========================  ===================================================
XML1 (visit summary)      Patient (CCCD, health-insurance cards, MA_BN),
                          Encounter (MA_LK, class from MA_LOAI_KCB, period,
                          discharge disposition, serviceProvider), Organization
                          (MA_CSKCB), Condition (main and secondary ICD-10),
                          Observation (body weight, CAN_NANG), Claim (totals)
XML2 (drugs)              MedicationRequest, and a Claim item per line
XML3 (services, supplies) ServiceRequest (tests, imaging, function tests),
                          Procedure (procedures and surgery), a Claim item per
                          line (beds, consultations and supplies only there)
XML4 (paraclinical)       Observation per result, DiagnosticReport per service,
                          laboratory, imaging or procedure (see
                          :func:`result_kind`)
XML5 (clinical progress)  ClinicalImpression per note
XML0 (check-in), alone    Organization, Patient, Encounter ``in-progress``
                          (see below)
========================  ===================================================

A check-in (the check-in table XML0 alone, sent at admission before the visit's XML1
exists) maps to the Organization, the Patient (the identifiers XML1 gives: CCCD, cards,
``MA_BN``) and an Encounter under the SAME identifier as the full visit (facility and
``MA_LK``): status ``in-progress`` (the check-in is sent once the first service, drug or
supply is ordered, ``NGAY_YL``, so care has begun: more than ``arrived``), period.start
``NGAY_VAO``, class from ``MA_LOAI_KCB``, and the tag :data:`CHECKIN_TAG`. The full visit
later updates that Encounter (``finished``, the tag gone) and adds its parts. The check-in's
Patient is a conditional create on ``MA_BN``: a check-in carries no address or telephone, so
it never overwrites the fuller Patient of a visit already stored. A visit that has its XML1
is mapped from XML1; its check-in table is not read here. Writing a check-in after the
full visit would roll the Encounter back: the ingest reads the stored Encounter and leaves
a finished visit as it is (:mod:`ingest`).

Every text value is read once through :func:`fhir_text`, which removes what the
FHIR string type forbids or what only hides in a value (byte-order marks, zero-width
and other invisible format characters, control characters except tab and line feed)
and composes Vietnamese letters (NFC), so names, addresses, diagnoses and notes
compare and index as they read.

Re-sending a visit must update it, never duplicate it, so every resource gets
an identifier scoped to the facility (``MA_LK`` is unique only within one
facility's exports) and is written with a conditional update on it; the
facility is a conditional create on its provider code.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from lienthong.identity.scoring import ADMINISTRATIVE_ADDRESS
from lienthong.ingest.xml130.model import STANDARD_4210, Visit
from lienthong.ingest.xml130.rules import is_checkin
from lienthong.terminology.catalogue import Icd10Catalogue
from lienthong.terminology.icd10 import ICD10_SYSTEM, normalize_icd10

# VN Core NamingSystems (../standards/vn-core-ig, the standards README)
VN_SID = "http://fhir.ehealth.gov.vn/core/sid"
CITIZEN_ID = f"{VN_SID}/citizen_id"
INSURANCE_NUMBER = f"{VN_SID}/insurance_number"
PATIENT_INTERNAL_ID = f"{VN_SID}/patient-internal-id"
PROVIDER_CODE = f"{VN_SID}/provider-code"
PRACTITIONER_LICENSE = f"{VN_SID}/provider-medical-license-number"
# VN Core code systems of the Ministry's common code sets
MEDICATION_CODE = "http://fhir.ehealth.gov.vn/core/CodeSystem/vn-core-medicationCode"
PROCEDURE_CODE = "http://fhir.ehealth.gov.vn/core/CodeSystem/vn-core-procedureCode"
ADMINISTRATIVE_UNIT = "http://fhir.ehealth.gov.vn/core/CodeSystem/vn-core-administrative-address"
# the platform's own systems for what VN Core does not name
LT = "http://fhir.lienthong.vn"
SOURCE = f"{LT}/source/hospital-xml130"
"""``meta.source`` of the Patients this mapping writes: reports per source name it."""
LAB_INDEX_CODE = f"{LT}/CodeSystem/xml130-ma-chi-so"
SUPPLY_CODE = f"{LT}/CodeSystem/xml130-ma-vat-tu"
COST_GROUP = f"{LT}/CodeSystem/xml130-ma-nhom"
VISIT_TYPE = f"{LT}/CodeSystem/xml130-ma-loai-kcb"
DISCHARGE_TYPE = f"{LT}/CodeSystem/xml130-ma-loai-rv"
TREATMENT_RESULT = f"{LT}/CodeSystem/xml130-ket-qua-dtri"
DEPARTMENT = f"{LT}/CodeSystem/xml130-ma-khoa"
MESSAGE_SYSTEM = f"{LT}/CodeSystem/xml130-message"
CHECKIN_TAG = {
    "system": MESSAGE_SYSTEM,
    "code": "check-in",
    "display": "from the check-in message (XML0): the visit's XML1 is not yet received",
}
"""``meta.tag`` of an Encounter written from a check-in: ``Encounter?_tag=...|check-in``
lists the visits begun whose summary has not come; the full visit's update removes it."""
ROUTE = f"{LT}/CodeSystem/xml130-duong-dung"
INITIAL_REGISTRATION = f"{LT}/StructureDefinition/xml130-initial-registration"
"""Extension of a health-insurance card identifier: the facility of first registration
(``MA_DKBD``), where VN Core's table puts it (``Patient.identifier.extension``)."""
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DIAGNOSTIC_SERVICE_SECTION = "http://terminology.hl7.org/CodeSystem/v2-0074"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VND = "VND"
VN_OFFSET = "+07:00"  # the exports write local time in Viet Nam


def visit_system(facility: str) -> str:
    """Identifier system of a facility's visits (``MA_LK``)."""
    return f"{LT}/sid/xml130/{quote(facility, safe='')}/ma-lk"


def record_system(facility: str) -> str:
    """Identifier system of the resources made from a facility's visits: values are
    ``MA_LK#part`` (``#XML2-3`` is the third drug line, ``#dx-main`` the main diagnosis)."""
    return f"{LT}/sid/xml130/{quote(facility, safe='')}/record"


def patient_system(facility: str) -> str:
    """Identifier system of a facility's patient numbers (``MA_BN``)."""
    return f"{LT}/sid/xml130/{quote(facility, safe='')}/ma-bn"


# QĐ 130 Bảng 1 MA_LOAI_KCB (common code set of QĐ 5937) and QĐ 4210 -> Encounter.class
_CLASS_130 = {
    "01": "AMB", "02": "AMB", "03": "IMP", "04": "SS", "05": "AMB",
    "06": "IMP", "07": "AMB", "08": "AMB", "09": "SS", "10": "AMB",
}  # fmt: skip
_CLASS_4210 = {"1": "AMB", "2": "AMB", "3": "IMP"}
_CLASS_DISPLAY = {"AMB": "ambulatory", "IMP": "inpatient encounter", "SS": "short stay"}
# MA_LOAI_RV (130) / TINH_TRANG_RV (4210) -> discharge-disposition
_DISPOSITION_130 = {"1": "home", "2": "other-hcf", "3": "aadvice", "4": "aadvice", "5": "other-hcf"}
_DISPOSITION_4210 = {"1": "home", "2": "other-hcf", "3": "aadvice", "4": "aadvice"}
_DIED = {"5", "8"}  # KET_QUA_DTRI: died, died outside hospital
# QĐ 5937 Phụ lục 3 cost groups (MA_NHOM) of XML3 lines
_ORDERED_TESTS = {"1", "2", "3"}  # laboratory, imaging, function tests: ServiceRequest
_PROCEDURES = {"8", "18"}  # procedures and surgery (also paid at a rate): Procedure
_GROUPS_NOT_CARE = {"7", "10", "11", "12", "13", "14", "15", "16", "17", "19"}
_GENDER = {"1": "male", "2": "female", "3": "unknown"}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_MAPPED_TABLES = ("XML0", "XML1", "XML2", "XML3", "XML4", "XML5")

# Control characters other than tab and line feed (C0, DEL, C1), and the invisible format
# characters exports carry: soft hyphen, zero-width space/joiners, direction marks and
# embeddings, word joiner and invisible operators, the byte-order mark (U+FEFF, which
# editors and HIS exports leave at the start of values), interlinear annotation marks and
# the noncharacters U+FFFE/U+FFFF. The FHIR string type admits no control characters but
# tab, CR and LF (https://hl7.org/fhir/R4/datatypes.html#string).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ufffe\uffff]"
)
_LINE_BREAKS = re.compile("\r\n?|[\x85\u2028\u2029]")
_SUSPECT = re.compile(_INVISIBLE.pattern + "|[\r\x85\u2028\u2029]")


def fhir_text(value: str | None) -> str:
    """``value`` as a FHIR string can hold it: without invisible and control characters
    (tab and line feed stay; CR LF, CR, NEL and the Unicode line and paragraph separators
    become line feeds), in composed form (NFC), without surrounding white space."""
    if not value:
        return ""
    if value.isascii():
        if value.isprintable():  # most values: codes, numbers, dates
            return value.strip()
    elif not _SUSPECT.search(value):
        if unicodedata.is_normalized("NFC", value):
            return value.strip()
        return unicodedata.normalize("NFC", value).strip()
    v = _INVISIBLE.sub("", _LINE_BREAKS.sub("\n", value))
    return unicodedata.normalize("NFC", v).strip()


def _fold(text: str) -> str:
    """Lower case without Vietnamese tone and vowel marks (``đ`` as ``d``), for matching."""
    decomposed = unicodedata.normalize("NFD", text.casefold().replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# -- what an XML4 result is -----------------------------------------------------------
#
# The XML3 line of the same MA_DICH_VU says it by its cost group (QĐ 5937 Phụ lục 3
# MA_NHOM): 1 xét nghiệm (laboratory), 2 chẩn đoán hình ảnh (imaging: X-ray, ultrasound,
# CT, MRI), 3 thăm dò chức năng (functional tests: ECG, EEG, endoscopy, lung function — the
# result of a procedure), 8 and 18 procedures and surgery. The group, an official field,
# wins over any reading of the name. Without one (a result whose service is not in XML3,
# a line without a group, or another group) the service's name decides — XML3 TEN_DICH_VU,
# else XML4 TEN_CHI_SO — by the words Vietnamese service names use (_PROCEDURE_WORDS,
# then _IMAGING_WORDS); then the chapter of the service code in the Ministry's list of
# technical services (Thông tư 43/2013/TT-BYT, 21/2017/TT-BYT; codes ``CC.NNNN.PPPP``:
# XVIII điện quang and XIX y học hạt nhân are imaging, XX nội soi and XXI thăm dò chức năng
# procedures) — the name comes first because the same examination is listed in several
# chapters (an abdominal ultrasound under 02 nội khoa as well as 18). Otherwise the result
# is a laboratory one, which most XML4 rows are.
_KIND_BY_GROUP = {
    "1": "laboratory",
    "2": "imaging",
    "3": "procedure",
    "8": "procedure",
    "18": "procedure",
}
_PROCEDURE_WORDS = re.compile(
    r"\b(noi soi|dien tim|dien tam do|ecg|ekg|holter|dien nao|eeg|dien co|emg"
    r"|chuc nang ho hap|ho hap ky|luu huyet)\b"
)
_IMAGING_WORDS = re.compile(
    r"\b(sieu am|x[ -]?quang|xq|chup|ct|cat lop|mri|cong huong tu|pet|spect|xa hinh"
    r"|doppler|mammo\w*|dsa|chieu)\b"
)
_KIND_BY_CHAPTER = {"18": "imaging", "19": "imaging", "20": "procedure", "21": "procedure"}
_SERVICE_CODE = re.compile(r"^(\d{2})\.\d{4}\.\d{4}$")
# v2-0074 diagnostic service sections (DiagnosticReport.category), the specific one by name
_SECTION_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsieu am (tim|qua thuc quan)\b"), "CUS"),
    (re.compile(r"\bsieu am (thai|san|phu khoa|tu cung)\b"), "OUS"),
    (re.compile(r"\b(sieu am doppler mach|doppler mach)\b"), "VUS"),
    (re.compile(r"\bsieu am\b"), "RUS"),
    (re.compile(r"\b(mri|cong huong tu)\b"), "NMR"),
    (re.compile(r"\b(ct|cat lop)\b"), "CT"),
    (re.compile(r"\b(pet|spect|xa hinh)\b"), "NMS"),
    (re.compile(r"\b(x[ -]?quang|xq)\b"), "RX"),
    (re.compile(r"\b(dien tim|dien tam do|ecg|ekg|holter)\b"), "EC"),
    (re.compile(r"\b(dien nao|eeg|dien co|emg)\b"), "EN"),
    (re.compile(r"\b(chuc nang ho hap|ho hap ky)\b"), "PF"),
)
_GENERAL_SECTION = {"laboratory": "LAB", "imaging": "RAD", "procedure": "OTH"}
_SECTION_DISPLAY = {
    "LAB": "Laboratory",
    "RAD": "Radiology",
    "OTH": "Other",
    "RUS": "Radiology Ultrasound",
    "CUS": "Cardiac Ultrasound",
    "OUS": "OB Ultrasound",
    "VUS": "Vascular Ultrasound",
    "NMR": "Nuclear Magnetic Resonance",
    "CT": "CAT Scan",
    "NMS": "Nuclear Medicine Scan",
    "RX": "Radiograph",
    "EC": "Electrocardiac (e.g., EKG, EEC, Holter)",
    "EN": "Electroneuro (EEG, EMG,EP,PSG)",
    "PF": "Pulmonary Function",
}
_CATEGORY_DISPLAY = {
    "vital-signs": "Vital Signs",
    "laboratory": "Laboratory",
    "imaging": "Imaging",
    "procedure": "Procedure",
}


def result_kind(group: str | None, code: str | None, *names: str | None) -> str:
    """``laboratory``, ``imaging`` or ``procedure`` (observation-category codes) for an
    XML4 result of the service ``code``, from the XML3 cost group ``group`` (MA_NHOM),
    else from the service's ``names``, else from the chapter of its code (rule above)."""
    g = (group or "").strip().lstrip("0")
    if g in _KIND_BY_GROUP:
        return _KIND_BY_GROUP[g]
    for name in names:
        folded = _fold(name or "")
        if _PROCEDURE_WORDS.search(folded):
            return "procedure"
        if _IMAGING_WORDS.search(folded):
            return "imaging"
    m = _SERVICE_CODE.match((code or "").strip())
    if m and m.group(1) in _KIND_BY_CHAPTER:
        return _KIND_BY_CHAPTER[m.group(1)]
    return "laboratory"


def report_sections(kind: str, *names: str | None) -> list[str]:
    """v2-0074 codes of a DiagnosticReport: the general section of ``kind`` (LAB, RAD or
    OTH), and a specific one the service's name shows (RUS ultrasound, RX X-ray, CT, NMR,
    EC ECG, ...); an ECG or EEG is its section alone."""
    folded = " ".join(_fold(n or "") for n in names)
    specific = next((code for pattern, code in _SECTION_WORDS if pattern.search(folded)), None)
    if kind == "laboratory":
        return ["LAB"]
    if kind == "procedure" and specific in ("EC", "EN", "PF"):
        return [specific]
    general = _GENERAL_SECTION[kind]
    if kind == "imaging" and specific in ("EC", "EN", "PF"):
        specific = None
    return [general] + ([specific] if specific and specific != general else [])


# -- diagnosis names ------------------------------------------------------------------

_CODE_TOKEN = re.compile(r"(?<![0-9A-Za-z])([A-Za-z][0-9]{2}(?:\.?[0-9A-Za-z]{1,3})?)[†*+]?")
_SEPARATORS = " \t\n-–—:,.()[]"
# words of diagnosis names that say nothing of which disease it is
_NAME_STOP = frozenset(
    ["benh", "ly", "khong", "dac", "hieu", "khac", "do", "va", "co", "cua", "o", "chua", "xac"]
    + ["dinh", "noi"]
)
_NAME_MATCH = 0.45
"""Least similarity (:func:`name_similarity`) for a part to be a code's own name."""


@functools.lru_cache(maxsize=8192)
def _name_grams(text: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    words = re.findall(r"\w+", _fold(text))
    kept = frozenset(w for w in words if w not in _NAME_STOP)
    pairs = frozenset(
        (a, b) for a, b in zip(words, words[1:], strict=False) if a in kept and b in kept
    )
    return kept, pairs


def name_similarity(part: str, name: str) -> float:
    """How well a written diagnosis ``part`` matches a catalogue ``name``, 0 to 1: the
    F-measure of their shared syllables and syllable pairs (accents folded, words such as
    ``bệnh``, ``không``, ``đặc hiệu`` left out), so that a short part matches the short
    name it abbreviates rather than every long name containing one of its syllables."""
    pw, pp = _name_grams(part)
    nw, np_ = _name_grams(name)
    if not pw or not nw:
        return 0.0
    shared = len(pw & nw) + len(pp & np_)
    precision, recall = shared / (len(pw) + len(pp)), shared / (len(nw) + len(np_))
    return 2 * precision * recall / (precision + recall) if shared else 0.0


def diagnosis_parts(text: str) -> list[str]:
    """The diagnoses of a discharge-diagnosis string (CHAN_DOAN_RV), which lists several
    separated by ``;`` (some exports use line breaks)."""
    return [p.strip() for p in re.split(r"[;\n]", text) if p.strip()]


def _without_code(part: str, code: str) -> str:
    """A part written ``A09.0 - Tiêu chảy`` or ``Tiêu chảy (A09)`` without its code."""
    for m in _CODE_TOKEN.finditer(part):
        if normalize_icd10(m.group(1)) == code:
            rest = (part[: m.start()].rstrip(_SEPARATORS), part[m.end() :].lstrip(_SEPARATORS))
            rest_text = " ".join(x for x in rest if x).strip(_SEPARATORS)
            return rest_text or part
    return part


def own_names(codes: list[str], text: str, display: Callable[[str], str | None]) -> dict[str, str]:
    """Which part of the discharge-diagnosis ``text`` names each (normalised) code: first
    a part that carries the code itself (``K21.9 - Trào ngược ...``), then, best pair first,
    the part most similar to the catalogue's name of a code (:func:`name_similarity` at
    least ``_NAME_MATCH``); a text of one part is the first code's when no other code claims
    it. Codes without a part of their own are left out."""
    parts = diagnosis_parts(text)
    out: dict[str, str] = {}
    claimed: set[int] = set()
    for code in codes:
        for i, part in enumerate(parts):
            if i not in claimed and any(
                normalize_icd10(m.group(1)) == code for m in _CODE_TOKEN.finditer(part)
            ):
                out[code] = _without_code(part, code)
                claimed.add(i)
                break
    pairs: list[tuple[float, int, int]] = []
    for c, code in enumerate(codes):
        name = display(code) if code not in out else None
        for i, part in enumerate(parts):
            if name and i not in claimed:
                score = name_similarity(part, name)
                if score >= _NAME_MATCH:
                    pairs.append((-score, c, i))
    for _, c, i in sorted(pairs):
        if codes[c] not in out and i not in claimed:
            out[codes[c]] = parts[i]
            claimed.add(i)
    if codes and codes[0] not in out and len(parts) == 1 and not claimed:
        out[codes[0]] = parts[0]
    return out


def local_datetime(value: str | None) -> str | None:
    """``yyyymmddHHMM`` (local time) as a FHIR dateTime; None when empty or not a date."""
    v = (value or "").strip()
    if len(v) < 8 or not v[:12].isdigit():
        return None
    try:
        if len(v) >= 12:
            dt = datetime.strptime(v[:12], "%Y%m%d%H%M")
            return dt.strftime("%Y-%m-%dT%H:%M:00") + VN_OFFSET
        return datetime.strptime(v[:8], "%Y%m%d").date().isoformat()
    except ValueError:
        return None


def birth_date(value: str | None) -> str | None:
    """NGAY_SINH (``yyyymmdd`` in 4210, ``yyyymmddHHMM`` in 130; ``00`` for an unknown
    day or month) as a FHIR date of the precision known."""
    v = (value or "").strip()[:8]
    if len(v) != 8 or not v.isdigit():
        return None
    year, month, day = v[:4], v[4:6], v[6:8]
    if month == "00":
        return year
    if day == "00":
        return f"{year}-{month}"
    try:
        return datetime.strptime(v, "%Y%m%d").date().isoformat()
    except ValueError:
        return None


def number(value: str | None) -> float | int | None:
    v = (value or "").strip()
    if not _NUMBER.match(v):
        return None
    f = float(v)
    return int(f) if f.is_integer() and "." not in v else f


def _coding(system: str, code: str | None, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": (code or "").strip()}
    if display:
        out["display"] = display
    return out


def _observation_category(code: str) -> list[dict[str, Any]]:
    """Observation.category from the HL7 observation-category codes (vital-signs,
    laboratory, imaging, procedure)."""
    return [{"coding": [_coding(OBSERVATION_CATEGORY, code, _CATEGORY_DISPLAY.get(code))]}]


def _concept(system: str, code: str | None, text: str | None = None) -> dict[str, Any]:
    code = (code or "").strip()
    text = (text or "").strip()
    out: dict[str, Any] = {}
    if code:
        out["coding"] = [_coding(system, code, text or None)]
    if text:
        out["text"] = text
    return out


def _money(value: str | None) -> dict[str, Any] | None:
    n = number(value)
    return {"value": n, "currency": VND} if n is not None else None


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    """Drop empty elements: FHIR forbids empty strings, objects and arrays."""
    out: dict[str, Any] = {}
    for k, v in resource.items():
        if isinstance(v, dict):
            v = _clean(v)
        elif isinstance(v, list):
            v = [_clean(x) if isinstance(x, dict) else x for x in v]
            v = [x for x in v if x not in ({}, "", None)]
        if v in ({}, [], "", None):
            continue
        out[k] = v
    return out


def _escape(value: str) -> str:
    """A token value in a search URL: FHIR escapes ``\\ , $ |`` with a backslash."""
    for ch in ("\\", ",", "$", "|"):
        value = value.replace(ch, "\\" + ch)
    return quote(value, safe="")


def _by_identifier(system: str, value: str) -> str:
    return f"identifier={quote(system, safe='')}%7C{_escape(value)}"


class _Builder:
    def __init__(self, visit: Visit, icd: Icd10Catalogue) -> None:
        self.visit = visit
        self.icd = icd
        # every value the mapping reads, once, through fhir_text
        self.tables = {
            name: [{k: fhir_text(v) for k, v in row.items()} for row in visit.rows(name)]
            for name in _MAPPED_TABLES
        }
        # a check-in (XML0 alone) is read from its check-in table, a full visit from XML1
        self.checkin = is_checkin(visit)
        if self.tables["XML1"]:
            self.s = self.tables["XML1"][0]
        else:
            self.s = self.tables["XML0"][0] if self.checkin else {}
        self.legacy = visit.standard == STANDARD_4210
        self.facility = visit.ma_cskcb.strip()
        self.ma_lk = visit.ma_lk.strip()
        self.entries: list[dict[str, Any]] = []
        self.record = record_system(self.facility)
        self._n = 0

    def f(self, name_130: str, name_4210: str | None = None) -> str:
        name = name_4210 if self.legacy and name_4210 else name_130
        return self.s.get(name) or ""

    def rows(self, table: str) -> list[dict[str, str]]:
        """Rows of a detail table, their values cleaned (:func:`fhir_text`)."""
        return self.tables.get(table, [])

    def url(self) -> str:
        self._n += 1
        return f"urn:uuid:{_stable_uuid(self.facility, self.ma_lk, self._n)}"

    def put(self, resource: dict[str, Any], condition: str) -> str:
        full_url = self.url()
        rtype = resource["resourceType"]
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": _clean(resource),
                "request": {"method": "PUT", "url": f"{rtype}?{condition}"},
            }
        )
        return full_url

    def put_record(self, resource: dict[str, Any], part: str) -> str:
        """Write a resource made from part of the visit under an id derived from the
        facility, MA_LK and the part: re-sending the visit updates the same resource,
        without a search per resource (the record identifier says the same for readers)."""
        value = f"{self.ma_lk}#{part}"
        resource["identifier"] = [
            {"system": self.record, "value": value},
            *resource.get("identifier", []),
        ]
        rtype = resource["resourceType"]
        resource["id"] = record_id(self.facility, self.ma_lk, part)
        full_url = self.url()
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": _clean(resource),
                "request": {"method": "PUT", "url": f"{rtype}/{resource['id']}"},
            }
        )
        return full_url

    # -- XML1 --------------------------------------------------------------

    def organization(self) -> str:
        full_url = self.url()
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": {
                    "resourceType": "Organization",
                    "identifier": [{"system": PROVIDER_CODE, "value": self.facility}],
                    "active": True,
                    "type": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                    "code": "prov",
                                    "display": "Healthcare Provider",
                                }
                            ]
                        }
                    ],
                    "name": f"Cơ sở khám bệnh, chữa bệnh {self.facility}",
                },
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": _by_identifier(PROVIDER_CODE, self.facility),
                },
            }
        )
        return full_url

    def patient(self, org: str) -> str:
        ma_bn = self.f("MA_BN")
        identifiers: list[dict[str, Any]] = [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": patient_system(self.facility),
                "value": ma_bn,
                "assigner": {"reference": org},
            },
            {"system": PATIENT_INTERNAL_ID, "value": ma_bn, "assigner": {"reference": org}},
        ]
        cccd = self.f("SO_CCCD")
        if cccd:
            identifiers.append({"use": "official", "system": CITIZEN_ID, "value": cccd})
        identifiers.extend(self.cards())
        name = " ".join(self.f("HO_TEN").split())
        words = name.split(" ")
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "meta": {"source": SOURCE},
            "identifier": identifiers,
            "name": [
                {
                    "use": "official",
                    "text": name,
                    "family": words[0] if len(words) > 1 else None,
                    "given": words[1:] if len(words) > 1 else words,
                }
            ],
            "gender": _GENDER.get(self.f("GIOI_TINH")),
            "birthDate": birth_date(self.f("NGAY_SINH")),
            "telecom": [{"system": "phone", "value": self.f("DIEN_THOAI")}]
            if self.f("DIEN_THOAI")
            else [],
            "address": self.address(),
            "managingOrganization": {"reference": org},
        }
        if self.f("KET_QUA_DTRI") in _DIED and self.f("NGAY_RA"):
            patient["deceasedDateTime"] = local_datetime(self.f("NGAY_RA"))
        condition = _by_identifier(patient_system(self.facility), ma_bn)
        if not self.checkin:
            return self.put(patient, condition)
        # a check-in creates the Patient when the facility's MA_BN is new and otherwise
        # leaves the stored one (made from an XML1, with address and telephone) as it is
        full_url = self.url()
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": _clean(patient),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition},
            }
        )
        return full_url

    def cards(self) -> list[dict[str, Any]]:
        """The visit's health-insurance cards as identifiers, in the order sent: MA_THE_BHYT
        may hold several cards separated by ``;`` (a card renewed or changed during the
        stay), with MA_DKBD, GT_THE_TU and GT_THE_DEN aligned by position. The facility of
        first registration is an extension of the identifier, as VN Core's table has it."""

        def split(name: str) -> list[str]:
            return [x.strip() for x in self.f(name).split(";")]

        cards = split("MA_THE") if self.legacy else split("MA_THE_BHYT")
        places, starts, ends = split("MA_DKBD"), split("GT_THE_TU"), split("GT_THE_DEN")

        def at(values: list[str], i: int) -> str | None:
            return values[i] if i < len(values) and values[i] else None

        out: list[dict[str, Any]] = []
        for i, card in enumerate(cards):
            if not card:
                continue
            identifier: dict[str, Any] = {
                "system": INSURANCE_NUMBER,
                "value": card,
                "period": {
                    "start": local_datetime(at(starts, i)),
                    "end": local_datetime(at(ends, i)),
                },
            }
            place = at(places, i)
            if place:
                identifier["extension"] = [
                    {
                        "url": INITIAL_REGISTRATION,
                        "valueIdentifier": {"system": PROVIDER_CODE, "value": place},
                    }
                ]
            out.append(identifier)
        return out

    def address(self) -> list[dict[str, Any]]:
        """The home address: ``DIA_CHI`` as text, and the unit codes of the residence
        (``MATINH_CU_TRU``, ``MAHUYEN_CU_TRU`` unless ``000``, ``MAXA_CU_TRU``) in the
        VN Core administrative-address extension, which the person index matches on
        without parsing the text."""
        parts = [
            (part, code)
            for part, code in (
                ("state", self.f("MATINH_CU_TRU")),
                ("district", self.f("MAHUYEN_CU_TRU")),
                ("ward", self.f("MAXA_CU_TRU")),
            )
            if code and code.isdigit() and int(code) != 0
        ]
        address: dict[str, Any] = {"use": "home"}
        if parts:
            address["extension"] = [
                {
                    "url": ADMINISTRATIVE_ADDRESS,
                    "extension": [
                        {"url": part, "valueCodeableConcept": _concept(ADMINISTRATIVE_UNIT, code)}
                        for part, code in parts
                    ],
                }
            ]
        if self.f("DIA_CHI"):
            address["text"] = self.f("DIA_CHI")
        return [address] if len(address) > 1 else []

    def encounter(
        self, full_url: str, at: int, patient: str, org: str, diagnoses: list[tuple[str, int]]
    ) -> None:
        """The Encounter entry, placed at ``at`` (its full URL was handed out before its
        diagnoses were made, since they point back at it)."""
        kind = self.f("MA_LOAI_KCB")
        klass = (_CLASS_4210 if self.legacy else _CLASS_130).get(kind, "AMB")
        rv = self.f("MA_LOAI_RV", "TINH_TRANG_RV")
        disposition = (_DISPOSITION_4210 if self.legacy else _DISPOSITION_130).get(rv)
        if self.f("KET_QUA_DTRI") in _DIED:
            disposition = "exp"
        dispo_codings = []
        if disposition:
            dispo_codings.append(_coding(DISCHARGE_DISPOSITION, disposition))
        if rv:
            dispo_codings.append(_coding(DISCHARGE_TYPE, rv))
        start = local_datetime(self.f("NGAY_VAO"))
        end = local_datetime(self.f("NGAY_RA"))
        origin = self.f("MA_NOI_DI", "MA_NOI_CHUYEN")
        destination = self.f("MA_NOI_DEN")
        days = number(self.f("SO_NGAY_DTRI"))
        # the check-in's reason is that of the admission to a stay (LY_DO_VNT)
        reason = self.f("LY_DO_VV") or (self.f("LY_DO_VNT") if self.checkin else "")
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "meta": {"tag": [dict(CHECKIN_TAG)]} if self.checkin else None,
            "identifier": [
                {"use": "official", "system": visit_system(self.facility), "value": self.ma_lk}
            ],
            "status": "finished" if end else "in-progress",
            "class": _coding(V3_ACT, klass, _CLASS_DISPLAY[klass]),
            "type": [_concept(VISIT_TYPE, kind)],
            "serviceType": _concept(DEPARTMENT, self.f("MA_KHOA")),
            "subject": {"reference": patient},
            "period": {"start": start, "end": end},
            "length": {
                "value": days,
                "unit": "d",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            }
            if isinstance(days, int | float)
            else None,
            "reasonCode": [{"text": reason}] if reason else [],
            "diagnosis": [
                {
                    "condition": {"reference": ref},
                    "use": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/diagnosis-role",
                                "code": "DD",
                                "display": "Discharge diagnosis",
                            }
                        ]
                    },
                    "rank": rank,
                }
                for ref, rank in diagnoses
            ],
            "hospitalization": {
                "origin": {"identifier": {"system": PROVIDER_CODE, "value": origin}}
                if origin
                else None,
                "destination": {"identifier": {"system": PROVIDER_CODE, "value": destination}}
                if destination
                else None,
                "dischargeDisposition": {"coding": dispo_codings} if dispo_codings else None,
            },
            "serviceProvider": {"reference": org},
        }
        if start and end and end < start:
            encounter["period"] = {"start": start}
        self.entries.insert(
            at,
            {
                "fullUrl": full_url,
                "resource": _clean(encounter),
                "request": {
                    "method": "PUT",
                    "url": f"Encounter?{_by_identifier(visit_system(self.facility), self.ma_lk)}",
                },
            },
        )

    def conditions(self, patient: str, encounter: str) -> list[tuple[str, int]]:
        main = self.f("MA_BENH_CHINH", "MA_BENH")
        others = self.f("MA_BENH_KT", "MA_BENHKHAC")
        result = self.f("KET_QUA_DTRI")
        recorded = local_datetime(self.f("NGAY_RA")) or local_datetime(self.f("NGAY_VAO"))
        out: list[tuple[str, int]] = []
        codes = [(main, "dx-main")] if main else []
        seen = {normalize_icd10(main)}
        for raw in others.split(";"):
            code = normalize_icd10(raw)
            if code and code not in seen:
                seen.add(code)
                codes.append((raw.strip(), f"dx-{code}"))

        def display(code: str) -> str | None:
            return self.icd.display(code, "vi") or self.icd.display(code, "en")

        # CHAN_DOAN_RV (TEN_BENH in 4210) lists the discharge diagnoses, several separated
        # by ';': each Condition is named by its own part of it, else by the catalogue's
        # name of its code; the whole string stays on the main diagnosis as a note
        discharge = self.f("CHAN_DOAN_RV", "TEN_BENH")
        normalised = [normalize_icd10(raw) or raw for raw, _ in codes]
        names = own_names(normalised, discharge, display) if discharge else {}
        for rank, ((_, part), code) in enumerate(zip(codes, normalised, strict=True), start=1):
            shown = display(code)
            text = names.get(code) or shown or code
            status = "resolved" if part == "dx-main" and result == "1" else "active"
            condition: dict[str, Any] = {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        _coding("http://terminology.hl7.org/CodeSystem/condition-clinical", status)
                    ]
                },
                "verificationStatus": {
                    "coding": [
                        _coding(
                            "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "confirmed",
                        )
                    ]
                },
                "category": [
                    {
                        "coding": [
                            _coding(
                                "http://terminology.hl7.org/CodeSystem/condition-category",
                                "encounter-diagnosis",
                                "Encounter Diagnosis",
                            )
                        ]
                    }
                ],
                "code": {"coding": [_coding(ICD10_SYSTEM, code, shown)], "text": text},
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "recordedDate": recorded,
            }
            if part == "dx-main" and discharge and discharge != text:
                condition["note"] = [{"text": f"Chẩn đoán ra viện: {discharge}"}]
            if part == "dx-main" and result:
                condition["extension"] = [
                    {
                        "url": f"{LT}/StructureDefinition/xml130-treatment-result",
                        "valueCodeableConcept": {"coding": [_coding(TREATMENT_RESULT, result)]},
                    }
                ]
            out.append((self.put_record(condition, part), rank))
        return out

    def body_weight(self, patient: str, encounter: str) -> None:
        kg = number(self.f("CAN_NANG"))
        if not kg:
            return
        self.put_record(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": _observation_category("vital-signs"),
                "code": {"coding": [_coding("http://loinc.org", "29463-7", "Body weight")]},
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "effectiveDateTime": local_datetime(self.f("NGAY_VAO")),
                "valueQuantity": {
                    "value": kg,
                    "unit": "kg",
                    "system": "http://unitsofmeasure.org",
                    "code": "kg",
                },
            },
            "weight",
        )

    # -- XML2 ... XML5 -----------------------------------------------------

    def drugs(self, patient: str, encounter: str) -> None:
        for n, row in enumerate(self.rows("XML2"), start=1):
            g = row.get
            dosage = "; ".join(x for x in (g("LIEU_DUNG", ""), g("CACH_DUNG", "")) if x.strip())
            qty = number(g("SO_LUONG"))
            self.put_record(
                {
                    "resourceType": "MedicationRequest",
                    "status": "completed",
                    "intent": "order",
                    "medicationCodeableConcept": _concept(
                        MEDICATION_CODE, g("MA_THUOC"), g("TEN_THUOC")
                    ),
                    "subject": {"reference": patient},
                    "encounter": {"reference": encounter},
                    "authoredOn": local_datetime(g("NGAY_YL")),
                    "requester": _practitioner(g("MA_BAC_SI")),
                    "dosageInstruction": [
                        {
                            "text": dosage,
                            "route": _concept(ROUTE, g("DUONG_DUNG")),
                            "doseAndRate": [],
                        }
                    ],
                    "dispenseRequest": {
                        "quantity": {"value": qty, "unit": (g("DON_VI_TINH") or "").strip()}
                        if qty is not None
                        else None
                    },
                    "note": [{"text": f"Hàm lượng: {g('HAM_LUONG')}"}]
                    if (g("HAM_LUONG") or "").strip()
                    else [],
                },
                f"XML2-{n}",
            )

    def services(self, patient: str, encounter: str) -> dict[str, str]:
        """ServiceRequests and Procedures of XML3; returns the ServiceRequest of each
        service code, for the DiagnosticReports of XML4."""
        ordered: dict[str, str] = {}
        for n, row in enumerate(self.rows("XML3"), start=1):
            g = row.get
            code = (g("MA_DICH_VU") or "").strip()
            group = (g("MA_NHOM") or "").strip().lstrip("0")
            if not code or (g("MA_VAT_TU") or "").strip() or group in _GROUPS_NOT_CARE:
                continue  # supplies, beds, consultations: cost lines only
            concept = _concept(PROCEDURE_CODE, code, g("TEN_DICH_VU"))
            ordered_at = local_datetime(g("NGAY_YL"))
            done_at = local_datetime(g("NGAY_TH_YL")) or ordered_at
            result_at = local_datetime(g("NGAY_KQ"))
            if group in _ORDERED_TESTS:
                ordered[code] = self.put_record(
                    {
                        "resourceType": "ServiceRequest",
                        "status": "completed",
                        "intent": "order",
                        "category": [_concept(COST_GROUP, group)],
                        "code": concept,
                        "subject": {"reference": patient},
                        "encounter": {"reference": encounter},
                        "occurrenceDateTime": done_at,
                        "authoredOn": ordered_at,
                        "requester": _practitioner(g("MA_BAC_SI")),
                    },
                    f"XML3-{n}",
                )
            else:
                period = {"start": done_at, "end": result_at}
                if done_at and result_at and result_at < done_at:
                    period = {"start": done_at}
                self.put_record(
                    {
                        "resourceType": "Procedure",
                        "status": "completed",
                        "category": _concept(COST_GROUP, group),
                        "code": concept,
                        "subject": {"reference": patient},
                        "encounter": {"reference": encounter},
                        "performedPeriod": period,
                        "performer": [{"actor": _practitioner(g("MA_BAC_SI"))}]
                        if (g("MA_BAC_SI") or "").strip()
                        else [],
                    },
                    f"XML3-{n}",
                )
        return ordered

    def service_lines(self) -> dict[str, tuple[str, str]]:
        """XML3's (MA_NHOM, TEN_DICH_VU) of each service code, the first line that has
        them (a service may be billed on several lines)."""
        lines: dict[str, tuple[str, str]] = {}
        for row in self.rows("XML3"):
            code = (row.get("MA_DICH_VU") or "").strip()
            if not code or (row.get("MA_VAT_TU") or "").strip():
                continue
            group, name = row.get("MA_NHOM") or "", row.get("TEN_DICH_VU") or ""
            known = lines.get(code, ("", ""))
            lines[code] = (known[0] or group, known[1] or name)
        return lines

    def results(self, patient: str, encounter: str, ordered: dict[str, str]) -> None:
        reports: dict[str, list[tuple[str, dict[str, str]]]] = {}
        lines = self.service_lines()
        kinds: dict[str, str] = {}
        for n, row in enumerate(self.rows("XML4"), start=1):
            g = row.get
            index_code = (g("MA_CHI_SO") or "").strip()
            service = (g("MA_DICH_VU") or "").strip()
            group, service_name = lines.get(service, ("", ""))
            kind = result_kind(group, service, service_name, g("TEN_CHI_SO"))
            kinds.setdefault(service or index_code, kind)
            raw = (g("GIA_TRI") or "").strip()
            value = number(raw.replace(",", "."))
            unit = (g("DON_VI_DO") or "").strip()
            coding = [_coding(PROCEDURE_CODE, service)] if service else []
            if index_code:
                coding.insert(0, _coding(LAB_INDEX_CODE, index_code, g("TEN_CHI_SO")))
            observation: dict[str, Any] = {
                "resourceType": "Observation",
                "status": "final",
                "category": _observation_category(kind),
                "code": {"coding": coding, "text": (g("TEN_CHI_SO") or "").strip()},
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "effectiveDateTime": local_datetime(g("NGAY_KQ")),
                "performer": [_practitioner(g("MA_BS_DOC_KQ"))]
                if (g("MA_BS_DOC_KQ") or "").strip()
                else [],
                "interpretation": [{"text": g("KET_LUAN")}]
                if (g("KET_LUAN") or "").strip()
                else [],
                "note": [{"text": g("MO_TA")}] if (g("MO_TA") or "").strip() else [],
                "basedOn": [{"reference": ordered[service]}] if service in ordered else [],
            }
            if value is not None:
                quantity: dict[str, Any] = {"value": value}
                if unit:
                    quantity.update({"unit": unit})
                observation["valueQuantity"] = quantity
            elif raw:
                observation["valueString"] = raw
            ref = self.put_record(observation, f"XML4-{n}")
            reports.setdefault(service or index_code, []).append((ref, row))
        for service, rows in reports.items():
            kind = kinds[service]
            service_name = lines.get(service, ("", ""))[1]
            if not service_name and len(rows) == 1:
                service_name = rows[0][1].get("TEN_CHI_SO") or ""
            sections = report_sections(kind, service_name, *(r.get("TEN_CHI_SO") for _, r in rows))
            dates = [d for d in (local_datetime(r.get("NGAY_KQ")) for _, r in rows) if d]
            conclusions = []
            for _, r in rows:
                c = (r.get("KET_LUAN") or "").strip()
                if c and c not in conclusions:
                    conclusions.append(c)
            self.put_record(
                {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                _coding(
                                    DIAGNOSTIC_SERVICE_SECTION,
                                    section,
                                    _SECTION_DISPLAY.get(section),
                                )
                            ]
                        }
                        for section in sections
                    ],
                    "code": _concept(PROCEDURE_CODE, service, service_name) or {"text": service},
                    "subject": {"reference": patient},
                    "encounter": {"reference": encounter},
                    "effectiveDateTime": max(dates) if dates else None,
                    "result": [{"reference": ref} for ref, _ in rows],
                    "conclusion": "; ".join(conclusions),
                    "basedOn": [{"reference": ordered[service]}] if service in ordered else [],
                },
                f"XML4-report-{service}",
            )

    def notes(self, patient: str, encounter: str) -> None:
        for n, row in enumerate(self.rows("XML5"), start=1):
            g = row.get
            text = (g("DIEN_BIEN_LS") or g("DIEN_BIEN") or "").strip()
            labelled = [
                (label, (g(name) or "").strip())
                for label, name in (
                    ("Giai đoạn bệnh", "GIAI_DOAN_BENH"),
                    ("Hội chẩn", "HOI_CHAN"),
                    ("Phẫu thuật", "PHAU_THUAT"),
                )
            ]
            when = local_datetime(g("THOI_DIEM_DBLS") or g("NGAY_YL"))
            self.put_record(
                {
                    "resourceType": "ClinicalImpression",
                    "status": "completed",
                    "code": {"text": "Diễn biến lâm sàng"},
                    "description": text,
                    "subject": {"reference": patient},
                    "encounter": {"reference": encounter},
                    "effectiveDateTime": when,
                    "date": when,
                    "assessor": _practitioner(g("NGUOI_THUC_HIEN")),
                    "summary": text,
                    "note": [{"text": f"{label}: {value}"} for label, value in labelled if value],
                },
                f"XML5-{n}",
            )

    def claim(
        self, patient: str, encounter: str, org: str, diagnoses: list[tuple[str, int]]
    ) -> None:
        items: list[dict[str, Any]] = []
        for table in ("XML2", "XML3"):
            for row in self.rows(table):
                g = row.get
                if table == "XML2":
                    product = _concept(MEDICATION_CODE, g("MA_THUOC"), g("TEN_THUOC"))
                    price, net = g("DON_GIA"), g("THANH_TIEN_BV") or g("THANH_TIEN")
                elif (g("MA_VAT_TU") or "").strip():
                    product = _concept(SUPPLY_CODE, g("MA_VAT_TU"), g("TEN_VAT_TU"))
                    price = g("DON_GIA_BV") or g("DON_GIA")
                    net = g("THANH_TIEN_BV") or g("THANH_TIEN")
                else:
                    product = _concept(PROCEDURE_CODE, g("MA_DICH_VU"), g("TEN_DICH_VU"))
                    price = g("DON_GIA_BV") or g("DON_GIA")
                    net = g("THANH_TIEN_BV") or g("THANH_TIEN")
                qty = number(g("SO_LUONG"))
                items.append(
                    {
                        "sequence": len(items) + 1,
                        "category": _concept(COST_GROUP, (g("MA_NHOM") or "").strip()),
                        "productOrService": product or {"text": table},
                        "servicedDate": (local_datetime(g("NGAY_YL")) or "")[:10] or None,
                        "quantity": {"value": qty, "unit": (g("DON_VI_TINH") or "").strip()}
                        if qty is not None
                        else None,
                        "unitPrice": _money(price),
                        "net": _money(net),
                        "encounter": [{"reference": encounter}],
                    }
                )
        # one insurance per card, the first (the card the visit is claimed under) focal
        insurance = [
            {
                "sequence": i,
                "focal": i == 1,
                "coverage": {"identifier": card, "display": f"Thẻ BHYT {card['value']}"},
            }
            for i, card in enumerate(self.cards(), start=1)
        ] or [{"sequence": 1, "focal": True, "coverage": {"display": "Không có thẻ BHYT"}}]
        kind = self.f("MA_LOAI_KCB")
        inpatient = (_CLASS_4210 if self.legacy else _CLASS_130).get(kind) in ("IMP", "SS")
        created = (
            local_datetime(self.f("NGAY_TTOAN"))
            or local_datetime(self.f("NGAY_RA"))
            or local_datetime(self.f("NGAY_VAO"))
        )
        self.put_record(
            {
                "resourceType": "Claim",
                "status": "active",
                "type": {
                    "coding": [
                        _coding(
                            "http://terminology.hl7.org/CodeSystem/claim-type",
                            "institutional" if inpatient else "professional",
                        )
                    ]
                },
                "use": "claim",
                "patient": {"reference": patient},
                "billablePeriod": {
                    "start": local_datetime(self.f("NGAY_VAO")),
                    "end": local_datetime(self.f("NGAY_RA")),
                },
                "created": created,
                "provider": {"reference": org},
                "priority": {
                    "coding": [
                        _coding("http://terminology.hl7.org/CodeSystem/processpriority", "normal")
                    ]
                },
                "insurance": insurance,
                "diagnosis": [
                    {"sequence": rank, "diagnosisReference": {"reference": ref}}
                    for ref, rank in diagnoses
                ],
                "item": items,
                "total": _money(self.f("T_TONGCHI_BV", "T_TONGCHI")),
            },
            "claim",
        )

    def build(self) -> dict[str, Any]:
        org = self.organization()
        patient = self.patient(org)
        encounter_at, encounter = len(self.entries), self.url()
        if self.checkin:  # the visit has begun: nothing else of it is known yet
            self.encounter(encounter, encounter_at, patient, org, [])
            return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
        diagnoses = self.conditions(patient, encounter)
        self.encounter(encounter, encounter_at, patient, org, diagnoses)
        self.body_weight(patient, encounter)
        self.drugs(patient, encounter)
        ordered = self.services(patient, encounter)
        self.results(patient, encounter, ordered)
        self.notes(patient, encounter)
        self.claim(patient, encounter, org, diagnoses)
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


def _practitioner(license_no: str | None) -> dict[str, Any] | None:
    v = (license_no or "").strip()
    return {"identifier": {"system": PRACTITIONER_LICENSE, "value": v}} if v else None


def record_id(facility: str, ma_lk: str, part: str) -> str:
    """The id of the resource made from ``part`` of a facility's visit ``MA_LK``."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{LT}/xml130/{facility}/{ma_lk}#{part}"))


def _stable_uuid(facility: str, ma_lk: str, n: int) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{LT}/xml130/{facility}/{ma_lk}/{n}"))


def visit_bundle(visit: Visit, icd: Icd10Catalogue) -> dict[str, Any]:
    """The transaction Bundle of one visit (which must have passed validation)."""
    return _Builder(visit, icd).build()


Mapper = Callable[[Visit, Icd10Catalogue], dict[str, Any]]
