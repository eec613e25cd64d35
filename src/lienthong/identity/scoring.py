"""Fellegi-Sunter pair scoring in plain Python, one record at a time.

`lienthong link` scores millions of pairs in DuckDB through Splink; the master person
index must score the handful of candidates of one arriving Patient inside a write
transaction, where starting DuckDB per record would cost more than the write. This module
evaluates the *same* comparisons as the linkage model (`lienthong.identity.linkage`) on the
same normalised features, with the m/u probabilities of a saved Splink model, so the
platform and the batch linker agree on what a match is (a test checks this pair by pair
against Splink's own predictions).

Splink's arithmetic is reproduced exactly: the match weight is
``log2(prior / (1 - prior)) + sum(log2(m / u))`` over the comparison levels the pair falls
in (a null level counts 0), plus for an exact family-name match the term-frequency
adjustment ``log2(u_exact) - log2(tf(value))``; the probability is ``2^w / (1 + 2^w)``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from lienthong.identity.identifiers import (
    check_bhxh,
    check_bhyt,
    check_cccd,
    decode_bhyt,
    one_digit_apart,
)
from lienthong.identity.normalize import (
    birth_parts,
    current_units,
    name_key,
    name_keys,
    normalize_sex,
    parse_date,
)

__all__ = [
    "BHXH_SYSTEM",
    "CCCD_SYSTEM",
    "DEFAULT_MODEL_PATH",
    "BHYT_SYSTEM",
    "PairScore",
    "PairScorer",
    "birth_features",
    "births_compatible",
    "conflicting",
    "contradicted",
    "identifiers_conflict",
    "name_words",
    "names_differ",
    "own_cccd",
    "patient_features",
    "patient_from_record",
    "patient_row",
    "record_features",
    "population_surname_frequencies",
]

DEFAULT_MODEL_PATH = Path(__file__).parent / "data" / "linkage_model.json"
CCCD_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/citizen_id"
BHYT_SYSTEM = "http://fhir.ehealth.gov.vn/core/sid/insurance_number"
BHXH_SYSTEM = "http://fhir.lienthong.vn/sid/bhxh"

_M_U_CLAMP_MIN = 1e-300
_LEVEL_NOT_OBSERVED = "level not observed"

Features = Mapping[str, Any]


# --------------------------------------------------------------------------- features


def patient_row(patient: Mapping[str, Any]) -> dict[str, str]:
    """A FHIR Patient as a record in the layout `lienthong link` reads.

    Names come from ``name[0].text`` when given (sources write the whole name in their
    own order), otherwise family then given names; identifiers by their VN Core system;
    the place from ``address[0]``: the VN Core administrative-address extension's
    ``state`` and ``ward`` codes, or ``state``/``city`` when they hold province (2 digits)
    and commune (5 digits) codes, otherwise its text for the address parser.
    """
    row = dict.fromkeys(
        ("source", "full_name", "birth_date", "sex", "cccd", "bhxh", "bhyt", "phone", "address",
         "province_code", "commune_code"),
        "",
    )  # fmt: skip
    row["record_id"] = str(patient.get("id") or "")
    names = patient.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    text = name.get("text")
    if not text:
        text = " ".join([name.get("family") or "", *(name.get("given") or [])])
    row["full_name"] = " ".join(str(text).split())
    row["birth_date"] = str(patient.get("birthDate") or "")
    row["sex"] = {"male": "M", "female": "F"}.get(str(patient.get("gender")), "")
    for ident in patient.get("identifier") or []:
        system, value = ident.get("system"), str(ident.get("value") or "")
        if system == CCCD_SYSTEM and not row["cccd"]:
            row["cccd"] = value
        elif system == BHXH_SYSTEM and not row["bhxh"]:
            row["bhxh"] = value
        elif system == BHYT_SYSTEM and not row["bhyt"]:
            row["bhyt"] = value
    for telecom in patient.get("telecom") or []:
        if telecom.get("system") == "phone" and telecom.get("value"):
            row["phone"] = str(telecom["value"])
            break
    addresses = patient.get("address") or []
    if addresses:
        addr = addresses[0]
        state, city = str(addr.get("state") or ""), str(addr.get("city") or "")
        units = _unit_codes(addr)
        if units.get("state"):
            state, city = units["state"], units.get("ward", "")
        if len(state) == 2 and state.isdigit():
            row["province_code"] = state
            if len(city) == 5 and city.isdigit():
                row["commune_code"] = city
        else:
            parts = [*(addr.get("line") or []), city, str(addr.get("district") or ""), state]
            row["address"] = str(addr.get("text") or ", ".join(p for p in parts if p))
    return row


ADMINISTRATIVE_ADDRESS = (
    "http://fhir.ehealth.gov.vn/core/StructureDefinition/extension-administrative-address"
)


def _unit_codes(address: Mapping[str, Any]) -> dict[str, str]:
    """Unit codes of an address in the VN Core administrative-address extension
    (``state``, ``district``, ``ward``), by part."""
    found: dict[str, str] = {}
    for ext in address.get("extension") or []:
        if ext.get("url") != ADMINISTRATIVE_ADDRESS:
            continue
        for part in ext.get("extension") or []:
            codings = (part.get("valueCodeableConcept") or {}).get("coding") or []
            if codings and codings[0].get("code"):
                found[str(part.get("url"))] = str(codings[0]["code"])
    return found


def patient_from_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A source record (the `lienthong link` / `lienthong synth` layout) as a FHIR Patient,
    keeping the source's spelling: the inverse of `patient_row`. Dates are re-written at
    their known precision (FHIR accepts no other form); an unreadable date is left out."""

    def text(key: str) -> str:
        value = row.get(key)
        return "" if value is None else str(value).strip()

    patient: dict[str, Any] = {"resourceType": "Patient"}
    if text("record_id"):
        patient["id"] = text("record_id")
    identifiers = [
        {"system": system, "value": text(col)}
        for col, system in (("cccd", CCCD_SYSTEM), ("bhxh", BHXH_SYSTEM), ("bhyt", BHYT_SYSTEM))
        if text(col)
    ]
    if identifiers:
        patient["identifier"] = identifiers
    if text("full_name"):
        patient["name"] = [{"use": "official", "text": text("full_name")}]
    if text("phone"):
        patient["telecom"] = [{"system": "phone", "value": text("phone")}]
    sex = normalize_sex(text("sex") or None)
    if sex in ("M", "F"):
        patient["gender"] = "male" if sex == "M" else "female"
    if text("birth_date"):
        with contextlib.suppress(ValueError):
            patient["birthDate"] = parse_date(text("birth_date")).iso()
    address: dict[str, Any] = {}
    if text("address"):
        address["text"] = text("address")
    if text("province_code"):
        address["state"] = text("province_code")
        if text("commune_code"):
            address["city"] = text("commune_code")
    if address:
        patient["address"] = [address]
    return patient


