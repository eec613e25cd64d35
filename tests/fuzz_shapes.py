"""Hypothesis strategies for hostile and odd FHIR requests: resources grown from the FHIR R4
element grammar (``lienthong/fhir/data/element_types.json``: each type's elements, their
types and cardinality), Synthea resources with mutations, search and history queries,
bundles and raw bytes. Shared by ``tests/test_fuzz.py`` and ``bench/bench_fuzz.py``.

A drawn request is ``(method, url, headers, body)``; the server must answer every one
without a 5xx.
"""

from __future__ import annotations

import bz2
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_files
from typing import Any
from urllib.parse import quote

import orjson
from hypothesis import strategies as st

from tests.synthea_data import SYNTHEA, synthea_files

FHIR = {"Content-Type": "application/fhir+json"}


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None

    def __repr__(self) -> str:  # hypothesis prints the failing case
        shown = self.body if self.body is None or len(self.body) < 2000 else self.body[:2000]
        return f"Request({self.method} {self.url[:2000]} {self.headers} {shown!r})"


@cache
def grammar() -> dict[str, Any]:
    text = (package_files.files("lienthong.fhir") / "data" / "element_types.json").read_text()
    loaded: dict[str, Any] = orjson.loads(text)
    return loaded


@cache
def search_parameters() -> dict[str, list[str]]:
    text = (package_files.files("lienthong.fhir") / "data" / "search_parameters.json").read_text()
    by_type: dict[str, list[str]] = {}
    for sp in orjson.loads(text):
        for base in sp.get("base", ()):
            by_type.setdefault(base, []).append(sp["code"])
    return by_type


ODD_TYPES = ["Resource", "DomainResource", "Element", "Extension", "patient", "", "Bundle", "X"]
COMMON = ["Patient", "Observation", "Encounter", "Condition", "Organization", "Practitioner"]


@cache
def resource_types() -> list[str]:
    names: list[str] = grammar()["resources"]
    return names


@cache
def type_name() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(COMMON),
        st.sampled_from(resource_types()),
        st.sampled_from(ODD_TYPES),
    )


ODD_TEXT = [
    "",
    " ",
    "\x00",
    "\x1f",
    "\u0000abc",
    "\ud7ff",
    "\ufeff",
    "Nguyễn Thị",
    "a" * 300,
    "%",
    "%zz",
    "$",
    "?",
    "&",
    "|",
    "\\",
    "'",
    '"',
    "*",
    ":",
    "..",
    "../..",
    "urn:uuid:",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
    "Patient/",
    "Patient/../x",
    "Patient?identifier=x",
    "Patient?",
    "http://",
    "1e999",
    "-0",
    "NaN",
    "2020-02-30",
    "2020-13-01T25:61:61Z",
    "9999-12-31T23:59:59.9999999999+14:00",
    "0001",
    "<div>",
    '<div xmlns="http://www.w3.org/1999/xhtml"><script>x</script></div>',
]

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(ODD_TEXT),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["resourceType", "id"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)

