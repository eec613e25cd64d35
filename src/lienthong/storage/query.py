"""The parsed form of a FHIR search, as the store executes it.

The FHIR layer turns ``GET [type]?params`` into a :class:`SearchQuery`
(https://hl7.org/fhir/R4/search.html); each storage adapter turns it into SQL.
Values here are already normalised: strings folded, dates as UTC ranges,
numbers as implied ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Prefixes https://hl7.org/fhir/R4/search.html#prefix
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True)
class TokenValue:
    """``[system]|[code]``; ``system`` is None for any system, "" for no system."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class RangeValue:
    """A date, number or quantity search value with its prefix and implied range."""

    prefix: str
    low: float | str
    high: float | str
    system: str | None = None  # quantity only
    code: str | None = None  # quantity only
    exact: float | None = None  # number/quantity: the value as written


@dataclass(frozen=True)
class ReferenceValue:
    """A reference search value: a type and id, or an absolute URL."""

    target_type: str | None
    target_id: str | None
    url: str | None = None


@dataclass(frozen=True)
class CanonicalValue:
    """``url|version`` on a canonical's ``uri`` parameter (search.html#versions);
    ``version_param`` is the token parameter of the same resource holding the version."""

    url: str
    version: str
    version_param: str = "version"


@dataclass(frozen=True)
class NearValue:
    """``near=lat|long|distance|units`` (location.html#positional), distance in km."""

    latitude: float
    longitude: float
    km: float


@dataclass(frozen=True)
class CompositeValue:
    first: TokenValue
    second: TokenValue | RangeValue | str


Value = (
    TokenValue
    | RangeValue
    | ReferenceValue
    | CompositeValue
    | CanonicalValue
    | NearValue
    | str
    | bool
)


@dataclass
class Criterion:
    """One search parameter occurrence: its values are OR'ed, criteria are AND'ed.

    ``param_type`` is the SearchParameter type; ``code`` the parameter code
    (``_id`` and ``_lastUpdated`` are answered from the resource table).
    ``chain`` narrows references to targets matching a criterion of the
    target type (one criterion per candidate target type, OR'ed); ``has`` is a
    reverse chain (``_has``): resources that a ``has_source_type`` resource
    points at through ``has_ref_param`` and that matches ``has``.

    ``sp_pairs``, when set, lists the (resource type, code) pairs whose index rows
    answer the criterion instead of ``(resource_type, code)`` alone: a parameter
    common to several types in a system-level search, or the OR over a
    compartment's parameters (every pair of the same parameter type).
    """

    resource_type: str
    code: str
    param_type: str
    modifier: str | None = None
    values: list[Value] = field(default_factory=list)
    chain: list[Criterion] = field(default_factory=list)
    has: Criterion | None = None
    has_ref_param: str | None = None
    has_source_type: str | None = None
    sp_pairs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SortKey:
    code: str
    param_type: str
    descending: bool = False


@dataclass
class SearchQuery:
    """``resource_type`` None is a system-level search, over ``resource_types`` when
    given and over every type otherwise."""

    resource_type: str | None
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    with_total: bool = True
    include_deleted: bool = False
    # When set, only resources whose patient compartment lies within these patient
    # ids match — applied to the searched resources and to every resource a chain or
    # _has looks at, so neither results, totals nor criteria reveal other patients.
    visible_patients: frozenset[str] | None = None
    # With visible_patients: the types that are visible without any link to a patient
    # (reference data such as Organization); anything else must name a visible patient.
    public_types: frozenset[str] = frozenset()
    resource_types: tuple[str, ...] | None = None
    # With resource_types: they are candidates, narrowed by the access gate to the ones
    # the caller may search (a system search without _type), not each required.
    any_permitted_type: bool = False


def unit_vector(latitude: float, longitude: float) -> tuple[float, float, float]:
    """The point on the unit sphere at a latitude and longitude in degrees: how
    ``Location.near`` is indexed and searched."""
    lat, lon = math.radians(latitude), math.radians(longitude)
    return (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))
