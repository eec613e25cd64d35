"""ICD-10 as the Ministry of Health publishes it, and as the WHO does.

Vietnamese records code diagnoses in ICD-10 as listed by the Ministry of
Health (Decision 4469/QĐ-BYT of 2020, replacing 7603/QĐ-BYT of 2018): the
WHO classification with Vietnamese names and a few national additions. The
list comes as a workbook whose sheet ``ICD10`` has one row per code with its
chapter, group and category, the code with its dot (``A00.0``) and without
(``A000``), and English and Vietnamese names. Codes carry the WHO dagger
(``A17.0†``, the aetiology) or asterisk (``G01*``, the manifestation) marks,
and some appear twice, with and without the mark.

Every place that compares ICD-10 codes (the XML 130 validator, the FHIR
mapper, ``$lookup``, ``$validate-code``) goes through :func:`normalize_icd10`,
so ``a09.0``, ``A090``, ``A09.0†`` and ``A09.0*`` are one code, ``A09.0``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
"""The system VN Core's condition-code ValueSet includes (and HL7's ICD-10 URI)."""
ICD10_ALIASES = frozenset({ICD10_SYSTEM, "http://terminology.hl7.org/CodeSystem/icd10"})
"""VN Core's own CodeSystem-icd10 resource names the terminology.hl7.org URL: accept both."""
ICD10_ALL_CODES_VALUESET = "http://hl7.org/fhir/ValueSet/icd-10"
"""The implicit value set of every code of the CodeSystem (its ``valueSet`` element)."""
ICD10_SHEET = "ICD10"
DEFAULT_VERSION = "QĐ 4469/QĐ-BYT"

_MARKS = str.maketrans("", "", "†*+!. \t")
_SHAPE = re.compile(r"^[A-Z][0-9]{2}[0-9A-Z]{0,3}$")

# the workbook's header cells (row 3), matched after folding case and spaces
_COLUMNS = {
    "chapter": "MÃ CHƯƠNG",
    "chapter_en": "CHAPTER NAME",
    "chapter_vi": "TÊN CHƯƠNG",
    "group": "MÃ NHÓM CHÍNH",
    "group_en": "MAIN GROUP NAME I",
    "group_vi": "TÊN NHÓM CHÍNH",
    "code": "MÃ BỆNH",
    "name_en": "DISEASE NAME",
    "name_vi": "TÊN BỆNH",
}


class WorkbookError(ValueError):
    """The file is not an ICD-10 list in the Ministry's layout; the message says why."""


def normalize_icd10(code: str | None) -> str | None:
    """The one form of an ICD-10 code the platform compares: upper case, dotted after the
    category (``A09.0``), without dagger/asterisk marks. None when ``code`` cannot be an
    ICD-10 code at all (wrong shape), so callers can tell a malformed code from an unknown one.
    """
    if code is None:
        return None
    s = code.strip().upper().translate(_MARKS)
    if not _SHAPE.match(s):
        return None
    return s if len(s) == 3 else f"{s[:3]}.{s[3:]}"


def icd10_mark(code: str) -> str | None:
    """The dagger (``†``, also typed ``+``) or asterisk (``*``) a code is written with."""
    s = code.strip()
    if s.endswith("*"):
        return "*"
    if s.endswith(("†", "+")):
        return "†"
    return None


@dataclass
class Icd10Concept:
    code: str
    display_vi: str
    display_en: str
    parent: str | None = None
    chapter: str | None = None
    marks: set[str] = field(default_factory=set)
    group: str | None = None
    """the main group (``MÃ NHÓM CHÍNH``, a code range such as ``A00-A09``)"""
    chapter_names: tuple[str, str] = ("", "")
    """(Vietnamese, English) name of the chapter, as the row gives it"""
    group_names: tuple[str, str] = ("", "")
    """(Vietnamese, English) name of the main group, as the row gives it"""


def _clean(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def read_workbook(path: Path) -> list[Icd10Concept]:
    """The codes of a QĐ 4469 workbook, one concept per normalised code, in file order.

    Raises :class:`WorkbookError` naming what is missing when the file does not have the
    Ministry's layout (sheet ``ICD10``, a header row with the code and name columns).
    """
    from zipfile import BadZipFile

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, InvalidFileException, OSError, KeyError, ValueError) as exc:
        raise WorkbookError(f"{path}: not an Excel workbook ({exc})") from None
    try:
        if ICD10_SHEET not in wb.sheetnames:
            raise WorkbookError(
                f"{path}: no sheet {ICD10_SHEET!r} (sheets: {', '.join(wb.sheetnames)})"
            )
        rows = wb[ICD10_SHEET].iter_rows(values_only=True)
        columns = _header(path, rows)
        concepts: dict[str, Icd10Concept] = {}
        for line, row in enumerate(rows, start=columns.pop("_line") + 1):
            parsed = _concept(path, line, row, columns)
            if parsed is None:
                continue
            raw, concept = parsed
            mark = icd10_mark(raw)
            known = concepts.get(concept.code)
            if known is None:
                concepts[concept.code] = concept
                known = concept
            if mark:
                known.marks.add(mark)
    finally:
        wb.close()
    if not concepts:
        raise WorkbookError(f"{path}: sheet {ICD10_SHEET!r} lists no codes")
    for concept in concepts.values():
        if len(concept.code) > 3:
            parent = concept.code[:-1].rstrip(".")
            while parent not in concepts and len(parent) > 3:
                parent = parent[:-1].rstrip(".")
            concept.parent = parent if parent in concepts else None
    return list(concepts.values())


