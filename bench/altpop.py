#!/usr/bin/env python
"""A second synthetic population, built apart from ``lienthong.synth``, to score against.

Usage: ``.venv/bin/python -m bench.altpop --people N --seed S --out DIR``

Scores measured only on data from the generator the models were tuned on flatter them.
This generator shares nothing with ``lienthong.synth`` but the file layouts
(``lienthong.identity.layouts``): its own name model (surnames with regional variants,
middle and given names by sex and birth decade), household structure (grandparents,
couples, children, twins), addresses drawn from `vietnamadminunits` (the 63 legacy
provinces with districts, mapped to the 34 provinces and 3,321 communes in force since
1 July 2025), five sources with their own habits, and its own noise.

Writes to ``--out``:

* ``register.csv`` - the population-register extract (``REGISTER_COLUMNS``): everyone
  holding a personal identification number, once, clean, at the current address;
* ``records.csv`` - the sources' records (``RECORDS_COLUMNS``), shuffled;
* ``truth.csv`` - ``record_id,person_id``: the person's own 12-digit number, or a
  ``NOID…`` key for people without one (absent from the register);
* ``noise.csv`` - ``record_id,noise``: the noise kinds applied to each record
  (``;``-separated), for tests and for breaking figures down by kind.

Identifier structure (``/work/shared/standards/README.md``): the 12-digit number is the
3-digit code of the province where the birth was registered (legacy 63-province
numbering), a century/sex digit (1900s: 0 male, 1 female; 2000s: 2 male, 3 female), the
last two digits of the birth year and six random digits. The BHYT card is two letters of
participant category, a benefit digit, two digits of province and the 10-digit BHXH
number.

Everything is drawn from one ``random.Random(seed)`` in a fixed order and the reference
date is fixed, so a seed always gives the same files.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import unicodedata
from bisect import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from random import Random
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from lienthong.identity.layouts import RECORDS_COLUMNS, REGISTER_COLUMNS  # noqa: E402

TODAY = date(2025, 12, 31)
REFORM = date(2025, 7, 1)  # 34 provinces, two tiers, from this day
TRUTH_COLUMNS = ("record_id", "person_id")
NOISE_COLUMNS = ("record_id", "noise")
CHUNK = 20_000  # people per shuffled block of records

# ------------------------------------------------------------------------ weighted choice


class Weighted:
    """Draw from (item, weight) pairs with one bisect."""

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self.items = [p[0] for p in pairs]
        self.cum = list(accumulate(p[1] for p in pairs))
        self.total = self.cum[-1]

    def draw(self, rng: Random) -> Any:
        return self.items[bisect(self.cum, rng.random() * self.total)]


def zipf(names: str, s: float = 0.9) -> list[tuple[str, float]]:
    """Names listed most common first, weighted 1/rank**s."""
    return [(n, 1.0 / (i + 1) ** s) for i, n in enumerate(names.split())]


# ------------------------------------------------------------------------------ names
# Shares of surnames (per cent), rounded from published counts of Vietnamese family
# names; Hoàng/Huỳnh and Vũ/Võ are one name written as the North and the South say it.

SURNAMES = {
    "Nguyễn": 31.0, "Trần": 11.0, "Lê": 9.5, "Phạm": 7.0, "Phan": 4.5, "Đặng": 2.1,
    "Bùi": 2.0, "Đỗ": 1.4, "Hồ": 1.3, "Ngô": 1.3, "Dương": 1.0, "Lý": 0.5, "Đào": 0.8,
    "Đoàn": 0.6, "Trịnh": 0.6, "Lương": 0.5, "Đinh": 0.6, "Trương": 0.6, "Mai": 0.5,
    "Lâm": 0.4, "Tô": 0.3, "Hà": 0.5, "Cao": 0.4, "Lưu": 0.3, "Tạ": 0.3, "Châu": 0.3,
    "Quách": 0.2, "Thái": 0.2, "Kiều": 0.15, "Phùng": 0.2, "Nông": 0.3, "Lò": 0.15,
    "Triệu": 0.2, "Hứa": 0.15, "Tăng": 0.1, "La": 0.1, "Khổng": 0.05, "Mạc": 0.1,
    "Âu": 0.05, "Giang": 0.1, "Chu": 0.2, "Vương": 0.2, "Ninh": 0.05, "Thạch": 0.1,
    "Sơn": 0.1, "Danh": 0.1, "Từ": 0.1, "Văn": 0.08, "Tống": 0.1, "Diệp": 0.08,
}  # fmt: skip
NORTH_SOUTH = {"Hoàng": ("Hoàng", "Huỳnh", 5.0), "Vũ": ("Vũ", "Võ", 5.0)}

# Middle names: share of the dominant one ("Văn", "Thị") falls with each generation.
ERAS = (1960, 1980, 2000, 9999)  # an era is the first bound above the birth year
MIDDLE_MAIN = {"M": ("Văn", (0.62, 0.48, 0.28, 0.08)), "F": ("Thị", (0.86, 0.70, 0.45, 0.14))}
MIDDLE_OTHER = {
    "M": zipf(
        "Đức Minh Hữu Quốc Thanh Công Xuân Ngọc Trọng Anh Hoàng Gia Bảo Đăng Duy Nhật "
        "Khánh Thành Trung Quang Tiến Mạnh Đình Bá Hải Phúc Tuấn Việt Thế Chí"
    ),
    "F": zipf(
        "Ngọc Thu Thanh Thùy Kim Minh Hồng Phương Mai Bảo Khánh Tuyết Thúy Hoài Diệu Mỹ "
        "Quỳnh Hải Cẩm Bích Xuân Gia Ánh Như Tường Yến Lan Uyên"
    ),
}
# Given names by sex and era (born before 1960, 1960-79, 1980-99, from 2000).
GIVEN = {
    "M": (
        zipf(
            "Hùng Dũng Hải Sơn Thắng Lợi Bình Minh Tâm Thành Hòa Long Phúc Quang Tư Ba "
            "Năm Sáu Bảy Tám Châu Chiến Cường Đông Đức Hiền Lộc Nghĩa Phong Sinh Tài Thanh "
            "Thiện Thông Tiến Toàn Trung Vinh Xuân Hưng Khải Lâm Mạnh Quý Thọ Tùng Kỳ Sỹ"
        ),
        zipf(
            "Hùng Dũng Tuấn Hải Sơn Thắng Cường Hà Bình Minh Thành Long Nam Quang Trung "
            "Phong Hưng Tâm Toàn Lâm Hiếu Chiến Đức Vinh Thanh Khánh Tùng Huy Hoàng Lợi "
            "Phúc Thái Hòa Quý Sỹ"
        ),
        zipf(
            "Tuấn Hùng Dũng Nam Anh Huy Đức Trung Hiếu Thành Long Quân Hoàng Khánh Tùng "
            "Phong Sơn Hải Cường Việt Duy Thắng Tài Lộc Phúc Thịnh Toàn Vũ Quang Kiên Đạt "
            "Tú Hưng Linh"
        ),
        zipf(
            "Minh Huy Khang Bảo Phúc An Khôi Nam Anh Đăng Quân Duy Phát Long Thịnh Kiệt "
            "Hưng Lâm Khoa Nhật Tuấn Vinh Đạt Hoàng Tài Trí Nguyên Sơn Thiện Quang Tín Lộc "
            "Hải Hy Vỹ"
        ),
    ),
    "F": (
        zipf(
            "Lan Hoa Hồng Mai Nga Hương Loan Liên Cúc Đào Hạnh Huệ Lý Mận Nhung Phượng Sen "
            "Tâm Thanh Thu Tuyết Xuân Yến Bích Chi Hà Hiền Lệ Nguyệt Oanh Sương Thảo Thơm "
            "Tư Ba Năm Út Gái Nụ Mến Thủy"
        ),
        zipf(
            "Lan Hương Hà Hằng Hoa Hồng Nga Thủy Mai Hạnh Thu Loan Liên Dung Hiền Phương "
            "Thanh Yến Vân Nhung Oanh Tuyết Hải Huyền Lệ Bình Hòa Minh Ngọc Thúy Mỹ"
        ),
        zipf(
            "Trang Linh Hương Hằng Huyền Thảo Nhung Hà Ngọc Phương Anh Dung Thủy Hạnh Lan "
            "Vân Yến Mai Loan Nga Thu Quỳnh Giang Ly Nhi Oanh Diễm Hiền Trinh Tuyền Uyên "
            "Hồng My Thúy"
        ),
        zipf(
            "Anh Linh Ngọc Vy Nhi Trang My Hân Châu Thư An Như Quỳnh Hà Thảo Trâm Yến Uyên "
            "Ngân Hương Tiên Diệp Khánh Mai Phương Trinh Ly Giang Hoa Nhung Tú Mỹ Vân "
            "Huyền Thùy Thy"
        ),
    ),
}
_STREETS = (
    "Lê Lợi|Trần Hưng Đạo|Nguyễn Trãi|Hai Bà Trưng|Quang Trung|Lý Thường Kiệt|Hùng Vương|"
    "Phan Chu Trinh|Điện Biên Phủ|Võ Thị Sáu|Lê Duẩn|Nguyễn Huệ|Trần Phú|Bạch Đằng|"
    "Ngô Quyền|Lê Thánh Tông|Nguyễn Văn Cừ|Hoàng Văn Thụ|Phạm Ngũ Lão|Cách Mạng Tháng Tám|"
    "Nguyễn Thị Minh Khai|Lạc Long Quân|Âu Cơ|Trường Chinh|Lê Hồng Phong|Tôn Đức Thắng"
)
STREETS = _STREETS.split("|")

# -------------------------------------------------------------------- text transforms

_TONES = {"\u0301": "s", "\u0300": "f", "\u0309": "r", "\u0303": "x", "\u0323": "j"}
_SHAPES = {"\u0302": "^", "\u0306": "(", "\u031b": "+"}
_VNI_SHAPE = {"^": "6", "(": "8", "+": "7"}
_VNI_TONE = {"s": "1", "f": "2", "r": "3", "x": "4", "j": "5"}
_VIQR_TONE = {"s": "'", "f": "`", "r": "?", "x": "~", "j": "."}


@lru_cache(maxsize=1 << 14)
def _syllable(word: str) -> tuple[list[tuple[str, str | None]], str | None, int]:
    """A word as (base letter, shape mark) pairs, its tone key (s f r x j or None) and the
    index of the letter that carries the tone."""
    out: list[tuple[str, str | None]] = []
    tone, at = None, -1
    for ch in word:
        if ch in "đĐ":
            out.append(("d" if ch == "đ" else "D", "d"))
            continue
        parts = unicodedata.normalize("NFD", ch)
        shape = None
        for mark in parts[1:]:
            if mark in _TONES:
                tone, at = _TONES[mark], len(out)
            elif mark in _SHAPES:
                shape = _SHAPES[mark]
        out.append((parts[0], shape))
    return out, tone, at


def _plain(word: str) -> str:
    letters, _, _ = _syllable(word)
    return "".join(b for b, _ in letters)


def telex(word: str) -> str:
    """Telex residue, "Thắng" -> "Thawngs": what a Telex keyboard leaves with the IME off."""
    letters, tone, _ = _syllable(word)
    out = []
    for base, shape in letters:
        if shape == "d":
            out.append(base + "d")
        elif shape == "^":
            out.append(base + base.lower())
        elif shape in ("(", "+"):
            out.append(base + "w")
        else:
            out.append(base)
    return "".join(out) + (tone or "")


def vni(word: str) -> str:
    """VNI residue, "Nguyễn" -> "Nguye6n4": shape digit after its vowel, tone at the end."""
    letters, tone, _ = _syllable(word)
    out = []
    for base, shape in letters:
        out.append(base + ("9" if shape == "d" else _VNI_SHAPE.get(shape or "", "")))
    return "".join(out) + (_VNI_TONE[tone] if tone else "")


def viqr(word: str) -> str:
    """VIQR residue, "Nguyễn" -> "Nguye^~n": marks right after the vowel that carries them."""
    letters, tone, at = _syllable(word)
    out = []
    for i, (base, shape) in enumerate(letters):
        out.append(base + ("d" if shape == "d" else shape or ""))
        if i == at and tone:
            out.append(_VIQR_TONE[tone])
    return "".join(out)


def no_marks(text: str) -> str:
    return " ".join(_plain(w) for w in text.split(" "))


# Spelling variants that are both in use: i/y after a consonant, and the old/new place of
# the tone mark in oa/oe/uy.
_IY = {"Mỹ": "Mĩ", "Lý": "Lí", "Quý": "Quí", "Sỹ": "Sĩ", "Kỳ": "Kì", "Vỹ": "Vĩ", "Hy": "Hi",
       "Thy": "Thi", "Vy": "Vi", "Ly": "Li", "My": "Mi"}  # fmt: skip
_IY.update({v: k for k, v in list(_IY.items())})
_TONE_PLACE = {"Hòa": "Hoà", "Thủy": "Thuỷ", "Thúy": "Thuý", "Thùy": "Thuỳ", "Khỏe": "Khoẻ"}
_VOWELS = "aăâeêioôơuưy"

# ------------------------------------------------------------------ administrative units


@dataclass(frozen=True)
class Place:
    """One legacy ward and the current commune it became."""

    old_province_code: str  # 2 digits, 63-province numbering
    old_province: str
    old_district: str
    old_district_code: str
    old_ward: str
    old_ward_code: str
    new_province_code: str
    new_province: str
    new_ward: str
    new_ward_code: str
    urban: bool


# Rough 2019-census populations (millions) of the legacy provinces that weigh most; the
# others count 1.0. Only used to weight where households live.
_POPULATION = {  # fmt: skip
    "01": 8.1,
    "79": 9.0,
    "38": 3.6,
    "40": 3.3,
    "75": 3.1,
    "74": 2.5,
    "31": 2.0,
    "89": 1.9,
    "26": 1.2,
    "27": 1.4,
    "30": 1.9,
    "33": 1.3,
    "34": 1.9,
    "35": 0.9,
    "36": 1.8,
    "37": 1.0,
    "42": 1.3,
    "52": 1.5,
    "64": 1.5,
    "66": 1.9,
    "68": 1.3,
    "72": 1.2,
    "80": 1.7,
    "82": 1.8,
    "83": 1.3,
    "84": 1.0,
    "86": 1.0,
    "87": 1.6,
    "91": 1.7,
    "92": 1.2,
    "94": 1.2,
    "95": 0.9,
    "96": 1.2,
    "48": 1.1,
    "46": 1.1,
    "22": 1.3,
    "24": 1.8,
    "19": 1.3,
    "25": 1.5,
    "06": 0.3,
    "04": 0.5,
    "12": 0.5,
}
_SOUTH_FROM = 40  # legacy province codes from Nghệ An southwards say Huỳnh, Võ


@lru_cache(maxsize=1)
def places() -> tuple[list[Place], dict[str, list[int]]]:
    """Every legacy ward that became exactly one current commune, with both sets of names
    and codes, from the tables and conversion data of `vietnamadminunits`; and the indexes
    of those wards by legacy province code."""
    from vietnamadminunits.converter import converter_2025 as conv
    from vietnamadminunits.database.main import get_data

    current = {
        (r["provinceKey"], r["wardKey"]): r
        for r in get_data(
            fields=["province", "provinceKey", "provinceCode", "ward", "wardKey", "wardCode"],
            table="admin_units",
        )
    }
    province_of = {old: new for new, olds in conv.DICT_PROVINCE.items() for old in olds}
    ward_of: dict[str, tuple[str, str]] = {}
    for prov, wards in conv.DICT_PROVINCE_WARD_NO_DIVIDED.items():
        for ward, olds in wards.items():
            for old in olds:
                ward_of[old] = (prov, ward)
    out: list[Place] = []
    by_province: dict[str, list[int]] = {}
    rows = get_data(
        fields=["province", "provinceCode", "provinceKey", "district", "districtCode",
                "districtKey", "ward", "wardCode", "wardKey", "wardType"],
        table="admin_units_legacy",
    )  # fmt: skip
    for r in sorted((r for r in rows if r["wardCode"]), key=lambda r: r["wardCode"]):
        target = ward_of.get(f"{r['provinceKey']}_{r['districtKey']}_{r['wardKey']}")
        new = current.get(target) if target else None
        if new is None or province_of.get(r["provinceKey"]) != new["provinceKey"]:
            continue
        by_province.setdefault(r["provinceCode"], []).append(len(out))
        out.append(
            Place(
                r["provinceCode"],
                r["province"],
                r["district"],
                r["districtCode"],
                r["ward"],
                r["wardCode"],
                new["provinceCode"],
                new["province"],
                new["ward"],
                new["wardCode"],
                r["wardType"] in ("Phường", "Thị trấn"),
            )  # fmt: skip
        )
    return out, by_province


# --------------------------------------------------------------------------- people


@dataclass
class Home:
    place: Place
    house: str
    since: date  # moved in on this day (the household's first home: 1900-01-01)
    previous: Home | None = None

    def at(self, day: date) -> Home:
        home = self
        while home.previous is not None and day < home.since:
            home = home.previous
        return home


@dataclass
class Person:
    key: str  # the truth's person_id: own CCCD or NOID…
    surname: str
    middle: list[str]
    given: str
    sex: str  # M / F
    born: date
    cccd: str
    cmnd: str
    bhxh: str
    phone: str
    home: Home
    birth_province: str  # legacy 2-digit code of the birth registration
    role: str  # grandparent, parent, child
    relatives: dict[str, list[Person]] = field(default_factory=dict)
    twin: bool = False

    @property
    def full_name(self) -> str:
        return " ".join([self.surname, *self.middle, self.given])

    def age(self, day: date = TODAY) -> int:
        return day.year - self.born.year - ((day.month, day.day) < (self.born.month, self.born.day))


def _era(year: int) -> int:
    return bisect(ERAS, year)


class Population:
    """Households drawn one at a time; people keep links to their relatives."""

    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.places, self.by_province = places()
        provinces = sorted(self.by_province)
        self.province = Weighted([(p, _POPULATION.get(p, 1.0)) for p in provinces])
        self.given = {s: [Weighted(g) for g in GIVEN[s]] for s in ("M", "F")}
        self.middle_other = {s: Weighted(MIDDLE_OTHER[s]) for s in ("M", "F")}
        self.surnames = Weighted(
            [*SURNAMES.items(), *((k, share) for k, (_, _, share) in NORTH_SOUTH.items())]
        )
        self.numbers: set[str] = set()
        self.noid = 0
        self.by_name: dict[str, list[Person]] = {}

    # -- names
    def surname(self, province: str) -> str:
        """A family name; Hoàng and Vũ are mostly Huỳnh and Võ in the South."""
        name: str = self.surnames.draw(self.rng)
        if name in NORTH_SOUTH:
            north, south, _ = NORTH_SOUTH[name]
            southern = int(province) >= _SOUTH_FROM
            return south if self.rng.random() < (0.8 if southern else 0.05) else north
        return name

    def middle(self, sex: str, year: int) -> list[str]:
        rng = self.rng
        era = _era(year)
        main, shares = MIDDLE_MAIN[sex]
        roll = rng.random()
        if roll < 0.03:
            return []  # two-syllable name
        if rng.random() < shares[era]:
            return [main]
        first = self.middle_other[sex].draw(rng)
        if era == 3 and rng.random() < 0.18:  # "Nguyễn Ngọc Bảo Anh"
            second = self.middle_other[sex].draw(rng)
            if second != first:
                return [first, second]
        return [first]

    def given_name(self, sex: str, year: int) -> str:
        name: str = self.given[sex][_era(year)].draw(self.rng)
        return name

    # -- identifiers
    def number(self, province: str, sex: str, born: date) -> str:
        century = (born.year // 100 - 19) * 2 + (1 if sex == "F" else 0)
        head = f"0{province}{century}{born.year % 100:02d}"
        while True:
            n = f"{head}{self.rng.randrange(1_000_000):06d}"
            if n not in self.numbers:
                self.numbers.add(n)
                return n

    def person(self, sex: str, born: date, surname: str, home: Home, province: str, role: str,
               phone: str = "") -> Person:  # fmt: skip
        rng = self.rng
        age = TODAY.year - born.year
        # Personal numbers reach nearly everyone of card age; registration at birth made
        # them general for children from about 2016.
        has = rng.random() < (0.97 if age >= 14 else 0.9 if born.year >= 2016 else 0.75)
        cccd = self.number(province, sex, born) if has else ""
        if not has:
            self.noid += 1
        key = cccd or f"NOID{self.noid:08d}"
        cmnd = ""
        if born.year < 2004 and rng.random() < 0.7:
            cmnd = f"{rng.randrange(10**8, 4 * 10**8):09d}"
        bhxh = ""
        if rng.random() < 0.8:
            bhxh = f"{home.place.old_province_code}{rng.randrange(10**8):08d}"
        if not phone and age >= 15 and rng.random() < (0.9 if age < 70 else 0.55):
            phone = self.phone()
        p = Person(
            key, surname, self.middle(sex, born.year), self.given_name(sex, born.year), sex,
            born, cccd, cmnd, bhxh, phone, home, province, role,
        )  # fmt: skip
        if cccd:
            self.by_name.setdefault(no_marks(p.full_name).lower(), []).append(p)
        return p

    def rename(self, p: Person, middle: list[str], given: str) -> None:
        if p.cccd:
            self.by_name[no_marks(p.full_name).lower()].remove(p)
        p.middle, p.given = middle, given
        if p.cccd:
            self.by_name.setdefault(no_marks(p.full_name).lower(), []).append(p)

    def phone(self) -> str:
        prefix = self.rng.choice(
            ("32", "33", "34", "35", "36", "37", "38", "39", "70", "76", "77", "78", "79",
             "81", "82", "83", "84", "85", "86", "88", "89", "90", "91", "93", "94", "96",
             "97", "98", "56", "58", "59")
        )  # fmt: skip
        return f"0{prefix}{self.rng.randrange(10**7):07d}"

    # -- places
    def place(self, province: str | None = None) -> Place:
        rng = self.rng
        prov = province or self.province.draw(rng)
        return self.places[rng.choice(self.by_province[prov])]

    def house(self, place: Place) -> str:
        rng = self.rng
        if place.urban:
            return f"Số {rng.randrange(1, 400)} {rng.choice(STREETS)}"
        code = int(place.old_province_code)
        kinds = (
            ("Bản", "Thôn", "Tổ")
            if code <= 17
            else ("Thôn", "Xóm", "Tổ")
            if code < 40
            else (("Thôn", "Tổ") if code < 70 else ("Ấp", "Ấp", "Tổ"))
        )
        kind = rng.choice(kinds)
        return f"{kind} {rng.randrange(1, 20)}"

    def home(self) -> tuple[Home, str]:
        """A household's home (with its previous one when it moved) and origin province."""
        rng = self.rng
        place = self.place()
        if rng.random() < 0.18:  # moved from another province
            old_place = self.place()
            moved = TODAY - timedelta(days=rng.randrange(60, 12 * 365))
            old = Home(old_place, self.house(old_place), date(1900, 1, 1))
            return Home(place, self.house(place), moved, old), old_place.old_province_code
        if rng.random() < 0.08:  # moved within the province
            old_place = self.place(place.old_province_code)
            moved = TODAY - timedelta(days=rng.randrange(60, 8 * 365))
            old = Home(old_place, self.house(old_place), date(1900, 1, 1))
            return Home(place, self.house(place), moved, old), place.old_province_code
        return Home(place, self.house(place), date(1900, 1, 1)), place.old_province_code

    def birth(self, year_from: int, year_to: int) -> date:
        year = self.rng.randint(year_from, max(year_from, year_to))
        day = date(year, 1, 1) + timedelta(days=self.rng.randrange(365))
        return min(day, TODAY - timedelta(days=self.rng.randrange(1, 30)))

    def household(self) -> list[Person]:
        rng = self.rng
        home, origin = self.home()

        def province_for(born: date, parent: str) -> str:
            # registered where the family lived when the child was born
            if home.previous is not None and born < home.since:
                return home.previous.place.old_province_code
            if rng.random() < 0.05:  # born at the grandparents' home, registered there
                return parent
            return home.place.old_province_code

        kind = rng.random()
        people: list[Person] = []
        if kind < 0.07:  # an old person alone
            sex = "F" if rng.random() < 0.65 else "M"
            born = self.birth(1930, 1958)
            prov = origin if rng.random() < 0.8 else self.place().old_province_code
            surname = self.surname(prov)
            people.append(self.person(sex, born, surname, home, prov, "grandparent"))
            return people
        if kind < 0.14:  # a young adult alone
            sex = "M" if rng.random() < 0.5 else "F"
            born = self.birth(1990, 2006)
            prov = origin if rng.random() < 0.6 else self.place().old_province_code
            people.append(self.person(sex, born, self.surname(prov), home, prov, "parent"))
            return people
        father_born = self.birth(1948, 2000)
        prov_f = origin if rng.random() < 0.8 else self.place().old_province_code
        prov_m = origin if rng.random() < 0.7 else self.place().old_province_code
        single = rng.random() < 0.06  # a mother alone with her children
        surname = self.surname(prov_f)
        mother_born = self.birth(father_born.year - 1, min(father_born.year + 8, 2003))
        mother = self.person("F", mother_born, self.surname(prov_m), home, prov_m, "parent")
        parents = [mother]
        if single:
            surname, prov_f = mother.surname, prov_m
        else:
            father = self.person("M", father_born, surname, home, prov_f, "parent")
            father.relatives["spouse"] = [mother]
            mother.relatives["spouse"] = [father]
            parents = [father, mother]
        people.extend(parents)
        # grandparents: the father's parents live with them in a quarter of homes
        if not single and father_born.year >= 1952 and rng.random() < 0.25:
            gp_born = self.birth(max(1930, father_born.year - 35), father_born.year - 20)
            gf = self.person("M", gp_born, surname, home, prov_f, "grandparent")
            gm_born = self.birth(max(1930, gp_born.year - 1), gp_born.year + 6)
            gm = self.person("F", gm_born, self.surname(prov_f), home, prov_f, "grandparent")
            gf.relatives["spouse"], gm.relatives["spouse"] = [gm], [gf]
            for g in (gf, gm):
                g.relatives["child"] = [father]
            father.relatives["parent"] = [gf, gm]
            people.extend((gf, gm))
        children: list[Person] = []
        n_children = Weighted([(0, 8), (1, 28), (2, 42), (3, 16), (4, 6)]).draw(rng)
        first = mother_born.year + rng.randint(19, 27)
        year = first
        phone = next((q.phone for q in parents if q.phone), "")
        while len(children) < n_children and year <= 2025:
            born = self.birth(year, year)
            if born > TODAY:
                break
            sex = "M" if rng.random() < 0.53 else "F"
            prov = province_for(born, prov_f)
            child = self.person(sex, born, surname, home, prov, "child", phone)
            children.append(child)
            if rng.random() < 0.02:  # twins: same day, names one syllable apart
                sex2 = sex if rng.random() < 0.6 else ("F" if sex == "M" else "M")
                twin = self.person(sex2, born, surname, home, prov, "child", phone)
                given = twin.given
                while given == child.given:
                    given = self.given_name(sex2, born.year)
                self.rename(twin, list(child.middle) if sex2 == sex else twin.middle, given)
                child.twin = twin.twin = True
                children.append(twin)
            year += rng.randint(2, 6)
        for c in children:
            c.relatives["parent"] = parents
            c.relatives["sibling"] = [s for s in children if s is not c]
        for p in parents:
            p.relatives["child"] = children
        people.extend(children)
        return people


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    name: str
    prefix: str
    years: tuple[int, int]  # active from, to
    dates: Weighted  # birth date formats
    sexes: Weighted  # sex code sets
    caps: float
    no_marks: float
    ime: float  # Telex / VNI / VIQR residue
    given_first: float
    slip: float
    variant: float  # i/y and tone-place spellings
    spaces: float
    has_id: float  # carries an identification number at all
    cmnd: float  # the 9-digit card instead, when the person has one
    id_typo: float
    other_id: float  # somebody else's number (relative, namesake)
    child_on_parent: float
    year_only: float
    unknown_dm: float
    year_off: float
    dm_swap: float
    phone: float
    addresses: Weighted  # text / codes / both / none
    stale: float  # legacy address still written after the reform
    insurance: float
    duplicate: float
    ages: Callable[[int, str], float]  # weight by age and sex


