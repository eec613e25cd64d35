"""The ASGI app: thin routes that turn HTTP into engine calls and back.

Everything FHIR lives in :mod:`lienthong.fhir`; this module only reads
headers (``Prefer``, ``If-Match``, ``If-None-Exist``, ``If-None-Match``),
parses bodies and renders :class:`FhirResponse` and :class:`FhirError` as
``application/fhir+json`` (https://hl7.org/fhir/R4/http.html), or a Binary's
raw content under its own type. One dependency answers 406 for any FHIR request
asking for a format the server cannot produce (``formats.negotiate``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lienthong import __version__
from lienthong.access import audit_views, smart
from lienthong.access.auth import AuthError
from lienthong.access.gate import AccessGate, auth_is_off, run_audited
from lienthong.access.policy import AccessContext
from lienthong.fhir.engine import FHIR_JSON, FhirEngine, FhirResponse, load_json
from lienthong.fhir.errors import FhirError, Issue, bad_request, error, not_found
from lienthong.fhir.interactions import binary as binary_mod
from lienthong.fhir.interactions import create as create_mod
from lienthong.fhir.interactions import delete as delete_mod
from lienthong.fhir.interactions import formats
from lienthong.fhir.interactions import match as match_mod
from lienthong.fhir.interactions import merge as merge_mod
from lienthong.fhir.interactions import terminology as terminology_ops
from lienthong.fhir.interactions import update as update_mod
from lienthong.fhir.interactions.capabilities import capability_statement
from lienthong.fhir.interactions.everything import everything
from lienthong.fhir.interactions.history import history
from lienthong.fhir.interactions.read import read, vread
from lienthong.fhir.interactions.search import search, search_compartment, search_system
from lienthong.fhir.interactions.transaction import process_bundle
from lienthong.fhir.interactions.versions import versions
from lienthong.fhir.limits import Limits
from lienthong.fhir.shaping import shape_one
from lienthong.fhir.validate import is_resource_type
from lienthong.ingest.xml130 import ingest as xml130_ingest
from lienthong.server import limits, observability
from lienthong.server.proxy import Addressing
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore, open_store
from lienthong.storage.sql import ConcurrentUpdate

log = logging.getLogger("lienthong.server")
LARGE_BODY = 256 * 1024  # bodies parsed off the event loop
ACCEPTED_BODY_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def render(resp: FhirResponse) -> Response:
    body = resp.body
    if body is None:
        content = b""
    elif isinstance(body, bytes):
        content = body
    else:
        content = orjson.dumps(body)
    media = FHIR_JSON if body is not None else None
    return Response(content, status_code=resp.status, headers=resp.headers, media_type=media)


def render_error(err: FhirError) -> Response:
    return Response(
        orjson.dumps(err.outcome()),
        status_code=err.status,
        headers=err.headers,
        media_type=FHIR_JSON,
    )


def _prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


async def _read_body(request: Request, kind: str = "resource") -> bytes:
    return await limits.read_body(request, kind)


async def _body(
    request: Request, res_type: str | None = None, res_id: str | None = None, kind: str = ""
) -> Any:
    header = request.headers.get("content-type", "")
    kind = kind or ("binary" if res_type == "Binary" else "resource")
    if res_type == "Binary" and binary_mod.is_raw_upload(header):
        security = request.headers.get("x-security-context")
        return binary_mod.from_upload(await _read_body(request, kind), header, security, res_id)
    ctype = header.split(";")[0].strip().lower()
    if ctype and ctype not in ACCEPTED_BODY_TYPES:
        raise error(
            415,
            "not-supported",
            f"content type {ctype!r} is not supported; send application/fhir+json",
        )
    raw = await _read_body(request, kind)
    if not raw.strip():
        raise bad_request("the request has no body")
    if len(raw) > LARGE_BODY:  # parsing megabytes here would hold up every other request
        return await run_in_threadpool(_parse_checked, request, raw)
    return _parse_checked(request, raw)


def _parse_checked(request: Request, raw: bytes) -> Any:
    """The body's JSON, once it is within the shape limits."""
    document = load_json(raw)
    limits.check_json(request, document)
    return document


