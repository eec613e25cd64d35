"""Registered client applications: systems that get tokens with their own key pair.

A client is a backend service (a hospital information system, a reporting job)
that authenticates to the token endpoint with a JWT signed by its private key
(SMART App Launch v2 Backend Services,
https://hl7.org/fhir/smart-app-launch/backend-services.html; RFC 7523 client
assertions). Registration records the client's id, its role and organization
(which mean for the access policy what they mean for a user), the scopes it may
be granted at most, and its public keys: a JWKS given at registration, or the
URL of one (``jwks_uri``) that is fetched only when the client authenticates,
with a timeout and a size limit, and cached.

Clients live in table ``access_client`` of side database ``access``, beside the
users of :mod:`lienthong.access.auth`; a name is either a user's or a client's,
never both, so the audit trail's "who" is never ambiguous.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from lienthong.access.auth import (
    _USER_NAME,
    DEFAULT_SCOPES,
    ROLES,
    USER_TABLE,
    _check_role_fields,
    _check_scopes,
    _logical_id,
)
from lienthong.storage.side_tables import SideDB

#: Roles a client may have: every role except citizen (a person, not a system).
CLIENT_ROLES = tuple(r for r in ROLES if r != "citizen")

#: Signature algorithms accepted on client assertions: SMART requires RS384 and
#: ES384; RS256 and ES256 are accepted as well.
ASSERTION_ALGORITHMS = ("RS384", "ES384", "RS256", "ES256")
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384"}
_KEY_TYPES = {"RS256": "RSA", "RS384": "RSA", "ES256": "EC", "ES384": "EC"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: a client naming a kid its JWKS lacks makes the uri be fetched again, at most this often
REFETCH_COOLDOWN_SECONDS = 10.0

CLIENT_TABLE = (
    "CREATE TABLE IF NOT EXISTS access_client ("
    " client_id TEXT PRIMARY KEY,"
    " role TEXT NOT NULL,"
    " organization TEXT,"
    " scope TEXT NOT NULL,"
    " jwks TEXT,"
    " jwks_uri TEXT,"
    " created TEXT NOT NULL)"
)


class ClientKeyError(Exception):
    """The client's keys cannot verify its assertion; the message says why."""


@dataclass(frozen=True)
class Client:
    """One registered client."""

    client_id: str
    role: str
    organization: str | None
    scope: str  # space-separated system/ scopes it may be granted at most
    jwks: dict[str, Any] | None  # public keys given at registration
    jwks_uri: str | None  # or where to fetch them
    created: str | None = None


def default_client_scope(role: str) -> str:
    """The role's default scopes (:data:`DEFAULT_SCOPES`) in the ``system/`` context."""
    return " ".join("system/" + s.split("/", 1)[1] for s in DEFAULT_SCOPES[role].split())


def check_jwks(data: Any, where: str) -> dict[str, Any]:
    """A JWKS of public signing keys, each with a kid; ValueError saying what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ValueError(f"{where}: not a JWKS (a JSON object with a non-empty 'keys' list)")
    kids: set[str] = set()
    for n, key in enumerate(data["keys"]):
        label = f"{where}: key {n + 1}"
        if not isinstance(key, dict):
            raise ValueError(f"{label} is not a JSON object")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError(f"{label} has no kid (assertions name their key by kid)")
        if kid in kids:
            raise ValueError(f"{where}: kid {kid!r} appears twice")
        kids.add(kid)
        if key.get("kty") not in ("RSA", "EC"):
            raise ValueError(f"{label} ({kid}): kty must be RSA or EC, got {key.get('kty')!r}")
        if "d" in key:
            raise ValueError(f"{label} ({kid}) is a private key: register the public key only")
        if key.get("use", "sig") != "sig":
            raise ValueError(f"{label} ({kid}): use must be sig, got {key.get('use')!r}")
        alg = key.get("alg")
        if alg is not None and alg not in ASSERTION_ALGORITHMS:
            raise ValueError(
                f"{label} ({kid}): alg {alg!r} is not one of {', '.join(ASSERTION_ALGORITHMS)}"
            )
        try:
            jwt.PyJWK(key, alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{label} ({kid}) is not a usable key: {error}") from None
    return {"keys": data["keys"]}


def check_jwks_uri(uri: str) -> str:
    """An https URL (http only to loopback, for local systems); ValueError otherwise."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return uri
    raise ValueError(f"jwks_uri must be an https URL (http only on loopback), got {uri!r}")


