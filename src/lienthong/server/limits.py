"""The HTTP side of the limits (:mod:`lienthong.fhir.limits`): request bodies read as they
stream in, refused at the first byte past the limit (or at once, from ``Content-Length``),
and request URLs refused before routing when longer than ``LIENTHONG_URL_MAX_CHARS`` (414;
a search too long for a URL is sent as ``POST [type]/_search``)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from lienthong.fhir.engine import FHIR_JSON
from lienthong.fhir.errors import bad_request
from lienthong.fhir.limits import Limits, check_document, setting_name, too_costly


def limits_of(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


async def read_body(request: Request, kind: str) -> bytes:
    """The body of a ``kind`` request ("binary", "bundle" or "resource"), or 413 naming the
    limit once it is past it, without holding more of it than the limit."""
    limit, field = limits_of(request).body_limit(kind)
    what = {"binary": "Binary content", "bundle": "a Bundle"}.get(kind, "the body")

    def refusal() -> Exception:
        return too_costly(413, f"{what} is over {limit:,} bytes", field)

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise refusal()
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > limit:
            raise refusal()
    return bytes(raw)


def check_json(request: Request, document: Any) -> None:
    """The shape limits (string and array length, depth, Bundle entries) of a parsed body."""
    check_document(document, limits_of(request))


class UrlLimit:
    """ASGI middleware answering 414 with an OperationOutcome for a URL (path and query)
    longer than ``LIENTHONG_URL_MAX_CHARS``, before any route parses its query."""

    def __init__(self, app: ASGIApp, max_chars: int) -> None:
        self.app, self.max_chars = app, max_chars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope.get("path", "").encode()
            query = scope.get("query_string") or b""
            length = len(raw_path) + (len(query) + 1 if query else 0)  # "?" and the query
            if length > self.max_chars:
                err = too_costly(
                    414,
                    f"the URL is {length:,} characters long, more than {self.max_chars:,}; "
                    "send a long search as POST [type]/_search with a form body",
                    "url_max_chars",
                )
                body = orjson.dumps(err.outcome())
                await send(
                    {
                        "type": "http.response.start",
                        "status": 414,
                        "headers": [
                            (b"content-type", FHIR_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            if "\x00" in scope.get("path", "") or b"%00" in query:
                err = bad_request("the URL holds a NUL character (%00), which no FHIR value may")
                body = orjson.dumps(err.outcome())
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", FHIR_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install(app: FastAPI, limits: Limits) -> None:
    """Keep the limits where the routes find them and refuse over-long URLs."""
    app.state.limits = limits
    app.state.body_max_bytes = limits.body_max_bytes
    app.add_middleware(UrlLimit, max_chars=limits.url_max_chars)


def h11_event_size(limits: Limits) -> int:
    """The request head (line and headers) the HTTP server buffers: the longest URL
    accepted and room for the headers."""
    return limits.url_max_chars + 64 * 1024


__all__ = ["install", "read_body", "check_json", "h11_event_size", "setting_name"]
