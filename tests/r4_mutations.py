"""Mutated resources for comparing the R4 structure validator with the former
``fhir.resources`` check, and the explained classes of their disagreements.

A mutation takes a valid resource, picks one element position (found by walking it with
the R4 structure: every object, array and primitive position with its element type) and
changes it in one way: a value of the wrong JSON type, a required element removed, an
unknown element added, a code outside its value set, a malformed date, an array where a
single value belongs or the reverse, a second type of a choice element, an empty value.
"""

from __future__ import annotations

import bz2
import collections
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from lienthong.fhir import structure as r4
from lienthong.fhir.errors import FhirError, Issue
from lienthong.fhir.validate import validate_resource
from tests.r4b_reference import model, reference_errors
from tests.synthea_data import SYNTHEA


@dataclass
class Position:
    """One element of a resource: ``parent[key]`` (and ``[index]`` for an array item)."""

    parent: dict[str, Any]
    key: str
    index: int | None
    slot: Any  # the R4 structure slot (lienthong.fhir.structure._Slot)
    owner: str  # the structure (type or backbone path) the element belongs to
    path: str


def positions(resource: dict[str, Any]) -> list[Position]:
    out: list[Position] = []

    def walk(node: dict[str, Any], st_name: str, path: str) -> None:
        st_ = r4.structure(st_name)
        assert st_ is not None
        for key, value in node.items():
            slot = st_.slots.get(key)
            if slot is None or slot.kind == r4.EXT:
                continue
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for i, item in items:
                where = f"{path}.{key}" + (f"[{i}]" if i is not None else "")
                out.append(Position(node, key, i, slot, st_name, where))
                if slot.kind == r4.COMPLEX and isinstance(item, dict):
                    walk(item, slot.target, where)
                elif slot.kind == r4.RESOURCE and isinstance(item, dict):
                    walk(item, item["resourceType"], where)

    walk(resource, resource["resourceType"], resource["resourceType"])
    return out


def containers(resource: dict[str, Any]) -> list[tuple[dict[str, Any], str, str]]:
    """Every object of the resource with its structure name and path (itself included)."""
    out = [(resource, resource["resourceType"], resource["resourceType"])]
    for p in positions(resource):
        value = p.parent[p.key] if p.index is None else p.parent[p.key][p.index]
        if p.slot.kind == r4.COMPLEX and isinstance(value, dict):
            out.append((value, p.slot.target, p.path))
        elif p.slot.kind == r4.RESOURCE and isinstance(value, dict):
            out.append((value, value["resourceType"], p.path))
    return out


WRONG_VALUES: list[Any] = [
    "yes", "no", "true", "false", "1", "0", "1.5", "-3", " ", "x y", "x  y", " x", "2020",
    "abc", "é", 1, 0, -1, 7, 2**31, -(2**31) - 1, 2**40, 1.0, 1.5, -0.5, 1e300,
    True, False, None, {}, [], {"x": 1}, [1], ["a"], [{}], {"value": 1},
]  # fmt: skip
DATES = [
    "2023-02-30", "2023-13-01", "2023-00-10", "2023-1-1", "20230101", "2023", "2023-02",
    "2024-02-29", "2023-02-29", "0000", "0001-01-01", "2023-01-01T10:00", "2023-01-01T10:00:00",
    "2023-01-01T10:00:00Z", "2023-01-01T25:00:00Z", "2023-01-01T10:00:60Z",
    "2023-01-01T10:00:00+07:00", "2023-01-01T10:00:00.123+07:00", "2023-01-01T10:00:00+15:00",
    "2023-01-01T10:00:00.Z", "2023-01-01 10:00:00Z", "2023-01-01T10:00:00z", "10:00:00",
    "10:00", "24:00:00", "2023-01-01Z", "2023-01-01T10:00:00-00:00", "+2023-01-01",
]  # fmt: skip
CODES = [
    "final", "male", "female", "unknown", "other", "official", "usual", "active", "completed",
    "amended", "entered-in-error", "generated", "collection", "transaction", "MALE", "nam",
    "in progress", "in-progress", "draft", "planned", "finished", "cancelled", "home", "work",
    "temp", "old", "billing", "phone", "email", "a  b", "", "x\ty",
]  # fmt: skip
NAMES = [
    "hoTen", "foo", "_foo", "valueInteger64", "fhir_comments", "resourceType", "Extension",
    "extension_", "_", "id ", "ID", "text", "language", "contained", "modifierExtension",
]  # fmt: skip


