"""Which representation a request asks for (https://hl7.org/fhir/R4/http.html#mime-type).

The server produces FHIR JSON only, for FHIR version 4.0 only. A request that
asks for anything else, by ``_format`` (which overrides ``Accept``) or by an
``Accept`` header none of whose media ranges JSON satisfies, is answered 406
Not Acceptable. The ``fhirVersion`` media-type parameter
(https://hl7.org/fhir/R4/http.html#version-parameter) must name 4.0 when given.

Binary is the exception (https://hl7.org/fhir/R4/binary.html#rest): its read
returns the raw content unless the client explicitly asks for a FHIR type.

Accept is parsed here rather than with a library: the media ranges, their ``q``
and ``fhirVersion`` parameters are all that matters, and none of the project's
dependencies exposes an Accept parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from lienthong.fhir.errors import FhirError, error

FHIR_VERSION = "4.0"
"""The FHIR version the server speaks, as the fhirVersion parameter names it (major.minor)."""

# _format values and media types of R4 http.html#mime-type, by format
JSON_TYPES = frozenset(
    {"json", "application/json", "application/fhir+json", "application/json+fhir"}
)
FHIR_TYPES = frozenset(
    {
        "application/fhir+json",
        "application/json+fhir",
        "application/fhir+xml",
        "application/xml+fhir",
    }
)
"""Media types that name a FHIR representation (not merely JSON or XML)."""
_KNOWN = {
    "xml": frozenset(
        {"xml", "text/xml", "application/xml", "application/fhir+xml", "application/xml+fhir"}
    ),
    "turtle": frozenset({"ttl", "text/turtle", "application/fhir+turtle", "application/x-turtle"}),
    "html": frozenset({"html", "text/html"}),
}


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header (or a ``_format`` value)."""

    type: str
    params: dict[str, str]
    q: float

    def covers(self, media_type: str) -> bool:
        """Whether this range matches ``media_type`` (``*/*``, ``type/*`` or exact)."""
        if self.type in ("*/*", "*"):
            return True
        if self.type.endswith("/*"):
            return media_type.split("/")[0] == self.type[:-2]
        return self.type == media_type


def parse_media_range(text: str) -> MediaRange:
    """``application/fhir+json; fhirVersion=4.0; q=0.9`` -> type, parameters, quality."""
    head, *rest = text.split(";")
    params: dict[str, str] = {}
    for part in rest:
        key, _, value = part.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip().strip('"')
    try:
        q = float(params.pop("q", "1"))
    except ValueError:
        q = 1.0
    return MediaRange(head.strip().lower(), params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header that are acceptable at all (``q`` > 0)."""
    if not header or not header.strip():
        return []
    ranges = [parse_media_range(part) for part in header.split(",") if part.strip()]
    return [r for r in ranges if r.q > 0]


def format_param(raw: str | None) -> str | None:
    """``_format`` as sent; an unescaped ``+`` in a query string arrives as a space."""
    if raw is None or not raw.strip():
        return None
    return raw.strip().replace(" ", "+")


def _version_ok(r: MediaRange) -> bool:
    version = r.params.get("fhirversion")
    return version is None or version == FHIR_VERSION or version.startswith(FHIR_VERSION + ".")


def _gives_json(r: MediaRange) -> bool:
    json_type = r.type in JSON_TYPES or r.covers("application/fhir+json")
    return json_type and _version_ok(r)


def _not_acceptable(message: str) -> FhirError:
    return error(406, "not-supported", message)


def _describe(fmt: str) -> str:
    for name, types in _KNOWN.items():
        if fmt in types:
            return f"{name.upper() if name != 'turtle' else 'Turtle'} is not supported"
    return "it is not a format the server knows"


def check_format(raw_format: str | None) -> None:
    """``_format`` must ask for JSON (of FHIR 4.0 when it names a version)."""
    fmt = format_param(raw_format)
    if fmt is None:
        return
    r = parse_media_range(fmt)
    if r.type not in JSON_TYPES:
        raise _not_acceptable(
            f"_format {fmt!r} cannot be produced ({_describe(r.type)}); "
            "this server answers application/fhir+json (_format=json)"
        )
    if not _version_ok(r):
        raise _not_acceptable(
            f"_format {fmt!r} asks for FHIR version {r.params['fhirversion']}; "
            f"this server speaks {FHIR_VERSION} only"
        )


def check_accept(accept: str | None) -> None:
    """The Accept header must let the server answer application/fhir+json for FHIR 4.0."""
    if accept is None or not accept.strip():
        return
    ranges = parse_accept(accept)
    if any(_gives_json(r) for r in ranges):
        return
    versions = sorted({r.params["fhirversion"] for r in ranges if not _version_ok(r)})
    if versions:
        raise _not_acceptable(
            f"Accept {accept!r} asks for FHIR version {', '.join(versions)}; "
            f"this server speaks {FHIR_VERSION} only (see $versions)"
        )
    raise _not_acceptable(
        f"Accept {accept!r} names no format the server can produce; "
        "this server answers application/fhir+json"
    )


def negotiate(accept: str | None, raw_format: str | None) -> None:
    """Raise 406 unless the response may be FHIR JSON; ``_format`` overrides Accept."""
    if format_param(raw_format) is not None:
        check_format(raw_format)
    else:
        check_accept(accept)


def wants_fhir(accept: str | None, raw_format: str | None) -> bool:
    """Whether a Binary read asks for the Binary resource rather than its raw content:
    a ``_format``, or an Accept header explicitly naming a FHIR media type."""
    if format_param(raw_format) is not None:
        return True
    return any(r.type in FHIR_TYPES for r in parse_accept(accept))


def accepts_media(accept: str | None, media_type: str) -> bool:
    """Whether the Accept header admits ``media_type`` (no header admits anything)."""
    if accept is None or not accept.strip():
        return True
    main = media_type.split(";")[0].strip().lower()
    return any(r.covers(main) for r in parse_accept(accept))
