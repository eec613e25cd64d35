"""Write-time search index extraction, compiled from the FHIR R4 SearchParameters.

Each search parameter's FHIRPath expression (https://hl7.org/fhir/R4/fhirpath.html) is
compiled once per resource type: all parameters of the type are merged into one tree
of path steps, which is then generated as the Python source of a single function of
nested loops over the resource's JSON dict (see :func:`_codegen`). Extracting a
resource runs that function: no FHIRPath parsing, interpretation or type inference
per resource. Compilation is *typed*: the generated
``element_types.json`` (from the ``fhir.resources.R4B`` models) tells the compiler the
datatype of every element, and expands choice elements (``Observation.value`` ->
``valueQuantity | valueString | ...``) to the exact JSON keys the schema defines. Each
leaf of the tree therefore knows the FHIR datatype of the values reaching it and
converts them with a datatype-specific function (Coding, CodeableConcept, Period, ...),
never by sniffing the JSON shape. Paths shared between parameters (``subject`` for
``subject`` and ``patient``, ``meta`` for ``_tag``/``_profile``/...) are walked once,
and parameters converting the same element the same way convert it once.

Supported FHIRPath subset (everything the R4 bundle uses): paths, unions ``|``,
``where(<criteria>)`` with ``=``/``!=``/``and``/``or``/``exists()``/``empty()``/
``not()`` and ``resolve() is Type``, ``as``/``is`` operators and ``as()``/``is()``/
``ofType()`` functions, ``extension('url')``, ``first()``, indexers ``[n]``,
``%resource`` and a boolean-valued top level (``Patient.deceased.exists() and
Patient.deceased != false``, indexed as a ``true``/``false`` token).

Row semantics follow https://hl7.org/fhir/R4/search.html:

* string (#string): HumanName -> family, given, prefix, suffix, text; Address ->
  line, city, district, state, postalCode, country, text; other strings -> the value.
  Rows carry ``text.fold(value)`` and the exact value, both cut to
  :data:`STRING_INDEX_MAX` characters so they stay indexable by a btree.
* token (#token): Coding -> (system, code, fold(display)); CodeableConcept -> one row
  per coding plus (None, None, fold(text)); Identifier -> (system, value,
  fold(type.text)); ContactPoint -> (ContactPoint.system such as ``"phone"``, value,
  None); code/id/string/uri/... -> (None, value, None); boolean -> (None, "true" or
  "false", None).
* date (#date): every value becomes the UTC range it covers, see :func:`date_range`;
  Period start/end (open ends -> :data:`DATE_MIN`/:data:`DATE_MAX`); Timing -> each
  ``event`` and ``repeat.boundsPeriod``.
* number (#number): (v, v); Range -> (low, high) with open ends as -inf/+inf.
* quantity (#quantity): Quantity and its profiles (Age, Duration, ...) ->
  (system, code, fold(unit), v, v); Money -> (:data:`CURRENCY_SYSTEM`, currency, None,
  v, v); Range -> low/high values (open ends -inf/+inf) with the low (else high)
  system/code/unit. Quantities without a value and SampledData give no row.
* reference (#reference): ``Type/id`` (optionally ``/_history/v``) -> (Type, id, None);
  absolute ``http(s)://base/Type/id`` -> (Type, id, url); any other absolute URI
  (``urn:uuid:``, canonicals, unknown URLs) -> (None, None, uri); ``#contained``,
  conditional (``Type?query``) and identifier-only references give no row.
* uri (#uri): the value.
* composite (#composite): for every element selected by the composite's expression,
  the cross product of component 1 (token; rows without a code are dropped) and
  component 2 evaluated on the same element; component 2 fills (system2, code2,
  folded_str2) for token (folded_str2 = fold(text/display)), folded_str2 for string,
  (system2, code2, folded_str2 = fold(unit), num_low2, num_high2) for quantity,
  (num_low2, num_high2) for number and (date_low2, date_high2) for date.

Not indexed (``compile_report()`` and ``scripts/gen_search_parameters.py`` print the
list; none is in the clinical core: every non-special parameter of Patient,
Encounter, Observation, Condition, Procedure, Immunization, MedicationRequest,
MedicationDispense, DiagnosticReport, AllergyIntolerance, Organization, Location,
Practitioner, PractitionerRole and Claim compiles):

* the type-specific parameters of the R4-only resource types that have no R4B model,
  hence no element types (their ``_tag``/``_profile``/``_security``/``_source`` are
  indexed): EffectEvidenceSynthesis (context, context-quantity, context-type,
  context-type-quantity, context-type-value, date, description, effective,
  identifier, jurisdiction, name, publisher, status, title, url, version),
  RiskEvidenceSynthesis (same 16), MedicinalProduct (identifier, name,
  name-language), MedicinalProductAuthorization (country, holder, identifier, status,
  subject), MedicinalProductContraindication, -Indication, -Interaction and
  -UndesirableEffect (subject), MedicinalProductPackaged (identifier, subject),
  MedicinalProductPharmaceutical (identifier, route, target-species),
  SubstanceSpecification (code);
* R4 elements that R4B removed: Evidence effective/jurisdiction/name/topic,
  EvidenceVariable effective/jurisdiction/topic;
* the 3-component composites MolecularSequence chromosome-variant-coordinate,
  chromosome-window-coordinate, referenceseqid-variant-coordinate,
  referenceseqid-window-coordinate, and DocumentReference relationship (in R4 its
  component definitions are swapped with their expressions: the reference-typed
  ``relatesto`` is given ``code``, and composite rows have no reference columns);
* ``Location-near`` (type special).

By design, choice branches whose datatype has no meaning for the parameter type give
no rows: ``occurrenceString`` for Immunization ``date``, ``performedString``/
``performedAge``/``performedRange`` for Procedure ``date``,
``activity.detail.scheduledString`` for CarePlan ``activity-date`` and
``sourceAttachment`` for Consent ``source-reference``.
"""

from __future__ import annotations

import calendar
import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from lienthong.storage.query import unit_vector

from .search_params import COLUMN_PARAMS, SearchParam, SearchParamRegistry, split_union
from .text import fold

__all__ = [
    "CURRENCY_SYSTEM",
    "DATE_MAX",
    "DATE_MIN",
    "STRING_INDEX_MAX",
    "CompileError",
    "IndexExtractor",
    "IndexRows",
    "compile_report",
    "date_range",
    "number_range",
]

#: Lowest/highest instant, used for open Period ends.
DATE_MIN = "0001-01-01T00:00:00.000000"
DATE_MAX = "9999-12-31T23:59:59.999999"

#: ``system`` used for Money amounts in quantity rows (ISO 4217 currency codes), as
#: suggested for Money searches by https://hl7.org/fhir/R4/search.html#quantity.
CURRENCY_SYSTEM = "urn:iso:std:iso:4217"

#: String rows are cut to this many characters (folded and exact value) so a btree
#: index on them never hits PostgreSQL's ~2.7 kB row limit (<= 4 bytes per char).
STRING_INDEX_MAX = 512

_INF = math.inf

# ---------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class IndexRows:
    """Index rows for one resource, one list per search-parameter type.

    Rows from :meth:`IndexExtractor.extract` are de-duplicated and start with the
    parameter code. Unbounded ends are :data:`DATE_MIN`/:data:`DATE_MAX` for dates and
    ``-inf``/``inf`` for number and quantity ranges.
    """

    string: list[tuple[str, str, str]] = field(default_factory=list)
    token: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    date: list[tuple[str, str, str]] = field(default_factory=list)
    number: list[tuple[str, float, float]] = field(default_factory=list)
    quantity: list[tuple[str, str | None, str | None, str | None, float | None, float | None]] = (
        field(default_factory=list)
    )
    reference: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    uri: list[tuple[str, str]] = field(default_factory=list)
    composite: list[
        tuple[
            str,
            str | None,
            str | None,
            str | None,
            str | None,
            str | None,
            float | None,
            float | None,
            str | None,
            str | None,
        ]
    ] = field(default_factory=list)
    # type special (only Location.near): quantity-shaped rows, see near_rows
    special: list[tuple[str, str | None, str | None, str | None, float | None, float | None]] = (
        field(default_factory=list)
    )

    def count(self) -> int:
        """Total number of rows. (Not ``__len__``: an empty IndexRows stays truthy.)"""
        return sum(len(getattr(self, name)) for name in _ROW_KINDS)


