"""Structural validation of FHIR R4 (4.0.1) resources in JSON, compiled once per type.

The structure comes from the official R4 StructureDefinitions, reduced by
``scripts/build_r4_structure.py`` to ``data/r4_structure.json.gz``: for each data type,
resource and backbone element, its elements with their types, cardinality, summary flag
and, for ``code`` elements with a required binding, the codes the value set allows. On
first use of a type its elements are compiled into a table keyed by JSON property name
(choice types ``[x]`` expanded to ``valueQuantity`` etc., primitives' ``_name`` siblings
included), so checking a resource is one walk over its JSON with a dictionary look-up
per property.

What is checked (https://hl7.org/fhir/R4/json.html, datatypes.html, narrative.html):

* every property is an element of its type (unknown elements refused), arrays where
  ``max`` > 1 and single values elsewhere, ``min`` / ``max`` cardinality, at most one
  type of a choice element;
* primitives: JSON type (booleans are ``true``/``false``, integers are JSON integers in
  the 32-bit range, positiveInt >= 1, unsignedInt >= 0, decimals are numbers) and the
  regex of the type's definition (ASCII ``\\s``, as the definitions' Java-style regexes
  mean it), calendar dates valid, strings free of control characters other than tab, CR
  and LF and at most 1 MiB;
* ``_name`` siblings hold an Element (id, extension); for arrays they are arrays of the
  same length, and ``null`` stands in either array only where the other has a value;
* ele-1: no empty object, array or string, no ``null`` outside the alignment above;
* resources inside resources (``contained``, ``Bundle.entry.resource``,
  ``Parameters.parameter.resource``) name a concrete resource type and are checked as such;
* codes of required bindings whose value set is a closed list;
* narrative ``div``: well-formed XHTML in the XHTML namespace, whose root is a ``div``,
  with only the basic formatting elements and attributes R4 allows (no script, object,
  form, frames, event attributes or ``javascript:`` links) and some text or image; XHTML's
  named entities (``&nbsp;``) are read as the characters they name, and a DOCTYPE or an
  entity declaration is refused.
"""

from __future__ import annotations

import datetime as dt
import gzip
import html.entities
import math
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import orjson
from lxml import etree

from lienthong.fhir.errors import Issue, fhirpath_step

MAX_ISSUES = 100
"""A resource with more problems than this reports the first ones only."""


@cache
def _data() -> dict[str, Any]:
    raw = resources.files("lienthong.fhir").joinpath("data/r4_structure.json.gz").read_bytes()
    data: dict[str, Any] = orjson.loads(gzip.decompress(raw))
    return data


@cache
def resource_types() -> frozenset[str]:
    """The concrete (not abstract) resource types of R4."""
    return frozenset(
        name
        for name, t in _data()["types"].items()
        if t["kind"] == "resource" and not t["abstract"]
    )


def is_resource_type(name: str) -> bool:
    return name in resource_types()


def elements(type_name: str) -> list[tuple[str, tuple[str, ...], int, int, bool]]:
    """(name, types, min, max (-1 for ``*``), isSummary) of each element of a type, in
    definition order; choice elements by their base name (``value``). Empty when the type
    is unknown."""
    t = _data()["types"].get(type_name)
    if t is None:
        return []
    return [(r[0], tuple(r[1]), r[2], r[3], r[4]) for r in t["elements"]]


# --- primitives ---------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CONTROL_MSG = (
    "a string may not hold control characters other than tab, carriage return and line feed"
)
MAX_STRING = 1024 * 1024
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

Check = Callable[[Any], str | None]