@dataclass
class Mutation:
    kind: str
    path: str  # where it applies
    element_type: str  # the R4 type of the element (or structure for object mutations)
    detail: Any

    def __str__(self) -> str:
        return f"{self.kind} at {self.path} ({self.element_type}): {self.detail!r}"


def _set(p: Position, value: Any) -> None:
    if p.index is None:
        p.parent[p.key] = value
    else:
        p.parent[p.key][p.index] = value


def _slot_type(p: Position) -> str:
    slot = p.slot
    if slot.kind == r4.PRIM:
        st_ = r4.structure(p.owner)
        assert st_ is not None
        for name, types, *_ in r4.elements(p.owner):
            keys = [name + t[0].upper() + t[1:] for t in types] if len(types) > 1 else [name]
            if slot.key in keys:
                return types[keys.index(slot.key)]
    if slot.kind == r4.COMPLEX:
        return str(slot.target)
    return "Resource"


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> tuple[dict[str, Any], Mutation]:
    resource = copy.deepcopy(draw(st.sampled_from(bases)))
    kind = draw(
        st.sampled_from(
            [
                "wrong-type",
                "remove",
                "unknown-element",
                "bad-code",
                "bad-date",
                "cardinality",
                "choice",
                "empty",
                "text",
            ]
        )
    )
    spots = positions(resource)
    if kind in ("wrong-type", "bad-code", "bad-date", "text", "empty", "cardinality"):
        wanted: Callable[[Position], bool] = {
            "wrong-type": lambda p: True,
            "bad-code": lambda p: _slot_type(p) == "code",
            "bad-date": lambda p: _slot_type(p) in ("date", "dateTime", "instant", "time"),
            "text": lambda p: p.slot.kind == r4.PRIM,
            "empty": lambda p: True,
            "cardinality": lambda p: p.index is None or p.index == 0,
        }[kind]
        spots = [p for p in spots if wanted(p)] or spots
        p = draw(st.sampled_from(spots))
        etype = _slot_type(p)
        if kind == "wrong-type":
            value = draw(st.sampled_from(WRONG_VALUES))
        elif kind == "bad-code":
            value = draw(st.sampled_from(CODES) | st.text(max_size=8))
        elif kind == "bad-date":
            value = draw(st.sampled_from(DATES))
        elif kind == "text":
            value = draw(st.text(max_size=12))
        elif kind == "empty":
            value = draw(st.sampled_from(["", {}, [], None, [None], [""], [{}]]))
        else:
            current = p.parent[p.key]
            value = current[0] if isinstance(current, list) else [current]
            p.index = None
        _set(p, value)
        return resource, Mutation(kind, p.path, etype, value)
    holders = containers(resource)
    parent, st_name, path = draw(st.sampled_from(holders))
    if kind == "remove":
        keys = [k for k in parent if k != "resourceType"]
        if not keys:
            return resource, Mutation("none", path, st_name, None)
        key = draw(st.sampled_from(sorted(keys)))
        del parent[key]
        return resource, Mutation(kind, f"{path}.{key}", st_name, key)
    if kind == "unknown-element":
        key = draw(st.sampled_from(NAMES) | st.from_regex(r"_?[a-z][A-Za-z]{0,8}", fullmatch=True))
        value = draw(st.sampled_from(["x", 1, True, {"x": "y"}, ["x"]]))
        parent[key] = value
        return resource, Mutation(kind, f"{path}.{key}", st_name, key)
    # choice: a second type beside an existing choice element, or a choice type set anew
    choices = [
        (name, types)
        for name, types, *_ in r4.elements(st_name)
        if len(types) > 1 and all(t in r4._checks() for t in types[:1])
    ]
    if not choices:
        return resource, Mutation("none", path, st_name, None)
    name, types = draw(st.sampled_from(choices))
    t = draw(
        st.sampled_from(
            [t for t in types if t in ("boolean", "string", "dateTime", "integer")] or list(types)
        )
    )
    value = {"boolean": True, "string": "x", "dateTime": "2020-01-01", "integer": 1}.get(
        t, {"id": "a"}
    )
    key = name + t[0].upper() + t[1:]
    parent[key] = value
    return resource, Mutation(kind, f"{path}.{key}", st_name, key)


