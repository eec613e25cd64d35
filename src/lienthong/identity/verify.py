"""Verification of source records against the national population register.

Health systems must tie their records to the population register, and "cleaning" a
source against it fails in two opposite ways: reporting a mismatch where only the form
differs (no diacritics, "Hòa" for "Hoà", given name first, 31/12/1990 for 1990-12-31, "Nữ"
for F, a commune code from before the July 2025 reform), and accepting a number that
belongs to someone else (a mother's number on her child's record, a mistyped digit that
hits another person, a namesake's number from a look-up by name). This module decides,
for each record, one of `STATUSES`, names every field that differs in substance and why,
and proposes the register's values and, where the record does not carry its owner's
number, the number of the register person who fits - only when that person is a clear
lead over any rival.

A record is "corrected" onto the holder of its number only on evidence (`decide`,
`holder_evidence`): bits for the number itself, less the more people the register knows
by the same name (agreeing on "Nguyễn Văn Hùng" proves little), plus or minus what the
birth date (exact, a known slip, another day and month), sex and place say; and only
when no other register person fits the record clearly better (that person's number is
then proposed). The name counts are made when the register loads and cached with it.

Speed shapes the design: a run checks millions of records against a register of
millions. Work is done in DuckDB, set-wise: every DISTINCT name, date string, sex code
and (province, commune) pair is normalised once in Python with the project's own rules
and joined back, the CCCD join and the fast path (all fields equal after normalisation
-> ``verified``) are one query, and candidate search for records not verified outright
is a blocked equi-join scored in SQL. Only the residue - records whose number is in the
register but whose fields differ, and numbers the register does not hold - goes through
the detailed comparison in Python that writes the reasons.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import re
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from rapidfuzz.distance import OSA

from lienthong.identity import layouts
from lienthong.identity.identifiers import check_cccd
from lienthong.identity.normalize import (
    KEYSTROKE_SCHEMES,
    SURNAME_KEYS,
    VIQR_MARKS,
    keystrokes,
    name_key,
    normalize_name,
    normalize_sex,
    parse_date,
)

STATUSES = layouts.VERIFY_STATUSES
"""Outcomes, from best to worst; `verified` and `corrected` mean the number is the record's."""

ACCEPTED = frozenset(("verified", "corrected"))

REGISTER_COLUMNS = layouts.REGISTER_COLUMNS
RECORD_COLUMNS = layouts.VERIFY_RECORD_COLUMNS
REPORT_COLUMNS = layouts.VERIFY_REPORT_COLUMNS

# Candidate scoring weights, in rough bits of evidence (log2 of how much likelier the
# agreement is for the same person than for a random one in the block). Given names are
# far more diverse than family names (four people in ten are Nguyễn), so they weigh more;
# a disagreeing sex or birth year counts heavily against.
W_FAMILY = (4, 1, -3)  # equal, one edit apart, different
W_GIVEN = (7, 3, -15)  # another given name all but rules a person out (twins, siblings)
W_MIDDLE = (3, 1, -4)  # absent on the record counts 0 (forms with two name boxes drop it)
W_SAME_TOKENS = 2
W_NAME_FULL = W_FAMILY[0] + W_GIVEN[0] + W_MIDDLE[0] + W_SAME_TOKENS
# The record has diacritics and they agree too, or differ on the same letters (twins are
# named Thư and Thu).
W_SAME_DIACRITICS = (3, -4)
W_DATE_EXACT, W_DATE_SWAP, W_DATE_MONTH, W_DATE_YEAR = 12, 7, 6, 4
W_DATE_OTHER_DAY, W_DATE_OTHER_MONTH = -3, -6  # full dates that disagree: another person
W_SEX = (1, -6)
# One commune in 3,321 and one province in 34: agreement on the commune is strong evidence
# (it also holds for the whole household, which the name and birth date tell apart).
W_COMMUNE, W_PROVINCE, W_PLACE_OTHER = 8, 3, -2
W_NUMBER, W_NUMBER_NEAR = 6, 8
# A name rarer than one register person in 2**12 (4,096) weighs more, up to 6 more at one
# in 2**18: a record that agrees with such a name is seldom a namesake's, even when little
# else is known (a year of birth, no place). Frequencies, not counts, so a larger register
# changes nothing; a small one (a register service's answers for a batch) gives no bonus.
W_RARE_FROM, W_RARE_CAP = 12, 6
SCORE_FULL = 32
"""Weight of a record without a number that agrees on every field: `score` = weight / this."""

NORMALISATION_VERSION = 3
"""Part of the register cache's name: raise it whenever normalisation changes (3: the
register carries its name frequencies)."""

# Evidence that the register holder of a record's number is the record's person, in bits
# (log2 of how much likelier each finding is when the number is the person's own than when
# it is a namesake's: the confusion a name cannot rule out). A number copied from the
# wrong line of a list or a look-up by name lands on someone who shares the name, often
# the birth year too, seldom the date or the commune; the name's agreement is therefore
# worth little, and the less the commoner the name (`E_NAMESAKES_CAP`).
E_PRIOR = 10
"""The number itself: most records carry their owner's number."""
E_NAMESAKES_CAP = 8
"""At most this many bits off for the register people who share the name (256 or more)."""
E_NAME_MINOR = -1
"""A name that is the holder's with a slip (a letter, diacritics, a part left out)."""
E_DATE = {
    "form": 8,  # the full date agrees
    "month": 4,  # year and month agree, the record knows no day
    "year": 2,  # the year agrees, the record knows no month or day
    "swap": 4,  # day and month swapped
    "year_slip": 4,  # day and month agree, the year is off by one or one keystroke
    "digit": 0,  # the year agrees, the day or the month is one keystroke away
    "jan1": 2,  # the year agrees, 1 January written for an unknown day and month
    "first": 2,  # the year and month agree, the 1st written for an unknown day
    "year_near": -2,  # the record knows only the year, and it is one off
    "register_partial": 2,  # the register knows only part of the date, which agrees
    "day": -3,  # the year and month agree, the day is another
    "month_only": -3,  # the year and day agree, the month is another
    "other": -10,  # the year agrees, day and month are others: a namesake born that year
    "differ": -14,
    "absent": 0,
    "unreadable": 0,
}
E_SEX = {"form": 0, "differ": -4}
E_PLACE = {
    "commune": 4,  # the record's commune (read before or after the 2025 reform)
    "province": 1,  # the record names only a province, and it agrees
    "other_commune": -1,  # same province, another commune (people move)
    "other_province": -4,
    "none": 0,
}

ACCEPT_SCORE = 22
"""Least weight for proposing a register person as the owner of a record. Below it, on
generated data, most candidates are namesakes of people absent from the register (same
name and birth year, nothing else known), so no proposal is the honest answer."""
ACCEPT_MARGIN = 5
"""Least lead of the best candidate over the next one: a proposal must be unambiguous."""

# ------------------------------------------------------------------ per-distinct-value maps


