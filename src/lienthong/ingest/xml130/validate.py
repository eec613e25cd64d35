"""Conformance checks of hospital XML exports against QĐ 130/4750 (and legacy QĐ 4210).

Every problem names the file, the visit (``MA_LK``), the table, the field, the rule (see
:data:`rules.RULES`), a message a vendor can act on, the offending value and its severity
(:func:`rules.severity`): *blocking* when the visit cannot be stored faithfully (no key, no
patient name or birth date, an unreadable table, rows of a visit that is not there ...),
*conformance* otherwise. Problems are produced per visit so that an ingest step can store
the visits of a file that have no blocking problem and report the others; problems of the
file as a whole (unreadable, envelope count) are kept apart.

A check-in (the check-in table XML0 alone, sent at admission before the visit's XML1
exists, :func:`rules.is_checkin`) is a visit that has begun, not rows without a summary: its
fields are checked as XML1's are, and the identity rules (MA_LK, HO_TEN, NGAY_SINH, NGAY_VAO)
block it. In a visit that has its XML1 the check-in table is checked too, but its problems
are conformance problems (``Problem.aside``): the record is made from XML1.
"""

from __future__ import annotations

import calendar
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from lienthong.identity.identifiers import check_bhyt, check_cccd, check_facility_code
from lienthong.ingest.xml130.model import STANDARD_130, Visit, Xml130Error
from lienthong.ingest.xml130.parse import (
    DEFAULT_MAX_BYTES,
    BareGroup,
    GroupReader,
    group_inputs,
    parse,
    table_name,
)
from lienthong.ingest.xml130.rules import (
    BLOCKING,
    CARD_FIELD,
    CHECKIN,
    CODE_LISTS,
    CONFORMANCE,
    COUNTED_DAY_VISITS,
    DATE_FIELDS,
    DATE_OR_TIME_FIELDS,
    DATE_ORDER,
    DECIMAL_TEXT_FIELDS,
    DIAGNOSIS_FIELDS,
    FIELDS,
    MONEY_TOLERANCE,
    TIME_FIELDS,
    TOTALS,
    ZERO_DAY_VISITS,
    FieldSpec,
    is_checkin,
    severity,
)


@dataclass(frozen=True)
class Problem:
    """One departure from the standard, in the words a vendor needs to fix it."""

    file: str
    ma_lk: str
    table: str
    field: str
    rule: str
    message: str
    value: str
    # a problem of a table the record is not made from (the check-in table of a visit that
    # has its XML1): reported, never blocking
    aside: bool = False

    @property
    def severity(self) -> str:
        """``blocking`` (the visit cannot be stored faithfully) or ``conformance``, from
        the rule and field (:data:`rules.BLOCKING_PROBLEMS`); conformance when ``aside``."""
        if self.aside:
            return CONFORMANCE
        return severity(self.rule, self.table, self.field)

    @property
    def blocking(self) -> bool:
        return self.severity == BLOCKING

    def as_dict(self) -> dict[str, str]:
        return {
            "file": self.file,
            "ma_lk": self.ma_lk,
            "table": self.table,
            "field": self.field,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "value": self.value,
        }


def blocking(problems: Iterable[Problem]) -> bool:
    """True when any of a visit's problems keeps it out of the store."""
    return any(p.blocking for p in problems)


class IcdCatalogue(Protocol):
    """Anything that can tell whether an ICD-10 code exists (the loaded QĐ 4469 list or
    the WHO classification)."""

    def exists(self, code: str) -> bool: ...


def default_icd_catalogue() -> IcdCatalogue:
    """What codes are checked against when no catalogue is given: the Ministry's ICD-10
    list (QĐ 4469/QĐ-BYT) shipped with the package."""
    from lienthong.terminology.catalogue import default_icd10_catalogue

    return default_icd10_catalogue()


class _Memo:
    """Remembers answers of a catalogue: exports repeat the same few hundred codes."""

    def __init__(self, catalogue: IcdCatalogue) -> None:
        self.catalogue = catalogue
        self.known: dict[str, bool] = {}

    def exists(self, code: str) -> bool:
        answer = self.known.get(code)
        if answer is None:
            answer = self.known[code] = bool(self.catalogue.exists(code))
        return answer


# ---------------------------------------------------------------- value checks
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
# a decimal comma where the standard writes a point ("12500,5"); "1,000,000" is no number
DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
_DIGITS = re.compile(r"\d+")
_PASSPORT = re.compile(r"[A-Z]\d{7}")
_GOI_VTYT = re.compile(r"G([1-9]\d{0,2})")


_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _valid_date(y: int, m: int, d: int) -> bool:
    if y < 1900 or not 1 <= m <= 12 or d < 1:
        return False
    if m == 2 and d == 29:
        return calendar.isleap(y)
    return d <= _MONTH_DAYS[m]


