"""Frequency tables of Vietnamese personal names for the synthetic population.

Record linkage is only tested honestly when names collide as often as they do
in Vietnam, where four people in ten are called Nguyễn and a handful of middle
and given names cover most of the population. These tables are approximations
written for this project from published surname statistics (the commonly
quoted shares: Nguyễn about 38 %, Trần 11 %, Lê 9.5 %, Phạm 7 %, ...) and from
the usual rankings of popular given names; they are not copied from any data
set and carry no personal data.

Every string is NFC and uses the modern ("new style") tone-mark placement,
where the mark sits on the main vowel of a final ``oa``/``oe``/``uy``
(``Hoà``, ``Thuỷ``, ``Khoẻ``). The noise generator produces the old style
(``Hòa``, ``Thủy``) from these.
"""

from __future__ import annotations

import unicodedata

# Surname -> share of the population in percent. The first fourteen follow the
# published shares; Hoàng/Huỳnh and Vũ/Võ are the same name split between the
# North and the South, so their combined share is what the statistics give.
_MAIN_SURNAMES: dict[str, float] = {
    "Nguyễn": 38.0,
    "Trần": 11.0,
    "Lê": 9.5,
    "Phạm": 7.0,
    "Hoàng": 3.0,
    "Huỳnh": 2.0,
    "Phan": 4.5,
    "Vũ": 2.1,
    "Võ": 1.8,
    "Đặng": 2.1,
    "Bùi": 2.0,
    "Đỗ": 1.4,
    "Hồ": 1.3,
    "Ngô": 1.3,
    "Dương": 1.0,
    "Lý": 0.5,
}

# The long tail, roughly in decreasing frequency; it shares what is left of
# 100 % with Zipf-like weights.
_TAIL_SURNAMES: tuple[str, ...] = (
    "Đào", "Đoàn", "Trương", "Trịnh", "Đinh", "Lâm", "Mai", "Lương", "Hà", "Cao",
    "Vương", "Phùng", "Tô", "Tạ", "Lưu", "Châu", "Quách", "Thái", "Kiều", "La",
    "Triệu", "Chu", "Tăng", "Thân", "Từ", "Mạc", "Nông", "Lò", "Hứa", "Diệp",
    "Lục", "Khúc", "Âu", "Mã", "Tôn", "Nghiêm", "Giang", "Kim", "Khổng", "Đàm",
    "Doãn", "Lại", "Tống", "Quan", "Ninh", "Hầu", "Thạch", "Vi", "Lã", "Bạch",
    "Ông", "Phí", "Cù", "Đồng", "Ung", "Sầm", "Văn", "Lục", "Hàn", "Trang",
)  # fmt: skip


def _zipf(items: tuple[str, ...], total: float, exponent: float = 1.0) -> dict[str, float]:
    """Spread ``total`` over ``items`` by rank, the usual shape of name frequencies."""
    raw = [1.0 / (rank + 1) ** exponent for rank in range(len(items))]
    scale = total / sum(raw)
    out: dict[str, float] = {}
    for item, w in zip(items, raw, strict=True):
        out[item] = out.get(item, 0.0) + w * scale
    return out


SURNAMES: dict[str, float] = {
    **_MAIN_SURNAMES,
    **_zipf(_TAIL_SURNAMES, 100.0 - sum(_MAIN_SURNAMES.values()), exponent=0.6),
}