@functools.lru_cache(maxsize=1)
def place_readings() -> tuple[dict[tuple[str, str], tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Every current commune a (province, commune) code pair can stand for, and every
    current province a province code can stand for.

    Exports carry either pre-July-2025 codes (63 provinces, legacy ward codes) or current
    ones (34 provinces), both 2 + 5 digits and overlapping, with nothing saying which. A
    pair is therefore read both ways: as a current commune, and as a legacy ward converted
    with the conversion tables of `vietnamadminunits` (a ward split between several new
    communes reads as each of them). Built straight from the library's tables because
    converting pair by pair through its address parser costs a millisecond each.
    """
    import vietnamadminunits

    data = Path(vietnamadminunits.__file__).parent / "data"
    with sqlite3.connect(data / "dataset.db") as conn:
        current = conn.execute(
            "SELECT provinceKey, wardKey, provinceCode, wardCode FROM admin_units"
        ).fetchall()
        legacy = conn.execute(
            "SELECT provinceKey, districtKey, wardKey, provinceCode, wardCode "
            "FROM admin_units_legacy"
        ).fetchall()
    conv = json.loads((data / "converter_2025.json").read_text(encoding="utf-8"))
    cur_code = {(pk, wk): (pc, wc) for pk, wk, pc, wc in current}
    cur_province = {pk: pc for pk, _, pc, _ in current}
    legacy_code = {f"{pk}_{dk}_{wk}": (pc, wc) for pk, dk, wk, pc, wc in legacy if wk}
    legacy_province_key = {pc: pk for pk, _, _, pc, _ in legacy}
    communes: dict[tuple[str, str], set[str]] = {}
    for pc, wc in cur_code.values():
        communes.setdefault((pc, wc), set()).add(wc)
    for new_pk, wards in conv["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for new_wk, olds in wards.items():
            new = cur_code.get((new_pk, new_wk))
            for old in olds:
                if new and old in legacy_code:
                    communes.setdefault(legacy_code[old], set()).add(new[1])
    for new_pk, olds in conv["DICT_PROVINCE_WARD_DIVIDED"].items():
        for old, parts in olds.items():
            for part in parts:
                new = cur_code.get((new_pk, part["newWardKey"]))
                if new and old in legacy_code:
                    communes.setdefault(legacy_code[old], set()).add(new[1])
    provinces: dict[str, set[str]] = {pc: {pc} for pc in cur_province.values()}
    old_to_new = {old: new for new, olds in conv["DICT_PROVINCE"].items() for old in olds}
    for pc, pk in legacy_province_key.items():
        new_pk = old_to_new.get(pk)
        if new_pk in cur_province:
            provinces.setdefault(pc, set()).add(cur_province[new_pk])
    return (
        {k: tuple(sorted(v)) for k, v in communes.items()},
        {k: tuple(sorted(v)) for k, v in provinces.items()},
    )


# Words that name the tier of an administrative unit in an address, written out or
# abbreviated as forms do ("P. Bến Nghé", "TP.HCM", "TT Phú Túc"), folded; longest first.
_UNIT_WORDS = (
    ("thanh", "pho"), ("thi", "tran"), ("thi", "xa"), ("dac", "khu"),
    ("phuong",), ("xa",), ("quan",), ("huyen",), ("tinh",),
    ("tp",), ("tt",), ("tx",), ("p",), ("x",), ("q",), ("h",), ("t",),
)  # fmt: skip
_WARD_UNITS = frozenset(("thitran", "dackhu", "phuong", "xa", "tt", "p", "x"))
_DISTRICT_UNITS = frozenset(("quan", "huyen", "thixa", "thanhpho", "tp", "tx", "q", "h"))


def _fold_unit(text: str) -> list[str]:
    """Folded words of an address part: lower case, no diacritics, đ -> d, dots and other
    punctuation as spaces, numbers without leading zeros ("Phường 03" is "Phường 3")."""
    plain = unicodedata.normalize("NFD", text.lower().replace("đ", "d"))
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    words = re.sub(r"[^a-z0-9]+", " ", plain).split()
    return [w.lstrip("0") or "0" if w.isdigit() else w for w in words]


@functools.lru_cache(maxsize=1 << 16)
def _unit_name(part: str) -> tuple[str, str]:
    """(tier word, name key) of one address part: "P. Thuận Thành" -> ("p", "thuanthanh");
    the tier word is "" when the part has none."""
    words = _fold_unit(part)
    for unit in _UNIT_WORDS:
        n = len(unit)
        if len(words) > n and tuple(words[:n]) == unit:
            return "".join(unit), "".join(words[n:])
    return "", "".join(words)


@functools.lru_cache(maxsize=1)
def address_units() -> tuple[
    dict[str, tuple[str, ...]],
    dict[str, tuple[str, ...]],
    dict[tuple[str, str], tuple[str, ...]],
    dict[tuple[str, str, str], tuple[str, ...]],
]:
    """Name keys of the units of `vietnamadminunits`, current and pre-2025: (current
    province codes by province name, legacy province codes by name, current commune codes
    by (current province code, commune name), legacy ward codes by (legacy province code,
    district name, ward name)). Names are keyed without their tier word (`_unit_name`),
    as an address part is read."""
    import vietnamadminunits

    data = Path(vietnamadminunits.__file__).parent / "data"
    with sqlite3.connect(data / "dataset.db") as conn:
        current = conn.execute(
            "SELECT provinceShort, provinceAlias, provinceCode, ward, wardCode FROM admin_units"
        ).fetchall()
        legacy = conn.execute(
            "SELECT provinceShort, provinceAlias, provinceCode, district, ward, "
            "wardCode FROM admin_units_legacy"
        ).fetchall()
    provinces: dict[str, set[str]] = {}
    old_provinces: dict[str, set[str]] = {}
    communes: dict[tuple[str, str], set[str]] = {}
    wards: dict[tuple[str, str, str], set[str]] = {}

    def names(short: str, alias: str | None) -> list[str]:
        keys = ["".join(_fold_unit(short))]
        keys.extend(json.loads(alias) if alias else [])
        return keys

    for p_short, p_alias, pc, ward, wc in current:
        for key in names(p_short, p_alias):
            provinces.setdefault(key, set()).add(pc)
        if ward and wc:
            communes.setdefault((pc, _unit_name(ward)[1]), set()).add(wc)
    for p_short, p_alias, pc, district, ward, wc in legacy:
        for key in names(p_short, p_alias):
            old_provinces.setdefault(key, set()).add(pc)
        if district and ward and wc:
            key3 = (pc, _unit_name(district)[1], _unit_name(ward)[1])
            wards.setdefault(key3, set()).add(wc)

    def frozen(d: dict[Any, set[str]]) -> dict[Any, tuple[str, ...]]:
        return {k: tuple(sorted(v)) for k, v in d.items()}

    return frozen(provinces), frozen(old_provinces), frozen(communes), frozen(wards)


def address_place(raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(current province codes, current commune codes) that a free-text address names,
    read the way `place_readings` reads code pairs: as a pre-2025 address (ward, district,
    province; the ward converted to the communes it became) when its last three
    comma-separated parts name such units, else as a current one (commune, province), else
    the province alone. Both empty when the last part names no province. A street or
    house before the units is ignored. Unlike `lienthong.identity.normalize.
    normalize_address` (a millisecond or two an address through the library's parser),
    this reads only addresses whose units are separated by commas, a dictionary look-up
    a part, so that records carrying only a written address (no codes) can be compared
    for place by the thousand."""
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        return (), ()
    provinces, old_provinces, communes, wards = address_units()
    communes_of_legacy, province_of_legacy = place_readings()
    _, province = _unit_name(parts[-1])
    current = provinces.get(province, ())
    legacy = old_provinces.get(province, ())
    if len(parts) >= 3 and legacy:
        d_unit, district = _unit_name(parts[-2])
        w_unit, ward = _unit_name(parts[-3])
        if d_unit not in _WARD_UNITS and w_unit not in _DISTRICT_UNITS:
            found = {
                new
                for pc in legacy
                for wc in wards.get((pc, district, ward), ())
                for new in communes_of_legacy.get((pc, wc), ())
            }
            if found:
                pset = {new for pc in legacy for new in province_of_legacy.get(pc, ())}
                return tuple(sorted(pset)), tuple(sorted(found))
    if len(parts) >= 2 and current:
        c_unit, commune = _unit_name(parts[-2])
        if c_unit not in _DISTRICT_UNITS or c_unit in ("tp", "thanhpho"):
            found = {wc for pc in current for wc in communes.get((pc, commune), ())}
            if found:
                return current, tuple(sorted(found))
    pset = set(current) | {new for pc in legacy for new in province_of_legacy.get(pc, ())}
    return tuple(sorted(pset)), ()


_SHORT_YEAR = re.compile(r"(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2})")


def _birth_date(raw: str, today: datetime.date) -> tuple[int, int | None, int | None]:
    """Year, month and day of a birth date: `parse_date`'s forms, and day/month/two-digit
    year as hand-written forms have it ("4/5/77"), read as the latest such date that is not
    in the future (a birth date is in the past; the reading is wrong only for people a
    hundred years old or more). Raises ValueError otherwise."""
    try:
        p = parse_date(raw)
    except ValueError:
        short = _SHORT_YEAR.fullmatch(raw.strip())
        if short is None:
            raise
        d, m, yy = (int(x) for x in short.group(1, 2, 3))
        y = today.year // 100 * 100 + yy
        if (y, m, d) > (today.year, today.month, today.day):
            y -= 100
        p = parse_date(f"{d:02d}/{m:02d}/{y:04d}")
    return p.year, p.month, p.day


def birth_date_iso(raw: str) -> str | None:
    """The birth date as verification reads it (`_birth_date`), at its precision (YYYY,
    YYYY-MM or YYYY-MM-DD); None when unreadable. A register service is sent this."""
    try:
        return _iso(*_birth_date(raw, datetime.date.today()))
    except ValueError:
        return None


def _date_map(values: Iterable[str | None]) -> pa.Table:
    """(raw, y, m, d, bad) for each distinct raw date string (`_birth_date`)."""
    today = datetime.date.today()
    raws: list[str | None] = []
    ys: list[int | None] = []
    ms: list[int | None] = []
    ds: list[int | None] = []
    bad: list[bool] = []
    for raw in values:
        raws.append(raw)
        y = m = d = None
        wrong = False
        if raw is not None and raw.strip():
            try:
                y, m, d = _birth_date(raw, today)
            except ValueError:
                wrong = True
        ys.append(y)
        ms.append(m)
        ds.append(d)
        bad.append(wrong)
    return pa.table(
        {
            "raw": pa.array(raws, pa.string()),
            "y": pa.array(ys, pa.int32()),
            "m": pa.array(ms, pa.int32()),
            "d": pa.array(ds, pa.int32()),
            "bad": pa.array(bad, pa.bool_()),
        }
    )


def _sex_map(values: Iterable[str | None]) -> pa.Table:
    raws = list(values)
    sexes = [normalize_sex(v) if v is not None else None for v in raws]
    return pa.table({"raw": pa.array(raws, pa.string()), "sx": pa.array(sexes, pa.string())})


_TOKENS: dict[str, tuple[str, str]] = {}


def _spelling_as_key(canon: str, key: str) -> str:
    """`canon` (one word) with the i/y spelling its key chose ("lí" -> "lý" when the key
    is "ly"): Lí and Lý are one name spelt two ways, so they must compare equal with their
    tone marks too. `name_key` decides which syllables alternate; others are unchanged."""
    decomposed = unicodedata.normalize("NFD", canon)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).replace("đ", "d")
    if plain == key or not key.endswith("y") or plain[:-1] != key[:-1] or plain[-1:] != "i":
        return canon
    at = decomposed.rfind("i")
    return unicodedata.normalize("NFC", decomposed[:at] + "y" + decomposed[at + 1 :])


def _token(word: str) -> tuple[str, str]:
    """(canonical, folded) form of one word: lower case, NFC, input-method keystrokes
    decoded ("nguyeenx" -> "nguyễn"), the new tone placement ("hoà" for "hòa"), the i/y
    spelling of the key; and the key (`name_key`: no diacritics, đ -> d, i/y folded)."""
    found = _TOKENS.get(word)
    if found is None:
        canon = normalize_name(word).lower()
        key = name_key(canon)
        found = _TOKENS[word] = (_spelling_as_key(canon, key), key)
    return found


def _name_tokens(raw: str) -> list[tuple[str, str]]:
    lowered = raw.lower()
    if not VIQR_MARKS.isdisjoint(lowered):
        # VIQR typing ("Nguye^~n"): the name is decoded whole, since whether a final "."
        # is a tone mark depends on the other words
        words = normalize_name(lowered).lower().split()
        keys = [name_key(w) for w in words]
        return [(_spelling_as_key(w, k), k) for w, k in zip(words, keys, strict=True)]
    return [_token(w) for w in lowered.split()]


def _name_parts(tokens: list[str]) -> tuple[str, str, str]:
    """(family, middle, given) from folded words, with the order rules of `split_name`."""
    n = len(tokens)
    if n == 0:
        return "", "", ""
    if n == 1:
        return "", "", tokens[0]
    if tokens[0] not in SURNAME_KEYS:
        if tokens[-1] in SURNAME_KEYS:  # "Văn An Nguyễn"
            return tokens[-1], " ".join(tokens[:-2]), tokens[-2]
        if tokens[1] in SURNAME_KEYS:  # "An Nguyễn Văn"
            return tokens[1], " ".join(tokens[2:]), tokens[0]
    return tokens[0], " ".join(tokens[1:-1]), tokens[-1]


def _name_map(values: Iterable[str | None]) -> pa.Table:
    """Normalised name columns for each distinct raw name.

    Names repeat (281,000 distinct among two million in the benchmark) and words repeat
    far more, so each word is normalised once (`_token`) and each name once.
    """
    cols: dict[str, list[Any]] = {
        k: [] for k in ("raw", "canon", "fold", "is_ascii", "cs", "fs", "fam", "mid", "giv")
    }
    for raw in values:
        words = _name_tokens(raw or "")
        canon_words = [c for c, _ in words]
        fold_words = [f for _, f in words if f]
        fold = " ".join(fold_words)
        canon = " ".join(canon_words)
        fam, mid, giv = _name_parts(fold_words)
        sorted_fold = sorted(fold_words)
        cols["raw"].append(raw)
        cols["canon"].append(canon)
        cols["fold"].append(fold)
        cols["is_ascii"].append(canon.isascii())
        cols["cs"].append(" ".join(sorted(canon_words)))
        cols["fs"].append(" ".join(sorted_fold))
        cols["fam"].append(fam)
        cols["mid"].append(mid)
        cols["giv"].append(giv)
    types = {"is_ascii": pa.bool_()}
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in cols.items()})


