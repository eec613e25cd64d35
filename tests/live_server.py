"""``lienthong serve`` as a real process on a free port, for tests that go over HTTP.

The end-to-end tests must exercise what a user runs - the console command, uvicorn, a real
socket - so this starts the command in a subprocess, waits until the FHIR API answers
``/fhir/metadata`` (public, so it answers with authorization on too), and stops it afterwards,
keeping what the process printed so a test can check it. The output is read as it comes
(a thread drains the pipe): a server that logs every request would otherwise fill the pipe
and block on its next log line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.pg_server import free_port


@dataclass
class LiveServer:
    """Where a started server listens; `output` holds what it printed, once it has stopped."""

    root: str
    output: str = ""

    @property
    def fhir(self) -> str:
        return f"{self.root}/fhir"


@contextmanager
def live_server(env: Mapping[str, str], *, startup_seconds: float = 30) -> Iterator[LiveServer]:
    """Run ``lienthong serve`` with `env` laid over this process's environment.

    Raises RuntimeError with the server's output when it exits or does not answer within
    `startup_seconds`, so a failed start shows why instead of a connection error later.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = LiveServer(f"http://127.0.0.1:{port}")
    printed: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: printed.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.time() + startup_seconds
        while True:
            try:
                if httpx.get(f"{server.fhir}/metadata", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                if proc.poll() is None:
                    proc.kill()
                reader.join(timeout=10)
                proc.stdout.close()
                raise RuntimeError(f"server did not start: {''.join(printed)}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        proc.stdout.close()
        server.output = "".join(printed)
