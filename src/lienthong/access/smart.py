"""SMART App Launch v2 Backend Services: the token endpoint and the discovery documents.

A registered client (:mod:`lienthong.access.clients`) asks for an access token
with the OAuth 2 client credentials grant, authenticating with a JWT signed by
its own private key (``private_key_jwt``: RFC 6749 section 4.4, RFC 7521/7523,
https://hl7.org/fhir/smart-app-launch/backend-services.html)::

    POST /auth/token
    Content-Type: application/x-www-form-urlencoded

    grant_type=client_credentials&scope=system%2F*.rs
    &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer
    &client_assertion=eyJ...

The assertion must have ``iss`` = ``sub`` = the client id, ``aud`` = the token
endpoint URL, an ``exp`` at most five minutes ahead, a ``jti`` never used
before (each is remembered until its ``exp``), and a signature (RS384 or
ES384, or RS256 / ES256) by the key its header's ``kid`` names in the client's
JWKS. The answer is the embedded issuer's own access token, which the gate
accepts like a user's: it carries the client's role and organization, and the
scopes granted (the requested ``system/`` scopes, narrowed to what the client
is registered for). Errors are the JSON of RFC 6749 section 5.2.

The discovery documents tell clients where all this is:
``/.well-known/openid-configuration`` (OAuth 2 authorization server metadata,
RFC 8414, at the issuer URL) and ``[base]/.well-known/smart-configuration``
(https://hl7.org/fhir/smart-app-launch/conformance.html).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt

from lienthong.access.audit import AuditEntry, AuditLog
from lienthong.access.auth import LEEWAY_SECONDS, LOCAL_ALGORITHM, TokenIssuer
from lienthong.access.clients import (
    ASSERTION_ALGORITHMS,
    Client,
    ClientKeyError,
    ClientRegistry,
    JwksFetcher,
    verification_key,
)
from lienthong.settings import TOKEN_PATH as TOKEN_PATH
from lienthong.settings import Settings
from lienthong.storage.side_tables import SideDB

JWKS_PATH = "/.well-known/jwks.json"
#: No web login yet, so no authorization endpoint (nor the authorization code
#: grant, PKCE's code_challenge_methods_supported, or the launch capabilities):
#: when there is one, its path goes here and into both discovery documents.
AUTHORIZATION_PATH: str | None = None

CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: SMART: an assertion's exp is no more than five minutes in the future
MAX_ASSERTION_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024
SMART_CAPABILITIES = ("client-confidential-asymmetric", "permission-v2", "permission-v1")
#: examples of what may be asked for; any system/ scope in the grammar below works
SCOPES_SUPPORTED = (
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
    "system/*.write",
    "system/*.*",
)
# SMART v2 permissions are c r u d s in this order; v1 has read, write and *
_SYSTEM_SCOPE = re.compile(r"system/([A-Z][A-Za-z]*|\*)\.(c?r?u?d?s?|read|write|\*)")
_V1_PERMS = {"read": "rs", "write": "cud", "*": "cruds"}


def token_endpoint(settings: Settings) -> str:
    return settings.token_endpoint()


def jwks_uri(settings: Settings) -> str:
    return settings.auth_root() + JWKS_PATH


# ---------------------------------------------------------------------------
# scopes


@dataclass(frozen=True)
class SystemScope:
    resource_type: str  # a type or "*"
    perms: str  # subset of "cruds", in that order


def parse_system_scope(token: str) -> SystemScope:
    """``system/Observation.rs`` or v1 ``system/*.read``; ValueError naming the scope."""
    m = _SYSTEM_SCOPE.fullmatch(token)
    if m is None or not m.group(2):
        if "?" in token:
            raise ValueError(f"scope {token!r}: scopes with search parameters are not supported")
        raise ValueError(
            f"scope {token!r} is not a system scope such as 'system/*.rs',"
            " 'system/Observation.cruds' or 'system/*.read'"
        )
    perms = _V1_PERMS.get(m.group(2), m.group(2))
    return SystemScope(m.group(1), perms)


def _v2(rtype: str, perms: set[str]) -> str:
    return f"system/{rtype}." + "".join(p for p in "cruds" if p in perms)


def grant_scopes(requested: str, allowed: str) -> str:
    """The scopes granted: each requested one within what the client may have.

    A requested scope wholly inside an allowed one is granted as written (v1
    or v2); one that only partly is, is narrowed to the overlap, written in v2
    syntax. ValueError when a scope is malformed or nothing at all is granted.
    """
    asked = requested.split()
    if not asked:
        raise ValueError("scope is empty: ask for system scopes, e.g. 'system/*.rs'")
    limits = [parse_system_scope(s) for s in allowed.split()]
    granted: list[str] = []
    for token in asked:
        want = parse_system_scope(token)
        overlaps: list[str] = []
        for limit in limits:
            if limit.resource_type not in ("*", want.resource_type) and want.resource_type != "*":
                continue
            perms = set(want.perms) & set(limit.perms)
            if not perms:
                continue
            if limit.resource_type in ("*", want.resource_type) and perms == set(want.perms):
                overlaps = [token]
                break
            rtype = want.resource_type if limit.resource_type == "*" else limit.resource_type
            overlaps.append(_v2(rtype, perms))
        granted.extend(s for s in overlaps if s not in granted)
    if not granted:
        raise ValueError(
            f"none of the scopes asked for ({requested.strip()}) is allowed to this client"
        )
    return " ".join(granted)


# ---------------------------------------------------------------------------
# discovery


def openid_configuration(settings: Settings) -> dict[str, Any]:
    """Authorization server metadata (RFC 8414) at ``/.well-known/openid-configuration``."""
    document: dict[str, Any] = {
        "issuer": settings.issuer(),
        "jwks_uri": jwks_uri(settings),
        "token_endpoint": token_endpoint(settings),
        "grant_types_supported": [CLIENT_CREDENTIALS],
        "response_types_supported": [],  # no authorization endpoint: nothing to respond with
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "access_token_signing_alg_values_supported": [LOCAL_ALGORITHM],
    }
    if AUTHORIZATION_PATH is not None:
        document["authorization_endpoint"] = settings.auth_root() + AUTHORIZATION_PATH
    return document


def smart_configuration(settings: Settings) -> dict[str, Any]:
    """``[base]/.well-known/smart-configuration``
    (https://hl7.org/fhir/smart-app-launch/conformance.html).

    ``issuer`` is left out: SMART wants it only with the ``sso-openid-connect``
    capability (lienthong issues no ID tokens); it is in the OpenID document.
    """
    document: dict[str, Any] = {
        "jwks_uri": jwks_uri(settings),
        "token_endpoint": token_endpoint(settings),
        "grant_types_supported": [CLIENT_CREDENTIALS],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": list(SMART_CAPABILITIES),
    }
    if AUTHORIZATION_PATH is not None:
        document["authorization_endpoint"] = settings.auth_root() + AUTHORIZATION_PATH
    return document


# ---------------------------------------------------------------------------
# the token endpoint


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``error`` code and a description for the client."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class TokenResult:
    """What the token endpoint answers: status, JSON body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(
        default_factory=lambda: {"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


class JtiStore:
    """Assertion ids already used, per client, each kept until its ``exp`` has passed.

    Table ``client_assertion_jti`` of side database ``access``; the primary key
    makes the check and the record one atomic insert, across processes too.
    """

    def __init__(self, database_url: str) -> None:
        self.db = SideDB(database_url, "access")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS client_assertion_jti ("
            " client_id TEXT NOT NULL,"
            " jti TEXT NOT NULL,"
            " expires INTEGER NOT NULL,"
            " PRIMARY KEY (client_id, jti))"
        )

    def first_use(self, client_id: str, jti: str, expires: int) -> bool:
        """Record the jti; False if it was already used (a replay)."""
        now = int(time.time())
        self.db.execute(
            "DELETE FROM client_assertion_jti WHERE expires < ?", (now - LEEWAY_SECONDS,)
        )
        return (
            self.db.execute(
                "INSERT INTO client_assertion_jti (client_id, jti, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (client_id, jti) DO NOTHING",
                (client_id, jti, expires),
            )
            > 0
        )

    def close(self) -> None:
        self.db.close()


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description)


class TokenEndpoint:
    """``POST /auth/token``: client credentials with a private-key JWT, as SMART specifies."""

    def __init__(self, settings: Settings, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self.url = token_endpoint(settings)
        self.clients = ClientRegistry(settings.database_url)
        self.issuer = TokenIssuer(settings.database_url, settings.issuer(), settings.token_audience)
        self.jtis = JtiStore(settings.database_url)
        self.fetcher = JwksFetcher(
            settings.client_jwks_timeout,
            settings.client_jwks_max_bytes,
            settings.client_jwks_cache_seconds,
        )

    def close(self) -> None:
        self.clients.close()
        self.issuer.close()
        self.jtis.close()

    def respond(self, content_type: str, body: bytes, source_ip: str | None = None) -> TokenResult:
        """The answer to one token request (never raises for a bad request).

        Each request is audited (action ``token``): granted or refused, under the id
        of the registered client the assertion names (``anonymous`` before that).
        """
        client: Client | None = None
        holder: list[Client] = []
        try:
            answer = self._token(content_type, body, holder)
            client = holder[0] if holder else None
            result = TokenResult(200, answer)
            detail = f"granted {answer['scope']}"
        except OAuthError as error:
            client = holder[0] if holder else None
            result = TokenResult(
                error.status, {"error": error.error, "error_description": error.description}
            )
            detail = f"{error.error}: {error.description}"
        if self.audit is not None:
            self.audit.append(
                AuditEntry(
                    user=client.client_id if client else "anonymous",
                    role=client.role if client else "none",
                    on_behalf_of=f"Organization/{client.organization}"
                    if client and client.organization
                    else None,
                    action="token",
                    resource_type=None,
                    resource_id=None,
                    query=None,
                    patients=(),
                    outcome="success" if result.status == 200 else "denied",
                    status=result.status,
                    purpose=None,
                    break_glass=None,
                    source_ip=source_ip,
                    detail=detail[:500],
                )
            )
        return result

    def _token(self, content_type: str, body: bytes, holder: list[Client]) -> dict[str, Any]:
        form = _form(content_type, body)
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise OAuthError("invalid_request", "grant_type is required (client_credentials)")
        if grant_type != CLIENT_CREDENTIALS:
            raise OAuthError(
                "unsupported_grant_type",
                f"grant_type {grant_type[:64]!r} is not supported: use client_credentials",
            )
        assertion_type = form.get("client_assertion_type")
        assertion = form.get("client_assertion")
        if assertion_type is None or assertion is None:
            raise _invalid_client(
                "client authentication is required: client_assertion_type and client_assertion"
                " (a JWT signed with the client's private key)"
            )
        if assertion_type != JWT_BEARER:
            raise _invalid_client(f"client_assertion_type must be {JWT_BEARER}")
        client = self._authenticate(assertion, form.get("client_id"), holder)
        scope = form.get("scope")
        if scope is None:
            raise OAuthError("invalid_request", "scope is required, e.g. scope=system/*.rs")
        try:
            granted = grant_scopes(scope, client.scope)
        except ValueError as error:
            raise OAuthError("invalid_scope", str(error)) from None
        ttl = self.settings.client_token_ttl
        token = self.issuer.issue_client(client, granted, ttl)
        return {"access_token": token, "token_type": "bearer", "expires_in": ttl, "scope": granted}

    def _authenticate(
        self, assertion: str, client_id_param: str | None, holder: list[Client]
    ) -> Client:
        """The client the assertion authenticates; ``holder`` gets the client it claims
        to be as soon as that is known, so a refusal is audited under its id."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.DecodeError:
            raise _invalid_client("client_assertion is not a signed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASSERTION_ALGORITHMS:
            raise _invalid_client(
                f"client_assertion algorithm {str(alg)[:16]!r} not accepted:"
                f" use {', '.join(ASSERTION_ALGORITHMS)}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid_client("client_assertion header has no kid")
        iss, sub = unverified.get("iss"), unverified.get("sub")
        if not isinstance(iss, str) or not iss:
            raise _invalid_client("client_assertion lacks iss (the client id)")
        if sub != iss:
            raise _invalid_client("client_assertion sub must equal iss (both the client id)")
        if client_id_param is not None and client_id_param != iss:
            raise _invalid_client("client_id does not match the client_assertion's iss")
        client = self.clients.get(iss)
        if client is None:
            raise _invalid_client(f"unknown client {iss[:128]!r}")
        holder.append(client)
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_uri:
            raise _invalid_client("client_assertion jku is not the client's registered jwks_uri")
        try:
            if client.jwks is not None:
                jwks = client.jwks
            else:
                assert client.jwks_uri is not None
                jwks = self.fetcher.keys(client.jwks_uri, kid)
            key = verification_key(jwks, kid, alg)
        except ClientKeyError as error:
            raise _invalid_client(str(error)) from None
        claims = _decode_assertion(assertion, key, alg, client.client_id, self.url)
        exp = int(claims["exp"])
        if exp > time.time() + MAX_ASSERTION_SECONDS + LEEWAY_SECONDS:
            raise _invalid_client("client_assertion exp is more than five minutes in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise _invalid_client("client_assertion jti must be a string of 1 to 255 characters")
        if not self.jtis.first_use(client.client_id, jti, exp):
            raise _invalid_client("client_assertion jti was already used (replay refused)")
        return client


def _form(content_type: str, body: bytes) -> dict[str, str]:
    media = content_type.split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request",
            "the token request must be application/x-www-form-urlencoded"
            + (f", not {media[:64]}" if media else ""),
        )
    if len(body) > MAX_BODY_BYTES:
        raise OAuthError("invalid_request", f"the token request is over {MAX_BODY_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the token request body is not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name[:64]!r} is given more than once")
        form[name] = value
    return form


def _decode_assertion(
    assertion: str, key: jwt.PyJWK, alg: str, client_id: str, audience: str
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=client_id,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "sub", "aud", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise _invalid_client("client_assertion expired") from None
    except jwt.InvalidAudienceError:
        raise _invalid_client(
            f"client_assertion aud must be the token endpoint {audience}"
        ) from None
    except jwt.MissingRequiredClaimError as error:
        raise _invalid_client(f"client_assertion lacks required claim {error.claim!r}") from None
    except jwt.ImmatureSignatureError:
        raise _invalid_client("client_assertion not yet valid (iat or nbf in the future)") from None
    except jwt.InvalidSignatureError:
        raise _invalid_client("client_assertion signature does not verify") from None
    except jwt.InvalidTokenError as error:
        raise _invalid_client(f"invalid client_assertion: {error}") from None
    return claims