def patient_features(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The linkage model's normalised features of one Patient (`linkage.FEATURE_COLUMNS`)."""
    return record_features(patient_row(patient))


def record_features(row: Mapping[str, Any]) -> dict[str, Any]:
    """Matching features of one record, as `linkage.prepare` computes them for a file
    (a test holds the two to the same values on a generated population)."""

    def text(key: str) -> str:
        value = row.get(key)
        return "" if value is None else str(value).strip()

    family, middle, given, full = name_keys(text("full_name"))
    year, month, day = birth_features(text("birth_date"))
    sex = normalize_sex(text("sex") or None)
    sex = sex if sex in ("M", "F") else None
    cccd = text("cccd")
    # only a CCCD consistent with this record's own sex and birth year identifies it: a
    # child's record carrying the mother's number fails on the birth year
    valid_cccd = own_cccd(cccd, sex, year)
    bhxh = text("bhxh")
    if not bhxh or check_bhxh(bhxh):
        bhxh = ""
        bhyt = text("bhyt")
        info = decode_bhyt(bhyt) if bhyt and not check_bhyt(bhyt) else None
        if info is not None:
            bhxh = info.bhxh_number  # the card code embeds the BHXH number
    province: str | None = None
    commune: str | None = None
    if text("province_code"):
        province, commune = _place_from_codes(text("province_code"), text("commune_code"))
    elif text("address"):
        province, commune = _place_from_address(text("address"))
    phone = text("phone")
    return {
        "record_id": text("record_id"),
        "source": text("source") or None,
        "family_key": family,
        "middle_key": middle,
        "given_key": given,
        "name_key": full,
        "birth_year": year,
        "birth_month": month,
        "birth_day": day,
        "sex": sex,
        "cccd": valid_cccd,
        "bhxh": bhxh or None,
        "phone": _phone(phone) if phone else None,
        "province": province,
        "commune": commune,
        "name_words": name_words(full),
    }


def own_cccd(cccd: str, sex: str | None, year: int | None) -> str | None:
    """The CCCD if it can be this record's own: its century, sex and birth-year digits
    agree with the record's sex and birth year, the year allowed to be off by one (a
    slip in the record's date, not another person: a mother's number on her child's
    record is still refused). None otherwise."""
    if not cccd or year is None:
        return None
    if any(not check_cccd(cccd, sex, y) for y in (year, year - 1, year + 1)):
        return cccd
    return None


def name_words(name_key: str | None) -> str | None:
    """The words of a name key in alphabetical order: the name whatever order it was
    written or split in."""
    return " ".join(sorted(name_key.split(" "))) if name_key else None


_DMY_SHORT = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{2})")


