"""What an operator watches: health probes, Prometheus metrics, request logs, offline docs.

- ``GET /health/live``: the process answers (always 200 while it does).
- ``GET /health/ready``: the store answers a trivial query (and records the schema this
  release expects, where the store records one): 200, else 503. Neither needs a token.
- ``GET /metrics``: Prometheus text format, ``lienthong_*`` series. Open to loopback
  clients that no proxy forwards for; from anywhere else it needs
  ``Authorization: Bearer $LIENTHONG_METRICS_TOKEN`` (403 when no token is configured).
- Every HTTP request gets an id (a sane incoming ``X-Request-ID``, else a new one), echoed
  in the response's ``X-Request-ID`` and written on its log line (``lienthong.request``) with
  the route template, the query's parameter names (never their values), status and duration.
- ``/docs`` (Swagger UI) and ``/redoc`` from assets installed with the package
  ``fastapi-offline``, so the API's documentation works without the internet.

``lienthong serve`` runs one process, so the metrics live in that process's memory; a
deployment with several processes would need prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lienthong import __version__
from lienthong.fhir.errors import FhirError, Issue, error
from lienthong.fhir.validate import is_resource_type
from lienthong.server.logs import request_id_var
from lienthong.settings import Settings
from lienthong.storage.migrations import latest as latest_schema

log = logging.getLogger("lienthong.server.observability")
request_log = logging.getLogger("lienthong.request")

HEALTH_LIVE, HEALTH_READY, METRICS_PATH = "/health/live", "/health/ready", "/metrics"
DOCS_ASSETS = "/docs-assets"
#: Seconds the readiness probe waits for the store before it answers 503.
READY_TIMEOUT = 5.0
#: An incoming X-Request-ID is kept when it is this shape, else a new id is made.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: A query parameter's name is logged when it is this shape (``name:contains``,
#: ``subject:Patient.name``, ``_count``); any other name is logged as ``?``.
_SANE_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}")
_FORWARDING_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNMATCHED = "(unmatched)"
#: Routes whose request lines are logged at DEBUG: probes and scrapes come every few seconds.
_QUIET_ROUTES = frozenset({HEALTH_LIVE, HEALTH_READY, METRICS_PATH})


# -- request ids, route templates, redacted queries ------------------------------------


def request_id(incoming: str | None) -> str:
    """The id a request is known by: the client's ``X-Request-ID`` when sane, else new."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (``/fhir/{res_type}/{res_id}``),
    never the path itself, which carries ids."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


def redacted_query(query: bytes | str) -> str | None:
    """The query's parameter names with every value replaced by ``*``: searches carry
    CCCD numbers, names and birth dates in their values."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if not text:
        return None
    names = [
        (name if _SANE_PARAM.fullmatch(name) else "?")
        for name, _ in parse_qsl(text, keep_blank_values=True)
    ]
    return "&".join(f"{name}=*" for name in names) or "?"


def _resource_type(scope: Scope) -> str:
    res_type = (scope.get("path_params") or {}).get("res_type")
    return res_type if isinstance(res_type, str) and is_resource_type(res_type) else ""


# -- metrics -----------------------------------------------------------------------------


class StoreCollector(Collector):
    """Figures read from the store at scrape time, each one indexed row or count: the
    audit chain's length (its head's sequence number) and the person index's review list."""

    def __init__(self, holder: dict[str, Any], settings: Settings) -> None:
        self.holder = holder
        self.settings = settings

    def collect(self) -> Any:
        gate, engine = self.holder.get("gate"), self.holder.get("engine")
        if gate is not None:
            try:
                seq, _ = gate.audit.head()
            except Exception:  # a scrape reports what it can; readiness reports the store
                log.debug("audit head unreadable", exc_info=True)
            else:
                yield GaugeMetricFamily(
                    "lienthong_audit_chain_length", "entries in the audit chain", value=seq
                )
        if engine is not None and self.settings.mpi:
            from lienthong.identity.mpi import pending_review_count

            try:
                with engine.store.reader() as session:
                    pending = pending_review_count(session)
            except Exception:
                log.debug("review list unreadable", exc_info=True)
            else:
                yield GaugeMetricFamily(
                    "lienthong_mpi_review_pending",
                    "record pairs waiting on the person index's review list",
                    value=pending,
                )