_ROW_KINDS = (
    "string",
    "token",
    "date",
    "number",
    "quantity",
    "reference",
    "uri",
    "composite",
    "special",
)

# ---------------------------------------------------------------------------------------
# Dates and numbers
# ---------------------------------------------------------------------------------------

_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@functools.lru_cache(maxsize=1 << 16)
def date_range(value: str) -> tuple[str, str]:
    """The UTC range ``(low, high)`` covered by a FHIR date, dateTime or instant.

    Implements the implicit-range rule of https://hl7.org/fhir/R4/search.html#date:
    a value covers the whole period its precision denotes, so ``"2020"`` ->
    ``("2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999")`` and ``"2020-02"``
    ends on the 29th. Accepted precisions: year, month, day, minute, second and
    fractional seconds (more than 6 digits are truncated to microseconds). Times with
    an offset are converted to UTC, times without one are taken as UTC. Both bounds use
    the fixed 26-character form ``YYYY-MM-DDTHH:MM:SS.ffffff`` so that string
    comparison orders them. Used for stored values and for search values alike.

    Raises ValueError for anything else.
    """
    if not isinstance(value, str):
        raise ValueError(f"invalid FHIR date {value!r}: not a string")
    m = _DATE_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(
            f"invalid FHIR date {value!r}: expected YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm]"
        )
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    if ss is not None and "1" < y < "9999":
        # Fast path for the common second-precision dateTime/instant (every stored
        # value in practice): validate with one datetime() call, build strings
        # directly, and only do datetime arithmetic when there is an offset.
        try:
            dt = datetime(int(y), int(mo), int(d), int(hh), int(mi), min(int(ss), 59))
        except ValueError as exc:
            raise ValueError(f"invalid FHIR date {value!r}: {exc}") from None
        if tz is None or tz in _UTC_OFFSETS:
            base = f"{y}-{mo}-{d}T{hh}:{mi}:{min(ss, '59')}."
        else:
            offset = _TZ_OFFSETS.get(tz)
            if offset is None:
                offset = _parse_offset(value, tz)
            base = (dt - offset).isoformat() + "."
        digits = frac[:6] if frac else ""
        return base + digits.ljust(6, "0"), base + digits.ljust(6, "9")
    g = m.groupdict()
    try:
        year = int(g["y"])
        if year == 0:
            raise ValueError("year 0000 does not exist")
        month = int(g["m"]) if g["m"] else None
        day = int(g["d"]) if g["d"] else None
        if month is None:
            low = datetime(year, 1, 1)
            high = datetime(year, 12, 31, 23, 59, 59, 999999)
        elif day is None:
            last = calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 0
            low = datetime(year, month, 1)
            high = datetime(year, month, last, 23, 59, 59, 999999)
        elif g["H"] is None:
            low = datetime(year, month, day)
            high = datetime(year, month, day, 23, 59, 59, 999999)
        else:
            hour, minute = int(g["H"]), int(g["M"])
            if g["S"] is None:
                low = datetime(year, month, day, hour, minute)
                high = low.replace(second=59, microsecond=999999)
            else:
                second = int(g["S"])
                if second == 60:  # leap second: not representable, clamp
                    second = 59
                frac = g["f"]
                if frac:
                    digits = frac[:6]
                    lo_us = int(digits.ljust(6, "0"))
                    hi_us = int(digits.ljust(6, "9"))
                else:
                    lo_us, hi_us = 0, 999999
                low = datetime(year, month, day, hour, minute, second, lo_us)
                high = low.replace(microsecond=hi_us)
            if tz and tz not in _UTC_OFFSETS:
                offset = _parse_offset(value, tz)
                low = _shift(low, -offset)
                high = _shift(high, -offset)
    except ValueError as exc:
        if str(exc).startswith("invalid FHIR date"):
            raise
        raise ValueError(f"invalid FHIR date {value!r}: {exc}") from None
    return low.isoformat(timespec="microseconds"), high.isoformat(timespec="microseconds")


_UTC_OFFSETS = frozenset({"Z", "+00:00", "-00:00"})
_TZ_OFFSETS: dict[str, timedelta] = {}


def _parse_offset(value: str, tz: str) -> timedelta:
    """The timedelta of a ``+hh:mm``/``-hh:mm`` offset (memoised; there are few)."""
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(f"invalid FHIR date {value!r}: time-zone offset {tz} out of range")
    offset = timedelta(hours=hours, minutes=minutes) * (1 if tz[0] == "+" else -1)
    _TZ_OFFSETS[tz] = offset
    return offset


def _shift(dt: datetime, delta: timedelta) -> datetime:
    """dt + delta, clamped to the representable range (year 1 / 9999 with offsets)."""
    try:
        return dt + delta
    except OverflowError:
        return datetime.min if delta < timedelta(0) else datetime.max


def number_range(text: str) -> tuple[float, float]:
    """The range implied by a number's significant figures.

    Per https://hl7.org/fhir/R4/search.html#number a search value is precise to its last
    written digit: ``"100"`` -> (99.5, 100.5), ``"100.00"`` -> (99.995, 100.005) and
    ``"1e2"`` (one significant figure, unit 10^2) -> (50.0, 150.0). Raises ValueError
    for anything that is not a finite decimal.
    """
    try:
        d = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise ValueError(f"invalid number {text!r}") from None
    if not d.is_finite():
        raise ValueError(f"invalid number {text!r}: must be finite")
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)  # finite decimals have an int exponent
    half = Decimal(5).scaleb(exponent - 1)
    return float(d - half), float(d + half)


# ---------------------------------------------------------------------------------------
# FHIRPath subset: tokenizer and parser
# ---------------------------------------------------------------------------------------