def _is_number(value: str) -> bool:
    return value.isdigit() or _NUMBER.fullmatch(value) is not None


@lru_cache(maxsize=100_000)
def _time_error(value: str) -> str | None:
    """Reason a yyyymmddHHMM value is wrong, or None."""
    if len(value) != 12 or not value.isdigit():
        return f"must be 12 digits yyyymmddHHMM, got {len(value)} characters"
    y, m, d, hh, mm = (
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[8:10]),
        int(value[10:12]),
    )
    if not _valid_date(y, m, d):
        return "is not a calendar date"
    if hh > 23 or mm > 59:
        return "has an hour above 23 or a minute above 59"
    return None


def _date_error(value: str) -> str | None:
    if len(value) != 8 or not value.isdigit():
        return f"must be 8 digits yyyymmdd, got {len(value)} characters"
    if not _valid_date(int(value[:4]), int(value[4:6]), int(value[6:8])):
        return "is not a calendar date"
    return None


def _birth_error(value: str, standard: str) -> str | None:
    """NGAY_SINH: 12 characters in QĐ 130 (unknown day and month 0000, unknown time 0000),
    8 in QĐ 4210."""
    size = 12 if standard == STANDARD_130 else 8
    if len(value) != size or not value.isdigit():
        return f"must be {size} digits ({'yyyymmddHHMM' if size == 12 else 'yyyymmdd'})"
    y, md = int(value[:4]), value[4:8]
    if md != "0000" and not _valid_date(y, int(md[:2]), int(md[2:])):
        return "is not a calendar date (use 0000 for an unknown day and month)"
    if size == 12 and (int(value[8:10]) > 23 or int(value[10:12]) > 59):
        return "has an hour above 23 or a minute above 59"
    return None


def _number(value: str | None) -> float | None:
    """The number a value means: a decimal comma read as the point it stands for (it is
    reported as a conformance problem once, not skipped from the arithmetic)."""
    if value is None:
        return None
    if _is_number(value):
        return float(value)
    if DECIMAL_COMMA.fullmatch(value):
        return float(value.replace(",", "."))
    return None


@dataclass(frozen=True)
class _Plan:
    """The dictionary checks of one table, arranged for speed: required fields, and per
    field (is a number, maximum size, code list)."""

    required: tuple[tuple[str, FieldSpec], ...]
    checks: dict[str, tuple[bool, int | None, tuple[frozenset[str], str] | None, str]]


_PLANS: dict[tuple[str, str], _Plan] = {}


def _plan(standard: str, table: str, specs: dict[str, FieldSpec]) -> _Plan:
    plan = _PLANS.get((standard, table))
    if plan is None:
        plan = _PLANS[(standard, table)] = _Plan(
            required=tuple((n, s) for n, s in specs.items() if s.required),
            checks={
                n: (
                    s.kind == "N" or (table, n) in DECIMAL_TEXT_FIELDS,
                    s.max_size,
                    CODE_LISTS.get((standard, table, n)),
                    s.source,
                )
                for n, s in specs.items()
            },
        )
    return plan