def _is_date(text: str) -> bool:
    """The calendar date at the start of ``text`` exists when month and day are given."""
    if len(text) < 10 or text[4] != "-" or text[7] != "-":
        return True
    try:
        dt.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def _string_check(name: str, pattern: str | None) -> Check:
    rx = re.compile(pattern, re.ASCII).fullmatch if pattern else None
    dated = name in ("date", "dateTime", "instant")
    limit = MAX_STRING if name == "string" else None

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"a {name} must be a JSON string, not {_json_kind(value)}"
        if not value:
            return "an empty string is not a value (ele-1)"
        if _CONTROL.search(value):
            return _CONTROL_MSG
        if rx is not None and rx(value) is None:
            return f"{_show(value)} is not a valid {name}"
        if dated and not _is_date(value):
            return f"{_show(value)} is not a calendar date"
        if limit is not None and len(value) > limit:
            return f"a string may hold at most {limit} characters"
        return None

    return check


def _integer_check(name: str, low: int) -> Check:
    def check(value: Any) -> str | None:
        if type(value) is not int:
            return f"an {name} must be a JSON integer, not {_json_kind(value)}"
        if not low <= value <= INT_MAX:
            return f"{value} is outside the range of {name} ({low} to {INT_MAX})"
        return None

    return check


def _boolean(value: Any) -> str | None:
    if type(value) is not bool:
        return f"a boolean must be JSON true or false, not {_json_kind(value)}"
    return None


def _decimal(value: Any) -> str | None:
    if type(value) is int:
        return None
    if type(value) is not float:
        return f"a decimal must be a JSON number, not {_json_kind(value)}"
    if not math.isfinite(value):
        return f"{value} is not a decimal"
    return None


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*", re.ASCII).fullmatch
_SPACE = re.compile(r"\s+", re.ASCII)


def _base64(value: Any) -> str | None:
    if type(value) is not str:
        return f"a base64Binary must be a JSON string, not {_json_kind(value)}"
    if not value:
        return "an empty string is not a value (ele-1)"
    if _CONTROL.search(value):
        return _CONTROL_MSG
    if _BASE64(value) is None:
        return "not valid base64"
    data = _SPACE.sub("", value)
    if not data or len(data) % 4:
        return "not valid base64"
    return None


def _primitive_checks() -> dict[str, Check]:
    checks: dict[str, Check] = {
        "boolean": _boolean,
        "integer": _integer_check("integer", INT_MIN),
        "unsignedInt": _integer_check("unsignedInt", 0),
        "positiveInt": _integer_check("positiveInt", 1),
        "decimal": _decimal,
        "base64Binary": _base64,
        "xhtml": lambda v: _xhtml(v),
    }
    for name, pattern in _data()["primitives"].items():
        if name not in checks:
            # string and markdown: the regex says "not empty", checked directly
            plain = name in ("string", "markdown")
            checks[name] = _string_check(name, None if plain else pattern)
    return checks


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:77] + "...")


# --- narrative ----------------------------------------------------------------------