def verification_key(jwks: dict[str, Any], kid: str, alg: str) -> jwt.PyJWK:
    """The key named ``kid`` in ``jwks``, for ``alg``; ClientKeyError when there is none."""
    for key in jwks.get("keys", []):
        if isinstance(key, dict) and key.get("kid") == kid:
            break
    else:
        raise ClientKeyError(f"no key with kid {kid!r} in the client's JWKS")
    if key.get("kty") != _KEY_TYPES[alg]:
        raise ClientKeyError(f"key {kid!r} is {key.get('kty')}, which cannot verify {alg}")
    if key.get("alg") not in (None, alg):
        raise ClientKeyError(f"key {kid!r} is registered for {key['alg']}, not {alg}")
    if alg in _EC_CURVES and key.get("crv") != _EC_CURVES[alg]:
        raise ClientKeyError(
            f"key {kid!r} is on curve {key.get('crv')}, {alg} needs {_EC_CURVES[alg]}"
        )
    try:
        return jwt.PyJWK(key, alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        raise ClientKeyError(f"key {kid!r} is not usable") from None


class JwksFetcher:
    """Fetches clients' ``jwks_uri`` with a timeout and a size limit, and caches them.

    A cached set is reused for ``cache_seconds``; an assertion naming a kid
    the cached set lacks fetches it again (a client rotating its key), at most
    once per ``cooldown`` seconds (:data:`REFETCH_COOLDOWN_SECONDS`) per URL.
    """

    def __init__(self, timeout: float, max_bytes: int, cache_seconds: float) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.cache_seconds = cache_seconds
        self.cooldown = REFETCH_COOLDOWN_SECONDS
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _fetch(self, uri: str) -> dict[str, Any]:
        request = urllib.request.Request(uri, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(self.max_bytes + 1)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ClientKeyError(f"cannot fetch the client's JWKS at {uri}: {reason}") from None
        if len(raw) > self.max_bytes:
            raise ClientKeyError(
                f"the client's JWKS at {uri} is over {self.max_bytes} bytes"
                " (LIENTHONG_CLIENT_JWKS_MAX_BYTES)"
            )
        try:
            return check_jwks(json.loads(raw), f"the JWKS at {uri}")
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            raise ClientKeyError(f"unusable JWKS at {uri}: {error}") from None

    def keys(self, uri: str, kid: str) -> dict[str, Any]:
        """The JWKS at ``uri``, refetched when stale or when it lacks ``kid``."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(uri)
        if cached is not None:
            fetched, jwks = cached
            fresh = now - fetched < self.cache_seconds
            has_kid = any(k.get("kid") == kid for k in jwks["keys"])
            if fresh and (has_kid or now - fetched < self.cooldown):
                return jwks
        jwks = self._fetch(uri)
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[uri] = (time.monotonic(), jwks)
        return jwks


class ClientRegistry:
    """Registered clients, in table ``access_client`` of side database ``access``.

    Removing a client revokes every token it was given; :meth:`add` refuses an
    id that is already a client's or a user's.
    """

    def __init__(self, database_url: str) -> None:
        self.db = SideDB(database_url, "access")
        self.db.execute(CLIENT_TABLE)
        self.db.execute(USER_TABLE)  # a name is a user's or a client's, not both

    def add(
        self,
        client_id: str,
        role: str,
        organization: str | None = None,
        *,
        jwks: dict[str, Any] | None = None,
        jwks_uri: str | None = None,
        scope: str | None = None,
    ) -> Client:
        """Register a client; ValueError with a one-line reason if the entry is not valid."""
        if not _USER_NAME.fullmatch(client_id):
            raise ValueError(
                f"bad client id {client_id!r}: use 1 to 128 letters, digits or . _ @ + -"
            )
        if role not in CLIENT_ROLES:
            raise ValueError(
                f"a client's role must be one of {', '.join(CLIENT_ROLES)}, not {role!r}"
            )
        organization = _logical_id(organization, "Organization")
        _check_role_fields(role, organization, None)
        if (jwks is None) == (jwks_uri is None):
            raise ValueError("give the client's public keys: a JWKS or a jwks_uri (one of them)")
        if jwks is not None:
            jwks = check_jwks(jwks, "jwks")
        if jwks_uri is not None:
            jwks_uri = check_jwks_uri(jwks_uri)
        scope = _client_scope(role, scope)
        if self.db.query("SELECT 1 FROM access_user WHERE name = ?", (client_id,)):
            raise ValueError(f"{client_id!r} is already a user's name: give the client another id")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        inserted = self.db.execute(
            "INSERT INTO access_client"
            " (client_id, role, organization, scope, jwks, jwks_uri, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (client_id) DO NOTHING",
            (
                client_id,
                role,
                organization,
                scope,
                None if jwks is None else json.dumps(jwks),
                jwks_uri,
                created,
            ),
        )
        if not inserted:
            raise ValueError(f"client {client_id!r} already exists (remove it first to change it)")
        return Client(client_id, role, organization, scope, jwks, jwks_uri, created)

    def _row(self, row: tuple[Any, ...]) -> Client:
        client_id, role, organization, scope, jwks, jwks_uri, created = row
        return Client(
            client_id,
            role,
            organization,
            scope,
            json.loads(jwks) if jwks else None,
            jwks_uri,
            created,
        )

    def get(self, client_id: str) -> Client | None:
        rows = self.db.query(
            "SELECT client_id, role, organization, scope, jwks, jwks_uri, created"
            " FROM access_client WHERE client_id = ?",
            (client_id,),
        )
        return self._row(rows[0]) if rows else None

    def list(self) -> list[Client]:
        rows = self.db.query(
            "SELECT client_id, role, organization, scope, jwks, jwks_uri, created"
            " FROM access_client ORDER BY client_id"
        )
        return [self._row(row) for row in rows]

    def remove(self, client_id: str) -> bool:
        """Remove a client (its tokens stop working at once); False if there was none."""
        return self.db.execute("DELETE FROM access_client WHERE client_id = ?", (client_id,)) > 0

    def close(self) -> None:
        self.db.close()


def _client_scope(role: str, scope: str | None) -> str:
    """The scopes a client may be granted: ``system/`` ones, the role's default if none given."""
    if scope is None:
        return default_client_scope(role)
    scope = _check_scopes(scope)
    from lienthong.access.smart import parse_system_scope

    for token in scope.split():
        parse_system_scope(token)  # ValueError naming the bad scope
    return scope
