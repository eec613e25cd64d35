"""The HTTP/1.1 protocol the server runs: uvicorn's h11 protocol, accepting a request line
whose target holds raw UTF-8.

A query typed in a terminal (``curl '.../Patient?family=Nguyễn'``) reaches the server
unencoded; h11 accepts only ASCII in a request target (RFC 9112) and uvicorn answers such a
request with a bare ``400 Invalid HTTP request received.`` text before the application sees
it. Here the bytes of a request line's target that are not ASCII are percent-encoded before
h11 reads the line, when they are UTF-8 - which is what the client meant, and what
``urllib.parse`` decodes them back to - so the search runs as if the client had encoded
them. A target that is not UTF-8 gets a 400 OperationOutcome saying to percent-encode it.

Only a request line at the start of a request (nothing of it yet buffered by h11) is
rewritten; the request's headers and body are passed on untouched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from lienthong.fhir.errors import Issue, operation_outcome

MAX_REQUEST_LINE = 64 * 1024
"""A first line longer than this is handed to h11 as it is (which refuses it)."""


class Utf8TargetProtocol(H11Protocol):
    """``H11Protocol`` that percent-encodes raw UTF-8 in the request target."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._line = b""

    def data_received(self, data: bytes) -> None:
        at_start = self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]
        if not self._line and not at_start:
            super().data_received(data)
            return
        data = self._line + data
        end = data.find(b"\n")
        if end < 0 and len(data) <= MAX_REQUEST_LINE:
            self._line = data  # the request line is not all here yet
            return
        self._line = b""
        if end < 0:
            super().data_received(data)
            return
        line, rest = data[:end], data[end:]
        if line.isascii():
            super().data_received(data)
            return
        method, _, tail = line.partition(b" ")
        target, _, version = tail.rpartition(b" ")
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse()
            return
        encoded = quote(text, safe="".join(chr(c) for c in range(0x21, 0x7F))).encode("ascii")
        super().data_received(b" ".join((method, encoded, version)) + rest)

    def _refuse(self) -> None:
        body = orjson.dumps(
            operation_outcome(
                [
                    Issue(
                        "invalid",
                        "the request target holds bytes that are not ASCII nor UTF-8: "
                        "percent-encode the URL's query (e.g. curl --data-urlencode with -G)",
                    )
                ]
            )
        )
        head = (
            "HTTP/1.1 400 Bad Request\r\n"
            "content-type: application/fhir+json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        if self.transport is not None:
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()
