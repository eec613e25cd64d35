"""One typed settings object for the whole platform (environment prefix ``LIENTHONG_``).

Settings come from the environment and, under it, from a settings file: ``lienthong.toml``
in the working directory (or the file ``LIENTHONG_CONFIG`` names), the fields by their
names (``database_url = "sqlite:///..."``); ``lienthong demo`` writes one so that the
commands run after it open the demo's database. Settings take the environment as a
parameter so tests can pass a plain dict instead of mutating ``os.environ``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./lienthong-data/lienthong.db"
#: The ``iss`` of lienthong's tokens before it became a URL.
LEGACY_ISSUER = "lienthong"
TOKEN_PATH = "/auth/token"
"""Where the token endpoint is served, below the issuer's root."""
CONFIG_FILE = "lienthong.toml"
"""The settings file read from the working directory when ``LIENTHONG_CONFIG`` is unset."""


class Settings(BaseSettings):
    """Runtime configuration; every field can be set as ``LIENTHONG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LIENTHONG_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="sqlite:///PATH (embedded default) or postgresql://USER@HOST:PORT/DB",
    )
    host: str = Field("127.0.0.1", description="address the HTTP server binds to")
    port: int = Field(8080, description="port the HTTP server listens on")
    workers: int = Field(
        1, ge=1, description="server processes `lienthong serve` runs (one listening socket)"
    )
    threads: int = Field(
        40, ge=1, description="interactions one server process runs at once; the rest queue"
    )
    base_url: str | None = Field(
        None,
        description="public base URL of the FHIR API (default http://HOST:PORT/fhir); "
        "a trusted proxy's forwarding headers take precedence",
    )
    trusted_proxies: str = Field(
        "",
        description="comma-separated IP addresses and CIDR networks of reverse proxies whose "
        "Forwarded / X-Forwarded-* headers are believed (none: such headers are ignored)",
    )
    default_page_size: int = Field(50, description="search page size when _count is not given")
    max_page_size: int = Field(1000, description="largest _count honoured")
    paging_max_ids: int = Field(
        10000,
        ge=1,
        description="results a search or history keeps in its paging snapshot; pages past "
        "them are read from the live data again",
    )
    paging_ttl: int = Field(
        3600, ge=1, description="seconds a paging snapshot stays valid after the search made it"
    )
    import_batch_size: int = Field(1000, description="resources per all-or-nothing import batch")
    pg_pool_size: int = Field(8, description="PostgreSQL connection pool size")
    mpi: bool = Field(
        True,
        description="resolve every Patient written, by any door, to a person (master "
        "person index): master Patients are then stored beside the source records",
    )
    mpi_model: str | None = Field(
        None, description="linkage model JSON the person index scores with (default: shipped)"
    )

    mpi_candidate_cap: int = Field(
        200,
        ge=1,
        description="most records the person index scores against one Patient written "
        "(those sharing the most blocking keys first)",
    )

    auth: str = Field(
        "on", description="on: every request needs a bearer token; off: only on loopback"
    )
    issuer_url: str | None = Field(
        None,
        description="http(s) URL of lienthong's token issuer: the iss of its tokens, where its "
        "discovery document, keys and token endpoint are (default: base URL without /fhir)",
    )
    token_issuer: str = Field(
        LEGACY_ISSUER,
        description="former name of issuer_url, used when that is unset and this is not "
        f"{LEGACY_ISSUER!r} (its former default; tokens with that iss stay valid)",
    )
    token_audience: str = Field("lienthong", description="aud lienthong issues and expects")
    token_ttl: int = Field(3600, description="default lifetime of issued tokens, seconds")
    client_token_ttl: int = Field(
        300, description="lifetime of the tokens the token endpoint gives clients, seconds"
    )
    client_jwks_max_bytes: int = Field(
        64 * 1024, description="largest JWKS fetched from a client's jwks_uri, bytes"
    )
    client_jwks_timeout: float = Field(5.0, description="seconds to wait for a client's jwks_uri")
    client_jwks_cache_seconds: int = Field(
        300, description="how long a JWKS fetched from a client's jwks_uri is reused"
    )
    oidc_issuer: str | None = Field(None, description="external OpenID Connect issuer to trust")
    oidc_audience: str | None = Field(None, description="aud expected in external tokens")
    oidc_jwks_url: str | None = Field(
        None, description="JWKS of the external issuer (default: from its discovery document)"
    )
    treatment_window_days: int = Field(
        30, description="days after an encounter ends during which its clinicians may read"
    )
    alert_window_seconds: int = Field(600, description="sliding window of the alert rules")
    alert_max_patients: int = Field(
        50, description="distinct patients one user may read in the window before an alert"
    )
    alert_max_denials: int = Field(
        5, description="denials of one user in the window before an alert"
    )
    alert_quiet_hours: str = Field(
        "22-06", description="local hours (start-end) when any access raises an alert"
    )
    timezone: str = Field("Asia/Ho_Chi_Minh", description="time zone of quiet hours")
    audit_key: str | None = Field(
        None,
        description="secret that signs the audit chain's head (kept outside the database)",
        repr=False,
    )
    body_max_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="largest FHIR request body accepted, bytes: the limit of Binary content "
        "and the ceiling of the limits below",
    )
    bundle_max_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="largest batch or transaction Bundle accepted, bytes"
    )
    resource_max_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description="largest body of a resource (other than Binary) or operation, bytes",
    )
    string_max_chars: int = Field(
        1024 * 1024,
        ge=1,
        description="longest JSON string (or object key) in a body, characters; base64 "
        "data elements are bounded by the body size only",
    )
    array_max_items: int = Field(
        10_000, ge=1, description="most items of one JSON array in a body (Bundle.entry aside)"
    )
    json_max_depth: int = Field(
        64, ge=2, le=512, description="deepest nesting of JSON objects and arrays in a body"
    )
    bundle_max_entries: int = Field(
        10_000, ge=1, description="most entries of a batch or transaction Bundle"
    )
    response_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="largest batch or transaction response, bytes: a batch's entries beyond "
        "it answer 413, a transaction that would exceed it is refused whole",
    )
    url_max_chars: int = Field(
        64 * 1024, ge=256, description="longest request URL (path and query), characters"
    )
    xml130_max_bytes: int = Field(
        512 * 1024 * 1024, description="largest hospital XML export accepted, bytes"
    )
    metrics_token: str | None = Field(
        None,
        description="bearer token a Prometheus scraper off loopback must send to /metrics "
        "(unset: /metrics answers loopback clients only)",
        repr=False,
    )
    log_format: str = Field(
        "json", description="json: one JSON object per log line; text: lines for a terminal"
    )
    log_level: str = Field("info", description="least severe log level written")

    @field_validator("issuer_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"issuer_url must be an http(s) URL without query or fragment, got {value!r}"
            )
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.lower() not in ("json", "text"):
            raise ValueError(f"log_format must be json or text, got {value!r}")
        return value.lower()

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(
                f"log_level must be debug, info, warning, error or critical, got {value!r}"
            )
        return value.lower()

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (defaults to the process environment) over the
        settings file: the one ``LIENTHONG_CONFIG`` names, else, with the process
        environment only, ``./lienthong.toml`` when there is one.

        Raises ValueError naming the file and the setting for an unreadable file, an
        unknown setting or a bad value."""
        source = os.environ if env is None else env
        named = source.get("LIENTHONG_CONFIG")
        path = Path(named) if named else Path(CONFIG_FILE) if env is None else None
        values: dict[str, object] = {}
        origins: dict[str, str] = {}
        if path is not None and (named or path.is_file()):
            values = _read_file(path, set(cls.model_fields))
            origins = dict.fromkeys(values, str(path))
        for name in cls.model_fields:
            if f"LIENTHONG_{name.upper()}" in source:
                values[name] = source[f"LIENTHONG_{name.upper()}"]
                origins[name] = f"LIENTHONG_{name.upper()}"
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{e['loc'][0]} (from {origins.get(str(e['loc'][0]), 'default')}): {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(f"settings: {problems}") from None
        settings._origins = origins
        return settings

    def origin(self, name: str) -> str:
        """Where setting ``name`` came from: ``LIENTHONG_<NAME>``, the settings file's
        path, or "default" (a value given in code, e.g. ``--database``, says nothing)."""
        return self._origins.get(name, "default")

    def public_root(self) -> str:
        """The server's public root URL: the FHIR base URL without its ``/fhir``."""
        base = (self.base_url or f"http://{self.host}:{self.port}/fhir").rstrip("/")
        return base[: -len("/fhir")] if base.endswith("/fhir") else base

    def issuer(self) -> str:
        """The ``iss`` of the tokens lienthong issues: ``LIENTHONG_ISSUER_URL``, else a
        ``LIENTHONG_TOKEN_ISSUER`` other than the former default, else :meth:`public_root`
        (so ``{issuer}/.well-known/openid-configuration`` is served by this server)."""
        if self.issuer_url:
            return self.issuer_url.rstrip("/")
        if self.token_issuer and self.token_issuer != LEGACY_ISSUER:
            return self.token_issuer
        return self.public_root()

    def auth_root(self) -> str:
        """Where the issuer's endpoints are: the issuer when it is an http(s) URL."""
        issuer = self.issuer()
        return issuer if issuer.startswith(("http://", "https://")) else self.public_root()

    def token_endpoint(self) -> str:
        """The OAuth 2 token endpoint (SMART Backend Services) this server answers."""
        return self.auth_root() + TOKEN_PATH

    def sqlite_path(self) -> Path | None:
        """The SQLite file path when the database URL is a ``sqlite://`` one."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///") :])
        return None


def _read_file(path: Path, known: set[str]) -> dict[str, object]:
    """The settings of a TOML settings file; ValueError naming the file and the reason."""
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"settings file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"settings file {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"settings file {path}: unknown setting {', '.join(map(repr, unknown))} "
            "(settings are named as the Settings fields, e.g. database_url)"
        )
    return values
