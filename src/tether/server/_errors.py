"""The one place that maps Tether error codes to HTTP statuses, and errors to JSON bodies.

Every error response is ``{"error": {"code": ..., "message": ...}}`` with the stable codes of
``tether.errors``; clients branch on ``code``, never on the message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tether.errors import StoreError, TetherError, UsageError

logger = logging.getLogger("tether.server")

_STATUS_BY_CODE = {
    "auth.unauthenticated": 401,
    "policy.denied": 403,
    "residency.no_home_region": 403,
    "run.not_found": 404,
    "agent.not_found": 404,
    "approval.not_found": 404,
    "run.conflict": 409,
    "journal.nondeterminism": 409,
    "limit.rate": 429,
}


def status_for(error: TetherError) -> int:
    """The HTTP status of a Tether error: by its code, else by its branch of the tree."""
    status = _STATUS_BY_CODE.get(error.code)
    if status is not None:
        return status
    if isinstance(error, UsageError):
        return 400
    if isinstance(error, StoreError):
        return 503
    return 500


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


async def tether_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TetherError)
    status = status_for(exc)
    if status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    # A 401 names the scheme, as RFC 9110 asks, so clients know what to send.
    headers = {"WWW-Authenticate": 'Bearer realm="tether"'} if status == 401 else None
    return error_response(status, exc.code, exc.message, headers)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, pydantic.ValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                         for e in exc.errors(include_url=False))
    return error_response(400, UsageError.code, f"invalid request body: {problems}")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"no such endpoint: {request.url.path} (see /v1/openapi.json)",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(
        exc.status_code, str(exc.detail))
    return error_response(exc.status_code, UsageError.code, message, exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # The details go to the log, never to the caller: they may hold data of other tenants.
    logger.exception("%s %s crashed", request.method, request.url.path, exc_info=exc)
    return error_response(500, TetherError.code, "internal server error (see the server log)")


EXCEPTION_HANDLERS = {
    TetherError: tether_error,
    pydantic.ValidationError: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
