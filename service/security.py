"""Optional API key on ``/v1/*`` and optional CORS, both off by default.

The key (``KWS_API_KEY``) is accepted as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, and
for WebSockets also as the ``api_key`` query parameter (browsers cannot set headers on a WebSocket).
It is compared with :func:`hmac.compare_digest`, so the time taken does not reveal how much of a
guess was right. Without it an HTTP request gets 401 ``{"error": {"code": "unauthorized", ...}}`` and
a WebSocket gets an ``error`` message and is closed with 1008 (policy violation). Operations endpoints
(``/healthz``, ``/readyz``, ``/metrics``), the page at ``/``, static files and ``/docs`` stay open:
probes and scrapers carry no key. CORS (``KWS_CORS_ORIGINS``: a comma list or a JSON list) is
Starlette's ``CORSMiddleware``, outside the key check so that preflight requests need no key.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.settings import Settings, parse_origins

PROTECTED_PREFIX = "/v1"
WEBSOCKET_POLICY_VIOLATION = 1008


def is_protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def presented_key(scope: Scope) -> str | None:
    """The key the client sent, from the headers (and, on a WebSocket, the ``api_key`` query parameter)."""
    for name, value in scope.get("headers", []):
        if name == b"x-api-key":
            return value.decode("latin-1")
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    if scope["type"] == "websocket":
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), encoding="latin-1")
        return next((value for name, value in query if name == "api_key"), None)
    return None


class ApiKeyGuard:
    """ASGI middleware: ``/v1/*`` (HTTP and WebSocket) needs the configured key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.expected = app, api_key.encode()  # headers arrive as bytes: compare bytes with bytes

    def authorised(self, scope: Scope) -> bool:
        key = presented_key(scope)
        return key is not None and hmac.compare_digest(key.encode("latin-1"), self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_protected(scope["path"]) or self.authorised(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Accepted only to say why, as every other stream error does: a close before accepting reaches
            # clients as a bare 403 handshake failure (browsers show 1006, without a reason).
            error = ServiceError(401, "unauthorized", "a valid API key is required: pass it as the api_key query "
                                                      "parameter or the X-API-Key header")
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps({"type": "error", **error.body()["error"]})})
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION, "reason": "unauthorized"})
            return
        error = ServiceError(401, "unauthorized", "a valid API key is required: send it as X-API-Key or "
                                                  "Authorization: Bearer <key>")
        await JSONResponse(error.body(), status_code=401, headers={"www-authenticate": "Bearer"})(scope, receive, send)


def add_api_key_guard(app: FastAPI, settings: Settings) -> None:
    """Add the key check when ``KWS_API_KEY`` is set (call before the request guard: 401s are then logged)."""
    if key := settings.api_key.get_secret_value():
        app.add_middleware(ApiKeyGuard, api_key=key)


def add_cors(app: FastAPI, settings: Settings) -> None:
    """CORS for ``KWS_CORS_ORIGINS`` (call last: outermost, so preflights and error responses carry the headers)."""
    if origins := parse_origins(settings.cors_origins):
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", "Retry-After"], max_age=600)
