"""uvicorn's HTTP protocol with a deadline for the request head (slow loris on headers).

uvicorn limits how long an idle keep-alive connection may stay open, but not how long a client may take
to send a request line and headers: a client that connects and sends nothing, or trickles header bytes,
holds a connection (and a file descriptor) forever. Here every request head must be complete within
``HeaderTimeoutProtocol.head_timeout`` seconds of the connection opening or of the request's first
byte; otherwise the client gets a 408 JSON error and the connection is closed. (Bodies have their own
deadline, ``KWS_BODY_READ_TIMEOUT_SECONDS``, enforced by the app.)
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0  # set from KWS_HEADER_READ_TIMEOUT_SECONDS by configure()

    @classmethod
    def configure(cls, head_timeout: float) -> type[HeaderTimeoutProtocol]:
        cls.head_timeout = head_timeout
        return cls

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.cycle is None or self.cycle.response_complete:  # the next request on a keep-alive connection
            self._arm_head_deadline()  # (a pipelined one waits behind a response in flight: not its fault)

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

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
        body = json.dumps({"error": {"code": "header_timeout", "message":
                                     f"the request line and headers did not arrive within {self.head_timeout:g} s"}}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()