# Middle names. People born before about 1990 overwhelmingly carry Văn / Thị;
# younger cohorts pick from a wider set, so there are two tables per sex.
MIDDLE_MALE_OLDER: dict[str, float] = {
    "Văn": 62, "Hữu": 6, "Đức": 6, "Minh": 5, "Quốc": 3, "Công": 3, "Đình": 3,
    "Xuân": 2, "Ngọc": 2, "Quang": 2, "Thanh": 2, "Trọng": 1.5, "Anh": 1, "Tiến": 1,
    "Mạnh": 0.5,
}  # fmt: skip
MIDDLE_MALE_YOUNGER: dict[str, float] = {
    "Văn": 22, "Minh": 14, "Đức": 8, "Quốc": 6, "Hoàng": 5, "Gia": 6, "Tuấn": 4,
    "Anh": 4, "Thành": 4, "Hữu": 4, "Bảo": 5, "Trọng": 3, "Duy": 3, "Nhật": 3,
    "Đăng": 3, "Quang": 3, "Công": 2, "Hải": 2, "Trung": 2, "Việt": 2, "Khánh": 2,
}  # fmt: skip
MIDDLE_FEMALE_OLDER: dict[str, float] = {
    "Thị": 72, "Ngọc": 5, "Thu": 4, "Kim": 4, "Thanh": 3, "Hồng": 3, "Bích": 2,
    "Phương": 2, "Minh": 1.5, "Xuân": 1.5, "Mai": 1, "Lan": 1,
}  # fmt: skip
MIDDLE_FEMALE_YOUNGER: dict[str, float] = {
    "Thị": 28, "Ngọc": 10, "Thu": 6, "Phương": 6, "Bảo": 6, "Khánh": 5, "Minh": 5,
    "Thanh": 5, "Kim": 4, "Hoài": 3, "Quỳnh": 3, "Diệu": 3, "Mỹ": 3, "Hồng": 3,
    "Như": 3, "Thảo": 2, "Gia": 2, "Hà": 2, "Yến": 1, "Cẩm": 1,
}  # fmt: skip

