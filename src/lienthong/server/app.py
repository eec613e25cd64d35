"""The ASGI app: thin routes that turn HTTP into engine calls and back.

Everything FHIR lives in :mod:`lienthong.fhir`; this module only reads
headers (``Prefer``, ``If-Match``, ``If-None-Exist``, ``If-None-Match``),
parses bodies and renders :class:`FhirResponse` and :class:`FhirError` as
``application/fhir+json`` (https://hl7.org/fhir/R4/http.html).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lienthong import __version__
from lienthong.fhir.engine import FHIR_JSON, FhirEngine, FhirResponse, load_json
from lienthong.fhir.errors import FhirError, Issue, bad_request, error, not_found
from lienthong.fhir.interactions import create as create_mod
from lienthong.fhir.interactions import delete as delete_mod
from lienthong.fhir.interactions import update as update_mod
from lienthong.fhir.interactions.capabilities import capability_statement
from lienthong.fhir.interactions.everything import everything
from lienthong.fhir.interactions.history import history
from lienthong.fhir.interactions.read import read, vread
from lienthong.fhir.interactions.search import search
from lienthong.fhir.interactions.transaction import process_bundle
from lienthong.fhir.validate import is_resource_type
from lienthong.settings import Settings
from lienthong.storage.base import ResourceStore, open_store
from lienthong.storage.sql import ConcurrentUpdate

log = logging.getLogger("lienthong.server")
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


async def _body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in ACCEPTED_BODY_TYPES:
        raise error(
            415,
            "not-supported",
            f"content type {ctype!r} is not supported; send application/fhir+json",
        )
    raw = await request.body()
    if not raw.strip():
        raise bad_request("the request has no body")
    return load_json(raw)


def _check_type(res_type: str) -> None:
    if not is_resource_type(res_type):
        raise not_found(f"unknown resource type {res_type!r}")


def create_app(settings: Settings | None = None, store: ResourceStore | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.base_url is None:
        settings = settings.model_copy(
            update={"base_url": f"http://{settings.host}:{settings.port}/fhir"}
        )
    holder: dict[str, FhirEngine] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        the_store = store or open_store(settings.database_url, settings.pg_pool_size)
        holder["engine"] = FhirEngine(the_store, settings)
        try:
            yield
        finally:
            if own:
                the_store.close()

    app = FastAPI(
        title="lienthong",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )

    def engine() -> FhirEngine:
        return holder["engine"]

    @app.exception_handler(FhirError)
    async def on_fhir_error(request: Request, exc: FhirError) -> Response:
        return render_error(exc)

    @app.exception_handler(ConcurrentUpdate)
    async def on_conflict(request: Request, exc: ConcurrentUpdate) -> Response:
        return render_error(error(409, "conflict", str(exc)))

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

    def run(fn: Callable[[], FhirResponse]) -> Response:
        return render(fn())

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return Response(
            orjson.dumps({"name": "lienthong", "version": __version__, "fhir": settings.base_url}),
            media_type="application/json",
        )

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        e = engine()
        return render(FhirResponse(200, capability_statement(e.base_url, e.registry, e.extractor)))

    @app.post("/fhir")
    async def bundle(request: Request) -> Response:
        body = await _body(request)
        prefer = _prefer(request).get("return")
        e = engine()
        return render(await run_in_threadpool(process_bundle, e, body, prefer))

    @app.get("/fhir/_history")
    def system_history(request: Request) -> Response:
        return run(lambda: history(engine(), None, None, _params(request)))

    @app.get("/fhir/{res_type}")
    def search_type(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        strict = _prefer(request).get("handling") == "strict"
        return run(lambda: search(engine(), res_type, _params(request), strict))

    @app.post("/fhir/{res_type}/_search")
    async def search_post(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise error(
                415, "not-supported", "POST _search takes application/x-www-form-urlencoded"
            )
        form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        params = _params(request) + form
        strict = _prefer(request).get("handling") == "strict"
        return render(await run_in_threadpool(search, engine(), res_type, params, strict))

    @app.post("/fhir/{res_type}")
    async def create(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        body = await _body(request)
        return render(
            await run_in_threadpool(
                create_mod.create,
                engine(),
                res_type,
                body,
                request.headers.get("if-none-exist"),
                _prefer(request).get("return"),
            )
        )

    @app.put("/fhir/{res_type}")
    async def conditional_update(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        body = await _body(request)
        return render(
            await run_in_threadpool(
                update_mod.update,
                engine(),
                res_type,
                None,
                body,
                request.url.query,
                request.headers.get("if-match"),
                _prefer(request).get("return"),
            )
        )

    @app.delete("/fhir/{res_type}")
    def conditional_delete(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        return run(lambda: delete_mod.delete(engine(), res_type, None, request.url.query))

    @app.get("/fhir/{res_type}/_history")
    def type_history(res_type: str, request: Request) -> Response:
        _check_type(res_type)
        return run(lambda: history(engine(), res_type, None, _params(request)))

    @app.get("/fhir/Patient/{res_id}/$everything")
    def patient_everything(res_id: str, request: Request) -> Response:
        return run(lambda: everything(engine(), res_id, _params(request)))

    @app.get("/fhir/{res_type}/{res_id}")
    def read_route(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        return run(lambda: read(engine(), res_type, res_id, request.headers.get("if-none-match")))

    @app.put("/fhir/{res_type}/{res_id}")
    async def update(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        body = await _body(request)
        return render(
            await run_in_threadpool(
                update_mod.update,
                engine(),
                res_type,
                res_id,
                body,
                None,
                request.headers.get("if-match"),
                _prefer(request).get("return"),
            )
        )

    @app.delete("/fhir/{res_type}/{res_id}")
    def delete(res_type: str, res_id: str) -> Response:
        _check_type(res_type)
        return run(lambda: delete_mod.delete(engine(), res_type, res_id))

    @app.get("/fhir/{res_type}/{res_id}/_history")
    def instance_history(res_type: str, res_id: str, request: Request) -> Response:
        _check_type(res_type)
        return run(lambda: history(engine(), res_type, res_id, _params(request)))

    @app.get("/fhir/{res_type}/{res_id}/_history/{version}")
    def vread_route(res_type: str, res_id: str, version: str) -> Response:
        _check_type(res_type)
        return run(lambda: vread(engine(), res_type, res_id, version))

    return app
