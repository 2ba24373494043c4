"""Every error the app answers is ``{"error": {"code", "message"}}`` with a status that names the problem."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from service.errors import ServiceError

logger = logging.getLogger("kws.service")


def body_rejected(request: Request) -> JSONResponse | None:
    """413/408 when the guard stopped the body mid-stream (the body parser then fails with its own error)."""
    error = request.scope.get("state", {}).get("body_error")
    if error is None:
        return None
    return JSONResponse(error.body(), status_code=error.status, headers={"connection": "close"})


def multipart_error(error: StarletteHTTPException) -> ServiceError | None:
    """The form parser's refusals (too many parts, no boundary, broken framing), with their own codes."""
    if not isinstance(error.__context__, MultiPartException):
        return None
    if str(error.detail).startswith("Too many"):
        return ServiceError(422, "too_many_parts", str(error.detail))
    return ServiceError(400, "malformed_multipart", str(error.detail))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        if (rejected := body_rejected(request)) is not None:
            return rejected
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p not in ('body', 'query'))}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse(ServiceError(422, "invalid_request", problems or "invalid request").body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if (rejected := body_rejected(request)) is not None:
            return rejected
        if (refused := multipart_error(error)) is not None:
            return JSONResponse(refused.body(), status_code=refused.status)
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return JSONResponse(ServiceError(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail)).body(),
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        if (rejected := body_rejected(request)) is not None:
            return rejected
        logger.exception("unexpected error")
        return JSONResponse(ServiceError(500, "internal_error", "internal error").body(), status_code=500)