def _place_map(pairs: Iterable[tuple[str | None, str | None]]) -> pa.Table:
    communes, provinces = place_readings()
    ps: list[str | None] = []
    cs: list[str | None] = []
    pset: list[list[str]] = []
    cset: list[list[str]] = []
    for p, c in pairs:
        ps.append(p)
        cs.append(c)
        pp = (p or "").strip()
        cc = (c or "").strip()
        pset.append(list(provinces.get(pp, ()) or ((pp,) if pp else ())))
        cset.append(list(communes.get((pp, cc), ())) if cc else [])
    return pa.table(
        {
            "p": pa.array(ps, pa.string()),
            "c": pa.array(cs, pa.string()),
            "pset": pa.array(pset, pa.list_(pa.string())),
            "cset": pa.array(cset, pa.list_(pa.string())),
        }
    )


def _address_map(addresses: Iterable[str]) -> pa.Table:
    """(a, pset, cset) for each distinct written address (`address_place`)."""
    adds: list[str] = []
    pset: list[list[str]] = []
    cset: list[list[str]] = []
    for a in addresses:
        ps, cs = address_place(a)
        adds.append(a)
        pset.append(list(ps))
        cset.append(list(cs))
    return pa.table(
        {
            "a": pa.array(adds, pa.string()),
            "pset": pa.array(pset, pa.list_(pa.string())),
            "cset": pa.array(cset, pa.list_(pa.string())),
        }
    )


