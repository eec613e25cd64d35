"""Tests for the structural checks of Vietnamese identifiers (lienthong.identity.identifiers)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.identity.identifiers import (
    BHYT_CATEGORIES,
    CCCD_PROVINCE_CODES,
    LEGACY_PROVINCES,
    BhytInfo,
    CccdInfo,
    check_bhxh,
    check_bhyt,
    check_cccd,
    check_cmnd,
    check_facility_code,
    decode_bhyt,
    decode_cccd,
    one_digit_apart,
)

THIS_YEAR = dt.date.today().year

# ----------------------------------------------------------------- province table


def test_legacy_province_table_has_the_63_provinces() -> None:
    assert len(LEGACY_PROVINCES) == 63
    assert len(CCCD_PROVINCE_CODES) == 63
    assert LEGACY_PROVINCES["01"] == "Hà Nội"
    assert LEGACY_PROVINCES["31"] == "Hải Phòng"
    assert LEGACY_PROVINCES["48"] == "Đà Nẵng"
    assert LEGACY_PROVINCES["79"] == "TP. Hồ Chí Minh"
    assert LEGACY_PROVINCES["96"] == "Cà Mau"
    for gap in ("03", "05", "07", "09", "13", "16", "18", "21", "97", "00"):
        assert gap not in LEGACY_PROVINCES


def test_legacy_province_table_matches_the_admin_unit_library() -> None:
    from vietnamadminunits.database.main import get_data

    rows = get_data(fields=["provinceCode"], table="admin_units_legacy")
    assert {r["provinceCode"] for r in rows} == set(LEGACY_PROVINCES)


# ----------------------------------------------------------------- CCCD

VALID = "079085001234"  # TP HCM, male, born 1985


def test_valid_cccd_has_no_reasons() -> None:
    assert check_cccd(VALID) == []
    assert check_cccd(VALID, sex="M", birth_year=1985) == []
    assert check_cccd("001301012345", sex="Nữ", birth_year=2001) == []
    assert check_cccd("  096199123456  ") == []


def test_decode_cccd() -> None:
    info = decode_cccd("001301012345")
    assert info == CccdInfo(
        province_code="001",
        province_name="Hà Nội",
        sex="F",
        century=2000,
        year_2digits=1,
        birth_year=2001,
        serial="012345",
    )
    assert decode_cccd("079085001234") is not None
    assert decode_cccd("79085001234") is None
    assert decode_cccd("07908500123A") is None


@pytest.mark.parametrize(
    ("digit", "century", "sex"),
    [
        ("0", 1900, "M"),
        ("1", 1900, "F"),
        ("2", 2000, "M"),
        ("3", 2000, "F"),
        ("4", 2100, "M"),
        ("5", 2100, "F"),
        ("6", 2200, "M"),
        ("7", 2200, "F"),
        ("8", 2300, "M"),
        ("9", 2300, "F"),
    ],
)
def test_digit_4_encodes_century_and_sex(digit: str, century: int, sex: str) -> None:
    info = decode_cccd(f"001{digit}99000000")
    assert info is not None
    assert (info.century, info.sex, info.birth_year) == (century, sex, century + 99)


@pytest.mark.parametrize(
    "value", ["", "07908500123", "0790850012345", "07908500123A", "079 085 001 234", "０７９"]
)
def test_cccd_must_be_12_digits(value: str) -> None:
    reasons = check_cccd(value)
    assert len(reasons) == 1
    assert "12 digits" in reasons[0]


@pytest.mark.parametrize("code", ["000", "003", "097", "099", "100", "400", "963"])
def test_cccd_unknown_province(code: str) -> None:
    reasons = check_cccd(code + "085001234")
    assert reasons == [f"digits 1-3 ({code}) are not a known birth-registration province code"]


def test_cccd_sex_mismatch_names_digit_4() -> None:
    assert check_cccd("079185001234", sex="M") == ["digit 4 says female but the record says male"]
    assert check_cccd(VALID, sex="2") == ["digit 4 says male but the record says female"]
    assert check_cccd(VALID, sex="female") == ["digit 4 says male but the record says female"]


def test_cccd_undetermined_or_unknown_record_sex_is_not_compared() -> None:
    assert check_cccd(VALID, sex="O") == []
    assert check_cccd(VALID, sex="3") == []
    assert check_cccd(VALID, sex="") == []
    assert check_cccd(VALID, sex="unknown") == []


def test_cccd_birth_year_mismatch_names_the_digits() -> None:
    assert check_cccd(VALID, birth_year=1986) == [
        "digits 5-6 say a birth year ending in 85 but the record says 1986"
    ]
    assert check_cccd(VALID, birth_year=2085) == [
        "digit 4 says born in the 1900s but the record says 2085"
    ]
    both = check_cccd(VALID, sex="F", birth_year=2001)
    assert len(both) == 3
    assert any(r.startswith("digit 4 says male") for r in both)
    assert any(r.startswith("digit 4 says born in the 1900s") for r in both)
    assert any(r.startswith("digits 5-6") for r in both)


def test_cccd_future_birth_year() -> None:
    reasons = check_cccd("001400000000")  # 2100s
    assert len(reasons) == 1
    assert "digits 4-6 (400)" in reasons[0] and "future" in reasons[0]


def test_cccd_province_and_sex_both_reported() -> None:
    reasons = check_cccd("003185001234", sex="M")
    assert len(reasons) == 2
    assert reasons[0].startswith("digits 1-3 (003)")
    assert reasons[1].startswith("digit 4 says female")


@st.composite
def cccd_parts(draw: st.DrawFn) -> tuple[str, str, int]:
    province = draw(st.sampled_from(sorted(CCCD_PROVINCE_CODES)))
    year = draw(st.integers(min_value=1900, max_value=THIS_YEAR))
    sex = draw(st.sampled_from(["M", "F"]))
    serial = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    digit = (year // 100 - 19) * 2 + (1 if sex == "F" else 0)
    return f"{province}{digit}{year % 100:02d}{serial}", sex, year


@given(cccd_parts())
def test_cccd_built_from_valid_parts_validates_and_decodes(parts: tuple[str, str, int]) -> None:
    value, sex, year = parts
    assert check_cccd(value, sex=sex, birth_year=year) == []
    info = decode_cccd(value)
    assert info is not None
    assert (info.sex, info.birth_year, info.province_code) == (sex, year, value[:3])


@given(cccd_parts(), st.integers(min_value=1900, max_value=THIS_YEAR))
def test_cccd_wrong_birth_year_is_always_caught(parts: tuple[str, str, int], other: int) -> None:
    value, _, year = parts
    if other != year:
        assert check_cccd(value, birth_year=other) != []


# ----------------------------------------------------------------- CMND, BHXH


def test_cmnd() -> None:
    assert check_cmnd("123456789") == []
    assert check_cmnd(" 023456789 ") == []
    assert check_cmnd(VALID) == []
    assert check_cmnd("003085001234") == [
        "digits 1-3 (003) are not a known birth-registration province code"
    ]
    for bad in ("12345678", "1234567890", "12345678X", ""):
        reasons = check_cmnd(bad)
        assert len(reasons) == 1 and "9 or 12 digits" in reasons[0]


def test_bhxh() -> None:
    assert check_bhxh("0123456789") == []
    for bad in ("012345678", "01234567890", "012345678A", "DN40123456"):
        reasons = check_bhxh(bad)
        assert len(reasons) == 1 and "social-insurance number" in reasons[0]


# ----------------------------------------------------------------- BHYT

CARD = "DN4790123456789"


def test_valid_bhyt_cards() -> None:
    assert check_bhyt(CARD) == []
    assert check_bhyt("TE1010123456789") == []
    assert check_bhyt("hn2960123456789") == []  # typed in lower case
    assert check_bhyt("GD5310123456789") == []


def test_decode_bhyt() -> None:
    assert decode_bhyt(CARD) == BhytInfo("DN", 4, "79", "0123456789")
    assert decode_bhyt("dn4790123456789") == BhytInfo("DN", 4, "79", "0123456789")
    assert decode_bhyt("DN479012345678") is None
    assert decode_bhyt("D14790123456789") is None


def test_bhyt_categories_include_the_documented_codes() -> None:
    for code in ("DN", "HT", "TE", "HS", "GD", "CN", "HN", "BT", "QN"):
        assert code in BHYT_CATEGORIES
    assert all(len(c) == 2 and c.isupper() for c in BHYT_CATEGORIES)


def test_bhyt_wrong_length() -> None:
    assert check_bhyt("DN479012345678") == [
        "the health-insurance card code must be 15 characters, got 14"
    ]


def test_bhyt_wrong_shape() -> None:
    reasons = check_bhyt("DN47901234567AB")
    assert len(reasons) == 1 and "2 letters followed by 13 digits" in reasons[0]


def test_bhyt_unknown_category_names_characters_1_2() -> None:
    assert check_bhyt("ZZ4790123456789") == [
        "characters 1-2 (ZZ) are not a known participant category"
    ]


@pytest.mark.parametrize("level", ["0", "6", "9"])
def test_bhyt_benefit_level(level: str) -> None:
    assert check_bhyt(f"DN{level}790123456789") == [
        f"character 3 (benefit level {level}) must be 1 to 5"
    ]


def test_bhyt_unknown_province_names_characters_4_5() -> None:
    assert check_bhyt("DN4030123456789") == ["characters 4-5 (03) are not a known province code"]


def test_bhyt_several_faults_reported_together() -> None:
    assert len(check_bhyt("ZZ0000123456789")) == 3


@given(
    st.sampled_from(sorted(BHYT_CATEGORIES)),
    st.integers(min_value=1, max_value=5),
    st.sampled_from(sorted(LEGACY_PROVINCES)),
    st.text(alphabet="0123456789", min_size=10, max_size=10),
)
def test_bhyt_built_from_valid_parts(cat: str, level: int, prov: str, bhxh: str) -> None:
    card = f"{cat}{level}{prov}{bhxh}"
    assert check_bhyt(card) == []
    assert decode_bhyt(card) == BhytInfo(cat, level, prov, bhxh)
    assert check_bhxh(bhxh) == []


# ----------------------------------------------------------------- facility codes


def test_facility_code() -> None:
    assert check_facility_code("01929") == []
    assert check_facility_code("79024") == []
    assert check_facility_code("96001") == []
    assert check_facility_code("0192") == ["the facility code must be 5 characters, got 4"]
    assert check_facility_code("0A929") == [
        "the facility code must be 2 digits and 3 letters or digits, got '0A929'"
    ]
    assert check_facility_code("03001") == [
        "characters 1-2 (03) of the facility code are not a known province code"
    ]


# ----------------------------------------------------------------- one_digit_apart


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("079085001234", "079085001235", True),  # one substitution
        ("079085001234", "079085002134", True),  # adjacent transposition
        ("079085001234", "079085001234", False),  # identical
        ("079085001234", "079085001243", True),
        ("079085001234", "079085004231", False),  # non-adjacent swap
        ("079085001234", "079085001299", False),  # two substitutions
        ("079085001234", "07908500123", False),  # different length
        ("12", "21", True),
        ("11", "11", False),
        ("123", "132", True),
        ("123", "321", False),
    ],
)
def test_one_digit_apart(a: str, b: str, expected: bool) -> None:
    assert one_digit_apart(a, b) is expected
    assert one_digit_apart(b, a) is expected


@given(st.text(alphabet="0123456789", min_size=1, max_size=15), st.data())
def test_one_substitution_is_one_apart(s: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(s) - 1))
    d = data.draw(st.sampled_from([c for c in "0123456789" if c != s[i]]))
    assert one_digit_apart(s, s[:i] + d + s[i + 1 :])
    assert not one_digit_apart(s, s)
