"""Authentication: the embedded issuer, its user directory and keys, an external OIDC provider.

Everything runs for real: SQLite files (and PostgreSQL where the test is
about storage), RSA/EC keys from ``cryptography``, and for the external
provider a real HTTP server on 127.0.0.1 serving a discovery document and a
JWKS, whose keys the tests rotate by changing what it serves.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from typer.testing import CliRunner

from lienthong.access.auth import (
    DEFAULT_SCOPES,
    ROLES,
    Authenticator,
    AuthError,
    AuthUnavailable,
    Principal,
    TokenIssuer,
    UserDirectory,
)
from lienthong.access.cli_users import token_command, user_app
from lienthong.settings import Settings

ISSUER = "https://lienthong.test"
AUDIENCE = "lienthong-api"


def make_settings(database_url: str, **update: Any) -> Settings:
    return Settings.from_env({}).model_copy(
        update={
            "database_url": database_url,
            "token_issuer": ISSUER,
            "token_audience": AUDIENCE,
            **update,
        }
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lienthong.db'}"


@pytest.fixture
def auth(sqlite_url: str) -> Iterator[Authenticator]:
    a = Authenticator(make_settings(sqlite_url))
    try:
        yield a
    finally:
        a.close()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def refused(auth: Authenticator, authorization: str | None, message: str) -> AuthError:
    """Assert the header is refused with ``message`` and that the error does not leak the token."""
    with pytest.raises(AuthError) as info:
        auth.authenticate(authorization)
    assert str(info.value) == message
    token = (authorization or "").partition(" ")[2].strip()
    if len(token) > 3:
        assert token not in str(info.value)
        assert token not in info.value.www_authenticate()
    return info.value


def local_private_pem(database_url: str, kid: str) -> str:
    issuer = TokenIssuer(database_url, ISSUER, AUDIENCE)
    try:
        rows = issuer.db.query("SELECT private_pem FROM signing_key WHERE kid = ?", (kid,))
    finally:
        issuer.close()
    return str(rows[0][0])


# ---------------------------------------------------------------------------
# the embedded issuer: round trip, directory, keys (SQLite and PostgreSQL)


def test_issue_and_authenticate_round_trip(store_url: str) -> None:
    auth = Authenticator(make_settings(store_url))
    try:
        user = auth.users.add(
            "bs-lan", "clinician", organization="org-1", practitioner="Practitioner/pr-7"
        )
        assert user.practitioner == "pr-7"
        token = auth.issuer.issue(user, None, 600)

        claims = claims_of(token)
        assert claims["iss"] == ISSUER
        assert claims["aud"] == AUDIENCE
        assert claims["sub"] == "bs-lan"
        assert claims["exp"] - claims["iat"] == 600
        assert claims["scope"] == DEFAULT_SCOPES["clinician"]
        assert claims["role"] == "clinician"
        assert claims["organization"] == "org-1"
        assert claims["practitioner"] == "pr-7"
        assert "patient" not in claims
        assert jwt.get_unverified_header(token)["alg"] == "RS256"

        principal = auth.authenticate(bearer(token))
        assert principal == Principal(
            name="bs-lan",
            role="clinician",
            organization="org-1",
            practitioner="pr-7",
            patient=None,
            scopes=frozenset({"user/*.crus"}),
            token_id=claims["jti"],
            issuer=ISSUER,
        )
        # another process on the same store (a second authenticator) accepts it too
        other = Authenticator(make_settings(store_url))
        try:
            assert other.authenticate(bearer(token)) == principal
        finally:
            other.close()
    finally:
        auth.close()


def test_citizen_default_and_explicit_scopes(auth: Authenticator) -> None:
    citizen = auth.users.add("nguyen-van-a", "citizen", patient="pat-42")
    principal = auth.authenticate(bearer(auth.issuer.issue(citizen, None, 60)))
    assert principal.role == "citizen"
    assert principal.patient == "pat-42"
    assert principal.organization is None
    assert principal.scopes == {"patient/*.rs", "patient/Consent.cruds"}

    narrow = auth.issuer.issue(citizen, "  patient/Observation.rs   patient/Patient.r ", 60)
    assert claims_of(narrow)["scope"] == "patient/Observation.rs patient/Patient.r"
    assert auth.authenticate(bearer(narrow)).scopes == {
        "patient/Observation.rs",
        "patient/Patient.r",
    }

    with pytest.raises(ValueError, match="scope is empty"):
        auth.issuer.issue(citizen, " ", 60)
    with pytest.raises(ValueError, match="bad scope"):
        auth.issuer.issue(citizen, 'patient/*.rs "x"', 60)
    with pytest.raises(ValueError, match="positive"):
        auth.issuer.issue(citizen, None, 0)


def test_every_role_has_default_scopes() -> None:
    assert set(DEFAULT_SCOPES) == set(ROLES)


def test_user_directory(store_url: str) -> None:
    users = UserDirectory(store_url)
    try:
        assert users.list() == []
        a = users.add("analyst-1", "analyst")
        c = users.add("cb-tram", "commune_staff", organization="Organization/tram-yte-1")
        assert c.organization == "tram-yte-1"
        assert users.get("cb-tram") == c
        assert users.get("nobody") is None
        assert [u.name for u in users.list()] == ["analyst-1", "cb-tram"]
        assert users.list()[0] == a

        for args, kwargs, message in [
            (("x", "doctor"), {}, "unknown role 'doctor'"),
            (("x", "citizen"), {}, "a citizen needs a patient"),
            (("x", "clinician"), {}, "a clinician needs an organization"),
            (
                ("x", "commune_staff"),
                {"practitioner": "p1"},
                "a commune_staff needs an organization",
            ),
            (("x", "system"), {"organization": "Patient/p1"}, "must be a Organization logical id"),
            (("x y", "analyst"), {}, "bad user name"),
            (("", "analyst"), {}, "bad user name"),
            (("cb-tram", "analyst"), {}, "user 'cb-tram' already exists"),
        ]:
            with pytest.raises(ValueError, match=message):
                users.add(*args, **kwargs)
        assert users.get("cb-tram") == c  # the refused duplicate changed nothing

        assert users.remove("cb-tram") is True
        assert users.remove("cb-tram") is False
        assert users.get("cb-tram") is None
    finally:
        users.close()


def test_removed_or_changed_user_is_refused(store_url: str) -> None:
    auth = Authenticator(make_settings(store_url))
    try:
        user = auth.users.add("bs-minh", "clinician", organization="org-1")
        token = auth.issuer.issue(user, None, 600)
        assert auth.authenticate(bearer(token)).name == "bs-minh"

        assert auth.users.remove("bs-minh")
        refused(auth, bearer(token), "unknown user")

        # same name, now at another hospital: the old token must not carry the old one
        auth.users.add("bs-minh", "clinician", organization="org-2")
        refused(
            auth,
            bearer(token),
            "user's role or ids changed since the token was issued; get a new one",
        )
        fresh = auth.issuer.issue(auth.users.get("bs-minh"), None, 600)  # type: ignore[arg-type]
        assert auth.authenticate(bearer(fresh)).organization == "org-2"
    finally:
        auth.close()


def test_key_rotation_keeps_issued_tokens_valid(store_url: str) -> None:
    settings = make_settings(store_url)
    auth = Authenticator(settings)
    try:
        user = auth.users.add("sys-his", "system", organization="org-1")
        old = auth.issuer.issue(user, None, 600)
        old_kid = jwt.get_unverified_header(old)["kid"]
        assert auth.authenticate(bearer(old)).role == "system"
        assert [k["kid"] for k in auth.jwks()["keys"]] == [old_kid]

        # the key is created once and shared: another issuer on the store signs with it
        other = TokenIssuer(store_url, ISSUER, AUDIENCE)
        try:
            assert other.current_kid() == old_kid
            # rotation by another process (e.g. an operator's command)
            new_kid = other.rotate()
        finally:
            other.close()
        assert new_kid != old_kid

        new = auth.issuer.issue(user, None, 600)
        assert jwt.get_unverified_header(new)["kid"] == new_kid
        assert auth.authenticate(bearer(old)).token_id == claims_of(old)["jti"]
        assert auth.authenticate(bearer(new)).token_id == claims_of(new)["jti"]

        jwks = auth.jwks()
        assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
        for key in jwks["keys"]:
            assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
        # the published JWKS is what a third party verifies with
        keyset = jwt.PyJWKSet.from_dict(jwks)
        for token, kid in ((old, old_kid), (new, new_kid)):
            decoded = jwt.decode(token, keyset[kid], algorithms=["RS256"], audience=AUDIENCE)
            assert decoded["sub"] == "sys-his"

        # a fresh authenticator (server restart) still accepts both
        restarted = Authenticator(settings)
        try:
            assert restarted.authenticate(bearer(old)).name == "sys-his"
            assert restarted.authenticate(bearer(new)).name == "sys-his"
        finally:
            restarted.close()
    finally:
        auth.close()


# ---------------------------------------------------------------------------
# the embedded issuer: what is refused


def test_expired_and_future_tokens(auth: Authenticator) -> None:
    user = auth.users.add("bs-hoa", "clinician", organization="org-1")
    now = time.time()
    refused(auth, bearer(auth.issuer.issue(user, None, 60, now=now - 3600)), "token expired")
    refused(auth, bearer(auth.issuer.issue(user, None, 60, now=now - 100)), "token expired")
    # 10 s past exp is within the 30 s clock leeway
    assert auth.authenticate(bearer(auth.issuer.issue(user, None, 60, now=now - 70)))
    refused(
        auth,
        bearer(auth.issuer.issue(user, None, 60, now=now + 3600)),
        "token not yet valid (iat or nbf in the future)",
    )


def test_bad_signature(auth: Authenticator, sqlite_url: str) -> None:
    user = auth.users.add("bs-hoa", "clinician", organization="org-1")
    token = auth.issuer.issue(user, None, 600)
    kid = jwt.get_unverified_header(token)["kid"]

    # same claims and kid, signed with a key that is not ours
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims_of(token), intruder, algorithm="RS256", headers={"kid": kid})
    refused(auth, bearer(forged), "bad signature")

    # our signature, but the payload changed after signing
    header, _, signature = token.split(".")
    promoted = {**claims_of(token), "role": "data_admin", "scope": "user/*.cruds"}
    refused(auth, bearer(f"{header}.{b64(promoted)}.{signature}"), "bad signature")

    # a signature that is not even base64 of the right length
    refused(auth, bearer(f"{header}.{token.split('.')[1]}.AAAA"), "bad signature")

    # a kid we never published
    ghost = jwt.encode(claims_of(token), intruder, algorithm="RS256", headers={"kid": "ghost"})
    refused(auth, bearer(ghost), "unknown signing key (kid not in the issuer's JWKS)")

    # a sanity check that the forging above is done right: with our key it passes
    ours = local_private_pem(sqlite_url, kid)
    resigned = jwt.encode(claims_of(token), ours, algorithm="RS256", headers={"kid": kid})
    assert auth.authenticate(bearer(resigned)).name == "bs-hoa"


def test_wrong_audience_and_issuer(auth: Authenticator, sqlite_url: str) -> None:
    user = auth.users.add("bs-hoa", "clinician", organization="org-1")
    # same keys (same store), other audience / issuer
    elsewhere = TokenIssuer(sqlite_url, ISSUER, "another-api")
    impostor = TokenIssuer(sqlite_url, "https://evil.test", AUDIENCE)
    try:
        refused(auth, bearer(elsewhere.issue(user, None, 600)), "wrong audience")
        refused(auth, bearer(impostor.issue(user, None, 600)), "wrong issuer")
    finally:
        elsewhere.close()
        impostor.close()

    kid = auth.issuer.current_kid()
    pem = local_private_pem(sqlite_url, kid)
    base = claims_of(auth.issuer.issue(user, None, 600))
    for missing in ("exp", "aud", "sub"):
        claims = {k: v for k, v in base.items() if k != missing}
        token = jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})
        refused(auth, bearer(token), f"token lacks required claim {missing!r}")
    no_iss = jwt.encode(
        {k: v for k, v in base.items() if k != "iss"}, pem, algorithm="RS256", headers={"kid": kid}
    )
    refused(auth, bearer(no_iss), "token lacks required claim 'iss'")


def test_unsigned_and_disallowed_algorithms(auth: Authenticator, sqlite_url: str) -> None:
    user = auth.users.add("bs-hoa", "clinician", organization="org-1")
    claims = claims_of(auth.issuer.issue(user, None, 600))
    kid = auth.issuer.current_kid()

    for alg in ("none", "None", "NONE"):
        unsigned = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{b64(claims)}."
        refused(auth, bearer(unsigned), "unsigned token (alg none) refused")

    hmac = jwt.encode(claims, "s3cret-" * 8, algorithm="HS256", headers={"kid": kid})
    refused(
        auth,
        bearer(hmac),
        "token algorithm 'HS256' not allowed: RS256, RS384, RS512, ES256, ES384, ES512 only",
    )
    # RS384 is allowed in general, but the embedded issuer only signs RS256
    pem = local_private_pem(sqlite_url, kid)
    rs384 = jwt.encode(claims, pem, algorithm="RS384", headers={"kid": kid})
    refused(auth, bearer(rs384), "token algorithm not allowed: this issuer signs RS256")
    no_kid = jwt.encode(claims, pem, algorithm="RS256")
    refused(auth, bearer(no_kid), "token has no key id (kid)")


@pytest.mark.parametrize(
    ("authorization", "message", "status", "error"),
    [
        (None, "missing bearer token", 401, None),
        ("", "missing bearer token", 401, None),
        ("   ", "missing bearer token", 401, None),
        (
            "Basic YWxpY2U6cGFzc3dvcmQ=",
            "missing bearer token: the Authorization header does not use the Bearer scheme",
            401,
            None,
        ),
        (
            "Bearer",
            "malformed Authorization header: expected 'Bearer <token>'",
            400,
            "invalid_request",
        ),
        (
            "Bearer abc.def ghi",
            "malformed Authorization header: expected 'Bearer <token>'",
            400,
            "invalid_request",
        ),
        ("Bearer not-a-jwt-at-all", "malformed token: not a signed JWT", 401, "invalid_token"),
        (
            "Bearer eyJhbGciOi.eyJzdWIi.c2ln",
            "malformed token: not a signed JWT",
            401,
            "invalid_token",
        ),
    ],
    ids=["none", "empty", "blank", "basic", "bearer-alone", "two-parts", "not-jwt", "bad-json"],
)
def test_missing_or_malformed_authorization(
    auth: Authenticator, authorization: str | None, message: str, status: int, error: str | None
) -> None:
    err = refused(auth, authorization, message)
    assert err.status == status
    assert err.error == error
    challenge = err.www_authenticate()
    assert challenge.startswith('Bearer realm="lienthong"')
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
        assert f'error_description="{message}"' in challenge


def test_bearer_scheme_is_case_insensitive(auth: Authenticator) -> None:
    user = auth.users.add("kt-vien", "auditor")
    token = auth.issuer.issue(user, None, 60)
    assert auth.authenticate(f"bearer   {token} ").scopes == {"user/AuditEvent.rs"}


# ---------------------------------------------------------------------------
# an external OpenID Connect provider, served for real on 127.0.0.1


class Provider:
    """A tiny identity provider: serves JSON documents by path and records each request."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        self.requests: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                provider.requests.append(self.path)
                document = provider.documents.get(self.path)
                body = json.dumps(document if document is not None else {}).encode()
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = f"{self.base}/realms/so-y-te"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve_keys(self, *keys: dict[str, Any]) -> None:
        self.documents["/realms/so-y-te/protocol/openid-connect/certs"] = {"keys": list(keys)}

    def jwks_fetches(self) -> int:
        return self.requests.count("/realms/so-y-te/protocol/openid-connect/certs")


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    p.documents["/realms/so-y-te/.well-known/openid-configuration"] = {
        "issuer": p.issuer,
        "jwks_uri": f"{p.issuer}/protocol/openid-connect/certs",
        "token_endpoint": f"{p.issuer}/protocol/openid-connect/token",
    }
    p.thread.start()
    try:
        yield p
    finally:
        p.server.shutdown()
        p.server.server_close()
        p.thread.join()