# ------------------------------------------------------------------ detailed comparison


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Edits between two name keys, capped at `limit`: a letter added, lost or replaced,
    or two neighbours exchanged ("Nugyễn", "Hùgn": the commonest slips at a keyboard),
    each one edit (optimal string alignment, `rapidfuzz`)."""
    return min(OSA.distance(a, b, score_cutoff=limit), limit)


@dataclass(frozen=True, slots=True)
class Person:
    """Normalised identity fields of a record or a register entry."""

    raw_name: str
    canon: str  # lower case, NFC, new tone placement, single spaces
    fold: str  # no diacritics
    is_ascii: bool  # typed without any diacritic
    family: str  # folded parts, in Vietnamese order
    middle: str
    given: str
    raw_date: str
    y: int | None
    m: int | None
    d: int | None
    sex: str | None
    pset: tuple[str, ...] = ()
    cset: tuple[str, ...] = ()
    province: str = ""
    commune: str = ""


def _iso(y: int | None, m: int | None, d: int | None) -> str:
    if y is None:
        return ""
    if m is None:
        return f"{y:04d}"
    if d is None:
        return f"{y:04d}-{m:02d}"
    return f"{y:04d}-{m:02d}-{d:02d}"


def _letter_apart(a: str, b: str) -> bool:
    """One letter apart, the keys' i/y folding undone ("ti" for "thi" is one letter, though
    its key is "ty")."""
    return (
        edit_distance(a, b, 2) <= 1
        or edit_distance(a.replace("y", "i"), b.replace("y", "i"), 2) <= 1
    )


def compare_name(
    r: Person, g: Person, distances: tuple[int, int, int, int] | None = None
) -> tuple[str, str]:
    """('form' | 'minor' | 'differ', reason) for the record's name against the register's.

    Form: equal once case, spacing, Unicode form, tone-mark placement and word order are
    set aside, or equal without diacritics when the record has none at all. Minor (the
    same person, name to correct): diacritics that differ where the record has them, a
    middle name left out, one letter wrong in a part. Anything more is another name.
    """
    rt, gt = r.canon.split(), g.canon.split()
    if sorted(rt) == sorted(gt):
        return "form", ""
    rf, gf = r.fold.split(), g.fold.split()
    if r.is_ascii and sorted(rf) == sorted(gf):
        return "form", ""
    said = f"the record has {r.raw_name.strip()!r}, the register {g.raw_name!r}"
    if sorted(rf) == sorted(gf):
        return "minor", f"full_name: diacritics differ: {said}"
    missing = list(gf)  # register words the record lacks, and record words it adds
    extra = []
    for word in rf:
        if word in missing:
            missing.remove(word)
        else:
            extra.append(word)
    if not extra and len(missing) == 1 and len(rf) >= 2:
        return "minor", f"full_name: a name part is missing: {said}"
    if len(extra) == 1 and 1 <= len(missing) <= 2:
        # one part mistyped by a letter (a first letter lost spoils the word order
        # too: "oàng Thị Nhạn"), perhaps with the middle name left out
        typed = extra[0]
        if any(_letter_apart(typed, m) for m in missing):
            lost = " and a name part is missing" if len(missing) == 2 else ""
            return "minor", f"full_name: a letter differs{lost}: {said}"
    if distances is None:
        distances = (
            edit_distance(r.family, g.family, 2),
            edit_distance(r.given, g.given, 2),
            edit_distance(r.middle, g.middle, 2),
            edit_distance(" ".join(sorted(rf)), " ".join(sorted(gf)), 3),
        )
    fam, giv, mid, whole = distances
    if not r.middle:
        mid = 0 if not g.middle or len(rf) >= 2 else 2
    if r.family and fam <= 1 and giv <= 1 and mid <= 1 and fam + giv + mid <= 1 + (not r.middle):
        what = (
            "a name part is missing and a letter differs"
            if not r.middle and g.middle
            else ("a letter differs")
        )
        return "minor", f"full_name: {what}: {said}"
    if whole <= 1:
        return "minor", f"full_name: a letter differs: {said}"
    if r.raw_name.isascii() and _typed_with_keystrokes(r.raw_name, g.canon):
        return "minor", f"full_name: typed with an input method off, and a slip: {said}"
    return "differ", f"full_name: {said}"


@functools.lru_cache(maxsize=1 << 14)
def _typed_with_keystrokes(raw: str, canon: str) -> bool:
    """Whether the ASCII name `raw` is the name `canon` typed with an input method off,
    with at most one slip in each word and two in all."""
    typed = raw.lower().split()
    words = canon.split()
    if len(typed) != len(words) or not any(not w.isascii() for w in words):
        return False
    for method in KEYSTROKE_SCHEMES:
        # the register's name spelt out in the method's keys, to compare with a record
        # whose keystrokes were mistyped too ("Thai1 Thi5 Doe6m4" for Thái Thị Diễm)
        spelt = [keystrokes(w, method) for w in words]
        for order in (spelt, spelt[1:] + spelt[:1], spelt[-1:] + spelt[:-1]):
            apart = [edit_distance(t, w, 2) for t, w in zip(typed, order, strict=True)]
            if max(apart) <= 1 and sum(apart) <= 2:
                return True
    return False


def _one_keystroke(a: str, b: str) -> bool:
    """One digit replaced, or two neighbours swapped (1978 for 1987)."""
    diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diffs) == 1:
        return True
    if len(diffs) != 2 or diffs[1] != diffs[0] + 1:
        return False
    i, j = diffs
    return a[i] == b[j] and a[j] == b[i]


def compare_date(r: Person, g: Person) -> tuple[str, str]:
    """(level, reason) for the record's birth date against the register's; levels are the
    keys of `E_DATE`. 'form', 'month' and 'year' agree as far as the record knows the
    date; 'swap', 'year_slip' and 'digit' are the known slips (day and month exchanged, a
    year off by one or one keystroke, a day or month one keystroke away); 'day',
    'month_only' and 'other' keep the year but not the rest; 'differ' is another year."""
    reg = _iso(g.y, g.m, g.d)
    if r.y is None:
        if r.raw_date.strip():
            return "unreadable", (
                f"birth_date: {r.raw_date.strip()!r} is not a recognised date; "
                f"the register has {reg}"
            )
        return "absent", f"birth_date: absent from the record; the register has {reg}"
    if r.y == g.y and (r.m is None or (r.m == g.m and (r.d is None or r.d == g.d))):
        return ("form" if r.d is not None else "month" if r.m is not None else "year"), ""
    rec = _iso(r.y, r.m, r.d)
    said = f"the record has {rec}, the register {reg}"
    if r.y == g.y:
        if g.m is None or (r.m == g.m and g.d is None):
            return "register_partial", f"birth_date: the register knows less: {said}"
        if r.m == 1 and r.d == 1:
            return "jan1", f"birth_date: 1 January, written for an unknown day and month: {said}"
        if r.m == g.m and r.d == 1:
            return "first", f"birth_date: the 1st, written for an unknown day: {said}"
        if r.m == g.d and r.d == g.m:
            return "swap", f"birth_date: day and month swapped: {said}"
        if r.m == g.m and r.d is not None and g.d is not None:
            slip = _one_keystroke(f"{r.d:02d}", f"{g.d:02d}")
            return ("digit" if slip else "day"), f"birth_date: {said}"
        if r.d is not None and r.d == g.d and r.m is not None:
            slip = _one_keystroke(f"{r.m:02d}", f"{g.m:02d}")
            return ("digit" if slip else "month_only"), f"birth_date: {said}"
        return "other", f"birth_date: day and month differ: {said}"
    if (
        g.y is not None
        and r.m == g.m
        and r.d == g.d
        and (abs(r.y - g.y) <= 1 or _one_keystroke(f"{r.y:04d}", f"{g.y:04d}"))
    ):
        return "year_slip", f"birth_date: year differs: {said}"
    if r.m is None and g.y is not None and abs(r.y - g.y) == 1:
        return "year_near", f"birth_date: year differs: {said}"
    return "differ", f"birth_date: {said}"


_SEX_WORD = {"M": "male", "F": "female", "O": "other"}


def compare_sex(r: Person, g: Person) -> tuple[str, str]:
    if r.sex is None or g.sex is None or r.sex == g.sex:
        return "form", ""
    return "differ", (
        f"sex: the record says {_SEX_WORD.get(r.sex, r.sex)}, "
        f"the register {_SEX_WORD.get(g.sex, g.sex)}"
    )


def compare_place(r: Person, g: Person) -> tuple[str, str]:
    """Same place when a reading of the record's codes (current or pre-2025) is the
    register's commune, or, without a commune code, its province."""
    if not r.province and not r.commune:
        return "form", ""
    if r.commune:
        if g.commune in r.cset:
            return "form", ""
        return "differ", (
            f"commune_code: {r.province}/{r.commune} is not the register's commune "
            f"{g.province}/{g.commune}, before or after the 2025 reform"
        )
    if g.province in r.pset:
        return "form", ""
    return "differ", (
        f"province_code: {r.province} is not the register's province {g.province}, "
        "before or after the 2025 reform"
    )


