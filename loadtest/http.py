"""A lean HTTP/1.1 client for the one request a load test repeats.

A general-purpose client (httpx) spends about a millisecond of Python per upload; on a small machine
that shares its cores with the server, the load generator then saturates before the server does and
the figures describe the client. Here every request is encoded once, up front, and an exchange is one
write and a parse of the status line and headers: tens of microseconds.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def multipart_request(url: str, path: str, field: str, filename: str, data: bytes, content_type: str,
                      headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a complete ``POST`` with one file field, ready to write to a connection."""
    parts = urlsplit(url)
    boundary = uuid.uuid4().hex
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{safe_name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
             f"Content-Type: multipart/form-data; boundary={boundary}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ConnectionPool:
    """Keep-alive connections to one host, one exchange at a time on each, at most ``max_connections``."""

    def __init__(self, url: str, max_connections: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported by the load generator, got {url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(self, request: bytes, timeout_s: float) -> Reply:
        """Send ``request``, read the reply; waiting for a free connection counts against the timeout."""
        async with asyncio.timeout(timeout_s):
            async with self._slots:
                reused = bool(self._idle)
                reader, writer = self._idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
                try:
                    reply = await self._round_trip(reader, writer, request)
                except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
                    writer.close()
                    if not reused:
                        raise
                    # The server closed an idle keep-alive connection: one retry on a fresh connection.
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    try:
                        reply = await self._round_trip(reader, writer, request)
                    except BaseException:
                        writer.close()
                        raise
                except BaseException:
                    writer.close()
                    raise
                if reply.headers.get("connection", "").lower() == "close":
                    writer.close()
                else:
                    self._idle.append((reader, writer))
                return reply

    @staticmethod
    async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> Reply:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                chunks.append(await reader.readexactly(size + 2))
            await reader.readuntil(b"\r\n")
            body = b"".join(chunk[:-2] for chunk in chunks)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Reply(status, headers, body)

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