@functools.lru_cache(maxsize=1 << 16)
def birth_features(raw: str) -> tuple[int | None, int | None, int | None]:
    """Year, month and day of a birth date for matching: `normalize.birth_parts`, and
    also day-first dates with a two-digit year (22/3/92, 6.8.00), which hand-kept
    registers and forms write. The century is the latest that is not in the future (a
    person over a hundred written so is read a century late: the comparison of the
    birth year then fails, the rest still counts)."""
    parts = birth_parts(raw)
    if parts[0] is not None or not (m := _DMY_SHORT.fullmatch(raw.strip())):
        return parts
    year = 2000 + int(m.group(4))
    if year > _dt.date.today().year:
        year -= 100
    try:
        born = parse_date(f"{int(m.group(1)):02d}/{int(m.group(3)):02d}/{year:04d}")
    except ValueError:
        return parts
    return born.year, born.month, born.day


def _phone(raw: str) -> str | None:
    """The linker's own phone feature (see `linkage._phone`)."""
    from lienthong.identity.linkage import _phone as linker_phone

    return linker_phone(raw)


@functools.lru_cache(maxsize=1 << 16)
def _place_from_codes(province: str, commune: str) -> tuple[str | None, str | None]:
    """Current (province, commune) from codes that may be legacy (before 1 July 2025) or
    current: a pair found in the legacy tables is converted, otherwise taken as current."""
    legacy = current_units(province, commune or None)
    if legacy.commune_code or legacy.commune_candidates:
        return legacy.province_code, legacy.commune_code
    if commune:
        return province, commune
    return legacy.province_code or province, None


def _place_from_address(address: str) -> tuple[str | None, str | None]:
    """The linker's own reading of a written address (exact unit names first, then the
    address parser), so one arriving record is placed as a file of them would be."""
    from lienthong.identity.linkage import _place_from_address as linker_place

    return linker_place(address)


@functools.cache
def population_surname_frequencies() -> dict[str, float]:
    """Share of the population bearing each (folded) family name.

    Splink computes term frequencies from the data it links; one arriving record has no
    such data, so the index uses the national shares the synthetic population is drawn
    from (`lienthong.synth.names`: Nguyễn about 38 %, then a long tail).
    """
    from lienthong.synth.names import SURNAMES

    total = sum(SURNAMES.values())
    out: dict[str, float] = {}
    for surname, share in SURNAMES.items():
        key = name_key(surname)
        out[key] = out.get(key, 0.0) + share / total
    return out


# --------------------------------------------------------------------------- comparisons


def _eq(a: Any, b: Any) -> bool:
    """SQL equality: NULL on either side is not a match."""
    return a is not None and b is not None and a == b


def _words(name: Any) -> list[str]:
    return str(name).split(" ") if name is not None else []


def _name_part(col: str) -> Callable[[Features, Features], int]:
    def level(left: Features, right: Features) -> int:
        a, b = left.get(col), right.get(col)
        if a is None or b is None:
            return 0
        if a == b:
            return 1
        if JaroWinkler.similarity(a, b) >= 0.92:
            return 2
        if a in _words(right.get("name_key")) and b in _words(left.get("name_key")):
            return 3
        if DamerauLevenshtein.distance(a, b) <= 1:
            return 4
        wa, wb = left.get("name_words"), right.get("name_words")
        if wa is not None and wb is not None and DamerauLevenshtein.distance(wa, wb) <= 1:
            return 5
        return 6

    return level


