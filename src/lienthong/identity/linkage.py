"""Record linkage: which source records describe the same person.

Vietnamese records cannot be linked on the name alone: four people in ten are Nguyễn, a
handful of given names cover much of the population, households share surname, address
and phone, and twins share a birth date. Identifiers help but are partial and noisy (a
child is often recorded with the mother's CCCD; one digit is mistyped now and then).
Linking therefore runs in two passes:

1. a deterministic pass joins records sharing a *valid* CCCD (one whose century, sex and
   birth-year digits agree with the record's own sex and birth year, so a mother's number
   on her child's record is ignored) or a social-insurance (BHXH) number, unless the
   rest contradicts it: another given or family name, a birth date no known error
   explains (a namesake's or a relative's number, a child on a parent's card);
2. a probabilistic pass (Splink, Fellegi-Sunter on DuckDB) scores candidate pairs with
   comparisons written for this data: the given name is compared apart from the family
   name, the family name is term-frequency adjusted, birth dates tolerate a day/month
   swap, a year-only value, the year off by one and a mistyped digit, identifiers
   tolerate one mistyped digit or two swapped ones.

Before clustering, a weak record (no identifier, and a year alone or no place) whose links
reach namesakes that are not linked to each other keeps only a clearly stronger link, or
none (`_namesake_bridges`): otherwise it would join them. Edges of both passes are then
merged with connected components; a cluster then holding two
records that can never be one person (two CCCDs or BHXH numbers, birth dates no known
error explains, however the records were chained) is clustered again from its pairs,
heaviest first, never joining two groups that conflict (`_coherent`); the CCCDs of two
records scored as one person despite their numbers' disagreement are then disregarded
(`_disowned_numbers`: someone else's number on one of them). A second pass
then joins two clusters under the threshold (at least `SECOND_PASS_PROBABILITY`) when
each is the other's only candidate in the file and no source holds both (a source
keeps a person once): a name with a birth year alone, or a person who moved, with no
namesake around to be confused with (`_only_candidates`); the coherence step runs again.

Features come from `lienthong.identity.normalize` and `lienthong.identity.identifiers`,
so linkage sees the same normalised values as the rest of the platform.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa

from lienthong.identity import layouts
from lienthong.identity.identifiers import (
    check_bhxh,
    check_bhyt,
    decode_bhyt,
    one_digit_apart,
)
from lienthong.identity.normalize import (
    fold_key,
    name_keys,
    normalize_address,
    normalize_phone,
    normalize_sex,
)
from lienthong.identity.scoring import birth_features, name_words, own_cccd

__all__ = [
    "FEATURE_COLUMNS",
    "INPUT_COLUMNS",
    "MATCH_THRESHOLD",
    "REQUIRED_COLUMNS",
    "Linkage",
    "LinkageModel",
    "RecordsError",
    "link",
    "prepare",
    "read_records",
    "run_linkage",
    "save_model",
    "train",
]

MATCH_THRESHOLD = 0.95
"""Pairs scored at or above this match probability are linked. High on purpose: a false
merge shows one patient another's history, a missed link only splits a history."""

FEATURE_COLUMNS = (
    "record_id",
    "source",
    "family_key",
    "middle_key",
    "given_key",
    "name_key",
    "birth_year",
    "birth_month",
    "birth_day",
    "sex",
    "cccd",
    "bhxh",
    "phone",
    "province",
    "commune",
    "name_words",
)

Records: TypeAlias = "Iterable[Mapping[str, Any]] | str | Path | pa.Table"
"""A records CSV path, an Arrow table in the records layout, or rows as dicts."""


# --------------------------------------------------------------------------- features

REQUIRED_COLUMNS = ("record_id", "full_name", "birth_date")
"""Columns a records file must have (values may still be empty, except record_id)."""

INPUT_COLUMNS = layouts.RECORDS_COLUMNS
"""The records layout; columns other than `REQUIRED_COLUMNS` may be absent (read as empty)."""

PARALLEL_MIN_RECORDS = 50_000
"""Below this, normalising in one process beats starting workers."""

_CHUNK_RECORDS = 20_000
"""Values per batch handed to a worker."""


class RecordsError(ValueError):
    """The records cannot be linked as given (missing columns, duplicate ids, bad file)."""


def _check_columns(names: Iterable[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in set(names)]
    if missing:
        raise RecordsError(f"{where}: missing required column(s): {', '.join(missing)}")


def read_records(path: str | Path) -> pa.Table:
    """Read a records CSV into an Arrow table of strings (absent columns become empty).

    pyarrow's CSV reader is multi-threaded and an order of magnitude faster than the csv
    module on a million rows; every column is read as text so that "0912..." and
    "012345678901" keep their leading zeros.
    """
    import pyarrow.csv as pcsv

    path = Path(path)
    if not path.is_file():
        raise RecordsError(f"{path}: no such file")
    try:
        with path.open("rb") as fh:
            header = fh.readline().decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise RecordsError(f"{path}: not UTF-8 text") from None
    names = next(csv.reader([header]), [])
    _check_columns(names, str(path))
    try:
        table = pcsv.read_csv(
            path,
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        # pyarrow numbers columns from 0; name the column instead
        reason = re.sub(
            r"column #(\d+)",
            lambda m: (
                f"column {names[int(m.group(1))]!r}" if int(m.group(1)) < len(names) else m[0]
            ),
            reason,
        )
        raise RecordsError(f"{path}: {reason}") from None
    return _with_input_columns(table)


def _with_input_columns(table: pa.Table) -> pa.Table:
    empty = pa.array([""] * table.num_rows, pa.string())
    columns = [
        table.column(c).cast(pa.string()) if c in table.column_names else empty
        for c in INPUT_COLUMNS
    ]
    return pa.Table.from_arrays(columns, names=list(INPUT_COLUMNS))


def _as_table(records: Records) -> pa.Table:
    """Accept a records CSV path, an Arrow table of records, or rows as dicts."""
    if isinstance(records, str | Path):
        return read_records(records)
    if isinstance(records, pa.Table):
        _check_columns(records.column_names, "records")
        return _with_input_columns(records)
    rows = [{c: _text(r, c) for c in INPUT_COLUMNS} for r in records]
    return pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in INPUT_COLUMNS]))


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def _check_ids(ids: list[str]) -> None:
    seen: set[str] = set()
    for i, rid in enumerate(ids):
        if not rid:
            raise RecordsError(f"record {i + 1}: record_id is empty (every record needs one)")
        if rid in seen:
            raise RecordsError(f"record_id {rid!r} appears more than once (ids must be unique)")
        seen.add(rid)


# Normalisation is cached per distinct value: a million records hold far fewer distinct
# names, dates, phone numbers and places, and the normalisers (tone placement, the
# phone-number metadata, the address parser) are costly per call.


@functools.lru_cache(maxsize=256)
def _sex(raw: str) -> str | None:
    sex = normalize_sex(raw or None)
    return sex if sex in ("M", "F") else None


_PHONE_PUNCT = re.compile(r"[\s.\-()/]")
_VN_NATIONAL = re.compile(r"(?:\+84|84|0)([1-9]\d{8})")


_VN_MOBILE = re.compile(r"0[35789]\d{8}")


def _phone(raw: str) -> str | None:
    """A phone number as a matching feature: E.164 by `normalize_phone`; and a number
    shaped like a Vietnamese mobile (0 and 3, 5, 7, 8 or 9, then 8 digits, the leading 0
    possibly lost in a spreadsheet) that the numbering plan does not list, as written:
    two records agreeing on it agree whether or not it was ever allocated."""
    if not raw:
        return None
    # "+84 912 345 678", "84912345678" and "0912 345 678" are the same number to
    # `normalize_phone`; reduce them to one cache key before the costly validation.
    compact = _PHONE_PUNCT.sub("", raw)
    m = _VN_NATIONAL.fullmatch(compact)
    if m:
        compact = "0" + m.group(1)
    elif len(compact) == 9 and _VN_MOBILE.fullmatch("0" + compact):
        compact = "0" + compact
    return _phone_cached(compact)