def _w(**kw: float) -> Weighted:
    return Weighted(list(kw.items()))


SEX_CODES = {
    "digit12": {"M": "1", "F": "2"},
    "mf": {"M": "M", "F": "F"},
    "nam_nu": {"M": "Nam", "F": "Nữ"},
    "bit": {"M": "1", "F": "0"},
    "nam_nu_plain": {"M": "NAM", "F": "NU"},
}

SOURCES = (
    Source(
        "hospital",
        "HIS",
        (2017, 2025),
        _w(xml12=6, ymd8=2, dmy=1.5, iso=0.5),
        _w(digit12=9, nam_nu=1),
        caps=0.35,
        no_marks=0.12,
        ime=0.015,
        given_first=0.01,
        slip=0.04,
        variant=0.04,
        spaces=0.05,
        has_id=0.82,
        cmnd=0.25,
        id_typo=0.025,
        other_id=0.02,
        child_on_parent=0.15,
        year_only=0.01,
        unknown_dm=0.01,
        year_off=0.01,
        dm_swap=0.015,
        phone=0.7,
        addresses=_w(both=5, text=2, codes=1.5, none=0.3),
        stale=0.35,
        insurance=0.85,
        duplicate=0.07,
        ages=lambda a, s: 2.0 if a < 6 else 1.5 if a < 18 else 2.0 if a < 60 else 3.5,
    ),  # fmt: skip
    Source(
        "commune_station",
        "TYT",
        (2015, 2025),
        _w(dmy=6, dmy_short=0.6, dmy_dash=1, year=0.5),
        _w(nam_nu=6, digit12=3, bit=1),
        caps=0.1,
        no_marks=0.3,
        ime=0.03,
        given_first=0.005,
        slip=0.06,
        variant=0.06,
        spaces=0.08,
        has_id=0.5,
        cmnd=0.35,
        id_typo=0.04,
        other_id=0.025,
        child_on_parent=0.2,
        year_only=0.08,
        unknown_dm=0.03,
        year_off=0.02,
        dm_swap=0.03,
        phone=0.5,
        addresses=_w(text=6, both=2, codes=0.5, none=0.5),
        stale=0.6,
        insurance=0.4,
        duplicate=0.05,
        ages=lambda a, s: 2.0 if a < 6 else 0.8 if a < 18 else 1.0 if a < 60 else 3.0,
    ),  # fmt: skip
    Source(
        "immunization",
        "TCMR",
        (2016, 2025),
        _w(dmy=7, iso=2, dmy_short=0.5),
        _w(nam_nu=6, bit=2, mf=1),
        caps=0.05,
        no_marks=0.15,
        ime=0.02,
        given_first=0.005,
        slip=0.05,
        variant=0.05,
        spaces=0.04,
        has_id=0.45,
        cmnd=0.05,
        id_typo=0.03,
        other_id=0.01,
        child_on_parent=0.3,
        year_only=0.0,
        unknown_dm=0.005,
        year_off=0.005,
        dm_swap=0.03,
        phone=0.95,
        addresses=_w(text=5, both=3, codes=1, none=0.5),
        stale=0.3,
        insurance=0.3,
        duplicate=0.06,
        # children, and women of child-bearing age (tetanus-diphtheria in pregnancy)
        ages=lambda a, s: 12.0 if a < 6 else 0.6 if a < 15 else 0.5 if a < 45 and s == "F" else 0.0,
    ),  # fmt: skip
    Source(
        "telehealth",
        "TELE",
        (2020, 2025),
        _w(iso=6, dmy=2, dmy_short=1, dmy_dot=0.5),
        _w(mf=8, nam_nu=2),
        caps=0.03,
        no_marks=0.35,
        ime=0.08,
        given_first=0.12,
        slip=0.05,
        variant=0.05,
        spaces=0.1,
        has_id=0.4,
        cmnd=0.1,
        id_typo=0.06,
        other_id=0.04,
        child_on_parent=0.4,
        year_only=0.0,
        unknown_dm=0.0,
        year_off=0.03,
        dm_swap=0.04,
        phone=1.0,
        addresses=_w(text=6, none=3, both=0.3),
        stale=0.25,
        insurance=0.1,
        duplicate=0.08,
        ages=lambda a, s: (
            0.2 if a < 12 else 0.6 if a < 18 else 2.5 if a < 50 else 1.2 if a < 70 else 0.3
        ),
    ),  # fmt: skip
    Source(
        "insurance",
        "BH",
        (2016, 2025),
        _w(ymd8=4, dmy=3, year=1.5),
        _w(digit12=5, bit=3, nam_nu_plain=2),
        caps=0.55,
        no_marks=0.45,
        ime=0.0,
        given_first=0.0,
        slip=0.02,
        variant=0.03,
        spaces=0.03,
        has_id=0.7,
        cmnd=0.3,
        id_typo=0.015,
        other_id=0.008,
        child_on_parent=0.05,
        year_only=0.1,
        unknown_dm=0.02,
        year_off=0.01,
        dm_swap=0.01,
        phone=0.35,
        addresses=_w(codes=4, both=3, text=1),
        stale=0.5,
        insurance=1.0,
        duplicate=0.04,
        ages=lambda a, s: 1.5 if a < 6 else 1.8 if a < 18 else 1.5 if a < 60 else 2.5,
    ),  # fmt: skip
)

