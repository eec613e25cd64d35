"""Tests for the normalisation of names, dates, sex, phones and addresses."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.identity.normalize import (
    OLD_MOBILE_PREFIXES,
    SURNAME_KEYS,
    SURNAMES,
    Address,
    NameParts,
    PartialDate,
    clean_text,
    current_units,
    decode_keystrokes,
    fold_key,
    is_form_difference,
    is_syllable,
    name_key,
    name_keys,
    normalize_address,
    normalize_name,
    normalize_phone,
    normalize_sex,
    order_free_key,
    parse_date,
    split_name,
    token_key,
)

# ----------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Nguyễn Thị Hòa", "Nguyễn Thị Hoà"),
        ("Nguyễn Thị Hoà", "Nguyễn Thị Hoà"),
        ("lê thị thủy", "Lê Thị Thuỷ"),
        ("Trần Văn Khỏe", "Trần Văn Khoẻ"),
        ("Phạm Thị Thúy", "Phạm Thị Thuý"),
        ("Võ Hòa Bình", "Võ Hoà Bình"),
        ("ĐẶNG VĂN HOÀNG", "Đặng Văn Hoàng"),  # closed syllable: same in both styles
        ("Bùi  Quý   Thuyền", "Bùi Quý Thuyền"),  # qu, uyê
        ("Ngô Thị Mùa", "Ngô Thị Mùa"),  # ua: tone on the first vowel
        ("Hồ Thị Ngoãn", "Hồ Thị Ngoãn"),
        ("trương khuỷu", "Trương Khuỷu"),
        ("Giáp Văn Gìa", "Giáp Văn Già"),  # gi + a: tone on a
        ("Lò Văn Người", "Lò Văn Người"),
        ("h'hen niê", "H'Hen Niê"),
        ("", ""),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_normalize_name_composes_decomposed_input() -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Hòa")
    assert decomposed != "Nguyễn Thị Hòa"
    result = normalize_name(decomposed)
    assert result == "Nguyễn Thị Hoà"
    assert unicodedata.is_normalized("NFC", result)


def test_old_and_new_placement_compare_equal() -> None:
    for old, new in [("hòa", "hoà"), ("thủy", "thuỷ"), ("khỏe", "khoẻ"), ("lòe", "loè")]:
        assert normalize_name(old) == normalize_name(new) == new.capitalize()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Nguyễn Văn Đức", "nguyen van duc"),
        ("  ĐỖ   thị  Hòa ", "do thi hoa"),
        ("Trương Thị Thuỷ", "truong thi thuy"),
        ("H'Hen Niê", "hhen nie"),
        ("Lê-Văn Ân", "le van an"),
        ("Phạm Thị Ư", "pham thi u"),
    ],
)
def test_name_key(raw: str, key: str) -> None:
    assert name_key(raw) == key


VIET_TEXT = st.text(
    alphabet=st.sampled_from(
        list("aăâbcdđeêghiklmnoôơpqrstuưvxyAĂÂĐÊÔƠƯ '-.")
        + list("àáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ")
        + ["\u0300", "\u0301", "\u0309", "\u0303", "\u0323", "\t"]
    ),
    max_size=40,
)


@given(VIET_TEXT)
def test_name_key_is_idempotent_and_accent_free(raw: str) -> None:
    key = name_key(raw)
    assert name_key(key) == key
    assert key.isascii()
    assert key == key.lower()
    assert "  " not in key and key == key.strip()
    assert name_key(normalize_name(raw)) == key


@given(VIET_TEXT)
def test_normalize_name_is_idempotent(raw: str) -> None:
    once = normalize_name(raw)
    assert normalize_name(once) == once


def test_surname_table() -> None:
    assert len(SURNAMES) >= 100
    for s in ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Vũ", "Võ", "Đặng", "Lý"):
        assert s in SURNAMES
    assert "nguyen" in SURNAME_KEYS and "dang" in SURNAME_KEYS
    assert "van" not in SURNAME_KEYS and "thi" not in SURNAME_KEYS


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("Nguyễn Văn An", NameParts("Nguyễn", "Văn", "An")),
        ("Nguyễn Thị Minh Khai", NameParts("Nguyễn", "Thị Minh", "Khai")),
        ("Trần Hưng", NameParts("Trần", "", "Hưng")),
        ("Văn An Nguyễn", NameParts("Nguyễn", "Văn", "An")),  # family moved last
        ("Thị Minh Khai Nguyễn", NameParts("Nguyễn", "Thị Minh", "Khai")),
        ("An Nguyễn Văn", NameParts("Nguyễn", "Văn", "An")),  # given name first
        ("An Văn Nguyễn", NameParts("Nguyễn", "Văn", "An")),  # the whole name reversed
        ("Thúy Minh Thị Chu", NameParts("Chu", "Thị Minh", "Thuý")),
        ("Văn Thị Nguyễn", NameParts("Nguyễn", "Văn", "Thị")),  # both markers: as before
        ("An Nguyen", NameParts("Nguyen", "", "An")),  # unaccented surname
        ("Nguyễn Văn Hoàng", NameParts("Nguyễn", "Văn", "Hoàng")),  # given = surname word
        ("Lê Hoàng", NameParts("Lê", "", "Hoàng")),
        ("Hoàng Văn Lê", NameParts("Hoàng", "Văn", "Lê")),
        ("Ksor H'Mai Niê", NameParts("Ksor", "H'Mai", "Niê")),  # unknown: keep order
        ("An", NameParts("", "", "An")),
        ("   ", NameParts("", "", "")),
        ("nguyễn thị hòa", NameParts("Nguyễn", "Thị", "Hoà")),
    ],
)
def test_split_name(raw: str, parts: NameParts) -> None:
    assert split_name(raw) == parts


# ----------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("1985-03-07", "1985-03-07"),
        ("1985-3-7", "1985-03-07"),
        ("1985-03", "1985-03"),
        ("07/03/1985", "1985-03-07"),
        ("7/3/1985", "1985-03-07"),
        ("07-03-1985", "1985-03-07"),
        ("07.03.1985", "1985-03-07"),
        ("19850307", "1985-03-07"),
        ("198503071430", "1985-03-07"),
        ("198503070000", "1985-03-07"),
        ("198503000000", "1985-03"),
        ("198500000000", "1985"),
        ("19850300", "1985-03"),
        ("1985", "1985"),
        ("03/1985", "1985-03"),
        ("3/1985", "1985-03"),
        (" 29/02/2000 ", "2000-02-29"),
    ],
)
def test_parse_date(raw: str, iso: str) -> None:
    assert parse_date(raw).iso() == iso


def test_partial_date_fields() -> None:
    assert parse_date("198503000000") == PartialDate(1985, 3, None)
    assert parse_date("1985") == PartialDate(1985)
    assert PartialDate(2001, 1, 2).iso() == "2001-01-02"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("31/02/2020", "day 31 does not exist in 02/2020"),
        ("29/02/1900", "day 29 does not exist"),
        ("2020-13-01", "month 13 does not exist"),
        ("00/2020", "month 0 does not exist"),
        ("20200231", "day 31 does not exist"),
        ("198500070000", "day is given without a month"),
        ("198503072460", "time 24:60 does not exist"),
        ("0000", "year 0 is outside"),
        ("12/31/2020", "month 31 does not exist"),  # month-first is not accepted
        ("", "not a recognised date"),
        ("hôm qua", "not a recognised date"),
        ("1985030", "not a recognised date"),
        ("07/03-1985", "not a recognised date"),
        ("2020-01-01T10:00", "not a recognised date"),
    ],
)
def test_parse_date_rejects(raw: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_date(raw)


@given(st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(2999, 12, 31)))
def test_parse_date_round_trips_every_real_date(d: dt.date) -> None:
    forms = (d.isoformat(), d.strftime("%d/%m/%Y"), f"{d:%Y%m%d}", f"{d:%Y%m%d}0000")
    for text in forms:
        assert parse_date(text).iso() == d.isoformat()


def test_parse_date_year_bounds() -> None:
    with pytest.raises(ValueError, match="year 1799 is outside"):
        parse_date("1799")
    with pytest.raises(ValueError, match="year 3000 is outside"):
        parse_date("3000-01-01")


# ----------------------------------------------------------------- sex


@pytest.mark.parametrize(
    ("raw", "sex"),
    [
        ("M", "M"),
        ("m", "M"),
        ("male", "M"),
        ("MALE", "M"),
        ("Nam", "M"),
        ("1", "M"),
        (1, "M"),
        ("F", "F"),
        ("female", "F"),
        ("Nữ", "F"),
        ("NỮ", "F"),
        (unicodedata.normalize("NFD", "nữ"), "F"),
        ("Nu", "F"),
        ("2", "F"),
        (2, "F"),
        ("3", "O"),
        ("other", "O"),
        (" o ", "O"),
        ("", None),
        (None, None),
        ("unknown", None),
        ("4", None),
        ("x", None),
    ],
)
def test_normalize_sex(raw: str | int | None, sex: str | None) -> None:
    assert normalize_sex(raw) == sex


# ----------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0912345678", "+84912345678"),
        ("0912 345 678", "+84912345678"),
        ("0912.345.678", "+84912345678"),
        ("84912345678", "+84912345678"),
        ("+84 912 345 678", "+84912345678"),
        ("+84 (0) 912 345 678", "+84912345678"),
        ("0084912345678", "+84912345678"),
        ("912345678", "+84912345678"),
        ("01662345678", "+84362345678"),  # Viettel 0166 -> 036
        ("0121 234 5678", "+84792345678"),  # MobiFone 0121 -> 079
        ("0127-234-5678", "+84812345678"),  # VinaPhone 0127 -> 081
        ("0188 234 5678", "+84582345678"),  # Vietnamobile 0188 -> 058
        ("01992345678", "+84592345678"),  # Gmobile 0199 -> 059
        ("+841662345678", "+84362345678"),
        ("024 3825 1234", "+842438251234"),  # Hà Nội landline
        ("028 3829 1234", "+842838291234"),  # TP HCM landline
        ("+1 650 253 0000", "+16502530000"),
    ],
)
def test_normalize_phone(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw", ["", "   ", "12345", "091234567", "09123456789", "0912abc678", "+84 000 000 000", "++"]
)
def test_normalize_phone_rejects(raw: str) -> None:
    assert normalize_phone(raw) is None


def test_old_mobile_prefix_table() -> None:
    assert len(OLD_MOBILE_PREFIXES) == 21
    assert OLD_MOBILE_PREFIXES["162"] == "32"
    assert OLD_MOBILE_PREFIXES["169"] == "39"
    assert len(set(OLD_MOBILE_PREFIXES.values())) == 21
    for old, new in OLD_MOBILE_PREFIXES.items():
        assert normalize_phone(f"0{old}2345678") == f"+84{new}2345678"


# ----------------------------------------------------------------- addresses


def test_current_address_is_resolved() -> None:
    assert normalize_address("12 Lê Lợi, Phường Hoàn Kiếm, Hà Nội") == Address(
        province_code="01",
        province_name="Thành phố Hà Nội",
        commune_code="00070",
        commune_name="Phường Hoàn Kiếm",
        street="12 Lê Lợi",
    )
    a = normalize_address("Phường Bến Thành, TP Hồ Chí Minh")
    assert (a.province_code, a.commune_code, a.legacy) == ("79", "26743", False)


def test_legacy_address_is_converted_to_the_current_units() -> None:
    a = normalize_address("Phường 1, Quận 3, TP HCM")
    assert a.legacy is True
    assert (a.province_code, a.commune_code, a.commune_name) == ("79", "27154", "Phường Bàn Cờ")


def test_legacy_address_of_a_merged_province() -> None:
    a = normalize_address("Xã Tân Hồng, Huyện Bình Giang, Tỉnh Hải Dương")
    assert a.legacy is True
    assert (a.province_code, a.province_name) == ("31", "Thành phố Hải Phòng")


def test_split_ward_gives_candidates_not_a_guess() -> None:
    a = normalize_address("Số 1 Tràng Tiền, Phường Tràng Tiền, Quận Hoàn Kiếm, Hà Nội")
    assert a.province_code == "01"
    assert a.commune_code is None and a.commune_name is None
    assert a.commune_candidates == ("00070", "00082")
    assert a.street == "Số 1 Tràng Tiền"


def test_district_without_ward_stops_at_the_province() -> None:
    a = normalize_address("Quận Hoàn Kiếm, Hà Nội")
    assert (a.province_code, a.commune_code, a.legacy) == ("01", None, True)


def test_abolished_province_alone() -> None:
    a = normalize_address("Tỉnh Hải Dương")
    assert (a.province_code, a.commune_code, a.legacy) == ("31", None, True)


@pytest.mark.parametrize("raw", ["", "   ", "abc xyz", "123 đường không tên"])
def test_unresolvable_address_is_all_none(raw: str) -> None:
    assert normalize_address(raw) == Address(None, None, None, None, None)


def test_current_units_maps_legacy_codes() -> None:
    a = current_units("79", "27160")  # Phường 1, Quận 3 (legacy code)
    assert (a.province_code, a.commune_code, a.legacy) == ("79", "27154", True)
    merged = current_units("30")  # Hải Dương merged into Hải Phòng
    assert (merged.province_code, merged.commune_code) == ("31", None)
    split = current_units("01", "00079")  # Phường Tràng Tiền: split
    assert split.commune_code is None and split.commune_candidates == ("00070", "00082")


def test_current_units_unknown_codes() -> None:
    assert current_units("99", "12345") == Address(None, None, None, None, None)
    assert current_units("03") == Address(None, None, None, None, None)
    unknown_ward = current_units("01", "99999")
    assert (unknown_ward.province_code, unknown_ward.commune_code) == ("01", None)


def test_every_current_province_code_is_one_of_the_34() -> None:
    the_34 = {
        *("01", "04", "08", "11", "12", "14", "15", "19", "20", "22", "24", "25", "31"),
        *("33", "37", "38", "40", "42", "44", "46", "48", "51", "52", "56", "66", "68"),
        *("75", "79", "80", "82", "86", "91", "92", "96"),
    }
    assert len(the_34) == 34
    from lienthong.identity.identifiers import LEGACY_PROVINCES

    for code in LEGACY_PROVINCES:
        assert current_units(code).province_code in the_34, code


# ----------------------------------------------------------------- data-entry noise in names

# Syllables of Vietnamese names, written out for these tests (new tone placement): family,
# middle and given names of every region, with each rhyme type (open, closed by a stop,
# diphthongs, triphthongs, qu/gi onsets).
_REAL_TEXT = """
An Anh Ánh Ân Bảo Bắc Bích Bình Bá Bạch Cảnh Cường Chi Chính Chiến Chung Công Cúc Dân
Diệp Diệu Dung Dũng Duy Duyên Dương Đan Đào Đạt Điệp Định Đông Đức Gấm Giang Hà Hải Hạnh
Hào Hậu Hiền Hiếu Hiệp Hoa Hoà Hoài Hoàn Hoàng Hồng Huệ Hùng Hưng Hương Hường Huy Huyền
Huỳnh Khang Khánh Khoa Khôi Khuê Kiên Kiều Kim Lan Lâm Lệ Liên Liễu Linh Loan Lộc Long
Luân Lực Lương Ly Lý Mai Mạnh Minh My Mỹ Nam Nga Ngân Nghĩa Ngọc Nguyên Nguyệt Nhàn Nhân
Nhật Nhi Nhung Như Oanh Phát Phong Phúc Phụng Phước Phương Phượng Quang Quân Quế Quốc
Quyên Quyết Quý Sang Sâm Sơn Sương Tài Tâm Tân Thạch Thái Thắm Thắng Thanh Thành Thảo Thi
Thịnh Thoa Thơ Thu Thuận Thuý Thuỷ Thư Thương Tiến Tiên Toàn Trà Trang Trâm Trí Trinh
Trung Trúc Truyền Tú Tuấn Tuệ Tùng Tuyết Tường Uyên Vân Văn Việt Vinh Vũ Vy Xuân Yên Yến
Thị Nguyễn Trần Lê Phạm Võ Đặng Bùi Đỗ Hồ Ngô Đinh Lưu Trương Khổng Ông Mông Nông Giáp
Gia Nghiêm Khúc Ứng Ưng Uông Oánh Khuyến Huấn Ngoãn Khoẻ Chuyên Giỏi Nhuận Dậu Tuyền
Xuyến Chiêu Kiểm Đoàn Ngoạn Loát Thuyền Khuya Ngoan Hoạch Khuếch Quỳnh Giao Gấm Hợi Cương
Nhường Ngừng Khương Tưởng Đương Hướng Chương Lượng Trượng Sửu Bưởi Tươi Mười Người Chúc
"""
REAL_SYLLABLES = _REAL_TEXT.split()
# Surnames whose every spelling has a sign other than a final hỏi (see the weak-sign test).
MARKED_SURNAMES = ("Nguyễn", "Trần", "Lê", "Phạm", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô",
                   "Đinh", "Trương", "Lưu", "Dương", "Hoàng", "Vũ", "Đào", "Lâm")  # fmt: skip
# Names of ethnic minorities and foreigners, spelt with letters that are keystrokes in some
# input method: none of them is residue.
OTHER_NAMES = (
    "Ksor", "Niê", "H'Hen", "Ayun", "Rcom", "Siu", "Mlô", "Êban", "Byă", "Kpă", "Rmah",
    "Bkrông", "Y Mơr", "Kdăm", "Nay", "Rơ Châm", "Ea Bar", "H'Bar Ksor", "Y Wơn",
    "Y Bar H'Mai", "John", "Mary", "Peter", "David", "Lisa", "Anna",
)  # fmt: skip

_TONE_KEYS = {  # combining mark -> (Telex, VNI, VIQR)
    "\u0301": ("s", "1", "'"),
    "\u0300": ("f", "2", "`"),
    "\u0309": ("r", "3", "?"),
    "\u0303": ("x", "4", "~"),
    "\u0323": ("j", "5", "."),
}
_QUALITY_KEYS = {  # letter -> (Telex, VNI, VIQR)
    "â": ("aa", "a6", "a^"), "ê": ("ee", "e6", "e^"), "ô": ("oo", "o6", "o^"),
    "ă": ("aw", "a8", "a("), "ơ": ("ow", "o7", "o+"), "ư": ("uw", "u7", "u+"),
    "đ": ("dd", "d9", "dd"),
}  # fmt: skip


def _keystrokes(name: str, scheme: int) -> str:
    """`name` as typed with the input method off: 0 Telex, 1 VNI, 2 VIQR. Telex and VNI put
    the tone key at the end of the word, VIQR right after the vowel that carries it."""
    out = []
    for word in name.split():
        typed, tone = "", ""
        for ch in unicodedata.normalize("NFC", word):
            parts = unicodedata.normalize("NFD", ch)
            mark = "".join(c for c in parts if c in _TONE_KEYS)
            letter = unicodedata.normalize("NFC", "".join(c for c in parts if c not in _TONE_KEYS))
            if letter.lower() in _QUALITY_KEYS:
                keys = _QUALITY_KEYS[letter.lower()][scheme]
                letter = keys.upper() if letter.isupper() else keys
            typed += letter
            if mark:
                tone = _TONE_KEYS[mark][scheme]
                if scheme == 2:
                    typed += tone
        out.append(typed if scheme == 2 else typed + tone)
    return " ".join(out)


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def test_keystroke_encoder_of_the_tests() -> None:
    assert _keystrokes("Nguyễn Thị Thắng", 0) == "Nguyeenx Thij Thawngs"
    assert _keystrokes("Đường", 0) == "DDuwowngf"
    assert _keystrokes("Nguyễn Trần", 1) == "Nguye6n4 Tra6n2"
    assert _keystrokes("Nguyễn Trần Thị", 2) == "Nguye^~n Tra^`n Thi."


@pytest.mark.parametrize(
    ("typed", "display"),
    [
        ("Nguyeenx Thij Thawngs", "Nguyễn Thị Thắng"),  # Telex
        ("Traanf", "Trần"),
        ("dduwowngf", "Đường"),
        ("Nguyeexn Vawn Hoafng", "Nguyễn Văn Hoàng"),  # tone key before the final consonant
        ("NGUYEENX THIJ LANF", "Nguyễn Thị Làn"),
        ("truwowng thij huwowngf", "Trương Thị Hường"),
        ("Hoawcj", "Hoặc"),
        ("Nguye6n4 Va8n Tra6n2", "Nguyễn Văn Trần"),  # VNI
        ("d9a8ng5 thi5 thu3y", "Đặng Thị Thuỷ"),
        ("Thu3y Ngo5c", "Thuỷ Ngọc"),  # VNI tone right after its vowel
        ("Nguye^~n Tra^`n", "Nguyễn Trần"),  # VIQR
        ("Le^ Thi. Ha?i", "Lê Thị Hải"),
        ("ddo^~ thi. hu+o+ng", "Đỗ Thị Hương"),
        ("Pha.m Thi. Thu+", "Phạm Thị Thư"),
        ("Nguyen Thi Thuys", "Nguyen Thi Thuý"),  # only one word typed with Telex
    ],
)
def test_keystrokes_are_decoded(typed: str, display: str) -> None:
    assert normalize_name(typed) == display
    assert name_key(typed) == name_key(display)
    assert is_form_difference(typed, display)


def test_decode_keystrokes_word_by_word() -> None:
    assert decode_keystrokes("Nguyeenx") == "nguyễn"
    assert decode_keystrokes("Nguye6n4") == "nguyễn"
    assert decode_keystrokes("Nguye^~n") == "nguyễn"
    assert decode_keystrokes("dduwowngf") == "đường"
    assert decode_keystrokes("Thuy") == "Thuy"  # already a syllable: unchanged, case kept
    assert decode_keystrokes("Ksor") == "Ksor"  # decodes to no syllable ("ksỏ")
    assert decode_keystrokes("Nguyeenxx") == "Nguyeenxx"
    # VNI keys on a mistyped syllable: the letters without the digits
    assert decode_keystrokes("Hi6ng2") == "hing"
    assert decode_keystrokes("2Ho6ng") == "2Ho6ng"  # not a word typed with VNI keys


def test_real_names_are_never_decoded() -> None:
    """Every syllable of the list is plausible as written, without its diacritics and in
    capitals, so neither the display form nor the key of a real name changes."""
    for syllable in REAL_SYLLABLES:
        plain = _ascii(syllable)
        assert is_syllable(syllable) and is_syllable(plain), syllable
        for form in (syllable, plain, plain.upper(), syllable.upper()):
            assert decode_keystrokes(form) == form, form
        assert normalize_name(syllable) == syllable
        assert normalize_name(plain.upper()) == plain
        assert name_key(syllable) == name_key(plain)
    whole = " ".join(REAL_SYLLABLES)
    assert normalize_name(whole) == whole
    assert normalize_name(_ascii(whole)) == _ascii(whole)


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_minority_and_foreign_names_are_not_decoded(name: str) -> None:
    assert normalize_name(name) == name
    assert name_key(name) == fold_key(name)


def test_not_syllables() -> None:
    for word in ("Nguyeenx", "Thij", "Ksor", "Mlô", "ngyuen", "cing", "kan", "quu", "Thu3y",
                 "ắ", "hoàt", "thỏc"):  # fmt: skip
        assert not is_syllable(word), word  # "hoàt", "thỏc": a stop takes sắc or nặng only
    for word in ("Ngoãn", "khuỷu", "Quý", "gì", "giường", "Khuya", "oanh", "Ưng", "y", "Yến"):
        assert is_syllable(word), word


def test_weak_signs_need_another_word_with_keystrokes() -> None:
    """A final "r" is how Central Highlands names end, and a final "." may close an
    abbreviation: alone they are kept; beside clear keystrokes they are tones."""
    assert normalize_name("Thuyr") == "Thuyr"
    assert normalize_name("Nguyeenx Thij Thuyr") == "Nguyễn Thị Thuỷ"
    assert normalize_name("Nguyễn Văn A.") == "Nguyễn Văn A."
    assert normalize_name("Nguye^~n Va(n A.") == "Nguyễn Văn Ạ"
    assert normalize_name("Ea Bar") == "Ea Bar"


@given(
    st.sampled_from(MARKED_SURNAMES),
    st.lists(st.sampled_from(REAL_SYLLABLES), min_size=1, max_size=3),
    st.sampled_from((0, 1, 2)),
    st.booleans(),
)
def test_typed_without_input_method_gives_the_same_key(
    surname: str, rest: list[str], scheme: int, upper: bool
) -> None:
    name = " ".join([surname, *rest])
    typed = _keystrokes(name, scheme)
    if upper:
        typed = typed.upper()
    assert name_key(typed) == name_key(name), typed
    assert normalize_name(typed) == normalize_name(name), typed
    assert is_form_difference(typed, name)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Mĩ", "Mỹ"), ("Lí", "Lý"), ("Quí", "Quý"), ("Kì", "Kỳ"), ("Tí", "Tý"), ("Hi", "Hy"),
        ("Si", "Sy"), ("Vi", "Vy"), ("Nguyễn Thị Mĩ Linh", "Nguyen Thi My Linh"),
        ("Lí Thị Kì", "LÝ THỊ KỲ"),
    ],
)  # fmt: skip
def test_i_y_spellings_share_a_key_but_keep_their_display(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)
    assert is_form_difference(a, b)
    assert normalize_name(a) != normalize_name(b) or a.upper() == b.upper()
    assert normalize_name("Mĩ") == "Mĩ" and normalize_name("Mỹ") == "Mỹ"


@pytest.mark.parametrize(
    ("a", "b"),
    [("Thi", "Thy"), ("Chi", "Chy"), ("Linh", "Lynh"), ("Kim", "Kym"), ("Lan", "Lang")],
)
def test_i_y_folding_is_only_for_open_syllables_after_those_consonants(a: str, b: str) -> None:
    assert token_key(a) != token_key(b)


def test_invisible_characters_and_lookalikes_are_folded() -> None:
    plain = "Đặng Văn An"
    for noisy in (
        "Ðặng Văn An",  # U+00D0 Icelandic eth
        "Ɖặng Văn An",  # U+0189 African D
        "\ufeffĐặng Văn An",
        "Đặng\u200b Văn\u00a0An",
        "Đặng  Văn \u2003 An ",
        "Đặ\u00adng Văn An",
        unicodedata.normalize("NFD", "Đặng Văn An"),
        "Đặ\u200dng Văn \u2060An",
    ):
        assert normalize_name(noisy) == plain, repr(noisy)
        assert name_key(noisy) == "dang van an", repr(noisy)
        assert is_form_difference(noisy, plain)
    assert clean_text("a\u200bb\ufeffc") == "abc"
    assert name_key("ðào") == "dao"


def test_tone_placement_variants_share_key_and_display() -> None:
    for old, new in [("Nguyễn Thị Hòa", "Nguyễn Thị Hoà"), ("Lê Thủy", "Lê Thuỷ"),
                     ("Khỏe", "Khoẻ"), ("Thúy", "Thuý")]:  # fmt: skip
        assert normalize_name(old) == new
        assert is_form_difference(old, new)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Nguyễn Văn An", "nguyen van an", True),
        ("Nguyễn Văn An", "An Nguyễn Văn", True),  # name order
        ("Nguyễn Văn An", "Văn An Nguyễn", True),
        ("Nguyễn  Văn   An", "NGUYỄN VĂN AN", True),
        ("Nguyeenx Vawn An", "Nguyễn Văn An", True),
        ("Trần Thị Mĩ", "Tran Thi My", True),
        ("Nguyễn Văn An", "Nguyễn Văn Anh", False),  # a letter more
        ("Nguyễn Văn An", "Nguyễn An", False),  # a word missing
        ("Nguyễn Văn An", "Nguyễn Văn Ân", True),  # diacritics only
        ("Lê Thị Thu", "Lê Thị Thư Thu", False),
        ("", "", False),
        ("Nguyễn Văn An", "", False),
    ],
)
def test_is_form_difference(a: str, b: str, same: bool) -> None:
    assert is_form_difference(a, b) is same
    assert is_form_difference(b, a) is same
    assert (order_free_key(a) == order_free_key(b) and bool(order_free_key(a))) is same


def test_name_keys_and_split_see_the_decoded_name() -> None:
    assert split_name("Nguyeenx Thij Thawngs") == NameParts("Nguyễn", "Thị", "Thắng")
    assert name_keys("Thij Thawngs Nguyeenx") == ("nguyen", "thi", "thang", "thi thang nguyen")
    assert name_keys("Nguyễn Thị Mĩ")[2] == name_keys("Nguyen Thi My")[2] == "my"


def test_place_names_keep_their_spelling_in_fold_key() -> None:
    assert fold_key("Phường Vị Thanh") == "phuong vi thanh"
    assert name_key("Phường Vị Thanh") == "phuong vy thanh"
    assert fold_key("Xã Ea Bar, Huyện Sông Hinh") == "xa ea bar huyen song hinh"
    assert fold_key("Xã A Rooi") == "xa a rooi"


KEYSTROKE_TEXT = st.text(
    alphabet=st.sampled_from(
        list("abcdeghiklmnopqrstuvwxyzADEOUW0123456789^(+'`?~.- ")
        + list("ăâđêôơưĐÐàảãáạằẳẵắặầẩẫấậ")
        + ["\u00a0", "\u200b", "\ufeff", "\u0301", "\u0323"]
    ),
    max_size=30,
)


@given(KEYSTROKE_TEXT)
def test_normalising_twice_is_normalising_once(raw: str) -> None:
    once = normalize_name(raw)
    assert normalize_name(once) == once
    key = name_key(raw)
    assert name_key(key) == key
    assert key.isascii() and key == key.lower() and "  " not in key
    assert name_key(once) == key
    assert fold_key(fold_key(raw)) == fold_key(raw)


def test_current_address_whose_ward_is_named_like_an_old_district() -> None:
    """ "Phường An Dương" is a current ward of Hải Phòng and "Quận An Dương" an old district
    with a "Phường Lê Lợi": the street "Lê Lợi" must not turn the address into that ward."""
    current = normalize_address("Số 152 Lê Lợi, Phường An Dương, Thành phố Hải Phòng")
    assert (current.province_code, current.commune_name, current.legacy) == (
        "31",
        "Phường An Dương",
        False,
    )
    assert current.street == "Số 152 Lê Lợi"
    legacy = normalize_address("Phường Lê Lợi, Quận An Dương, Thành phố Hải Phòng")
    assert legacy.legacy and legacy.province_code == "31"


@pytest.mark.parametrize(
    "raw",
    [
        "Số 207 Quang Trung, Phường An Dương, Thành phố Hải Phòng",
        "So 207 Quang Trung, Phuong An Duong, Thanh pho Hai Phong",
    ],
)
def test_a_street_named_like_an_old_ward_does_not_make_a_legacy_address(raw: str) -> None:
    """The legacy parser reads the street "Quang Trung" as the old Phường Quang Trung
    and infers its district (Hồng Bàng), which the address never names: it is the current
    ward it names."""
    got = normalize_address(raw)
    assert (got.province_code, got.commune_code, got.legacy) == ("31", "11581", False)
    # a legacy address that names its district is still read as one
    old = normalize_address("Số 279 Bà Triệu, Phường 2, Thị xã Cai Lậy, Tỉnh Tiền Giang")
    assert old.legacy and old.province_code == "82" and old.commune_code is not None
    old = normalize_address("12 Nguyễn Trãi, P. 2, Q. 5, TP. Hồ Chí Minh")
    assert old.legacy and old.province_code == "79" and old.commune_code is not None


def test_no_name_of_the_synthetic_tables_is_decoded() -> None:
    """The generator's name tables as more test data (the check itself owes them nothing)."""
    from lienthong.synth import names

    tables = (names.SURNAMES, names.MIDDLE_MALE_OLDER, names.MIDDLE_MALE_YOUNGER,
              names.MIDDLE_FEMALE_OLDER, names.MIDDLE_FEMALE_YOUNGER, names.GIVEN_MALE,
              names.GIVEN_FEMALE)  # fmt: skip
    words = {w for table in tables for name in table for w in name.split()}
    assert len(words) > 300
    for word in sorted(words):
        plain = _ascii(word)
        assert is_syllable(word) and is_syllable(plain), word
        assert (
            decode_keystrokes(plain) == plain and decode_keystrokes(plain.upper()) == plain.upper()
        )
        assert normalize_name(word) == word and normalize_name(plain) == plain
