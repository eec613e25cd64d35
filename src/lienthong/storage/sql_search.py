"""Compile a :class:`SearchQuery` into SQL over the index tables.

Matching follows https://hl7.org/fhir/R4/search.html: values of one parameter
are OR'ed, parameters AND'ed. The most selective positive criterion drives the
query (``r.pk IN (...)``) and the others are checked per candidate with
correlated ``EXISTS`` probes on the ``(pk, sp)`` index, so a patient
compartment search touches only that patient's rows however common the code.

Stored ranges are ``[low, high]``; a search value carries its own implied
range ``[L, H]`` (``2020`` is the whole year, ``100`` is ``[99.5, 100.5)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lienthong.storage.query import (
    CanonicalValue,
    CompositeValue,
    Criterion,
    NearValue,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    TokenValue,
    unit_vector,
)

MAX_STRING = "\U0010ffff"

TABLE_OF_TYPE = {
    "string": "idx_string",
    "token": "idx_token",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "reference": "idx_reference",
    "uri": "idx_uri",
    "composite": "idx_composite",
    "special": "idx_quantity",  # Location.near: unit-sphere coordinates, see near_cond
}

#: The index rows of ``Location.near`` are three quantity rows with these codes: the
#: position as a point on the unit sphere, so a great-circle distance bound is a
#: bound on the straight-line (chord) distance, arithmetic any SQL dialect has.
NEAR_AXES = ("x", "y", "z")
EARTH_RADIUS_KM = 6371.0088

# Which criteria narrow a search most, to pick the one that drives the query.
_SELECTIVITY = {
    "reference": 0,
    "_id": 0,
    "uri": 1,
    "token": 2,
    "string": 3,
    "composite": 3,
    "quantity": 4,
    "number": 4,
    "date": 5,
}


class ParamIds:
    """Maps (resource type, parameter code) to the integer ``sp`` index rows carry."""

    def __init__(self, mapping: dict[tuple[str, str], int]) -> None:
        self._ids = mapping

    def id(self, res_type: str, code: str) -> int:
        try:
            return self._ids[(res_type, code)]
        except KeyError:
            raise KeyError(f"search parameter {res_type}.{code} is not indexed") from None

    def get(self, res_type: str, code: str) -> int | None:
        return self._ids.get((res_type, code))


@dataclass
class CompiledSearch:
    page_sql: str
    page_args: list[Any]
    count_sql: str
    count_args: list[Any]
    pk_sql: str  # every matching pk, unordered (count_args apply)
    key_sql: str = ""  # (pk, version) in result order; page_args apply


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class _Builder:
    def __init__(
        self,
        params: ParamIds,
        visible: frozenset[str] | None = None,
        public_types: frozenset[str] = frozenset(),
    ) -> None:
        self.params = params
        self.n = 0
        self.visible = sorted(visible) if visible is not None else None
        self.public_types = sorted(public_types)

    def visible_cond(self, r: str) -> tuple[str, list[Any]]:
        """Resource alias ``r`` may be seen: every patient it names is visible, and it
        names at least one — or it is reference data (``public_types``) — and a Patient
        is visible itself.

        Compartment membership is read from the reference index: every reference to
        a Patient puts the resource in that patient's compartment.
        """
        if self.visible is None:
            return "1 = 1", []
        if not self.visible:
            if not self.public_types:
                return "1 = 0", []
            marks = ", ".join("?" for _ in self.public_types)
            v = self.alias()
            return (
                f"{r}.res_type IN ({marks}) AND NOT EXISTS (SELECT 1 FROM idx_reference {v} "
                f"WHERE {v}.pk = {r}.pk AND {v}.target_type = 'Patient')",
                list(self.public_types),
            )
        v, w = self.alias(), self.alias()
        marks = ", ".join("?" for _ in self.visible)
        public = ", ".join("?" for _ in self.public_types) or "NULL"
        sql = (
            f"NOT EXISTS (SELECT 1 FROM idx_reference {v} WHERE {v}.pk = {r}.pk "
            f"AND {v}.target_type = 'Patient' AND {v}.target_id NOT IN ({marks})) "
            f"AND ({r}.res_type <> 'Patient' OR {r}.res_id IN ({marks})) "
            f"AND ({r}.res_type IN ({public}) OR {r}.res_type = 'Patient' "
            f"OR EXISTS (SELECT 1 FROM idx_reference {w} WHERE {w}.pk = {r}.pk "
            f"AND {w}.target_type = 'Patient' AND {w}.target_id IN ({marks})))"
        )
        args: list[Any] = [*self.visible, *self.visible, *self.public_types, *self.visible]
        return sql, args

    def alias(self) -> str:
        self.n += 1
        return f"x{self.n}"

    # -- one value of one parameter, as a condition on index alias ``x`` --------

    def value_cond(
        self, ptype: str, modifier: str | None, value: Any, x: str, crit: Criterion | None = None
    ) -> tuple[str, list[Any]]:
        if isinstance(value, CanonicalValue):
            assert crit is not None
            return self._canonical_cond(value, modifier, x, crit)
        if ptype == "token":
            return _token_cond(value, modifier, x, "system", "code", "text")
        if ptype == "string":
            return _string_cond(value, modifier, f"{x}.value", f"{x}.exact")
        if ptype == "date":
            return _range_cond(value, f"{x}.low", f"{x}.high")
        if ptype == "number":
            return _range_cond(value, f"{x}.low", f"{x}.high")
        if ptype == "quantity":
            sql, args = _range_cond(value, f"{x}.low", f"{x}.high")
            if value.code:
                if value.system:
                    sql += f" AND {x}.code = ? AND {x}.system = ?"
                    args += [value.code, value.system]
                else:
                    sql += f" AND ({x}.code = ? OR {x}.unit = ?)"
                    args += [value.code, value.code.lower()]
            return sql, args
        if ptype == "reference":
            return _reference_cond(value, modifier, x)
        if ptype == "uri":
            return _uri_cond(value, modifier, x)
        if ptype == "composite":
            return self._composite_cond(value, x)
        raise ValueError(f"unsupported search parameter type {ptype}")

    def _canonical_cond(
        self, value: CanonicalValue, modifier: str | None, x: str, crit: Criterion
    ) -> tuple[str, list[Any]]:
        """``url|version``: the url, and the resource's version parameter; with
        ``:below`` the version or any version under it (``1.2`` finds ``1.2.3``)."""
        v = self.alias()
        sp = self.params.id(crit.resource_type, value.version_param)
        version = f"{v}.code = ?"
        args: list[Any] = [value.url, sp, value.version]
        if modifier == "below":
            version = f"({v}.code = ? OR ({v}.code >= ? AND {v}.code < ?))"
            below = value.version + "."
            args += [below, below + MAX_STRING]
        return (
            f"{x}.uri = ? AND EXISTS (SELECT 1 FROM idx_token {v} WHERE {v}.pk = {x}.pk "
            f"AND {v}.sp = ? AND {version})",
            args,
        )

    def near_order(self, crit: Criterion, r: str) -> tuple[str, list[Any]]:
        """The squared chord from a near search's point to resource alias ``r``."""
        value = crit.values[0]
        assert isinstance(value, NearValue)
        px, py, pz = unit_vector(value.latitude, value.longitude)
        x, y, z = self.alias(), self.alias(), self.alias()
        sp = self.params.id(crit.resource_type, crit.code)
        return (
            f"(SELECT ({x}.low - ?) * ({x}.low - ?) + ({y}.low - ?) * ({y}.low - ?) "
            f"+ ({z}.low - ?) * ({z}.low - ?) FROM idx_quantity {x} "
            f"JOIN idx_quantity {y} ON {y}.pk = {x}.pk AND {y}.sp = {x}.sp AND {y}.code = 'y' "
            f"JOIN idx_quantity {z} ON {z}.pk = {x}.pk AND {z}.sp = {x}.sp AND {z}.code = 'z' "
            f"WHERE {x}.pk = {r}.pk AND {x}.sp = ? AND {x}.code = 'x')",
            [px, px, py, py, pz, pz, sp],
        )

    def _composite_cond(self, value: CompositeValue, x: str) -> tuple[str, list[Any]]:
        sql, args = _token_cond(value.first, None, x, "system1", "code1", None)
        second = value.second
        if isinstance(second, TokenValue):
            s2, a2 = _token_cond(second, None, x, "system2", "code2", None)
        elif isinstance(second, RangeValue) and isinstance(second.low, str):
            s2, a2 = _range_cond(second, f"{x}.date_low2", f"{x}.date_high2")
        elif isinstance(second, RangeValue):
            s2, a2 = _range_cond(second, f"{x}.num_low2", f"{x}.num_high2")
            if second.code:
                s2 += f" AND {x}.code2 = ?"
                a2.append(second.code)
                if second.system:
                    s2 += f" AND {x}.system2 = ?"
                    a2.append(second.system)
        else:
            s2, a2 = _string_cond(str(second), None, f"{x}.str2", f"{x}.str2")
        return f"{sql} AND {s2}", args + a2

    # -- a whole criterion about resource alias ``r`` -------------------------

    def positive(self, crit: Criterion) -> tuple[str, str, str, list[Any]]:
        """(source, alias whose pk column matches, where, args) for the criterion's rows."""
        x = self.alias()
        if crit.has is not None:
            return self._has(crit, x)
        table = TABLE_OF_TYPE[crit.param_type]
        if crit.chain:
            return self._chain(crit, x, self.params.id(crit.resource_type, crit.code))
        sp_sql, args = self.sp_cond(crit, x)
        modifier = None if crit.modifier == "not" else crit.modifier
        if crit.param_type == "special":
            return self._near(crit, x, sp_sql, args)
        ors, or_args = self.values_cond(crit, modifier, x)
        return f"{table} {x}", x, f"{sp_sql} AND {ors}", args + or_args

    def sp_cond(self, crit: Criterion, x: str) -> tuple[str, list[Any]]:
        """``x.sp`` is the criterion's parameter (or one of its ``sp_pairs``)."""
        pairs = crit.sp_pairs or ((crit.resource_type, crit.code),)
        ids = sorted({self.params.id(t, c) for t, c in pairs})
        if len(ids) == 1:
            return f"{x}.sp = ?", ids
        return f"{x}.sp IN ({', '.join('?' for _ in ids)})", ids

    def values_cond(self, crit: Criterion, modifier: str | None, x: str) -> tuple[str, list[Any]]:
        """The OR of the criterion's values, kept shallow however many there are.

        Values that are plain equalities on one column become ``IN`` lists (grouped by
        the other columns they fix); the rest are OR'ed as a balanced tree, so a list
        of thousands of values neither nests past SQLite's expression depth limit nor
        grows the SQL much beyond one placeholder per value.
        """
        groups: dict[tuple[str, ...], list[Any]] = {}
        rest: list[tuple[str, list[Any]]] = []
        for value in crit.values:
            key = _equality_key(crit.param_type, modifier, value, x)
            if key is None:
                sql, a = self.value_cond(crit.param_type, modifier, value, x, crit)
                rest.append((f"({sql})", a))
            else:
                (fixed, fixed_args), (column, item) = key
                groups.setdefault((fixed, column, *map(str, fixed_args)), [fixed_args]).append(item)
        conds = list(rest)
        for (fixed, column, *_), (fixed_args, *items) in groups.items():
            marks = ", ".join("?" for _ in items)
            sql = (
                f"{column} IN ({marks})" if fixed == "" else f"({fixed} AND {column} IN ({marks}))"
            )
            conds.append((sql, [*fixed_args, *items]))
        return _balanced_or(conds)

    def _near(
        self, crit: Criterion, x: str, sp_sql: str, args: list[Any]
    ) -> tuple[str, str, str, list[Any]]:
        """Locations within a distance: three coordinate rows joined on the pk."""
        y, z = self.alias(), self.alias()
        source = (
            f"idx_quantity {x} JOIN idx_quantity {y} ON {y}.pk = {x}.pk AND {y}.sp = {x}.sp "
            f"AND {y}.code = 'y' JOIN idx_quantity {z} ON {z}.pk = {x}.pk AND {z}.sp = {x}.sp "
            f"AND {z}.code = 'z'"
        )
        ors: list[tuple[str, list[Any]]] = []
        for value in crit.values:
            assert isinstance(value, NearValue)
            ors.append(near_cond(value, f"{x}.low", f"{y}.low", f"{z}.low"))
        where, where_args = _balanced_or(ors)
        return source, x, f"{sp_sql} AND {x}.code = 'x' AND {where}", args + where_args

    def _chain(self, crit: Criterion, x: str, sp: int) -> tuple[str, str, str, list[Any]]:
        t = self.alias()
        ors: list[str] = []
        args: list[Any] = [sp]
        for sub in crit.chain:
            sql, a = self.condition(sub, t)
            ors.append(f"({t}.res_type = ? AND {sql})")
            args += [sub.resource_type, *a]
        vis, vis_args = self.visible_cond(t)
        return (
            f"idx_reference {x} JOIN resource {t} ON {t}.res_type = {x}.target_type "
            f"AND {t}.res_id = {x}.target_id",
            x,
            f"{x}.sp = ? AND {t}.deleted = 0 AND ({' OR '.join(ors)}) AND {vis}",
            args + vis_args,
        )

    def _has(self, crit: Criterion, x: str) -> tuple[str, str, str, list[Any]]:
        """``_has:Source:ref:param=v``: rows whose pk is the *target* of a matching source."""
        assert crit.has is not None and crit.has_source_type and crit.has_ref_param
        t = self.alias()
        sp = self.params.id(crit.has_source_type, crit.has_ref_param)
        sql, args = self.condition(crit.has, x)
        # the referring resources a _has looks at must be visible too
        src = self.alias()
        vis, vis_args = self.visible_cond(src)
        # a derived table of target pks, so callers can treat it like an index table
        outer = self.alias()
        return (
            f"(SELECT {t}.pk AS pk FROM idx_reference {x} JOIN resource {t} "
            f"ON {t}.res_type = {x}.target_type AND {t}.res_id = {x}.target_id "
            f"JOIN resource {src} ON {src}.pk = {x}.pk "
            f"WHERE {x}.sp = ? AND {x}.target_type = ? AND {t}.deleted = 0 AND {sql} "
            f"AND {vis}) {outer}",
            outer,
            "1 = 1",
            [sp, crit.resource_type, *args, *vis_args],
        )

    def condition(self, crit: Criterion, r: str) -> tuple[str, list[Any]]:
        """A boolean SQL expression: resource alias ``r`` satisfies ``crit``."""
        if crit.code == "_id":
            ids = [v.code if isinstance(v, TokenValue) else str(v) for v in crit.values]
            op = "NOT IN" if crit.modifier == "not" else "IN"
            return f"{r}.res_id {op} ({', '.join('?' for _ in ids)})", list(ids)
        if crit.code == "_lastUpdated":
            ors: list[tuple[str, list[Any]]] = []
            for v in crit.values:
                assert isinstance(v, RangeValue)
                sql, a = _range_cond(v, f"{r}.last_updated", f"{r}.last_updated")
                ors.append((f"({sql})", a))
            return _balanced_or(ors)
        if crit.modifier == "missing":
            table = TABLE_OF_TYPE[crit.param_type]
            x = self.alias()
            sp_sql, sp_args = self.sp_cond(crit, x)
            missing = bool(crit.values and crit.values[0] is True)
            probe = f"EXISTS (SELECT 1 FROM {table} {x} WHERE {x}.pk = {r}.pk AND {sp_sql})"
            return (f"NOT {probe}" if missing else probe), sp_args
        source, alias, where, args = self.positive(crit)
        probe = f"EXISTS (SELECT 1 FROM {source} WHERE {alias}.pk = {r}.pk AND {where})"
        if crit.modifier == "not":
            return f"NOT {probe}", args
        return probe, args

    def driver(self, crit: Criterion) -> tuple[str, list[Any]]:
        """A subquery selecting the pks matching ``crit``, to drive the search."""
        if crit.code == "_id":
            raise AssertionError("_id drives through the resource table")
        source, alias, where, args = self.positive(crit)
        return f"SELECT {alias}.pk FROM {source} WHERE {where}", args

    def sort_expr(self, key: SortKey, sp: int | None, r: str) -> tuple[str, list[Any]]:
        if key.code == "_id":
            return f"{r}.res_id", []
        if key.code == "_lastUpdated":
            return f"{r}.last_updated", []
        table = TABLE_OF_TYPE[key.param_type]
        column = {
            "idx_string": "value",
            "idx_token": "code",
            "idx_date": "high" if key.descending else "low",
            "idx_number": "high" if key.descending else "low",
            "idx_quantity": "high" if key.descending else "low",
            "idx_reference": "target_id",
            "idx_uri": "uri",
            "idx_composite": "code1",
        }[table]
        agg = "MAX" if key.descending else "MIN"
        x = self.alias()
        return (
            f"(SELECT {agg}({x}.{column}) FROM {table} {x} WHERE {x}.pk = {r}.pk AND {x}.sp = ?)",
            [sp],
        )