# ------------------------------------------------------------------------------ noise


def _fmt_date(rng: Random, style: str, y: int, m: int | None, d: int | None,
              fill: bool) -> str:  # fmt: skip
    """A birth date in a source's style; m/d None when the source does not know them
    (written as zeros where the form has them, else dropped, or 01/01 when ``fill``)."""
    if fill:
        m = m or 1
        d = d or 1
    if style == "year" or (m is None and style in ("iso", "dmy_dot", "dmy_dash")):
        return f"{y}"
    if style == "xml12":
        return f"{y}{m or 0:02d}{d or 0:02d}0000" if m is None or d is None else \
            f"{y}{m:02d}{d:02d}{rng.choice(('0000', '0000', '0000', '0830', '1415'))}"  # fmt: skip
    if style == "ymd8":
        return f"{y}{m or 0:02d}{d or 0:02d}"
    if style == "iso":
        return f"{y}-{m:02d}" if d is None else f"{y}-{m:02d}-{d:02d}"
    if m is None:
        return f"{y}"
    if d is None:
        return f"{m:02d}/{y}"
    if style == "dmy":
        return f"{d:02d}/{m:02d}/{y}"
    if style == "dmy_dash":
        return f"{d:02d}-{m:02d}-{y}"
    if style == "dmy_dot":
        return f"{d:02d}.{m:02d}.{y}"
    return f"{d}/{m}/{y % 100:02d}"  # dmy_short