class CompileError(ValueError):
    """An expression uses FHIRPath the compiler does not support, or does not type-check."""


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*')
      | (?P<num>\d+(?:\.\d+)?)
      | (?P<op>!=|[.|()\[\]=,])
      | (?P<var>%[A-Za-z_][A-Za-z0-9_]*|\$this)
      | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
    )""",
    re.VERBOSE,
)

# AST nodes are plain tuples: ("id", name), ("member", base, name),
# ("call", base|None, name, args), ("index", base, n), ("as"|"is", base, type),
# ("union", (terms...)), ("eq"|"ne"|"and"|"or", left, right), ("lit", value),
# ("var", name); args are tuples too. Being hashable, a criteria AST can key the
# compiled-tree step that evaluates it, so identical where() steps are shared.
Node = tuple[Any, ...]


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(expr, pos)
        if m is None or m.end() == pos:
            raise CompileError(f"cannot tokenize {expr[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        text = m.group(kind)
        if kind == "id" and text.startswith("`"):
            text = text[1:-1]
        tokens.append((kind, text))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over FHIRPath operator precedence (or < and < = != < | < as is)."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, text: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (text is not None and tok[1] != text):
            raise CompileError(f"expected {text or 'token'} in {self.expr!r}")
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == text and tok[0] in ("op", "id")

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek() is not None:
            raise CompileError(f"unexpected {self.peek()[1]!r} in {self.expr!r}")  # type: ignore[index]
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.at("or"):
            self.take()
            node = ("or", node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.eq_expr()
        while self.at("and"):
            self.take()
            node = ("and", node, self.eq_expr())
        return node

    def eq_expr(self) -> Node:
        node = self.union_expr()
        if self.at("=") or self.at("!="):
            op = self.take()[1]
            node = ("eq" if op == "=" else "ne", node, self.union_expr())
        return node

    def union_expr(self) -> Node:
        terms = [self.type_expr()]
        while self.at("|"):
            self.take()
            terms.append(self.type_expr())
        return terms[0] if len(terms) == 1 else ("union", tuple(terms))

    def type_expr(self) -> Node:
        node = self.postfix()
        while self.at("as") or self.at("is"):
            op = self.take()[1]
            node = (op, node, self.type_name())
        return node

    def type_name(self) -> str:
        name = self.take()[1]
        while self.at("."):  # qualified: FHIR.Quantity, System.String
            self.take()
            name = self.take()[1]
        return name

    def postfix(self) -> Node:
        node = self.term()
        while True:
            if self.at("."):
                self.take()
                kind, name = self.take()
                if kind != "id":
                    raise CompileError(f"expected a name after '.' in {self.expr!r}")
                node = self.invocation(node, name)
            elif self.at("["):
                self.take()
                kind, num = self.take()
                if kind != "num" or not num.isdigit():
                    raise CompileError(f"only integer indexers are supported: {self.expr!r}")
                self.take("]")
                node = ("index", node, int(num))
            else:
                return node

    def invocation(self, base: Node | None, name: str) -> Node:
        if self.at("("):
            self.take()
            args: list[Node] = []
            if not self.at(")"):
                args.append(self.or_expr())
                while self.at(","):
                    self.take()
                    args.append(self.or_expr())
            self.take(")")
            return ("call", base, name, tuple(args))
        return ("id", name) if base is None else ("member", base, name)

    def term(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise CompileError(f"unexpected end of {self.expr!r}")
        kind, text = tok
        if kind == "op" and text == "(":
            self.take()
            node = self.or_expr()
            self.take(")")
            return node
        self.take()
        if kind == "str":
            body = text[1:-1]
            return ("lit", re.sub(r"\\(.)", r"\1", body))
        if kind == "num":
            return ("lit", Decimal(text))
        if kind == "var":
            return ("var", text.lstrip("%$"))
        if kind == "id":
            if text in ("true", "false"):
                return ("lit", text == "true")
            return self.invocation(None, text)
        raise CompileError(f"unexpected {text!r} in {self.expr!r}")


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> Node:
    return _Parser(expr).parse()


# ---------------------------------------------------------------------------------------
# Runtime helpers
# ---------------------------------------------------------------------------------------

_fold = functools.lru_cache(maxsize=1 << 16)(fold)

_REF_RE = re.compile(
    r"(?P<url>(?:(?P<base>[A-Za-z][A-Za-z0-9+.\-]*://.*?)/)?"
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64}))"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


class _RefParser:
    """Parses literal references (https://hl7.org/fhir/R4/references.html#literal)."""

    def __init__(self, resource_types: Iterable[str]) -> None:
        self.types = frozenset(resource_types)
        self.parse = functools.lru_cache(maxsize=1 << 16)(self._parse)

    def _parse(self, ref: str) -> tuple[str | None, str | None, str | None] | None:
        """(type, id, url) for a reference string, None when it gives no row."""
        if not ref or ref[0] == "#" or "?" in ref:
            # contained, or a conditional reference the transaction should have resolved
            return None
        m = _REF_RE.fullmatch(ref)
        if m is not None and m.group("type") in self.types:
            # Absolute: keep the URL (without /_history/n) so the query side can tell
            # local from external targets.
            return m.group("type"), m.group("id"), (m.group("url") if m.group("base") else None)
        # Absolute URIs that are not RESTful FHIR URLs (urn:uuid:, urn:oid:, other
        # servers' odd paths) and unparseable text are kept whole, matchable by URL.
        return None, None, ref

    def target_type(self, reference: Any, resource: dict[str, Any]) -> str | None:
        """What ``resolve()`` would return the type of, without resolving anything."""
        if type(reference) is not dict:
            return None
        ref = reference.get("reference")
        if isinstance(ref, str) and ref:
            if ref[0] == "#":
                for c in resource.get("contained") or ():
                    if type(c) is dict and c.get("id") == ref[1:]:
                        rt = c.get("resourceType")
                        return rt if isinstance(rt, str) else None
                return None
            parsed = self.parse(ref)
            if parsed is not None and parsed[0] is not None:
                return parsed[0]
        t = reference.get("type")  # logical reference: Reference.type is a type URI
        if isinstance(t, str) and t:
            return t.rsplit("/", 1)[-1]
        return None


# Runtime step: (items, resource) -> items.
StepFn = Callable[[list[Any], dict[str, Any]], list[Any]]
# Value converter: item -> iterable of row tails.
ValueFn = Callable[[Any], Iterable[tuple[Any, ...]]]


@dataclass(frozen=True)
class _Step:
    key: Any  # hashable identity, lets the tree share identical steps
    fn: StepFn | None = None  # None for plain ("get", json_key) steps


@dataclass(frozen=True)
class _Branch:
    steps: tuple[_Step, ...]
    type: str


# Composite component: (element, resource) -> row tails of the component's type.
ComponentFn = Callable[[Any, dict[str, Any]], list[tuple[Any, ...]]]
# Second component of a composite: (code, evaluator, tail builder).
_CompositeMember = tuple[str, ComponentFn, Callable[[tuple[Any, ...]], tuple[Any, ...]]]
# Same, when the second component is one element of the composite's element:
# (code, converter of that element's value, tail builder).
_PairMember = tuple[str, ValueFn, Callable[[tuple[Any, ...]], tuple[Any, ...]]]


class _TreeNode:
    """A node of the compile-time tree: the values reached by one sequence of steps.

    Leaves are grouped so that work is shared at run time: parameters converting the
    same values the same way (``code`` and ``combo-code`` on ``Observation.code``)
    convert once and append one row each, and composites sharing their first
    component evaluate it once per element. :func:`_codegen` turns the finished tree
    into one Python function per resource type.
    """

    __slots__ = ("composites", "gets", "ops", "pairs", "values")

    def __init__(self) -> None:
        self.values: dict[tuple[str, ValueFn], list[str]] = {}
        self.composites: dict[Any, tuple[ComponentFn, list[_CompositeMember]]] = {}
        # Composites whose second component is a direct child of the element: stored
        # at that child, keyed by the first component (evaluated on the parent).
        self.pairs: dict[ComponentFn, list[_PairMember]] = {}
        self.gets: dict[str, _TreeNode] = {}
        self.ops: dict[Any, tuple[StepFn, _TreeNode]] = {}

    def node(self, steps: tuple[_Step, ...]) -> _TreeNode:
        node = self
        for step in steps:
            if step.fn is None:
                node = node.gets.setdefault(step.key[1], _TreeNode())
            else:
                node = node.ops.setdefault(step.key, (step.fn, _TreeNode()))[1]
        return node

    def add_values(self, steps: tuple[_Step, ...], code: str, kind: str, conv: ValueFn) -> None:
        codes = self.node(steps).values.setdefault((kind, conv), [])
        if code not in codes:
            codes.append(code)

    def add_composite(
        self, steps: tuple[_Step, ...], key: Any, first: ComponentFn, member: _CompositeMember
    ) -> None:
        self.node(steps).composites.setdefault(key, (first, []))[1].append(member)

    def add_pair(self, steps: tuple[_Step, ...], first: ComponentFn, member: _PairMember) -> None:
        self.node(steps).pairs.setdefault(first, []).append(member)


ExtractFn = Callable[[dict[str, Any]], IndexRows]


def _codegen(tree: _TreeNode, name: str) -> ExtractFn:
    """Generate the extraction function of one resource type from its tree.

    The tree is unrolled into nested loops over the JSON, one loop per path step, with
    converters and predicates bound as constants; nothing is interpreted per resource.
    ``Observation.code`` with the ``code``/``combo-code`` parameters becomes::

        v1 = x0.get('code')
        for x1 in (v1 if type(v1) is list else () if v1 is None else (v1,)):
            for t in conv7(x1):
                D_token[('code', *t)] = None
                D_token[('combo-code', *t)] = None

    ``D_token`` is a dict used as an ordered set, so rows are de-duplicated as they are
    produced. ``where()`` and other per-item steps loop over ``fn([x], resource)``; an
    indexer (``Bundle.entry[0]``) slices the list of the path step it follows.
    :meth:`IndexExtractor.source` shows the generated code of a resource type.
    """
    consts: dict[str, Any] = {}
    body: list[str] = []
    kinds: set[str] = set()

    def const(obj: Any, prefix: str) -> str:
        ref = f"{prefix}{len(consts)}"
        consts[ref] = obj
        return ref

    def emit(node: _TreeNode, var: str, depth: int, ind: int, parent: str = "None") -> None:
        pad = "    " * ind
        for first, pair_members in node.pairs.items():
            kinds.add("composite")
            leaf = const(_pair_leaf(first, pair_members), "pair")
            body.append(f"{pad}{leaf}({parent}, {var}, x0, D_composite)")
        for (kind, conv), codes in node.values.items():
            kinds.add(kind)
            body.append(f"{pad}for t in {const(conv, 'conv')}({var}):")
            body.extend(f"{pad}    D_{kind}[({code!r}, *t)] = None" for code in codes)
        for first, members in node.composites.values():
            kinds.add("composite")
            leaf = const(_composite_leaf(first, members), "comp")
            body.append(f"{pad}{leaf}({var}, x0, D_composite)")
        if node.gets:
            body.append(f"{pad}if type({var}) is dict:")
            for key, child in node.gets.items():
                v, x = f"v{depth + 1}", f"x{depth + 1}"
                body.append(f"{pad}    {v} = {var}.get({key!r})")
                if (
                    child.values
                    or child.composites
                    or child.gets
                    or any(op_key[0] != "index" for op_key in child.ops)
                ):
                    body.append(
                        f"{pad}    for {x} in ({v} if type({v}) is list "
                        f"else () if {v} is None else ({v},)):"
                    )
                    emit_steps(child, x, depth + 1, ind + 2, var)
                for op_key, (_fn, grandchild) in child.ops.items():
                    if op_key[0] == "index":
                        n = op_key[1]
                        body.append(f"{pad}    if type({v}) is list:")
                        body.append(f"{pad}        for {x} in {v}[{n}:{n + 1}]:")
                        emit_steps(grandchild, x, depth + 1, ind + 3, var)
                        if n == 0:  # a 0..1 element is its own first item
                            body.append(f"{pad}    elif {v} is not None:")
                            body.append(f"{pad}        {x} = {v}")
                            emit_steps(grandchild, x, depth + 1, ind + 2, var)
        for op_key, (fn, child) in node.ops.items():
            if op_key[0] == "index":
                continue  # emitted by the parent's get, which owns the list
            x = f"x{depth + 1}"
            body.append(f"{pad}for {x} in {const(fn, 'op')}([{var}], x0):")
            emit_steps(child, x, depth + 1, ind + 1, parent)

    def emit_steps(node: _TreeNode, var: str, depth: int, ind: int, parent: str) -> None:
        before = len(body)
        emit(node, var, depth, ind, parent)
        if len(body) == before:
            body.append("    " * ind + "pass")

    emit(tree, "x0", 0, 1)
    # Rows are collected as keys of dicts, which de-duplicates them (keeping first-seen
    # order) at the cost of a plain store; the lists are built once at the end.
    head = [f"def {name}(x0):"]
    head += [f"    D_{kind} = {{}}" for kind in sorted(kinds)]
    tail = "    return IndexRows(" + ", ".join(f"{k}=[*D_{k}]" for k in sorted(kinds)) + ")"
    source = "\n".join(head + body + [tail]) + "\n"
    namespace: dict[str, Any] = dict(consts, IndexRows=IndexRows)
    exec(compile(source, f"<search-index {name}>", "exec"), namespace)  # noqa: S102
    fn: ExtractFn = namespace[name]
    fn.__doc__ = source  # keep the generated code inspectable (debugging, tests)
    return fn


def _pair_leaf(
    first: ComponentFn, members: list[_PairMember]
) -> Callable[[Any, Any, dict[str, Any], dict[Any, None]], None]:
    """Composite rows for one (element, second-component value) pair.

    Used when component 2 is a direct child of the element (``value.as(Quantity)`` is
    ``valueQuantity``): the leaf sits in the tree at that child, so composites whose
    value is absent cost nothing, and component 1 (``code``, on the parent element) is
    evaluated once for all composites of the pair.
    """
    members_t = tuple(members)

    def leaf(element: Any, value: Any, resource: dict[str, Any], out: dict[Any, None]) -> None:
        firsts: list[tuple[Any, Any]] | None = None
        for code, conv, make_tail in members_t:
            seconds = conv(value)
            if not seconds:
                continue
            if firsts is None:
                firsts = [(t[0], t[1]) for t in first(element, resource) if t[1] is not None]
            for s1, c1 in firsts:
                for t in seconds:
                    out[(code, s1, c1, *make_tail(t))] = None

    return leaf


def _composite_leaf(
    first: ComponentFn, members: list[_CompositeMember]
) -> Callable[[Any, dict[str, Any], dict[Any, None]], None]:
    """Composite rows (https://hl7.org/fhir/R4/search.html#composite) for one element.

    Component 2 is evaluated first: it is usually absent (an Observation has one
    value[x], so three of its four code-value-* composites have nothing to pair), and
    component 1 is then computed at most once per element for all the composites.
    """
    members_t = tuple(members)

    def leaf(element: Any, resource: dict[str, Any], out: dict[Any, None]) -> None:
        firsts: list[tuple[Any, Any]] | None = None
        for code, second, make_tail in members_t:
            seconds = second(element, resource)
            if not seconds:
                continue
            if firsts is None:
                firsts = [(t[0], t[1]) for t in first(element, resource) if t[1] is not None]
            for s1, c1 in firsts:
                for t in seconds:
                    out[(code, s1, c1, *make_tail(t))] = None

    return leaf


# Composite tails by the second component's type:
# (system2, code2, folded_str2, num_low2, num_high2, date_low2, date_high2).
_COMPOSITE_TAILS: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {
    "token": lambda t: (t[0], t[1], t[2], None, None, None, None),
    "string": lambda t: (None, None, t[0], None, None, None, None),
    "quantity": lambda t: (t[0], t[1], t[2], t[3], t[4], None, None),
    "number": lambda t: (None, None, None, t[0], t[1], None, None),
    "date": lambda t: (None, None, None, None, None, t[0], t[1]),
}


def _index_step(n: int) -> StepFn:
    def index_step(items: list[Any], _resource: dict[str, Any]) -> list[Any]:
        return items[n : n + 1]

    return index_step


def _eval_branches(branches: list[_Branch], item: Any, resource: dict[str, Any]) -> list[Any]:
    """Evaluate a (small) set of branches from one context item (criteria, components)."""
    out: list[Any] = []
    for br in branches:
        items = [item]
        for step in br.steps:
            if step.fn is None:
                key = step.key[1]
                nxt: list[Any] = []
                for it in items:
                    if type(it) is dict:
                        v = it.get(key)
                        if v is not None:
                            if type(v) is list:
                                nxt.extend(v)
                            else:
                                nxt.append(v)
                items = nxt
            else:
                items = step.fn(items, resource)
            if not items:
                break
        else:
            out.extend(items)
    return out


# ---------------------------------------------------------------------------------------
# Value converters: FHIR datatype -> row tails, per search-parameter type
# ---------------------------------------------------------------------------------------

_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)
_STRING_PRIMITIVES = frozenset({"string", "markdown", "code", "id", "uri", "url", "canonical"})
_URI_PRIMITIVES = frozenset({"uri", "url", "canonical", "oid", "uuid"})
_TOKEN_PRIMITIVES = frozenset(
    {"code", "id", "string", "uri", "url", "canonical", "oid", "uuid", "markdown"}
)
_INT_PRIMITIVES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
_NUMBER_PRIMITIVES = _INT_PRIMITIVES | {"decimal"}
_DATE_PRIMITIVES = frozenset({"date", "dateTime", "instant"})