class _VisitCheck:
    """Checks of one visit; collects problems in ``out``."""

    def __init__(
        self, visit: Visit, icd: IcdCatalogue, sources: dict[str, str] | None = None
    ) -> None:
        self.visit = visit
        self.icd = icd
        # table -> file its rows came from, for a visit read from several files
        self.sources = sources or {}
        self.std = visit.standard
        self.out: list[Problem] = []
        # (table, field) -> (lines with a decimal comma, the first such value)
        self.commas: dict[tuple[str, str], list[Any]] = {}

    def add(self, table: str, field: str, rule: str, message: str, value: str = "") -> None:
        file = self.sources.get(table, self.visit.file) if self.sources else self.visit.file
        self.out.append(Problem(file, self.visit.ma_lk, table, field, rule, message, value))

    def run(self) -> list[Problem]:
        visit = self.visit
        for table, reason in visit.broken:
            self.add(table, "", "broken", f"{table} cannot be read: {reason}")
        for table, what in visit.notices:
            self.add(table, "LOAIHOSO", "table.unknown", f"{table or '(no LOAIHOSO)'}: {what}")
        specs = FIELDS[self.std]
        for table, rows in visit.tables.items():
            table_specs = specs.get(table)
            for n, row in enumerate(rows, start=1):
                where = f"{table} row {n}" if len(rows) > 1 else table
                if table_specs is not None:
                    self.fields(table, where, row, table_specs)
                self.dates(table, where, row)
                self.conditional(table, where, row)
        for (table, name), (count, first) in self.commas.items():
            lines = "1 line" if count == 1 else f"{count} lines"
            self.add(
                table,
                name,
                "decimal_comma",
                f"{table}.{name} is written with a decimal comma on {lines} (e.g. {first!r}); "
                f"the standard separates decimals with a point, so it is read as "
                f"{first.replace(',', '.')}",
                first,
            )
        self.summary()
        self.money()
        self.links()
        if visit.tables.get(CHECKIN) and not is_checkin(visit):
            # the record is made from XML1 (or refused for the lack of it): the check-in
            # table's problems are the facility's to fix, not a reason to keep the visit out
            self.out = [
                replace(p, aside=True) if p.table == CHECKIN and p.rule != "broken" else p
                for p in self.out
            ]
        return self.out

    # -- dictionary: required, type, size, code lists
    def fields(
        self, table: str, where: str, row: dict[str, str], specs: dict[str, FieldSpec]
    ) -> None:
        plan = _plan(self.std, table, specs)
        for name, spec in plan.required:
            if not row.get(name):
                state = "is missing" if name not in row else "is empty"
                self.add(
                    table,
                    name,
                    "required",
                    f"{where}: {name} is required but {state} ({spec.source})",
                )
        checks = plan.checks
        for name, value in row.items():
            check = checks.get(name)
            if check is None or not value:
                continue
            numeric, max_size, codes, source = check
            if numeric and not _is_number(value):
                if DECIMAL_COMMA.fullmatch(value):
                    seen = self.commas.setdefault((table, name), [0, value])
                    seen[0] += 1
                else:
                    self.add(table, name, "type.number", f"{where}: {name} must be a number", value)
            if max_size is not None and len(value) > max_size:
                self.add(
                    table,
                    name,
                    "max_size",
                    f"{where}: {name} has {len(value)} "
                    f"characters, more than the maximum {max_size} ({source})",
                    value[:200],
                )
            if codes is not None and value not in codes[0]:
                self.add(
                    table,
                    name,
                    "code",
                    f"{where}: {name} {value!r} is not in the code list ({codes[1]})",
                    value,
                )

    # -- dates: format and order within a row
    def dates(self, table: str, where: str, row: dict[str, str]) -> None:
        times = TIME_FIELDS[self.std]
        dates = DATE_FIELDS[self.std]
        either = DATE_OR_TIME_FIELDS[self.std]
        for name, value in row.items():
            if not value:
                continue
            if name in times or name in either:
                if name in either and len(value) == 8:
                    error = _date_error(value)
                else:
                    error = _time_error(value)
                    if error and name in either:
                        error = f"{error} (or 8 digits yyyymmdd)"
                if error:
                    self.add(table, name, "date.format", f"{where}: {name} {error}", value)
            elif name in dates:
                for part in value.split(";"):
                    error = _date_error(part.strip())
                    if error:
                        self.add(table, name, "date.format", f"{where}: {name} {error}", value)
                        break
        for earlier, later in DATE_ORDER.get(table, ()):
            a, b = row.get(earlier, ""), row.get(later, "")
            if a and b and _time_error(a) is None and _time_error(b) is None and b < a:
                self.add(
                    table,
                    later,
                    "date.order",
                    f"{where}: {later} ({b}) is before {earlier} ({a})",
                    b,
                )

    # -- conditional requirements and structures from the gateway's VALID notes
    def conditional(self, table: str, where: str, row: dict[str, str]) -> None:
        if self.std != STANDARD_130:
            return
        group = row.get("MA_NHOM", "")
        needs: list[tuple[str, str]] = []
        if table == "XML2" and group not in ("7", "17") and group:
            needs.append(("TT_THAU", "for every drug group except 7 and 17"))
        elif table == "XML3":
            if group == "12":
                needs.append(("MA_XANG_DAU", "when MA_NHOM is 12 (transport)"))
            if group == "10":
                needs.append(("TT_THAU", "when MA_NHOM is 10 (supplies)"))
            if group in ("1", "2", "3", "8", "18"):
                needs.append(("NGUOI_THUC_HIEN", "when MA_NHOM is 1, 2, 3, 8 or 18"))
                needs.append(("NGAY_TH_YL", "when MA_NHOM is 1, 2, 3, 8 or 18"))
            goi = row.get("GOI_VTYT", "")
            if goi and not _GOI_VTYT.fullmatch(goi):
                self.add(
                    table,
                    "GOI_VTYT",
                    "pattern",
                    f"{where}: GOI_VTYT must be G followed by a number 1-999",
                    goi,
                )
        elif table == CHECKIN:
            # QĐ 4750 gateway list, check-in sheet, Bắt buộc column (rows 16, 20-25)
            if row.get("NGAY_VAO_NOI_TRU"):
                needs.append(("LY_DO_VNT", "when NGAY_VAO_NOI_TRU has a value"))
            first = ("MA_DICH_VU", "MA_THUOC", "MA_VAT_TU")
            if not any(row.get(name) for name in first):
                self.add(
                    table,
                    "MA_DICH_VU",
                    "conditional",
                    f"{where}: one of MA_DICH_VU, MA_THUOC, MA_VAT_TU is required (the first "
                    "cost of the stay: a service, a drug or a supply)",
                )
            for code, name in (
                ("MA_DICH_VU", "TEN_DICH_VU"),
                ("MA_THUOC", "TEN_THUOC"),
                ("MA_VAT_TU", "TEN_VAT_TU"),
            ):
                if row.get(code):
                    needs.append((name, f"when {code} has a value"))
        elif table == "XML4" and row.get("GIA_TRI"):
            needs.append(("NGAY_KQ", "when GIA_TRI has a value"))
        elif table == "XML9":
            surgery = row.get("SINHCON_PHAUTHUAT") == "1"
            early = row.get("SINHCON_DUOI32TUAN") == "1"
            if surgery or early:
                why = " and ".join(
                    w
                    for w, on in (
                        ("SINHCON_PHAUTHUAT is 1 (birth by surgery)", surgery),
                        ("SINHCON_DUOI32TUAN is 1 (birth under 32 weeks)", early),
                    )
                    if on
                )
                needs.append(("GHI_CHU", f"when {why} (QĐ 130 appendix Bảng 9 GHI_CHU)"))
        for name, when in needs:
            if not row.get(name):
                self.add(table, name, "conditional", f"{where}: {name} is required {when}")

    # -- XML1: identifiers, diagnoses, stay length, envelope
    def summary(self) -> None:
        visit, std = self.visit, self.std
        checkins = visit.tables.get(CHECKIN)
        if checkins:
            self.checkin(checkins)
        rows = visit.tables.get("XML1")
        if not rows:
            if not is_checkin(visit):
                self.add(
                    "XML1",
                    "MA_LK",
                    "link",
                    "the visit has no XML1 (summary) table; every "
                    "detail table must belong to an XML1 with the same MA_LK",
                    visit.ma_lk,
                )
            return
        row = rows[0]
        if len(rows) > 1:
            self.add(
                "XML1",
                "MA_LK",
                "duplicate",
                f"the visit has {len(rows)} XML1 rows; one is expected",
                visit.ma_lk,
            )
        self.identity("XML1", row)
        main, others = DIAGNOSIS_FIELDS[std]
        code = row.get(main, "")
        if code and not self.icd.exists(code):
            self.add("XML1", main, "icd10", f"{main} {code!r} is not an ICD-10 code", code)
        for other in filter(None, (c.strip() for c in row.get(others, "").split(";"))):
            if not self.icd.exists(other):
                self.add(
                    "XML1", others, "icd10", f"{others}: {other!r} is not an ICD-10 code", other
                )
        if std == STANDARD_130:
            self.stay_days(row)
        self.envelope("XML1", row)

    def checkin(self, rows: list[dict[str, str]]) -> None:
        """The check-in table: one row per visit, the patient's identity checked as XML1's."""
        if len(rows) > 1:
            self.add(
                CHECKIN,
                "MA_LK",
                "duplicate",
                f"the visit has {len(rows)} check-in ({CHECKIN}) rows; one is expected",
                self.visit.ma_lk,
            )
        self.identity(CHECKIN, rows[0])
        self.envelope(CHECKIN, rows[0])

    def identity(self, table: str, row: dict[str, str]) -> None:
        """Birth date, CCCD, insurance cards and facility codes of XML1 or the check-in
        table (the same fields, the same rules)."""
        std = self.std
        birth = row.get("NGAY_SINH", "")
        birth_ok = bool(birth) and _birth_error(birth, std) is None
        if birth and not birth_ok:
            self.add(
                table, "NGAY_SINH", "date.format", f"NGAY_SINH {_birth_error(birth, std)}", birth
            )
        admitted = row.get("NGAY_VAO", "")
        if birth_ok and admitted and _time_error(admitted) is None and birth[:8] > admitted[:8]:
            self.add(
                table,
                "NGAY_SINH",
                "date.order",
                f"NGAY_SINH ({birth}) is after NGAY_VAO ({admitted})",
                birth,
            )
        cccd = row.get("SO_CCCD", "")
        if cccd:
            self.cccd(cccd, row.get("GIOI_TINH"), int(birth[:4]) if birth_ok else None, table)
        for card in filter(None, (c.strip() for c in row.get(CARD_FIELD[std], "").split(";"))):
            for reason in check_bhyt(card):
                self.add(table, CARD_FIELD[std], "bhyt", f"{CARD_FIELD[std]}: {reason}", card)
        for name in ("MA_CSKCB", "MA_DKBD", "MA_NOI_DI", "MA_NOI_DEN", "MA_NOI_CHUYEN"):
            for code in filter(None, (c.strip() for c in row.get(name, "").split(";"))):
                for reason in check_facility_code(code):
                    self.add(table, name, "facility", f"{name}: {reason}", code)

    def envelope(self, table: str, row: dict[str, str]) -> None:
        sender = self.visit.envelope.get("MACSKCB", "")
        if sender and row.get("MA_CSKCB") and sender != row["MA_CSKCB"]:
            self.add(
                table,
                "MA_CSKCB",
                "envelope",
                f"MA_CSKCB {row['MA_CSKCB']!r} differs from the envelope's MACSKCB {sender!r}",
                row["MA_CSKCB"],
            )

    def cccd(
        self, value: str, sex: str | None, birth_year: int | None, table: str = "XML1"
    ) -> None:
        if value.isdigit() and len(value) == 12:
            for reason in check_cccd(value, sex=sex, birth_year=birth_year):
                self.add(table, "SO_CCCD", "cccd", f"SO_CCCD: {reason}", value)
        elif not ((value.isdigit() and len(value) == 9) or _PASSPORT.fullmatch(value)):
            self.add(
                table,
                "SO_CCCD",
                "cccd",
                "SO_CCCD must be 9 or 12 digits, or 8 "
                "characters: an upper-case letter and 7 digits (passport)",
                value,
            )

    def stay_days(self, row: dict[str, str]) -> None:
        kind, days = row.get("MA_LOAI_KCB", ""), row.get("SO_NGAY_DTRI", "")
        if not days.isdigit():
            return
        if kind in ZERO_DAY_VISITS and int(days) != 0:
            self.add(
                "XML1",
                "SO_NGAY_DTRI",
                "days",
                f"SO_NGAY_DTRI must be 0 when MA_LOAI_KCB is {kind}",
                days,
            )
        elif kind in COUNTED_DAY_VISITS:
            start, end = row.get("NGAY_VAO", ""), row.get("NGAY_RA", "")
            if _time_error(start) is None and _time_error(end) is None and end >= start:
                import datetime as dt

                span = (
                    dt.date(int(end[:4]), int(end[4:6]), int(end[6:8]))
                    - dt.date(int(start[:4]), int(start[4:6]), int(start[6:8]))
                ).days + 1
                if int(days) != span:
                    self.add(
                        "XML1",
                        "SO_NGAY_DTRI",
                        "days",
                        f"SO_NGAY_DTRI is {days} but "
                        f"NGAY_RA - NGAY_VAO + 1 is {span} for MA_LOAI_KCB {kind}",
                        days,
                    )

    # -- money: lines and totals
    def money(self) -> None:
        visit, std = self.visit, self.std
        for table in ("XML2", "XML3"):
            lines = visit.tables.get(table, [])
            for n, row in enumerate(lines, start=1):
                where = f"{table} row {n}" if len(lines) > 1 else table
                self.money_line(table, where, row)
        summaries = visit.tables.get("XML1")
        if not summaries:
            return
        summary = summaries[0]
        if not visit.tables.get("XML2") and not visit.tables.get("XML3"):
            self.lines_missing(summary)
            return
        for total, tables, line_field, groups in TOTALS[std]:
            stated = _number(summary.get(total))
            if stated is None:
                continue
            computed = 0.0
            for table in tables:
                for line in visit.tables.get(table, ()):
                    if groups is not None and line.get("MA_NHOM") not in groups:
                        continue
                    computed += _number(line.get(line_field)) or 0.0
            if abs(stated - computed) > MONEY_TOLERANCE:
                self.add(
                    "XML1",
                    total,
                    "money.total",
                    f"{total} is {summary[total]} but the "
                    f"sum of {line_field} over {' and '.join(tables)} is {computed:.2f}",
                    summary[total],
                )

    def lines_missing(self, summary: dict[str, str]) -> None:
        """A summary sent without any drug or service line (XML2, XML3): one problem, not
        one per total, unless the totals are all zero (nothing was spent) or a line table
        was sent but could not be read (reported as broken)."""
        sent = {table_name(t) or t for t, _reason in self.visit.broken}
        if sent & {"XML2", "XML3"}:
            return
        for total, _tables, _line_field, _groups in TOTALS[self.std]:
            stated = _number(summary.get(total))
            if stated is not None and abs(stated) > MONEY_TOLERANCE:
                self.add(
                    "XML1",
                    total,
                    "lines.missing",
                    f"the visit's drug and service lines (XML2, XML3) are missing although "
                    f"{total} is {summary[total]}; the totals of XML1 are sums of those lines",
                    summary[total],
                )
                return

    def money_line(self, table: str, where: str, row: dict[str, str]) -> None:
        q = _number(row.get("SO_LUONG"))
        if q is None:
            return
        checks: list[tuple[str, list[float]]] = []
        if self.std == STANDARD_130:
            if table == "XML2":
                price = _number(row.get("DON_GIA"))
                rate_bh = _number(row.get("TYLE_TT_BH"))
                if price is not None:
                    checks.append(("THANH_TIEN_BV", [q * price]))
                    if rate_bh is not None:
                        checks.append(("THANH_TIEN_BH", [q * price * rate_bh / 100]))
            else:
                rate_dv = _number(row.get("TYLE_TT_DV"))
                rate_dv = 100.0 if rate_dv is None else rate_dv
                price_bv = _number(row.get("DON_GIA_BV"))
                price_bh = _number(row.get("DON_GIA_BH"))
                rate_bh = _number(row.get("TYLE_TT_BH"))
                if price_bv is not None:
                    checks.append(("THANH_TIEN_BV", [q * price_bv * rate_dv / 100]))
                if price_bh is not None and rate_bh is not None:
                    plain = q * price_bh * rate_bh / 100
                    checks.append(("THANH_TIEN_BH", [plain, plain * rate_dv / 100]))
        else:
            price = _number(row.get("DON_GIA"))
            rate = _number(row.get("TYLE_TT"))
            if price is not None:
                options = [q * price]
                if rate is not None:
                    options.append(q * price * rate / 100)
                checks.append(("THANH_TIEN", options))
        for name, options in checks:
            stated = _number(row.get(name))
            if stated is None:
                continue
            if all(abs(stated - round(o, 2)) > 0.011 for o in options):  # 2-decimal rounding
                self.add(
                    table,
                    name,
                    "money.line",
                    f"{where}: {name} is {row[name]} but the "
                    f"formula gives {round(options[0], 2):.2f}",
                    row[name],
                )
        if self.std == STANDARD_130:
            amount = _number(row.get("THANH_TIEN_BV"))
            parts = [_number(row.get(p)) for p in ("T_BHTT", "T_BNCCT", "T_BNTT", "T_NGUONKHAC")]
            if amount is not None and all(p is not None for p in parts):
                paid = sum(p for p in parts if p is not None)
                if abs(paid - amount) > 0.05:
                    self.add(
                        table,
                        "THANH_TIEN_BV",
                        "money.split",
                        f"{where}: T_BHTT + T_BNCCT"
                        f" + T_BNTT + T_NGUONKHAC = {paid:.2f}, not THANH_TIEN_BV "
                        f"{row['THANH_TIEN_BV']}",
                        row["THANH_TIEN_BV"],
                    )

    # -- links between tables
    def links(self) -> None:
        visit = self.visit
        rows = visit.tables.get("XML1")
        if not rows:
            return
        key = rows[0].get("MA_LK", "")
        for table, table_rows in visit.tables.items():
            if table == "XML1":
                continue
            for n, row in enumerate(table_rows, start=1):
                ma_lk = row.get("MA_LK")
                if ma_lk is not None and ma_lk != key:
                    self.add(
                        table,
                        "MA_LK",
                        "link",
                        f"{table} row {n}: MA_LK {ma_lk!r} has "
                        f"no XML1 in this visit (XML1 is {key!r})",
                        ma_lk,
                    )


