"""Authentication: OAuth 2 bearer tokens that are signed JWTs.

Every request carries ``Authorization: Bearer <JWT>`` (RFC 6750,
https://www.rfc-editor.org/rfc/rfc6750). A token is accepted from one of two
issuers:

* the **embedded issuer** (the default, so a fresh install works with no
  identity provider): users live in a small directory beside the store
  (:class:`UserDirectory`), tokens are minted by :class:`TokenIssuer` with an
  RS256 key pair kept in the same side database, and published as a JWKS.
  Its ``iss`` is an http(s) URL (``LIENTHONG_ISSUER_URL``, by default the
  server's root URL) with a discovery document; registered client systems get
  its tokens from the SMART Backend Services token endpoint
  (:mod:`lienthong.access.smart`);
* an optional **external OpenID Connect provider** (``LIENTHONG_OIDC_ISSUER``),
  whose keys come from its JWKS, found through its discovery document
  (https://openid.net/specs/openid-connect-discovery-1_0.html) unless
  ``LIENTHONG_OIDC_JWKS_URL`` names it.

Token checks follow RFC 7519 (https://www.rfc-editor.org/rfc/rfc7519) with
PyJWT doing the cryptography: ``exp`` is required, ``iss`` and ``aud`` must
match, the signature must verify with the key named by ``kid``, and only the
RS256/ES256 families are allowed, so unsigned (``alg: none``) tokens and
HMAC/public-key confusion are refused outright. 30 seconds of clock skew are
tolerated. Error messages say exactly what is wrong and never repeat the token.

Authorisation is not decided here. The result is a :class:`Principal`: who,
in which role, for which organization / practitioner / patient, with which
SMART App Launch v2 scopes
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html), for the
policy decision to use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from lienthong.settings import LEGACY_ISSUER, Settings
from lienthong.storage.side_tables import SideDB

if TYPE_CHECKING:
    from lienthong.access.clients import Client

ROLES = ("clinician", "commune_staff", "analyst", "data_admin", "citizen", "auditor", "system")

#: Roles whose every access is on behalf of an organization, so one is required.
ROLES_NEEDING_ORGANIZATION = ("clinician", "commune_staff")

#: Scopes a token gets when none are asked for, in SMART v2 syntax
#: (``context/resource.cruds``: create, read, update, delete, search).
#: Scopes only bound what a token may do; the policy decision narrows further
#: (treatment relationship, consent, organization).
DEFAULT_SCOPES: dict[str, str] = {
    # care: read and search everything, record and correct, never delete
    "clinician": "user/*.crus",
    # commune health stations register people and record care the same way
    "commune_staff": "user/*.crus",
    # statistics come from searches; reading single records is not their job
    "analyst": "user/*.s",
    # data stewards fix and remove records
    "data_admin": "user/*.cruds",
    # a citizen reads their own record and manages their own consents
    "citizen": "patient/*.rs patient/Consent.cruds",
    # auditors read the audit trail only
    "auditor": "user/AuditEvent.rs",
    # system-to-system exchange (e.g. a hospital information system)
    "system": "system/*.cruds",
}

#: Signature algorithms accepted at all: the RS256 and ES256 families.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
#: The embedded issuer only ever signs with RS256.
LOCAL_ALGORITHM = "RS256"
#: Tolerated clock difference between issuer and server, seconds.
LEEWAY_SECONDS = 30
#: RSA modulus size of the embedded issuer's keys.
RSA_KEY_BITS = 2048

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_USER_NAME = re.compile(r"[A-Za-z0-9._@+\-]{1,128}")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as the policy decision sees it."""

    name: str  # user name: the token's sub
    role: str  # one of ROLES
    organization: str | None  # Organization logical id, e.g. "org-1"
    practitioner: str | None  # Practitioner logical id
    patient: str | None  # Patient logical id, for citizens
    scopes: frozenset[str]  # SMART v2 scopes from the token's "scope" claim
    token_id: str | None = None  # jti, for the audit trail
    issuer: str | None = None  # iss: the embedded issuer or the external provider