# --- explained disagreements ----------------------------------------------------------


@dataclass(frozen=True)
class Disagreement:
    name: str
    explanation: str
    applies: Callable[[Mutation, list[str], list[Issue]], bool]


def _new_says(issues: list[Issue], *words: str) -> bool:
    return bool(issues) and all(any(w in i.diagnostics for w in words) for i in issues)


def _r4b_field(owner: str, key: str) -> bool | None:
    """Whether the R4B model of the structure ``owner`` has the JSON property ``key``;
    None when the structure has no R4B model to ask."""
    rtype, _, rest = owner.partition(".")
    cls = model(rtype)
    if cls is None:
        return None
    if rest:
        return None
    names = {info.alias or name for name, info in cls.model_fields.items()}
    return key in names


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "integer": (int,),
    "positiveInt": (int,),
    "unsignedInt": (int,),
    "decimal": (int, float),
}


def _wrong_json_type(m: Mutation) -> bool:
    """Whether the mutation put a value of another JSON type than R4 gives the element."""
    value = m.detail
    if m.element_type not in r4._checks():
        return not isinstance(value, dict)
    wanted = _JSON_TYPES.get(m.element_type, (str,))
    return type(value) not in wanted or (type(value) is bool and bool not in wanted)


def _unicode_space(m: Mutation) -> bool:
    value = m.detail
    return isinstance(value, str) and any(c.isspace() and ord(c) > 127 for c in value)