def validate_visit(visit: Visit, icd: IcdCatalogue | None = None) -> list[Problem]:
    """All problems of one visit (empty when it conforms)."""
    return _VisitCheck(visit, icd or default_icd_catalogue()).run()


class FileValidation:
    """Validate one export visit by visit: iterate for ``(visit, problems)``; afterwards
    ``file_problems`` holds what concerns the file as a whole and ``error`` the reason it
    could not be read to the end (then nothing of it should be written).

    ``source`` may be a :class:`BareGroup` (bare-table files of one folder read as one
    export, see :class:`GroupReader`): then problems point to the file each table came
    from, a file of the group that cannot be read costs only the visits it names (their
    broken entry is blocking), one that names none is a problem of the group, and
    ``error`` stays None."""

    def __init__(
        self,
        source: str | Path | bytes | BareGroup,
        *,
        icd: IcdCatalogue | None = None,
        name: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.source = source
        if isinstance(source, BareGroup):
            self.name = name or source.label
        else:
            self.name = name or (
                Path(source).name if not isinstance(source, bytes | bytearray) else "<upload>"
            )
        self.icd = icd if isinstance(icd, _Memo) else _Memo(icd or default_icd_catalogue())
        self.max_bytes = max_bytes
        self.file_problems: list[Problem] = []
        self.error: Xml130Error | None = None
        self.visits = 0

    def __iter__(self) -> Iterator[tuple[Visit, list[Problem]]]:
        if isinstance(self.source, BareGroup):
            yield from self._group(self.source)
            return
        seen: set[str] = set()
        declared: str | None = None
        try:
            for visit in parse(self.source, name=self.name, max_bytes=self.max_bytes):
                self.visits += 1
                declared = visit.envelope.get("SOLUONGHOSO", declared)
                problems = _VisitCheck(visit, self.icd).run()
                if visit.ma_lk in seen:
                    problems.append(
                        Problem(
                            visit.file,
                            visit.ma_lk,
                            "XML1",
                            "MA_LK",
                            "duplicate",
                            f"visit {visit.index}: MA_LK already sent earlier in this file",
                            visit.ma_lk,
                        )
                    )
                seen.add(visit.ma_lk)
                yield visit, problems
        except Xml130Error as exc:
            self.error = exc
            self.file_problems.append(Problem(self.name, "", "", "", "file", str(exc), ""))
            return
        if declared is not None and declared.strip() != str(self.visits):
            self.file_problems.append(
                Problem(
                    self.name,
                    "",
                    "",
                    "SOLUONGHOSO",
                    "envelope",
                    f"the envelope declares "
                    f"{declared} visits (SOLUONGHOSO) but holds {self.visits}",
                    declared,
                )
            )

    def _group(self, group: BareGroup) -> Iterator[tuple[Visit, list[Problem]]]:
        reader = GroupReader(group, max_bytes=self.max_bytes)
        for visit, sources in reader:
            self.visits += 1
            yield visit, _VisitCheck(visit, self.icd, sources).run()
        for exc in reader.file_errors:
            label = str(exc).split(": ", 1)[0]
            self.file_problems.append(Problem(label, "", "", "", "file", str(exc), ""))


Group = tuple[str, str, str]
"""(table, field, rule): problems of one kind, counted by the visits they touch."""


@dataclass
class FacilitySummary:
    """What a facility's vendor needs first: how many visits are kept out (blocking), how
    many are stored with conformance problems, and on what — each kind of problem counted
    by the visits it touches."""

    visits: int = 0
    visits_blocking: int = 0
    visits_conformance: int = 0
    problems: Counter[Group] = field(default_factory=Counter)
    # each kind's severity as its problems had it (blocking if any of them was): the same
    # kind is a conformance problem in the check-in table of a visit that has its XML1
    severities: dict[Group, str] = field(default_factory=dict)

    def count(self, problems: list[Problem]) -> None:
        """One visit's problems, each kind once."""
        kinds: set[Group] = set()
        for p in problems:
            key = (p.table, p.field, p.rule)
            kinds.add(key)
            if self.severities.get(key) != BLOCKING:
                self.severities[key] = p.severity
        self.problems.update(kinds)

    @property
    def visits_with_errors(self) -> int:
        return self.visits_blocking + self.visits_conformance

    @property
    def visits_clean(self) -> int:
        return self.visits - self.visits_with_errors


@dataclass
class ProblemGroup:
    """Problems of one (table, field, rule): visits touched, problems, an example."""

    table: str
    field: str
    rule: str
    severity: str
    visits: int
    problems: int
    example: Problem

    def as_dict(self) -> dict[str, Any]:
        from lienthong.ingest.xml130.rules import RULES

        rule = RULES.get(self.rule)
        return {
            "table": self.table,
            "field": self.field,
            "rule": self.rule,
            "severity": self.severity,
            "visits": self.visits,
            "problems": self.problems,
            "source": rule.source if rule is not None else "",
            "example": self.example.as_dict(),
        }


@dataclass
class ValidationReport:
    """Problems and per-facility counts over a set of files. A visit counts once: as
    blocking when any of its problems is, as conformance-only when it has problems and
    none blocks, else as clean."""

    files: int = 0
    failed_files: list[str] = field(default_factory=list)
    # how the inputs were read where it matters (bare-table files left apart, and why)
    notes: list[str] = field(default_factory=list)
    visits: int = 0
    visits_blocking: int = 0
    visits_conformance: int = 0
    problems: list[Problem] = field(default_factory=list)
    facilities: dict[str, FacilitySummary] = field(default_factory=dict)
    # (table, field, rule) -> [visits touched, problems, first problem]
    _groups: dict[Group, list[Any]] = field(default_factory=dict)

    @property
    def visits_with_errors(self) -> int:
        """Visits with any problem, blocking or not."""
        return self.visits_blocking + self.visits_conformance

    @property
    def visits_clean(self) -> int:
        return self.visits - self.visits_with_errors

    def add_file(self, result: FileResult) -> None:
        self.files += result.files
        failed = bool(result.file_problems)
        for facility, problems in result.visits:
            self.add_visit(facility, problems)
            failed = failed or bool(problems)
        if result.file_problems:
            self.problems.extend(result.file_problems)
            unreadable = self.facilities.setdefault("?", FacilitySummary())
            unreadable.problems.update({(p.table, p.field, p.rule) for p in result.file_problems})
            self._group(result.file_problems)
        if failed:
            self.failed_files.append(result.name)

    def add_visit(self, facility_code: str, problems: list[Problem]) -> None:
        facility = self.facilities.setdefault(facility_code or "?", FacilitySummary())
        facility.visits += 1
        self.visits += 1
        if not problems:
            return
        if blocking(problems):
            facility.visits_blocking += 1
            self.visits_blocking += 1
        else:
            facility.visits_conformance += 1
            self.visits_conformance += 1
        facility.count(problems)
        self.problems.extend(problems)
        self._group(problems)

    def _group(self, problems: list[Problem]) -> None:
        """Count one visit's (or one file's) problems into their groups."""
        touched: set[Group] = set()
        for p in problems:
            key = (p.table, p.field, p.rule)
            entry = self._groups.get(key)
            if entry is None:
                entry = self._groups[key] = [0, 0, p]
            entry[1] += 1
            if key not in touched:
                touched.add(key)
                entry[0] += 1

    def groups(self) -> list[ProblemGroup]:
        """Problems grouped by (table, field, rule), the kinds touching most visits first
        (blocking before conformance on a tie)."""
        out = [
            ProblemGroup(t, f, r, example.severity, visits, count, example)
            for (t, f, r), (visits, count, example) in self._groups.items()
        ]
        out.sort(key=lambda g: (-g.visits, g.severity != BLOCKING, -g.problems, g.table, g.field))
        return out


@dataclass
class FileResult:
    """What one file's validation sends back from a worker process: per visit its
    facility and problems (not the visit itself, which would cost more to ship than to
    parse again), and the problems of the file as a whole."""

    name: str
    visits: list[tuple[str, list[Problem]]]
    file_problems: list[Problem]
    files: int = 1  # files read (a group of bare-table files is several)


def _files_in(job: str | Path | BareGroup) -> int:
    return len(job.files) if isinstance(job, BareGroup) else 1


def validate_file(
    path: str | Path | BareGroup,
    icd: IcdCatalogue | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FileResult:
    """One file, or one group of bare-table files, validated into a :class:`FileResult`."""
    check = FileValidation(path, icd=icd, max_bytes=max_bytes)
    visits = [(visit.ma_cskcb, problems) for visit, problems in check]
    return FileResult(check.name, visits, check.file_problems, _files_in(path))


_worker_icd: IcdCatalogue | None = None


def _worker_init(icd: IcdCatalogue) -> None:
    global _worker_icd
    _worker_icd = _Memo(icd)


def _worker_job(path: str | Path | BareGroup, max_bytes: int) -> FileResult:
    return validate_file(path, _worker_icd, max_bytes)


def validate_paths(
    paths: Iterable[str | Path],
    *,
    icd: IcdCatalogue | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    on_visit: Callable[[str, int], None] | None = None,
    workers: int = 0,
) -> ValidationReport:
    """Validate files into one report, in order. A file fails when it cannot be read or
    holds any problem. Bare-table files of one folder are read as one export
    (:func:`parse.group_inputs`: one job, failing as one, named by its folder and files).
    With ``workers`` > 1, jobs are validated in that many processes (the catalogue is
    sent to each once); ``on_visit(file, n)`` reports progress."""
    report = ValidationReport()
    catalogue = icd or default_icd_catalogue()
    files, notes = group_inputs([Path(p) for p in paths], max_bytes)
    report.notes.extend(notes)
    if workers > 1 and len(files) > 1:
        from lienthong.workers import worker_pool

        with worker_pool(
            min(workers, len(files)), initializer=_worker_init, initargs=(catalogue,)
        ) as pool:
            for result in pool.map(_worker_job, files, [max_bytes] * len(files)):
                report.add_file(result)
                if on_visit is not None:
                    on_visit(result.name, len(result.visits))
        return report
    memo = _Memo(catalogue)
    for path in files:
        check = FileValidation(path, icd=memo, max_bytes=max_bytes)
        visits: list[tuple[str, list[Problem]]] = []
        for visit, problems in check:
            visits.append((visit.ma_cskcb, problems))
            if on_visit is not None:
                on_visit(check.name, 1)
        report.add_file(FileResult(check.name, visits, check.file_problems, _files_in(path)))
    return report