_PRIMITIVE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "integer": st.integers(min_value=-(2**40), max_value=2**40),
    "positiveInt": st.integers(min_value=-2, max_value=2**33),
    "unsignedInt": st.integers(min_value=-2, max_value=2**33),
    "integer64": st.integers(min_value=-(2**70), max_value=2**70),
    "decimal": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
    "date": st.sampled_from(["2020", "2020-01", "2020-01-02", "2020-02-30", "20200102", "0000"]),
    "dateTime": st.sampled_from(
        ["2020-01-02T03:04:05Z", "2020-01-02T03:04:05+07:00", "2020-01-02", "2020-01-02T25:00"]
    ),
    "instant": st.sampled_from(["2020-01-02T03:04:05.123Z", "2020-01-02T03:04:05", "x"]),
    "time": st.sampled_from(["10:00:00", "24:00:00", "9:0"]),
    "code": st.sampled_from(["male", "female", "final", "active", "x y", " ", "unknown"]),
    "id": st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True) | st.sampled_from(["", "a b"]),
    "uri": st.sampled_from(
        ["http://loinc.org", "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427", "Patient/1", "x"]
    ),
    "url": st.sampled_from(["http://example.org/fhir", "ftp://x", ""]),
    "canonical": st.sampled_from(["http://hl7.org/fhir/StructureDefinition/Patient|4.0.1", "x"]),
    "oid": st.sampled_from(["urn:oid:1.2.3", "1.2.3"]),
    "uuid": st.sampled_from(["urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427", "urn:uuid:x"]),
    "base64Binary": st.sampled_from(["aGVsbG8=", "not base64!", ""]),
    "markdown": st.text(max_size=20),
    "string": st.text(max_size=20) | st.sampled_from(ODD_TEXT),
    "xhtml": st.sampled_from(
        ['<div xmlns="http://www.w3.org/1999/xhtml">x</div>', "<div>", "plain", ""]
    ),
}


def primitive(kind: str) -> st.SearchStrategy[Any]:
    return _PRIMITIVE_VALUES.get(kind, st.text(max_size=10))


@st.composite
def typed_value(draw: st.DrawFn, kind: str, depth: int) -> Any:
    """A value of FHIR type ``kind``; now and then a value of the wrong shape."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_value)
    if kind in grammar()["primitives"]:
        return draw(primitive(kind))
    if kind == "Resource":
        return draw(resource(depth=depth - 1)) if depth > 0 else {"resourceType": "Patient"}
    if kind in grammar()["types"] and depth > 0:
        return draw(element_set(kind, depth - 1))
    return {}


@cache
def _element_names(kind: str, most: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(sorted(grammar()["types"][kind])), max_size=most, unique=True)


@st.composite
def element_set(draw: st.DrawFn, kind: str, depth: int) -> dict[str, Any]:
    """An object of FHIR type ``kind`` holding a few of its elements."""
    spec: dict[str, list[Any]] = grammar()["types"].get(kind, {})
    out: dict[str, Any] = {}
    if not spec:
        return out
    names = sorted(spec)
    chosen = draw(_element_names(kind, 4 if depth > 0 else 2))
    for name in chosen:
        element_type, repeats = spec[name]
        if isinstance(element_type, dict):  # a choice: value[x] as valueString, ...
            name = draw(st.sampled_from(sorted(element_type)))
            element_type = element_type[name]
        if repeats and draw(st.integers(0, 9)) > 0:
            out[name] = draw(st.lists(typed_value(element_type, depth), max_size=3))
        else:
            out[name] = draw(typed_value(element_type, depth))
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(["_" + n for n in names] + ["x", "", "resourceType"]))] = draw(
            json_value
        )
    return out


@st.composite
def resource(draw: st.DrawFn, depth: int = 2, rtype: str | None = None) -> dict[str, Any]:
    """A resource grown from the element grammar (or an odd type's name)."""
    kind = rtype or draw(type_name())
    out: dict[str, Any] = {"resourceType": kind}
    out.update(draw(element_set(kind, depth)))
    if draw(st.integers(0, 3)) == 0:
        out["id"] = draw(primitive("id"))
    return out


# ------------------------------------------------------------------ mutated Synthea


@cache
def synthea_sample(per_file: int = 60, files: int = 4) -> list[dict[str, Any]]:
    """A few resources of each type from the first Synthea bundles (empty when absent)."""
    if not SYNTHEA.exists():
        return []
    out: list[dict[str, Any]] = []
    for path in synthea_files()[2 : 2 + files]:
        bundle = orjson.loads(bz2.decompress(path.read_bytes()))
        seen: dict[str, int] = {}
        for entry in bundle.get("entry", ()):
            res = entry["resource"]
            kind = res["resourceType"]
            if seen.get(kind, 0) < 3 and len(out) < per_file * files:
                seen[kind] = seen.get(kind, 0) + 1
                out.append(res)
    return out


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*here, i))
    return found