def place_level(r: Person, g: Person) -> str:
    """How far the record's place agrees with the register's: a key of `E_PLACE`."""
    if not r.province and not r.commune:
        return "none"
    if r.commune and g.commune in r.cset:
        return "commune"
    if g.province in r.pset:
        return "other_commune" if r.commune else "province"
    return "other_province"


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome for one record."""

    record_id: str
    status: str
    reasons: tuple[str, ...]
    cccd_suggested: str | None = None
    score: float | None = None
    register_cccd: str | None = None  # whose register values fill the *_register columns


def holder_evidence(
    name: str, date: str, sex: str, place: str, namesakes: int
) -> tuple[float, str]:
    """(bits, account) of evidence that the holder of the record's number is its person.

    `name`, `date`, `sex` are levels of `compare_name`, `compare_date`, `compare_sex`,
    `place` one of `place_level`; `namesakes` is how many register people bear the name
    the record agrees with (the holder among them). A number is taken as the person's
    only when the sum is at least 0: agreeing on "Nguyễn Văn Hùng" proves little, so a
    common name with another day and month of birth and another place is not enough."""
    crowd = min(E_NAMESAKES_CAP, math.log2(max(1, namesakes)))
    bits = E_PRIOR - crowd + E_DATE[date] + E_SEX[sex] + E_PLACE[place]
    if name == "minor":
        bits += E_NAME_MINOR
    account = (
        f"the name is borne by {namesakes} register {'person' if namesakes == 1 else 'people'}"
        f", birth date {date.replace('_', ' ')}, place {place.replace('_', ' ')}"
        + (", sex differs" if sex == "differ" else "")
    )
    return bits, account


_DATE_AGREES = frozenset(("form", "month", "year"))


def decide(
    record_id: str,
    cccd: str,
    r: Person,
    holder: Person | None,
    holder_cccd: str | None,
    best: tuple[str, float, float] | None,
    distances: tuple[int, int, int, int] | None = None,
    holder_weight: float | None = None,
    namesakes: int = 1,
) -> Finding:
    """The status of one record that carries a number and did not pass the fast path.

    `holder` is the register entry for the record's number (None if the register does not
    hold it); `best` is (cccd, weight, runner-up weight) of the best register candidate
    other than the holder, found by search, or None; `holder_weight` the holder's weight
    under the same scoring (with the credit for carrying its number); `namesakes` how many
    register people share the holder's name.
    """
    suggestion = _suggestion(best)
    if holder is not None and holder_cccd is not None:
        name, name_why = compare_name(r, holder, distances)
        date, date_why = compare_date(r, holder)
        sex, sex_why = compare_sex(r, holder)
        place, place_why = compare_place(r, holder)
        bits, account = holder_evidence(name, date, sex, place_level(r, holder), namesakes)
        # Another register person who fits the record clearly better than the holder,
        # once the holder's credit for the number is set aside (twins, siblings,
        # namesakes): the record is that person's, or at least not surely the holder's.
        outmatched = False
        holder_alone = holder_weight - W_NUMBER if holder_weight is not None else None
        if best is not None:
            top_cccd, top, second = best
            rival_to = max(second, holder_alone) if holder_alone is not None else second
            outmatched = top >= ACCEPT_SCORE and (
                holder_alone is None or top - holder_alone >= ACCEPT_MARGIN
            )
            suggestion = (
                (top_cccd, min(1.0, top / SCORE_FULL))
                if top >= ACCEPT_SCORE and top - rival_to >= ACCEPT_MARGIN
                else None
            )
        if name != "differ" and bits >= 0 and not outmatched:
            reasons = tuple(x for x in (name_why, date_why, sex_why, place_why) if x)
            substantive = (
                name == "minor" or date not in _DATE_AGREES or sex == "differ" or place == "differ"
            )
            return Finding(
                record_id,
                "corrected" if substantive else "verified",
                reasons,
                None,
                None,
                holder_cccd,
            )
        why = [
            f"cccd: {cccd} belongs to {holder.raw_name} (born {_iso(holder.y, holder.m, holder.d)})"
        ]
        if r.y is not None and holder.y is not None and 14 <= r.y - holder.y <= 55:
            why.append(
                f"cccd: the holder was born {r.y - holder.y} years before this person: "
                "a parent's number on a child's record"
            )
        if outmatched:
            if suggestion is not None:
                why.append(
                    f"cccd: the record fits the register's {suggestion[0]} better than the holder"
                )
            else:
                why.append("cccd: other register people fit the record better than the holder")
        elif name != "differ":
            why.append(f"cccd: too little agrees to take the number as this person's: {account}")
        why.extend(x for x in (name_why, date_why, sex_why, place_why) if x)
        if suggestion is not None and suggestion[0] == holder_cccd:
            suggestion = None
        return _with_suggestion(record_id, "mismatch", why, suggestion)
    if len(cccd) == 9:
        why = [
            f"cccd: {cccd} has 9 digits: an old identity card (CMND) number, not the "
            "12-digit personal identification number"
        ]
        return _with_suggestion(record_id, "invalid_id", why, suggestion)
    problems = check_cccd(cccd, r.sex, r.y)
    if problems:
        why = [f"cccd: {p}" for p in problems]
        return _with_suggestion(record_id, "invalid_id", why, suggestion)
    why = [f"cccd: {cccd} is well formed but the register does not hold it"]
    return _with_suggestion(record_id, "not_found", why, suggestion)


def _suggestion(best: tuple[str, float, float] | None) -> tuple[str, float] | None:
    if best is None:
        return None
    cccd, top, second = best
    if top >= ACCEPT_SCORE and top - second >= ACCEPT_MARGIN:
        return cccd, min(1.0, top / SCORE_FULL)
    return None


def _with_suggestion(
    record_id: str, status: str, why: list[str], suggestion: tuple[str, float] | None
) -> Finding:
    if suggestion is None:
        return Finding(record_id, status, tuple(why))
    return Finding(record_id, status, tuple(why), suggestion[0], suggestion[1], suggestion[0])


# ------------------------------------------------------------------ the engine


@dataclass
class VerifyResult:
    """Counts of one run; the report rows stay in the engine's `report` table."""

    records: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds_fast: float = 0.0
    residue: int = 0