class AuthError(Exception):
    """A request could not be authenticated.

    ``str(error)`` says precisely what is wrong ("token expired", "bad
    signature", ...) and never contains the token. ``status`` is the HTTP
    status to answer with and :meth:`www_authenticate` the ``WWW-Authenticate``
    header value of RFC 6750 section 3: no error code when no bearer token was
    sent at all, ``invalid_request`` (400) for a malformed ``Authorization``
    header, ``invalid_token`` (401) for a token that fails a check.
    """

    status = 401

    def __init__(
        self, message: str, *, error: str | None = "invalid_token", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        if status is not None:
            self.status = status

    def www_authenticate(self, realm: str = "lienthong") -> str:
        """The ``WWW-Authenticate`` challenge for this error (RFC 6750 section 3)."""
        params = [f'realm="{_quotable(realm)}"']
        if self.error:
            params.append(f'error="{self.error}"')
            params.append(f'error_description="{_quotable(self.message)}"')
        return "Bearer " + ", ".join(params)


class AuthUnavailable(AuthError):
    """The token could not be checked because the external provider is unreachable.

    Not the caller's fault, so 503 rather than 401.
    """

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, error=None, status=503)


def _quotable(text: str) -> str:
    """Characters RFC 6750 allows in a quoted challenge parameter (no ``"`` or ``\\``)."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "'" for c in text)


# ---------------------------------------------------------------------------
# users of the embedded issuer


@dataclass(frozen=True)
class User:
    """One user of the embedded issuer."""

    name: str
    role: str
    organization: str | None = None
    practitioner: str | None = None
    patient: str | None = None
    created: str | None = None  # ISO 8601 UTC


def _logical_id(value: str | None, resource_type: str) -> str | None:
    """A FHIR logical id from ``"org-1"`` or ``"Organization/org-1"``; ValueError otherwise."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith(f"{resource_type}/"):
        text = text[len(resource_type) + 1 :]
    if not _FHIR_ID.fullmatch(text):
        raise ValueError(
            f"{resource_type.lower()} must be a {resource_type} logical id such as "
            f"'{resource_type[:3].lower()}-1' (letters, digits, '-', '.', at most 64), "
            f"got {value!r}"
        )
    return text


def _check_role_fields(role: str, organization: str | None, patient: str | None) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if role == "citizen" and patient is None:
        raise ValueError("a citizen needs a patient (the Patient id of their own record)")
    if role in ROLES_NEEDING_ORGANIZATION and organization is None:
        raise ValueError(f"a {role} needs an organization (the Organization id they work for)")


USER_TABLE = (
    "CREATE TABLE IF NOT EXISTS access_user ("
    " name TEXT PRIMARY KEY,"
    " role TEXT NOT NULL,"
    " organization TEXT,"
    " practitioner TEXT,"
    " patient TEXT,"
    " created TEXT NOT NULL)"
)