# Given names, in rough order of popularity; weights are Zipf-like by rank.
_GIVEN_MALE: tuple[str, ...] = (
    "Anh", "Huy", "Minh", "Hùng", "Dũng", "Tuấn", "Nam", "Hải", "Long", "Đức",
    "Sơn", "Thắng", "Quân", "Hiếu", "Trung", "Tùng", "Khoa", "Phúc", "Bảo", "Khang",
    "Thành", "Duy", "Cường", "Việt", "Phong", "Hoàng", "Tâm", "Tài", "Thịnh", "Lâm",
    "Quang", "Vinh", "Khánh", "Hưng", "Toàn", "Tiến", "Lộc", "Nghĩa", "Phát", "Đạt",
    "Kiên", "Bình", "Thanh", "Tú", "Vũ", "Hoà", "Thái", "Tín", "Trí", "Nhân",
    "Đông", "Hào", "Hậu", "Khải", "Kiệt", "Lực", "Mạnh", "Nguyên", "Nhật", "Phương",
    "Quý", "Sang", "Tân", "Thiện", "Thông", "Thuận", "Toản", "Trọng", "Trường", "Tường",
    "Vĩnh", "Xuân", "Hà", "Công", "Chiến", "Chính", "Cảnh", "Danh", "Dương", "Định",
    "Đăng", "Điền", "Giang", "Hiển", "Hoan", "Huân", "Khôi", "Khiêm", "Lân", "Linh",
    "Luân", "Mẫn", "Ngọc", "Phú", "Quốc", "Quyết", "Sỹ", "Tạo", "Thạch", "Thọ",
    "Tình", "Triều", "Trực", "Tuyên", "Uy", "Vượng", "Vương", "An", "Ân", "Bách",
    "Chí", "Doanh", "Đại", "Đoàn", "Gia", "Hiệp", "Huynh", "Kha", "Khương", "Lam",
    "Lễ", "Lương", "Nhất", "Phi", "Phước", "Quế", "Sinh", "Tấn", "Thao", "Thuần",
    "Tịnh", "Tuệ", "Vỹ", "Bằng", "Cương", "Hoạt", "Huấn", "Khoái", "Thuỵ", "Lợi",
    "Hiền", "Hợp", "Hoà Bình", "Minh Khang", "Gia Bảo", "Minh Anh", "Đức Anh", "Bảo Nam",
    "Thanh Tùng", "Anh Tuấn", "Quốc Bảo", "Hải Đăng", "Nhật Minh", "Tấn Phát", "Thiên",
    "Trác", "Tuân", "Tuyển", "Ước", "Viễn", "Yên", "Bắc", "Cần", "Diệp", "Dinh",
    "Đoan", "Giáp", "Hạ", "Hạnh", "Hoè", "Học", "Khoát", "Kỳ", "Lạc", "Liêm",
)  # fmt: skip
_GIVEN_FEMALE: tuple[str, ...] = (
    "Anh", "Linh", "Trang", "Hương", "Hà", "Hằng", "Thảo", "Ngọc", "Huyền", "Lan",
    "Mai", "Nhung", "Phương", "Thuỷ", "Hạnh", "Dung", "Hiền", "Hoa", "Loan", "Nga",
    "Oanh", "Quỳnh", "Vân", "Yến", "Nhi", "Vy", "My", "Thư", "Hân", "Trâm",
    "Chi", "Giang", "Hồng", "Liên", "Ly", "Nguyệt", "Nhàn", "Phượng", "Tâm", "Thanh",
    "Thu", "Thuý", "Thuỳ", "Tuyết", "Uyên", "Xuân", "Ánh", "Bích", "Châu", "Diễm",
    "Diệp", "Duyên", "Gấm", "Hải", "Hậu", "Hiên", "Hoài", "Hoà", "Huệ", "Hường",
    "Khánh", "Khuyên", "Kiều", "Lệ", "Lý", "Mơ", "Mỹ", "Na", "Ngân", "Nhạn",
    "Nhã", "Nhiên", "Như", "Quyên", "Sen", "Tiên", "Thắm", "Thơ", "Thoa", "Thương",
    "Tình", "Trinh", "Tú", "Vi", "Ý", "An", "Đào", "Hạ", "Lành", "Lụa",
    "Lương", "Mến", "Minh", "Mận", "Ngà", "Nhài", "Phúc", "Quế", "Sương", "Thìn",
    "Thuận", "Trà", "Trúc", "Tuệ", "Xoan", "Hảo", "Hiếu", "Khanh", "Kim", "Lam",
    "Lài", "Luyến", "Miên", "Cúc", "Đan", "Dương", "Hằng Nga", "Hoàn", "Huế", "Khuê",
    "Lê", "Liễu", "Lộc", "Mỵ", "Nương", "Phấn", "Sáu", "Tươi", "Tuyền", "Vui",
    "Bảo Anh", "Ngọc Anh", "Phương Anh", "Minh Anh", "Khánh Linh", "Gia Hân", "Bảo Ngọc",
    "Thanh Hương", "Thu Trang", "Ngọc Hân", "Tường Vy", "Khánh Vy", "An Nhiên", "Thảo Vy",
    "Hoàng Yến", "Quỳnh Anh", "Diệu Linh", "Minh Châu", "Bảo Trâm", "Thuỳ Dương",
    "Thoả", "Xuyến", "Kiều Oanh", "Doan", "Điệp", "Hoè", "Lựu", "Nhuỵ", "Quý", "Thi",
)  # fmt: skip

GIVEN_MALE: dict[str, float] = _zipf(_GIVEN_MALE, 100.0, exponent=0.7)
GIVEN_FEMALE: dict[str, float] = _zipf(_GIVEN_FEMALE, 100.0, exponent=0.7)


def _check_nfc() -> None:
    """Fail at import if a table entry is not NFC: comparisons downstream rely on it."""
    tables = (
        SURNAMES,
        MIDDLE_MALE_OLDER,
        MIDDLE_MALE_YOUNGER,
        MIDDLE_FEMALE_OLDER,
        MIDDLE_FEMALE_YOUNGER,
        GIVEN_MALE,
        GIVEN_FEMALE,
    )
    for table in tables:
        for name in table:
            if unicodedata.normalize("NFC", name) != name:  # pragma: no cover
                raise ValueError(f"name table entry not NFC: {name!r}")


_check_nfc()
