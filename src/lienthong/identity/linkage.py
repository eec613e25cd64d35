"""Record linkage: which source records describe the same person.

Vietnamese records cannot be linked on the name alone: four people in ten are Nguyễn, a
handful of given names cover much of the population, households share surname, address
and phone, and twins share a birth date. Identifiers help but are partial and noisy (a
child is often recorded with the mother's CCCD; one digit is mistyped now and then).
Linking therefore runs in two passes:

1. a deterministic pass joins records sharing a *valid* CCCD (one whose century, sex and
   birth-year digits agree with the record's own sex and birth year, so a mother's number
   on her child's record is ignored) or a social-insurance (BHXH) number;
2. a probabilistic pass (Splink, Fellegi-Sunter on DuckDB) scores candidate pairs with
   comparisons written for this data: the given name is compared apart from the family
   name, the family name is term-frequency adjusted, birth dates tolerate a day/month
   swap and a year-only value, identifiers tolerate one mistyped digit.

Edges of both passes are merged with connected components. Features come from
`lienthong.identity.normalize` and `lienthong.identity.identifiers`, so linkage sees the
same normalised values as the rest of the platform.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from lienthong.identity.identifiers import (
    check_bhxh,
    check_bhyt,
    check_cccd,
    decode_bhyt,
    one_digit_apart,
)
from lienthong.identity.normalize import (
    current_units,
    name_key,
    normalize_address,
    normalize_phone,
    normalize_sex,
    parse_date,
    split_name,
)

__all__ = [
    "FEATURE_COLUMNS",
    "MATCH_THRESHOLD",
    "LinkageModel",
    "link",
    "prepare",
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
)

Records = Iterable[Mapping[str, Any]] | str | Path


# --------------------------------------------------------------------------- features


def _read(records: Records) -> list[Mapping[str, Any]]:
    """Accept a path to a records CSV (the `lienthong.synth` layout) or rows as dicts."""
    if isinstance(records, str | Path):
        with Path(records).open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    return list(records)


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


@functools.lru_cache(maxsize=100_000)
def _place_from_codes(province: str, commune: str) -> tuple[str | None, str | None]:
    """Current (province, commune) from a record's codes, which may be legacy or current.

    Exports carry either the pre-2025 codes or the current ones, both 2 + 5 digits. A pair
    found in the legacy tables is converted; otherwise the codes are taken as current
    (current communes often keep one absorbed ward's code, so both readings then agree).
    """
    legacy = current_units(province, commune or None)
    if legacy.commune_code or legacy.commune_candidates:
        return legacy.province_code, legacy.commune_code
    if commune:
        return province, commune
    return legacy.province_code or province, None


@functools.lru_cache(maxsize=100_000)
def _place_from_address(address: str) -> tuple[str | None, str | None]:
    """Current (province, commune) parsed from free text; slow, so used only without codes."""
    parsed = normalize_address(address)
    return parsed.province_code, parsed.commune_code


def _features(row: Mapping[str, Any]) -> dict[str, Any]:
    parts = split_name(_text(row, "full_name"))
    year = month = day = None
    try:
        born = parse_date(_text(row, "birth_date"))
        year, month, day = born.year, born.month, born.day
    except ValueError:
        pass
    sex = normalize_sex(_text(row, "sex") or None)
    cccd = _text(row, "cccd")
    # Only a CCCD consistent with this record's own sex and birth year identifies it: a
    # child's record carrying the mother's number fails on the birth year.
    valid_cccd = cccd if cccd and year is not None and not check_cccd(cccd, sex, year) else None
    bhxh = _text(row, "bhxh")
    if not bhxh or check_bhxh(bhxh):
        bhxh = ""
        bhyt = _text(row, "bhyt")
        info = decode_bhyt(bhyt) if bhyt and not check_bhyt(bhyt) else None
        if info is not None:
            bhxh = info.bhxh_number  # the card code embeds the BHXH number
    province, commune = None, None
    if _text(row, "province_code"):
        province, commune = _place_from_codes(
            _text(row, "province_code"), _text(row, "commune_code")
        )
    elif _text(row, "address"):
        province, commune = _place_from_address(_text(row, "address"))
    phone = _text(row, "phone")
    return {
        "record_id": _text(row, "record_id"),
        "source": _text(row, "source") or None,
        "family_key": name_key(parts.family) or None,
        "middle_key": name_key(parts.middle) or None,
        "given_key": name_key(parts.given) or None,
        "name_key": name_key(_text(row, "full_name")) or None,
        "birth_year": year,
        "birth_month": month,
        "birth_day": day,
        "sex": sex if sex in ("M", "F") else None,
        "cccd": valid_cccd,
        "bhxh": bhxh or None,
        "phone": normalize_phone(phone) if phone else None,
        "province": province,
        "commune": commune,
    }


_SCHEMA = pa.schema(
    [(c, pa.string()) for c in FEATURE_COLUMNS[:6]]
    + [(c, pa.int32()) for c in ("birth_year", "birth_month", "birth_day")]
    + [(c, pa.string()) for c in FEATURE_COLUMNS[9:]]
)


def prepare(records: Records) -> pa.Table:
    """Normalised matching features, one row per record (columns `FEATURE_COLUMNS`).

    An Arrow table because DuckDB (and so Splink) reads it without a copy and it needs no
    pandas. Values that fail validation are null rather than kept: a wrong identifier
    compared as if it were right does more harm than a missing one.
    """
    rows = [_features(r) for r in _read(records)]
    ids = [r["record_id"] for r in rows]
    if len(set(ids)) != len(ids) or "" in ids:
        raise ValueError("every record needs a unique, non-empty record_id")
    return pa.Table.from_pylist(rows, schema=_SCHEMA)


# --------------------------------------------------------------------------- the model


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
        reordered = (
            f"list_contains(string_split(name_key_r, ' '), {col}_l) AND "
            f"list_contains(string_split(name_key_l, ' '), {col}_r)"
        )
        return cl.CustomComparison(
            output_column_name=col,
            comparison_levels=[
                cll.NullLevel(col),
                cll.ExactMatchLevel(col, term_frequency_adjustments=tf),
                cll.JaroWinklerLevel(col, 0.92),
                cll.CustomLevel(reordered, f"{col} is a word of the other name"),
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
            cll.CustomLevel(
                f"{y}_l = {y}_r AND ({m}_l IS NULL OR {m}_r IS NULL "
                f"OR ({m}_l = {m}_r AND ({d}_l IS NULL OR {d}_r IS NULL)))",
                "same year, rest unknown on one side",
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
            cl.ExactMatch("sex"),
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
        blocking_rules_to_generate_predictions=[
            block_on("birth_year", "given_key"),
            block_on("family_key", "birth_year", "birth_month", "birth_day"),
            block_on("phone"),
            block_on("commune", "birth_year"),
            block_on("cccd"),
            block_on("bhxh"),
        ],
        retain_intermediate_calculation_columns=True,
        additional_columns_to_retain=["name_key"],
    )


def _db_api() -> Any:
    from splink import DuckDBAPI

    return DuckDBAPI()


def _linker(table: pa.Table, settings: Any) -> Any:
    from splink import Linker

    db = _db_api()
    return Linker(db.register(table), settings, log_level=None)


class LinkageModel:
    """A trained Splink model (its JSON settings), reusable on new data and saveable."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    @classmethod
    def load(cls, path: str | Path) -> LinkageModel:
        """Read a model written by `save_model` (Splink's JSON model format)."""
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def save_model(self, path: str | Path) -> None:
        """Write the model as Splink JSON so that training need not be repeated."""
        Path(path).write_text(json.dumps(self.settings, indent=2), encoding="utf-8")


def save_model(model: LinkageModel, path: str | Path) -> None:
    """Module-level alias of `LinkageModel.save_model`."""
    model.save_model(path)


def _train_linker(table: pa.Table) -> Any:
    """Fit the model on the data to be linked: no labelled pairs exist for Vietnam.

    u from random pairs, the prior from the identifier rules (assumed to find about
    half of all matches), m by EM on three blockings that between them leave every field free.
    """
    from splink import block_on

    splink_logger = logging.getLogger("splink")
    level = splink_logger.level
    splink_logger.setLevel(logging.ERROR)
    try:
        linker = _linker(table, _settings())
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
    finally:
        splink_logger.setLevel(level)
    return linker


def train(records: Records | pa.Table) -> LinkageModel:
    """Train a model on unlabelled records (raw rows, a CSV path or `prepare` output)."""
    table = records if isinstance(records, pa.Table) else prepare(records)
    linker = _train_linker(table)
    return LinkageModel(linker.misc.save_model_to_json())


# --------------------------------------------------------------------------- clustering


class _Clusters:
    """Union-find over record ids that also tracks each cluster's identifiers.

    The identifiers let probabilistic merges be refused when two clusters hold different
    CCCDs or BHXH numbers (not explained by one mistyped digit): Fellegi-Sunter scores
    pairs, and without this a chain of plausible pairs can join two registered people.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.parent: dict[str, str] = {}
        self.ids: dict[str, dict[str, set[str]]] = {}
        for r in rows:
            rid = r["record_id"]
            self.parent[rid] = rid
            self.ids[rid] = {c: ({r[c]} if r[c] else set()) for c in ("cccd", "bhxh")}

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def conflict(self, a: str, b: str) -> bool:
        """True when the clusters of `a` and `b` carry clearly different identifiers."""
        ia, ib = self.ids[self.find(a)], self.ids[self.find(b)]
        return any(
            x != y and not one_digit_apart(x, y)
            for col in ("cccd", "bhxh")
            for x in ia[col]
            for y in ib[col]
        )

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            keep, drop = min(ra, rb), max(ra, rb)
            self.parent[drop] = keep
            dropped = self.ids.pop(drop)
            for col in ("cccd", "bhxh"):
                self.ids[keep][col] |= dropped[col]


def _deterministic_edges(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs sharing a valid CCCD or a BHXH number (a star per shared value)."""
    edges: list[tuple[str, str]] = []
    for col in ("cccd", "bhxh"):
        first: dict[str, str] = {}
        for r in rows:
            value = r[col]
            if value:
                if value in first:
                    edges.append((first[value], r["record_id"]))
                else:
                    first[value] = r["record_id"]
    return edges


def link(
    records: Records | pa.Table,
    model: LinkageModel | str | Path | None = None,
    threshold: float = MATCH_THRESHOLD,
) -> list[tuple[str, str, float]]:
    """Assign each record a person: `(record_id, person_id, match_probability)`.

    Every input record appears exactly once, in input order. `person_id` is the cluster's
    CCCD when the cluster holds exactly one valid CCCD (stable across runs and meaningful
    to other systems), otherwise its smallest record_id. `match_probability` is the
    strongest link that put the record into its cluster (1.0 for identifier links and for
    a record alone in its cluster). Without `model`, a model is trained on the input;
    pass a `LinkageModel` or the path of a saved one to reuse it.
    """
    table = records if isinstance(records, pa.Table) else prepare(records)
    rows = table.to_pylist()
    if not rows:
        return []
    best: dict[str, float] = {}
    uf = _Clusters(rows)
    for a, b in _deterministic_edges(rows):
        uf.union(a, b)
        best[a] = best[b] = 1.0
    if len(rows) > 1:
        if model is None:
            linker = _train_linker(table)
        else:
            loaded = model if isinstance(model, LinkageModel) else LinkageModel.load(model)
            linker = _linker(table, loaded.settings)
        predictions = linker.inference.predict(
            threshold_match_probability=threshold, warning_mode="never"
        )
        # Strongest pairs first, so that an identifier conflict blocks the weaker link.
        # A pair whose given names clearly differ is never linked: that is what separates
        # twins and siblings sharing surname, birth date, address and the parents' phone.
        # (A name in another order, split wrongly, has a level of its own above 0.)
        edges = (
            predictions.as_duckdbpyrelation()
            .filter("gamma_given_key <> 0")
            .select("record_id_l, record_id_r, match_probability")
            .order("match_probability DESC, record_id_l, record_id_r")
        )
        for a, b, p in edges.fetchall():
            if uf.conflict(a, b):
                continue
            uf.union(a, b)
            best[a] = max(best.get(a, 0.0), p)
            best[b] = max(best.get(b, 0.0), p)
    clusters: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        clusters.setdefault(uf.find(r["record_id"]), []).append(r)
    person: dict[str, str] = {}
    for root, members in clusters.items():
        cccds = {m["cccd"] for m in members if m["cccd"]}
        person[root] = cccds.pop() if len(cccds) == 1 else root
    return [
        (r["record_id"], person[uf.find(r["record_id"])], best.get(r["record_id"], 1.0))
        for r in rows
    ]