def _phone_style(rng: Random, phone: str) -> tuple[str, str | None]:
    """A mobile number as people write it; the kind when it is not the plain national form."""
    n = phone[1:]
    r = rng.random()
    if r < 0.45:
        return phone, None
    if r < 0.55:
        return f"84{n}", "phone_84"
    if r < 0.65:
        return f"+84 {n[:2]} {n[2:5]} {n[5:]}", "phone_plus84"
    if r < 0.75:
        return f"{phone[:4]}.{phone[4:7]}.{phone[7:]}", "phone_dots"
    if r < 0.82:
        return f"{phone[:4]} {phone[4:7]} {phone[7:]}", "phone_spaces"
    if r < 0.87:
        return f"(+84){n}", "phone_paren"
    if r < 0.92:
        return phone[1:], "phone_no_zero"  # a spreadsheet ate the leading zero
    old = {  # fmt: skip
        "32": "162",
        "33": "163",
        "34": "164",
        "35": "165",
        "36": "166",
        "37": "167",
        "38": "168",
        "39": "169",
        "70": "120",
        "79": "121",
        "77": "122",
        "76": "126",
        "78": "128",
        "83": "123",
        "84": "124",
        "85": "125",
        "81": "127",
        "82": "129",
    }
    if n[:2] in old:
        return f"0{old[n[:2]]}{n[2:]}", "phone_11_digit"  # written before the 2018 switch
    return f"{phone[:3]}-{phone[3:6]}-{phone[6:]}", "phone_dashes"