@cache
def _sample_paths(index: int) -> list[tuple[Any, ...]]:
    return [p for p in _paths(synthea_sample()[index]) if p]


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    """The container holding ``path``'s last step, or None when an earlier mutation
    changed the document so that the path leads nowhere."""
    for step in path[:-1]:
        try:
            doc = doc[step]
        except (KeyError, IndexError, TypeError):
            return None
    last = path[-1]
    if isinstance(doc, dict) and last in doc:
        return doc
    if isinstance(doc, list) and isinstance(last, int) and last < len(doc):
        return doc
    return None


@st.composite
def mutated_synthea(draw: st.DrawFn) -> dict[str, Any]:
    """A Synthea resource with one to four mutations: elements removed, replaced by values
    of other shapes or types, lists unwrapped or wrapped, strings made odd, the type
    changed, references pointed nowhere."""
    sample = synthea_sample()
    if not sample:
        return draw(resource())
    index = draw(st.integers(0, len(sample) - 1))
    doc: dict[str, Any] = orjson.loads(orjson.dumps(sample[index]))
    paths = _sample_paths(index)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if parent is None:
            continue
        key = path[-1]
        old = parent[key]
        how = draw(st.integers(0, 7))
        if how == 0:
            del parent[key]
        elif how == 1:
            parent[key] = draw(json_value)
        elif how == 2:
            parent[key] = [old] if not isinstance(old, list) else (old[0] if old else {})
        elif how == 3 and isinstance(old, str):
            parent[key] = old + draw(st.sampled_from(ODD_TEXT))
        elif how == 4:
            kind = draw(st.sampled_from(sorted(_PRIMITIVE_VALUES)))
            parent[key] = draw(primitive(kind))
        elif how == 5 and isinstance(parent, dict):
            parent["reference"] = draw(
                st.sampled_from(["urn:uuid:nowhere", "Patient/nowhere", "Patient?name=x", "#x"])
            )
        elif how == 6:
            doc["resourceType"] = draw(type_name())
        else:
            kind = draw(st.sampled_from(["CodeableConcept", "Reference", "Period", "Quantity"]))
            parent[key] = draw(typed_value(kind, 1))
    return doc


# ------------------------------------------------------------------------ requests


def body_of(value: Any) -> bytes:
    """JSON bytes; the standard library's encoder, which writes integers of any size."""
    return json.dumps(value, ensure_ascii=False).encode()


@cache
def any_resource() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(resource(), mutated_synthea())


@st.composite
def write_request(draw: st.DrawFn) -> Request:
    """A create or update (plain or conditional) of a grammar-grown or mutated resource."""
    doc = draw(any_resource())
    kind = doc.get("resourceType") if isinstance(doc.get("resourceType"), str) else "Patient"
    url_type = kind if draw(st.integers(0, 4)) else draw(type_name())
    url_type = quote(str(url_type) or "Patient", safe="")
    how = draw(st.sampled_from(["create", "update", "conditional", "if-none-exist"]))
    headers = dict(FHIR)
    if draw(st.booleans()):
        headers["Prefer"] = draw(
            st.sampled_from(
                [
                    "return=representation",
                    "return=OperationOutcome",
                    "return=minimal",
                    "handling=strict",
                ]
            )
        )
    if how == "create":
        return Request("POST", f"/fhir/{url_type}", headers, body_of(doc))
    if how == "if-none-exist":
        headers["If-None-Exist"] = draw(search_query(kind))
        return Request("POST", f"/fhir/{url_type}", headers, body_of(doc))
    if how == "conditional":
        return Request("PUT", f"/fhir/{url_type}?{draw(search_query(kind))}", headers, body_of(doc))
    rid = doc.get("id") if isinstance(doc.get("id"), str) and draw(st.booleans()) else None
    rid = rid or draw(primitive("id"))
    if draw(st.integers(0, 4)) == 0:
        headers["If-Match"] = draw(st.sampled_from(['W/"1"', 'W/"x"', "*", '"2"', ""]))
    return Request("PUT", f"/fhir/{url_type}/{quote(str(rid), safe='')}", headers, body_of(doc))