class UserDirectory:
    """Users of the embedded issuer, in table ``access_user`` of side database ``access``.

    Only tokens of users listed here are accepted from the embedded issuer:
    removing a user revokes every token issued to them. :meth:`add` refuses a
    name that already exists (remove it first): silently replacing a user's
    role or organization would be too easy a mistake.
    """

    def __init__(self, database_url: str) -> None:
        from lienthong.access.clients import CLIENT_TABLE

        self.db = SideDB(database_url, "access")
        self.db.execute(USER_TABLE)
        self.db.execute(CLIENT_TABLE)  # a name is a user's or a client's, not both

    def add(
        self,
        name: str,
        role: str,
        organization: str | None = None,
        practitioner: str | None = None,
        patient: str | None = None,
    ) -> User:
        """Add a user; ValueError with a one-line reason if the entry is not valid.

        Ids may be given as ``org-1`` or ``Organization/org-1``; the logical id is kept.
        """
        if not _USER_NAME.fullmatch(name):
            raise ValueError(f"bad user name {name!r}: use 1 to 128 letters, digits or . _ @ + -")
        organization = _logical_id(organization, "Organization")
        practitioner = _logical_id(practitioner, "Practitioner")
        patient = _logical_id(patient, "Patient")
        _check_role_fields(role, organization, patient)
        if self.db.query("SELECT 1 FROM access_client WHERE client_id = ?", (name,)):
            raise ValueError(f"{name!r} is already a client's id: give the user another name")
        created = datetime.now(UTC).isoformat(timespec="seconds")
        inserted = self.db.execute(
            "INSERT INTO access_user (name, role, organization, practitioner, patient, created)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (name, role, organization, practitioner, patient, created),
        )
        if not inserted:
            raise ValueError(f"user {name!r} already exists (remove it first to change it)")
        return User(name, role, organization, practitioner, patient, created)

    def get(self, name: str) -> User | None:
        rows = self.db.query(
            "SELECT name, role, organization, practitioner, patient, created"
            " FROM access_user WHERE name = ?",
            (name,),
        )
        return User(*rows[0]) if rows else None

    def list(self) -> list[User]:
        rows = self.db.query(
            "SELECT name, role, organization, practitioner, patient, created"
            " FROM access_user ORDER BY name"
        )
        return [User(*row) for row in rows]

    def remove(self, name: str) -> bool:
        """Remove a user (their tokens stop working at once); False if there was none."""
        return self.db.execute("DELETE FROM access_user WHERE name = ?", (name,)) > 0

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------
# the embedded issuer


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url), used as the ``kid``."""
    members = {k: public_jwk[k] for k in ("e", "kty", "n")}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _public_jwk(private_pem: str) -> dict[str, Any]:
    private_key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("signing_key holds a key that is not RSA")
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": LOCAL_ALGORITHM,
        "kid": _thumbprint(jwk),
        "n": jwk["n"],
        "e": jwk["e"],
    }


def _new_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _check_scopes(scopes: str) -> str:
    tokens = scopes.split()
    if not tokens:
        raise ValueError("scope is empty: give space-separated SMART scopes, e.g. 'user/*.rs'")
    for token in tokens:
        if not _SCOPE_TOKEN.fullmatch(token):
            raise ValueError(f"bad scope {token!r}: no quotes, backslashes or control characters")
    return " ".join(tokens)


class TokenIssuer:
    """Signs the embedded issuer's tokens (RS256) and publishes its keys as a JWKS.

    The RSA key pair is created on first use and kept in table ``signing_key``
    of side database ``access`` (kid, private PEM, created, retired), so every
    process on the same store (server, ``lienthong token``) signs with the same
    key. :meth:`rotate` retires the signing key and creates a new one; retired
    keys stay in the JWKS and keep verifying, so tokens already issued remain
    valid until they expire. The ``kid`` is the key's RFC 7638 thumbprint.

    The private keys sit unencrypted in that database: protect it (file
    permissions / database roles) like the credentials it is.
    """

    def __init__(self, database_url: str, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.db = SideDB(database_url, "access")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS signing_key ("
            " kid TEXT PRIMARY KEY,"
            " private_pem TEXT NOT NULL,"
            " created TEXT NOT NULL,"
            " retired INTEGER NOT NULL DEFAULT 0)"
        )
        self._public: dict[str, jwt.PyJWK] = {}

    def _lock_keys(self) -> None:
        """Serialise key creation across processes (SQLite's BEGIN IMMEDIATE already does)."""
        if self.db.kind == "postgresql":
            self.db.execute("LOCK TABLE signing_key IN SHARE ROW EXCLUSIVE MODE")

    def _active(self) -> list[tuple[Any, ...]]:
        return self.db.query(
            "SELECT kid, private_pem FROM signing_key WHERE retired = 0"
            " ORDER BY created DESC, kid DESC"
        )

    def _insert(self, pem: str) -> str:
        kid = str(_public_jwk(pem)["kid"])
        self.db.execute(
            "INSERT INTO signing_key (kid, private_pem, created, retired) VALUES (?, ?, ?, 0)",
            (kid, pem, datetime.now(UTC).isoformat(timespec="microseconds")),
        )
        return kid

    def _signing_key(self) -> tuple[str, str]:
        """(kid, private PEM) of the current signing key, creating the first one if needed."""
        rows = self._active()
        if not rows:
            pem = _new_private_pem()  # slow: outside the lock
            with self.db.transaction():
                self._lock_keys()
                rows = self._active()
                if not rows:
                    self._insert(pem)
                    rows = self._active()
        kid, pem = rows[0]
        return str(kid), str(pem)

    def current_kid(self) -> str:
        return self._signing_key()[0]

    def rotate(self) -> str:
        """Retire the signing key and start signing with a new one; returns the new kid."""
        pem = _new_private_pem()
        with self.db.transaction():
            self._lock_keys()
            self.db.execute("UPDATE signing_key SET retired = 1 WHERE retired = 0")
            return self._insert(pem)

    def jwks(self) -> dict[str, Any]:
        """The public keys, newest first, as served at ``/.well-known/jwks.json`` (RFC 7517)."""
        self._signing_key()  # so a fresh install publishes its key before the first token
        rows = self.db.query(
            "SELECT private_pem FROM signing_key ORDER BY retired, created DESC, kid DESC"
        )
        return {"keys": [_public_jwk(str(pem)) for (pem,) in rows]}

    def public_key(self, kid: str) -> jwt.PyJWK | None:
        """The verification key for ``kid`` (current or retired), None if unknown.

        Looked up in the database on a miss, so keys rotated by another process are found.
        """
        key = self._public.get(kid)
        if key is None:
            rows = self.db.query("SELECT private_pem FROM signing_key WHERE kid = ?", (kid,))
            if not rows:
                return None
            key = jwt.PyJWK(_public_jwk(str(rows[0][0])), LOCAL_ALGORITHM)
            self._public[kid] = key
        return key

    def issue(
        self, user: User, scopes: str | None, ttl_seconds: int, *, now: float | None = None
    ) -> str:
        """A signed access token for ``user``.

        Claims: ``iss``, ``aud``, ``sub`` (user name), ``iat``, ``exp``, ``jti``,
        ``scope`` (space separated, :data:`DEFAULT_SCOPES` of the role when
        ``scopes`` is None) and lienthong's ``role``, ``organization``,
        ``practitioner``, ``patient`` (the last three only when set). ``now``
        (epoch seconds) backdates or postdates the token; it exists for tests.
        """
        if ttl_seconds <= 0:
            raise ValueError(
                f"token lifetime must be a positive number of seconds, got {ttl_seconds}"
            )
        if user.role not in ROLES:
            raise ValueError(f"user {user.name!r} has unknown role {user.role!r}")
        scope = _check_scopes(DEFAULT_SCOPES[user.role] if scopes is None else scopes)
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user.name,
            "iat": issued,
            "exp": issued + int(ttl_seconds),
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "role": user.role,
        }
        for claim in ("organization", "practitioner", "patient"):
            value = getattr(user, claim)
            if value is not None:
                claims[claim] = value
        return self._sign(claims)

    def issue_client(self, client: Client, scope: str, ttl_seconds: int) -> str:
        """An access token for a registered client (the token endpoint's answer).

        Like a user's, with ``sub`` and ``client_id`` (RFC 9068) the client id, and
        the client's ``role`` and ``organization``.
        """
        if ttl_seconds <= 0:
            raise ValueError(
                f"token lifetime must be a positive number of seconds, got {ttl_seconds}"
            )
        issued = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client.client_id,
            "client_id": client.client_id,
            "iat": issued,
            "exp": issued + int(ttl_seconds),
            "jti": uuid.uuid4().hex,
            "scope": _check_scopes(scope),
            "role": client.role,
        }
        if client.organization is not None:
            claims["organization"] = client.organization
        return self._sign(claims)

    def _sign(self, claims: dict[str, Any]) -> str:
        kid, pem = self._signing_key()
        return jwt.encode(claims, pem, algorithm=LOCAL_ALGORITHM, headers={"kid": kid})

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------
# checking tokens


