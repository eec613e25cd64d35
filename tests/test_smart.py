"""SMART Backend Services over HTTP: client registration, the token endpoint, discovery.

Everything is real: the app over FastAPI's TestClient on SQLite and PostgreSQL
where clients, assertion ids and tokens are stored, RSA and EC keys from
``cryptography``, a client's JWKS served by a real HTTP server on 127.0.0.1,
and one run of ``lienthong serve`` as a process (tests/live_server.py).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from typer.testing import CliRunner

from lienthong.access.audit import AuditLog
from lienthong.access.auth import Authenticator, AuthError, TokenIssuer, UserDirectory
from lienthong.access.cli_users import client_app, user_app
from lienthong.access.clients import ClientKeyError, ClientRegistry, JwksFetcher
from lienthong.access.smart import grant_scopes
from lienthong.server.app import create_app
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore
from tests.live_server import live_server

ROOT = "http://testserver"
TOKEN_URL = f"{ROOT}/auth/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Key:
    """A client's key pair and its public JWK."""

    def __init__(self, kid: str, alg: str) -> None:
        self.kid, self.alg = kid, alg
        if alg.startswith("ES"):
            curve = ec.SECP384R1() if alg == "ES384" else ec.SECP256R1()
            self.private: Any = ec.generate_private_key(curve)
            public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**public, "kid": kid, "use": "sig", "alg": alg}

    def assertion(
        self,
        client_id: str,
        *,
        aud: str = TOKEN_URL,
        exp_in: int = 240,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "exp": now + exp_in,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})}
        )


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {alg: Key(f"k-{alg.lower()}", alg) for alg in ("RS384", "ES384", "RS256", "ES256")}


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [k.jwk for k in keys]}


def smart_settings(database_url: str, **update: Any) -> Settings:
    return Settings.from_env({"LIENTHONG_BASE_URL": f"{ROOT}/fhir"}).model_copy(
        update={"database_url": database_url, "auth": "on", "mpi": False, **update}
    )


@pytest.fixture
def app_client(store: ResourceStore, store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(smart_settings(store_url), store=store)) as c:
        yield c


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lienthong.db'}"


def register(database_url: str, client_id: str, role: str = "system", **kw: Any) -> None:
    registry = ClientRegistry(database_url)
    try:
        registry.add(client_id, role, **kw)
    finally:
        registry.close()


def ask(
    c: TestClient | httpx.Client,
    assertion: str | None,
    scope: str | None = "system/*.rs",
    **more: str,
) -> httpx.Response:
    form = {"grant_type": "client_credentials", "scope": scope, **more}
    if assertion is not None:
        form |= {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    return c.post("/auth/token", data={k: v for k, v in form.items() if v is not None})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def oauth_error(r: httpx.Response, error: str, words: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["error"] == error, body
    assert words in body["error_description"], body


PATIENT = {"resourceType": "Patient", "name": [{"family": "Nguyễn", "given": ["An"]}]}
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "nhịp tim"},
    "subject": {"reference": "Patient/p1"},
}


# ---------------------------------------------------------------------------
# discovery