RESULT_PARAMS = [
    "_count", "_offset", "_sort", "_include", "_revinclude", "_summary", "_elements",
    "_total", "_contained", "_id", "_lastUpdated", "_tag", "_profile", "_security",
    "_has:Observation:patient:code", "_text", "_content", "_list", "_type", "_since",
    "_snapshot", "_format", "_pretty", "_query", "_filter",
]  # fmt: skip
MODIFIERS = ["", ":exact", ":contains", ":missing", ":not", ":text", ":above", ":below",
             ":in", ":not-in", ":of-type", ":identifier", ":mdm", ":Patient", ":x",
             "."]  # fmt: skip
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx"]
VALUES = [
    "1", "0", "-1", "99999999999999999999", "x", "true", "false", "2020", "2020-01-02",
    "2020-01-02T03:04:05Z", "2020-13", "5.4|http://unitsofmeasure.org|mg", "|x", "x|",
    "http://loinc.org|8302-2", "Patient/1", "Patient/", "name", "-name", "Patient:link",
    "*", "Observation:patient:Patient", "1,2,3", ",", "a$b", "identifier", "name.family",
]  # fmt: skip


@cache
def _parameter_names(kind: str) -> st.SearchStrategy[str]:
    own = search_parameters().get(kind, []) + search_parameters().get("Resource", [])
    return st.one_of(
        st.sampled_from(own),
        st.sampled_from(RESULT_PARAMS),
        st.sampled_from(["subject.name", "patient.identifier", "general-practitioner.name"]),
        st.text(max_size=6),
    )


_MODIFIER = st.sampled_from(MODIFIERS)
_PREFIX = st.sampled_from(PREFIXES)
_VALUE = st.one_of(st.sampled_from(VALUES), st.sampled_from(ODD_TEXT), st.text(max_size=8))


@st.composite
def search_query(draw: st.DrawFn, kind: str | None = None) -> str:
    """A query string of a few search parameters (the type's own, result parameters,
    chains, modifiers, prefixed and odd values)."""
    names = _parameter_names(kind or "Resource")
    pairs = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(names) + draw(_MODIFIER)
        value = draw(_PREFIX) + draw(_VALUE)
        pairs.append(f"{quote(name, safe=':._-')}={quote(value, safe='')}")
    return "&".join(pairs)


_ID = primitive("id") | st.sampled_from(ODD_TEXT)


@st.composite
def read_request(draw: st.DrawFn) -> Request:
    """Searches (type, system, compartment, POST _search), reads, history, operations."""
    kind = draw(type_name())
    safe_kind = quote(kind, safe="") or "Patient"
    query = draw(search_query(kind))
    rid = quote(draw(_ID), safe="")
    form = "application/x-www-form-urlencoded"
    choices = [
        Request("GET", f"/fhir/{safe_kind}?{query}", {}),
        Request("GET", f"/fhir?{query}", {}),
        Request("GET", f"/fhir/Patient/{rid}/{safe_kind}?{query}", {}),
        Request("POST", f"/fhir/{safe_kind}/_search", {"Content-Type": form}, query.encode()),
        Request("GET", f"/fhir/{safe_kind}/{rid}", {}),
        Request("GET", f"/fhir/{safe_kind}/{rid}/_history/{rid}", {}),
        Request("GET", f"/fhir/{safe_kind}/_history?{query}", {}),
        Request("GET", f"/fhir/_history?{query}", {}),
        Request("GET", f"/fhir/Patient/{rid}/$everything?{query}", {}),
        Request("DELETE", f"/fhir/{safe_kind}?{query}", {}),
        Request("DELETE", f"/fhir/{safe_kind}/{rid}", {}),
        Request("GET", f"/fhir/CodeSystem/$lookup?{query}", {}),
        Request("GET", f"/fhir/ValueSet/$validate-code?{query}", {}),
        Request("GET", f"/fhir/metadata?{query}", {}),
    ]
    return draw(st.sampled_from(choices))


