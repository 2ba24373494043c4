"""uvicorn's httptools protocol, guarded: every refusal of a request head is a JSON error, within limits.

uvicorn answers what its HTTP parser rejects (Content-Length with Transfer-Encoding, two or negative
Content-Lengths, bad chunk sizes, a NUL or non-ASCII byte in the path) with a ``400 text/plain``; it limits
neither how long a request head may take nor how large it may be, and serves an HTTP/1.1 request without
``Host``. Here, each with ``{"error": {"code", "message"}}`` and ``Connection: close``:

- 400 ``malformed_request``: the parser's refusal, its reason in the message;
- 400 ``invalid_host``: an HTTP/1.1 request without exactly one ``Host`` header (RFC 9112, section 3.2);
- 408 ``header_timeout``: the request line and headers did not arrive within ``head_timeout`` seconds of
  the connection opening or of the previous response (slow loris on headers; bodies have their own
  deadline, ``KWS_BODY_READ_TIMEOUT_SECONDS``, enforced by the app);
- 414 ``uri_too_long`` / 431 ``headers_too_large``: a request target, or a whole head, over
  ``MAX_HEAD_BYTES``. Heads are measured as the parser hands them over; a single header line that never
  ends is cut off once ``MAX_HEAD_BYTES`` plus one read (``READ_SIZE``) are buffered, so memory stays bounded.

This subclasses a class uvicorn does not document (``HttpToolsProtocol``) and overrides its parser callbacks
and ``send_400_response``: ``pyproject.toml`` therefore pins uvicorn to the minor version the tests ran
(tests/test_hostile_input.py exercises every refusal above through a real server).
"""

from __future__ import annotations

import asyncio
import json
import sys

from httptools import HttpParserCallbackError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; browsers send a few KB
READ_SIZE = 256 * 1024  # the most one read hands to data_received (asyncio's and uvloop's read buffer)
REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


class HeadRefused(Exception):
    """Raised from a parser callback: the head is refused with this status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GuardedHttpProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0  # set from KWS_HEADER_READ_TIMEOUT_SECONDS by configure()

    @classmethod
    def configure(cls, head_timeout: float) -> type[GuardedHttpProtocol]:
        cls.head_timeout = head_timeout
        return cls

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._refusal: HeadRefused | None = None
        self._reading_head = True  # from the end of a message (or the connection's start) to its headers' end
        self._head_size = 0  # exact: what the parser handed over of the current head
        self._unparsed = 0  # bound: bytes read while a head is incomplete (at most one read too many)
        self._crossed_boundary = False
        self._arm_head_deadline()

    # -- size of the head ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._crossed_boundary = False
        super().data_received(data)
        if not self._reading_head or self.transport.is_closing():
            return
        # A head, still incomplete: a header line that never ends is buffered inside the parser, which hands
        # it over only once complete, so its size is bounded here, by what was read since the head began.
        self._unparsed = len(data) if self._crossed_boundary else self._unparsed + len(data)
        if self._unparsed > MAX_HEAD_BYTES + READ_SIZE:
            self._answer(HeadRefused(431, "headers_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"))

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES:
            self._refuse(431, "headers_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refusal = HeadRefused(status, code, message)
        raise self._refusal  # the parser stops; uvicorn then calls send_400_response, which answers it

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if self.cycle is None or self.cycle.response_complete:  # the next request on a keep-alive connection
            self._arm_head_deadline()  # (a pipelined one waits behind a response in flight: not its fault)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_HEAD_BYTES:
            self._refuse(414, "uri_too_long", f"the request target exceeds {MAX_HEAD_BYTES} bytes")
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._grow_head(len(name) + len(value) + 4)  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._reading_head, self._crossed_boundary = False, True
        self._disarm_head_deadline()
        if self.parser.get_http_version() == "1.1":
            hosts = sum(1 for name, _ in self.headers if name == b"host")
            if hosts != 1:
                self._refuse(400, "invalid_host", f"an HTTP/1.1 request needs exactly one Host header, got {hosts} "
                                                  f"(RFC 9112, section 3.2)")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._crossed_boundary, self._unparsed = True, True, 0

    # -- answers ---------------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error (called inside its ``except``): ours, or the parser's reason, as JSON."""
        refusal, self._refusal = self._refusal, None
        if refusal is None:
            error = sys.exception()
            if isinstance(error, HttpParserCallbackError) and error.__context__ is not None:
                error = error.__context__  # uvicorn's own callback refused it (e.g. a URL its URL parser cannot read)
            reason = str(error) if error is not None and str(error) else msg
            refusal = HeadRefused(400, "malformed_request", f"not a valid HTTP/1.1 request: {reason}")
        self._answer(refusal)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _answer(self, refusal: HeadRefused) -> None:
        body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}}).encode()
        self.transport.write(f"HTTP/1.1 {refusal.status} {REASONS[refusal.status]}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.transport.close()

    # -- the head deadline -----------------------------------------------------------------------------

    def _arm_head_deadline(self) -> None:
        if getattr(self, "_head_deadline", None) is None:
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # never write into a response in flight
        self._answer(HeadRefused(408, "header_timeout",
                                 f"the request line and headers did not arrive within {self.head_timeout:g} s"))