@functools.lru_cache(maxsize=1 << 20)
def _phone_cached(compact: str) -> str | None:
    number = normalize_phone(compact)
    if number is None and _VN_MOBILE.fullmatch(compact):
        return "+84" + compact[1:]
    return number


@functools.cache
def _legacy_code_map() -> tuple[dict[str, str], dict[tuple[str, str], tuple[str, str | None]]]:
    """Legacy (province, ward) codes -> current (province, commune) codes, all at once.

    Built from the conversion tables of `vietnamadminunits` (the same tables
    `normalize.current_units` reads, which answers one pair at a time and parses unit
    names on each call: seconds per thousand pairs). A ward split between several
    current communes maps to its province only, as in `current_units`. The first dict
    maps legacy province codes to current ones.
    """
    from vietnamadminunits.converter import converter_2025 as conv
    from vietnamadminunits.database.main import get_data

    current, _ = _unit_index()
    province_code = {
        r["provinceKey"]: r["provinceCode"]
        for r in get_data(fields=["provinceKey", "provinceCode"], table="admin_units")
    }
    new_province = {old: new for new, olds in conv.DICT_PROVINCE.items() for old in olds}
    new_ward: dict[str, tuple[str, str]] = {}
    for prov, wards in conv.DICT_PROVINCE_WARD_NO_DIVIDED.items():
        for ward, olds in wards.items():
            for old in olds:
                new_ward[old] = (prov, ward)
    provinces: dict[str, str] = {}
    wards_map: dict[tuple[str, str], tuple[str, str | None]] = {}
    for r in get_data(
        fields=["provinceCode", "wardCode", "provinceKey", "districtKey", "wardKey"],
        table="admin_units_legacy",
    ):
        prov_key = new_province.get(r["provinceKey"])
        if prov_key is None or prov_key not in province_code:
            continue
        provinces[r["provinceCode"]] = province_code[prov_key]
        target = new_ward.get(f"{r['provinceKey']}_{r['districtKey']}_{r['wardKey']}")
        codes = current.get(target) if target else None
        wards_map[(r["provinceCode"], r["wardCode"])] = (
            codes if codes else (province_code[prov_key], None)
        )
    return provinces, wards_map


def _place_from_codes(province: str, commune: str) -> tuple[str | None, str | None]:
    """Current (province, commune) from a record's codes, which may be legacy or current.

    Exports carry either the pre-2025 codes or the current ones, both 2 + 5 digits. A pair
    found in the legacy tables is converted; otherwise the codes are taken as current
    (current communes often keep one absorbed ward's code, so both readings then agree).
    """
    provinces, wards = _legacy_code_map()
    if commune and (hit := wards.get((province, commune))):
        return hit
    if commune:
        return province, commune
    return provinces.get(province, province), None


def _unit_key(part: str) -> str:
    """Map "Phường Bình Thọ" and "Phuong Binh Tho" -> "phuongbinhtho", the library's key form."""
    return fold_key(part).replace(" ", "")


@functools.cache
def _unit_index() -> tuple[
    dict[tuple[str, str], tuple[str, str]], dict[tuple[str, str, str], tuple[str, str]]
]:
    """Exact unit names -> codes, from the `vietnamadminunits` tables.

    Current: (province, commune) -> current codes. Legacy: (province, district, ward) ->
    legacy codes (converted afterwards). Short names ("Bình Thọ") are indexed only where
    they are unique in their province.
    """
    from vietnamadminunits.database.main import get_data

    current: dict[tuple[str, str], tuple[str, str]] = {}
    for r in get_data(
        fields=[
            "provinceCode", "wardCode", "provinceKey", "provinceShortKey", "wardKey",
            "wardShortKey", "wardShortKeyDuplicated",
        ],
        table="admin_units",
    ):  # fmt: skip
        codes = (r["provinceCode"], r["wardCode"])
        for prov in {r["provinceKey"], r["provinceShortKey"]}:
            current[(prov, r["wardKey"])] = codes
            if not r["wardShortKeyDuplicated"]:
                current.setdefault((prov, r["wardShortKey"]), codes)
    legacy: dict[tuple[str, str, str], tuple[str, str]] = {}
    for r in get_data(
        fields=["provinceCode", "wardCode", "provinceKey", "provinceShortKey", "districtKey",
                "wardKey"],
        table="admin_units_legacy",
    ):  # fmt: skip
        for prov in {r["provinceKey"], r["provinceShortKey"]}:
            legacy[(prov, r["districtKey"], r["wardKey"])] = (r["provinceCode"], r["wardCode"])
    return current, legacy


@functools.lru_cache(maxsize=200_000)
def _place_from_address(address: str) -> tuple[str | None, str | None]:
    """Current (province, commune) from free text.

    Addresses written out in full ("..., Phường X, Quận Y, Thành phố Z" or "..., Xã X,
    Tỉnh Z") are looked up by their unit names, which is exact and a thousand times
    faster than the general parser; anything else (abbreviations, missing unit words)
    goes through `normalize_address`.
    """
    keys = [_unit_key(p) for p in address.split(",")]
    current, legacy = _unit_index()
    if len(keys) >= 3 and (hit := legacy.get((keys[-1], keys[-2], keys[-3]))):
        return _place_from_codes(*hit)
    if len(keys) >= 2 and (codes := current.get((keys[-1], keys[-2]))):
        return codes
    parsed = normalize_address(address)
    return parsed.province_code, parsed.commune_code


def _place(key: str) -> tuple[str | None, str | None]:
    province, commune, address = key.split("\x1f")
    if province:
        return _place_from_codes(province, commune)
    if address:
        return _place_from_address(address)
    return None, None


def _identifiers(
    rows: list[tuple[str, str | None, int | None, str, str]],
) -> list[tuple[str | None, str | None]]:
    """(valid CCCD, BHXH number) of each record, from (cccd, sex, year, bhxh, bhyt)."""
    out: list[tuple[str | None, str | None]] = []
    for cccd, sex, year, bhxh, bhyt in rows:
        # Only a CCCD consistent with this record's own sex and birth year identifies
        # it: a child's record carrying the mother's number fails on the birth year.
        valid = own_cccd(cccd, sex, year)
        if not bhxh or check_bhxh(bhxh):
            bhxh = ""
            info = decode_bhyt(bhyt) if bhyt and not check_bhyt(bhyt) else None
            if info is not None:
                bhxh = info.bhxh_number  # the card code embeds the BHXH number
        out.append((valid, bhxh or None))
    return out


_NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "name": name_keys,
    "birth": birth_features,
    "sex": _sex,
    "phone": _phone,
    "place": _place,
}


def _normalise(kind: str, values: list[Any]) -> list[Any]:
    """Normalise a batch of distinct values (the unit of work of a worker process)."""
    if kind == "identifiers":
        return _identifiers(values)
    fn = _NORMALISERS[kind]
    return [fn(v) for v in values]


_SCHEMA = pa.schema(
    [(c, pa.string()) for c in FEATURE_COLUMNS[:6]]
    + [(c, pa.int32()) for c in ("birth_year", "birth_month", "birth_day")]
    + [(c, pa.string()) for c in FEATURE_COLUMNS[9:]]
)

Progress = Callable[[str, int, int], None]
"""Called as `progress(stage, done, total)`; stages "normalising", "scoring"."""