@st.composite
def bundle_entry(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 14)) == 0:
        return draw(json_value)
    method = draw(st.sampled_from(["POST", "PUT", "GET", "DELETE", "HEAD", "PATCH", "post", ""]))
    doc = draw(any_resource()) if method not in ("GET", "DELETE") else None
    kind = doc.get("resourceType") if isinstance(doc, dict) else draw(type_name())
    kind = str(kind) if isinstance(kind, str) else "Patient"
    shape = draw(st.integers(0, 6))
    if shape == 1:
        url = f"{kind}/{draw(primitive('id'))}"
    elif shape == 2:
        url = f"{kind}?{draw(search_query(kind))}"
    else:
        url = {0: kind, 3: f"{kind}/1/_history/1", 4: "metadata", 5: ""}.get(
            shape, "http://testserver/fhir/" + kind
        )
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if doc is not None:
        entry["resource"] = doc
    if draw(st.booleans()):
        entry["fullUrl"] = draw(
            st.sampled_from(
                [
                    "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                    "urn:uuid:2c4e28ba-2fa1-11d2-883f-0016d3cca427",
                    f"http://example.org/fhir/{kind}/1",
                    "urn:oid:1.2.3",
                    "x",
                ]
            )
        )
    if draw(st.integers(0, 5)) == 0:
        entry["request"]["ifNoneExist"] = draw(search_query(kind))
    if draw(st.integers(0, 7)) == 0:
        entry["request"]["ifMatch"] = draw(st.sampled_from(['W/"1"', "x", ""]))
    return entry


@st.composite
def bundle_request(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from(["transaction", "batch", "transaction", "batch", "document", None]))
    entries = draw(st.lists(bundle_entry(), max_size=4))
    doc: dict[str, Any] = {"resourceType": "Bundle", "entry": entries}
    if kind is not None:
        doc["type"] = kind
    headers = dict(FHIR)
    if draw(st.booleans()):
        headers["Prefer"] = "return=representation"
    return Request("POST", "/fhir", headers, body_of(doc))


@st.composite
def raw_request(draw: st.DrawFn) -> Request:
    """Bodies that are not JSON, or JSON cut short, under odd content types."""
    sample = synthea_sample() or [{"resourceType": "Patient", "name": [{"family": "Lê"}]}]
    good = body_of(draw(st.sampled_from(sample)))
    body = draw(
        st.one_of(
            st.binary(max_size=64),
            st.just(good[: draw(st.integers(0, max(0, len(good) - 1)))]),
            st.sampled_from([b"", b"null", b"[]", b"1", b'"x"', b"{}", b"\xff\xfe", b"{" * 2000]),
        )
    )
    ctype = draw(
        st.sampled_from(
            [
                "application/fhir+json",
                "application/json; charset=latin-1",
                "application/fhir+xml",
                "text/plain",
                "application/octet-stream",
                "",
                "multipart/form-data; boundary=x",
            ]
        )
    )
    path = draw(
        st.sampled_from(
            ["/fhir/Patient", "/fhir", "/fhir/Binary", "/fhir/Binary/b1", "/fhir/Patient/$match",
             "/fhir/Patient/$merge", "/fhir/Patient/p1/$everything", "/fhir/CodeSystem/$lookup",
             "/fhir/ValueSet/$validate-code", "/fhir/Patient/_search", "/xml130", "/auth/token"]
        )
    )  # fmt: skip
    method = "PUT" if path.endswith("/b1") else "POST"
    return Request(method, path, {"Content-Type": ctype} if ctype else {}, body)


def any_request() -> st.SearchStrategy[Request]:
    return st.one_of(write_request(), read_request(), bundle_request(), raw_request())