def _token_cond(
    value: TokenValue, modifier: str | None, x: str, system: str, code: str, text: str | None
) -> tuple[str, list[Any]]:
    if modifier == "text" and text is not None:
        return f"{x}.{text} LIKE ? ESCAPE '\\'", [f"%{like_escape(value.code or '')}%"]
    conds: list[str] = []
    args: list[Any] = []
    if value.code is not None:
        conds.append(f"{x}.{code} = ?")
        args.append(value.code)
    if value.system == "":
        conds.append(f"{x}.{system} IS NULL")
    elif value.system is not None:
        conds.append(f"{x}.{system} = ?")
        args.append(value.system)
    return " AND ".join(conds) or "1 = 1", args


def _string_cond(
    value: str, modifier: str | None, folded: str, exact: str
) -> tuple[str, list[Any]]:
    if modifier == "exact":
        return f"{exact} = ?", [value]
    if modifier == "contains":
        return f"{folded} LIKE ? ESCAPE '\\'", [f"%{like_escape(value)}%"]
    # default: starts-with on the folded form, as an index range scan
    return f"{folded} >= ? AND {folded} < ?", [value, value + MAX_STRING]


def _range_cond(v: RangeValue, low: str, high: str) -> tuple[str, list[Any]]:
    """Compare a stored range [low, high] with a search value (search.html#prefix)."""
    p = v.prefix
    exact = v.exact if v.exact is not None else None
    lo, hi = v.low, v.high
    if p == "eq":
        return f"{low} >= ? AND {high} <= ?", [lo, hi]
    if p == "ne":
        return f"NOT ({low} >= ? AND {high} <= ?)", [lo, hi]
    if p == "ap":
        if exact is not None:
            margin = abs(exact) * 0.1
            return f"{low} <= ? AND {high} >= ?", [exact + margin, exact - margin]
        return f"{low} <= ? AND {high} >= ?", [hi, lo]
    # numbers compare with the exact value; dates with the bounds of their precision
    gt_bound = exact if exact is not None else hi
    lt_bound = exact if exact is not None else lo
    if p == "gt":
        return f"{high} > ?", [gt_bound]
    if p == "lt":
        return f"{low} < ?", [lt_bound]
    if p == "ge":
        return f"{high} >= ?", [lt_bound]
    if p == "le":
        return f"{low} <= ?", [gt_bound]
    if p == "sa":
        return f"{low} > ?", [gt_bound]
    if p == "eb":
        return f"{high} < ?", [lt_bound]
    raise ValueError(f"unknown prefix {p}")