class _Runner:
    """Runs `_normalise` batches here or in worker processes, and reports progress."""

    def __init__(self, workers: int, total: int, progress: Progress | None) -> None:
        self.workers, self.total, self.progress, self.done = workers, total, progress, 0
        self.pool: Any = None
        if workers > 1:
            from lienthong.workers import worker_pool

            self.pool = worker_pool(workers)

    def map(self, kind: str, values: list[Any]) -> list[Any]:
        from concurrent.futures.process import BrokenProcessPool

        batches = [values[i : i + _CHUNK_RECORDS] for i in range(0, len(values), _CHUNK_RECORDS)]
        out: list[Any] = []
        try:
            if self.pool is None:
                results = (_normalise(kind, b) for b in batches)
            else:
                results = self.pool.map(_normalise, [kind] * len(batches), batches)
            for batch, result in zip(batches, results, strict=True):
                out.extend(result)
                self.done += len(batch)
                if self.progress:
                    self.progress("normalising", self.done, self.total)
        except BrokenProcessPool:
            raise RuntimeError(
                "a normalisation worker process died (killed, or out of memory?); "
                "nothing was linked - retry with fewer --workers or more memory"
            ) from None
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def prepare(
    records: Records, workers: int | None = None, progress: Progress | None = None
) -> pa.Table:
    """Normalised matching features, one row per record (columns `FEATURE_COLUMNS`).

    An Arrow table because DuckDB (and so Splink) reads it without a copy and it needs no
    pandas. Values that fail validation are null rather than kept: a wrong identifier
    compared as if it were right does more harm than a missing one.

    Each distinct name, date, phone number and place is normalised once (a million
    records hold a few hundred thousand distinct names and far fewer places), and inputs
    of `PARALLEL_MIN_RECORDS` or more are spread over one process per core (or over
    `workers` processes when given, whatever the size); a worker that dies raises
    RuntimeError rather than leaving the run hanging. Raises `RecordsError` for missing
    columns and empty or duplicate record ids.
    """
    import pyarrow.compute as pc

    table = _as_table(records)
    cols = {c: pc.utf8_trim_whitespace(table.column(c)).combine_chunks() for c in INPUT_COLUMNS}
    _check_ids(cols["record_id"].to_pylist())
    n = table.num_rows
    if n == 0:
        return _SCHEMA.empty_table()
    place_key = pc.binary_join_element_wise(
        cols["province_code"],
        pc.if_else(pc.equal(cols["province_code"], ""), "", cols["commune_code"]),
        pc.if_else(pc.equal(cols["province_code"], ""), cols["address"], ""),
        "\x1f",
    )
    distinct = {
        kind: cols[col].dictionary_encode() if col else place_key.dictionary_encode()
        for kind, col in (
            ("name", "full_name"),
            ("birth", "birth_date"),
            ("sex", "sex"),
            ("phone", "phone"),
            ("place", None),
        )
    }
    total = sum(len(d.dictionary) for d in distinct.values()) + n
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= PARALLEL_MIN_RECORDS else 1
    runner = _Runner(workers, total, progress)
    if progress:
        progress("normalising", 0, total)
    try:
        per_value = {
            kind: runner.map(kind, d.dictionary.to_pylist()) for kind, d in distinct.items()
        }

        def column(kind: str, pick: Callable[[Any], Any], type_: Any) -> Any:
            values = pa.array([pick(v) for v in per_value[kind]], type_)
            return values.take(distinct[kind].indices)

        years = column("birth", itemgetter(0), pa.int32())
        sexes = column("sex", lambda v: v, pa.string())
        ids = runner.map(
            "identifiers",
            list(
                zip(
                    cols["cccd"].to_pylist(),
                    sexes.to_pylist(),
                    years.to_pylist(),
                    cols["bhxh"].to_pylist(),
                    cols["bhyt"].to_pylist(),
                    strict=True,
                )
            ),
        )
    finally:
        runner.close()
    source = pc.if_else(pc.equal(cols["source"], ""), None, cols["source"])
    arrays = [
        cols["record_id"],
        source,
        *(column("name", itemgetter(i), pa.string()) for i in range(4)),
        years,
        column("birth", itemgetter(1), pa.int32()),
        column("birth", itemgetter(2), pa.int32()),
        sexes,
        pa.array([c for c, _ in ids], pa.string()),
        pa.array([b for _, b in ids], pa.string()),
        column("phone", lambda v: v, pa.string()),
        column("place", itemgetter(0), pa.string()),
        column("place", itemgetter(1), pa.string()),
        column("name", lambda v: name_words(v[3]), pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=_SCHEMA)


# --------------------------------------------------------------------------- the model


def _date_digits(y: str, m: str, d: str) -> str:
    """SQL for a full date as the text YYYYMMDD (NULL unless all three parts are known),
    in a form DuckDB and Spark SQL read alike."""
    return f"printf('%04d%02d%02d', {y}, {m}, {d})"


def _settings() -> Any:
    """The Splink settings; comparisons are written for Vietnamese names and records."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    def ident(col: str) -> Any:
        # A single substituted or transposed digit is the commonest keying error.
        return cl.CustomComparison(
            output_column_name=col,
            comparison_levels=[
                cll.NullLevel(col),
                cll.ExactMatchLevel(col),
                cll.DamerauLevenshteinLevel(col, 1),
                cll.ElseLevel(),
            ],
        )

    def name_part(col: str, tf: bool) -> Any:
        # "Đăng Phước Dương" (given name first) is split as family Đặng, given Dương,
        # since both are surnames once folded: a part that is a word of the other name,
        # both ways, is a level of its own between a close match and a mismatch.
        # Word membership written as LIKE on space-padded keys (keys hold only [0-9a-z ]),
        # which DuckDB and Spark SQL both read the same way.
        reordered = (
            f"(' ' || name_key_r || ' ') LIKE ('% ' || {col}_l || ' %') AND "
            f"(' ' || name_key_l || ' ') LIKE ('% ' || {col}_r || ' %')"
        )
        return cl.CustomComparison(
            output_column_name=col,
            comparison_levels=[
                cll.NullLevel(col),
                cll.ExactMatchLevel(col, term_frequency_adjustments=tf),
                cll.JaroWinklerLevel(col, 0.92),
                cll.CustomLevel(reordered, f"{col} is a word of the other name"),
                # A letter dropped or mistyped in a short name ("Vân" keyed "ân"),
                # which Jaro-Winkler, weighing the first letters most, misses.
                cll.DamerauLevenshteinLevel(col, 1),
                # The same words, in any order, but for one letter: a typo that kept
                # the name from being split right ("Tuyềnn Thị Lê").
                cll.CustomLevel(
                    "damerau_levenshtein(name_words_l, name_words_r) <= 1",
                    "the names hold the same words but for one letter",
                ),
                cll.ElseLevel(),
            ],
        )

    y, m, d = "birth_year", "birth_month", "birth_day"
    birth = cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[
            cll.NullLevel(y),
            cll.CustomLevel(f"{y}_l = {y}_r AND {m}_l = {m}_r AND {d}_l = {d}_r", "exact date"),
            cll.CustomLevel(
                f"{y}_l = {y}_r AND {m}_l = {d}_r AND {d}_l = {m}_r", "day and month swapped"
            ),
            # Unknown parts: missing, or written as the 1st (of January): forms that
            # need a full date get one for people known by their year or month alone.
            cll.CustomLevel(
                f"{y}_l = {y}_r AND ({m}_l IS NULL OR {m}_r IS NULL "
                f"OR ({m}_l = 1 AND {d}_l = 1) OR ({m}_r = 1 AND {d}_r = 1) "
                f"OR ({m}_l = {m}_r AND ({d}_l IS NULL OR {d}_r IS NULL "
                f"OR {d}_l = 1 OR {d}_r = 1)))",
                "same year, rest unknown on one side",
            ),
            # Keying errors: the year off by one (day and month agreeing as far as
            # known), one digit of YYYYMMDD mistyped or two adjacent ones swapped.
            cll.CustomLevel(
                f"abs({y}_l - {y}_r) = 1 AND ({m}_l IS NULL OR {m}_r IS NULL OR {m}_l = {m}_r) "
                f"AND ({d}_l IS NULL OR {d}_r IS NULL OR {d}_l = {d}_r)",
                "year off by one, day and month agree",
            ),
            cll.CustomLevel(
                f"damerau_levenshtein({_date_digits(y + '_l', m + '_l', d + '_l')}, "
                f"{_date_digits(y + '_r', m + '_r', d + '_r')}) = 1",
                "one digit of the date mistyped",
            ),
            cll.CustomLevel(f"{y}_l = {y}_r", "same year, different day or month"),
            cll.CustomLevel(f"abs({y}_l - {y}_r) = 1", "one year apart"),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="record_id",
        probability_two_random_records_match=0.0001,
        comparisons=[
            # The given name is what tells household members (and twins) apart.
            name_part("given_key", tf=False),
            # Family names are few and skewed (Nguyễn ~38 %): agreement on a rare one
            # counts for more.
            name_part("family_key", tf=True),
            cl.ExactMatch("middle_key"),
            birth,
            # A full name agreeing (in either order) with the sex differing is a sex
            # recorded wrong rather than another person: Văn and Thị tell the sex.
            cl.CustomComparison(
                output_column_name="sex",
                comparison_levels=[
                    cll.NullLevel("sex"),
                    cll.ExactMatchLevel("sex"),
                    cll.CustomLevel(
                        " AND ".join(
                            f"(' ' || name_key_{o} || ' ') LIKE ('% ' || {c}_{s} || ' %')"
                            for c in ("given_key", "family_key")
                            for s, o in (("l", "r"), ("r", "l"))
                        ),
                        "sex differs, the names agree",
                    ),
                    cll.ElseLevel(),
                ],
            ),
            ident("cccd"),
            ident("bhxh"),
            ident("phone"),
            cl.CustomComparison(
                output_column_name="place",
                comparison_levels=[
                    cll.NullLevel("province"),
                    cll.ExactMatchLevel("commune"),
                    cll.ExactMatchLevel("province"),
                    cll.ElseLevel(),
                ],
            ),
        ],
        # Candidate pairs must stay roughly linear in the number of records: the given
        # name and birth year alone (a few hundred common given names) give 115 million
        # pairs on a million records; these rules give about 10 million, and between
        # them still meet the pairs where one name part, the date or the place is off.
        blocking_rules_to_generate_predictions=[
            block_on("given_key", "family_key", "birth_year", "province"),
            block_on("given_key", "birth_year", "commune"),
            block_on("family_key", "given_key", "birth_year", "birth_month"),
            block_on("family_key", "birth_year", "birth_month", "birth_day", "province"),
            block_on("given_key", "birth_year", "birth_month", "birth_day"),
            # The birth year off by one, or the place unknown on one side (a year-only
            # date then meets no rule above), or the name split or spelt otherwise.
            block_on("family_key", "given_key", "commune"),
            block_on("family_key", "given_key", "birth_month", "birth_day"),
            block_on("family_key", "middle_key", "given_key", "birth_year"),
            block_on("birth_year", "birth_month", "birth_day", "commune"),
            block_on("family_key", "birth_year", "commune"),
            block_on("family_key", "middle_key", "birth_year", "birth_month", "birth_day"),
            block_on("name_words", "birth_year"),
            block_on("phone"),
            block_on("cccd"),
            block_on("bhxh"),
        ],
        retain_intermediate_calculation_columns=True,
        additional_columns_to_retain=["name_key", "name_words"],
    )


Backend = str
""""duckdb" (one machine, the default) or "spark" (Spark in local mode, or a session the
caller has configured with `spark_session`)."""

BACKENDS = ("duckdb", "spark")


def _db_api(backend: Backend = "duckdb") -> Any:
    if backend == "duckdb":
        from splink import DuckDBAPI

        return DuckDBAPI()
    if backend == "spark":
        from splink import SparkAPI

        return SparkAPI(spark_session=spark_session(), break_lineage_method="persist")
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


_SPARK: Any = None


def spark_session() -> Any:
    """The Spark session used by the spark backend: an active one if the caller made it,
    else a local one (all cores, modest partitions: the data fit one machine here)."""
    global _SPARK
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if _SPARK is None:
        from splink.backends.spark import similarity_jar_location

        _SPARK = (
            SparkSession.builder.master("local[*]")
            # Splink's string-similarity functions (Jaro-Winkler, Damerau-Levenshtein)
            .config("spark.jars", similarity_jar_location())
            .appName("lienthong-link")
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.default.parallelism", "8")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )
        _SPARK.sparkContext.setLogLevel("ERROR")
    return _SPARK


def stop_spark() -> None:
    """Stop the local Spark session started by `spark_session` and its JVM gateway."""
    global _SPARK
    if _SPARK is None:
        return
    from pyspark import SparkContext

    _SPARK.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None
    _SPARK = None


def _register(db: Any, table: pa.Table, backend: Backend) -> Any:
    if backend == "spark":
        session = spark_session()
        frame = session.createDataFrame(table)
        return db.register(frame)
    return db.register(table)


def _linker(table: pa.Table, settings: Any, backend: Backend = "duckdb") -> Any:
    from splink import Linker

    db = _db_api(backend)
    if isinstance(settings, dict):
        settings = _in_dialect(settings, backend)
    return Linker(_register(db, table, backend), settings, log_level=None)


def _in_dialect(settings: dict[str, Any], dialect: str) -> dict[str, Any]:
    """A saved model's parameters on lienthong's comparisons written for `dialect`.

    A saved model holds SQL in the dialect it was trained with ("family_key_l" is a
    column to DuckDB but a string literal to Spark), so for another backend the
    comparisons and blocking rules are generated afresh by Splink for that dialect and
    the model's m and u probabilities and prior are carried over level by level.
    """
    if settings.get("sql_dialect", "duckdb") == dialect:
        return settings
    fresh: dict[str, Any] = _settings().create_settings_dict(dialect)
    ours, theirs = fresh["comparisons"], settings["comparisons"]
    shapes = [(c["output_column_name"], len(c["comparison_levels"])) for c in ours]
    if shapes != [(c["output_column_name"], len(c["comparison_levels"])) for c in theirs]:
        raise ValueError(
            f"a model trained for {settings.get('sql_dialect')} can run on {dialect} only "
            "with lienthong's own comparisons"
        )
    for mine, saved in zip(ours, theirs, strict=True):
        for level, saved_level in zip(
            mine["comparison_levels"], saved["comparison_levels"], strict=True
        ):
            for key in ("m_probability", "u_probability"):
                if key in saved_level:
                    level[key] = saved_level[key]
    fresh[_PRIOR] = settings[_PRIOR]
    return fresh


REFERENCE_RECORDS = 1_000_000
"""Saved models state the prior match probability for a file of this many records.

The prior (`probability_two_random_records_match`) is not a property of people but of
the file: with about two records per person, a record has a roughly constant number of
true matches, so the chance that two random records match falls as 1/N. Models are
saved at this reference size and rescaled to the size of the file being linked, so a
model trained on 100,000 records is not ten times too eager on a million."""

PRIOR_MIN_RECORDS = 10_000
"""Files smaller than this get the prior of a file of this size. The 1/N rule assumes
each record's person has other records in the file; on a handful of records it would
make the prior close to 1 and let a shared name and birth year link two people."""

_PRIOR = "probability_two_random_records_match"


class LinkageModel:
    """A trained Splink model (its JSON settings), reusable on new data and saveable.

    `settings` is Splink's own saved-model JSON, with the prior stated for
    `REFERENCE_RECORDS` records (see there); `for_records(n)` gives the settings to use
    on n records. `default()` is the model shipped with lienthong.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    @classmethod
    def default(cls) -> LinkageModel:
        """The shipped model (trained by `scripts/train_linkage_model.py`)."""
        return cls(_shipped_settings())

    @classmethod
    def load(cls, path: str | Path) -> LinkageModel:
        """Read a model written by `save_model` (Splink's JSON model format)."""
        try:
            settings = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable linkage model ({exc})") from None
        if not isinstance(settings, dict) or "comparisons" not in settings:
            raise ValueError(f"{path}: not a Splink model (no comparisons)")
        return cls(settings)

    @classmethod
    def from_trained(cls, settings: dict[str, Any], records: int) -> LinkageModel:
        """Wrap settings trained on `records` records, restating the prior for the
        reference size."""
        scaled = dict(settings)
        scaled[_PRIOR] = _rescale(settings[_PRIOR], records, REFERENCE_RECORDS)
        return cls(scaled)

    @property
    def prior(self) -> float:
        """Probability that two random records match, in a file of REFERENCE_RECORDS."""
        return float(self.settings[_PRIOR])

    def m_u(self) -> dict[str, list[tuple[str, float | None, float | None]]]:
        """Per comparison, its levels as (label, m, u): what others (the master person
        index, register checks) need to score a pair the way linkage does."""
        out: dict[str, list[tuple[str, float | None, float | None]]] = {}
        for comparison in self.settings["comparisons"]:
            out[comparison["output_column_name"]] = [
                (
                    level.get("label_for_charts", level["sql_condition"]),
                    level.get("m_probability"),
                    level.get("u_probability"),
                )
                for level in comparison["comparison_levels"]
            ]
        return out

    def for_records(self, n: int) -> dict[str, Any]:
        """Splink settings for linking a file of `n` records (see `PRIOR_MIN_RECORDS`)."""
        settings = dict(self.settings)
        settings[_PRIOR] = _rescale(self.prior, REFERENCE_RECORDS, max(n, PRIOR_MIN_RECORDS))
        return settings

    def save_model(self, path: str | Path) -> None:
        """Write the model as Splink JSON so that training need not be repeated."""
        Path(path).write_text(json.dumps(self.settings, indent=2) + "\n", encoding="utf-8")


def _rescale(prior: float, from_records: int, to_records: int) -> float:
    return min(1.0, prior * (from_records - 1) / (to_records - 1))


SHIPPED_MODEL = Path(__file__).with_name("data") / "linkage_model.json"


@functools.cache
def _shipped_settings() -> dict[str, Any]:
    return dict(json.loads(SHIPPED_MODEL.read_text(encoding="utf-8")))


def save_model(model: LinkageModel, path: str | Path) -> None:
    """Module-level alias of `LinkageModel.save_model`."""
    model.save_model(path)


def _quiet_splink() -> Any:
    import contextlib

    @contextlib.contextmanager
    def quiet() -> Any:
        splink_logger = logging.getLogger("splink")
        level = splink_logger.level
        splink_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            splink_logger.setLevel(level)

    return quiet()


def _train_linker(table: pa.Table, backend: Backend = "duckdb") -> Any:
    """Fit the model on unlabelled records: no labelled pairs exist for Vietnam.

    u from random pairs, the prior from the identifier rules (assumed to find about
    half of all matches), m by EM on three blockings that between them leave every field free.
    """
    from splink import block_on

    with _quiet_splink():
        linker = _linker(table, _settings(), backend)
        training = linker.training
        training.estimate_probability_two_random_records_match(
            [block_on("cccd"), block_on("bhxh")], recall=0.5
        )
        training.estimate_u_using_random_sampling(max_pairs=2e6, seed=1)
        training.estimate_parameters_using_expectation_maximisation(
            block_on("cccd"), estimate_without_term_frequencies=True
        )
        training.estimate_parameters_using_expectation_maximisation(
            block_on("birth_year", "given_key"), estimate_without_term_frequencies=True
        )
        # The birth date is fixed by both blockings above; this one lets it vary.
        training.estimate_parameters_using_expectation_maximisation(
            block_on("family_key", "given_key", "commune"),
            estimate_without_term_frequencies=True,
        )
    return linker


def _feature_table(records: Records) -> pa.Table:
    if isinstance(records, pa.Table) and tuple(records.column_names) == FEATURE_COLUMNS:
        return records
    return prepare(records)


def train(records: Records, backend: Backend = "duckdb") -> LinkageModel:
    """Train a model on unlabelled records (raw rows, a CSV path or `prepare` output).

    Raises ValueError when Splink cannot estimate the model on these records (too few,
    or too few identifier matches to start from)."""
    table = _feature_table(records)
    try:
        linker = _train_linker(table, backend)
        settings = linker.misc.save_model_to_json()
    except Exception as exc:  # Splink raises assorted error types on degenerate inputs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot train on {table.num_rows:,} records: {reason}") from exc
    return LinkageModel.from_trained(_with_keying_errors(settings), table.num_rows)


KEYING_ERROR_M = {
    ("birth_date", "year off by one, day and month agree"): 0.004,
    ("birth_date", "one digit of the date mistyped"): 0.004,
    ("sex", "sex differs, the names agree"): 0.005,
    ("sex", "All other comparisons"): 0.002,
    ("place", "All other comparisons"): 0.005,  # moved to another province
    ("cccd", "Damerau-Levenshtein distance of cccd <= 1"): 0.005,
    ("bhxh", "Damerau-Levenshtein distance of bhxh <= 1"): 0.005,
    ("phone", "Damerau-Levenshtein distance of phone <= 1"): 0.005,
}
"""The least share of one person's record pairs assumed to fall in each keying-error
level, whatever training found. Expectation maximisation learns m from the records it is
given: where they never show an error (a generated population without year slips, with
every sex recorded right, nobody moving house) it learns m close to 0, and the level then
vetoes every pair showing it, however well the rest agrees. Real exports do show these;
about one record in 200-500 for each is a cautious guess, not a measurement."""

_NEAR_IDENTIFIERS = ("cccd", "bhxh", "phone")

AT_MOST_NEUTRAL = {("sex", "sex differs, the names agree")}
"""Levels whose weight is capped at 0. The names agreeing makes a differing sex rare
among random pairs, so the level's u is small and its weight would come out above that
of an agreeing sex: the names' agreement counted twice. A sex recorded wrong between
records whose names agree is taken to say nothing either way."""


def _with_keying_errors(settings: dict[str, Any]) -> dict[str, Any]:
    """Trained settings with `KEYING_ERROR_M` applied, taking the m added from the exact
    level so each comparison's m still sum to 1, `AT_MOST_NEUTRAL` capped at weight 0,
    and, for an identifier one digit off that random sampling never met, the exact
    level's u: two people's numbers are about as rarely one digit apart as equal (the
    default Splink would use counts the pair as barely more likely a match than not)."""
    out = json.loads(json.dumps(settings))
    for comparison in out["comparisons"]:
        name = comparison["output_column_name"]
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        exact = levels[0]
        for level in levels[1:]:
            floor = KEYING_ERROR_M.get((name, level.get("label_for_charts", "")))
            m = level.get("m_probability")
            m = m if isinstance(m, float | int) else 0.0  # unset, or "level not observed"
            if floor is not None and m < floor:
                if isinstance(exact.get("m_probability"), float | int):
                    exact["m_probability"] = max(exact["m_probability"] - (floor - m), 1e-6)
                level["m_probability"] = floor
            u, m = level.get("u_probability"), level.get("m_probability")
            neutral = (name, level.get("label_for_charts")) in AT_MOST_NEUTRAL
            if neutral and isinstance(u, float | int) and isinstance(m, float | int):
                level["u_probability"] = max(u, m)
            if (
                name in _NEAR_IDENTIFIERS
                and level is levels[1]
                and not isinstance(level.get("u_probability"), float | int)
                and isinstance(exact.get("u_probability"), float | int)
            ):
                level["u_probability"] = exact["u_probability"]
    return out


# --------------------------------------------------------------------------- clustering


class _UnionFind:
    """Union-find over record positions (a million records: ints in a list)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> bool:
        """Join the clusters of `a` and `b` (the smaller root kept); False if one already."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


# The cannot-link rules of `scoring.births_compatible` and `scoring.identifiers_conflict`,
# in SQL over the view `_FEATURES_VIEW` (aliases l and r); a test holds them equal.

_FEATURES_VIEW = """
CREATE OR REPLACE TEMP VIEW f AS
SELECT *,
    CASE WHEN birth_month = 1 AND birth_day = 1 THEN NULL ELSE birth_month END AS pm,
    CASE WHEN birth_day = 1 THEN NULL ELSE birth_day END AS pd
FROM features
"""


def _digits_sql(side: str, other: str) -> str:
    """A side's date as text to the precision both sides have (a 1st as unknown)."""
    return (
        f"printf('%04d', {side}.birth_year) || CASE WHEN {side}.pm IS NULL OR {other}.pm IS NULL "
        f"THEN '' ELSE printf('%02d', {side}.pm) || CASE WHEN {side}.pd IS NULL OR "
        f"{other}.pd IS NULL THEN '' ELSE printf('%02d', {side}.pd) END END"
    )


_BIRTHS_COMPATIBLE = f"""(
    l.birth_year IS NULL OR r.birth_year IS NULL
    OR coalesce(l.birth_year = r.birth_year AND l.birth_month = r.birth_day
        AND l.birth_day = r.birth_month, false)
    OR coalesce(l.birth_year = r.birth_year AND (l.pm IS NULL OR r.pd IS NULL OR l.pm = r.pd)
        AND (l.pd IS NULL OR r.pm IS NULL OR l.pd = r.pm), false)
    OR (abs(l.birth_year - r.birth_year) = 1 AND (l.pm IS NULL OR r.pm IS NULL
        OR (l.pm = r.pm AND (l.pd IS NULL OR r.pd IS NULL OR l.pd = r.pd))))
    OR damerau_levenshtein({_digits_sql("l", "r")}, {_digits_sql("r", "l")}) <= 1
)"""


def _identifier_conflict_sql(col: str) -> str:
    return (
        f"coalesce(l.{col} <> r.{col} AND NOT (length(l.{col}) = length(r.{col}) "
        f"AND damerau_levenshtein(l.{col}, r.{col}) = 1), false)"
    )


_CONFLICTING = (
    f"(NOT {_BIRTHS_COMPATIBLE} OR {_identifier_conflict_sql('cccd')} "
    f"OR {_identifier_conflict_sql('bhxh')})"
)


def _name_differs_sql(col: str) -> str:
    """The name comparison's last level (see `_settings`): not equal, not close, and
    not a word of the other name both ways; and more than one letter apart."""
    return (
        f"coalesce(l.{col} <> r.{col} AND jaro_winkler_similarity(l.{col}, r.{col}) < 0.92 "
        f"AND damerau_levenshtein(l.{col}, r.{col}) > 1 "
        "AND NOT coalesce(damerau_levenshtein(l.name_words, r.name_words) <= 1, false) "
        f"AND NOT ((' ' || r.name_key || ' ') LIKE ('% ' || l.{col} || ' %') AND "
        f"(' ' || l.name_key || ' ') LIKE ('% ' || r.{col} || ' %')), false)"
    )


_CONTRADICTED = (
    f"({_name_differs_sql('given_key')} OR {_name_differs_sql('family_key')} OR {_CONFLICTING})"
)


def _features_db(table: pa.Table) -> Any:
    """A DuckDB connection holding the features as view `f`, with each record's position."""
    import duckdb

    con = duckdb.connect()
    con.register(
        "features", table.append_column("pos", pa.array(range(table.num_rows), pa.int64()))
    )
    con.execute(_FEATURES_VIEW)
    return con


def _identifier_pairs(con: Any) -> tuple[list[tuple[int, int]], int]:
    """Pairs sharing a valid CCCD or a BHXH number that nothing else contradicts, and the
    number of pairs that shared one but were contradicted (another given or family name,
    a birth date no known error explains, or the other identifier differing: a borrowed
    number, a child on a parent's insurance card)."""
    rows = con.execute(
        f"""
        WITH shared AS (
            SELECT l.pos AS a, r.pos AS b, {_CONTRADICTED} AS contradicted
            FROM f l JOIN f r ON l.cccd = r.cccd AND l.pos < r.pos
            UNION
            SELECT l.pos, r.pos, {_CONTRADICTED}
            FROM f l JOIN f r ON l.bhxh = r.bhxh AND l.pos < r.pos
        )
        SELECT a, b, contradicted FROM shared ORDER BY a, b
        """
    ).fetchall()
    pairs = [(a, b) for a, b, bad in rows if not bad]
    return pairs, len({(a, b) for a, b, bad in rows if bad} - set(pairs))


def _conflicts_within(
    con: Any, roots: list[int], disowned: frozenset[int] = frozenset()
) -> list[tuple[int, int]]:
    """Pairs of records of one cluster that can never be one person, set-wise: only
    clusters of two records or more are joined with themselves. The CCCD of a record in
    `disowned` is not its own (`_disowned_numbers`) and conflicts with nothing."""
    con.register("roots", pa.table({"pos": pa.array(range(len(roots)), pa.int64()),
                                    "root": pa.array(roots, pa.int64())}))  # fmt: skip
    rows = con.execute(
        f"""
        WITH shared AS (SELECT root FROM roots GROUP BY root HAVING count(*) > 1),
        c AS (SELECT f.*, roots.root FROM f JOIN roots USING (pos) JOIN shared USING (root))
        SELECT l.pos, r.pos, NOT {_BIRTHS_COMPATIBLE} OR {_identifier_conflict_sql("bhxh")},
            {_identifier_conflict_sql("cccd")}
        FROM c l JOIN c r ON l.root = r.root AND l.pos < r.pos
        WHERE {_CONFLICTING}
        ORDER BY 1, 2
        """
    ).fetchall()
    con.unregister("roots")
    return [
        (int(a), int(b))
        for a, b, other, cccd in rows
        if other or (cccd and a not in disowned and b not in disowned)
    ]


DISOWN_WEIGHT = 8.0
"""Bits (the match weight, the CCCDs' disagreement counted) at which a pair of records
carrying two different CCCDs is taken for one person with a number not their own
(`_disowned_numbers`). Measured on a population built apart from the model's training
data: 12 to 20 bits recover slightly fewer persons, 5 bits or less lets precision fall."""


def _disowned_numbers(edges: list[Edge], cccd: list[str | None]) -> frozenset[int]:
    """Records whose CCCD may not be their own, for the coherence step to disregard.

    A number on a record is not always the person's: a namesake's found by a name and
    birth-year look-up, a twin's or a sibling's papers. The pair's score already counts
    the two numbers' disagreement (about -12 bits); when the rest - name, birth date,
    phone, commune - still outweighs it by `DISOWN_WEIGHT` bits, one of the two numbers
    is the wrong one, and neither can tell the records' clusters apart (which one is
    wrong is not known: both records are returned). Without this, the two numbers
    would keep the records apart however the rest agrees, and every record of the
    person not carrying a number would follow one side or the other. Identifier pairs
    (weight +inf) are not scored and disown nothing."""
    out: set[int] = set()
    for weight, a, b, _ in edges:
        if weight == math.inf or weight < DISOWN_WEIGHT:
            continue
        ca, cb = cccd[a], cccd[b]
        if ca and cb and ca != cb and not one_digit_apart(ca, cb):
            out.update((a, b))
    return frozenset(out)


Edge: TypeAlias = tuple[float, int, int, float]
"""(match weight, position, position, match probability); identifier pairs weigh +inf."""


def _coherent(uf: _UnionFind, edges: list[Edge], conflicts: list[tuple[int, int]]) -> None:
    """Split every cluster holding a conflicting pair: its records are clustered again
    from their pairs, heaviest first, never joining two groups that hold a conflicting
    pair (cannot-link clustering). Only the flagged clusters' records and edges are
    touched."""
    if not conflicts:
        return
    flagged = {uf.find(a) for a, _ in conflicts}
    inside = [e for e in edges if uf.find(e[1]) in flagged]
    members = {i for _, a, b, _ in inside for i in (a, b)}
    cannot: dict[int, set[int]] = {}
    for a, b in conflicts:
        cannot.setdefault(a, set()).add(b)
        cannot.setdefault(b, set()).add(a)
    for i in members:
        uf.parent[i] = i
    groups: dict[int, list[int]] = {i: [i] for i in members}
    inside.sort(key=lambda e: (-e[0], e[1], e[2]))
    for _, a, b, _ in inside:
        ra, rb = uf.find(a), uf.find(b)
        if ra == rb:
            continue
        small, other = (ra, rb) if len(groups[ra]) <= len(groups[rb]) else (rb, ra)
        if any(uf.find(x) == other for y in groups[small] for x in cannot.get(y, ())):
            continue
        merged = groups.pop(ra) + groups.pop(rb)
        uf.union(ra, rb)
        groups[uf.find(ra)] = merged


@dataclass
class Linkage:
    """What a linkage run produced: one row per record, and the figures for a summary."""

    rows: list[tuple[str, str, float]]
    records: int
    persons: int
    pairs_compared: int
    identifier_links: int
    """Records joined to another by a shared valid CCCD or BHXH number."""
    probabilistic_links: int
    """Scored pairs at or above the threshold that joined two clusters."""
    refused_links: int
    """Pairs refused: sharing an identifier but contradicted, scored above the threshold
    with different given names, or joining records that can never be one person."""
    seconds: dict[str, float]


def _count(frame: Any, backend: Backend, at_least: float | None = None) -> int:
    """Rows of a Splink frame (with ``at_least``, those matching at that probability)."""
    where = f"match_probability >= {at_least!r}" if at_least is not None else "true"
    if backend == "spark":
        return int(frame.as_spark_dataframe().filter(where).count())
    rel = frame.as_duckdbpyrelation().filter(where)
    return int(rel.aggregate("count(*)").fetchall()[0][0])


NAMESAKE_MARGIN = 3.0
"""Bits (log2 of the Bayes factor) by which a weak record's strongest link into one group
must outweigh its strongest link into any other for the first to be kept
(`_namesake_bridges`). Measured on a population built apart from the model's training
data: 2 to 3 bits remove as many false merges as 5 to 8 and split fewer true persons."""

_WEAK_RECORD = "cccd IS NULL AND bhxh IS NULL AND (pm IS NULL OR commune IS NULL)"
"""A record whose evidence cannot choose between namesakes (view `f`): no identifier, and
a birth date without its month (a year alone, or a 1 January standing for an unknown day
and month) or no commune. (Counting every record without an identifier as weak splits
far more persons than it saves: most of a person's records then bear on nothing.)"""


def _namesake_bridges(con: Any, n: int, edges: list[Edge]) -> tuple[list[Edge], int]:
    """Drop the links by which a weak record would join namesakes.

    Connected components join everything a record links to. A record with no
    identifier and a birth year alone, or no place (`_WEAK_RECORD`), matches every
    namesake born that year (or that day) above the threshold, and two people sharing a
    name would become one through it; a year-only date conflicts with no full date, so
    the coherence step keeps them together.

    The groups are the components of the links between records that are not weak; a
    weak record linked into one group only belongs to it. A weak record whose links
    reach two groups or more keeps only its links into the group it matches
    `NAMESAKE_MARGIN` bits better than any other, and otherwise none (it stays a person
    of its own unless the second pass finds it an only candidate). Set-wise in DuckDB;
    returns the links kept and the number dropped."""
    weak = {int(p) for (p,) in con.execute(f"SELECT pos FROM f WHERE {_WEAK_RECORD}").fetchall()}
    if not weak:
        return edges, 0
    groups = _UnionFind(n)
    for _, a, b, _ in edges:
        if a not in weak and b not in weak:
            groups.union(a, b)
    touching = [
        (i, w, other, weight)
        for i, (weight, a, b, _) in enumerate(edges)
        for w, other in ((a, b), (b, a))
        if w in weak
    ]

    def query(rows: list[tuple[int, int, int, float]], sql: str) -> list[tuple[Any, ...]]:
        if not rows:
            return []
        i_col, w_col, g_col, x_col = zip(*rows, strict=True)
        con.register(
            "weak_links",
            pa.table({"i": pa.array(i_col, pa.int64()), "w": pa.array(w_col, pa.int64()),
                      "g": pa.array(g_col, pa.int64()), "x": pa.array(x_col, pa.float64())}),
        )  # fmt: skip
        try:
            return list(con.execute(sql).fetchall())
        finally:
            con.unregister("weak_links")

    # A weak record linked into one group only (counting its partners that are not weak)
    # belongs to it; its weak partners then reckon with that group. A weak partner
    # belonging to no group bears on nothing (the link is kept unless its other end
    # drops it).
    attached: set[int] = set()
    one = query(
        [(i, w, groups.find(o), x) for i, w, o, x in touching if o not in weak],
        "SELECT w, min(g) FROM weak_links GROUP BY w HAVING count(DISTINCT g) = 1",
    )
    for w, g in one:
        groups.union(int(w), int(g))
        attached.add(int(w))
    dropped = query(
        [(i, w, groups.find(o), x) for i, w, o, x in touching if o not in weak or o in attached],
        f"""
        WITH grouped AS (SELECT w, g, max(x) AS x FROM weak_links GROUP BY w, g),
        ranked AS (
            SELECT w, arg_max(g, x) AS g, list_sort(list(x), 'DESC') AS xs
            FROM grouped GROUP BY w HAVING count(*) > 1
        )
        SELECT DISTINCT l.i FROM weak_links l JOIN ranked r USING (w)
        WHERE l.g <> r.g OR r.xs[1] - r.xs[2] < {NAMESAKE_MARGIN!r}
        """,
    )
    gone = {int(i) for (i,) in dropped}
    return [e for i, e in enumerate(edges) if i not in gone], len(gone)


COMPETITOR_PROBABILITY = 0.01
"""A pair scored at least this is a candidate for the second pass to reckon with."""
SECOND_PASS_PROBABILITY = 0.5
"""The least probability at which two clusters that are each other's only candidate are
joined by the second pass (`_only_candidates`)."""


def _only_candidates(
    uf: _UnionFind,
    edges: list[Edge],
    weak: list[Edge],
    threshold: float,
    sources: list[str | None],
) -> list[Edge]:
    """The second pass: pairs under the threshold joining two clusters that are each
    other's only candidate.

    A pair's probability reckons with how many people could share a name and a birth
    year in a population of the file's size. When the file holds no third record
    scoring at least `COMPETITOR_PROBABILITY` with either side, no namesake is there to
    be confused with: a name with a year alone (the day and month unknown) or an exact
    date with a place that moved is then the same person at `SECOND_PASS_PROBABILITY`.
    The coherence step runs again on the clusters so joined."""
    low = SECOND_PASS_PROBABILITY
    if threshold <= low:
        return []
    neighbours: dict[int, set[int]] = {}
    for _, a, b, _ in (*edges, *weak):
        ra, rb = uf.find(a), uf.find(b)
        if ra != rb:
            neighbours.setdefault(ra, set()).add(rb)
            neighbours.setdefault(rb, set()).add(ra)
    held: dict[int, set[str]] = {}
    for i, source in enumerate(sources):
        if source:
            held.setdefault(uf.find(i), set()).add(source)
    best: dict[tuple[int, int], Edge] = {}
    for e in weak:
        if e[3] < low:
            continue
        ra, rb = uf.find(e[1]), uf.find(e[2])
        if (
            neighbours.get(ra) == {rb}
            and neighbours.get(rb) == {ra}
            and not held.get(ra, set()) & held.get(rb, set())
        ):
            key = (min(ra, rb), max(ra, rb))
            if key not in best or e[0] > best[key][0]:
                best[key] = e
    return [best[k] for k in sorted(best)]


def _edges(frame: Any, backend: Backend) -> list[tuple[str, str, float, float]]:
    """Scored pairs as (left, right, probability, weight); a pair whose given names
    clearly differ is dropped.

    That is what separates twins and siblings sharing surname, birth date, address and
    the parents' phone (a name in another order, split wrongly, has a level of its own
    above 0)."""
    columns = ("record_id_l", "record_id_r", "match_probability", "match_weight")
    if backend == "spark":
        df = frame.as_spark_dataframe()
        rows = df.filter("gamma_given_key <> 0").select(*columns).collect()
        return [(r[0], r[1], float(r[2]), float(r[3])) for r in rows]
    rel = frame.as_duckdbpyrelation().filter("gamma_given_key <> 0").select(", ".join(columns))
    return [(a, b, float(p), float(w)) for a, b, p, w in rel.fetchall()]


def _score_chunks(n: int) -> int:
    """Score in slices of about 250,000 records: bounded memory and a moving progress bar
    (each slice repeats the blocking, so smaller slices cost time)."""
    return max(1, -(-n // 250_000))


def run_linkage(
    records: Records,
    model: LinkageModel | str | Path | None = None,
    threshold: float = MATCH_THRESHOLD,
    *,
    backend: Backend = "duckdb",
    progress: Progress | None = None,
    workers: int | None = None,
) -> Linkage:
    """Link records to persons and report what was done (see `link` for the rows).

    `model` is the shipped model when None, else a `LinkageModel` or the path of a saved
    one. `progress(stage, done, total)` is called while normalising and scoring.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    started = time.perf_counter()
    table = (
        records
        if isinstance(records, pa.Table) and tuple(records.column_names) == FEATURE_COLUMNS
        else prepare(records, workers=workers, progress=progress)
    )
    seconds = {"normalising": time.perf_counter() - started}
    ids: list[str] = table.column("record_id").to_pylist()
    cccd: list[str | None] = table.column("cccd").to_pylist()
    n = len(ids)
    con = _features_db(table)
    identifying, refused = _identifier_pairs(con)
    edges: list[Edge] = [(math.inf, a, b, 1.0) for a, b in identifying]
    weak: list[Edge] = []  # scored under the threshold, at least COMPETITOR_PROBABILITY
    pairs = 0
    if n > 1:
        if model is None:
            loaded = LinkageModel.default()
        else:
            loaded = model if isinstance(model, LinkageModel) else LinkageModel.load(model)
        scoring = time.perf_counter()
        position = {rid: i for i, rid in enumerate(ids)}
        with _quiet_splink():
            linker = _linker(table, loaded.for_records(n), backend)
            chunks = _score_chunks(n)
            if progress:
                progress("scoring", 0, chunks)
            for i in range(1, chunks + 1):
                blocked = linker.inference.compute_blocked_pairs_for_predict_chunk(
                    left_chunk=(i, chunks), right_chunk=(1, 1)
                )
                pairs += _count(blocked, backend)
                scored = linker.inference.predict_chunk(
                    left_chunk=(i, chunks),
                    right_chunk=(1, 1),
                    threshold_match_probability=min(threshold, COMPETITOR_PROBABILITY),
                    warning_mode="never",
                )
                above = _count(scored, backend, threshold)
                kept = _edges(scored, backend)
                refused += above - sum(p >= threshold for _, _, p, _ in kept)
                for left, right, p, w in kept:
                    (edges if p >= threshold else weak).append(
                        (w, position[left], position[right], p)
                    )
                scored.drop_table_from_database_and_remove_from_cache()
                blocked.drop_table_from_database_and_remove_from_cache()
                if progress:
                    progress("scoring", i, chunks)
        seconds["scoring"] = time.perf_counter() - scoring
    clustering = time.perf_counter()
    edges, bridges = _namesake_bridges(con, n, edges)
    refused += bridges
    uf = _UnionFind(n)
    for _, a, b, _ in edges:
        uf.union(a, b)
    disowned = _disowned_numbers(edges, cccd)
    _coherent(uf, edges, _conflicts_within(con, [uf.find(i) for i in range(n)], disowned))
    second = _only_candidates(uf, edges, weak, threshold, table.column("source").to_pylist())
    if second:
        for _, a, b, _ in second:
            uf.union(a, b)
        edges.extend(second)
        _coherent(uf, edges, _conflicts_within(con, [uf.find(i) for i in range(n)], disowned))
    con.close()
    # What joined each cluster, counted over its accepted edges (identifier pairs first,
    # then the strongest scored pairs); a record's probability is its strongest accepted
    # link, 1.0 when it was joined by an identifier or stands alone.
    roots = [uf.find(i) for i in range(n)]
    best = [1.0] * n
    linked_at: dict[int, float] = {}
    by_identifier: set[int] = set()
    counted = _UnionFind(n)
    identifier_links = probabilistic = 0
    edges.sort(key=lambda e: (-e[0], e[1], e[2]))
    for weight, a, b, p in edges:
        if roots[a] != roots[b]:
            refused += 1  # cut by the coherence step
            continue
        joined = counted.union(a, b)
        if weight == math.inf:
            identifier_links += joined
            by_identifier.update((a, b))
        else:
            probabilistic += joined
            linked_at[a] = max(linked_at.get(a, 0.0), p)
            linked_at[b] = max(linked_at.get(b, 0.0), p)
    for i, p in linked_at.items():
        if i not in by_identifier:
            best[i] = p
    seconds["clustering"] = time.perf_counter() - clustering
    cluster_cccds: dict[int, set[str]] = {}
    for root, c in zip(roots, cccd, strict=True):
        if c:
            cluster_cccds.setdefault(root, set()).add(c)
    # A cluster holding exactly one valid CCCD, which no other cluster holds, is named by
    # it (stable across runs and meaningful to other systems); otherwise by its smallest
    # record_id. (A number borrowed by someone else is held by two clusters.)
    holders: dict[str, int] = {}
    for held in cluster_cccds.values():
        for c in held:
            holders[c] = holders.get(c, 0) + 1
    person: dict[int, str] = {}
    for root in set(roots):
        cs = cluster_cccds.get(root)
        only = next(iter(cs)) if cs and len(cs) == 1 else ""
        person[root] = only if only and holders[only] == 1 else ""
    smallest: dict[int, str] = {}
    for rid, root in zip(ids, roots, strict=True):
        if not person[root] and (root not in smallest or rid < smallest[root]):
            smallest[root] = rid
    rows = [
        (rid, person[root] or smallest[root], best[i])
        for i, (rid, root) in enumerate(zip(ids, roots, strict=True))
    ]
    seconds["total"] = time.perf_counter() - started
    return Linkage(
        rows=rows,
        records=n,
        persons=len(set(roots)),
        pairs_compared=pairs,
        identifier_links=identifier_links,
        probabilistic_links=probabilistic,
        refused_links=refused,
        seconds=seconds,
    )


def link(
    records: Records,
    model: LinkageModel | str | Path | None = None,
    threshold: float = MATCH_THRESHOLD,
    *,
    backend: Backend = "duckdb",
) -> list[tuple[str, str, float]]:
    """Assign each record a person: `(record_id, person_id, match_probability)`.

    Every input record appears exactly once, in input order. `person_id` is the cluster's
    CCCD when the cluster holds exactly one valid CCCD and no other cluster holds it
    (stable across runs and meaningful to other systems), otherwise its smallest
    record_id. `match_probability` is the
    strongest link that put the record into its cluster (1.0 for identifier links and for
    a record alone in its cluster). Without `model`, the shipped model is used
    (`LinkageModel.default()`); pass a `LinkageModel` or the path of a saved one, or
    `train(records)` to estimate one on the input.
    """
    return run_linkage(records, model, threshold, backend=backend).rows
