"""Build ``lienthong/terminology/data/icd10_qd4469.json.gz`` from the Ministry's workbook.

The ICD-10 list of Decision 4469/QĐ-BYT of 28/10/2020 (Phụ lục 1, workbook
``icd10_qd4469.xlsx``, sheet ``ICD10``) is read with the platform's own reader
(:func:`lienthong.terminology.icd10.read_workbook`: one normalised code per row, dagger and
asterisk duplicates folded) and written as a compact file the package ships, with a header
citing the decision, the workbook (name and SHA-256) and this script, so that a fresh
installation checks codes against the Ministry's list without the workbook::

    python scripts/build_icd10_list.py ../shared/standards/icd10_qd4469.xlsx

Rebuilding from the same workbook writes the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lienthong.terminology.icd10 import WorkbookError, read_workbook
from lienthong.terminology.shipped import SHIPPED_PATH, derive, encode

DEFAULT_WORKBOOK = Path(__file__).resolve().parents[2] / "shared/standards/icd10_qd4469.xlsx"


def main(argv: list[str]) -> int:
    workbook = Path(argv[1]) if len(argv) > 1 else DEFAULT_WORKBOOK
    out = Path(argv[2]) if len(argv) > 2 else SHIPPED_PATH
    if not workbook.is_file():
        print(f"{workbook}: no such file", file=sys.stderr)
        return 2
    try:
        concepts = read_workbook(workbook)
    except WorkbookError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    data = encode(derive(concepts, workbook))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    print(f"{out}: {len(concepts):,} codes from {workbook.name}, {len(data):,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
