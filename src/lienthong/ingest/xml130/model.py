"""What the parser hands to validation and mapping: one visit of a hospital XML export.

A visit (hồ sơ) is everything a facility sends about one stay or consultation, keyed by
``MA_LK``: the summary table XML1 and the detail tables XML2 ... XML15. Values stay the raw
text of the file so that validation can report exactly what the facility sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STANDARD_130 = "130"  # QĐ 130/QĐ-BYT (2023) as amended by QĐ 4750/QĐ-BYT
STANDARD_4210 = "4210"  # QĐ 4210/QĐ-BYT (2017), the legacy field set still in archives


class Xml130Error(ValueError):
    """A file that cannot be read safely or completely (hostile, broken or too large).

    The message names the file and the reason; a caller writes nothing from such a file.
    """


@dataclass
class Visit:
    """One visit (hồ sơ) of an XML 130 / 4210 export, keyed by its MA_LK."""

    file: str  # the source file's name
    ma_lk: str
    standard: str  # "130" (QĐ 130 as amended by QĐ 4750) or "4210"
    # "XML1".."XML15" -> rows; keys are the standard's upper-case field names, values the
    # raw text (an empty element gives "")
    tables: dict[str, list[dict[str, str]]]
    # MACSKCB, NGAYLAP, SOLUONGHOSO ... (empty for bare tables)
    envelope: dict[str, str] = field(default_factory=dict)
    # position of the visit in its file (1-based), so reports can point into big files
    index: int = 0
    # tables of this visit that could not be read (bad base64, an empty or missing
    # NOIDUNGFILE, not well-formed XML, a DOCTYPE inside the table, an unknown LOAIHOSO;
    # in a wrapper of bare tables, an element that is no table of the standard): (table
    # name as sent, reason), every one of them in file order. A broken table costs only
    # the visit it belongs to; validation reports each one as a blocking problem.
    broken: list[tuple[str, str]] = field(default_factory=list)
    # what the reader noticed but could store faithfully all the same: a table that is no
    # table of the standard (ignored), a table whose LOAIHOSO is wrong but whose root element
    # names it: (table name as sent, what was done). Validation reports each one as a
    # conformance problem.
    notices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, str]:
        """The XML1 row (visit summary); empty when the file carried no XML1 for it."""
        rows = self.tables.get("XML1")
        return rows[0] if rows else {}

    @property
    def ma_cskcb(self) -> str:
        """Facility code: the envelope's MACSKCB, else XML1's MA_CSKCB, else (a check-in
        sent before the visit's XML1) the check-in table's MA_CSKCB."""
        checkin = self.tables.get("XML0")
        return (
            self.envelope.get("MACSKCB")
            or self.summary.get("MA_CSKCB", "")
            or (checkin[0].get("MA_CSKCB", "") if checkin else "")
        )

    def rows(self, table: str) -> list[dict[str, str]]:
        """Rows of one table ("XML2" ...), empty when absent."""
        return self.tables.get(table, [])