class SigningKey:
    """An external provider's key pair and its public JWK."""

    def __init__(self, kid: str, alg: str = "RS256") -> None:
        self.kid = kid
        self.alg = alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**public, "kid": kid, "use": "sig", "alg": alg}

    def sign(self, provider: Provider, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": provider.issuer,
            "aud": AUDIENCE,
            "sub": "f3b6c1d2-idp-user",
            "iat": now,
            "exp": now + 300,
            "jti": "ext-1",
            "scope": "openid user/*.rs",
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.private, algorithm=self.alg, headers={"kid": self.kid})


def external_auth(sqlite_url: str, provider: Provider, **update: Any) -> Authenticator:
    settings = make_settings(sqlite_url, oidc_issuer=provider.issuer, **update)
    # no cooldown between forced JWKS refetches, so a rotation is seen at the next token
    return Authenticator(settings, jwks_refresh_cooldown=0)


def test_external_token_via_discovery(sqlite_url: str, provider: Provider) -> None:
    key = SigningKey("k1")
    provider.serve_keys(key.jwk)
    auth = external_auth(sqlite_url, provider)
    try:
        assert provider.requests == []  # nothing fetched before the first external token
        token = key.sign(
            provider,
            role="clinician",
            organization="Organization/bv-bach-mai",
            fhirUser="https://idp.example/fhir/Practitioner/pr-5",
        )
        principal = auth.authenticate(bearer(token))
        assert principal == Principal(
            name="f3b6c1d2-idp-user",
            role="clinician",
            organization="bv-bach-mai",
            practitioner="pr-5",
            patient=None,
            scopes=frozenset({"openid", "user/*.rs"}),
            token_id="ext-1",
            issuer=provider.issuer,
        )
        assert provider.requests == [
            "/realms/so-y-te/.well-known/openid-configuration",
            "/realms/so-y-te/protocol/openid-connect/certs",
        ]
        # keys are cached: a second token costs no request
        auth.authenticate(bearer(key.sign(provider, role="analyst", jti="ext-2")))
        assert provider.jwks_fetches() == 1

        # explicit claims win over fhirUser; scope may be a list
        explicit = key.sign(
            provider,
            role="system",
            practitioner="pr-9",
            fhirUser="Practitioner/pr-5",
            scope=["system/*.rs"],
        )
        p = auth.authenticate(bearer(explicit))
        assert (p.role, p.organization, p.practitioner, p.scopes) == (
            "system",
            None,
            "pr-9",
            {"system/*.rs"},
        )
        # the local issuer keeps working next to the external one
        local = auth.users.add("bs-lan", "clinician", organization="org-1")
        assert auth.authenticate(bearer(auth.issuer.issue(local, None, 60))).issuer == ISSUER
    finally:
        auth.close()