# Type hierarchy used by as()/is()/ofType(): FHIR profiles of Quantity and the string/
# uri/integer specialisations (https://hl7.org/fhir/R4/datatypes.html).
_SUPERTYPE = {
    **{t: "Quantity" for t in _QUANTITY_TYPES - {"Quantity"}},
    "code": "string",
    "id": "string",
    "markdown": "string",
    "url": "uri",
    "canonical": "uri",
    "oid": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
}


def _is_subtype(actual: str, wanted: str) -> bool:
    t: str | None = actual
    while t is not None:
        if t.lower() == wanted:
            return True
        t = _SUPERTYPE.get(t)
    return False


def _s(value: Any) -> str | None:
    """A non-empty string or None (guards against malformed JSON)."""
    return value if type(value) is str and value else None


def _num(value: Any) -> float | None:
    if type(value) is bool:
        return None
    if type(value) in (int, float):
        return float(value)
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    return None


def _cut(s: str) -> str:
    return s if len(s) <= STRING_INDEX_MAX else s[:STRING_INDEX_MAX]


# -- string -----------------------------------------------------------------------------


def _string_plain(v: Any) -> Iterable[tuple[str, str]]:
    if type(v) is str and v:
        return ((_cut(_fold(v)), _cut(v)),)
    return ()


