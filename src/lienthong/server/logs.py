"""The server's log lines: one JSON object a line (``LIENTHONG_LOG_FORMAT=json``) or text.

Every record carries the id of the request it was written under (a context variable the
request middleware sets, copied into the worker threads interactions run in), so the lines
of one request can be found together and matched with the ``X-Request-ID`` the client got.
Request lines add ``method``, ``route`` (the route template, never the raw path), ``status``
and ``duration_ms``; nothing here logs query values, bodies or tokens.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

LOG_FORMATS = ("json", "text")
#: The id of the request being served in this context, "-" outside any request.
request_id_var: ContextVar[str] = ContextVar("lienthong_request_id", default="-")
#: Fields a request line adds to the record (``logger.info(..., extra=...)``).
REQUEST_FIELDS = ("method", "route", "query", "status", "duration_ms", "client")


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request id (kept when a caller set one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def _instant(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id and the
    request fields the record has; an exception's type and traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _instant(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER [REQUEST_ID] MESSAGE`` for a person reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        text = super().format(record)
        duration = getattr(record, "duration_ms", None)
        return text if duration is None else f"{text} ({duration} ms)"


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str = "json", level: str = "INFO") -> logging.Handler:
    """Send every logger's records (lienthong's and uvicorn's) to stderr in ``log_format``,
    replacing the root logger's handlers; returns the handler installed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's records go through the root handler too, in the same format
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    return handler
