"""The public address of a request that came through a reverse proxy.

Behind a proxy the server cannot tell from its own socket under which URL clients
reach it: the proxy says so in ``Forwarded`` (RFC 7239: ``host``, ``proto``,
``for``) or in the de-facto ``X-Forwarded-Host``, ``-Proto``, ``-Port``,
``-Prefix`` and ``-For`` headers. Anyone can send these headers, so they are read
only when the connection comes from an address listed in
``LIENTHONG_TRUSTED_PROXIES``; from anyone else they are ignored and the
configured base URL is used.

A chain of proxies appends one element each (``Forwarded: for=a, for=b``). Read
from the right, each element was added by the hop before it; the elements are
believed as long as the address that added them is a trusted proxy, and the
leftmost believed element gives the original host, scheme and client address.
``X-Forwarded-Prefix`` (a path in front of ``/fhir``, RFC 7239 has no parameter
for it) is taken from the same hop.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from lienthong.fhir.errors import bad_request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# host[:port], a bracketed IPv6 literal allowed (RFC 3986 authority without userinfo)
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~]+)(?::\d{1,5})?$")
_PREFIX_RE = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%\-]+)*/?$")
# one parameter of a Forwarded element: token=token or token="quoted string"
_PAIR_RE = re.compile(r'\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*')


def parse_trusted(raw: str) -> tuple[Network, ...]:
    """``LIENTHONG_TRUSTED_PROXIES``: comma-separated IP addresses and CIDR networks."""
    out: list[Network] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"LIENTHONG_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR network"
            ) from None
    return tuple(out)


def is_trusted(address: str | None, trusted: tuple[Network, ...]) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False  # "unknown", an obfuscated identifier (RFC 7239 section 6.3), a name
    return any(ip in net for net in trusted)


@dataclass(frozen=True)
class Hop:
    """What one believed proxy said about the request it passed on."""

    host: str | None = None
    proto: str | None = None
    port: str | None = None
    prefix: str | None = None
    client: str | None = None


def parse_forwarded(values: list[str]) -> list[dict[str, str]]:
    """The elements of the ``Forwarded`` header fields in order, parameter names
    lower-cased, quoted strings unquoted; raises 400 on a malformed element."""
    elements: list[dict[str, str]] = []
    for value in values:
        pos = 0
        element: dict[str, str] = {}
        while pos < len(value):
            m = _PAIR_RE.match(value, pos)
            if m is None or m.end() == pos:
                raise bad_request(f"Forwarded: cannot read {value[pos:]!r}", "Forwarded")
            name, raw = m.group(1).lower(), m.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            element[name] = raw
            pos = m.end()
            if pos < len(value) and value[pos] == ";":
                pos += 1
            elif pos < len(value) and value[pos] == ",":
                elements.append(element)
                element = {}
                pos += 1
            elif pos < len(value):
                raise bad_request(f"Forwarded: cannot read {value[pos:]!r}", "Forwarded")
        if element:
            elements.append(element)
    return elements


def _strip_port(address: str) -> str:
    """``for`` values: ``192.0.2.1:4711``, ``[2001:db8::1]:4711`` -> the address."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    """Every field of the header (Starlette's ``getlist``), or the one a plain mapping has."""
    getlist = getattr(headers, "getlist", None)
    raw = getlist(name) if getlist is not None else [headers.get(name)]
    return [v for v in raw if v]


def _list(headers: Mapping[str, str], name: str) -> list[str]:
    raw = _all(headers, name)
    return [part.strip() for value in raw if value for part in value.split(",") if part.strip()]


def believed_hop(
    peer: str | None, headers: Mapping[str, str], trusted: tuple[Network, ...]
) -> Hop | None:
    """The hop whose word is taken about the original request, None when the peer is
    not a trusted proxy or it sent no forwarding header."""
    if not is_trusted(peer, trusted):
        return None
    elements = parse_forwarded(_all(headers, "forwarded"))
    if elements:
        depth = _depth([_strip_port(e.get("for", "")) for e in elements], trusted)
        chosen = elements[-depth]
        prefix = _at_depth(_list(headers, "x-forwarded-prefix"), depth)
        client = _strip_port(chosen.get("for", "")) or None
        return _checked(
            Hop(chosen.get("host"), chosen.get("proto"), None, prefix, client), "Forwarded"
        )
    fors = [_strip_port(v) for v in _list(headers, "x-forwarded-for")]
    names = ("x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix")
    lists = [_list(headers, n) for n in names]
    if not fors and not any(lists):
        return None
    depth = _depth(fors, trusted) if fors else 1
    host, proto, port, prefix = (_at_depth(values, depth) for values in lists)
    client = fors[-depth] if fors else None
    return _checked(Hop(host, proto, port, prefix, client), "X-Forwarded-*")


def _depth(addresses: list[str], trusted: tuple[Network, ...]) -> int:
    """How many elements from the right are believed: the rightmost always (its
    sender is the trusted peer), each further one while the hop that sent it -
    the address the element to its right names - is a trusted proxy too."""
    depth = 1
    while depth < len(addresses) and is_trusted(addresses[-depth], trusted):
        depth += 1
    return depth


def _at_depth(values: list[str], depth: int) -> str | None:
    if not values:
        return None
    return values[-depth] if len(values) >= depth else values[0]


def _checked(hop: Hop, header: str) -> Hop:
    if hop.host is not None and not _HOST_RE.match(hop.host):
        raise bad_request(f"{header}: host {hop.host!r} is not a host name with a port", header)
    if hop.proto is not None and hop.proto.lower() not in ("http", "https"):
        raise bad_request(f"{header}: proto {hop.proto!r} is not http or https", header)
    if hop.port is not None and not (hop.port.isdigit() and 0 < int(hop.port) < 65536):
        raise bad_request(
            f"X-Forwarded-Port: {hop.port!r} is not a port number", "X-Forwarded-Port"
        )
    if hop.prefix is not None and not _PREFIX_RE.match(hop.prefix):
        raise bad_request(
            f"X-Forwarded-Prefix: {hop.prefix!r} is not a URL path", "X-Forwarded-Prefix"
        )
    return hop


def public_base(
    default: str,
    peer: str | None,
    headers: Mapping[str, str],
    trusted: tuple[Network, ...],
    scheme: str = "http",
) -> str:
    """The FHIR base URL (``.../fhir``) as the client addressed it: from the believed
    hop's host, scheme, port and prefix, each missing one from the request itself
    (``Host``, the connection's scheme); ``default`` when there is no believed hop."""
    hop = believed_hop(peer, headers, trusted)
    if hop is None:
        return default.rstrip("/")
    proto = (hop.proto or scheme).lower()
    host = hop.host or headers.get("host") or ""
    if not host or not _HOST_RE.match(host):
        return default.rstrip("/")
    if hop.port is not None:
        host = _without_port(host)
        if (proto, hop.port) not in (("http", "80"), ("https", "443")):
            host = f"{host}:{hop.port}"
    prefix = (hop.prefix or "").rstrip("/")
    return f"{proto}://{host}{prefix}/fhir"


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: tuple[Network, ...]
) -> str | None:
    """The client's address for the audit trail: the one a trusted proxy names, else
    the connection's peer. A malformed header leaves the peer."""
    try:
        hop = believed_hop(peer, headers, trusted)
    except Exception:
        return peer
    if hop is None or not hop.client or hop.client.lower() == "unknown":
        return peer
    return hop.client


class Addressing:
    """What the HTTP layer asks of a request: its public base URL and client address."""

    def __init__(self, default_base: str, trusted_proxies: str) -> None:
        self.default_base = default_base.rstrip("/")
        self.trusted = parse_trusted(trusted_proxies)

    def base_url(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return public_base(
            self.default_base, peer, request.headers, self.trusted, request.url.scheme
        )

    def client(self, request: Request) -> str | None:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers, self.trusted)