def _exact(col: str) -> Callable[[Features, Features], int]:
    def level(left: Features, right: Features) -> int:
        a, b = left.get(col), right.get(col)
        if a is None or b is None:
            return 0
        return 1 if a == b else 2

    return level


def _identifier(col: str) -> Callable[[Features, Features], int]:
    def level(left: Features, right: Features) -> int:
        a, b = left.get(col), right.get(col)
        if a is None or b is None:
            return 0
        if a == b:
            return 1
        return 2 if DamerauLevenshtein.distance(a, b) <= 1 else 3

    return level


def _parts(f: Features) -> tuple[Any, Any, Any]:
    return f.get("birth_year"), f.get("birth_month"), f.get("birth_day")


def _sex(left: Features, right: Features) -> int:
    a, b = left.get("sex"), right.get("sex")
    if a is None or b is None:
        return 0
    if a == b:
        return 1
    lw, rw = _words(left.get("name_key")), _words(right.get("name_key"))
    agree = all(
        left.get(c) in rw and right.get(c) in lw and left.get(c) is not None
        and right.get(c) is not None
        for c in ("given_key", "family_key")
    )  # fmt: skip
    return 2 if agree else 3


def _birth(left: Features, right: Features) -> int:
    yl, ml, dl = _parts(left)
    yr, mr, dr = _parts(right)
    if yl is None or yr is None:
        return 0
    same_year = yl == yr
    if same_year and _eq(ml, mr) and _eq(dl, dr):
        return 1
    if same_year and _eq(ml, dr) and _eq(dl, mr):
        return 2
    if same_year and (
        ml is None
        or mr is None
        or (ml == 1 and dl == 1)
        or (mr == 1 and dr == 1)
        or (ml == mr and (dl is None or dr is None or dl == 1 or dr == 1))
    ):
        return 3
    near = abs(yl - yr) == 1
    if near and (ml is None or mr is None or ml == mr) and (dl is None or dr is None or dl == dr):
        return 4
    if (
        None not in (ml, mr, dl, dr)
        and DamerauLevenshtein.distance(f"{yl:04d}{ml:02d}{dl:02d}", f"{yr:04d}{mr:02d}{dr:02d}")
        == 1
    ):
        return 5
    if same_year:
        return 6
    return 7 if near else 8


def _place(left: Features, right: Features) -> int:
    if left.get("province") is None or right.get("province") is None:
        return 0
    if _eq(left.get("commune"), right.get("commune")):
        return 1
    return 2 if left["province"] == right["province"] else 3


# output column -> (number of levels including the null level, evaluator)
_COMPARISONS: dict[str, tuple[int, Callable[[Features, Features], int]]] = {
    "given_key": (7, _name_part("given_key")),
    "family_key": (7, _name_part("family_key")),
    "middle_key": (3, _exact("middle_key")),
    "birth_date": (9, _birth),
    "sex": (4, _sex),
    "cccd": (4, _identifier("cccd")),
    "bhxh": (4, _identifier("bhxh")),
    "phone": (4, _identifier("phone")),
    "place": (4, _place),
}


# --------------------------------------------------------------------------- coherence
#
# What can never be one person, however strong a chain of pairs: the cannot-link rules of
# `lienthong link`'s clustering (written there in SQL, held equal to these by a test) and
# of the person index. Records of one person do differ, but by known kinds of error only.


def _placeholder(f: Features) -> tuple[Any, Any, Any]:
    """Birth parts with a 1st read as "day unknown" and 1 January as "day and month
    unknown": forms that need a full date get one for people known by their birth year
    or month alone."""
    y, m, d = _parts(f)
    if (m, d) == (1, 1):
        return y, None, None
    return (y, m, None) if d == 1 else (y, m, d)


def _agrees(a: Any, b: Any) -> bool:
    """Equal, or unknown on either side."""
    return a is None or b is None or a == b