_RESOURCE_READS = ("/fhir/{res_type}/{res_id}", "/fhir/{res_type}/{res_id}/_history/{version}")


def _negotiate(request: Request) -> None:
    """406 for a FHIR request asking (``_format``, Accept) for what the server cannot
    produce; a Binary read is left to its interaction, which may answer raw content."""
    if not request.url.path.startswith("/fhir"):
        return
    route = getattr(request.scope.get("route"), "path", None)
    if route in _RESOURCE_READS and request.path_params.get("res_type") == "Binary":
        return
    formats.negotiate(request.headers.get("accept"), request.query_params.get("_format"))


async def _search_form(request: Request) -> list[tuple[str, str]]:
    """The parameters of a POST ``_search``: the URL's and the form body's."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/x-www-form-urlencoded":
        raise error(415, "not-supported", "POST _search takes application/x-www-form-urlencoded")
    form = parse_qsl((await _read_body(request)).decode(), keep_blank_values=True)
    return _params(request) + form


def _check_type(res_type: str) -> None:
    if not is_resource_type(res_type):
        raise not_found(f"unknown resource type {res_type!r}")


def create_app(settings: Settings | None = None, store: ResourceStore | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.base_url is None:
        settings = settings.model_copy(
            update={"base_url": f"http://{settings.host}:{settings.port}/fhir"}
        )
    if auth_is_off(settings):
        log.warning(
            "AUTHENTICATION IS OFF: every request acts as the local operator with full "
            "access (allowed only because the server is bound to %s)",
            settings.host,
        )
    holder: dict[str, Any] = {}
    addressing = Addressing(settings.base_url or "", settings.trusted_proxies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        the_store = store or open_store(settings.database_url, settings.pg_pool_size)
        engine = FhirEngine(the_store, settings)
        holder["engine"] = engine
        holder["gate"] = AccessGate(settings, engine)
        try:
            yield
        finally:
            holder["gate"].close()
            if own:
                the_store.close()

    app = FastAPI(
        title="lienthong",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served from installed assets by observability.install
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(_negotiate)],
    )
    limits.install(app, Limits.from_settings(settings))
    observability.install(app, settings, holder)

    def gate() -> AccessGate:
        gate_: AccessGate = holder["gate"]
        return gate_

    @app.exception_handler(FhirError)
    async def on_fhir_error(request: Request, exc: FhirError) -> Response:
        return render_error(exc)

    @app.exception_handler(AuthError)
    async def on_auth_error(request: Request, exc: AuthError) -> Response:
        err = FhirError(exc.status, [Issue("login", str(exc))])
        err.headers["WWW-Authenticate"] = exc.www_authenticate()
        return render_error(err)

    @app.exception_handler(ConcurrentUpdate)
    async def on_conflict(request: Request, exc: ConcurrentUpdate) -> Response:
        return render_error(error(409, "conflict", str(exc)))

    @app.exception_handler(sqlite3.IntegrityError)
    @app.exception_handler(psycopg.errors.UniqueViolation)
    async def on_integrity(request: Request, exc: Exception) -> Response:
        return render_error(error(409, "conflict", "the resource was created by another request"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return render_error(FhirError(exc.status_code, [Issue(code, message)]))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        return render_error(bad_request(str(exc)))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return render_error(error(500, "exception", f"internal error: {type(exc).__name__}"))

    async def audited(
        request: Request,
        action: str,
        res_type: str | None,
        res_id: str | None,
        fn: Callable[[FhirEngine, AccessContext], Any],
    ) -> Response:
        """Run an interaction for the request's user through the gate, off the event loop."""
        source_ip, base = addressing.client(request), addressing.base_url(request)
        result = await run_in_threadpool(
            run_audited,
            gate(),
            request.headers,
            source_ip,
            action,
            res_type,
            res_id,
            request.url.query,
            lambda eng, ctx: fn(eng.with_base_url(base), ctx),
        )
        assert isinstance(result, FhirResponse)
        return render(result)

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> Response:
        base = addressing.base_url(request)
        return Response(
            orjson.dumps({"name": "lienthong", "version": __version__, "fhir": base}),
            media_type="application/json",
        )

    @app.get("/.well-known/jwks.json", include_in_schema=False)
    def jwks() -> Response:
        authenticator = gate().authenticator
        keys = authenticator.issuer.jwks() if authenticator is not None else {"keys": []}
        return Response(orjson.dumps(keys), media_type="application/json")

    @app.get("/.well-known/openid-configuration", include_in_schema=False)
    def openid_configuration() -> Response:
        document = smart.openid_configuration(settings)
        return Response(orjson.dumps(document), media_type="application/json")

    @app.post(smart.TOKEN_PATH, include_in_schema=False)
    async def token(request: Request) -> Response:
        source_ip = request.client.host if request.client else None
        ctype, body = request.headers.get("content-type", ""), await request.body()
        got = await run_in_threadpool(gate().tokens.respond, ctype, body, source_ip)
        return Response(
            orjson.dumps(got.body), got.status, got.headers, media_type="application/json"
        )

    @app.get("/fhir/.well-known/smart-configuration", include_in_schema=False)
    def smart_configuration() -> Response:
        document = smart.smart_configuration(settings)
        return Response(orjson.dumps(document), media_type="application/json")

    @app.get("/fhir/metadata")
    def metadata(request: Request) -> Response:
        e: FhirEngine = holder["engine"]
        base = addressing.base_url(request)
        token_url = smart.token_endpoint(settings)
        statement = capability_statement(base, e.registry, e.extractor, token_url)
        q = request.query_params
        shaped = shape_one(orjson.dumps(statement), q.get("_summary"), q.get("_elements"))
        return render(FhirResponse(200, shaped))

    @app.get("/fhir/$versions")
    def versions_route() -> Response:
        return render(versions())

    @app.post("/fhir")
    async def bundle(request: Request) -> Response:
        body = await _body(request, kind="bundle")
        prefer = _prefer(request).get("return")
        kind = body.get("type") if isinstance(body, dict) else None
        return await audited(
            request,
            str(kind or "batch"),
            None,
            None,
            lambda eng, ctx: process_bundle(eng, body, prefer),
        )

    @app.get("/fhir")
    @app.post("/fhir/_search")
    async def system_search(request: Request) -> Response:
        params = await _search_form(request) if request.method == "POST" else _params(request)
        strict = _prefer(request).get("handling") == "strict"
        return await audited(
            request,
            "search-system",
            None,
            None,
            lambda eng, ctx: search_system(eng, params, strict),
        )

    @app.get("/fhir/_history")
    async def system_history(request: Request) -> Response:
        params = _params(request)
        return await audited(
            request,
            "history-system",
            None,
            None,
            lambda eng, ctx: history(eng, None, None, params),
        )

    @app.get("/fhir/AuditEvent")
    async def audit_search(request: Request) -> Response:
        params = _params(request)
        return await audited(
            request,
            "search-type",
            "AuditEvent",
            None,
            lambda eng, ctx: audit_views.search(gate(), eng, ctx, params),
        )

    @app.get("/fhir/AuditEvent/{res_id}")
    async def audit_read(res_id: str, request: Request) -> Response:
        return await audited(
            request,
            "read",
            "AuditEvent",
            res_id,
            lambda eng, ctx: audit_views.read(gate(), eng, ctx, res_id),
        )

    @app.get("/api/alerts")
    async def alerts(request: Request) -> Response:
        params = dict(_params(request))
        return await audited(
            request,
            "operation:alerts",
            None,
            None,
            lambda eng, ctx: audit_views.alerts(gate(), ctx, params),
        )

    @app.post("/xml130")
    async def xml130_submit(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype not in ("application/xml", "text/xml", "application/octet-stream"):
            raise error(415, "not-supported", f"send the export as application/xml, not {ctype}")
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > settings.xml130_max_bytes:
                raise error(
                    413,
                    "too-costly",
                    f"the export is over {settings.xml130_max_bytes:,} bytes "
                    "(LIENTHONG_XML130_MAX_BYTES)",
                )
        body = bytes(raw)
        strict_param = request.query_params.get("strict", "false").strip().lower()
        if strict_param not in ("true", "false"):
            raise error(400, "invalid", f"strict: {strict_param!r} is not true or false")
        strict = strict_param == "true"  # refuse visits with conformance problems too
        return await audited(
            request,
            "xml130-ingest",
            None,
            None,
            lambda eng, ctx: xml130_ingest.submit(
                eng, ctx, body, settings.xml130_max_bytes, strict=strict
            ),
        )

    @app.get("/fhir/CodeSystem/$lookup")
    @app.post("/fhir/CodeSystem/$lookup")
    async def codesystem_lookup(request: Request) -> Response:
        params = _params(request)
        body = await _body(request) if request.method == "POST" else None
        return await audited(
            request,
            "operation:$lookup",
            "CodeSystem",
            None,
            lambda eng, ctx: terminology_ops.lookup(eng, params, body),
        )

    @app.get("/fhir/ValueSet/$validate-code")
    @app.post("/fhir/ValueSet/$validate-code")
    async def valueset_validate_code(request: Request) -> Response:
        params = _params(request)
        body = await _body(request) if request.method == "POST" else None
        return await audited(
            request,
            "operation:$validate-code",
            "ValueSet",
            None,
            lambda eng, ctx: terminology_ops.validate_code(eng, params, body),
        )

    @app.get("/fhir/{res_type}")
    async def search_type(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        strict = _prefer(request).get("handling") == "strict"
        params = _params(request)
        return await audited(
            request,
            "search-type",
            res_type,
            None,
            lambda eng, ctx: search(eng, res_type, params, strict),
        )

    @app.post("/fhir/{res_type}/_search")
    async def search_post(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise error(
                415, "not-supported", "POST _search takes application/x-www-form-urlencoded"
            )
        form = parse_qsl((await _read_body(request)).decode(), keep_blank_values=True)
        params = _params(request) + form
        strict = _prefer(request).get("handling") == "strict"
        return await audited(
            request,
            "search-type",
            res_type,
            None,
            lambda eng, ctx: search(eng, res_type, params, strict),
        )

    @app.post("/fhir/{res_type}")
    async def create(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        body = await _body(request, res_type)
        if_none_exist = request.headers.get("if-none-exist")
        prefer = _prefer(request).get("return")
        return await audited(
            request,
            "create",
            res_type,
            None,
            lambda eng, ctx: create_mod.create(eng, res_type, body, if_none_exist, prefer),
        )

    @app.put("/fhir/{res_type}")
    async def conditional_update(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        body = await _body(request, res_type)
        query, if_match = request.url.query, request.headers.get("if-match")
        if_none_match = request.headers.get("if-none-match")
        prefer = _prefer(request).get("return")
        return await audited(
            request,
            "update",
            res_type,
            None,
            lambda eng, ctx: update_mod.update(
                eng, res_type, None, body, query, if_match, prefer, if_none_match
            ),
        )

    @app.delete("/fhir/{res_type}")
    async def conditional_delete(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        query = request.url.query
        return await audited(
            request,
            "delete",
            res_type,
            None,
            lambda eng, ctx: delete_mod.delete(eng, res_type, None, query),
        )

    @app.get("/fhir/{res_type}/_history")
    async def type_history(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        params = _params(request)
        return await audited(
            request,
            "history-type",
            res_type,
            None,
            lambda eng, ctx: history(eng, res_type, None, params),
        )

    @app.post("/fhir/Patient/$match")
    @app.post("/fhir/Patient/$merge")
    @app.post("/fhir/Patient/$unmerge")
    async def patient_person_operation(request: Request) -> Response:
        body = await _body(request)
        name = request.url.path.rsplit("$", 1)[1]
        run = {"match": match_mod.match, "merge": merge_mod.merge, "unmerge": merge_mod.unmerge}
        return await audited(
            request,
            f"operation:${name}",
            "Patient",
            None,
            lambda eng, ctx: run[name](eng, body),
        )

    @app.get("/fhir/Patient/{res_id}/$everything")
    @app.post("/fhir/Patient/{res_id}/$everything")
    async def patient_everything(res_id: str, request: Request) -> Response:
        params = _params(request)
        has_body = request.method == "POST" and request.headers.get("content-length") != "0"
        body = await _body(request) if has_body else None
        return await audited(
            request,
            "operation:$everything",
            "Patient",
            res_id,
            lambda eng, ctx: everything(eng, res_id, params, body),
        )

    @app.get("/fhir/{res_type}/{res_id}")
    async def read_route(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        if_none_match = request.headers.get("if-none-match")
        accept, fmt = request.headers.get("accept"), request.query_params.get("_format")
        summary, elements = (
            request.query_params.get("_summary"),
            request.query_params.get("_elements"),
        )
        return await audited(
            request,
            "read",
            res_type,
            res_id,
            lambda eng, ctx: (
                binary_mod.read_binary(eng, res_id, None, accept, fmt, if_none_match)
                if res_type == "Binary"
                else read(eng, res_type, res_id, if_none_match, summary, elements)
            ),
        )

    @app.put("/fhir/{res_type}/{res_id}")
    async def update(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        body = await _body(request, res_type, res_id)
        if_match = request.headers.get("if-match")
        if_none_match = request.headers.get("if-none-match")
        prefer = _prefer(request).get("return")
        return await audited(
            request,
            "update",
            res_type,
            res_id,
            lambda eng, ctx: update_mod.update(
                eng, res_type, res_id, body, None, if_match, prefer, if_none_match
            ),
        )

    @app.delete("/fhir/{res_type}/{res_id}")
    async def delete(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        return await audited(
            request,
            "delete",
            res_type,
            res_id,
            lambda eng, ctx: delete_mod.delete(eng, res_type, res_id),
        )

    @app.get("/fhir/{res_type}/{res_id}/_history")
    async def instance_history(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        params = _params(request)
        return await audited(
            request,
            "history-instance",
            res_type,
            res_id,
            lambda eng, ctx: history(eng, res_type, res_id, params),
        )

    @app.get("/fhir/{res_type}/{res_id}/_history/{version}")
    async def vread_route(res_type: str, res_id: str, version: str, request: Request) -> Response:
        _check_type(res_type)
        accept, fmt = request.headers.get("accept"), request.query_params.get("_format")
        return await audited(
            request,
            "vread",
            res_type,
            res_id,
            lambda eng, ctx: (
                binary_mod.read_binary(eng, res_id, version, accept, fmt)
                if res_type == "Binary"
                else vread(eng, res_type, res_id, version)
            ),
        )

    @app.get("/fhir/Patient/{res_id}/{res_type}")
    async def compartment_search(res_id: str, res_type: str, request: Request) -> Response:
        if res_type != "*":
            _check_type(res_type)
        strict = _prefer(request).get("handling") == "strict"
        params = _params(request)
        return await audited(
            request,
            "search-system" if res_type == "*" else "search-type",
            None if res_type == "*" else res_type,
            None,
            lambda eng, ctx: search_compartment(eng, "Patient", res_id, res_type, params, strict),
        )

    return app