def _header(path: Path, rows: Iterator[tuple[Any, ...]]) -> dict[str, int]:
    for line, row in enumerate(rows, start=1):
        cells = [_clean(c).upper() for c in row]
        if _COLUMNS["code"] in cells and _COLUMNS["name_vi"] in cells:
            found = {"_line": line}
            for key, title in _COLUMNS.items():
                if title in cells:
                    found[key] = cells.index(title)
            missing = [t for k, t in _COLUMNS.items() if k not in found and k in _REQUIRED]
            if missing:
                raise WorkbookError(f"{path}: header row {line} lacks {', '.join(missing)}")
            return found
        if line > 20:
            break
    raise WorkbookError(
        f"{path}: no header row with {_COLUMNS['code']!r} and {_COLUMNS['name_vi']!r} "
        f"in the first 20 rows of sheet {ICD10_SHEET!r}"
    )


_REQUIRED = {"code", "name_vi", "name_en"}


def _concept(
    path: Path, line: int, row: tuple[Any, ...], columns: dict[str, int]
) -> tuple[str, Icd10Concept] | None:
    def cell(key: str) -> str:
        i = columns.get(key)
        return _clean(row[i]) if i is not None and i < len(row) else ""

    raw = cell("code")
    if not raw:
        return None  # blank and note rows
    code = normalize_icd10(raw)
    if code is None:
        raise WorkbookError(f"{path}: row {line}: {_COLUMNS['code']} {raw!r} is not an ICD-10 code")
    vi, en = cell("name_vi").lstrip("?"), cell("name_en")
    if not vi and not en:
        raise WorkbookError(f"{path}: row {line}: code {raw} has no name")
    return raw, Icd10Concept(
        code,
        vi or en,
        en or vi,
        chapter=cell("chapter") or None,
        group=cell("group") or None,
        chapter_names=(cell("chapter_vi"), cell("chapter_en")),
        group_names=(cell("group_vi"), cell("group_en")),
    )


def code_system(concepts: list[Icd10Concept], version: str, source: str) -> dict[str, Any]:
    """The FHIR CodeSystem of the list: Vietnamese displays (the Ministry's language), an
    English designation for each, the category as ``parent``, the chapter, and the
    dagger/asterisk mark the list gives a code."""
    out: list[dict[str, Any]] = []
    for c in concepts:
        concept: dict[str, Any] = {
            "code": c.code,
            "display": c.display_vi,
            "designation": [
                {"language": "vi", "value": c.display_vi},
                {"language": "en", "value": c.display_en},
            ],
        }
        props: list[dict[str, Any]] = []
        if c.parent:
            props.append({"code": "parent", "valueCode": c.parent})
        if c.chapter:
            props.append({"code": "chapter", "valueString": c.chapter})
        for mark in sorted(c.marks):
            props.append({"code": "dagger-asterisk", "valueString": mark})
        if props:
            concept["property"] = props
        out.append(concept)
    return {
        "resourceType": "CodeSystem",
        "url": ICD10_SYSTEM,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.16.840.1.113883.6.3"}],
        "version": version,
        "name": "ICD10VN",
        "title": "ICD-10 (Bộ Y tế Việt Nam)",
        "status": "active",
        "date": _today(),
        "publisher": "Bộ Y tế Việt Nam",
        "description": (
            f"International Classification of Diseases, 10th revision, as listed by the Ministry "
            f"of Health of Viet Nam ({version}); loaded from {source}."
        ),
        "language": "vi",
        "caseSensitive": False,
        "valueSet": ICD10_ALL_CODES_VALUESET,
        "hierarchyMeaning": "is-a",
        "content": "complete",
        "count": len(out),
        "property": [
            {
                "code": "parent",
                "uri": "http://hl7.org/fhir/concept-properties#parent",
                "description": "the category a sub-category refines",
                "type": "code",
            },
            {"code": "chapter", "description": "the chapter's code range", "type": "string"},
            {
                "code": "dagger-asterisk",
                "description": "† aetiology (dagger) or * manifestation (asterisk) code",
                "type": "string",
            },
        ],
        "concept": out,
    }


def _today() -> str:
    from datetime import date

    return date.today().isoformat()