def births_compatible(left: Features, right: Features) -> bool:
    """Whether two birth dates can be one person's: equal as far as both are known
    (a missing year, month or day agrees with anything, and so does a 1st, or 1 January
    for the day and month), or apart by one known error: day and month swapped, one
    wrong or two adjacent swapped digits of ``YYYYMMDD`` (compared to the precision both
    have), or the year off by one with the day and month equal. A swap is judged as far
    as both are known too: 11 August against "1 November" (the day unknown) is 8 November
    swapped."""
    yl, ml, dl = _parts(left)
    yr, mr, dr = _parts(right)
    if yl is None or yr is None:
        return True
    if yl == yr and _eq(ml, dr) and _eq(dl, mr):  # swapped, the 1st or not
        return True
    yl, ml, dl = _placeholder(left)
    yr, mr, dr = _placeholder(right)
    if yl == yr and _agrees(ml, dr) and _agrees(dl, mr):
        return True  # swapped as far as both are known: "11/08" against "01/11" (day unknown)
    months = ml is not None and mr is not None
    days = months and dl is not None and dr is not None
    if abs(yl - yr) == 1 and (not months or ml == mr) and (not days or dl == dr):
        return True
    a, b = f"{yl:04d}", f"{yr:04d}"
    if months:
        a, b = f"{a}{ml:02d}", f"{b}{mr:02d}"
    if days:
        a, b = f"{a}{dl:02d}", f"{b}{dr:02d}"
    return DamerauLevenshtein.distance(a, b) <= 1


IDENTIFIER_COLUMNS = ("cccd", "bhxh")


def identifiers_conflict(left: Features, right: Features) -> bool:
    """Two different CCCDs, or two different BHXH numbers, not one mistyped or two
    adjacent swapped digits apart (the features hold only well-formed numbers)."""
    for col in IDENTIFIER_COLUMNS:
        a, b = left.get(col), right.get(col)
        if a and b and a != b and not one_digit_apart(a, b):
            return True
    return False


def conflicting(left: Features, right: Features) -> bool:
    """The two records can never be one person: their birth dates or their identifiers
    conflict (see `births_compatible`, `identifiers_conflict`)."""
    return identifiers_conflict(left, right) or not births_compatible(left, right)


def names_differ(left: Features, right: Features) -> bool:
    """The given names, or the family names, clearly differ: the comparison's last level
    (not equal, not close, not a word of the other name either way, more than one letter
    apart - "Lâm" typed "Lm" is a typo, not another person - and the names' words more
    than one letter apart)."""
    return any(_COMPARISONS[col][1](left, right) == 6 for col in ("given_key", "family_key"))


def contradicted(left: Features, right: Features) -> bool:
    """What keeps a shared identifier from linking two records on its own: a borrowed
    number (a relative's, a namesake's) comes with another name or another birth date."""
    return names_differ(left, right) or conflicting(left, right)


# --------------------------------------------------------------------------- the scorer


@dataclass(frozen=True)
class PairScore:
    """One pair's match probability and what each comparison found."""

    probability: float
    match_weight: float
    levels: dict[str, str] = field(default_factory=dict)  # comparison -> level label
    agree: tuple[str, ...] = ()
    disagree: tuple[str, ...] = ()
    given_differs: bool = False  # the given names clearly differ: never the same person


@dataclass(frozen=True)
class _Level:
    label: str
    weight: float  # log2(m/u); 0 for the null level
    tf_column: str | None
    tf_weight: float
    tf_min_u: float
    log2_u_exact: float