def _slip(rng: Random, text: str) -> str:
    """One keying slip: a letter dropped, doubled, swapped with its neighbour or replaced."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 3:
        return text
    i = rng.choice(letters[1:])
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + text[i + 1 :]
    if kind == 1:
        return text[:i] + text[i] + text[i:]
    if kind == 2 and i + 1 < len(text) and text[i + 1].isalpha():
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    plain = _plain(text[i]).lower()
    near = {"a": "s", "e": "r", "i": "o", "o": "i", "u": "y", "n": "m", "m": "n", "h": "g",
            "g": "h", "t": "r", "c": "v", "d": "s", "l": "k", "y": "u"}  # fmt: skip
    repl = near.get(plain, "a")
    return text[:i] + (repl.upper() if text[i].isupper() else repl) + text[i + 1 :]


class Writer:
    """Turns people into source records with each source's habits."""

    def __init__(self, rng: Random, pop: Population) -> None:
        self.rng = rng
        self.pop = pop
        self.seq = dict.fromkeys((s.name for s in SOURCES), 0)

    def records_for(self, p: Person) -> list[tuple[list[str], str, str]]:
        """[(record row without record_id, truth key, noise kinds)] for one person."""
        rng = self.rng
        roll = rng.random()
        n = 0 if roll < 0.07 else 1 + _poisson(rng, 1.05)
        if n == 0:
            return []
        age = p.age()
        weights = [(s, s.ages(age, p.sex)) for s in SOURCES if s.ages(age, p.sex) > 0]
        pick = Weighted(weights)
        out = []
        for _ in range(n):
            src: Source = pick.draw(rng)
            day = self._record_day(src, p)
            out.append(self.record(src, p, day))
            if rng.random() < src.duplicate:  # registered twice by the same source
                again = min(TODAY, day + timedelta(days=rng.randrange(0, 900)))
                row, key, kinds = self.record(src, p, again)
                out.append((row, key, ";".join(filter(None, (kinds, "same_source_twice")))))
        return out

    def _record_day(self, src: Source, p: Person) -> date:
        rng = self.rng
        start = max(date(src.years[0], 1, 1), p.born)
        span = (TODAY - start).days
        # more activity in recent years
        if TODAY - timedelta(days=120) > start and rng.random() < 0.3:
            # exported or updated since the reform
            start = max(start, REFORM)
            span = (TODAY - start).days
        frac = rng.random() ** 0.5
        return start + timedelta(days=int(span * frac))

    def _number(self, src: Source, p: Person, day: date, kinds: list[str]) -> str:
        rng = self.rng
        age = p.age(day)
        parents = p.relatives.get("parent", [])
        if age < 14 and parents and rng.random() < src.child_on_parent:
            holder = [q for q in parents if q.cccd]
            if holder:
                kinds.append("child_on_parent_id")
                return rng.choice(holder).cccd
        if rng.random() > src.has_id:
            kinds.append("no_id")
            return ""
        if rng.random() < src.other_id:
            other = self._other(p)
            if other is not None:
                kinds.append(f"other_id_{other[0]}")
                return other[1]
        if p.cmnd and (rng.random() < src.cmnd * (2.0 if day.year < 2021 else 0.6)):
            kinds.append("cmnd")
            return p.cmnd
        if not p.cccd:
            kinds.append("no_id")
            return ""
        number = p.cccd
        if rng.random() < src.id_typo:
            digits = list(number)
            if rng.random() < 0.5:
                i = rng.randrange(3, 11)
                if digits[i] == digits[i + 1]:
                    digits[i] = str((int(digits[i]) + 1) % 10)
                else:
                    digits[i], digits[i + 1] = digits[i + 1], digits[i]
                kinds.append("id_swap")
            else:
                i = rng.randrange(4, 12)
                digits[i] = str((int(digits[i]) + rng.randrange(1, 10)) % 10)
                kinds.append("id_digit")
            number = "".join(digits)
        if rng.random() < 0.01:
            kinds.append("id_lost_zero")
            number = number.lstrip("0")
        return number

    def _other(self, p: Person) -> tuple[str, str] | None:
        """Somebody else's number: a relative's, or a namesake's."""
        rng = self.rng
        options: list[tuple[str, Person]] = []
        for rel in ("spouse", "parent", "sibling", "child"):
            options.extend((rel, q) for q in p.relatives.get(rel, []) if q.cccd)
        twins = [q for rel, q in options if rel == "sibling" and q.born == p.born]
        if twins and rng.random() < 0.7:  # twins' papers are the ones most often mixed up
            return "twin", twins[0].cccd
        namesakes = [
            q for q in self.pop.by_name.get(no_marks(p.full_name).lower(), []) if q is not p
        ]
        if namesakes and (not options or rng.random() < 0.35):
            # The wrong number usually comes from a look-up by name and birth year, or by
            # name in the same province: the namesake picked is most often one of those.
            pick = Weighted(
                [
                    (q, 1 + 10 * (q.born.year == p.born.year)
                     + 3 * (q.home.place.new_province_code == p.home.place.new_province_code))
                    for q in namesakes
                ]
            )  # fmt: skip
            return "namesake", pick.draw(rng).cccd
        if not options:
            return None
        rel, q = rng.choice(options)
        return rel, q.cccd

    def _name(self, src: Source, p: Person, kinds: list[str]) -> tuple[str, str]:
        """The name as written, and the sex as the source believes it."""
        rng = self.rng
        sex = p.sex
        words = [p.surname, *p.middle, p.given]
        if rng.random() < src.variant:
            swapped = [(_IY.get(w) or _TONE_PLACE.get(w) or w) for w in words]
            if swapped != words:
                kinds.append("spelling_variant")
                words = swapped
        if rng.random() < src.given_first and len(words) >= 2:
            kinds.append("given_first")
            if rng.random() < 0.5:
                words = [*words[1:], words[0]]  # "Văn Hùng Nguyễn"
            else:
                words = [words[-1], *words[1:-1], words[0]]  # "Hùng Văn Nguyễn"
            if rng.random() < 0.25:
                sex = "F" if sex == "M" else "M"
                kinds.append("sex_wrong")
        elif rng.random() < 0.01 and len(words) >= 3:
            kinds.append("middle_dropped")
            words = [words[0], words[-1]]
        r = rng.random()
        if r < src.ime:
            style = rng.choice((telex, vni, viqr))
            kinds.append(style.__name__)
            words = [style(w) for w in words]
        elif r < src.ime + src.no_marks:
            kinds.append("no_marks")
            words = [_plain(w) for w in words]
        name = " ".join(words)
        if rng.random() < src.slip:
            kinds.append("slip")
            name = _slip(rng, name)
        if rng.random() < src.caps:
            kinds.append("caps")
            name = name.upper()
        if rng.random() < src.spaces:
            kinds.append("spaces")
            parts = name.split(" ")
            i = rng.randrange(max(1, len(parts) - 1))
            name = " ".join(parts[: i + 1]) + "  " + " ".join(parts[i + 1 :])
            if rng.random() < 0.3:
                name = " " + name + " "
        return unicodedata.normalize("NFC", name), sex

    def _birth(self, src: Source, p: Person, kinds: list[str]) -> str:
        rng = self.rng
        y = p.born.year
        m: int | None = p.born.month
        d: int | None = p.born.day
        style: str = src.dates.draw(rng)
        fill = False
        if style == "year":
            kinds.append("year_only")
        elif rng.random() < src.year_only * (2 if y < 1960 else 1):
            kinds.append("year_only")
            m = d = None
        elif rng.random() < src.unknown_dm * (3 if y < 1960 else 1):
            kinds.append("unknown_day_month")
            if rng.random() < 0.5:
                d = None
            else:
                m = d = None
            fill = rng.random() < 0.35  # written as 01/01
        if rng.random() < src.year_off:
            kinds.append("year_off_by_one")
            y += rng.choice((-1, 1))
        if m and d and d <= 12 and d != m and rng.random() < src.dm_swap:
            kinds.append("day_month_swapped")
            m, d = d, m
        if m and d:
            try:
                date(y, m, d)
            except ValueError:  # 29 February moved to a common year
                d = 28
        if style != "dmy" and style != "year":
            kinds.append(f"date_{style}")
        return _fmt_date(rng, style, y, m, d, fill)

    def _address(self, src: Source, p: Person, day: date, kinds: list[str]) -> tuple[str, ...]:
        rng = self.rng
        home = p.home.at(day)
        if home is not p.home:
            kinds.append("previous_address")
        legacy = day < REFORM or rng.random() < src.stale
        form: str = src.addresses.draw(rng)
        if form == "none":
            kinds.append("no_address")
            return "", "", ""
        pl = home.place
        if legacy:
            kinds.append("legacy_address")
            text = f"{home.house}, {pl.old_ward}, {pl.old_district}, {pl.old_province}"
            codes = (pl.old_province_code, pl.old_ward_code)
        else:
            text = f"{home.house}, {pl.new_ward}, {pl.new_province}"
            codes = (pl.new_province_code, pl.new_ward_code)
        if rng.random() < 0.15:
            kinds.append("address_abbreviated")
            text = _abbreviate(text)
        if rng.random() < 0.3 and form != "codes":
            text = no_marks(text)
        if form == "text":
            kinds.append("address_text_only")
            return text, "", ""
        if form == "codes":
            kinds.append("address_codes_only")
            return "", *codes
        return text, *codes

    def record(self, src: Source, p: Person, day: date) -> tuple[list[str], str, str]:
        rng = self.rng
        kinds: list[str] = []
        name, sex = self._name(src, p, kinds)
        birth = self._birth(src, p, kinds)
        codes: dict[str, str] = SEX_CODES[src.sexes.draw(rng)]
        sex_text = codes[sex]
        if rng.random() < 0.01:
            sex_text = ""
            kinds.append("no_sex")
        number = self._number(src, p, day, kinds)
        phone = ""
        carrier = p.phone or next((q.phone for q in p.relatives.get("parent", []) if q.phone), "")
        if carrier and rng.random() < src.phone:
            phone, kind = _phone_style(rng, carrier)
            if kind:
                kinds.append(kind)
        bhxh = bhyt = ""
        if p.bhxh and rng.random() < src.insurance:
            bhyt = self._card(p, day)
            if rng.random() < 0.3:
                bhxh = p.bhxh
        address, province, commune = self._address(src, p, day, kinds)
        row = [src.name, name, birth, sex_text, number, bhxh, bhyt, phone, address, province,
               commune]  # fmt: skip
        return row, p.key, ";".join(kinds)

    def _card(self, p: Person, day: date) -> str:
        age = p.age(day)
        if age < 6:
            cat, level = "TE", "1"
        elif age < 18:
            cat, level = "HS", "4"
        elif age >= 60:
            cat, level = self.rng.choice((("HT", "2"), ("CB", "2"), ("GD", "4")))
        else:
            cat, level = self.rng.choice((("DN", "4"), ("GD", "4"), ("CN", "3"), ("HN", "2")))
        return f"{cat}{level}{p.home.at(day).place.old_province_code}{p.bhxh}"