def test_discovery_documents_and_capability_statement(app_client: TestClient) -> None:
    c = app_client
    r = c.get("/.well-known/openid-configuration")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    oidc = r.json()
    assert oidc["issuer"] == ROOT
    assert oidc["token_endpoint"] == TOKEN_URL
    assert oidc["jwks_uri"] == f"{ROOT}/.well-known/jwks.json"
    assert oidc["grant_types_supported"] == ["client_credentials"]
    assert oidc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert {"RS384", "ES384"} <= set(oidc["token_endpoint_auth_signing_alg_values_supported"])
    assert "authorization_endpoint" not in oidc  # no web login
    published = c.get("/.well-known/jwks.json").json()["keys"]
    assert published and all(k["kty"] == "RSA" for k in published)

    # public: no token needed, plain JSON
    r = c.get("/fhir/.well-known/smart-configuration")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    smart = r.json()
    assert smart["token_endpoint"] == TOKEN_URL
    assert smart["jwks_uri"] == oidc["jwks_uri"]
    assert smart["grant_types_supported"] == ["client_credentials"]
    assert smart["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert {"RS384", "ES384"} <= set(smart["token_endpoint_auth_signing_alg_values_supported"])
    assert "system/*.rs" in smart["scopes_supported"]
    assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= set(
        smart["capabilities"]
    )
    assert "authorization_endpoint" not in smart and "launch-ehr" not in smart["capabilities"]

    security = c.get("/fhir/metadata").json()["rest"][0]["security"]
    coding = security["service"][0]["coding"][0]
    assert coding == {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR",
    }
    (oauth,) = [
        e
        for e in security["extension"]
        if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    ]
    assert oauth["extension"] == [{"url": "token", "valueUri": TOKEN_URL}]


def test_issuer_url_setting(sqlite_url: str) -> None:
    s = Settings.from_env({"LIENTHONG_ISSUER_URL": "https://xac-thuc.syt.vn/"})
    assert s.issuer() == "https://xac-thuc.syt.vn"
    assert Settings.from_env({"LIENTHONG_PORT": "9001"}).issuer() == "http://127.0.0.1:9001"
    # the former setting still names the issuer when it is not its former default
    assert Settings.from_env({"LIENTHONG_TOKEN_ISSUER": "https://a.vn"}).issuer() == "https://a.vn"
    with pytest.raises(ValueError, match="issuer_url must be an http"):
        Settings.from_env({"LIENTHONG_ISSUER_URL": "lienthong"})
    with TestClient(
        create_app(smart_settings(sqlite_url, issuer_url="https://xac-thuc.syt.vn"))
    ) as c:
        oidc = c.get("/.well-known/openid-configuration").json()
        assert oidc["issuer"] == "https://xac-thuc.syt.vn"
        assert oidc["token_endpoint"] == "https://xac-thuc.syt.vn/auth/token"
        smart = c.get("/fhir/.well-known/smart-configuration").json()
        assert smart["token_endpoint"] == "https://xac-thuc.syt.vn/auth/token"


def test_tokens_of_the_former_issuer_name_stay_valid(sqlite_url: str) -> None:
    settings = smart_settings(sqlite_url)
    users = UserDirectory(sqlite_url)
    user = users.add("bs-lan", "clinician", organization="org-1")
    users.close()
    auth = Authenticator(settings)
    old = TokenIssuer(sqlite_url, "lienthong", settings.token_audience)
    try:
        new = auth.issuer.issue(user, None, 60)
        assert jwt.decode(new, options={"verify_signature": False})["iss"] == ROOT
        assert auth.authenticate(f"Bearer {new}").name == "bs-lan"
        legacy = old.issue(user, None, 60)
        assert auth.authenticate(f"Bearer {legacy}").name == "bs-lan"
        other = TokenIssuer(sqlite_url, "https://other.vn", settings.token_audience)
        with pytest.raises(AuthError, match="wrong issuer"):
            auth.authenticate(f"Bearer {other.issue(user, None, 60)}")
        other.close()
    finally:
        old.close()
        auth.close()


# ---------------------------------------------------------------------------
# the flow, on SQLite and PostgreSQL


def test_backend_services_flow(
    app_client: TestClient, store_url: str, keys: dict[str, Key]
) -> None:
    c = app_client
    rs, es = keys["RS384"], keys["ES384"]
    register(store_url, "his-bvtw", organization="org-1", jwks=jwks(rs, es))

    r = ask(c, rs.assertion("his-bvtw"), "system/*.rs")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/*.rs"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == ROOT and claims["sub"] == claims["client_id"] == "his-bvtw"
    assert (claims["role"], claims["organization"]) == ("system", "org-1")
    assert claims["exp"] - claims["iat"] == 300
    reader = bearer(body["access_token"])
    assert c.get("/fhir/Patient", headers=reader).status_code == 200
    r = c.post("/fhir/Patient", json=PATIENT, headers=reader)
    assert r.status_code == 403 and "scopes do not allow create" in r.text

    # ES384, a scope for one type with every permission: writes that type only
    r = ask(c, es.assertion("his-bvtw"), "system/Patient.cruds")
    assert r.status_code == 200 and r.json()["scope"] == "system/Patient.cruds"
    writer = bearer(r.json()["access_token"])
    r = c.post("/fhir/Patient", json=PATIENT, headers=writer)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert c.get(f"/fhir/Patient/{pid}", headers=writer).status_code == 200
    r = c.post("/fhir/Observation", json=OBSERVATION, headers=writer)
    assert r.status_code == 403

    # SMART v1 scopes are granted as written and mean the same
    r = ask(c, rs.assertion("his-bvtw"), "system/*.read")
    assert r.status_code == 200 and r.json()["scope"] == "system/*.read"
    v1 = bearer(r.json()["access_token"])
    assert c.get(f"/fhir/Patient/{pid}", headers=v1).status_code == 200
    assert c.delete(f"/fhir/Patient/{pid}", headers=v1).status_code == 403

    # the token requests are in the audit trail, granted and refused
    ask(c, rs.assertion("his-bvtw", aud="https://elsewhere/token"))
    audit = AuditLog(store_url)
    try:
        records, _ = audit.search(user="his-bvtw", count=100)
        entries = [r.entry for r in reversed(records) if r.entry.action == "token"]
    finally:
        audit.close()
    assert [e.outcome for e in entries] == ["success", "success", "success", "denied"]
    assert {e.user for e in entries} == {"his-bvtw"}
    assert entries[0].on_behalf_of == "Organization/org-1"
    assert "aud must be the token endpoint" in (entries[-1].detail or "")


def test_removed_or_narrowed_client_loses_its_tokens(
    app_client: TestClient, store_url: str, keys: dict[str, Key]
) -> None:
    c, key = app_client, keys["ES256"]
    register(store_url, "lis-1", jwks=jwks(key))
    token = ask(c, key.assertion("lis-1"), "system/*.cruds").json()["access_token"]
    assert c.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    registry = ClientRegistry(store_url)
    try:
        assert registry.remove("lis-1")
        r = c.get("/fhir/Patient", headers=bearer(token))
        assert r.status_code == 401 and "unknown client" in r.text
        registry.add("lis-1", "system", jwks=jwks(key), scope="system/Observation.rs")
        r = c.get("/fhir/Patient", headers=bearer(token))
        assert r.status_code == 401 and "scopes changed" in r.text
        registry.remove("lis-1")
        registry.add("lis-1", "analyst", jwks=jwks(key))
        r = c.get("/fhir/Patient", headers=bearer(token))
        assert r.status_code == 401 and "role or organization changed" in r.text
    finally:
        registry.close()


def test_replayed_assertion_is_refused(
    app_client: TestClient, store_url: str, keys: dict[str, Key]
) -> None:
    c, key = app_client, keys["RS384"]
    register(store_url, "his-2", jwks=jwks(key))
    assertion = key.assertion("his-2")
    assert ask(c, assertion).status_code == 200
    oauth_error(ask(c, assertion), "invalid_client", "jti was already used")
    # the same jti from another client is that client's own
    register(store_url, "his-3", jwks=jwks(key))
    jti = jwt.decode(assertion, options={"verify_signature": False})["jti"]
    assert ask(c, key.assertion("his-3", jti=jti)).status_code == 200


# ---------------------------------------------------------------------------
# what is refused


def test_token_request_errors(sqlite_url: str, keys: dict[str, Key]) -> None:
    rs, es = keys["RS384"], keys["ES384"]
    register(sqlite_url, "his-1", organization="org-1", jwks=jwks(rs, es))
    register(sqlite_url, "lab-1", jwks=jwks(rs), scope="system/Observation.cruds system/Patient.r")
    stranger = Key("k-rs384", "RS384")  # same kid as the registered key, other key pair
    with TestClient(create_app(smart_settings(sqlite_url))) as c:
        r = c.post("/auth/token", json={"grant_type": "client_credentials"})
        oauth_error(r, "invalid_request", "application/x-www-form-urlencoded")
        r = c.post("/auth/token", data={"scope": "system/*.rs"})
        oauth_error(r, "invalid_request", "grant_type is required")
        r = ask(c, rs.assertion("his-1"), grant_type="authorization_code")
        assert r.json()["error"] == "unsupported_grant_type"
        r = c.post(
            "/auth/token",
            content="grant_type=client_credentials&grant_type=client_credentials",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        oauth_error(r, "invalid_request", "'grant_type' is given more than once")

        oauth_error(ask(c, None), "invalid_client", "client authentication is required")
        r = ask(c, None, client_assertion_type="urn:x", client_assertion=rs.assertion("his-1"))
        oauth_error(r, "invalid_client", "client_assertion_type must be")
        oauth_error(ask(c, "not-a-jwt"), "invalid_client", "not a signed JWT")
        oauth_error(ask(c, rs.assertion("nobody")), "invalid_client", "unknown client 'nobody'")
        r = ask(c, rs.assertion("his-1", sub="someone-else"))
        oauth_error(r, "invalid_client", "sub must equal iss")
        r = ask(c, rs.assertion("his-1"), client_id="lab-1")
        oauth_error(r, "invalid_client", "client_id does not match")
        r = ask(c, rs.assertion("his-1", aud="http://testserver/fhir"))
        oauth_error(
            r, "invalid_client", "aud must be the token endpoint http://testserver/auth/token"
        )
        oauth_error(ask(c, rs.assertion("his-1", exp_in=-120)), "invalid_client", "expired")
        r = ask(c, rs.assertion("his-1", exp_in=600))
        oauth_error(r, "invalid_client", "more than five minutes")
        r = ask(c, rs.assertion("his-1", jti=None))
        oauth_error(r, "invalid_client", "lacks required claim 'jti'")
        r = ask(c, rs.assertion("his-1", exp=None))
        oauth_error(r, "invalid_client", "lacks required claim 'exp'")
        r = ask(c, stranger.assertion("his-1"))
        oauth_error(r, "invalid_client", "signature does not verify")
        r = ask(c, rs.assertion("his-1", headers={"kid": "k-unknown"}))
        oauth_error(r, "invalid_client", "no key with kid 'k-unknown'")
        r = ask(c, rs.assertion("his-1", headers={"jku": "https://evil.example/jwks"}))
        oauth_error(r, "invalid_client", "jku is not the client's registered jwks_uri")
        hs = jwt.encode(
            {"iss": "his-1", "sub": "his-1", "aud": TOKEN_URL, "exp": int(time.time()) + 60},
            "a-shared-secret-of-at-least-32-bytes!",
            algorithm="HS256",
            headers={"kid": "k-rs384"},
        )
        oauth_error(ask(c, hs), "invalid_client", "algorithm 'HS256' not accepted")
        # an RS384 key named in an ES384 header
        es_header = es.assertion("his-1", headers={"kid": "k-rs384"})
        oauth_error(ask(c, es_header), "invalid_client", "cannot verify ES384")

        oauth_error(ask(c, rs.assertion("his-1"), None), "invalid_request", "scope is required")
        r = ask(c, rs.assertion("his-1"), "user/*.rs")
        oauth_error(r, "invalid_scope", "not a system scope")
        r = ask(c, rs.assertion("his-1"), "system/Observation.rs?category=laboratory")
        oauth_error(r, "invalid_scope", "search parameters are not supported")
        r = ask(c, rs.assertion("lab-1"), "system/Encounter.rs")
        oauth_error(r, "invalid_scope", "none of the scopes asked for")
        # asked for more than registered: narrowed to what the client may have
        r = ask(c, rs.assertion("lab-1"), "system/*.rs")
        assert (
            r.status_code == 200 and r.json()["scope"] == "system/Observation.rs system/Patient.r"
        )
        token = r.json()["access_token"]
        assert c.get("/fhir/Observation", headers=bearer(token)).status_code == 200
        assert c.get("/fhir/Patient", headers=bearer(token)).status_code == 403  # r, not s


def test_grant_scopes() -> None:
    assert grant_scopes("system/*.rs", "system/*.cruds") == "system/*.rs"
    assert grant_scopes("system/*.cruds", "system/*.rs") == "system/*.rs"
    assert grant_scopes("system/Patient.*", "system/*.rs") == "system/Patient.rs"
    assert grant_scopes("system/*.write", "system/*.cruds") == "system/*.write"
    assert grant_scopes("system/*.write system/*.rs", "system/*.rs") == "system/*.rs"
    with pytest.raises(ValueError, match="not a system scope"):
        grant_scopes("system/*.sr", "system/*.cruds")  # v2 letters come in order
    with pytest.raises(ValueError, match="none of the scopes"):
        grant_scopes("system/*.cud", "system/*.rs")


# ---------------------------------------------------------------------------
# a client's jwks_uri


class JwksServer:
    """A client's JWKS on a real HTTP server on 127.0.0.1; counts fetches, can stall."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.fetches = 0
        self.delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner.fetches += 1
                time.sleep(owner.delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, data: Any) -> None:
        self.body = json.dumps(data).encode()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    s = JwksServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.delay = 0
        s.server.shutdown()
        s.server.server_close()
        s.thread.join()


def test_jwks_uri_is_fetched_when_used_and_cached(
    sqlite_url: str, keys: dict[str, Key], jwks_server: JwksServer
) -> None:
    rs, es = keys["RS384"], keys["ES384"]
    register(sqlite_url, "his-url", jwks_uri=jwks_server.url)
    assert jwks_server.fetches == 0  # not fetched at registration
    settings = smart_settings(sqlite_url, client_jwks_max_bytes=4000, client_jwks_timeout=0.5)
    with TestClient(create_app(settings)) as c:
        oauth_error(ask(c, rs.assertion("his-url")), "invalid_client", "unusable JWKS")
        jwks_server.serve(jwks(rs))
        assert ask(c, rs.assertion("his-url")).status_code == 200
        fetched = jwks_server.fetches
        r = ask(c, rs.assertion("his-url", headers={"jku": jwks_server.url}))
        assert r.status_code == 200
        assert jwks_server.fetches == fetched  # cached
        # a kid the cached set lacks is not fetched again within the cooldown
        jwks_server.serve(jwks(rs, es))
        oauth_error(ask(c, es.assertion("his-url")), "invalid_client", "no key with kid 'k-es384'")
        assert jwks_server.fetches == fetched

    # a fresh server process: the key set is too big, then too slow
    register(sqlite_url, "his-big", jwks_uri=jwks_server.url)
    jwks_server.serve({"keys": [rs.jwk] * 20})
    with TestClient(create_app(settings)) as c:
        oauth_error(ask(c, rs.assertion("his-big")), "invalid_client", "over 4000 bytes")
        jwks_server.serve(jwks(rs))
        jwks_server.delay = 1.5
        oauth_error(
            ask(c, rs.assertion("his-big")), "invalid_client", "cannot fetch the client's JWKS"
        )


def test_jwks_fetcher_picks_up_a_rotated_key(keys: dict[str, Key], jwks_server: JwksServer) -> None:
    old, new = keys["RS256"], keys["ES256"]
    jwks_server.serve(jwks(old))
    fetcher = JwksFetcher(timeout=2, max_bytes=10_000, cache_seconds=300)
    fetcher.cooldown = 0.0
    assert fetcher.keys(jwks_server.url, old.kid)["keys"][0]["kid"] == old.kid
    assert fetcher.keys(jwks_server.url, old.kid) and jwks_server.fetches == 1
    jwks_server.serve(jwks(new))
    assert fetcher.keys(jwks_server.url, new.kid)["keys"][0]["kid"] == new.kid
    assert jwks_server.fetches == 2
    stale = JwksFetcher(timeout=2, max_bytes=10_000, cache_seconds=0)
    stale.keys(jwks_server.url, new.kid)
    stale.keys(jwks_server.url, new.kid)
    assert jwks_server.fetches == 4  # nothing reused once the cache time is over
    with pytest.raises(ClientKeyError, match="cannot fetch"):
        JwksFetcher(timeout=1, max_bytes=100, cache_seconds=1).keys("http://127.0.0.1:9/x", "k")


# ---------------------------------------------------------------------------
# registration and the command line


def test_client_registry_checks(store_url: str, keys: dict[str, Key]) -> None:
    registry = ClientRegistry(store_url)
    users = UserDirectory(store_url)
    try:
        good = jwks(keys["RS384"])
        client = registry.add("his-1", "system", "Organization/org-1", jwks=good)
        assert (client.organization, client.scope) == ("org-1", "system/*.cruds")
        assert registry.get("his-1") == client
        auditor = registry.add("kt-1", "auditor", jwks_uri="https://kt.example.vn/jwks.json")
        assert auditor.scope == "system/AuditEvent.rs" and auditor.jwks is None
        assert [c.client_id for c in registry.list()] == ["his-1", "kt-1"]
        private = {**keys["ES384"].jwk, "d": "secret"}
        for kwargs, message in [
            ({"client_id": "his-1", "role": "system", "jwks": good}, "already exists"),
            ({"client_id": "x", "role": "citizen", "jwks": good}, "role must be one of"),
            ({"client_id": "x", "role": "clinician", "jwks": good}, "needs an organization"),
            ({"client_id": "x y", "role": "system", "jwks": good}, "bad client id"),
            ({"client_id": "x", "role": "system"}, "a JWKS or a jwks_uri"),
            ({"client_id": "x", "role": "system", "jwks": {"keys": []}}, "not a JWKS"),
            ({"client_id": "x", "role": "system", "jwks": {"keys": [private]}}, "private key"),
            (
                {"client_id": "x", "role": "system", "jwks": {"keys": [{"kty": "RSA"}]}},
                "has no kid",
            ),
            (
                {"client_id": "x", "role": "system", "jwks_uri": "http://his.example.vn/j"},
                "https URL",
            ),
            (
                {"client_id": "x", "role": "system", "jwks": good, "scope": "user/*.rs"},
                "not a system scope",
            ),
        ]:
            with pytest.raises(ValueError, match=message):
                registry.add(**kwargs)
        # a name is a user's or a client's, never both
        users.add("bs-lan", "clinician", organization="org-1")
        with pytest.raises(ValueError, match="already a user's name"):
            registry.add("bs-lan", "system", jwks=good)
        with pytest.raises(ValueError, match="already a client's id"):
            users.add("his-1", "data_admin")
        assert registry.remove("kt-1") and not registry.remove("kt-1")
    finally:
        registry.close()
        users.close()


def test_cli_clients(sqlite_url: str, tmp_path: Path, keys: dict[str, Key]) -> None:
    app = typer.Typer()
    app.add_typer(client_app, name="client")
    app.add_typer(user_app, name="user")
    runner = CliRunner()
    db = ["--database", sqlite_url]

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.stdout, result.stderr

    keyfile = tmp_path / "his.jwks.json"
    keyfile.write_text(json.dumps(jwks(keys["RS384"], keys["ES384"])))
    code, out, err = run(
        "client", "add", "his-bvtw", "--role", "system", "--organization", "org-1",
        "--jwks", str(keyfile), *db,
    )  # fmt: skip
    # stderr says only which database the command opened
    said = f"database: {sqlite_url} (--database)\n"
    assert (code, err) == (0, said), err
    line = "his-bvtw\tsystem\torganization=org-1\tscope=system/*.cruds\tjwks=k-rs384,k-es384"
    assert out == f"added {line}\n"
    code, out, err = run(
        "client", "add", "lis-1", "--role", "analyst", "--jwks", "https://lis.example.vn/jwks",
        "--scope", "system/Observation.rs", *db,
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = run("client", "list", *db)
    assert out.splitlines() == [
        line,
        "lis-1\tanalyst\tscope=system/Observation.rs\tjwks_uri=https://lis.example.vn/jwks",
    ]
    (tmp_path / "bad.json").write_text("{not json")
    for args, message in [
        (("his-bvtw", "--role", "system", "--jwks", str(keyfile)), "already exists"),
        (("x", "--role", "system", "--jwks", str(tmp_path / "none.json")), "cannot read"),
        (("x", "--role", "system", "--jwks", str(tmp_path / "bad.json")), "is not JSON"),
        (("x", "--role", "wizard", "--jwks", str(keyfile)), "role must be one of"),
        (("x", "--role", "system", "--jwks", "http://lis.example.vn/j"), "https URL"),
    ]:
        code, out, err = run("client", "add", *args, *db)
        assert code == 1 and out == ""
        err = err.removeprefix(said)  # which database it opened, when it got that far
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    code, out, err = run("user", "add", "lis-1", "--role", "auditor", *db)
    assert code == 1 and "already a client's id" in err
    assert run("client", "remove", "lis-1", *db)[:2] == (0, "removed lis-1\n")
    assert run("client", "remove", "lis-1", *db) == (
        1,
        "",
        f"{said}error: unknown client 'lis-1'\n",
    )


# ---------------------------------------------------------------------------
# the real server


def test_live_server_backend_services(tmp_path: Path, keys: dict[str, Key]) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    key = keys["ES384"]
    register(url, "his-live", organization="org-1", jwks=jwks(key))
    env = {"LIENTHONG_DATABASE_URL": url, "LIENTHONG_AUTH": "on"}
    with live_server(env) as server, httpx.Client(base_url=server.root, timeout=10) as c:
        smart = c.get("/fhir/.well-known/smart-configuration").json()
        assert smart["token_endpoint"] == f"{server.root}/auth/token"
        oidc = c.get("/.well-known/openid-configuration").json()
        assert oidc["issuer"] == server.root
        assert c.get("/fhir/Patient").status_code == 401
        r = ask(c, key.assertion("his-live", aud=smart["token_endpoint"]), "system/*.cruds")
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == server.root
        r = c.post("/fhir/Patient", json=PATIENT, headers=bearer(token))
        assert r.status_code == 201, r.text
        r = c.get("/fhir/Patient", headers=bearer(token))
        assert r.status_code == 200 and r.json()["total"] == 1
        r = ask(c, key.assertion("his-live"), "system/*.rs")  # aud of another server
        oauth_error(r, "invalid_client", "aud must be the token endpoint")
