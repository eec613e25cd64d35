"""The Ministry's ICD-10 list as the platform ships it (``data/icd10_qd4469.json.gz``).

The file is derived by ``scripts/build_icd10_list.py`` from the official workbook of
Decision 4469/QĐ-BYT of 28/10/2020 (Phụ lục 1, sheet ``ICD10``), read with
:func:`lienthong.terminology.icd10.read_workbook`, so a fresh installation checks codes
against the list Vietnamese facilities code with. Its header cites the source: the
decision, the workbook's name, its SHA-256, the annex heading as the workbook prints it,
and the script.

Layout (JSON, gzip): ``about`` (the citation), ``version`` (the CodeSystem version label),
``columns`` naming the fields of each row of ``codes`` — code (normalised), Vietnamese
name, English name, parent category, chapter code range, main group code range,
dagger/asterisk marks — and ``chapters`` / ``groups``: code range to (Vietnamese, English)
name. The writer is deterministic (sorted chapters and groups, gzip without a timestamp), so
rebuilding from the same workbook gives the same bytes.

Names are the workbook's, as published: where it slips they are kept, not corrected (its
English name of ``I10``, "Other rheumatic heart diseases", is that of ``I09``; the English
column of ``A97`` is Vietnamese), since the platform follows the official list and a
corrected list arrives as a new workbook loaded with ``lienthong terminology load``.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import orjson

from lienthong.terminology.icd10 import DEFAULT_VERSION, ICD10_SHEET, Icd10Concept

SHIPPED_PATH = Path(__file__).resolve().parent / "data" / "icd10_qd4469.json.gz"
FORMAT = 1
COLUMNS = ("code", "vi", "en", "parent", "chapter", "group", "marks")
DECISION = (
    "Quyết định 4469/QĐ-BYT ngày 28/10/2020 của Bộ trưởng Bộ Y tế (Decision 4469/QĐ-BYT of "
    "28/10/2020 of the Minister of Health), Phụ lục 1: danh mục mã bệnh ICD-10, replacing the "
    "list of Decision 7603/QĐ-BYT of 25/12/2018"
)
SCRIPT = "scripts/build_icd10_list.py"


class ShippedListError(ValueError):
    """The shipped file is missing or not in the layout this module writes."""


def workbook_heading(path: Path) -> list[str]:
    """The title lines above the header row of the workbook's ``ICD10`` sheet, as printed."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        lines: list[str] = []
        for row in wb[ICD10_SHEET].iter_rows(min_row=1, max_row=2, values_only=True):
            text = " ".join(str(c).strip() for c in row if c is not None and str(c).strip())
            if text:
                lines.append(text)
        return lines
    finally:
        wb.close()


def derive(concepts: list[Icd10Concept], workbook: Path) -> dict[str, Any]:
    """The shipped payload of the concepts read from ``workbook`` (in the workbook's order)."""
    chapters: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    codes: list[list[str | None]] = []
    for c in concepts:
        if c.chapter and any(c.chapter_names):
            chapters.setdefault(c.chapter, list(c.chapter_names))
        if c.group and any(c.group_names):
            groups.setdefault(c.group, list(c.group_names))
        codes.append(
            [
                c.code,
                c.display_vi,
                c.display_en,
                c.parent,
                c.chapter,
                c.group,
                "".join(sorted(c.marks)) or None,
            ]
        )
    return {
        "about": {
            "title": "ICD-10 as listed by the Ministry of Health of Viet Nam",
            "decision": DECISION,
            "workbook": workbook.name,
            "workbook_sha256": hashlib.sha256(workbook.read_bytes()).hexdigest(),
            "sheet": ICD10_SHEET,
            "heading": workbook_heading(workbook),
            "built_by": SCRIPT,
            "codes": len(codes),
        },
        "format": FORMAT,
        "version": DEFAULT_VERSION,
        "columns": list(COLUMNS),
        "chapters": dict(sorted(chapters.items())),
        "groups": dict(sorted(groups.items())),
        "codes": codes,
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The file's bytes: JSON, gzip at level 9 with no timestamp (reproducible)."""
    return gzip.compress(orjson.dumps(payload), compresslevel=9, mtime=0)


def read_shipped(path: Path = SHIPPED_PATH) -> dict[str, Any]:
    """The payload of the shipped file; :class:`ShippedListError` says what is wrong."""
    try:
        payload = orjson.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, gzip.BadGzipFile, orjson.JSONDecodeError) as exc:
        raise ShippedListError(f"{path}: the shipped ICD-10 list cannot be read ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ShippedListError(f"{path}: not an ICD-10 list of format {FORMAT}")
    if payload.get("columns") != list(COLUMNS) or not payload.get("codes"):
        raise ShippedListError(f"{path}: columns are not {', '.join(COLUMNS)}, or no codes")
    return payload