def test_external_citizen_from_fhir_user_with_es256(sqlite_url: str, provider: Provider) -> None:
    key = SigningKey("ec-1", alg="ES256")
    provider.serve_keys(key.jwk)
    auth = external_auth(sqlite_url, provider)
    try:
        token = key.sign(provider, fhirUser="Patient/pat-77", scope="patient/*.rs")
        principal = auth.authenticate(bearer(token))
        assert (principal.role, principal.patient, principal.scopes) == (
            "citizen",
            "pat-77",
            {"patient/*.rs"},
        )
    finally:
        auth.close()


def test_external_key_rotation_is_picked_up(sqlite_url: str, provider: Provider) -> None:
    old, new = SigningKey("2024-key"), SigningKey("2025-key")
    provider.serve_keys(old.jwk)
    auth = external_auth(sqlite_url, provider)
    try:
        assert auth.authenticate(bearer(old.sign(provider, role="analyst"))).role == "analyst"
        assert provider.jwks_fetches() == 1

        # the provider rotates: it now publishes only the new key
        provider.serve_keys(new.jwk)
        principal = auth.authenticate(bearer(new.sign(provider, role="auditor")))
        assert principal.role == "auditor"
        assert provider.jwks_fetches() == 2  # the unknown kid made it refetch

        # the withdrawn key is no longer trusted
        refused(
            auth,
            bearer(old.sign(provider, role="analyst")),
            "unknown signing key (kid not in the issuer's JWKS)",
        )
    finally:
        auth.close()