@dataclass
class Metrics:
    """One app's metrics, in a registry of its own (several apps may live in one process)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_progress: Gauge

    @classmethod
    def create(cls, holder: dict[str, Any], settings: Settings) -> Metrics:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        Gauge(
            "lienthong_build_info",
            "the running lienthong release",
            ["version"],
            registry=registry,
        ).labels(__version__).set(1)
        registry.register(StoreCollector(holder, settings))
        return cls(
            registry,
            Counter(
                "lienthong_http_requests",
                "HTTP requests answered, by method, route template, resource type and status",
                ["method", "route", "resource_type", "status"],
                registry=registry,
            ),
            Histogram(
                "lienthong_http_request_duration_seconds",
                "time from a request's arrival to the end of its response",
                ["method", "route"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            Gauge(
                "lienthong_http_requests_in_progress",
                "HTTP requests being served now",
                registry=registry,
            ),
        )


def _is_local(scope: Scope) -> bool:
    """A loopback peer speaking for itself: no proxy's forwarding headers on the request."""
    client = scope.get("client")
    try:
        loopback = client is not None and ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False
    headers = {name for name, _ in scope.get("headers", [])}
    return loopback and not headers.intersection(_FORWARDING_HEADERS)


def check_scrape(request: Request, token: str | None) -> None:
    """Let a scrape through, or raise the 401/403 it gets."""
    if _is_local(request.scope):
        return
    if not token:
        raise error(
            403,
            "forbidden",
            "metrics are served to loopback clients only; set LIENTHONG_METRICS_TOKEN to "
            "let a scraper elsewhere in with it",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        err = FhirError(401, [Issue("login", "metrics need the scrape token (Bearer)")])
        err.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        raise err


# -- the request middleware --------------------------------------------------------------


class RequestObserver:
    """Give each HTTP request its id, count and time it, and write its log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"),
            None,
        )
        rid = request_id(incoming)
        reset = request_id_var.set(rid)
        status = 500  # unless a response starts: an exception escaped the app
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            route, method = route_template(scope), str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, _resource_type(scope), str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            level = (
                logging.ERROR
                if status >= 500
                else logging.DEBUG
                if route in _QUIET_ROUTES
                else logging.INFO
            )
            request_log.log(
                level,
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "request_id": rid,
                    "method": method,
                    "route": route,
                    "query": redacted_query(scope.get("query_string", b"")),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(reset)


# -- health ------------------------------------------------------------------------------


def _store_checks(holder: dict[str, Any]) -> dict[str, str]:
    engine = holder.get("engine")
    if engine is None:
        return {"store": "unavailable: not started", "schema": "unknown"}
    store = engine.store
    try:
        with store.reader() as session:
            session.read("Patient", "health-check")  # one primary-key look-up
    except Exception as exc:
        return {"store": f"unavailable: {type(exc).__name__}", "schema": "unknown"}
    recorded = getattr(store, "schema_version", None)
    if callable(recorded) or isinstance(recorded, int):
        try:
            found = recorded() if callable(recorded) else recorded
        except Exception as exc:
            return {"store": "ok", "schema": f"unavailable: {type(exc).__name__}"}
        expected = latest_schema()
        if found != expected:
            return {
                "store": "ok",
                "schema": f"unexpected: version {found}, this release expects {expected}",
            }
        return {"store": "ok", "schema": "ok"}
    return {"store": "ok", "schema": "not recorded by this store"}


async def readiness(holder: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """200 and the checks when the store answers in time, else 503 and why not."""
    try:
        checks = await asyncio.wait_for(
            run_in_threadpool(_store_checks, holder), timeout=READY_TIMEOUT
        )
    except TimeoutError:
        waited = f"unavailable: no answer within {READY_TIMEOUT:g} s"
        checks = {"store": waited, "schema": "unknown"}
    ok = all(v == "ok" or v.startswith("not recorded") for v in checks.values())
    return (200 if ok else 503), {"status": "ok" if ok else "unavailable", "checks": checks}


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


# -- wiring ------------------------------------------------------------------------------


def docs_assets() -> Path:
    """Where the installed Swagger UI and ReDoc files are."""
    return Path(str(files("fastapi_offline").joinpath("static")))


def install(app: FastAPI, settings: Settings, holder: dict[str, Any]) -> None:
    """Add the probes, the metrics, the request middleware and the offline docs to ``app``
    (created with ``docs_url=None, redoc_url=None``); ``holder`` is where the app keeps its
    engine and gate once its lifespan has started."""
    metrics = Metrics.create(holder, settings)
    app.state.metrics = metrics
    app.add_middleware(RequestObserver, metrics=metrics)
    token = settings.metrics_token

    @app.get(HEALTH_LIVE, include_in_schema=False)
    def live() -> Response:
        return _json(200, {"status": "ok", "checks": {"process": "ok"}})

    @app.get(HEALTH_READY, include_in_schema=False)
    async def ready() -> Response:
        status, body = await readiness(holder)
        return _json(status, body)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def scrape(request: Request) -> Response:
        check_scrape(request, token)
        text = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=f"{root}{redirect_url}",
        )

    @app.get(redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
