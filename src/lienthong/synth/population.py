"""Synthetic Vietnamese population with noisy source records, for record-linkage work.

Linkage cannot be tested on real patients, and random strings are useless: the
hard cases in Vietnam come from its name distribution (four people in ten are
Nguyễn), from households sharing surname and address, twins, and from the way
real sources export people - without the CCCD, without diacritics, with dates
in four formats and addresses from before the July 2025 reform. This module
builds a population with that structure and writes four CSV files:

* ``register.csv`` - the population-register extract (the clean truth about
  each person who holds a personal identification number);
* ``records.csv`` - what the hospital, immunization, commune health station and
  telehealth systems export about those people, with the noise they really have;
* ``truth.csv`` - which person each record belongs to, and whose CCCD it carries
  (``cccd_owner``: a relative's or a namesake's in some records, as happens);
* ``noise.csv`` - the noise kinds applied to each record, for tests and for breaking
  figures down by kind.

The noise is what data entry produces: diacritics dropped, names upper-cased, in the
Western order or with a letter lost, swapped, doubled or typed on the neighbouring key,
the keystrokes of Telex, VNI or VIQR left in when the input method was off, the other i/y
spelling (Mĩ/Mỹ), doubled spaces; dates in several formats, day and month swapped, the
year one off or alone; a sex box mis-ticked; CCCDs with a digit wrong or two swapped,
the old CMND, a mother's, another household member's or a namesake's number; old
addresses; the same record sent twice. The rates are the constants below (per record
unless stated), the newer ones scaled by a profile (``generate(noise=...)``).

Everything is drawn from one ``random.Random(seed)`` in a fixed order, so a seed
always gives byte-identical files. The reference date is fixed for the same
reason rather than taken from the clock.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
import time
import unicodedata
from bisect import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from random import Random
from typing import Any

from lienthong.identity import layouts
from lienthong.identity.normalize import KEYSTROKE_SCHEMES, keystrokes
from lienthong.synth import names


def reference_day(today: date | None = None) -> date:
    """The day synthetic data is generated for: ``today`` when given (``--today``), else
    the calendar's today. Ages, visits and vaccinations are dated back from it, so data
    made today looks current; the same seed and day give the same data."""
    return date.today() if today is None else today


REGISTER_HEADER = layouts.REGISTER_COLUMNS
RECORDS_HEADER = layouts.RECORDS_COLUMNS
TRUTH_HEADER = ("record_id", "person_id", "cccd_owner")
"""``cccd_owner``: whose CCCD the record's ``cccd`` field is (a person_id), "" when the
field is empty, holds an old CMND or a number nobody holds (a typo)."""
NOISE_HEADER = ("record_id", "noise")
"""``noise``: the noise kinds applied to the record, ``;``-separated (names as in
`bench.altpop`'s ``noise.csv`` where the kinds are the same)."""
SOURCES = ("hospital", "immunization", "commune_station", "telehealth")

# --------------------------------------------------------------------------------------
# Legacy (63-province) codes. Circular 07/2016/TT-BCA numbers the place of birth
# registration in the first three digits of the CCCD with the GSO province code
# (the 63 provinces in force until 30 June 2025). Populations (millions) are rounded
# from the 2019 census and only weight where people live.
# --------------------------------------------------------------------------------------
LEGACY_PROVINCES: dict[str, tuple[str, float]] = {
    "001": ("Hà Nội", 8.05), "002": ("Hà Giang", 0.85), "004": ("Cao Bằng", 0.53),
    "006": ("Bắc Kạn", 0.31), "008": ("Tuyên Quang", 0.78), "010": ("Lào Cai", 0.73),
    "011": ("Điện Biên", 0.60), "012": ("Lai Châu", 0.46), "014": ("Sơn La", 1.25),
    "015": ("Yên Bái", 0.82), "017": ("Hoà Bình", 0.85), "019": ("Thái Nguyên", 1.29),
    "020": ("Lạng Sơn", 0.78), "022": ("Quảng Ninh", 1.32), "024": ("Bắc Giang", 1.80),
    "025": ("Phú Thọ", 1.46), "026": ("Vĩnh Phúc", 1.15), "027": ("Bắc Ninh", 1.37),
    "030": ("Hải Dương", 1.89), "031": ("Hải Phòng", 2.03), "033": ("Hưng Yên", 1.25),
    "034": ("Thái Bình", 1.86), "035": ("Hà Nam", 0.85), "036": ("Nam Định", 1.78),
    "037": ("Ninh Bình", 0.98), "038": ("Thanh Hoá", 3.64), "040": ("Nghệ An", 3.33),
    "042": ("Hà Tĩnh", 1.29), "044": ("Quảng Bình", 0.90), "045": ("Quảng Trị", 0.63),
    "046": ("Thừa Thiên Huế", 1.13), "048": ("Đà Nẵng", 1.13), "049": ("Quảng Nam", 1.50),
    "051": ("Quảng Ngãi", 1.23), "052": ("Bình Định", 1.49), "054": ("Phú Yên", 0.87),
    "056": ("Khánh Hoà", 1.23), "058": ("Ninh Thuận", 0.59), "060": ("Bình Thuận", 1.23),
    "062": ("Kon Tum", 0.54), "064": ("Gia Lai", 1.51), "066": ("Đắk Lắk", 1.87),
    "067": ("Đắk Nông", 0.62), "068": ("Lâm Đồng", 1.30), "070": ("Bình Phước", 0.99),
    "072": ("Tây Ninh", 1.17), "074": ("Bình Dương", 2.43), "075": ("Đồng Nai", 3.10),
    "077": ("Bà Rịa - Vũng Tàu", 1.15), "079": ("TP. Hồ Chí Minh", 8.99),
    "080": ("Long An", 1.69), "082": ("Tiền Giang", 1.76), "083": ("Bến Tre", 1.29),
    "084": ("Trà Vinh", 1.01), "086": ("Vĩnh Long", 1.02), "087": ("Đồng Tháp", 1.60),
    "089": ("An Giang", 1.91), "091": ("Kiên Giang", 1.72), "092": ("Cần Thơ", 1.24),
    "093": ("Hậu Giang", 0.73), "094": ("Sóc Trăng", 1.20), "095": ("Bạc Liêu", 0.91),
    "096": ("Cà Mau", 1.19),
}  # fmt: skip

# --------------------------------------------------------------------------------------
# Population structure. Shares are rough, chosen to look like Vietnam, not measured.
# --------------------------------------------------------------------------------------
HOUSEHOLD_KINDS = (("family", 0.62), ("single_parent", 0.08), ("couple", 0.12), ("single", 0.18))
CHILDREN_COUNT = ((1, 0.27), (2, 0.45), (3, 0.19), (4, 0.09))
# Age of the household head, 5-year bands from 20: a flattened Vietnamese pyramid.
HEAD_AGE_BANDS = (9, 9, 9.5, 9.5, 9, 8.5, 7.5, 6.5, 6, 5, 4, 3, 2, 1.2, 0.6)
TWIN_RATE = 0.012  # births that are twins; a little above the ~1 % usually quoted
BORN_ELSEWHERE_RATE = 0.15  # birth registered in another legacy province (migration)
NO_CCCD_RATE = 0.01  # people with no personal number (not in the register)
BHXH_RATE = 0.93  # social/health insurance coverage
PHONE_RATE = 0.92  # adults (15+) with a mobile number
NAMESAKE_RATE = 0.01  # household heads who share full name (and often birth year) with an
# unrelated person in the same province - the classic false-match trap
NAMESAKE_SAME_YEAR_RATE = 0.5
NAMESAKE_POOL = 5000

MOBILE_PREFIXES = (
    ("9", 40), ("3", 30), ("8", 15), ("7", 10), ("5", 5),
)  # fmt: skip
"""Leading digit after +84 of mobile numbers: 09x, 03x (Viettel), 08x, 07x, 05x."""

STREETS = (
    "Lê Lợi", "Trần Hưng Đạo", "Nguyễn Trãi", "Lý Thường Kiệt", "Hai Bà Trưng",
    "Quang Trung", "Nguyễn Huệ", "Lê Duẩn", "Hùng Vương", "Phan Chu Trinh",
    "Nguyễn Du", "Bà Triệu", "Điện Biên Phủ", "Võ Thị Sáu", "Trần Phú",
    "Nguyễn Văn Cừ", "Lê Hồng Phong", "Phạm Văn Đồng", "Tôn Đức Thắng", "Cách Mạng Tháng Tám",
)  # fmt: skip

# --------------------------------------------------------------------------------------
# Noise. Every rate is per record unless stated, and is a guess at what real
# exports show; tune them here rather than in code.
# --------------------------------------------------------------------------------------
TYPO_RATE = 0.01  # an identifier (CCCD, BHXH, BHYT, phone) with one digit mistyped
DAY_MONTH_SWAP_RATE = 0.02  # day and month exchanged (when both are <= 12)
CHILD_PARENT_CCCD_RATE = 0.25  # child (<14) record carrying the mother's CCCD instead
UNKNOWN_DAY_RATE = 0.05  # hospital: people born before 1960 with day/month unknown (0000)
MISSING_SEX_RATE = 0.01
MISSING_ADDRESS_RATE = 0.04
MIDDLE_DROPPED_RATE = 0.03  # "Nguyễn Anh" for "Nguyễn Văn Anh": forms with two name boxes
NAME_TYPO_RATE = 0.015  # one letter of the name deleted (hand-typed entry)
CMND_RATE = 0.7  # people born before 1995 who still hold an old 9-digit identity card
CMND_USED_RATE = 0.05  # records carrying an ID that show that CMND rather than the CCCD
CHILD_AGE = 14  # below this a person has no phone and often no CCCD card of their own

# Data-entry noise seen in real exports that the rates above leave out. Each rate is the
# "real" profile's, per record unless stated; `generate(noise="default")` multiplies them
# by NOISE_PROFILES["default"] so that tests built on the default population keep their
# meaning. Guesses, like the rates above.
TELEX_RATE = 0.02  # per record whose name keeps diacritics: the name typed in Telex with
# the input method off ("Nguyeenx Thij Lanf")
VNI_RATE = 0.008  # ... in VNI ("Nguye6n4 Thi5 Lan2"), when not in Telex
VIQR_RATE = 0.004  # ... in VIQR ("Nguye^~n Thi. Lan`"), when in neither
I_Y_SWAP_RATE = 0.15  # per record whose name has an open i/y syllable after k, l, m, qu, t,
# h, s or v: the other spelling of it (Mỹ -> Mĩ, Quý -> Quí, Vi -> Vy)
KEY_SLIP_RATE = 0.01  # one letter of the name replaced by a neighbouring key (QWERTY)
DOUBLED_LETTER_RATE = 0.005  # one letter of the name typed twice ("Nguyễnn")
DOUBLE_SPACE_RATE = 0.02  # two spaces where the name has one
WESTERN_WRONG_SEX_RATE = 0.004  # given name first ("An Nguyễn Văn" or "Văn An Nguyễn")
# AND the sex box mis-ticked: a form in the Western layout filled in carelessly
CCCD_TRANSPOSE_RATE = 0.005  # per record carrying a CCCD: two adjacent digits swapped
YEAR_OFF_RATE = 0.005  # birth year one off (either way)
YEAR_ONLY_RATE = 0.02  # hospital and commune station records (the sources whose formats
# allow it: QĐ 130 NGAY_SINH with 0000, a bare year): birth known by its year only, any age
NAMESAKE_CCCD_RATE = 0.004  # per record carrying a CCCD: the number of a namesake (someone
# else in the population with the same full name), picked from a look-up by name
RELATIVE_CCCD_RATE = 0.006  # per record carrying a CCCD: the number of another member of
# the household (spouse, parent, child, sibling), beyond CHILD_PARENT_CCCD_RATE
DUPLICATE_RATE = 0.01  # the record sent again by the same source under a new record id
NOISE_PROFILES: dict[str, float] = {"default": 0.25, "real": 1.0}
"""Multiplier on the rates of this block, by profile name (`generate(noise=...)`)."""


@dataclass(frozen=True)
class SourceProfile:
    """How one kind of source system exports a person; all fields are probabilities."""

    prefix: str  # record_id prefix
    cccd: float  # record carries the CCCD at all
    bhxh: float  # record carries the 10-digit social-insurance number
    bhyt: float  # record carries the health-insurance card number (if the person has one)
    phone: float  # record carries a phone number (if the person or a parent has one)
    ascii: float  # diacritics dropped
    upper: float  # name upper-cased
    given_first: float  # Western order: middle + given + surname
    old_tone: float  # old-style tone marks (Hòa, Thủy) when diacritics are kept
    old_address: float  # pre-July-2025 address (with district) and legacy codes
    no_codes: float  # no province/commune codes
    date_formats: tuple[tuple[str, float], ...]
    sex_format: tuple[tuple[str, float], ...]
    phone_format: tuple[tuple[str, float], ...]
    swap_boost: float = 1.0  # multiplier on DAY_MONTH_SWAP_RATE (US-style forms)


PROFILES: dict[str, SourceProfile] = {
    # Hospital HIS exporting QĐ 130 XML1: SO_CCCD usually filled since 2024, BHYT card
    # nearly always, NGAY_SINH as yyyymmddHHMM, GIOI_TINH 1/2, many still on old addresses.
    "hospital": SourceProfile(
        prefix="BV",
        cccd=0.70,
        bhxh=0.05,
        bhyt=0.90,
        phone=0.80,
        ascii=0.03,
        upper=0.25,
        given_first=0.0,
        old_tone=0.50,
        old_address=0.30,
        no_codes=0.02,
        date_formats=(("his", 0.85), ("ymd", 0.10), ("dmy", 0.05)),
        sex_format=(("12", 1.0),),
        phone_format=(("0", 0.85), ("84", 0.15)),
    ),
    # National immunization system: children, identified through the mother.
    "immunization": SourceProfile(
        prefix="TC",
        cccd=0.30,
        bhxh=0.0,
        bhyt=0.30,
        phone=0.90,
        ascii=0.05,
        upper=0.0,
        given_first=0.0,
        old_tone=0.40,
        old_address=0.15,
        no_codes=0.05,
        date_formats=(("dmy", 0.90), ("iso", 0.10)),
        sex_format=(("namnu", 1.0),),
        phone_format=(("0", 0.95), ("84", 0.05)),
    ),
    # Commune health station software: hand-typed, often without diacritics,
    # elderly with year of birth only, old addresses.
    "commune_station": SourceProfile(
        prefix="TYT",
        cccd=0.40,
        bhxh=0.20,
        bhyt=0.60,
        phone=0.50,
        ascii=0.30,
        upper=0.10,
        given_first=0.0,
        old_tone=0.60,
        old_address=0.45,
        no_codes=0.10,
        date_formats=(("dmy", 0.75), ("ymd", 0.10), ("year", 0.15)),
        sex_format=(("namnu", 0.7), ("12", 0.3)),
        phone_format=(("0", 0.9), ("84", 0.1)),
    ),
    # Telehealth apps: self-typed on phones, first/last-name forms, ISO dates, E.164 phones.
    "telehealth": SourceProfile(
        prefix="TH",
        cccd=0.20,
        bhxh=0.0,
        bhyt=0.10,
        phone=0.98,
        ascii=0.50,
        upper=0.05,
        given_first=0.25,
        old_tone=0.50,
        old_address=0.10,
        no_codes=0.50,
        date_formats=(("iso", 0.80), ("dmy", 0.20)),
        sex_format=(("mf", 1.0),),
        phone_format=(("+84", 0.6), ("0", 0.3), ("84", 0.1)),
        swap_boost=3.0,
    ),
}

# Which sources see a person, by age: immunization is for children.
SOURCE_WEIGHTS_CHILD = (("hospital", 0.35), ("immunization", 0.45), ("commune_station", 0.15),
                        ("telehealth", 0.05))  # fmt: skip
SOURCE_WEIGHTS_ADULT = (("hospital", 0.50), ("immunization", 0.03), ("commune_station", 0.30),
                        ("telehealth", 0.17))  # fmt: skip

CHUNK_PEOPLE = 20_000  # records are shuffled and written per chunk of about this many people


# --------------------------------------------------------------------------------------
# Administrative units
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Commune:
    """A current (post-July-2025) commune with one of the legacy wards it absorbed."""

    province_code: str
    province_name: str
    code: str
    name: str
    rural: bool
    legacy_province_code: str  # 2-digit GSO code of the legacy province
    legacy_ward_code: str
    legacy_tail: str  # "Phường X, Quận Y, Thành phố Z"
    weight: float


def provinces() -> dict[str, str]:
    """The current (post-July-2025) provinces: two-digit code to name."""
    return {c.province_code: c.province_name for c in load_communes()}


def communes_of(province: str) -> tuple[Commune, ...]:
    """The communes of one current province (by its two-digit code); ValueError naming
    the known codes when there is no such province."""
    found = tuple(c for c in load_communes() if c.province_code == province)
    if not found:
        known = ", ".join(f"{k} {v}" for k, v in sorted(provinces().items()))
        raise ValueError(f"no province with code {province!r}; the codes are: {known}")
    return found


def _package_data() -> Path:
    """Where ``vietnamadminunits`` keeps its SQLite database and conversion tables."""
    import vietnamadminunits

    return Path(vietnamadminunits.__file__).parent / "data"


@lru_cache(maxsize=1)
def load_communes() -> tuple[Commune, ...]:
    """The 3,321 current communes, each linked to a legacy ward and weighted by population.

    The weight of a commune is the sum, over the legacy wards merged into it, of the
    legacy province's population divided by its number of wards: crude, but it puts
    more people in Hà Nội and Hồ Chí Minh City than in Lai Châu.
    """
    data = _package_data()
    with sqlite3.connect(data / "dataset.db") as conn:
        current = conn.execute(
            "SELECT provinceCode, province, wardCode, ward, wardType, provinceKey, wardKey "
            "FROM admin_units ORDER BY provinceCode, wardCode"
        ).fetchall()
        legacy_rows = conn.execute(
            "SELECT provinceKey, districtKey, wardKey, provinceCode, province, district, "
            "ward, wardCode FROM admin_units_legacy"
        ).fetchall()
    legacy: dict[str, tuple[str, str, str, str, str]] = {}
    wards_per_province: dict[str, int] = {}
    for pk, dk, wk, pcode, pname, dname, wname, wcode in legacy_rows:
        legacy[f"{pk}_{dk}_{wk or ''}"] = (pcode, pname, dname, wname or "", wcode or "")
        wards_per_province[pcode] = wards_per_province.get(pcode, 0) + 1
    conv = json.loads((data / "converter_2025.json").read_text(encoding="utf-8"))
    sources: dict[str, list[str]] = {}
    for pkey, wards in conv["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for wkey, olds in wards.items():
            sources.setdefault(f"{pkey}_{wkey}", []).extend(olds)
    for pkey, olds in conv["DICT_PROVINCE_WARD_DIVIDED"].items():
        for old, news in olds.items():
            for new in news:
                sources.setdefault(f"{pkey}_{new['newWardKey']}", []).append(old)

    def ward_weight(old_key: str) -> float:
        pcode = legacy[old_key][0]
        return LEGACY_PROVINCES[f"0{pcode}"][1] / wards_per_province[pcode]

    out: list[Commune] = []
    for pcode, pname, wcode, wname, wtype, pkey, wkey in current:
        olds = sorted(k for k in set(sources.get(f"{pkey}_{wkey}", [])) if k in legacy)
        weight = sum(ward_weight(k) for k in olds) if olds else 0.0
        if wname.endswith("Hoàng Sa"):
            weight = 1e-9  # no civilian population to speak of
        if olds:
            lp, lpname, ldname, lwname, lwcode = legacy[olds[0]]
            tail = ", ".join(p for p in (lwname, ldname, lpname) if p)
        else:  # pragma: no cover - every current commune maps to a legacy ward today
            lp, lwcode, tail = pcode, "", f"{wname}, {pname}"
        out.append(Commune(pcode, pname, wcode, wname, wtype != "Phường", lp, lwcode, tail, weight))
    fallback = sum(c.weight for c in out) / len(out)
    return tuple(c if c.weight > 0 else replace(c, weight=fallback) for c in out)


# --------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------
def _build_ascii_table() -> dict[int, str]:
    """``str.translate`` table dropping Vietnamese diacritics (đ -> d) in one pass."""
    table: dict[int, str] = {ord("đ"): "d", ord("Đ"): "D"}
    for cp in range(0xC0, 0x1EFF + 1):
        ch = chr(cp)
        base = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
        if base != ch and len(base) == 1 and base.isascii():
            table[cp] = base
    return table


_ASCII = _build_ascii_table()
_TONES = {"\u0300", "\u0301", "\u0309", "\u0303", "\u0323"}


def strip_diacritics(text: str) -> str:
    """Text as keyboards without Vietnamese input produce it (``Nguyễn`` -> ``Nguyen``)."""
    return text.translate(_ASCII)


def old_tone_style(word: str) -> str:
    """One syllable with the old tone-mark placement: ``Hoà`` -> ``Hòa``, ``Thuỷ`` -> ``Thủy``.

    Only a final ``oa``/``oe``/``uy`` differs between the styles, and ``qu`` + ``y``
    does not count (``Quý`` is the same in both).
    """
    if len(word) < 2:
        return word
    last = unicodedata.normalize("NFD", word[-1])
    if len(last) != 2 or last[1] not in _TONES:
        return word
    prev = word[-2]
    pair = prev.lower() + last[0].lower()
    if pair not in ("oa", "oe", "uy"):
        return word
    if pair == "uy" and len(word) >= 3 and word[-3] in "qQ":
        return word
    return word[:-2] + unicodedata.normalize("NFC", prev + last[1]) + last[0]


@lru_cache(maxsize=4096)
def _old_name(name: str) -> str:
    return " ".join(old_tone_style(w) for w in name.split(" "))


# Keys of the input methods (Telex, VNI, VIQR) for each tone and each vowel quality.
# The orthographic i/y pairs of open syllables (the same letters with any tone).
_I_Y = re.compile(r"(?<!\w)(k|l|m|qu|t|h|s|v)([iìíỉĩịyỳýỷỹỵ])(?!\w)", re.IGNORECASE)
_I_TO_Y = str.maketrans("iìíỉĩịIÌÍỈĨỊyỳýỷỹỵYỲÝỶỸỴ", "yỳýỷỹỵYỲÝỶỸỴiìíỉĩịIÌÍỈĨỊ")


def swap_i_y(name: str) -> str:
    """The other spelling of every open i/y syllable after k, l, m, qu, t, h, s, v:
    "Nguyễn Thị Mỹ" -> "Nguyễn Thị Mĩ", "Lí" -> "Lý". Unchanged when it has none."""
    return _I_Y.sub(lambda m: m.group(1) + m.group(2).translate(_I_TO_Y), name)


def _qwerty_neighbours() -> dict[str, str]:
    """Each letter -> the keys around it on a QWERTY keyboard (for one-letter slips)."""
    rows = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    out: dict[str, str] = {}
    for r, row in enumerate(rows):
        for i, key in enumerate(row):
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            for other in (r - 1, r + 1):
                if 0 <= other < len(rows):
                    near += [c for j, c in enumerate(rows[other]) if abs(j - i) <= 1]
            out[key] = "".join(near)
    return out


_NEIGHBOURS = _qwerty_neighbours()


# --------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------
class _Person:
    """One member of the synthetic population (internal: only the CSV files are public)."""

    __slots__ = (
        "key", "cccd", "surname", "middle", "given", "sex", "birth", "commune", "house",
        "phone", "bhxh", "bhyt", "cmnd", "mother", "father", "household",
    )  # fmt: skip

    def __init__(self, surname: str, middle: str, given: str, sex: str, birth: date) -> None:
        self.key = ""
        self.cccd = ""
        self.surname = surname
        self.middle = middle
        self.given = given
        self.sex = sex
        self.birth = birth
        self.commune: Commune
        self.house = ""
        self.phone = ""
        self.bhxh = ""
        self.bhyt = ""
        self.cmnd = ""
        self.mother: _Person | None = None
        self.father: _Person | None = None
        self.household: list[_Person] = []

    @property
    def full_name(self) -> str:
        return f"{self.surname} {self.middle} {self.given}"

    def age(self, r: date) -> int:
        """Age in whole years on ``r``."""
        b = self.birth
        return r.year - b.year - ((r.month, r.day) < (b.month, b.day))


@dataclass
class SynthSummary:
    """What :func:`generate` wrote, for the CLI and the benchmark."""

    people: int
    households: int
    register_rows: int
    records: int
    records_by_source: dict[str, int]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    chances: dict[str, int] = field(default_factory=dict)
    """For each noise kind of the NOISE_PROFILES block, how many records could have got it
    (each took it with the kind's rate): the denominators of ``noise.csv``'s counts."""


class _Table:
    """Weighted choice by bisecting precomputed cumulative weights: fast and seed-stable."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, pairs: Sequence[tuple[Any, float]] | dict[Any, float]) -> None:
        seq = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
        self.items = [k for k, _ in seq]
        acc = 0.0
        self.cum: list[float] = []
        for _, w in seq:
            acc += w
            self.cum.append(acc)
        self.total = acc

    def pick(self, rng: Random) -> Any:
        return self.items[bisect(self.cum, rng.random() * self.total)]


def _poisson_table(mean: float) -> _Table:
    """Number of records per person, Poisson distributed around ``mean``."""
    pairs = []
    k_max = max(12, int(mean * 4) + 8)
    for k in range(k_max + 1):
        pairs.append((k, math.exp(-mean) * mean**k / math.factorial(k)))
    return _Table(pairs)


class _Generator:
    """Holds the random stream and lookup tables; one instance per :func:`generate` call."""

    def __init__(
        self,
        seed: int,
        records_per_person: float,
        province: str | None = None,
        noise: str = "default",
        today: date | None = None,
    ) -> None:
        self.today = reference_day(today)
        if noise not in NOISE_PROFILES:
            known = ", ".join(NOISE_PROFILES)
            raise ValueError(f"noise: no profile {noise!r}; the profiles are: {known}")
        scale = NOISE_PROFILES[noise]
        self.rates = {
            name: scale * rate
            for name, rate in (
                ("telex", TELEX_RATE), ("vni", VNI_RATE), ("viqr", VIQR_RATE),
                ("i_y", I_Y_SWAP_RATE), ("key_slip", KEY_SLIP_RATE),
                ("doubled_letter", DOUBLED_LETTER_RATE), ("double_space", DOUBLE_SPACE_RATE),
                ("given_first_sex_wrong", WESTERN_WRONG_SEX_RATE),
                ("cccd_transposed", CCCD_TRANSPOSE_RATE), ("year_off_by_one", YEAR_OFF_RATE),
                ("year_only", YEAR_ONLY_RATE), ("cccd_of_namesake", NAMESAKE_CCCD_RATE),
                ("cccd_of_relative", RELATIVE_CCCD_RATE), ("duplicate", DUPLICATE_RATE),
            )
        }  # fmt: skip
        self.rng = Random(seed)
        communes = load_communes()
        if province is not None:
            communes = communes_of(province)
        self.communes = _Table([(c, c.weight) for c in communes])
        by_province: dict[str, list[Commune]] = {}
        for c in communes:
            by_province.setdefault(c.province_code, []).append(c)
        self.communes_in = {p: _Table([(c, c.weight) for c in cs]) for p, cs in by_province.items()}
        self.birth_province = _Table([(code, pop) for code, (_, pop) in LEGACY_PROVINCES.items()])
        self.surnames = _Table(names.SURNAMES)
        self.middle = {
            ("M", False): _Table(names.MIDDLE_MALE_OLDER),
            ("M", True): _Table(names.MIDDLE_MALE_YOUNGER),
            ("F", False): _Table(names.MIDDLE_FEMALE_OLDER),
            ("F", True): _Table(names.MIDDLE_FEMALE_YOUNGER),
        }
        self.given = {"M": _Table(names.GIVEN_MALE), "F": _Table(names.GIVEN_FEMALE)}
        self.kinds = _Table(HOUSEHOLD_KINDS)
        self.children = _Table(CHILDREN_COUNT)
        self.head_band = _Table([(i, w) for i, w in enumerate(HEAD_AGE_BANDS)])
        self.mobile = _Table(MOBILE_PREFIXES)
        self.n_records = _poisson_table(records_per_person)
        self.src_child = _Table(SOURCE_WEIGHTS_CHILD)
        self.src_adult = _Table(SOURCE_WEIGHTS_ADULT)
        self.fmt = {
            s: (_Table(p.date_formats), _Table(p.sex_format), _Table(p.phone_format))
            for s, p in PROFILES.items()
        }
        self.cccds: set[int] = set()
        self.not_issued: set[int] = set()  # numbers made by typos: never given to anyone
        self.by_name: dict[str, list[str]] = {}  # full name -> CCCDs of those bearing it
        self.bhxhs: set[int] = set()
        self.no_id = 0
        self.namesakes: list[tuple[str, str, str, str, int, str]] = []
        self.seq = dict.fromkeys(SOURCES, 0)
        self.chances: dict[str, int] = {}

    # -- people ---------------------------------------------------------------------
    def _birth(self, year: int) -> date:
        start = date(year, 1, 1)
        days = 366 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 365
        d = start + timedelta(days=self.rng.randrange(days))
        return min(d, self.today)

    def _person(self, surname: str, sex: str, birth: date, avoid_given: str = "") -> _Person:
        rng = self.rng
        middle = self.middle[(sex, birth.year >= 1990)].pick(rng)
        given = self.given[sex].pick(rng)
        while given == avoid_given:
            given = self.given[sex].pick(rng)
        return _Person(surname, middle, given, sex, birth)

    def _adult_year(self) -> int:
        band = self.head_band.pick(self.rng)
        return self.today.year - (20 + band * 5 + self.rng.randrange(5))

    def _household(self) -> list[_Person]:
        """One household sharing commune and street address, head first.

        Children carry the father's surname (the mother keeps hers, as in Vietnam) and
        are born when the mother is 18..40, so parent/child confusions look real.
        """
        rng = self.rng
        kind = self.kinds.pick(rng)
        namesake = None
        if self.namesakes and rng.random() < NAMESAKE_RATE:
            namesake = self.namesakes[rng.randrange(len(self.namesakes))]
        commune = self.communes_in[namesake[5]].pick(rng) if namesake else self.communes.pick(rng)
        members: list[_Person] = []
        head_year = self._adult_year()
        if namesake and rng.random() < NAMESAKE_SAME_YEAR_RATE:
            head_year = namesake[4]
        if kind == "single":
            sex = namesake[0] if namesake else ("M" if rng.random() < 0.5 else "F")
            members.append(self._person(self.surnames.pick(rng), sex, self._birth(head_year)))
            self._copy_name(members[0], namesake)
        else:
            mother_year = head_year + rng.randint(-2, 6)
            mother_year = min(mother_year, self.today.year - 19)
            mother = self._person(self.surnames.pick(rng), "F", self._birth(mother_year))
            father = None
            if kind != "single_parent":
                father = self._person(self.surnames.pick(rng), "M", self._birth(head_year))
                self._copy_name(father, namesake)
                members.append(father)
            else:
                self._copy_name(mother, namesake)
            members.append(mother)
            if kind != "couple":
                first = mother_year + 18
                last = min(mother_year + 40, self.today.year)
                if first <= last:
                    n = self.children.pick(rng)
                    years = sorted(rng.randint(first, last) for _ in range(n))
                    surname = father.surname if father else mother.surname
                    for y in years:
                        sex = "M" if rng.random() < 0.512 else "F"
                        child = self._person(surname, sex, self._birth(y))
                        child.mother, child.father = mother, father
                        members.append(child)
                        if rng.random() < TWIN_RATE:
                            sex2 = "M" if rng.random() < 0.512 else "F"
                            twin = self._person(surname, sex2, child.birth, avoid_given=child.given)
                            twin.middle = child.middle if sex2 == sex else twin.middle
                            twin.mother, twin.father = mother, father
                            members.append(twin)
        # Street part of the address, shared by the household.
        if commune.rural:
            # Hamlets are "ấp" in the South, "thôn"/"xóm" in the North and Centre.
            south = int(commune.province_code) >= 75
            label = ("Ấp", "Ấp", "Ấp", "Tổ") if south else ("Thôn", "Thôn", "Xóm", "Tổ")
            house = f"{label[rng.randrange(4)]} {rng.randint(1, 15)}"
        else:
            house = f"Số {rng.randint(1, 300)} {STREETS[rng.randrange(len(STREETS))]}"
        for p in members:
            p.commune = commune
            p.house = house
            p.household = members
            self._identifiers(p)
            if p.cccd:
                self.by_name.setdefault(p.full_name, []).append(p.cccd)
        head = members[0]
        if head.age(self.today) >= 18:
            entry = (head.sex, head.surname, head.middle, head.given, head.birth.year,
                     commune.province_code)  # fmt: skip
            if len(self.namesakes) < NAMESAKE_POOL:
                self.namesakes.append(entry)
            else:
                self.namesakes[rng.randrange(NAMESAKE_POOL)] = entry
        return members

    @staticmethod
    def _copy_name(p: _Person, namesake: tuple[str, str, str, str, int, str] | None) -> None:
        """Give ``p`` the full name of an unrelated earlier person of the same sex."""
        if namesake and p.sex == namesake[0]:
            p.surname, p.middle, p.given = namesake[1], namesake[2], namesake[3]

    def _identifiers(self, p: _Person) -> None:
        rng = self.rng
        c = p.commune
        if rng.random() < NO_CCCD_RATE:
            self.no_id += 1
            p.key = f"NOID{self.no_id:08d}"
        else:
            if rng.random() < BORN_ELSEWHERE_RATE:
                prefix = self.birth_province.pick(rng)
            else:
                prefix = "0" + c.legacy_province_code
            century = (p.birth.year // 100 - 19) * 2 + (p.sex == "F")
            head = int(f"{prefix}{century}{p.birth.year % 100:02d}") * 1_000_000
            while True:
                n = head + rng.randrange(1_000_000)
                if n not in self.cccds:
                    break
            self.cccds.add(n)
            p.cccd = p.key = f"{n:012d}"
        age = p.age(self.today)
        if rng.random() < BHXH_RATE:
            head10 = int(c.legacy_province_code) * 100_000_000
            while True:
                m = head10 + rng.randrange(100_000_000)
                if m not in self.bhxhs:
                    break
            self.bhxhs.add(m)
            p.bhxh = f"{m:010d}"
            p.bhyt = f"{self._bhyt_category(age)}{c.legacy_province_code}{p.bhxh}"
        if p.birth.year < 1995 and rng.random() < CMND_RATE:
            p.cmnd = f"{rng.randrange(10_000_000, 400_000_000):09d}"
        if age >= 15 and rng.random() < PHONE_RATE:
            p.phone = f"+84{self.mobile.pick(rng)}{rng.randrange(100_000_000):08d}"

    def _bhyt_category(self, age: int) -> str:
        """Participant category + benefit level, drawn by age.

        Levels follow the card rules as commonly summarised: 1 armed forces (100 %, no
        ceiling), 2 children under 6, poor households and social-protection
        beneficiaries (100 %), 3 retirees and near-poor (95 %), 4 everyone else (80 %).
        The category shares are guesses.
        """
        r = self.rng.random()
        if age < 6:
            return "TE2"
        if age < 22:
            return "HS4"
        if age >= 60:
            return "HT3" if r < 0.4 else ("BT2" if r < 0.65 else "GD4")
        if r < 0.45:
            return "DN4"
        if r < 0.80:
            return "GD4"
        if r < 0.87:
            return "HN3"
        if r < 0.94:
            return "CN2"
        if r < 0.97:
            return "BT2"
        return "QN1"

    # -- records --------------------------------------------------------------------
    def _typo(self, digits: str) -> str:
        """One digit of an identifier replaced by another (never by itself)."""
        rng = self.rng
        positions = [i for i, ch in enumerate(digits) if ch.isdigit()]
        i = positions[rng.randrange(len(positions))]
        new = str((int(digits[i]) + rng.randint(1, 9)) % 10)
        return digits[:i] + new + digits[i + 1 :]

    def _draw(self, kind: str) -> bool:
        """One chance of the noise `kind` (counted: `SynthSummary.chances`)."""
        self.chances[kind] = self.chances.get(kind, 0) + 1
        return self.rng.random() < self.rates[kind]

    def _transpose(self, digits: str) -> str:
        """Two adjacent, different digits exchanged (1978 for 1987); unchanged if none."""
        pairs = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1]]
        if not pairs:
            return digits
        i = pairs[self.rng.randrange(len(pairs))]
        return digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]

    def _owner(self, number: str) -> str:
        """Whose CCCD a mistyped `number` is: the person holding it, or "" when nobody does
        (the number is then kept from ever being issued, so the truth stays right)."""
        if len(number) != 12:
            return ""
        n = int(number)
        if n in self.cccds:
            return "" if n in self.not_issued else number
        self.cccds.add(n)
        self.not_issued.add(n)
        return ""

    def _slip(self, name: str, doubled: bool) -> str:
        """One letter replaced by a neighbouring key, or (`doubled`) typed twice."""
        rng = self.rng
        if doubled:
            positions = [i for i, ch in enumerate(name) if ch.isalpha()]
        else:
            positions = [i for i, ch in enumerate(name) if ch.lower() in _NEIGHBOURS]
        if not positions:
            return name
        i = positions[rng.randrange(len(positions))]
        ch = name[i]
        if doubled:
            return name[: i + 1] + ch + name[i + 1 :]
        near = _NEIGHBOURS[ch.lower()]
        new = near[rng.randrange(len(near))]
        return name[:i] + (new.upper() if ch.isupper() else new) + name[i + 1 :]

    def _date(self, d: date, fmt: str, swap_boost: float, unknown_day: bool) -> tuple[str, bool]:
        """The date as the source writes it, and whether day and month were exchanged."""
        y, m, dd = d.year, d.month, d.day
        swapped = False
        if dd <= 12 and m != dd and self.rng.random() < DAY_MONTH_SWAP_RATE * swap_boost:
            m, dd = dd, m
            swapped = True
        if fmt == "his":
            if unknown_day:
                return f"{y:04d}00000000", False
            return f"{y:04d}{m:02d}{dd:02d}0000", swapped
        if fmt == "ymd":
            return f"{y:04d}{m:02d}{dd:02d}", swapped
        if fmt == "dmy":
            return f"{dd:02d}/{m:02d}/{y:04d}", swapped
        if fmt == "year":
            return f"{y:04d}", False
        return f"{y:04d}-{m:02d}-{dd:02d}", swapped

    @staticmethod
    def _phone(e164: str, fmt: str) -> str:
        national = e164[3:]
        if fmt == "0":
            return "0" + national
        if fmt == "84":
            return "84" + national
        return f"+84 {national[:3]} {national[3:6]} {national[6:]}"

    def _name(self, p: _Person, prof: SourceProfile, kinds: list[str]) -> tuple[str, bool]:
        """The name as the source writes it, and whether its diacritics were dropped."""
        rng = self.rng
        middle = "" if rng.random() < MIDDLE_DROPPED_RATE else f"{p.middle} "
        if not middle:
            kinds.append("middle_dropped")
        if self._draw("given_first_sex_wrong"):
            kinds.append("given_first_sex_wrong")
            if rng.random() < 0.5:
                name = f"{middle}{p.given} {p.surname}"  # "Văn An Nguyễn"
            else:
                name = f"{p.given} {p.surname} {middle}".rstrip()  # "An Nguyễn Văn"
        elif rng.random() < prof.given_first:
            name = f"{middle}{p.given} {p.surname}"
            kinds.append("given_first")
        else:
            name = f"{p.surname} {middle}{p.given}"
        swapped = swap_i_y(name)
        if swapped != name and self._draw("i_y"):
            name = swapped
            kinds.append("i_y")
        if rng.random() < NAME_TYPO_RATE:
            i = rng.randrange(len(name))
            if name[i] != " ":
                name = name[:i] + name[i + 1 :]
                kinds.append("letter_lost")
        for kind, doubled in (("key_slip", False), ("doubled_letter", True)):
            if self._draw(kind):
                slipped = self._slip(name, doubled)
                if slipped != name:
                    name = slipped
                    kinds.append(kind)
        ascii_ = rng.random() < prof.ascii
        if ascii_:
            name = strip_diacritics(name)
            kinds.append("no_diacritics")
        else:
            typed = ""
            for scheme in KEYSTROKE_SCHEMES:
                if not typed and not name.isascii() and self._draw(scheme):
                    typed = keystrokes(name, scheme)
                    kinds.append(scheme)
            if typed:
                name = typed
            elif rng.random() < prof.old_tone:
                old = _old_name(name)
                if old != name:
                    name = old
                    kinds.append("old_tone")
        if rng.random() < prof.upper:
            name = name.upper()
            kinds.append("upper")
        if " " in name and self._draw("double_space"):
            spaces = [i for i, ch in enumerate(name) if ch == " "]
            i = spaces[rng.randrange(len(spaces))]
            name = name[:i] + " " + name[i:]
            kinds.append("double_space")
        return name, ascii_

    def _birth_date(self, p: _Person, source: str, kinds: list[str]) -> str:
        rng = self.rng
        prof = PROFILES[source]
        fmt = self.fmt[source][0].pick(rng)
        unknown = source == "hospital" and p.birth.year < 1960 and rng.random() < UNKNOWN_DAY_RATE
        if fmt == "year" and p.age(self.today) < 50:
            fmt = "dmy"  # only the elderly are known by year of birth alone
        if source in ("hospital", "commune_station") and self._draw("year_only"):
            if source == "hospital":
                fmt, unknown = "his", True  # QĐ 130: 0000 for the unknown month and day
            else:
                fmt = "year"
        born = p.birth
        if self._draw("year_off_by_one"):
            year = born.year + (1 if rng.random() < 0.5 else -1)
            day = born.day if (born.month, born.day) != (2, 29) else 28
            born = date(year, born.month, day)
            kinds.append("year_off_by_one")
        text, swapped = self._date(born, fmt, prof.swap_boost, unknown)
        if fmt == "year" or (fmt == "his" and unknown):
            kinds.append("year_only")
        if swapped:
            kinds.append("day_month_swapped")
        return text

    def _cccd(self, p: _Person, source: str, kinds: list[str]) -> tuple[str, str]:
        """The number in the record's CCCD field and whose CCCD it is ("" if nobody's)."""
        rng = self.rng
        if rng.random() >= PROFILES[source].cccd:
            return "", ""
        cccd = owner = ""
        if p.age(self.today) < CHILD_AGE and p.mother is not None and p.mother.cccd:
            if rng.random() < CHILD_PARENT_CCCD_RATE:
                cccd, owner = p.mother.cccd, p.mother.key
                kinds.append("cccd_of_mother")
            else:
                cccd = owner = p.cccd
        elif p.cmnd and rng.random() < CMND_USED_RATE:
            cccd = p.cmnd
            kinds.append("cmnd")
        else:
            cccd = owner = p.cccd
        if cccd and cccd == p.cccd:
            namesakes = [c for c in self.by_name.get(p.full_name, ()) if c != p.cccd]
            relatives = [m.cccd for m in p.household if m is not p and m.cccd]
            if namesakes and self._draw("cccd_of_namesake"):
                cccd = owner = namesakes[rng.randrange(len(namesakes))]
                kinds.append("cccd_of_namesake")
            elif relatives and self._draw("cccd_of_relative"):
                cccd = owner = relatives[rng.randrange(len(relatives))]
                kinds.append("cccd_of_relative")
        if cccd and rng.random() < TYPO_RATE:
            cccd = self._typo(cccd)
            owner = self._owner(cccd)
            kinds.append("cccd_digit")
        if len(cccd) == 12 and self._draw("cccd_transposed"):
            moved = self._transpose(cccd)
            if moved != cccd:
                cccd, owner = moved, self._owner(moved)
                kinds.append("cccd_transposed")
        return cccd, owner

    def _record(self, p: _Person, source: str) -> tuple[list[str], str, list[str]]:
        """One record of ``p`` by ``source``: the row (without record id), whose CCCD it
        carries ("" if none or nobody's) and the noise kinds applied."""
        rng = self.rng
        prof = PROFILES[source]
        _, sex_fmt, phone_fmt = self.fmt[source]
        child = p.age(self.today) < CHILD_AGE
        kinds: list[str] = []
        name, ascii_ = self._name(p, prof, kinds)
        birth = self._birth_date(p, source, kinds)
        # Sex
        sf = sex_fmt.pick(rng)
        true_sex = p.sex
        if "given_first_sex_wrong" in kinds:
            true_sex = "F" if p.sex == "M" else "M"
        if rng.random() < MISSING_SEX_RATE:
            sex = ""
            kinds.append("no_sex")
        elif sf == "12":
            sex = "1" if true_sex == "M" else "2"
        elif sf == "namnu":
            sex = "Nam" if true_sex == "M" else "Nữ"
        else:
            sex = true_sex
        # Identifiers
        cccd, owner = self._cccd(p, source, kinds)
        bhxh = p.bhxh if p.bhxh and rng.random() < prof.bhxh else ""
        if bhxh and rng.random() < TYPO_RATE:
            bhxh = self._typo(bhxh)
        bhyt = p.bhyt if p.bhyt and rng.random() < prof.bhyt else ""
        if bhyt and rng.random() < TYPO_RATE:
            bhyt = self._typo(bhyt)
        phone = ""
        if rng.random() < prof.phone:
            e164 = p.phone
            if not e164 and child:
                parent = p.mother if p.mother is not None and p.mother.phone else p.father
                e164 = parent.phone if parent is not None else ""
            if e164:
                phone = self._phone(e164, phone_fmt.pick(rng))
                if rng.random() < TYPO_RATE:
                    phone = self._typo(phone)
        # Address
        c = p.commune
        if rng.random() < prof.old_address:
            address = f"{p.house}, {c.legacy_tail}"
            pcode, ccode = c.legacy_province_code, c.legacy_ward_code
            kinds.append("legacy_address")
        else:
            address = f"{p.house}, {c.name}, {c.province_name}"
            pcode, ccode = c.province_code, c.code
        if rng.random() < MISSING_ADDRESS_RATE:
            address = ""
            kinds.append("no_address")
        elif ascii_:
            address = strip_diacritics(address)
        if rng.random() < prof.no_codes:
            pcode = ccode = ""
        row = [source, name, birth, sex, cccd, bhxh, bhyt, phone, address, pcode, ccode]
        return row, owner, kinds

    def records_for(self, p: _Person) -> list[tuple[list[str], str, str, str]]:
        """The records of ``p``: (row without record id, person key, whose CCCD the row
        carries, noise kinds joined by ";")."""
        rng = self.rng
        n = self.n_records.pick(rng)
        table = self.src_child if p.age(self.today) < CHILD_AGE else self.src_adult
        out = []
        for _ in range(n):
            row, owner, kinds = self._record(p, table.pick(rng))
            out.append((row, p.key, owner, ";".join(kinds)))
            if self._draw("duplicate"):
                out.append((list(row), p.key, owner, ";".join([*kinds, "duplicate"])))
        return out

    def register_row(self, p: _Person) -> list[str]:
        c = p.commune
        return [
            p.cccd,
            p.full_name,
            p.birth.isoformat(),
            p.sex,
            c.province_code,
            c.code,
            f"{p.house}, {c.name}, {c.province_name}",
        ]


def _open_csv(path: Path, header: Sequence[str]) -> tuple[Any, Any]:
    fh = path.open("w", encoding="utf-8", newline="")
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(header)
    return fh, writer


def generate(
    people: int,
    seed: int,
    out_dir: Path,
    records_per_person: float = 2.0,
    progress: Callable[[int], None] | None = None,
    province: str | None = None,
    noise: str = "default",
    today: date | None = None,
) -> SynthSummary:
    """Write ``register.csv``, ``records.csv``, ``truth.csv`` and ``noise.csv`` for
    ``people`` people.

    With ``province`` (a current two-digit code), every household lives in that
    province — a synthetic province rather than a sample of the country; some people
    still had their birth registered elsewhere (their CCCD says where).

    ``records_per_person`` is the mean of a Poisson count, so some people have no
    record at all - as in reality. ``progress`` is called after each chunk with the
    number of people generated so far. People without a CCCD (``NO_CCCD_RATE``) are
    absent from the register; their records point to a ``NOID…`` key in the truth.
    The last household is cut so that exactly ``people`` people are made.

    ``noise`` names a profile of NOISE_PROFILES: "default" (the data-entry noise of the
    TELEX_RATE ... DUPLICATE_RATE block at a quarter of its rates) or "real" (at them).
    ``truth.csv`` gives each record's person and whose CCCD it carries (``cccd_owner``),
    ``noise.csv`` the noise kinds it got.

    Ages and birth years are reckoned at ``today`` (default: :func:`reference_day`).
    """
    if people < 0:
        raise ValueError("people must be >= 0")
    started = time.perf_counter()
    gen = _Generator(seed, records_per_person, province, noise, today)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = gen.rng
    paths = {
        "register": out_dir / "register.csv",
        "records": out_dir / "records.csv",
        "truth": out_dir / "truth.csv",
        "noise": out_dir / "noise.csv",
    }
    reg_fh, reg_w = _open_csv(paths["register"], REGISTER_HEADER)
    rec_fh, rec_w = _open_csv(paths["records"], RECORDS_HEADER)
    tru_fh, tru_w = _open_csv(paths["truth"], TRUTH_HEADER)
    noi_fh, noi_w = _open_csv(paths["noise"], NOISE_HEADER)
    done = households = register_rows = total_records = 0
    by_source = dict.fromkeys(SOURCES, 0)
    try:
        while done < people:
            reg_rows: list[list[str]] = []
            chunk_records: list[tuple[list[str], str, str, str]] = []
            target = min(people, done + CHUNK_PEOPLE)
            while done < target:
                members = gen._household()[: target - done]
                households += 1
                done += len(members)
                for p in members:
                    if p.cccd:
                        reg_rows.append(gen.register_row(p))
                    chunk_records.extend(gen.records_for(p))
            # Shuffle so that record order does not give away who belongs together.
            rng.shuffle(chunk_records)
            rec_out = []
            tru_out = []
            noi_out = []
            for row, key, owner, kinds in chunk_records:
                source = row[0]
                gen.seq[source] += 1
                rid = f"{PROFILES[source].prefix}{gen.seq[source]:09d}"
                rec_out.append([rid, *row])
                tru_out.append((rid, key, owner))
                noi_out.append((rid, kinds))
                by_source[source] += 1
            reg_w.writerows(reg_rows)
            rec_w.writerows(rec_out)
            tru_w.writerows(tru_out)
            noi_w.writerows(noi_out)
            register_rows += len(reg_rows)
            total_records += len(rec_out)
            if progress is not None:
                progress(done)
    finally:
        reg_fh.close()
        rec_fh.close()
        tru_fh.close()
        noi_fh.close()
    return SynthSummary(
        people=done,
        households=households,
        register_rows=register_rows,
        records=total_records,
        records_by_source=by_source,
        seconds=time.perf_counter() - started,
        files=paths,
        chances=dict(sorted(gen.chances.items())),
    )
