"""One typed settings object for the whole platform (environment prefix ``LIENTHONG_``).

Settings take the environment as a parameter so tests can pass a plain dict
instead of mutating ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./lienthong-data/lienthong.db"


class Settings(BaseSettings):
    """Runtime configuration; every field can be set as ``LIENTHONG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LIENTHONG_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="sqlite:///PATH (embedded default) or postgresql://USER@HOST:PORT/DB",
    )
    host: str = Field("127.0.0.1", description="address the HTTP server binds to")
    port: int = Field(8080, description="port the HTTP server listens on")
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

    auth: str = Field(
        "on", description="on: every request needs a bearer token; off: only on loopback"
    )
    token_issuer: str = Field("lienthong", description="iss of the tokens lienthong issues")
    token_audience: str = Field("lienthong", description="aud lienthong issues and expects")
    token_ttl: int = Field(3600, description="default lifetime of issued tokens, seconds")
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
    xml130_max_bytes: int = Field(
        512 * 1024 * 1024, description="largest hospital XML export accepted, bytes"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (defaults to the process environment)."""
        source = os.environ if env is None else env
        values = {
            name: source[f"LIENTHONG_{name.upper()}"]
            for name in cls.model_fields
            if f"LIENTHONG_{name.upper()}" in source
        }
        return cls.model_validate(values)

    def sqlite_path(self) -> Path | None:
        """The SQLite file path when the database URL is a ``sqlite://`` one."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///") :])
        return None