def _reference_cond(v: ReferenceValue, modifier: str | None, x: str) -> tuple[str, list[Any]]:
    if v.url is not None and v.target_id is None:
        return f"{x}.url = ?", [v.url]
    conds = [f"{x}.target_id = ?"]
    args: list[Any] = [v.target_id]
    if v.target_type:
        conds.append(f"{x}.target_type = ?")
        args.append(v.target_type)
    return " AND ".join(conds), args


def _uri_cond(v: Any, modifier: str | None, x: str) -> tuple[str, list[Any]]:
    uri = str(v)
    if modifier == "below":
        return f"{x}.uri >= ? AND {x}.uri < ?", [uri, uri + MAX_STRING]
    if modifier == "above":
        prefixes = [uri[: i + 1] for i, ch in enumerate(uri) if ch == "/"] + [uri]
        return f"{x}.uri IN ({', '.join('?' for _ in prefixes)})", prefixes
    return f"{x}.uri = ?", [uri]


def _balanced_or(conds: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """``(a OR b OR ...)`` nested as a balanced tree: depth grows with log2 of the count."""
    if not conds:
        return "1 = 0", []
    if len(conds) == 1:
        sql, args = conds[0]
        return f"({sql})", list(args)
    mid = len(conds) // 2
    left, la = _balanced_or(conds[:mid])
    right, ra = _balanced_or(conds[mid:])
    return f"({left} OR {right})", la + ra


def _equality_key(
    ptype: str, modifier: str | None, value: Any, x: str
) -> tuple[tuple[str, list[Any]], tuple[str, Any]] | None:
    """For a value that is ``column = item`` under fixed other conditions, the
    ``((fixed sql, fixed args), (column, item))`` that lets it share an ``IN`` list."""
    if ptype == "token" and modifier is None and isinstance(value, TokenValue):
        if value.code is None:
            return None
        if value.system is None:
            return ("", []), (f"{x}.code", value.code)
        if value.system == "":
            return (f"{x}.system IS NULL", []), (f"{x}.code", value.code)
        return (f"{x}.system = ?", [value.system]), (f"{x}.code", value.code)
    if ptype == "reference" and isinstance(value, ReferenceValue):
        if value.url is not None and value.target_id is None:
            return ("", []), (f"{x}.url", value.url)
        if value.target_type:
            return (f"{x}.target_type = ?", [value.target_type]), (
                f"{x}.target_id",
                value.target_id,
            )
        return ("", []), (f"{x}.target_id", value.target_id)
    if ptype == "uri" and modifier is None and isinstance(value, str):
        return ("", []), (f"{x}.uri", value)
    if ptype == "string" and modifier == "exact" and isinstance(value, str):
        return ("", []), (f"{x}.exact", value)
    return None


def near_cond(v: NearValue, x: str, y: str, z: str) -> tuple[str, list[Any]]:
    """Within ``v.km`` of the point, as a bound on the chord between unit vectors:
    a great-circle distance d is a chord of 2 sin(d / 2R), monotonic up to half the
    circumference. A box on each axis first, which the (sp, low) index can use."""
    px, py, pz = unit_vector(v.latitude, v.longitude)
    angle = min(v.km / EARTH_RADIUS_KM, math.pi)
    chord = 2 * math.sin(angle / 2)
    box = " AND ".join(f"{c} BETWEEN ? AND ?" for c in (x, y, z))
    box_args = [b for p in (px, py, pz) for b in (p - chord, p + chord)]
    dist = f"({x} - ?) * ({x} - ?) + ({y} - ?) * ({y} - ?) + ({z} - ?) * ({z} - ?) <= ?"
    return f"{box} AND {dist}", [*box_args, px, px, py, py, pz, pz, chord * chord * (1 + 1e-12)]


def _driver_rank(crit: Criterion) -> int:
    if crit.modifier in ("not", "missing") or crit.code == "_lastUpdated":
        return 99
    if crit.has is not None or crit.chain:
        return 1
    if crit.code == "_id":
        return 0
    if crit.param_type == "string" and crit.modifier == "contains":
        return 8
    if crit.modifier == "text":
        return 9
    if crit.param_type in ("date", "number", "quantity") and any(
        isinstance(v, RangeValue) and v.prefix in ("ne", "ap") for v in crit.values
    ):
        return 10
    return _SELECTIVITY.get(crit.param_type, 7)


def compile_search(query: SearchQuery, params: ParamIds) -> CompiledSearch:
    b = _Builder(params, query.visible_patients, query.public_types)
    where: list[str] = []
    args: list[Any] = []
    source = "resource r"
    criteria = sorted(query.criteria, key=_driver_rank)
    if criteria and _driver_rank(criteria[0]) < 99 and criteria[0].code != "_id":
        sub, sub_args = b.driver(criteria[0])
        where.append(f"r.pk IN ({sub})")
        args += sub_args
        criteria = criteria[1:]
    if query.resource_type is not None:
        where.append("r.res_type = ?")
        args.append(query.resource_type)
    elif query.resource_types is not None:
        types = sorted(set(query.resource_types))
        where.append(f"r.res_type IN ({', '.join('?' for _ in types)})" if types else "1 = 0")
        args += types
    if not query.include_deleted:
        where.append("r.deleted = 0")
    for crit in criteria:
        sql, a = b.condition(crit, "r")
        where.append(sql)
        args += a
    if query.visible_patients is not None:
        # last: probed only for rows that meet every criterion
        vis, vis_args = b.visible_cond("r")
        where.append(vis)
        args += vis_args
    where_sql = " AND ".join(where) or "1 = 1"
    order: list[str] = []
    order_args: list[Any] = []
    for key in query.sort:
        sp = None
        if key.code not in ("_id", "_lastUpdated"):
            assert query.resource_type is not None
            sp = params.id(query.resource_type, key.code)
        expr, a = b.sort_expr(key, sp, "r")
        direction = "DESC" if key.descending else "ASC"
        order.append(f"CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END, {expr} {direction}")
        order_args += a + a
    near = [c for c in query.criteria if c.param_type == "special" and len(c.values) == 1]
    if not query.sort and near:
        # location.html#positional: nearest first, unless the search sorts otherwise
        expr, a = b.near_order(near[0], "r")
        order.append(f"{expr} ASC")
        order_args += a
    order.append("r.pk ASC")
    tail = f"FROM {source} WHERE {where_sql} ORDER BY {', '.join(order)} LIMIT ? OFFSET ?"
    page_sql = f"SELECT r.pk {tail}"
    return CompiledSearch(
        page_sql=page_sql,
        page_args=[*args, *order_args, query.count, query.offset],
        count_sql=f"SELECT COUNT(*) FROM {source} WHERE {where_sql}",
        count_args=list(args),
        pk_sql=f"SELECT r.pk FROM {source} WHERE {where_sql}",
        key_sql=f"SELECT r.pk, r.version {tail}",
    )
