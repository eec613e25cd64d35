"""How ``lienthong serve`` runs the app: worker processes and the threads of each.

Routes hand every interaction (validation, index extraction, the person index, JSON
encoding of results) to a worker thread, so the event loop only moves bytes. Threads
of one process share one interpreter lock, though: CPU-bound requests in one process
take turns, and with dozens of threads the one holding the store's writer waits for its
turn among all the others, so every write queues behind it. Two settings bound this:

* ``LIENTHONG_THREADS``: interactions one process runs at once (the rest wait, in
  arrival order, without holding anything);
* ``LIENTHONG_WORKERS``: server processes (uvicorn's workers, sharing one listening
  socket). Each has its own interpreter, so a slow request takes one process's share of
  the CPU, not the server's. They share the store as any processes do: SQLite in WAL
  mode lets readers of every process run beside the one writer, and writers of all
  processes queue on one lock file (``SqliteStore.writer``); PostgreSQL serves each
  process's pool. The audit chain, paging snapshots, users and keys live in the shared
  side databases, and the alert rules read the records other processes appended. What
  stays per process: the metrics at ``/metrics`` (each scrape answers for the process
  it reaches).
"""

from __future__ import annotations

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from lienthong.settings import Settings


class ThreadBound:
    """The app with the number of threads its interactions may use set at start-up (the
    limiter ``run_in_threadpool`` draws from belongs to the running event loop)."""

    def __init__(self, app: ASGIApp, threads: int) -> None:
        self.app = app
        self.threads = threads
        self._set = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._set:
            anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
            self._set = True
        await self.app(scope, receive, send)


def worker_app() -> ThreadBound:
    """The app factory each server process runs (its settings come from the environment
    ``lienthong serve`` filled in)."""
    from lienthong.server.app import create_app
    from lienthong.server.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)  # a worker's own logging
    return ThreadBound(create_app(settings), settings.threads)


def run(settings: Settings) -> None:
    """Serve until stopped, in ``settings.workers`` processes."""
    import uvicorn

    from lienthong.fhir.limits import Limits
    from lienthong.server.http_protocol import Utf8TargetProtocol
    from lienthong.server.limits import h11_event_size

    uvicorn.run(
        "lienthong.server.serving:worker_app",
        factory=True,
        workers=settings.workers,
        http=Utf8TargetProtocol,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # logging is lienthong's (LIENTHONG_LOG_FORMAT): uvicorn's access log would write
        # raw query strings, which carry CCCD numbers and names
        log_config=None,
        access_log=False,
        # forwarding headers are lienthong's to judge (LIENTHONG_TRUSTED_PROXIES), so the
        # app sees the connection's real peer rather than uvicorn's rewrite of it
        proxy_headers=False,
        # the request head h11 buffers: long enough for LIENTHONG_URL_MAX_CHARS, so a
        # longer URL gets the app's 414 OperationOutcome rather than h11's bare 400
        h11_max_incomplete_event_size=h11_event_size(Limits.from_settings(settings)),
    )