XHTML = "http://www.w3.org/1999/xhtml"
_NARRATIVE_TAGS = frozenset(
    str.split(
        "a abbr acronym address b bdo big blockquote br caption cite code col colgroup dd del "
        "dfn div dl dt em h1 h2 h3 h4 h5 h6 hr i img ins kbd li ol p pre q samp small span "
        "strong sub sup table tbody td tfoot th thead tr tt ul var"
    )
)
"""The basic formatting elements of HTML 4.0 chapters 7-11 and 15, ``a`` and ``img``
(txt-1, https://hl7.org/fhir/R4/narrative.html#xhtml)."""
_NARRATIVE_ATTRS = frozenset(
    str.split(
        "abbr accesskey align alt axis border cellpadding cellspacing char charoff cite class "
        "colspan compact datetime dir frame headers height href hreflang id lang name nowrap "
        "rel rev rowspan rules scope span src start style summary tabindex title type valign "
        "value width"
    )
)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def _xhtml(value: Any) -> str | None:
    """Why ``value`` is not an R4 narrative div, or None when it is one."""
    if type(value) is not str:
        return f"a narrative div must be a JSON string, not {_json_kind(value)}"
    if _CONTROL.search(value):
        return _CONTROL_MSG
    if "<!" in value and ("<!DOCTYPE" in value.upper() or "<!ENTITY" in value.upper()):
        return "a narrative div may not declare a DOCTYPE or entities"
    if "&" in value:
        value = _NAMED_ENTITY.sub(_numeric_entity, value)
    try:
        root = etree.fromstring(value.encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        return f"the narrative div is not well-formed XML: {exc}"
    if root.tag != f"{{{XHTML}}}div":
        return f"the narrative must be one div element in the XHTML namespace ({XHTML})"
    has_content = False
    for el in root.iter():
        tag = el.tag
        if not isinstance(tag, str):
            return "a narrative div may not hold entity references"
        ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
        if ns != XHTML or local not in _NARRATIVE_TAGS:
            return f"a narrative may not hold a {local} element (R4 narrative rules, txt-1)"
        for attr, attr_value in el.attrib.items():
            if attr in (_XML_LANG, _XML_SPACE):
                continue
            if attr not in _NARRATIVE_ATTRS:
                return (
                    f"a narrative may not hold the {attr} attribute on {local} "
                    "(R4 narrative rules, txt-1)"
                )
            if attr in ("href", "src") and _unsafe_link(attr_value):
                return f"a narrative link may not be {_show(attr_value)}"
        if local == "img" or (el.text and el.text.strip()) or (el.tail and el.tail.strip()):
            has_content = True
    if not has_content:
        return "a narrative div must hold some text or an image (txt-2)"
    return None


_NAMED_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset(("amp", "lt", "gt", "quot", "apos"))


def _numeric_entity(match: re.Match[str]) -> str:
    """XHTML's named character entities (``&nbsp;``) as character references: XML knows
    only its five, and the parser loads no DTD to learn the rest."""
    name = match.group(1)
    code = html.entities.name2codepoint.get(name)
    if code is None or name in _XML_ENTITIES:
        return match.group(0)
    return f"&#{code};"


def _unsafe_link(link: str) -> bool:
    scheme = link.strip().split(":", 1)[0].lower() if ":" in link else ""
    return scheme in ("javascript", "vbscript", "data") and not link.strip().lower().startswith(
        "data:image/"
    )


# --- compiled structures ------------------------------------------------------------

# slot kinds
PRIM, COMPLEX, RESOURCE, EXT = 0, 1, 2, 3


class _Slot:
    """One JSON property of a structure."""

    __slots__ = (
        "_structure",
        "array",
        "check",
        "codes",
        "group",
        "key",
        "kind",
        "max",
        "name",
        "target",
    )

    def __init__(self, key: str, name: str, kind: int, array: bool, maximum: int) -> None:
        self.key = key  # JSON property name: valueQuantity, _birthDate
        self.name = name  # element name as FHIRPath sees it: valueQuantity, birthDate
        self.kind = kind
        self.array = array
        self.max = maximum
        self.check: Check | None = None  # primitives
        self.target = ""  # structure of a complex element
        self.codes: frozenset[str] | None = None  # a required binding's codes
        self.group = ""  # choice element's base name
        self._structure: _Structure | None = None

    def structure(self) -> _Structure:
        if self._structure is None:
            found = structure(self.target)
            assert found is not None
            self._structure = found
        return self._structure


class _Structure:
    __slots__ = ("name", "required", "slots")

    def __init__(self, name: str) -> None:
        self.name = name
        self.slots: dict[str, _Slot] = {}
        self.required: list[tuple[str, tuple[str, ...]]] = []


@cache
def _checks() -> dict[str, Check]:
    return _primitive_checks()


@cache
def _codes(url: str) -> frozenset[str]:
    return frozenset(_data()["valueSets"][url])


@cache
def structure(name: str) -> _Structure | None:
    """The compiled structure of a type or backbone path, or None when there is none."""
    t = _data()["types"].get(name)
    if t is None:
        return None
    types = _data()["types"]
    prims = _checks()
    out = _Structure(name)
    for el_name, el_types, low, high, _summary, vs in t["elements"]:
        choice = len(el_types) > 1
        keys = []
        for code in el_types:
            key = el_name + code[0].upper() + code[1:] if choice else el_name
            array = high != 1
            if code in prims:
                slot = _Slot(key, key, PRIM, array, high)
                slot.check = prims[code]
                if vs is not None:
                    slot.codes = _codes(vs)
                ext = _Slot("_" + key, key, EXT, array, high)
                ext.target = "Element"
                out.slots["_" + key] = ext
            elif code == "Resource":
                slot = _Slot(key, key, RESOURCE, array, high)
            else:
                if code not in types:
                    raise ValueError(f"{name}.{el_name}: unknown type {code}")
                slot = _Slot(key, key, COMPLEX, array, high)
                slot.target = code
            if choice:
                slot.group = el_name
                if "_" + key in out.slots:
                    out.slots["_" + key].group = el_name
            out.slots[key] = slot
            keys.append(key)
        if low > 0:
            out.required.append((el_name, tuple(keys) + tuple("_" + k for k in keys)))
    return out


def validate(resource: dict[str, Any], path: str | None = None) -> list[Issue]:
    """Every structural problem of ``resource`` (whose ``resourceType`` names a concrete
    R4 resource type), then, when there is none, every code outside its required value
    set. Each issue's expression is the FHIRPath of the element at fault."""
    walk = _Walk()
    rtype = resource["resourceType"]
    root = structure(rtype)
    if root is None or not is_resource_type(rtype):
        where = path or rtype
        return [Issue("not-supported", f"unknown resource type {rtype!r}", expression=(where,))]
    walk.node(resource, root, path or rtype, True)
    return walk.issues or walk.codes


class _Walk:
    __slots__ = ("codes", "issues")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.codes: list[Issue] = []

    def fail(self, code: str, path: str, message: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(Issue(code, f"{path}: {message}", expression=(path,)))

    def resource(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            kind = _json_kind(value)
            self.fail("structure", path, f"a resource must be a JSON object, not {kind}")
            return
        rtype = value.get("resourceType")
        if type(rtype) is not str or not rtype:
            self.fail("required", path, "a resource must name its resourceType")
            return
        if not is_resource_type(rtype):
            what = "an abstract" if rtype in ("Resource", "DomainResource") else "an unknown"
            self.fail("value", f"{path}.resourceType", f"{rtype!r} is {what} resource type")
            return
        root = structure(rtype)
        assert root is not None
        self.node(value, root, path, True)

    def node(self, node: Any, st: _Structure, path: str, is_resource: bool = False) -> None:
        if type(node) is not dict:
            self.fail("structure", path, f"must be a JSON object, not {_json_kind(node)}")
            return
        if not node:
            self.fail("value", path, "an element must have a value or children (ele-1)")
            return
        slots = st.slots
        groups: dict[str, set[str]] | None = None
        for key, value in node.items():
            slot = slots.get(key)
            if slot is None:
                if is_resource and key == "resourceType":
                    continue
                where = f"{path}.{fhirpath_step(_unprefixed(key))}"
                self.fail("structure", where, "unknown element")
                continue
            if slot.group:
                if groups is None:
                    groups = {}
                groups.setdefault(slot.group, set()).add(slot.name)
            kind = slot.kind
            if kind == EXT:
                self.extension(node, slot, value, path)
                continue
            if value is None:
                self.fail("value", f"{path}.{slot.name}", "null is not a value (ele-1)")
                continue
            if slot.array:
                if type(value) is not list:
                    where = f"{path}.{slot.name}"
                    self.fail("structure", where, "must be a JSON array (the element repeats)")
                    continue
                if not value:
                    where = f"{path}.{slot.name}"
                    self.fail("value", where, "an empty array is not a value (ele-1)")
                    continue
                if 0 < slot.max < len(value):
                    where = f"{path}.{slot.name}"
                    self.fail("structure", where, f"at most {slot.max} allowed, got {len(value)}")
                if kind == PRIM:
                    ext = node.get("_" + key)
                    check = slot.check
                    assert check is not None
                    for i, item in enumerate(value):
                        if item is None:
                            if not (type(ext) is list and i < len(ext) and ext[i] is not None):
                                where = f"{path}.{slot.name}[{i}]"
                                self.fail("value", where, "null is not a value (ele-1)")
                            continue
                        problem = check(item)
                        if problem is not None:
                            self.fail("value", f"{path}.{slot.name}[{i}]", problem)
                        elif slot.codes is not None and item not in slot.codes:
                            self.bad_code(slot, item, f"{path}.{slot.name}[{i}]")
                elif kind == COMPLEX:
                    target = slot.structure()
                    for i, item in enumerate(value):
                        if item is None:
                            where = f"{path}.{slot.name}[{i}]"
                            self.fail("value", where, "null is not a value (ele-1)")
                        else:
                            self.node(item, target, f"{path}.{slot.name}[{i}]")
                else:
                    for i, item in enumerate(value):
                        self.resource(item, f"{path}.{slot.name}[{i}]")
            elif type(value) is list:
                where = f"{path}.{slot.name}"
                self.fail("structure", where, "must be a single value, not a JSON array")
            elif kind == PRIM:
                problem = slot.check(value)  # type: ignore[misc]
                if problem is not None:
                    self.fail("value", f"{path}.{slot.name}", problem)
                elif slot.codes is not None and value not in slot.codes:
                    self.bad_code(slot, value, f"{path}.{slot.name}")
            elif kind == COMPLEX:
                self.node(value, slot.structure(), f"{path}.{slot.name}")
            else:
                self.resource(value, f"{path}.{slot.name}")
        for name, keys in st.required:
            for k in keys:
                if k in node:
                    break
            else:
                self.fail("required", f"{path}.{name}", "a required element is missing")
        if groups is not None:
            for name, present in groups.items():
                if len(present) > 1:
                    self.fail(
                        "structure",
                        f"{path}.{name}",
                        f"{name}[x] may have one type only, got {', '.join(sorted(present))}",
                    )

    def bad_code(self, slot: _Slot, value: Any, where: str) -> None:
        assert slot.codes is not None
        allowed = ", ".join(sorted(slot.codes))
        message = f"{where}: {value!r} is not one of {allowed}"
        self.codes.append(Issue("code-invalid", message, expression=(where,)))

    def extension(self, node: dict[str, Any], slot: _Slot, value: Any, path: str) -> None:
        """A primitive's ``_name`` sibling: an Element, or for arrays an aligned array."""
        where = f"{path}.{slot.name}"
        element = slot.structure()
        if not slot.array:
            if type(value) is list:
                self.fail("structure", where, f"_{slot.name} must be a single object")
                return
            self.node(value, element, where)
            return
        if type(value) is not list:
            self.fail("structure", where, f"_{slot.name} must be a JSON array")
            return
        if not value:
            self.fail("value", where, "an empty array is not a value (ele-1)")
            return
        values = node.get(slot.key[1:])
        if values is not None and (type(values) is not list or len(values) != len(value)):
            self.fail(
                "structure",
                where,
                f"_{slot.name} must have as many entries as {slot.name} (null where none)",
            )
            return
        for i, item in enumerate(value):
            if item is None:
                if values is None:
                    self.fail("value", f"{where}[{i}]", "null is not a value (ele-1)")
                continue
            self.node(item, element, f"{where}[{i}]")


def _unprefixed(key: str) -> str:
    return key[1:] if key.startswith("_") and len(key) > 1 and key[1].isalpha() else key
