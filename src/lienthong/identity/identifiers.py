"""Structural checks for Vietnamese personal, insurance and facility identifiers.

None of these numbers carries a check digit, so a check can only verify shape and the
parts that encode something knowable (province, sex, century, birth year, insurance
category). Checks return a list of short English reasons, each naming the part at fault,
so that a data-quality report can say *why* a value was rejected; an empty list means the
value is structurally valid (not that it was issued to that person).

Sources: Circular 07/2016/TT-BCA (and its successor 59/2021/TT-BCA) on the structure of the
12-digit personal identification number; Decision 1351/QĐ-BHXH (2015) and its amendments on
the health-insurance card code; the project standards notes (`shared/standards/README.md`).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from lienthong.identity.normalize import normalize_sex

# Birth-registration province codes used in digits 1-3 of the 12-digit personal
# identification number: the legacy 63-province numbering (GSO administrative codes,
# zero-padded), as listed in the Annex of Circular 07/2016/TT-BCA. The same 2-digit codes
# prefix health-facility codes and appear on health-insurance cards. Codes are kept after
# the 2025 merger: numbers already issued do not change.
LEGACY_PROVINCES: dict[str, str] = {
    "01": "Hà Nội",
    "02": "Hà Giang",
    "04": "Cao Bằng",
    "06": "Bắc Kạn",
    "08": "Tuyên Quang",
    "10": "Lào Cai",
    "11": "Điện Biên",
    "12": "Lai Châu",
    "14": "Sơn La",
    "15": "Yên Bái",
    "17": "Hòa Bình",
    "19": "Thái Nguyên",
    "20": "Lạng Sơn",
    "22": "Quảng Ninh",
    "24": "Bắc Giang",
    "25": "Phú Thọ",
    "26": "Vĩnh Phúc",
    "27": "Bắc Ninh",
    "30": "Hải Dương",
    "31": "Hải Phòng",
    "33": "Hưng Yên",
    "34": "Thái Bình",
    "35": "Hà Nam",
    "36": "Nam Định",
    "37": "Ninh Bình",
    "38": "Thanh Hóa",
    "40": "Nghệ An",
    "42": "Hà Tĩnh",
    "44": "Quảng Bình",
    "45": "Quảng Trị",
    "46": "Thừa Thiên Huế",
    "48": "Đà Nẵng",
    "49": "Quảng Nam",
    "51": "Quảng Ngãi",
    "52": "Bình Định",
    "54": "Phú Yên",
    "56": "Khánh Hòa",
    "58": "Ninh Thuận",
    "60": "Bình Thuận",
    "62": "Kon Tum",
    "64": "Gia Lai",
    "66": "Đắk Lắk",
    "67": "Đắk Nông",
    "68": "Lâm Đồng",
    "70": "Bình Phước",
    "72": "Tây Ninh",
    "74": "Bình Dương",
    "75": "Đồng Nai",
    "77": "Bà Rịa - Vũng Tàu",
    "79": "TP. Hồ Chí Minh",
    "80": "Long An",
    "82": "Tiền Giang",
    "83": "Bến Tre",
    "84": "Trà Vinh",
    "86": "Vĩnh Long",
    "87": "Đồng Tháp",
    "89": "An Giang",
    "91": "Kiên Giang",
    "92": "Cần Thơ",
    "93": "Hậu Giang",
    "94": "Sóc Trăng",
    "95": "Bạc Liêu",
    "96": "Cà Mau",
}

#: 3-digit form used in the personal identification number ("001" .. "096").
CCCD_PROVINCE_CODES: frozenset[str] = frozenset("0" + code for code in LEGACY_PROVINCES)

# Participant-category codes (first two letters of the health-insurance card), from the
# annex of Decision 1351/QĐ-BHXH (2015) on card codes, grouped as there:
#   employer and employee pay: DN HX CH NN TK HC XK
#   the social-insurance fund pays: HT TB NO CT XB TN CS
#   the state budget pays: QN CA CY XN MS CC CK CB KC HD TE BT HN DT DK XD TS TC TQ TA TY HG
#                          LS PV
#   the state budget supports: CN HS SV
#   households: GD
# Added since by the amendments of that annex and found on cards in use: TV (relatives of
# defence workers), GB (agricultural households with average living standard), TL, XV, HK,
# and the codes of the groups the 2024 amendment of the Law on Health Insurance (Law
# 51/2024/QH15, in force 1 July 2025) added, seen on cards issued in 2025-26: AK, CD, DS,
# LH. The text of the newest amendment of the annex could not be consulted here; a code
# missing from this set is reported as a conformance problem, never a reason to refuse.
BHYT_CATEGORIES: frozenset[str] = frozenset(
    ("DN", "HX", "CH", "NN", "TK", "HC", "XK")
    + ("HT", "TB", "NO", "CT", "XB", "TN", "CS")
    + ("QN", "CA", "CY", "XN", "MS", "CC", "CK", "CB", "KC", "HD", "TE", "BT", "HN", "DT")
    + ("DK", "XD", "TS", "TC", "TQ", "TV", "TA", "TY", "HG", "LS", "PV")
    + ("CN", "HS", "SV", "GB", "GD")
    + ("TL", "XV", "HK")
    + ("AK", "CD", "DS", "LH")
)

# Characters 4-5 of a health-insurance card: the code of the social-insurance office that
# issued it — the legacy province codes, and for the cards the armed forces' own offices
# issue (codes QN, HC, LS, XK, CY, CA ... of the QĐ 130 appendix Bảng 1 MA_THE_BHYT note)
# 97, the Ministry of Defence's social insurance (BHXH Bộ Quốc phòng), and 98, the Ministry
# of Public Security's (BHXH Bộ Công an), per Decision 1351/QĐ-BHXH as amended.
BHYT_ISSUER_CODES: dict[str, str] = {
    **LEGACY_PROVINCES,
    "97": "BHXH Bộ Quốc phòng (Ministry of Defence social insurance)",
    "98": "BHXH Bộ Công an (Ministry of Public Security social insurance)",
}

# Digit 4 of the personal identification number: (century start, sex) per Circular
# 07/2016/TT-BCA, Art. 7: even = male, odd = female; 0/1 1900s, 2/3 2000s, ... 8/9 2300s.
_CENTURY_SEX: dict[str, tuple[int, str]] = {
    str(d): (1900 + 100 * (d // 2), "M" if d % 2 == 0 else "F") for d in range(10)
}
_SEX_WORD = {"M": "male", "F": "female"}

_DIGITS = re.compile(r"[0-9]+")


def _digits(value: str, n: int) -> bool:
    return len(value) == n and _DIGITS.fullmatch(value) is not None


@dataclass(frozen=True)
class CccdInfo:
    """The parts of a 12-digit personal identification number that encode something."""

    province_code: str  # 3 digits, legacy numbering, e.g. "079"
    province_name: str | None
    sex: str  # "M" or "F"
    century: int  # first year of the century, e.g. 1900
    year_2digits: int  # digits 5-6
    birth_year: int  # century + year_2digits
    serial: str  # digits 7-12, random


def decode_cccd(value: str) -> CccdInfo | None:
    """Decode a 12-digit personal identification number; None if it is not 12 digits.

    Decoding does not validate the province code: use `check_cccd` for that.
    """
    value = value.strip()
    if not _digits(value, 12):
        return None
    century, sex = _CENTURY_SEX[value[3]]
    yy = int(value[4:6])
    return CccdInfo(
        province_code=value[:3],
        province_name=LEGACY_PROVINCES.get(value[1:3]) if value[0] == "0" else None,
        sex=sex,
        century=century,
        year_2digits=yy,
        birth_year=century + yy,
        serial=value[6:],
    )


def check_cccd(value: str, sex: str | None = None, birth_year: int | None = None) -> list[str]:
    """Check the 12-digit personal identification number (CCCD / số định danh cá nhân).

    Structure (Circular 07/2016/TT-BCA, Art. 7): digits 1-3 birth-registration province,
    digit 4 century and sex, digits 5-6 last two digits of the birth year, digits 7-12
    random. When the record's own `sex` (any form `normalize_sex` accepts) and
    `birth_year` are given, digits 4-6 are checked against them, which catches numbers
    typed into the wrong patient's record. A record sex that is unknown or "O" is not
    compared (the number only encodes male/female). Codes for births registered abroad
    are not accepted. Returns reasons; empty means structurally valid.
    """
    value = value.strip()
    if not _digits(value, 12):
        return [f"the personal identification number must be exactly 12 digits, got {value!r}"]
    reasons: list[str] = []
    if value[:3] not in CCCD_PROVINCE_CODES:
        reasons.append(f"digits 1-3 ({value[:3]}) are not a known birth-registration province code")
    info = decode_cccd(value)
    assert info is not None
    if info.birth_year > _dt.date.today().year:
        reasons.append(
            f"digits 4-6 ({value[3:6]}) give birth year {info.birth_year}, which is in the future"
        )
    record_sex = normalize_sex(sex) if sex is not None else None
    if record_sex in ("M", "F") and record_sex != info.sex:
        reasons.append(
            f"digit 4 says {_SEX_WORD[info.sex]} but the record says {_SEX_WORD[record_sex]}"
        )
    if birth_year is not None:
        if birth_year // 100 * 100 != info.century:
            reasons.append(
                f"digit 4 says born in the {info.century}s but the record says {birth_year}"
            )
        if birth_year % 100 != info.year_2digits:
            reasons.append(
                f"digits 5-6 say a birth year ending in {value[4:6]} "
                f"but the record says {birth_year}"
            )
    return reasons


def check_cmnd(value: str) -> list[str]:
    """Check an old identity card number (CMND), still found in records.

    CMND numbers have 9 digits (no public structure beyond that); cards issued from 2012
    carry a 12-digit number with the same structure as the personal identification
    number, checked as such.
    """
    value = value.strip()
    if _digits(value, 9):
        return []
    if _digits(value, 12):
        return check_cccd(value)
    return [f"the old identity card number must be 9 or 12 digits, got {value!r}"]


def check_bhxh(value: str) -> list[str]:
    """Check a social-insurance number (mã số BHXH): 10 digits, one per person."""
    value = value.strip()
    if _digits(value, 10):
        return []
    return [f"the social-insurance number must be exactly 10 digits, got {value!r}"]


@dataclass(frozen=True)
class BhytInfo:
    """The parts of a 15-character health-insurance card code."""

    category: str  # 2 letters, participant category
    benefit_level: int  # 1-5
    province_code: str  # 2 digits: legacy province code, or 97/98 (Defence, Police offices)
    bhxh_number: str  # 10 digits


_BHYT_SHAPE = re.compile(r"([A-Z]{2})([0-9])([0-9]{2})([0-9]{10})")


def decode_bhyt(value: str) -> BhytInfo | None:
    """Split a health-insurance card code into its parts; None unless it has the shape
    2 letters + 13 digits (letters are upper-cased first). Values are not validated."""
    m = _BHYT_SHAPE.fullmatch(value.strip().upper())
    if m is None:
        return None
    return BhytInfo(
        category=m.group(1),
        benefit_level=int(m.group(2)),
        province_code=m.group(3),
        bhxh_number=m.group(4),
    )


def check_bhyt(value: str) -> list[str]:
    """Check a health-insurance card code (mã thẻ BHYT), e.g. "DN4010123456789".

    15 characters: 2-letter participant category (Decision 1351/QĐ-BHXH as amended), 1
    digit benefit level 1-5, 2-digit code of the issuing office (a legacy province code,
    or 97/98 for the Defence and Police social-insurance offices), 10-digit
    social-insurance number.
    Lower-case letters are accepted (cards are often typed by hand).
    """
    raw = value.strip()
    if len(raw) != 15:
        return [f"the health-insurance card code must be 15 characters, got {len(raw)}"]
    info = decode_bhyt(raw)
    if info is None:
        return [
            f"the health-insurance card code must be 2 letters followed by 13 digits, got {raw!r}"
        ]
    reasons: list[str] = []
    if info.category not in BHYT_CATEGORIES:
        reasons.append(f"characters 1-2 ({info.category}) are not a known participant category")
    if not 1 <= info.benefit_level <= 5:
        reasons.append(f"character 3 (benefit level {info.benefit_level}) must be 1 to 5")
    if info.province_code not in BHYT_ISSUER_CODES:
        reasons.append(f"characters 4-5 ({info.province_code}) are not a known province code")
    return reasons


_FACILITY_SHAPE = re.compile(r"[0-9]{2}[0-9A-Z]{3}")


def check_facility_code(value: str) -> list[str]:
    """Check a health-facility code (mã cơ sở KCB): 5 characters, the first two the
    legacy province code, e.g. "01929" (a Hà Nội facility)."""
    raw = value.strip().upper()
    if len(raw) != 5:
        return [f"the facility code must be 5 characters, got {len(raw)}"]
    if _FACILITY_SHAPE.fullmatch(raw) is None:
        return [f"the facility code must be 2 digits and 3 letters or digits, got {raw!r}"]
    if raw[:2] not in LEGACY_PROVINCES:
        return [f"characters 1-2 ({raw[:2]}) of the facility code are not a known province code"]
    return []


def one_digit_apart(a: str, b: str) -> bool:
    """True when `b` is `a` with one character substituted or two adjacent characters
    swapped: the two commonest keying errors in hand-typed identifiers, used for
    typo-tolerant matching. Equal strings are not "one apart"."""
    if len(a) != len(b) or a == b:
        return False
    diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diffs) == 1:
        return True
    if len(diffs) == 2:
        i, j = diffs
        return j == i + 1 and a[i] == b[j] and a[j] == b[i]
    return False
