"""ASGI middleware of the HTTP API: request id, access log, request counts, and the body limits.

Pure ASGI (no BaseHTTPMiddleware): the limits apply while the body streams in, before the app reads it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batching import Overloaded
from service.errors import ServiceError, overloaded
from service.settings import Settings
from service.state import ServiceState
from service.stats import ServiceStats

access_logger = logging.getLogger("kws.access")
MULTIPART_OVERHEAD = 64 * 1024  # room for the multipart framing around the files
COUNTED_ENDPOINTS = frozenset({"/v1/recognize", "/v1/recognize/batch"})  # what /v1/stats and /metrics count
ADMITTED_ENDPOINTS = COUNTED_ENDPOINTS  # what goes through the micro-batcher, so is admitted into its backlog


def body_limits(settings: Settings) -> Callable[[str], int | None]:
    """The largest body each path accepts: one upload, a batch of them, or just the framing elsewhere."""

    def limit(path: str) -> int | None:
        if path == "/v1/recognize":
            return settings.max_upload_bytes + MULTIPART_OVERHEAD
        if path == "/v1/recognize/batch":
            return settings.max_upload_bytes * settings.max_batch_files + MULTIPART_OVERHEAD
        return MULTIPART_OVERHEAD

    return limit


GUARD_HEADERS = (b"x-request-id", b"content-length")  # ASGI header names are lower-case bytes


def new_request_id() -> str:
    """32 hex digits, unique enough to follow one request through the logs. Not uuid4: its os.urandom call took
    a tenth of the event loop's time under overload (a system call per request), and an id needs no secrecy."""
    return f"{random.getrandbits(128):032x}"


class BodyRejected(Exception):
    """The guard stopped reading the body (too large, or too slow); ``error`` is the answer."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


class RequestGuard:
    """Request id, access log, and the body-size and body-time limits enforced while the body is read.

    A declared Content-Length over the limit is refused before reading; a body without one
    (chunked) is counted as it streams and refused as soon as it passes the limit. The whole body
    must arrive within ``body_timeout`` seconds (408 otherwise), so a client trickling bytes
    (slow loris) cannot hold a request open.
    """

    def __init__(self, app: ASGIApp, limit_for_path: Callable[[str], int | None], stats: ServiceStats,
                 body_timeout: float = 30.0) -> None:
        self.app, self.limit_for_path, self.stats, self.body_timeout = app, limit_for_path, stats, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", []) if name in GUARD_HEADERS}
        request_id = headers.get(b"x-request-id", "")[:64] or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        limit = self.limit_for_path(scope["path"])

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"], status_holder["started"] = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        received, body_complete = 0, False
        too_large = ServiceError(413, "upload_too_large", f"the request body exceeds the {limit} byte limit")
        deadline = asyncio.get_running_loop().time() + self.body_timeout

        def reject(error: ServiceError) -> BodyRejected:
            scope["state"]["body_error"] = error  # the app's error handlers answer with this
            return BodyRejected(error)

        async def receive_wrapper() -> Message:
            nonlocal received, body_complete
            if body_complete:  # e.g. a disconnect listener: no deadline once the body is in
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # no task per chunk, unlike wait_for
                    message = await receive()
            except TimeoutError:
                raise reject(ServiceError(408, "body_timeout", f"the request body did not arrive within "
                                                               f"{self.body_timeout:g} s")) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if limit is not None and received > limit:
                    raise reject(too_large)
            return message

        try:
            declared = headers.get(b"content-length")
            if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
                raise reject(too_large)
            await self.app(scope, receive_wrapper, send_wrapper)
        except BodyRejected as rejected:
            if status_holder["started"]:
                raise
            response = JSONResponse(rejected.error.body(), status_code=rejected.error.status, headers={"connection": "close"})
            await response(scope, receive, send_wrapper)
        finally:
            elapsed = 1000 * (time.perf_counter() - started)
            path = scope["path"]
            # Counted by route template, a fixed set: a raw path as a label would let any client add series
            # (and, unescaped, write lines into /metrics). A request refused before routing has no route yet.
            route = scope.get("route")
            endpoint = getattr(route, "path", path)
            if endpoint in COUNTED_ENDPOINTS:
                self.stats.record_request(endpoint, status_holder["status"])
            access_logger.info("%s %s %s %d %.1fms", request_id, scope["method"], path, status_holder["status"], elapsed,
                               extra={"request_id": request_id, "status": status_holder["status"], "duration_ms": elapsed})


class LoadShedder:
    """Admission into the backlog from the request head: a full backlog refuses an upload (503 + Retry-After)
    before its body is read, parsed or decoded, so refusing costs next to nothing and the machine's time goes
    to the requests it accepted. An admitted request holds its place (``scope["state"]["admission"]``) until
    its windows are queued; a batch is admitted as one request and resized to its file count once parsed.
    """

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        batcher = self.state.batcher
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in ADMITTED_ENDPOINTS \
                or batcher is None or not self.state.ready:  # not ready: the route says so
            await self.app(scope, receive, send)
            return
        try:
            admission = batcher.admit(1)
        except Overloaded as error:
            refusal = overloaded(error)
            await JSONResponse(refusal.body(), status_code=refusal.status, headers=refusal.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["admission"] = admission
        try:
            await self.app(scope, receive, send)
        finally:
            admission.release()