class PairScorer:
    """Scores pairs of feature dicts with a saved Splink model's parameters."""

    def __init__(
        self,
        model: Mapping[str, Any],
        term_frequencies: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        prior = float(model["probability_two_random_records_match"])
        self.prior_weight = math.log2(prior / (1 - prior))
        self.term_frequencies = (
            {"family_key": population_surname_frequencies()}
            if term_frequencies is None
            else term_frequencies
        )
        self.comparisons: list[tuple[str, Callable[[Features, Features], int], list[_Level]]]
        self.comparisons = []
        for comparison in model["comparisons"]:
            name = comparison["output_column_name"]
            if name not in _COMPARISONS:
                raise ValueError(f"the model's comparison {name!r} has no Python scorer")
            n_levels, evaluate = _COMPARISONS[name]
            raw = comparison["comparison_levels"]
            if len(raw) != n_levels or not raw[0].get("is_null_level"):
                raise ValueError(
                    f"the model's comparison {name!r} has {len(raw)} levels; the scorer "
                    f"implements {n_levels} with the null level first"
                )
            self.comparisons.append((name, evaluate, _levels(raw)))

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        term_frequencies: Mapping[str, Mapping[str, float]] | None = None,
    ) -> PairScorer:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")), term_frequencies)

    @classmethod
    @functools.cache
    def default(cls) -> PairScorer:
        """The scorer of the shipped linkage model."""
        if not DEFAULT_MODEL_PATH.exists():
            raise FileNotFoundError(
                f"no linkage model at {DEFAULT_MODEL_PATH}: the person index needs the "
                "shipped model (or set one with PairScorer.from_file)"
            )
        return cls.from_file(DEFAULT_MODEL_PATH)

    def weight(self, left: Features, right: Features) -> float:
        """The match weight alone (no explanation), for scoring many candidates."""
        total = self.prior_weight
        for _, evaluate, levels in self.comparisons:
            level = levels[evaluate(left, right)]
            total += level.weight + self._tf(level, left)
        return total

    def score(self, left: Features, right: Features) -> PairScore:
        total = self.prior_weight
        labels: dict[str, str] = {}
        agree: list[str] = []
        disagree: list[str] = []
        given_differs = False
        for name, evaluate, levels in self.comparisons:
            index = evaluate(left, right)
            level = levels[index]
            total += level.weight + self._tf(level, left)
            labels[name] = level.label
            if index == 0:
                continue
            if index == len(levels) - 1:
                disagree.append(name)
                given_differs = given_differs or name == "given_key"
            else:
                agree.append(name)
        return PairScore(
            probability=probability(total),
            match_weight=total,
            levels=labels,
            agree=tuple(agree),
            disagree=tuple(disagree),
            given_differs=given_differs,
        )

    def _tf(self, level: _Level, left: Features) -> float:
        if level.tf_column is None:
            return 0.0
        value = left.get(level.tf_column)
        tf = self.term_frequencies.get(level.tf_column, {}).get(value) if value else None
        if tf is None:
            return 0.0
        return level.tf_weight * (level.log2_u_exact - math.log2(max(tf, level.tf_min_u)))


def probability(weight: float) -> float:
    """Match probability of a match weight (log2 Bayes factor)."""
    if weight > 1000:
        return 1.0
    odds = 2.0**weight
    return odds / (1.0 + odds)


def _levels(raw: list[dict[str, Any]]) -> list[_Level]:
    """Match weights per level, with Splink's defaults for parameters training left unset."""
    non_null = len(raw) - 1
    default_m = [0.05 / (non_null - 1)] * (non_null - 1) + [0.95]
    steps = [-5.0] if non_null == 2 else [-5 + i * 8 / (non_null - 2) for i in range(non_null - 1)]
    default_u = [m / 2.0**w for m, w in zip(default_m, [*steps, 10.0], strict=True)]
    exact_u = None
    levels: list[_Level] = []
    for i, lv in enumerate(raw):
        if lv.get("is_null_level"):
            levels.append(_Level(lv.get("label_for_charts", "null"), 0.0, None, 0.0, 0.0, 0.0))
            continue
        vector_value = non_null - i  # Splink numbers levels from the top down
        m = lv.get("m_probability")
        u = lv.get("u_probability")
        m = 1e-6 if m == _LEVEL_NOT_OBSERVED else (default_m[vector_value] if m is None else m)
        u = 1e-6 if u == _LEVEL_NOT_OBSERVED else (default_u[vector_value] if u is None else u)
        if exact_u is None:
            exact_u = float(u)  # the first non-null level is the exact match
        weight = math.log2(max(float(m), _M_U_CLAMP_MIN) / max(float(u), _M_U_CLAMP_MIN))
        tf_column = lv.get("tf_adjustment_column")
        levels.append(
            _Level(
                label=lv.get("label_for_charts", f"level {i}"),
                weight=weight,
                tf_column=tf_column,
                tf_weight=float(lv.get("tf_adjustment_weight", 1.0)),
                tf_min_u=float(lv.get("tf_minimum_u_value", 0.0)),
                log2_u_exact=math.log2(exact_u),
            )
        )
    return levels
