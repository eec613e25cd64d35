"""Build ``lienthong/ingest/xml130/dictionary_130.py`` from the two official field lists.

Two official workbooks describe the fields of the hospital XML tables of QĐ 130/QĐ-BYT as
amended by QĐ 4750/QĐ-BYT, and they do not always agree:

* the QĐ 4750 appendix (``qd4750_appendix.xlsx``): the Ministry's text — per field the QĐ
  130 type and maximum size, and a column of corrections and amendments ("Đổi kiểu dữ liệu
  thành chuỗi", "Tăng kích thước tối đa lên 50 ký tự", "... thì để trống trường thông tin
  này");
* the social-insurance gateway's field list (``qd4750_validation_rules.xlsx``): type,
  maximum size, the "required" column (``x``) and the gateway's VALID notes.

One entry per field is derived from both, by these rules (written in the generated file
beside each entry that they change):

* required: the gateway's ``x``, unless its VALID note makes the field optional ("Sửa thành
  Không bắt buộc") or either text says when to leave the field empty ("Trường hợp chưa có
  tên chỉ số thì để trống trường thông tin này", "Trường hợp không có thông tin ở trường
  này ..."). Conditional requirements written
  in the required column ("Bắt buộc khi MA_NHOM = 10") are not flags: ``rules.py`` checks
  them.
* type: a number only when both sources, after the appendix's amendments, say number; a
  field either calls a string may hold what a string holds.
* maximum size: the larger of the two, unbounded when either says ``n``: a value one
  official source allows is not reported as too long.

The check-in table (sheet "Bang Check-in" of both workbooks, sent at admission before the
visit's XML1 exists) is read like the others, as ``XML0``.

The project keeps the result, citing the sheet rows, and runs without the workbooks::

    python scripts/build_xml130_dictionary.py ../shared/standards/qd4750_validation_rules.xlsx \
        ../shared/standards/qd4750_appendix.xlsx
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import openpyxl

OUT = Path(__file__).resolve().parents[1] / "src/lienthong/ingest/xml130/dictionary_130.py"
_SHEET = re.compile(r"bang\s*(\d+)", re.IGNORECASE)
# the check-in table ("Bang Check-in"), sent at admission before the visit's XML1: XML0
_CHECKIN_SHEET = re.compile(r"check\s*-?\s*in", re.IGNORECASE)
_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
_GROW = re.compile(r"tăng kích thước tối đa lên (\d+)", re.IGNORECASE)
_TO_STRING = re.compile(r"đổi kiểu dữ liệu thành chuỗi", re.IGNORECASE)
_LEAVE_EMPTY = re.compile(
    r"để trống trường thông tin này|trường thông tin này để trống|không có thông tin ở trường này",
    re.IGNORECASE,
)
_NOT_REQUIRED = re.compile(r"không bắt buộc trường này", re.IGNORECASE)


@dataclass
class Row:
    """One field of one source: sheet row, type (S/N), size (None: n), required, notes."""

    row: int
    kind: str
    size: int | None
    required: bool
    note: str


def _kind(raw: object) -> str:
    return "N" if str(raw).strip().lower() == "số" else "S"


def _size(raw: object) -> int | None:
    text = str(raw).strip() if raw is not None else "n"
    return int(text) if text.isdigit() else None


def _sheets(path: Path) -> dict[str, list[tuple[int, tuple[object, ...]]]]:
    book = openpyxl.load_workbook(path, read_only=True)
    out: dict[str, list[tuple[int, tuple[object, ...]]]] = {}
    for sheet in book.worksheets:
        m = _SHEET.search(sheet.title)
        if m is not None:
            table = f"XML{int(m.group(1))}"
        elif _CHECKIN_SHEET.search(sheet.title):
            table = "XML0"
        else:
            continue
        rows = out.setdefault(table, [])
        for n, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            if len(row) < 4 or not isinstance(row[1], str):
                continue
            name = row[1].strip().upper()
            if _FIELD.fullmatch(name) and row[2] is not None:
                rows.append((n, tuple(row)))
    return out


def read_gateway(path: Path) -> dict[str, dict[str, Row]]:
    tables: dict[str, dict[str, Row]] = {}
    for table, rows in _sheets(path).items():
        fields = tables.setdefault(table, {})
        for n, row in rows:
            required_col = str(row[5] or "").strip().lower() if len(row) > 5 else ""
            notes = " ".join(str(c) for c in (row[4], *row[6:]) if c)
            fields[str(row[1]).strip().upper()] = Row(
                n, _kind(row[2]), _size(row[3]), required_col == "x", notes
            )
    return tables


def read_appendix(path: Path) -> dict[str, dict[str, Row]]:
    tables: dict[str, dict[str, Row]] = {}
    for table, rows in _sheets(path).items():
        fields = tables.setdefault(table, {})
        for n, row in rows:
            amendment = str(row[5] or "") if len(row) > 5 else ""
            text = f"{row[4] or ''} {amendment}"
            kind, size = _kind(row[2]), _size(row[3])
            if _TO_STRING.search(amendment):
                kind = "S"
            grown = _GROW.search(amendment)
            if grown:
                size = int(grown.group(1))
            fields[str(row[1]).strip().upper()] = Row(n, kind, size, False, text)
    return tables


Entry = tuple[str, str, int | None, bool, int, int, str]


def merge(
    gateway: dict[str, dict[str, Row]], appendix: dict[str, dict[str, Row]]
) -> dict[str, list[Entry]]:
    """(field, kind, size, required, gateway row, appendix row, note) per table, in the
    gateway's order, then fields only the appendix has; rows are 0 where a source lacks
    the field; the note says what was followed where the sources differ."""
    out: dict[str, list[Entry]] = {}
    for table in sorted(set(gateway) | set(appendix), key=lambda t: int(t[3:])):
        g_fields, a_fields = gateway.get(table, {}), appendix.get(table, {})
        names = list(g_fields) + [n for n in a_fields if n not in g_fields]
        entries: list[Entry] = []
        for name in names:
            g, a = g_fields.get(name), a_fields.get(name)
            notes: list[str] = []
            if g is None or a is None:
                only = g or a
                assert only is not None
                notes.append(f"only in the {'gateway list' if a is None else 'appendix'}")
                kind, size, required = only.kind, only.size, only.required
            else:
                kind = "N" if g.kind == a.kind == "N" else "S"
                if g.kind != a.kind:
                    word = {"N": "number", "S": "string"}
                    notes.append(f"type: gateway {word[g.kind]}, appendix {word[a.kind]}")
                size = None if g.size is None or a.size is None else max(g.size, a.size)
                if g.size != a.size:
                    notes.append(f"size: gateway {g.size or 'n'}, appendix {a.size or 'n'}")
                required = g.required
            texts = [(r, w) for r, w in ((g, "gateway list"), (a, "appendix")) if r is not None]
            if required and any(_NOT_REQUIRED.search(r.note) for r, _ in texts):
                required = False
                notes.append("optional: the gateway's VALID note")
            leave_empty = [w for r, w in texts if _LEAVE_EMPTY.search(r.note)]
            if required and leave_empty:
                required = False
                notes.append(f"optional: the {leave_empty[-1]} says when to leave it empty")
            entries.append(
                (name, kind, size, required, g.row if g else 0, a.row if a else 0, "; ".join(notes))
            )
        out[table] = entries
    return out


def render(tables: dict[str, list[Entry]], gateway: str, appendix: str) -> str:
    lines = [
        '"""Field dictionary of the hospital XML tables (QĐ 130/QĐ-BYT as amended by QĐ 4750).',
        "",
        "Generated by ``scripts/build_xml130_dictionary.py`` from the social-insurance",
        f"gateway's field list ``{gateway}`` and the QĐ 4750 appendix",
        f"``{appendix}`` (the script says how the two are merged: a number only when both",
        "say number, the larger size, optional where either source makes it so). Each entry is",
        "``(field, kind, max_size, required, gateway_row, appendix_row, note)``: kind ``S``",
        "string or ``N`` number, max_size ``None`` for unbounded (``n``), the rows those of the",
        "field in each workbook's sheet for that table (0: not there), the note where and how",
        "the two sources differ.",
        '"""',
        "",
        "FIELDS_130: dict[str, tuple[tuple[str, str, int | None, bool, int, int, str], ...]] = {",
    ]
    for table, entries in tables.items():
        lines.append(f'    "{table}": (')
        for name, kind, size, required, g_row, a_row, note in entries:
            parts = [f'"{name}"', f'"{kind}"', str(size), str(required), str(g_row)]
            parts += [str(a_row), f'"{note}"']
            line = f"        ({', '.join(parts)}),"
            if len(line) <= 100:
                lines.append(line)
            else:  # the layout ruff format gives a tuple too long for one line
                lines.append("        (")
                lines.extend(f"            {part}," for part in parts)
                lines.append("        ),")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    gateway, appendix = Path(argv[1]), Path(argv[2])
    tables = merge(read_gateway(gateway), read_appendix(appendix))
    OUT.write_text(render(tables, gateway.name, appendix.name), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
