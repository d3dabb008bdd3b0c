"""Every error the API answers is JSON `{"error": code, "detail": text}` with the right status.

Endpoints raise `ApiError` (or let the state machine's own errors through); the handlers below
turn them, Starlette's HTTPException (unknown route, wrong method) and anything unexpected into
that one shape (`ErrorBody`, which the OpenAPI document publishes). An unexpected exception
becomes a bare 500: its traceback goes to the server log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controller.dbhealth import DatabaseUnavailable, describe, is_unavailable
from controller.fsm import (
    BookingError,
    Conflict,
    InvalidBooking,
    InvalidTrigger,
    NotFound,
    StaleVersion,
)
from controller.fsm.marks import MarkRefused
from controller.share import ShareError

log = logging.getLogger("ezrec.api")

# Short, stable codes a client can switch on; `detail` is for people.
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    500: "internal_error",
    503: "unavailable",
}

# What each error status means on this API, for the OpenAPI document.
ERROR_TEXT: dict[int, str] = {
    401: "Missing or wrong bearer token (only when EZREC_API_TOKEN is set).",
    403: "The video link is wrong or has expired.",
    404: "No such booking or camera (or the booking's video file is gone from the box).",
    409: "Overlap with a live booking on the same camera (`conflicts_with` names it), a "
    "transition the booking's state does not allow, or a stale `expected_version`.",
    413: "The body is over {max_body} bytes.",
    415: "The body is not application/json.",
    416: "The range asked for is outside the file.",
    422: "Invalid input: `detail` says which field and why.",
    503: "What is asked for cannot be had now (camera, storage, database).",
}


class ErrorBody(BaseModel):
    """Every error: a short stable `error` code a client can switch on, `detail` for people."""

    error: str
    detail: str
    conflicts_with: str | None = None
    state: str | None = None
    version: int | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.detail = detail
        self.headers = headers
        self.extra = extra or {}


def error_response(
    status: int,
    detail: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=code or CODES.get(status, "error"), detail=detail, **(extra or {}))
    return JSONResponse(body.model_dump(exclude_unset=True), status_code=status, headers=headers)


def from_booking_error(exc: Exception) -> ApiError:
    """The state machine's errors, mapped once so that every route answers them alike."""
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, StaleVersion):
        return ApiError(409, str(exc), code="stale_version", extra={"version": exc.actual})
    if isinstance(exc, Conflict):
        extra = {"conflicts_with": exc.other_id} if exc.other_id else {}
        return ApiError(409, str(exc), extra=extra)
    if isinstance(exc, InvalidTrigger):
        return ApiError(409, str(exc), code="invalid_transition", extra={"state": exc.state})
    if isinstance(exc, InvalidBooking):
        return ApiError(422, str(exc))
    if isinstance(exc, MarkRefused):
        return ApiError(409, str(exc), code="not_recording")
    if isinstance(exc, ShareError):
        return ApiError(409, str(exc), code="no_share")
    raise TypeError(f"not a booking error: {exc!r}")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.code, exc.headers, exc.extra)


async def _booking_error(request: Request, exc: Exception) -> Response:
    return await _api_error(request, from_booking_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        detail = f"no route {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    return error_response(exc.status_code, detail, headers=exc.headers)


# How soon a client may ask again while the database is away (the supervisor retries within
# seconds too).
DB_RETRY_AFTER_S = 5


async def _database_error(request: Request, exc: Exception) -> Response:
    if not is_unavailable(exc):
        raise exc  # a bug, not an outage: the 500 handler answers and the traceback is logged
    log.warning("%s %s: %s", request.method, request.url.path, describe(exc))
    return error_response(
        503,
        "the database is not reachable right now; try again shortly (the box's log says why)",
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # ServerErrorMiddleware logs the traceback after this answer is sent; the client only
    # learns that it was our fault.
    return error_response(500, "internal error; the server log has the details")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api_error,
    BookingError: _booking_error,
    InvalidTrigger: _booking_error,
    HTTPException: _http_error,
    # A lost database (server down, network gone, SQLite locked) is 503, not a traceback.
    DBAPIError: _database_error,
    PoolTimeout: _database_error,
    DatabaseUnavailable: _database_error,
    Exception: _unexpected,
}