_HUMAN_NAME_PARTS = (("family", False), ("given", True), ("prefix", True), ("suffix", True))
_ADDRESS_PARTS = (
    ("line", True),
    ("city", False),
    ("district", False),
    ("state", False),
    ("postalCode", False),
    ("country", False),
)


def _string_parts(parts: tuple[tuple[str, bool], ...]) -> ValueFn:
    def conv(v: Any) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if type(v) is not dict:
            return out
        for key, many in parts:
            x = v.get(key)
            if x is None:
                continue
            for s in x if many and type(x) is list else (x,):
                if type(s) is str and s:
                    out.append((_cut(_fold(s)), _cut(s)))
        t = v.get("text")
        if type(t) is str and t:
            out.append((_cut(_fold(t)), _cut(t)))
        return out

    return conv


# -- token ------------------------------------------------------------------------------


def _token_coding(c: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    if type(c) is not dict:
        return ()
    system, code = _s(c.get("system")), _s(c.get("code"))
    if system is None and code is None:
        return ()
    d = _s(c.get("display"))
    return ((system, code, _fold(d) if d else None),)


def _token_cc(cc: Any) -> list[tuple[str | None, str | None, str | None]]:
    out: list[tuple[str | None, str | None, str | None]] = []
    if type(cc) is not dict:
        return out
    # Hot path (every clinical resource has several CodeableConcepts): the _s() checks
    # are inlined.
    for c in cc.get("coding") or ():
        if type(c) is dict:
            system = c.get("system")
            if type(system) is not str or not system:
                system = None
            code = c.get("code")
            if type(code) is not str or not code:
                code = None
            if system is not None or code is not None:
                d = c.get("display")
                out.append((system, code, _fold(d) if type(d) is str and d else None))
    t = cc.get("text")
    if type(t) is str and t:
        out.append((None, None, _fold(t)))
    return out


def _token_identifier(i: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    if type(i) is not dict:
        return ()
    system, value = _s(i.get("system")), _s(i.get("value"))
    if system is None and value is None:
        return ()
    t = i.get("type")
    text = _s(t.get("text")) if type(t) is dict else None
    return ((system, value, _fold(text) if text else None),)


def _token_contact_point(cp: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    if type(cp) is not dict:
        return ()
    value = _s(cp.get("value"))
    if value is None:
        return ()
    return ((_s(cp.get("system")), value, None),)


def _token_primitive(v: Any) -> Iterable[tuple[None, str, None]]:
    if type(v) is str and v:
        return ((None, v, None),)
    return ()


def _token_boolean(v: Any) -> Iterable[tuple[None, str, None]]:
    if type(v) is bool:
        return ((None, "true" if v else "false", None),)
    return ()


def _token_integer(v: Any) -> Iterable[tuple[None, str, None]]:
    if type(v) is int:
        return ((None, str(v), None),)
    return ()


def _token_codeable_reference(v: Any) -> list[tuple[str | None, str | None, str | None]]:
    return _token_cc(v.get("concept")) if type(v) is dict else []


# -- date -------------------------------------------------------------------------------


def _date_primitive(v: Any) -> Iterable[tuple[str, str]]:
    if type(v) is str and v:
        return (date_range(v),)
    return ()


def _period_range(p: Any) -> tuple[str, str] | None:
    if type(p) is not dict:
        return None
    start, end = _s(p.get("start")), _s(p.get("end"))
    if start is None and end is None:
        return None
    return (
        date_range(start)[0] if start else DATE_MIN,
        date_range(end)[1] if end else DATE_MAX,
    )


def _date_period(p: Any) -> Iterable[tuple[str, str]]:
    r = _period_range(p)
    return (r,) if r else ()


def _date_timing(t: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if type(t) is not dict:
        return out
    for e in t.get("event") or ():
        if type(e) is str and e:
            out.append(date_range(e))
    rep = t.get("repeat")
    if type(rep) is dict:
        r = _period_range(rep.get("boundsPeriod"))
        if r:
            out.append(r)
    return out


# -- number -----------------------------------------------------------------------------


def _number_primitive(v: Any) -> Iterable[tuple[float, float]]:
    n = _num(v)
    return ((n, n),) if n is not None else ()


def _range_bounds(r: Any) -> tuple[float, float, dict[str, Any] | None] | None:
    if type(r) is not dict:
        return None
    low, high = r.get("low"), r.get("high")
    lo = _num(low.get("value")) if type(low) is dict else None
    hi = _num(high.get("value")) if type(high) is dict else None
    if lo is None and hi is None:
        return None
    unit_src = low if type(low) is dict and lo is not None else high
    return (
        lo if lo is not None else -_INF,
        hi if hi is not None else _INF,
        unit_src if type(unit_src) is dict else None,
    )


def _number_range_value(r: Any) -> Iterable[tuple[float, float]]:
    b = _range_bounds(r)
    return ((b[0], b[1]),) if b else ()


# -- quantity ---------------------------------------------------------------------------

QuantityTail = tuple[str | None, str | None, str | None, float, float]


def _quantity(q: Any) -> Iterable[QuantityTail]:
    if type(q) is not dict:
        return ()
    v = q.get("value")
    if type(v) is not float:
        v = _num(v)
        if v is None:
            return ()
    unit = q.get("unit")
    return (
        (
            _s(q.get("system")),
            _s(q.get("code")),
            _fold(unit) if type(unit) is str and unit else None,
            v,
            v,
        ),
    )


def _quantity_money(m: Any) -> Iterable[QuantityTail]:
    if type(m) is not dict:
        return ()
    v = _num(m.get("value"))
    if v is None:
        return ()
    currency = _s(m.get("currency"))
    return ((CURRENCY_SYSTEM if currency else None, currency, None, v, v),)


def _quantity_range(r: Any) -> Iterable[QuantityTail]:
    b = _range_bounds(r)
    if b is None:
        return ()
    lo, hi, q = b
    if q is None:
        return ((None, None, None, lo, hi),)
    unit = _s(q.get("unit"))
    return ((_s(q.get("system")), _s(q.get("code")), _fold(unit) if unit else None, lo, hi),)


# -- uri --------------------------------------------------------------------------------


def _uri_primitive(v: Any) -> Iterable[tuple[str]]:
    if type(v) is str and v:
        return ((v,),)
    return ()


# Converters by (search-parameter type, FHIR datatype); reference is built per extractor
# because it needs the set of known resource types.
_CONVERTERS: dict[str, dict[str, ValueFn]] = {
    "string": {
        **{t: _string_plain for t in _STRING_PRIMITIVES},
        "HumanName": _string_parts(_HUMAN_NAME_PARTS),
        "Address": _string_parts(_ADDRESS_PARTS),
    },
    "token": {
        **{t: _token_primitive for t in _TOKEN_PRIMITIVES},
        **{t: _token_integer for t in _INT_PRIMITIVES},
        "boolean": _token_boolean,
        "Coding": _token_coding,
        "CodeableConcept": _token_cc,
        "CodeableReference": _token_codeable_reference,
        "Identifier": _token_identifier,
        "ContactPoint": _token_contact_point,
    },
    "date": {
        **{t: _date_primitive for t in _DATE_PRIMITIVES},
        "Period": _date_period,
        "Timing": _date_timing,
    },
    "number": {
        **{t: _number_primitive for t in _NUMBER_PRIMITIVES},
        "Range": _number_range_value,
    },
    "quantity": {
        **{t: _quantity for t in _QUANTITY_TYPES},
        "Money": _quantity_money,
        "Range": _quantity_range,
        # SampledData carries no single value to search on: deliberately no rows.
        "SampledData": lambda _v: (),
    },
    "uri": {t: _uri_primitive for t in _URI_PRIMITIVES | {"string", "code"}},
}


# ---------------------------------------------------------------------------------------
# Compiler
# ---------------------------------------------------------------------------------------


class _Compiler:
    """Compiles FHIRPath (sub)expressions to typed branches for one resource type."""

    def __init__(self, element_types: dict[str, Any], refs: _RefParser) -> None:
        self.types: dict[str, dict[str, list[Any]]] = element_types["types"]
        self.refs = refs

    # -- value expressions --------------------------------------------------------------

    def compile(self, node: Node, ctx: list[_Branch], root_type: str) -> list[_Branch]:
        kind = node[0]
        if kind == "id":
            name = node[1]
            if all(not b.steps for b in ctx) and name in (root_type, "Resource", "DomainResource"):
                return ctx  # leading type name: the resource itself
            return self.member(ctx, name)
        if kind == "member":
            return self.member(self.compile(node[1], ctx, root_type), node[2])
        if kind == "union":
            out: list[_Branch] = []
            for term in node[1]:
                out.extend(self.compile(term, ctx, root_type))
            return out
        if kind == "as":
            return self.filter_type(self.compile(node[1], ctx, root_type), node[2])
        if kind == "index":
            n = node[2]
            step = _Step(("index", n), _index_step(n))
            base = self.compile(node[1], ctx, root_type)
            if any(not b.steps or b.steps[-1].fn is not None for b in base):
                # The generated code slices the list of the path step the indexer
                # follows; FHIRPath indexes the whole collection, which is the same
                # only when that step is a plain element access.
                raise CompileError("indexers are only supported right after an element")
            return [_Branch((*b.steps, step), b.type) for b in base]
        if kind == "var":
            if node[1] in ("resource", "rootResource"):
                step = _Step(("root",), lambda _items, r: [r])
                return [_Branch((step,), root_type)]
            if node[1] == "this":
                return ctx
            raise CompileError(f"unsupported variable %{node[1]}")
        if kind == "call":
            return self.call(node, ctx, root_type)
        if kind in ("and", "or", "eq", "ne", "is"):
            # Boolean-valued expression used as a value (Patient.deceased.exists() and
            # ...): evaluate it on each context item and yield the boolean.
            pred = self.predicate(node, ctx, root_type)
            steps: list[_Branch] = []
            for b in ctx:

                def bool_step(items: list[Any], r: dict[str, Any], pred: Any = pred) -> list[Any]:
                    out = []
                    for it in items:
                        v = pred(it, r)
                        if v is not None:
                            out.append(v)
                    return out

                steps.append(
                    _Branch((*b.steps, _Step(("bool", node, b.type), bool_step)), "boolean")
                )
            return steps
        raise CompileError(f"unsupported expression node {kind!r}")

    def call(self, node: Node, ctx: list[_Branch], root_type: str) -> list[_Branch]:
        _, base_node, name, args = node
        base = ctx if base_node is None else self.compile(base_node, ctx, root_type)
        if name in ("as", "ofType"):
            return self.filter_type(base, self.type_arg(args, name))
        if name == "where":
            if len(args) != 1:
                raise CompileError("where() takes one argument")
            out = []
            for b in base:
                pred = self.predicate(args[0], [_Branch((), b.type)], root_type)

                def where_step(items: list[Any], r: dict[str, Any], pred: Any = pred) -> list[Any]:
                    return [it for it in items if pred(it, r) is True]

                step = _Step(("where", args[0], b.type), where_step)
                out.append(_Branch((*b.steps, step), b.type))
            return out
        if name == "extension":
            if len(args) != 1 or args[0][0] != "lit" or not isinstance(args[0][1], str):
                raise CompileError("extension() needs one string literal argument")
            ext = self.member(base, "extension")
            crit: Node = ("eq", ("id", "url"), args[0])
            return self.call(("call", None, "where", (crit,)), ext, root_type)
        if name == "first":
            return self.compile(("index", ("var", "this"), 0), base, root_type)
        if name in ("exists", "empty", "not", "is"):
            # Boolean functions used as a value: evaluate as criteria (see compile()).
            return self.compile(("and", node, ("lit", True)), ctx, root_type)
        if name == "resolve":
            raise CompileError("resolve() is only supported as 'resolve() is Type'")
        raise CompileError(f"unsupported function {name}()")

    @staticmethod
    def type_arg(args: tuple[Node, ...], fname: str) -> str:
        if len(args) != 1 or args[0][0] not in ("id", "member"):
            raise CompileError(f"{fname}() needs a type name")
        arg = args[0]
        return arg[1] if arg[0] == "id" else arg[2]  # FHIR.Quantity -> Quantity

    def member(self, ctx: list[_Branch], name: str) -> list[_Branch]:
        out: list[_Branch] = []
        errors = []
        for b in ctx:
            elements = self.types.get(b.type)
            if elements is None:
                errors.append(f"{b.type} has no elements (cannot navigate to {name!r})")
                continue
            spec = elements.get(name)
            if spec is None:
                errors.append(f"{b.type} has no element {name!r}")
                continue
            type_spec = spec[0]
            if isinstance(type_spec, dict):  # choice element: one branch per typed key
                for json_key, t in type_spec.items():
                    out.append(_Branch((*b.steps, _Step(("get", json_key))), t))
            else:
                out.append(_Branch((*b.steps, _Step(("get", name))), type_spec))
        if errors and not out:
            raise CompileError("; ".join(errors))
        return out

    def filter_type(self, branches: list[_Branch], type_name: str) -> list[_Branch]:
        wanted = type_name.lower()
        # Exact datatype first: (ConceptMap.source as uri) must not pick sourceCanonical
        # although canonical specialises uri; fall back to specialisations (Age for
        # Quantity) only when no branch has the exact type.
        exact = [b for b in branches if b.type.lower() == wanted]
        if exact:
            return exact
        sub = [b for b in branches if _is_subtype(b.type, wanted)]
        if not sub:
            types = sorted({b.type for b in branches})
            raise CompileError(f"no branch of type {type_name} among {types}")
        return sub

    # -- boolean criteria -----------------------------------------------------------------

    def predicate(
        self, node: Node, ctx: list[_Branch], root_type: str
    ) -> Callable[[Any, dict[str, Any]], bool | None]:
        """Compile a criteria expression to ``(item, resource) -> True|False|None``.

        ``None`` is FHIRPath's empty result; ``where()`` keeps an item only on True.
        """
        kind = node[0]
        if kind == "call" and node[2] == "is":  # X.is(T) == X is T
            node = ("is", node[1] or ("var", "this"), self.type_arg(node[3], "is"))
            kind = "is"
        if kind in ("and", "or"):
            left = self.predicate(node[1], ctx, root_type)
            right = self.predicate(node[2], ctx, root_type)
            if kind == "and":

                def p_and(it: Any, r: dict[str, Any]) -> bool | None:
                    a = left(it, r)
                    if a is False:
                        return False
                    b = right(it, r)
                    if b is False:
                        return False
                    return True if a is True and b is True else None

                return p_and

            def p_or(it: Any, r: dict[str, Any]) -> bool | None:
                a = left(it, r)
                if a is True:
                    return True
                b = right(it, r)
                if b is True:
                    return True
                return False if a is False and b is False else None

            return p_or

        if kind in ("eq", "ne"):
            lhs, rhs = node[1], node[2]
            if lhs[0] == "lit":
                lhs, rhs = rhs, lhs
            if rhs[0] != "lit":
                raise CompileError("only comparisons with a literal are supported")
            values = self.values(lhs, ctx, root_type)
            lit = rhs[1]
            negate = kind == "ne"

            def p_eq(it: Any, r: dict[str, Any]) -> bool | None:
                vals = values(it, r)
                if not vals:
                    return None
                if len(vals) != 1:
                    result = False
                else:
                    v = vals[0]
                    if isinstance(lit, bool) or type(v) is bool:
                        result = type(v) is bool and isinstance(lit, bool) and v == lit
                    elif isinstance(lit, Decimal):
                        n = _num(v)
                        result = n is not None and Decimal(str(n)) == lit
                    else:
                        result = v == lit
                return (not result) if negate else result

            return p_eq

        if kind == "is":
            base, type_name = node[1], node[2]
            if base[0] == "call" and base[2] == "resolve":
                refs = (
                    self.values(base[1], ctx, root_type)
                    if base[1] is not None
                    else lambda it, _r: [it]
                )
                target = type_name
                target_type = self.refs.target_type

                def p_resolve_is(it: Any, r: dict[str, Any]) -> bool | None:
                    vals = refs(it, r)
                    if not vals:
                        return None
                    return any(target_type(v, r) == target for v in vals)

                return p_resolve_is
            try:
                matching = self.filter_type(self.compile(base, ctx, root_type), type_name)
            except CompileError:
                return lambda _it, _r: False
            return lambda it, r: bool(_eval_branches(matching, it, r))

        if kind == "call" and node[2] in ("exists", "empty"):
            base = node[1]
            if node[3]:  # exists(criteria) == where(criteria).exists()
                base = ("call", base, "where", node[3])
            # exists() on the context item itself is simply "there is an item".
            values = self.values(base, ctx, root_type) if base is not None else lambda it, _r: [it]
            want = node[2] == "exists"

            def p_exists(it: Any, r: dict[str, Any]) -> bool:
                found = bool(values(it, r))
                return found if want else not found

            return p_exists

        if kind == "call" and node[2] == "not":
            inner = (
                self.predicate(node[1], ctx, root_type)
                if node[1] is not None
                else lambda it, _r: it
            )

            def p_not(it: Any, r: dict[str, Any]) -> bool | None:
                v = inner(it, r)
                return None if v is None else not v

            return p_not

        if kind == "lit":
            value = node[1]
            return lambda _it, _r: value if isinstance(value, bool) else True

        # A plain path: FHIRPath singleton evaluation of collections as booleans.
        values = self.values(node, ctx, root_type)

        def p_path(it: Any, r: dict[str, Any]) -> bool | None:
            vals = values(it, r)
            if not vals:
                return None
            if len(vals) == 1 and type(vals[0]) is bool:
                return vals[0]
            return True

        return p_path

    def values(
        self, node: Node, ctx: list[_Branch], root_type: str
    ) -> Callable[[Any, dict[str, Any]], list[Any]]:
        branches = self.compile(node, ctx, root_type)
        return lambda it, r: _eval_branches(branches, it, r)


# ---------------------------------------------------------------------------------------
# Extractor
# ---------------------------------------------------------------------------------------


def _only_targets(conv: ValueFn, targets: frozenset[str]) -> ValueFn:
    def filtered(v: Any) -> list[tuple[Any, ...]]:
        return [t for t in conv(v) if t[0] in targets]

    return filtered


def _reference_converter(refs: _RefParser) -> dict[str, ValueFn]:
    parse = refs.parse

    def from_reference(v: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
        if type(v) is not dict:
            return ()
        ref = v.get("reference")
        if type(ref) is not str:
            return ()
        parsed = parse(ref)
        return (parsed,) if parsed is not None else ()

    def from_uri(v: Any) -> Iterable[tuple[None, None, str]]:
        return ((None, None, v),) if type(v) is str and v else ()

    def from_codeable_reference(v: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
        return from_reference(v.get("reference")) if type(v) is dict else ()

    def from_resource(v: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
        # Bundle.entry[0].resource: the entry's resource itself is the target.
        if type(v) is dict and _s(v.get("resourceType")) and _s(v.get("id")):
            return ((v["resourceType"], v["id"], None),)
        return ()

    return {
        "Reference": from_reference,
        "CodeableReference": from_codeable_reference,
        "Resource": from_resource,
        **{t: from_uri for t in _URI_PRIMITIVES},
    }


class _Plan:
    __slots__ = ("failures", "notes", "run")

    def __init__(self) -> None:
        self.run: ExtractFn = lambda _resource: IndexRows()
        self.failures: list[tuple[str, str]] = []  # (code, reason): not (fully) indexed
        self.notes: list[tuple[str, str]] = []  # (code, note): datatypes without rows


class IndexExtractor:
    """Extracts :class:`IndexRows` from resources (https://hl7.org/fhir/R4/search.html).

    Every search parameter of a resource type is compiled the first time a resource of
    that type is extracted, into one generated function; later calls just run it.
    Instances are safe to share between threads (compilation races only do redundant
    work).
    """

    def __init__(self, registry: SearchParamRegistry | None = None) -> None:
        self.registry = registry if registry is not None else SearchParamRegistry.default()
        self._refs = _RefParser(self.registry.resource_types())
        self._compiler = _Compiler(self.registry.element_types, self._refs)
        self._converters: dict[str, dict[str, ValueFn]] = {
            **_CONVERTERS,
            "reference": _reference_converter(self._refs),
        }
        self._types = frozenset(self.registry.resource_types())
        self._plans: dict[str, _Plan] = {}
        self._components: dict[tuple[str, str, str, str], ComponentFn] = {}

    # -- public -----------------------------------------------------------------------

    def extract(self, resource: dict[str, Any]) -> IndexRows:
        """All (de-duplicated) index rows of ``resource``, a FHIR JSON dict.

        Raises ValueError if ``resourceType`` is missing or unknown, or a date in the
        resource is malformed.
        """
        rt = resource.get("resourceType")
        plan = self._plans.get(rt) if isinstance(rt, str) else None
        if plan is None:
            plan = self._plan(rt)
        rows: IndexRows = plan.run(resource)
        if rt == "Location":
            rows.special.extend(near_rows(resource))
        return rows

    def failures(self, resource_type: str) -> list[tuple[str, str]]:
        """(code, reason) of the parameters of ``resource_type`` not (fully) indexed."""
        return list(self._plan(resource_type).failures)

    def notes(self, resource_type: str) -> list[tuple[str, str]]:
        """(code, note) for choice branches whose datatype gives no rows by design.

        E.g. ``Immunization.occurrence`` is dateTime|string and the ``date`` parameter
        can only index the dateTime branch; ``occurrenceString`` is ignored.
        """
        return list(self._plan(resource_type).notes)

    def source(self, resource_type: str) -> str:
        """The generated Python source of ``resource_type``'s extractor (debugging)."""
        return self._plan(resource_type).run.__doc__ or ""

    # -- compilation --------------------------------------------------------------------

    def _plan(self, rt: Any) -> _Plan:
        if not isinstance(rt, str) or rt not in self._types:
            raise ValueError(f"unknown resourceType {rt!r}")
        plan = self._plans.get(rt)
        if plan is None:
            plan = self._compile_type(rt)
            self._plans[rt] = plan
        return plan

    def _compile_type(self, rt: str) -> _Plan:
        plan = _Plan()
        tree = _TreeNode()
        for code, param in sorted(self.registry.for_type(rt).items()):
            if code in COLUMN_PARAMS:
                continue
            if (rt, code) == ("Location", "near"):
                continue  # rows written by near_rows
            if param.type == "special":
                plan.failures.append((code, "type special is not indexed"))
                continue
            try:
                partial, notes = self._compile_param(param, tree)
            except CompileError as exc:
                plan.failures.append((code, str(exc)))
                continue
            if partial:
                plan.failures.append((code, "partially compiled: " + "; ".join(partial)))
            if notes:
                plan.notes.append((code, "; ".join(notes)))
        plan.run = _codegen(tree, "extract_" + rt)
        return plan

    def _compile_param(self, param: SearchParam, tree: _TreeNode) -> tuple[list[str], list[str]]:
        """Compile one parameter into ``tree``; return (problems, notes).

        Each union term is compiled separately so one term using an element missing
        from the R4B models does not lose the others (those are *problems*). Branches
        whose datatype has no conversion for the parameter type (``occurrenceString``
        for a date parameter) are dropped and reported as *notes*. Raises CompileError
        if nothing compiles.
        """
        if not param.expression:
            raise CompileError(f"no expression for {param.resource_type}")
        rt = param.resource_type
        # R4-only resource types have no model in R4B; their Resource-level elements
        # (meta for _tag/_profile/...) are still known from DomainResource.
        root = rt if rt in self._compiler.types else "DomainResource"
        branches: list[_Branch] = []
        problems: list[str] = []
        for term in split_union(param.expression):
            try:
                branches.extend(self._compiler.compile(_parse(term), [_Branch((), root)], rt))
            except CompileError as exc:
                problems.append(f"{term}: {exc}")
        if not branches:
            raise CompileError("; ".join(problems) or "empty expression")

        if param.type == "composite":
            self._check_composite(param)
            (type1, expr1), (type2, expr2) = param.components
            rt = param.resource_type
            compiled = [
                (
                    b,
                    self._component(rt, type1, expr1, b.type),
                    self._component_parts(rt, type2, expr2, b.type),
                )
                for b in branches
            ]  # all or nothing: compile every branch before touching the tree
            tail = _COMPOSITE_TAILS[type2]
            for b, first, parts in compiled:
                if all(len(br.steps) == 1 and br.steps[0].fn is None for br, _ in parts):
                    for br, conv in parts:
                        tree.add_pair((*b.steps, *br.steps), first, (param.code, conv, tail))
                else:
                    second = self._component(rt, type2, expr2, b.type)
                    tree.add_composite(b.steps, (expr1, b.type), first, (param.code, second, tail))
            return problems, []

        converters = self._converters.get(param.type)
        if converters is None:
            raise CompileError(f"unsupported parameter type {param.type}")
        convertible = [(b, converters.get(b.type)) for b in branches]
        unconvertible = sorted({b.type for b, conv in convertible if conv is None})
        if len(unconvertible) == len({b.type for b in branches}):
            raise CompileError(f"no {param.type} conversion for datatypes {unconvertible}")
        for b, maybe_conv in convertible:
            if maybe_conv is None:
                continue
            conv = maybe_conv
            if param.type == "reference" and b.type == "Resource" and param.targets:
                # Bundle.entry[0].resource: FHIRPath gives whatever resource comes
                # first; only one of the parameter's target types is meaningful
                # (a document's Composition is not a "message").
                conv = _only_targets(conv, frozenset(param.targets))
            tree.add_values(b.steps, param.code, param.type, conv)
        notes = []
        if unconvertible:
            notes.append(f"no {param.type} rows for datatypes {unconvertible}")
        return problems, notes

    @staticmethod
    def _check_composite(param: SearchParam) -> None:
        if len(param.components) != 2:
            raise CompileError(f"composites with {len(param.components)} components")
        (type1, _), (type2, _) = param.components
        if type1 != "token":
            raise CompileError(f"composite first component must be token, not {type1}")
        if type2 not in _COMPOSITE_TAILS:
            raise CompileError(f"composite second component of type {type2!r}")

    def _component_parts(
        self, rt: str, ptype: str, expr: str, element_type: str
    ) -> list[tuple[_Branch, ValueFn]]:
        """Typed branches of a composite component, with their converters."""
        converters = self._converters[ptype]
        parts = []
        for b in self._compiler.compile(_parse(expr), [_Branch((), element_type)], rt):
            conv = converters.get(b.type)
            if conv is not None:
                parts.append((b, conv))
        if not parts:
            raise CompileError(f"component {expr!r} yields no {ptype} values")
        return parts

    def _component(self, rt: str, ptype: str, expr: str, element_type: str) -> ComponentFn:
        """Compile a composite component relative to the composite's element type.

        Memoised, so composites sharing a first component share its evaluator (and the
        tree can group them, see :func:`_composite_leaf`).
        """
        key = (rt, ptype, expr, element_type)
        cached = self._components.get(key)
        if cached is not None:
            return cached
        parts = [([b], conv) for b, conv in self._component_parts(*key)]

        evaluate: ComponentFn
        if all(len(bs[0].steps) == 1 and bs[0].steps[0].fn is None for bs, _ in parts):
            # Fast path for the usual one-key components (``code``, ``value.as(X)``).
            keyed = tuple((bs[0].steps[0].key[1], conv) for bs, conv in parts)

            def evaluate(element: Any, resource: dict[str, Any]) -> list[tuple[Any, ...]]:
                out: list[tuple[Any, ...]] = []
                if type(element) is dict:
                    for k, conv in keyed:
                        v = element.get(k)
                        if v is not None:
                            if type(v) is list:
                                for x in v:
                                    out.extend(conv(x))
                            else:
                                out.extend(conv(v))
                return out

        else:

            def evaluate(element: Any, resource: dict[str, Any]) -> list[tuple[Any, ...]]:
                out: list[tuple[Any, ...]] = []
                for branches, conv in parts:
                    for v in _eval_branches(branches, element, resource):
                        out.extend(conv(v))
                return out

        self._components[key] = evaluate
        return evaluate


def compile_report(registry: SearchParamRegistry | None = None) -> list[tuple[str, str, str]]:
    """Compile every parameter of every type; return (type, code, reason) failures."""
    extractor = IndexExtractor(registry)
    out: list[tuple[str, str, str]] = []
    for rt in extractor.registry.resource_types():
        for code, reason in extractor.failures(rt):
            out.append((rt, code, reason))
    return out


def near_rows(
    location: dict[str, Any],
) -> list[tuple[str, str | None, str | None, str | None, float | None, float | None]]:
    """``Location.near`` (https://hl7.org/fhir/R4/location.html#positional): the
    position's latitude and longitude as a point on the unit sphere, one quantity
    row per axis (codes ``x``, ``y``, ``z``), which distance searches bound."""
    position = location.get("position")
    if not isinstance(position, dict):
        return []
    raw_lat, raw_lon = position.get("latitude"), position.get("longitude")
    if not (_is_number(raw_lat) and _is_number(raw_lon)):
        return []
    lat, lon = float(raw_lat or 0), float(raw_lon or 0)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return []
    point = unit_vector(lat, lon)
    return [
        ("near", None, axis, None, v, v) for axis, v in zip(("x", "y", "z"), point, strict=True)
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