class VerifyEngine:
    """Verify record tables against one register table, inside one DuckDB connection.

    The register is loaded once (`load_register`), records in one go or batch by batch
    (`verify`); each call leaves the findings in the table ``report`` (columns
    `REPORT_COLUMNS` plus ``source`` and ``rn``, the record's input position).
    """

    def __init__(self, threads: int | None = None, memory_limit: str | None = None) -> None:
        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.register_rows = 0
        self.register_size = 0  # the whole register's, when only some entries are loaded
        self.timings: dict[str, float] = {}

    def _timed(self, step: str, started: float) -> float:
        now = time.perf_counter()
        self.timings[step] = self.timings.get(step, 0.0) + now - started
        return now

    def close(self) -> None:
        self.con.close()

    # -- loading -------------------------------------------------------------------
    def _normalise(self, src: str, dst: str, with_source: bool) -> None:
        """Create table `dst` with the normalised columns of the raw table/view `src`."""
        con = self.con
        dates = [r[0] for r in con.execute(f"SELECT DISTINCT birth_date FROM {src}").fetchall()]
        sexes = [r[0] for r in con.execute(f"SELECT DISTINCT sex FROM {src}").fetchall()]
        pairs = con.execute(f"SELECT DISTINCT province_code, commune_code FROM {src}").fetchall()
        date_map, sex_map, place_map = _date_map(dates), _sex_map(sexes), _place_map(pairs)
        con.register("date_map", date_map)
        con.register("sex_map", sex_map)
        con.register("place_map", place_map)
        extra = "s.rn, s.record_id, coalesce(s.source, '') AS source, " if with_source else ""
        # A spreadsheet that took the number for a number dropped its leading zeros (every
        # province code starts with 0; a 10-digit insurance number padded so reads "000...",
        # no province, and stays invalid).
        number = "CASE WHEN regexp_full_match(n, '[0-9]{10,11}') THEN lpad(n, 12, '0') ELSE n END"
        names = [r[0] for r in con.execute(f"SELECT DISTINCT full_name FROM {src}").fetchall()]
        con.register("name_map", _name_map(names))
        address = ", coalesce(s.address, '') AS address" if with_source else ""
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {dst} AS
            SELECT {extra}
                   {number} AS cccd,
                   coalesce(s.full_name, '') AS full_name,
                   coalesce(s.birth_date, '') AS birth_date,
                   s.sex AS sex_raw,
                   coalesce(s.province_code, '') AS province_code,
                   coalesce(s.commune_code, '') AS commune_code,
                   nm.canon, nm.fold, nm.is_ascii, nm.cs, nm.fs, string_split(nm.fs, ' ') AS tk,
                   nm.fam, nm.mid, nm.giv,
                   dm.y, dm.m, dm.d, coalesce(dm.bad, false) AS date_bad,
                   sm.sx,
                   coalesce(pm.pset, []) AS pset, coalesce(pm.cset, []) AS cset{address}
            FROM (SELECT *, regexp_replace(coalesce(cccd, ''), '[^0-9A-Za-z]', '', 'g') AS n
                  FROM {src}) s
            LEFT JOIN name_map nm ON nm.raw IS NOT DISTINCT FROM s.full_name
            LEFT JOIN date_map dm ON dm.raw IS NOT DISTINCT FROM s.birth_date
            LEFT JOIN sex_map sm ON sm.raw IS NOT DISTINCT FROM s.sex
            LEFT JOIN place_map pm ON pm.p IS NOT DISTINCT FROM s.province_code
                                   AND pm.c IS NOT DISTINCT FROM s.commune_code
            """
        )
        for name in ("name_map", "date_map", "sex_map", "place_map"):
            con.unregister(name)

    def load_register(
        self,
        source: str | Path | pa.Table,
        cache: Path | None = None,
        register_size: int | None = None,
    ) -> int:
        """Load and normalise the register (CSV or Parquet path, or an Arrow table).

        With `cache` (a Parquet path that names the register file's hash and
        `NORMALISATION_VERSION`), the normalised register is read from there when present
        and written there otherwise: a register extract is verified against many times.

        A table of some entries only (a register service's answers) may carry the
        service's `name_count` and `family_given_count` per entry and come with the
        whole register's `register_size`: name frequencies are then the register's, not
        those of the few entries at hand.
        """
        con = self.con
        if cache is not None and cache.exists():
            con.execute(
                f"CREATE OR REPLACE TABLE reg AS SELECT * FROM read_parquet('{_quote(cache)}')"
            )
            self.register_rows = int(con.execute("SELECT count(*) FROM reg").fetchall()[0][0])
            self.register_size = register_size or self.register_rows
            return self.register_rows
        if isinstance(source, pa.Table):
            con.register("reg_src", source)
            con.execute("CREATE OR REPLACE TEMP VIEW reg_raw AS SELECT * FROM reg_src")
        else:
            con.execute(f"CREATE OR REPLACE TEMP VIEW reg_raw AS SELECT * FROM {_reader(source)}")
        missing = set(REGISTER_COLUMNS[:6]) - {
            c[0] for c in con.execute("DESCRIBE reg_raw").fetchall()
        }
        if missing:
            raise ValueError(f"the register lacks the column(s) {', '.join(sorted(missing))}")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE reg_cols AS SELECT "
            "CAST(cccd AS VARCHAR) AS cccd, CAST(full_name AS VARCHAR) AS full_name, "
            "CAST(birth_date AS VARCHAR) AS birth_date, CAST(sex AS VARCHAR) AS sex, "
            "CAST(province_code AS VARCHAR) AS province_code, "
            "CAST(commune_code AS VARCHAR) AS commune_code FROM reg_raw"
        )
        self._normalise("reg_cols", "reg_all", with_source=False)
        # One entry per number: the register should hold none twice, keep the first if so.
        # Each entry carries how many register people share its name (the same words) and
        # its family and given names: what agreeing on the name is worth (`decide`).
        con.execute(
            "CREATE OR REPLACE TABLE reg AS SELECT row_number() OVER () AS gid, *,"
            " count(*) OVER (PARTITION BY fs) AS n_full,"
            " count(*) OVER (PARTITION BY fam, giv) AS n_fg FROM ("
            " SELECT * FROM reg_all WHERE cccd <> ''"
            " QUALIFY row_number() OVER (PARTITION BY cccd) = 1)"
        )
        con.execute("DROP TABLE reg_all")
        con.execute("DROP TABLE reg_cols")
        if isinstance(source, pa.Table):
            if {"name_count", "family_given_count"} <= set(source.column_names):
                con.execute(
                    """
                    UPDATE reg SET
                        n_full = greatest(reg.n_full, coalesce(s.nc, 0)),
                        n_fg = greatest(reg.n_fg, coalesce(s.fgc, 0))
                    FROM (SELECT CAST(cccd AS VARCHAR) AS cccd,
                                 max(TRY_CAST(name_count AS BIGINT)) AS nc,
                                 max(TRY_CAST(family_given_count AS BIGINT)) AS fgc
                          FROM reg_src GROUP BY ALL) s
                    WHERE s.cccd = reg.cccd
                    """
                )
            con.unregister("reg_src")
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                partial = cache.with_name(cache.name + ".part")
                con.execute(f"COPY reg TO '{_quote(partial)}' (FORMAT parquet)")
                partial.replace(cache)
            except (OSError, duckdb.Error):
                pass  # a cache that cannot be written only costs time next run
        self.register_rows = int(con.execute("SELECT count(*) FROM reg").fetchall()[0][0])
        self.register_size = register_size or self.register_rows
        return self.register_rows

    # -- verifying -----------------------------------------------------------------
    def verify(
        self,
        records: str | Path | pa.Table,
        skip_ids: pa.Table | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> VerifyResult:
        """Verify every record; findings end in the table ``report``.

        `skip_ids` (one string column ``record_id``) lists records already reported by an
        earlier, interrupted run; `on_step` is told the name of each step as it starts.
        """

        def step(name: str) -> None:
            if on_step is not None:
                on_step(name)

        con = self.con
        if isinstance(records, pa.Table):
            con.register("rec_src", records)
            src = "rec_src"
        else:
            src = _reader(records)
        cols = {c[0] for c in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        missing = {"record_id", "full_name", "birth_date"} - cols
        if missing:
            raise ValueError(f"the records lack the column(s) {', '.join(sorted(missing))}")

        def col(name: str) -> str:
            return f"CAST({name} AS VARCHAR)" if name in cols else "CAST(NULL AS VARCHAR)"

        skip = ""
        if skip_ids is not None:
            con.register("skip_ids", skip_ids)
            skip = "WHERE CAST(record_id AS VARCHAR) NOT IN (SELECT record_id FROM skip_ids)"
        # rn is the record's position in the input: the report keeps that order
        con.execute("SET preserve_insertion_order = true")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE rec_cols AS SELECT row_number() OVER () AS rn, "
            + ", ".join(f"{col(c)} AS {c}" for c in (*RECORD_COLUMNS, "address"))
            + f" FROM {src} {skip}"
        )
        con.execute("SET preserve_insertion_order = false")
        if isinstance(records, pa.Table):
            con.unregister("rec_src")
        if skip_ids is not None:
            con.unregister("skip_ids")
        dupes = con.execute(
            "SELECT record_id FROM rec_cols GROUP BY record_id HAVING count(*) > 1 LIMIT 3"
        ).fetchall()
        if dupes:
            raise ValueError(
                "record_id must be unique; repeated: " + ", ".join(str(d[0]) for d in dupes)
            )
        t = started = time.perf_counter()
        step("normalising records")
        self._normalise("rec_cols", "rec", with_source=True)
        t = self._timed("normalise records", t)
        step("fast path")
        self._fast_path()
        t = self._timed("fast path", t)
        step("searching the register")
        self._candidates()
        fast_done = t = self._timed("candidate search", t)
        step("comparing the rest in detail")
        residue = self._residue()
        t = self._timed("detailed comparison", t)
        step("assembling the report")
        self._assemble(residue)
        self._timed("assemble", t)
        result = VerifyResult(seconds_fast=fast_done - started, residue=residue.num_rows)
        for source, status, n in con.execute(
            "SELECT source, status, count(*) FROM report GROUP BY ALL"
        ).fetchall():
            result.records += n
            result.by_status[status] = result.by_status.get(status, 0) + n
            result.by_source.setdefault(source, {})[status] = n
        return result

    def _fast_path(self) -> None:
        """Records whose number is in the register and whose every field equals the
        register's after normalisation: verified without further work."""
        self.con.execute(
            """
            CREATE OR REPLACE TEMP TABLE fast AS
            SELECT r.rn, r.record_id, g.gid
            FROM rec r JOIN reg g ON r.cccd = g.cccd
            WHERE (r.cs = g.cs OR (r.is_ascii AND r.fs = g.fs))
              AND r.y = g.y AND (r.m IS NULL OR (r.m = g.m AND (r.d IS NULL OR r.d = g.d)))
              AND (r.sx IS NULL OR r.sx = g.sx)
              AND (CASE WHEN r.commune_code <> '' THEN list_contains(r.cset, g.commune_code)
                        WHEN r.province_code <> '' THEN list_contains(r.pset, g.province_code)
                        ELSE true END)
            """
        )

    def _candidates(self) -> None:
        """Best and runner-up register person other than the holder of the record's own
        number, for every record not verified outright, by blocked equi-joins (family +
        given + birth year, or one year off for a year alone; given + birth year for a
        year alone; given + birth date; family + birth date; the
        same words + birth year and the month, the day or the commune; the same words,
        day and month, the year one off; birth date + commune; numbers one keystroke away)
        scored in SQL; then, for records with no likely person yet, people born on the
        same full date, or in the same year in the record's commune, who share a word of
        the name (a slip in a name part). The holder is scored too (`pairs.own`), so that
        `decide` can tell whether someone else fits the record better."""
        con = self.con
        people = max(1, self.register_size or self.register_rows)
        # A record without province and commune codes may still say where its person lives
        # in a written address: read for the candidate search only (`address_place`).
        written = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT r.address FROM rec r ANTI JOIN fast f ON r.rn = f.rn "
                "WHERE r.address <> '' AND r.province_code = '' AND r.commune_code = ''"
            ).fetchall()
        ]
        con.register("address_map", _address_map(written))
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE need AS
            SELECT r.* REPLACE (
                CASE WHEN am.a IS NULL OR r.province_code <> '' OR r.commune_code <> ''
                     THEN r.pset ELSE am.pset END AS pset,
                CASE WHEN am.a IS NULL OR r.province_code <> '' OR r.commune_code <> ''
                     THEN r.cset ELSE am.cset END AS cset)
            FROM rec r ANTI JOIN fast f ON r.rn = f.rn
            LEFT JOIN address_map am ON am.a = r.address
            """
        )
        con.unregister("address_map")
        near = (
            "(length(r.cccd) = 12 AND r.cccd <> g.cccd "
            "AND damerau_levenshtein(r.cccd, g.cccd) = 1)"
        )  # evaluated on the few pairs with a number only

        def scored(keys: str) -> str:
            """SQL: the weight of each (record, register person) pair in `keys`."""
            return f"""
            SELECT k.rn, g.cccd, g.gid, r.cccd = g.cccd AS own,
                greatest(
                (CASE WHEN r.fam = g.fam THEN {W_FAMILY[0]}
                      WHEN r.fam <> '' AND {_slip("r.fam", "g.fam")} THEN {W_FAMILY[1]}
                      ELSE {W_FAMILY[2]} END)
              + (CASE WHEN r.giv = g.giv THEN {W_GIVEN[0]}
                      WHEN {_slip("r.giv", "g.giv")} THEN {W_GIVEN[1]}
                      ELSE {W_GIVEN[2]} END)
              + (CASE WHEN r.mid = g.mid THEN {W_MIDDLE[0]} WHEN r.mid = '' THEN 0
                      WHEN {_slip("r.mid", "g.mid")} THEN {W_MIDDLE[1]}
                      ELSE {W_MIDDLE[2]} END)
              + (CASE WHEN r.fs = g.fs THEN {W_SAME_TOKENS}
                          + greatest(0, least({W_RARE_CAP},
                                              log2({people} / g.n_full) - {W_RARE_FROM}))
                      ELSE 0 END),
                -- word order that the order rules misread (a typo in the family name,
                -- a middle name that is also a family name): count shared words instead
                CASE WHEN r.fs = g.fs THEN {W_NAME_FULL}
                     -- one letter off in the whole name, however its parts were read
                     WHEN len(r.tk) >= 2 AND len(r.tk) = len(g.tk)
                      AND levenshtein(r.fs, g.fs) = 1 THEN {W_NAME_FULL - 6}
                     WHEN len(r.tk) >= 2 AND r.fam <> g.fam
                      AND len(list_intersect(r.tk, g.tk)) >= len(g.tk) - 1 THEN {W_NAME_FULL // 2}
                     ELSE -100 END)
              + (CASE WHEN r.is_ascii THEN 0 WHEN r.cs = g.cs THEN {W_SAME_DIACRITICS[0]}
                      WHEN r.fs = g.fs THEN {W_SAME_DIACRITICS[1]} ELSE 0 END)
              + (CASE WHEN r.y IS NULL THEN 0
                      WHEN r.y = g.y AND r.m = g.m AND r.d = g.d THEN {W_DATE_EXACT}
                      WHEN r.y = g.y AND r.m = g.d AND r.d = g.m THEN {W_DATE_SWAP}
                      WHEN r.y = g.y AND r.m = g.m AND r.d IS NULL THEN {W_DATE_MONTH}
                      WHEN r.y = g.y AND r.m IS NULL THEN {W_DATE_YEAR}
                      WHEN r.y = g.y AND r.m = 1 AND r.d = 1 THEN {W_DATE_YEAR}
                      WHEN r.y = g.y AND r.m = g.m AND r.d = 1 THEN {W_DATE_YEAR}
                      WHEN r.m IS NULL AND abs(r.y - g.y) = 1 THEN 0
                      WHEN r.y = g.y AND r.m = g.m AND g.d IS NOT NULL THEN {W_DATE_OTHER_DAY}
                      WHEN r.y = g.y AND g.m IS NOT NULL THEN {W_DATE_OTHER_MONTH}
                      WHEN r.y = g.y THEN 0
                      WHEN abs(r.y - g.y) = 1 AND r.m = g.m AND r.d = g.d THEN 3
                      ELSE -10 END)
              + (CASE WHEN r.sx IS NULL OR g.sx IS NULL THEN 0 WHEN r.sx = g.sx THEN {W_SEX[0]}
                      ELSE {W_SEX[1]} END)
              + (CASE WHEN list_contains(r.cset, g.commune_code) THEN {W_COMMUNE}
                      WHEN list_contains(r.pset, g.province_code) THEN {W_PROVINCE}
                      WHEN r.province_code = '' THEN 0
                      ELSE {W_PLACE_OTHER} END)
              + (CASE WHEN r.cccd = g.cccd THEN {W_NUMBER}
                      WHEN {near} THEN {W_NUMBER_NEAR} ELSE 0 END) AS w
            FROM {keys} k JOIN need r ON r.rn = k.rn JOIN reg g ON g.gid = k.gid
            """

        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE pairs AS
            WITH number AS (
                -- numbers that may be mistyped: not in the register, or held by someone
                -- with another given name or birth year
                SELECT n.rn, n.cccd FROM need n LEFT JOIN reg g ON g.cccd = n.cccd
                WHERE regexp_full_match(n.cccd, '[0-9]{{12}}')
                  AND (g.cccd IS NULL OR g.giv <> n.giv OR g.y IS DISTINCT FROM n.y)
            ), near AS (
                -- every number one keystroke away (a digit replaced, neighbours swapped)
                SELECT rn, left(cccd, i) || dg || substr(cccd, i + 2) AS v
                FROM number, range(12) t(i), (SELECT unnest(range(10))::VARCHAR AS dg) digits
                WHERE substr(cccd, i + 1, 1) <> dg
                UNION ALL
                SELECT rn, left(cccd, i) || substr(cccd, i + 2, 1) || substr(cccd, i + 1, 1)
                          || substr(cccd, i + 3)
                FROM number, range(11) t(i)
                WHERE substr(cccd, i + 1, 1) <> substr(cccd, i + 2, 1)
            ), keys AS (
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.fam = g.fam AND n.giv = g.giv AND n.y = g.y
                 WHERE n.d IS NULL OR (n.m = 1 AND n.d = 1)
                UNION
                -- a year one off (day and month agree)
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.fs = g.fs AND n.m = g.m AND n.d = g.d
                 WHERE abs(n.y - g.y) = 1
                UNION
                -- a year alone may be one off
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.fam = g.fam AND n.giv = g.giv AND n.y + 1 = g.y
                 WHERE n.m IS NULL
                UNION
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.fam = g.fam AND n.giv = g.giv AND n.y - 1 = g.y
                 WHERE n.m IS NULL
                UNION
                -- a year alone and a slip in the family name
                SELECT n.rn, g.gid FROM need n JOIN reg g ON n.giv = g.giv AND n.y = g.y
                 WHERE (n.d IS NULL OR (n.m = 1 AND n.d = 1))
                   AND n.fam <> g.fam AND levenshtein(n.fam, g.fam) <= 2


                UNION
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.fam = g.fam AND n.giv = g.giv AND n.y = g.y AND n.m = g.d AND n.d = g.m
                UNION
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.giv = g.giv AND n.y = g.y AND n.m = g.m AND n.d = g.d
                UNION
                SELECT n.rn, g.gid FROM need n JOIN reg g
                  ON n.fam = g.fam AND n.mid = g.mid AND n.y = g.y AND n.m = g.m AND n.d = g.d
                UNION
                SELECT n.rn, g.gid FROM need n JOIN reg g ON n.fs = g.fs AND n.y = g.y
                 WHERE n.d IS NULL OR n.m = g.m OR n.d = g.d OR (n.m = 1 AND n.d = 1)
                    OR (n.m = g.d AND n.d = g.m)
                    OR list_contains(n.cset, g.commune_code)
                UNION
                SELECT n.rn, g.gid FROM (
                    SELECT rn, y, m, d, unnest(cset) AS commune FROM need WHERE d IS NOT NULL
                ) n JOIN reg g
                  ON n.y = g.y AND n.m = g.m AND n.d = g.d AND n.commune = g.commune_code
                UNION
                SELECT n.rn, g.gid FROM need n JOIN reg g ON n.cccd = g.cccd
                UNION
                SELECT n.rn, g.gid FROM near n JOIN reg g ON g.cccd = n.v
            )
            {scored("keys")}
            """
        )
        # A second round for records the blocks above found no likely person for: a slip
        # in a name (or word order the order rules misread) hides the person from the
        # name blocks, so try people born on the same full date, or in the same year in
        # the record's commune, who share at least one word of the name. Only for these
        # few records: on a whole register such blocks are large.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE weak AS
            SELECT n.* FROM need n
            WHERE n.rn NOT IN (
                SELECT rn FROM pairs WHERE NOT own AND w >= {ACCEPT_SCORE}
            ) AND len(n.tk) >= 2
            """
        )
        con.execute(
            f"""
            INSERT INTO pairs
            WITH keys AS (
                SELECT n.rn, g.gid FROM weak n JOIN reg g
                  ON n.y = g.y AND n.m = g.m AND n.d = g.d
                 WHERE list_has_any(n.tk, g.tk)
                UNION
                SELECT n.rn, g.gid FROM (
                    SELECT rn, y, tk, unnest(cset) AS commune FROM weak
                ) n JOIN reg g ON n.y = g.y AND n.commune = g.commune_code
                 WHERE list_has_any(n.tk, g.tk)
                EXCEPT
                SELECT rn, gid FROM pairs
            )
            {scored("keys")}
            """
        )
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE best AS
            SELECT rn, arg_max(cccd, w) AS cccd, arg_max(gid, w) AS gid, max(w) AS w,
                   coalesce(max(w) FILTER (WHERE k = 2), -1000) AS w2
            FROM (
                SELECT rn, cccd, gid, w,
                       row_number() OVER (PARTITION BY rn ORDER BY w DESC, cccd) AS k
                FROM pairs WHERE NOT own
            ) WHERE k <= 2 GROUP BY rn
            """
        )

    def _residue(self) -> pa.Table:
        """Detailed comparison, in Python, of records with a number that did not pass the
        fast path; records without a number are settled in SQL in `_assemble`."""
        con = self.con
        distances = ", ".join(_distance(f"n.{c}", f"g.{c}") for c in ("fam", "giv", "mid", "fs"))
        cur = con.execute(
            f"""
            SELECT n.rn, n.cccd,
                   n.full_name, n.canon, n.fold, n.is_ascii, n.fam, n.mid, n.giv,
                   n.birth_date, n.y, n.m, n.d, n.sx, n.pset, n.cset,
                   n.province_code, n.commune_code,
                   g.cccd, g.full_name, g.canon, g.fold, g.is_ascii, g.fam, g.mid, g.giv,
                   g.birth_date, g.y, g.m, g.d, g.sx, g.province_code, g.commune_code,
                   b.cccd, b.w, b.w2,
                   -- edit distances with the keys' i/y folding undone (a slip "Tị" for
                   -- "Thị" is one letter, though the keys are "ty" and "thi")
                   {distances},
                   h.w,
                   CASE WHEN n.fs = g.fs THEN g.n_full ELSE g.n_fg END
            FROM need n
            LEFT JOIN reg g ON g.cccd = n.cccd
            LEFT JOIN best b ON b.rn = n.rn
            LEFT JOIN pairs h ON h.rn = n.rn AND h.cccd = n.cccd
            WHERE n.cccd <> ''
            """
        )
        ids: list[int] = []
        statuses: list[str] = []
        reasons: list[str] = []
        suggested: list[str | None] = []
        scores: list[float | None] = []
        reg_cccd: list[str | None] = []
        while True:
            rows = cur.fetchmany(50_000)
            if not rows:
                break
            for row in rows:
                r = Person(
                    row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                    row[9], row[10], row[11], row[12], row[13],
                    tuple(row[14]), tuple(row[15]), row[16], row[17],
                )  # fmt: skip
                holder = None
                if row[18] is not None:
                    holder = Person(
                        row[19], row[20], row[21], row[22], row[23], row[24], row[25],
                        row[26], row[27], row[28], row[29], row[30], (), (), row[31], row[32],
                    )  # fmt: skip
                best = (row[33], float(row[34]), float(row[35])) if row[33] is not None else None
                dist = (row[36], row[37], row[38], row[39]) if holder is not None else None
                hw = float(row[40]) if row[40] is not None else None
                namesakes = int(row[41]) if row[41] is not None else 1
                f = decide(str(row[0]), row[1], r, holder, row[18], best, dist, hw, namesakes)
                ids.append(row[0])
                statuses.append(f.status)
                reasons.append("; ".join(f.reasons))
                suggested.append(f.cccd_suggested)
                scores.append(round(f.score, 3) if f.score is not None else None)
                reg_cccd.append(f.register_cccd)
        return pa.table(
            {
                "rn": pa.array(ids, pa.int64()),
                "status": pa.array(statuses, pa.string()),
                "reasons": pa.array(reasons, pa.string()),
                "cccd_suggested": pa.array(suggested, pa.string()),
                "score": pa.array(scores, pa.float64()),
                "register_cccd": pa.array(reg_cccd, pa.string()),
            }
        )

    def _assemble(self, residue: pa.Table) -> None:
        con = self.con
        con.register("residue", residue)
        accept = f"b.w >= {ACCEPT_SCORE} AND b.w - b.w2 >= {ACCEPT_MARGIN}"
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE findings AS
            SELECT rn, 'verified' AS status, '' AS reasons,
                   CAST(NULL AS VARCHAR) AS cccd_suggested, CAST(NULL AS DOUBLE) AS score,
                   gid
            FROM fast
            UNION ALL
            SELECT n.rn, 'missing_id',
                   'cccd: absent from the record',
                   CASE WHEN {accept} THEN b.cccd END,
                   CASE WHEN {accept} THEN round(least(1.0, b.w / {SCORE_FULL}), 3) END,
                   CASE WHEN {accept} THEN b.gid END
            FROM need n LEFT JOIN best b ON b.rn = n.rn
            WHERE n.cccd = ''
            UNION ALL
            SELECT x.rn, x.status, x.reasons, x.cccd_suggested, x.score, g.gid
            FROM residue x LEFT JOIN reg g ON g.cccd = x.register_cccd
            """
        )
        con.unregister("residue")
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE report AS
            SELECT r.rn, r.source, r.record_id, f.status, f.reasons, f.cccd_suggested,
                   f.score,
                   coalesce(g.full_name, '') AS full_name_register,
                   coalesce(g.birth_date, '') AS birth_date_register,
                   coalesce(g.sx, '') AS sex_register,
                   coalesce(g.province_code, '') AS province_code_register,
                   coalesce(g.commune_code, '') AS commune_code_register,
                   g.cccd AS register_cccd
            FROM findings f
            JOIN rec r ON r.rn = f.rn
            LEFT JOIN reg g ON g.gid = f.gid
            """
        )

    def report_table(self, order: bool = True) -> pa.Table:
        """The report rows in input order, columns `REPORT_COLUMNS` + ``source``."""
        cols = ", ".join(REPORT_COLUMNS)
        sql = f"SELECT {cols}, source FROM report" + (" ORDER BY rn" if order else "")
        return self.con.sql(sql).to_arrow_table()

    def write_csv(self, path: Path, append: bool = False) -> None:
        """Write the report as CSV (header unless appending)."""
        cols = ", ".join(REPORT_COLUMNS)
        if not append:
            self.con.execute(
                f"COPY (SELECT {cols} FROM report ORDER BY rn) TO '{_quote(path)}' "
                "(HEADER, DELIMITER ',')"
            )
            return
        import csv

        table = self.report_table()
        with path.open("a", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            rows = zip(*(table.column(c).to_pylist() for c in REPORT_COLUMNS), strict=True)
            writer.writerows(["" if v is None else v for v in row] for row in rows)
            fh.flush()


def _distance(a: str, b: str) -> str:
    """SQL: the edit distance of two keys (two neighbours exchanged counting one), the
    smaller of it with the keys' i/y folding undone ("ti" for "thi" is one letter, though
    its key is "ty")."""
    ia, ib = f"replace({a}, 'y', 'i')", f"replace({b}, 'y', 'i')"
    return f"least(damerau_levenshtein({a}, {b}), damerau_levenshtein({ia}, {ib}))"


def _slip(a: str, b: str) -> str:
    """SQL: the two keys are one edit apart, two neighbours exchanged counting one (the
    slower Damerau distance only for equal lengths, where an exchange can be), or with
    the keys' i/y folding undone ("ti" for "thi" is one letter, though its key is "ty")."""
    ia, ib = f"replace({a}, 'y', 'i')", f"replace({b}, 'y', 'i')"
    return (
        f"(levenshtein({a}, {b}) <= 1 OR (length({a}) = length({b}) "
        f"AND damerau_levenshtein({a}, {b}) <= 1) OR levenshtein({ia}, {ib}) <= 1)"
    )


def _quote(path: str | Path) -> str:
    return str(path).replace("'", "''")


def _reader(path: str | Path) -> str:
    """DuckDB table function reading a CSV or Parquet file, every CSV column as text
    (numbers keep their leading zeros)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.suffix.lower() in (".parquet", ".pq"):
        return f"read_parquet('{_quote(p)}')"
    return f"read_csv('{_quote(p)}', all_varchar = true, header = true)"