def _bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 section 2.1)."""
    if authorization is None or not authorization.strip():
        raise AuthError("missing bearer token", error=None)
    parts = authorization.split()
    if parts[0].lower() != "bearer":
        raise AuthError(
            "missing bearer token: the Authorization header does not use the Bearer scheme",
            error=None,
        )
    if len(parts) != 2:
        raise AuthError(
            "malformed Authorization header: expected 'Bearer <token>'",
            error="invalid_request",
            status=400,
        )
    return parts[1]


def _fhir_user(value: Any) -> tuple[str, str] | None:
    """(type, id) of a SMART ``fhirUser`` claim: ``Practitioner/123`` or a URL ending so."""
    if not isinstance(value, str):
        return None
    parts = urllib.parse.urlsplit(value).path.rstrip("/").split("/")
    if len(parts) < 2 or not _FHIR_ID.fullmatch(parts[-1]):
        return None
    return parts[-2], parts[-1]


def _str_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthError(f"token claim {name!r} is not a string")
    return value


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    value = claims.get("scope")
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return frozenset(value)
    raise AuthError("token claim 'scope' is neither a space-separated string nor a list")


def _read_json(url: str, what: str) -> dict[str, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise AuthUnavailable(f"{what} URL {url!r} is not http(s)")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = json.load(response)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
        raise AuthUnavailable(f"cannot read {what} at {url}: {error}") from None
    if not isinstance(data, dict):
        raise AuthUnavailable(f"{what} at {url} is not a JSON object")
    return data


class _ExternalIssuer:
    """Keys of the external OpenID Connect provider, fetched lazily and cached.

    Lazily, so the server starts even while the provider is down. PyJWKClient
    caches the key set for ``cache_seconds`` and refetches it when a token
    names an unknown ``kid`` (at most once per ``cooldown`` seconds, so tokens
    with made-up kids cannot turn the server into a flood of requests to the
    provider): a rotated key is picked up without a restart. A key the
    provider withdraws stops being trusted when the cached set expires.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str | None,
        cooldown: float,
        cache_seconds: float,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.cooldown = cooldown
        self.cache_seconds = cache_seconds
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = _read_json(url, "the external issuer's discovery document")
        if document.get("issuer") != self.issuer:
            raise AuthUnavailable(
                f"the discovery document at {url} names issuer {document.get('issuer')!r},"
                f" not the configured {self.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise AuthUnavailable(f"the discovery document at {url} has no jwks_uri")
        return jwks_uri

    def client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self.jwks_url or self._discover()
                try:
                    self._client = jwt.PyJWKClient(
                        url,
                        cache_jwk_set=True,
                        lifespan=self.cache_seconds,
                        cooldown_duration=self.cooldown,
                        timeout=10,
                    )
                except jwt.PyJWKClientError as error:
                    raise AuthUnavailable(f"bad external JWKS URL: {error}") from None
            return self._client

    def key(self, kid: str) -> jwt.PyJWK:
        client = self.client()
        try:
            return client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise AuthUnavailable(
                f"cannot fetch the external issuer's JWKS at {client.uri}"
            ) from None
        except jwt.PyJWKClientError as error:
            if "Unable to find a signing key" in str(error):
                raise AuthError("unknown signing key (kid not in the issuer's JWKS)") from None
            raise AuthUnavailable(f"unusable JWKS at {client.uri}") from None
        except (jwt.PyJWKSetError, jwt.PyJWKError):
            raise AuthUnavailable(f"unusable JWKS at {client.uri}") from None


def _decode(
    token: str, key: jwt.PyJWK, algorithms: list[str], issuer: str, audience: str
) -> dict[str, Any]:
    """Verify signature, then exp/iat/nbf/iss/aud; map PyJWT's errors to precise messages."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidAudienceError:
        raise AuthError("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise AuthError("wrong issuer") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError(f"token lacks required claim {error.claim!r}") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("token not yet valid (iat or nbf in the future)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad signature") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("token algorithm does not match its signing key") from None
    except jwt.DecodeError:
        raise AuthError("malformed token") from None
    except jwt.InvalidTokenError as error:
        # InvalidIssuedAtError, InvalidSubjectError, ...: PyJWT's messages name the claim only
        raise AuthError(f"invalid token: {error}") from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise AuthError("token claim 'sub' is not a non-empty string")
    return claims


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or raises :class:`AuthError`.

    The token's issuer picks the keys: ``settings.issuer()`` (or the former
    default :data:`~lienthong.settings.LEGACY_ISSUER`, whose tokens are signed by
    the same keys and stay valid) means the embedded issuer (keys from the side
    database, and the user must still be in the :class:`UserDirectory` with the
    same role and ids as in the token, so removing or changing a user revokes
    their tokens at once; a token the token endpoint gave a client, which has a
    ``client_id`` claim, likewise needs the client still registered, see
    :mod:`lienthong.access.clients`);
    ``settings.oidc_issuer`` means the external provider (keys from its JWKS,
    ``aud`` must be ``settings.oidc_audience``, or ``settings.token_audience``
    when that is unset). Any other issuer is refused.

    External tokens are mapped with these claims:

    * ``sub`` -> name; ``scope`` (space separated string or list) -> scopes; ``jti``;
    * ``role`` -> role (one of :data:`ROLES`); when absent, a ``fhirUser`` of
      ``Patient/...`` makes the caller a citizen;
    * ``organization`` -> organization (``org-1`` or ``Organization/org-1``);
    * ``practitioner`` and ``patient`` -> ids, or else SMART's ``fhirUser``
      (``Practitioner/123``, ``Patient/456``, or an absolute URL ending so).

    ``jwks_refresh_cooldown`` and ``jwks_cache_seconds`` tune the external
    key cache (see :class:`_ExternalIssuer`).
    """

    def __init__(
        self,
        settings: Settings,
        database_url: str | None = None,
        *,
        jwks_refresh_cooldown: float = 10.0,
        jwks_cache_seconds: float = 300.0,
    ) -> None:
        from lienthong.access.clients import ClientRegistry

        url = database_url or settings.database_url
        self.users = UserDirectory(url)
        self.clients = ClientRegistry(url)
        # verified local tokens -> (valid until, claims): an RS256 check costs more than
        # the rest of a read, and a token is presented many times in its life
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}
        self.issuer = TokenIssuer(url, settings.issuer(), settings.token_audience)
        self.external: _ExternalIssuer | None = None
        if settings.oidc_issuer:
            if settings.oidc_issuer in (settings.issuer(), LEGACY_ISSUER):
                raise ValueError(
                    "LIENTHONG_OIDC_ISSUER must differ from lienthong's own issuer"
                    f" (LIENTHONG_ISSUER_URL, {settings.issuer()!r}) and from {LEGACY_ISSUER!r}"
                )
            self.external = _ExternalIssuer(
                settings.oidc_issuer,
                settings.oidc_audience or settings.token_audience,
                settings.oidc_jwks_url,
                jwks_refresh_cooldown,
                jwks_cache_seconds,
            )

    def authenticate(self, authorization: str | None) -> Principal:
        """Check the ``Authorization`` header value; the caller, or AuthError saying why not."""
        token = _bearer(authorization)
        cached = self._verified.get(token)
        if cached is not None and cached[0] > time.time():
            # signature, issuer and audience were checked; the user check runs every time
            return self._local_principal(cached[1])
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise AuthError("malformed token: not a signed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg or alg.lower() == "none":
            raise AuthError("unsigned token (alg none) refused")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(
                f"token algorithm {alg[:16]!r} not allowed: {', '.join(ALLOWED_ALGORITHMS)} only"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no key id (kid)")
        iss = unverified.get("iss")
        if iss is None:
            raise AuthError("token lacks required claim 'iss'")
        if iss in (self.issuer.issuer, LEGACY_ISSUER):
            return self._local(token, alg, kid, iss)
        if self.external is not None and iss == self.external.issuer:
            return self._external(token, kid)
        raise AuthError("wrong issuer")

    def _local(self, token: str, alg: str, kid: str, iss: str) -> Principal:
        if alg != LOCAL_ALGORITHM:
            raise AuthError(f"token algorithm not allowed: this issuer signs {LOCAL_ALGORITHM}")
        key = self.issuer.public_key(kid)
        if key is None:
            raise AuthError("unknown signing key (kid not in the issuer's JWKS)")
        claims = _decode(token, key, [LOCAL_ALGORITHM], iss, self.issuer.audience)
        principal = self._local_principal(claims)
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = (float(claims["exp"]) + LEEWAY_SECONDS, claims)
        return principal

    def _local_principal(self, claims: dict[str, Any]) -> Principal:
        if "client_id" in claims:
            return self._client_principal(claims)
        user = self.users.get(claims["sub"])
        if user is None:
            raise AuthError("unknown user")
        as_issued = tuple(
            _str_claim(claims, c) for c in ("role", "organization", "practitioner", "patient")
        )
        if as_issued != (user.role, user.organization, user.practitioner, user.patient):
            raise AuthError("user's role or ids changed since the token was issued; get a new one")
        return Principal(
            name=user.name,
            role=user.role,
            organization=user.organization,
            practitioner=user.practitioner,
            patient=user.patient,
            scopes=_scopes(claims),
            token_id=_str_claim(claims, "jti"),
            issuer=self.issuer.issuer,
        )

    def _client_principal(self, claims: dict[str, Any]) -> Principal:
        """A token the token endpoint gave a registered client: the client must still be
        registered with the same role and organization, and for the token's scopes."""
        from lienthong.access.smart import grant_scopes

        if claims["client_id"] != claims["sub"]:
            raise AuthError("token claim 'client_id' differs from 'sub'")
        client = self.clients.get(claims["sub"])
        if client is None:
            raise AuthError("unknown client")
        as_issued = (_str_claim(claims, "role"), _str_claim(claims, "organization"))
        if as_issued != (client.role, client.organization):
            raise AuthError("client's role or organization changed since the token was issued")
        scopes = _scopes(claims)
        try:
            still_granted = set(grant_scopes(" ".join(sorted(scopes)), client.scope).split())
        except ValueError:
            still_granted = set()
        if still_granted != scopes:
            raise AuthError("client's scopes changed since the token was issued; get a new one")
        return Principal(
            name=client.client_id,
            role=client.role,
            organization=client.organization,
            practitioner=None,
            patient=None,
            scopes=scopes,
            token_id=_str_claim(claims, "jti"),
            issuer=self.issuer.issuer,
        )

    def _external(self, token: str, kid: str) -> Principal:
        assert self.external is not None
        key = self.external.key(kid)
        claims = _decode(
            token, key, list(ALLOWED_ALGORITHMS), self.external.issuer, self.external.audience
        )
        fhir_user = _fhir_user(claims.get("fhirUser"))
        practitioner = _str_claim(claims, "practitioner")
        patient = _str_claim(claims, "patient")
        if fhir_user is not None:
            kind, ident = fhir_user
            if kind == "Practitioner" and practitioner is None:
                practitioner = ident
            if kind == "Patient" and patient is None:
                patient = ident
        role = _str_claim(claims, "role")
        if role is None and fhir_user is not None and fhir_user[0] == "Patient":
            role = "citizen"
        if role is None:
            raise AuthError("token has no 'role' claim")
        try:
            organization = _logical_id(_str_claim(claims, "organization"), "Organization")
            practitioner = _logical_id(practitioner, "Practitioner")
            patient = _logical_id(patient, "Patient")
            _check_role_fields(role, organization, patient)
        except ValueError as error:
            raise AuthError(f"token claims: {error}") from None
        return Principal(
            name=claims["sub"],
            role=role,
            organization=organization,
            practitioner=practitioner,
            patient=patient,
            scopes=_scopes(claims),
            token_id=_str_claim(claims, "jti"),
            issuer=self.external.issuer,
        )

    def jwks(self) -> dict[str, Any]:
        """The embedded issuer's public keys, for ``GET /.well-known/jwks.json``."""
        return self.issuer.jwks()

    def close(self) -> None:
        self.users.close()
        self.clients.close()
        self.issuer.close()