def _abbreviate(text: str) -> str:
    for full, short in (("Thành phố ", "TP. "), ("Phường ", "P. "), ("Quận ", "Q. "),
                        ("Huyện ", "H. "), ("Tỉnh ", "T. "), ("Xã ", "X. "),
                        ("Thị trấn ", "TT. "), ("Thị xã ", "TX. ")):  # fmt: skip
        text = text.replace(full, short)
    return text


def _poisson(rng: Random, lam: float) -> int:
    # Knuth: fine for a small mean
    limit, k, prod = pow(2.718281828459045, -lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


# ---------------------------------------------------------------------------- output


@dataclass
class Summary:
    people: int
    households: int
    register: int
    records: int
    by_source: dict[str, int]
    seconds: float


def register_row(p: Person) -> list[str]:
    pl = p.home.place
    return [
        p.cccd, p.full_name, p.born.isoformat(), p.sex, pl.new_province_code, pl.new_ward_code,
        f"{p.home.house}, {pl.new_ward}, {pl.new_province}",
    ]  # fmt: skip


def generate(people: int, seed: int, out: Path) -> Summary:
    """Write register.csv, records.csv, truth.csv and noise.csv for ``people`` people.

    Files are written under temporary names and renamed at the end, so an interrupted run
    leaves nothing that looks finished.
    """
    if people < 0:
        raise ValueError(f"people: must be >= 0, got {people}")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = Random(seed)
    pop = Population(rng)
    writer = Writer(rng, pop)
    names = {"register": REGISTER_COLUMNS, "records": RECORDS_COLUMNS, "truth": TRUTH_COLUMNS,
             "noise": NOISE_COLUMNS}  # fmt: skip
    handles = {k: (out / f".{k}.csv.part").open("w", encoding="utf-8", newline="") for k in names}
    csvs = {k: csv.writer(h, lineterminator="\n") for k, h in handles.items()}
    for k, header in names.items():
        csvs[k].writerow(header)
    prefix = {s.name: s.prefix for s in SOURCES}
    by_source = dict.fromkeys(prefix, 0)
    done = households = registered = total = 0
    try:
        while done < people:
            chunk: list[tuple[list[str], str, str]] = []
            target = min(people, done + CHUNK)
            while done < target:
                members = pop.household()[: target - done]
                households += 1
                done += len(members)
                for p in members:
                    if p.cccd:
                        csvs["register"].writerow(register_row(p))
                        registered += 1
                    chunk.extend(writer.records_for(p))
            rng.shuffle(chunk)
            for row, key, kinds in chunk:
                writer.seq[row[0]] += 1
                rid = f"{prefix[row[0]]}{writer.seq[row[0]]:08d}"
                csvs["records"].writerow([rid, *row])
                csvs["truth"].writerow((rid, key))
                csvs["noise"].writerow((rid, kinds))
                by_source[row[0]] += 1
            total += len(chunk)
    except BaseException:
        for k, h in handles.items():
            h.close()
            (out / f".{k}.csv.part").unlink(missing_ok=True)
        raise
    for k, h in handles.items():
        h.close()
        (out / f".{k}.csv.part").replace(out / f"{k}.csv")
    return Summary(done, households, registered, total, by_source, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.people < 0:
        parser.error(f"--people: must be >= 0, got {args.people}")
    s = generate(args.people, args.seed, args.out)
    sources = ", ".join(f"{k} {v:,}" for k, v in s.by_source.items())
    print(
        f"{s.people:,} people in {s.households:,} households, {s.register:,} in the register, "
        f"{s.records:,} records ({sources}) in {s.seconds:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