def test_external_jwks_url_without_discovery(sqlite_url: str, provider: Provider) -> None:
    key = SigningKey("k1")
    provider.serve_keys(key.jwk)
    del provider.documents["/realms/so-y-te/.well-known/openid-configuration"]
    auth = external_auth(
        sqlite_url,
        provider,
        oidc_jwks_url=f"{provider.issuer}/protocol/openid-connect/certs",
        oidc_audience="his-gateway",
    )
    try:
        assert auth.authenticate(bearer(key.sign(provider, role="analyst", aud="his-gateway")))
        assert provider.requests == ["/realms/so-y-te/protocol/openid-connect/certs"]
        # oidc_audience replaces the local audience for external tokens
        refused(auth, bearer(key.sign(provider, role="analyst")), "wrong audience")
    finally:
        auth.close()


def test_external_tokens_refused(sqlite_url: str, provider: Provider) -> None:
    key, stranger = SigningKey("k1"), SigningKey("k1")  # same kid, other key
    provider.serve_keys(key.jwk)
    auth = external_auth(sqlite_url, provider)
    try:
        refused(auth, bearer(stranger.sign(provider, role="analyst")), "bad signature")
        refused(auth, bearer(key.sign(provider, role="analyst", aud="other")), "wrong audience")
        now = int(time.time())
        expired = key.sign(provider, role="analyst", iat=now - 900, exp=now - 600)
        refused(auth, bearer(expired), "token expired")
        refused(
            auth,
            bearer(key.sign(provider, role="analyst", exp=None)),
            "token lacks required claim 'exp'",
        )
        refused(auth, bearer(key.sign(provider)), "token has no 'role' claim")
        refused(
            auth,
            bearer(key.sign(provider, role="clinician")),
            "token claims: a clinician needs an organization (the Organization id they work for)",
        )
        refused(
            auth,
            bearer(key.sign(provider, role="superuser")),
            "token claims: unknown role 'superuser': use one of " + ", ".join(ROLES),
        )
        # an ES256 token whose kid names an RSA key
        ec_key = SigningKey("k1", alg="ES256")
        refused(
            auth,
            bearer(ec_key.sign(provider, role="analyst")),
            "token algorithm does not match its signing key",
        )
    finally:
        auth.close()