STRICTER = [
    Disagreement(
        "narrative-xhtml",
        "R4 narrative divs are restricted XHTML (one div in the XHTML namespace, basic "
        "formatting elements only, some content); the models take any string",
        lambda m, old, new: m.element_type == "xhtml" and _new_says(new, "narrative"),
    ),
    Disagreement(
        "contained-without-resourceType",
        "a contained resource with no resourceType (here an empty object): the models take "
        "it as an abstract Resource; R4 contains only resources of a concrete type",
        lambda m, old, new: m.element_type == "Resource" and _new_says(new, "resourceType"),
    ),
    Disagreement(
        "base64",
        "a base64Binary that is not base64 (characters outside the alphabet, length not a "
        "multiple of 4): the models take any string; R4's regex is four-character groups of "
        "the base64 alphabet",
        lambda m, old, new: m.element_type == "base64Binary" and _new_says(new, "not valid base64"),
    ),
    Disagreement(
        "lax-json-type",
        "fhir.resources (pydantic lax mode) coerces a JSON value of the wrong type: 'yes'/'no'/"
        "'true'/1/0 to booleans, '1' and 1.0 to integers, numeric strings to decimals, numbers "
        "to strings; R4 JSON gives every primitive one JSON type, so the R4 validator refuses",
        lambda m, old, new: (
            _wrong_json_type(m) and _new_says(new, "must be a JSON", "must be JSON")
        ),
    ),
    Disagreement(
        "ele-1-empty",
        "R4 JSON has no empty values (ele-1: an element has a value or children; no empty "
        "strings, objects or arrays, null only to align primitive arrays); fhir.resources drops "
        "nulls and accepts empty containers",
        lambda m, old, new: _new_says(new, "(ele-1)", "an empty", "null is not"),
    ),
    Disagreement(
        "integer-range",
        "R4 integers are 32-bit (-2147483648..2147483647); the models accept any Python int",
        lambda m, old, new: _new_says(new, "is outside the range"),
    ),
    Disagreement(
        "calendar-date",
        "R4 dates SHALL be valid dates; the models' date patterns accept e.g. 2023-02-30 "
        "inside a dateTime or instant",
        lambda m, old, new: _new_says(new, "is not a calendar date"),
    ),
    Disagreement(
        "r4-regex",
        "the R4 regex of the type refuses what the R4B models' own patterns allow (e.g. code "
        "with double spaces, years 0000, uri with spaces, time 24:00)",
        lambda m, old, new: _new_says(new, "is not a valid"),
    ),
    Disagreement(
        "cardinality",
        "an array given for a single element, or a single value for a repeating one: the R4B "
        "models wrap or unwrap some of them",
        lambda m, old, new: _new_says(new, "must be a JSON array", "must be a single value"),
    ),
    Disagreement(
        "choice-one-type",
        "a choice element [x] with two types present; the R4B models let some through",
        lambda m, old, new: _new_says(new, "may have one type only"),
    ),
    Disagreement(
        "r4-required-element",
        "an element R4 requires (min 1) that the R4B model does not",
        lambda m, old, new: _new_says(new, "a required element is missing"),
    ),
    Disagreement(
        "r4-binding",
        "a code outside the R4 value set that the R4B models' enum list allows (R4B changed "
        "the value set) or does not enforce (lists marked incomplete)",
        lambda m, old, new: _new_says(new, "is not one of"),
    ),
    Disagreement(
        "r4b-only-element",
        "an element of the R4B model that R4 does not have",
        lambda m, old, new: _new_says(new, "unknown element"),
    ),
    Disagreement(
        "control-character-in-extension",
        "a control character in a value the models coerce",
        lambda m, old, new: _new_says(new, "control characters"),
    ),
]
LAXER = [
    Disagreement(
        "unicode-whitespace",
        "the models' patterns use Python's Unicode \\s, so they refuse codes and strings with "
        "NBSP (U+00A0), NEL (U+0085) or other non-ASCII spaces; R4's regexes are Java-style "
        "(ASCII \\s), and a Vietnamese name with a no-break space is a valid string",
        lambda m, old, new: _unicode_space(m) and all("should match pattern" in o for o in old),
    ),
    Disagreement(
        "r4-only-element",
        "an element R4 has and the R4B model lacks (renamed or removed in R4B)",
        lambda m, old, new: all("Extra inputs are not permitted" in o for o in old),
    ),
    Disagreement(
        "r4b-required-element",
        "an element the R4B model requires that R4 leaves optional",
        lambda m, old, new: all("Field required" in o or "required" in o for o in old),
    ),
    Disagreement(
        "r4b-binding",
        "a code the R4 value set allows and the R4B models' enum list does not",
        lambda m, old, new: all("is not one of" in o for o in old),
    ),
]


def classify(mutation: Mutation, old: list[str], new: list[Issue]) -> Disagreement | None:
    """The explained class of a disagreement (old and new verdicts differ), or None."""
    for d in STRICTER if new else LAXER:
        if d.applies(mutation, old, new):
            return d
    return None


def new_issues(resource: dict[str, Any]) -> list[Issue]:
    """The issues ``validate_resource`` (the write path) raises for ``resource``."""
    try:
        validate_resource(resource)
    except FhirError as exc:
        return exc.issues
    return []


def sample(per_type: int, files: int) -> list[dict[str, Any]]:
    """The first ``per_type`` resources of each type in the first ``files`` Synthea bundles."""
    seen: collections.Counter[str] = collections.Counter()
    out = []
    for path in sorted(SYNTHEA.glob("*.json.bz2"))[:files]:
        for entry in orjson.loads(bz2.decompress(path.read_bytes()))["entry"]:
            res = entry["resource"]
            if seen[res["resourceType"]] < per_type:
                seen[res["resourceType"]] += 1
                out.append(res)
    return out


class Tally:
    """Verdicts of both checks on mutated resources: agreements, disagreements by class,
    and the disagreements no class explains."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexplained: list[str] = []

    def add(self, resource: dict[str, Any], mutation: Mutation) -> None:
        old = reference_errors(resource)
        new = new_issues(resource)
        if bool(old) == bool(new):
            self.counts["agree-refuse" if old else "agree-accept"] += 1
            return
        found = classify(mutation, old, new)
        if found is None:
            side = "new refuses" if new else "old refuses"
            self.unexplained.append(f"{side}: {mutation}; old {old[:2]}; new {new[:2]}")
        else:
            self.counts[found.name] += 1