def test_external_provider_problems_are_503(sqlite_url: str, provider: Provider) -> None:
    key = SigningKey("k1")
    provider.serve_keys(key.jwk)
    provider.documents["/realms/so-y-te/.well-known/openid-configuration"]["issuer"] = "https://x"
    auth = external_auth(sqlite_url, provider)
    try:
        with pytest.raises(AuthUnavailable, match="names issuer 'https://x'") as info:
            auth.authenticate(bearer(key.sign(provider, role="analyst")))
        assert info.value.status == 503
    finally:
        auth.close()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = Authenticator(
        make_settings(
            sqlite_url,
            oidc_issuer=provider.issuer,
            oidc_jwks_url=f"http://127.0.0.1:{closed}/certs",
        )
    )
    try:
        with pytest.raises(AuthUnavailable, match="cannot fetch the external issuer's JWKS"):
            down.authenticate(bearer(key.sign(provider, role="analyst")))
    finally:
        down.close()


def test_oidc_issuer_must_differ_from_local(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="must differ"):
        Authenticator(make_settings(sqlite_url, oidc_issuer=ISSUER))


# ---------------------------------------------------------------------------
# the command line


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(user_app, name="user")
    app.command("token")(token_command)
    return app


def test_cli_users_and_token(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIENTHONG_TOKEN_ISSUER", ISSUER)
    monkeypatch.setenv("LIENTHONG_TOKEN_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("LIENTHONG_TOKEN_TTL", "900")
    runner = CliRunner()
    app = cli()
    db = ["--database", sqlite_url]

    said = f"database: {sqlite_url} (--database)\n"

    def run(*args: str) -> tuple[int, str, str]:
        """Exit code, stdout, and stderr after the line saying which database was opened."""
        result = runner.invoke(app, list(args))
        assert result.stderr.startswith(said), result.stderr
        return result.exit_code, result.stdout, result.stderr[len(said) :]

    code, out, err = run(
        "user", "add", "bs-lan", "--role", "clinician", "--organization", "org-1",
        "--practitioner", "pr-7", *db,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == "added bs-lan\tclinician\torganization=org-1\tpractitioner=pr-7\n"
    assert run("user", "add", "dan", "--role", "citizen", "--patient", "pat-1", *db)[0] == 0

    for args, message in [
        (("bs-lan", "--role", "clinician", "--organization", "org-1"), "already exists"),
        (("x", "--role", "wizard"), "unknown role 'wizard'"),
        (("x", "--role", "citizen"), "a citizen needs a patient"),
    ]:
        code, out, err = run("user", "add", *args, *db)
        assert code == 1 and out == ""
        assert err.startswith("error: ") and message in err and err.count("\n") == 1

    code, out, err = run("user", "list", *db)
    assert code == 0
    assert out.splitlines() == [
        "bs-lan\tclinician\torganization=org-1\tpractitioner=pr-7",
        "dan\tcitizen\tpatient=pat-1",
    ]

    code, out, err = run("token", "bs-lan", *db)
    assert (code, err) == (0, "")
    token = out[:-1]
    assert out == token + "\n" and "\n" not in token and token.count(".") == 2
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == 900
    assert claims["scope"] == DEFAULT_SCOPES["clinician"]

    code, out, err = run("token", "dan", "--scope", "patient/Patient.r", "--ttl", "120", *db)
    assert code == 0
    citizen_token = out.strip()
    assert claims_of(citizen_token)["exp"] - claims_of(citizen_token)["iat"] == 120

    auth = Authenticator(make_settings(sqlite_url))
    try:
        assert auth.authenticate(bearer(token)).practitioner == "pr-7"
        assert auth.authenticate(bearer(citizen_token)).scopes == {"patient/Patient.r"}

        code, out, err = run("token", "nobody", *db)
        assert (code, out) == (1, "")
        assert err == "error: unknown user 'nobody' (add it with: lienthong user add)\n"
        code, out, err = run("token", "dan", "--ttl", "0", *db)
        assert (code, out) == (1, "") and "positive" in err

        assert run("user", "remove", "bs-lan", *db)[:2] == (0, "removed bs-lan\n")
        refused(auth, bearer(token), "unknown user")
        code, out, err = run("user", "remove", "bs-lan", *db)
        assert (code, out, err) == (1, "", "error: unknown user 'bs-lan'\n")
    finally:
        auth.close()


def test_cli_database_default_comes_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env' / 'store.db'}"
    monkeypatch.setenv("LIENTHONG_DATABASE_URL", url)
    result = CliRunner().invoke(cli(), ["user", "add", "kt-1", "--role", "auditor"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"database: {url} (LIENTHONG_DATABASE_URL)\n"
    users = UserDirectory(url)
    try:
        user = users.get("kt-1")
        assert user is not None
        assert (user.name, user.role, user.organization) == ("kt-1", "auditor", None)
    finally:
        users.close()
    assert (tmp_path / "env" / "store-access.db").exists()
