"""The one place where errors become HTTP answers.

Every non-200 answer has the ``ErrorBody`` shape: the HTTP errors raised while reading a request
(``ApiError``), the readers' domain errors (``market_api.readers.errors``, mapped in
``as_api_error``), and what Litestar raises itself (validation, unknown route, a bug).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from market_api.readers.errors import (
    HistoryNotKept,
    ReadError,
    SnapshotNotFound,
    StoreUnavailable,
    UnknownSymbol,
    VersionGone,
)

log = logging.getLogger(__name__)

AS_OF = "as_of"
"""The query parameter of time travel, named in its errors."""

PAGE_TOKEN = "page_token"
"""The query parameter that continues a paged answer, named in its errors."""

PAGE_EXPIRED = (
    "the data changed since this page token was cut, so its next page would mix old and new "
    "bars; start again: ask without page_token"
)

NO_HISTORY = (
    "as_of needs the shared lake, which keeps every snapshot (set MARKET_POSTGRES_URL and "
    "MARKET_SHARED_HOME); this API serves one DuckDB file with no history: leave as_of out"
)


class ErrorBody(msgspec.Struct):
    status_code: int
    error: str
    detail: str
    parameter: str | None
    """The query or path parameter at fault (400; 410 names ``page_token``)."""


class ApiError(Exception):
    """An answer other than 200 that the client can act on."""

    status_code = 500
    error = "internal_error"
    parameter: str | None = None
    retry_after_seconds: int | None = None
    """Sent as ``Retry-After`` when set."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ParameterError(ApiError):
    """An answer about one parameter the client sent; ``parameter`` names it in the body."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter


class InvalidParameter(ParameterError):
    """A parameter the client sent cannot be used."""

    status_code = 400
    error = "invalid_parameter"


class NotFound(ApiError):
    status_code = 404
    error = "unknown_symbol"


class Gone(ParameterError):
    """A page token whose data is no longer stored."""

    status_code = 410
    error = "page_expired"


class Unavailable(ApiError):
    """Try again after ``retry_after_seconds``."""

    status_code = 503
    error = "data_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


def as_api_error(exc: ReadError) -> ApiError:
    """The HTTP answer to a domain error: its status, error code, detail and parameter."""
    match exc:
        case UnknownSymbol():
            return NotFound(f"{exc.detail}; GET /instruments lists them")
        case StoreUnavailable():
            return Unavailable(exc.detail, exc.retry_after_seconds)
        case HistoryNotKept():
            return InvalidParameter(AS_OF, NO_HISTORY)
        case SnapshotNotFound():
            return InvalidParameter(AS_OF, f"{AS_OF} {exc.detail}")
        case VersionGone():
            return Gone(PAGE_TOKEN, f"{PAGE_EXPIRED} ({exc.detail})")
    return ApiError(exc.detail)


def error_response(
    status_code: int,
    error: str,
    detail: str,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status_code, error=error, detail=detail, parameter=parameter),
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def api_error_handler(_: Request[Any, Any, Any], exc: ApiError | ReadError) -> Response[ErrorBody]:
    error = as_api_error(exc) if isinstance(exc, ReadError) else exc
    retry_after = error.retry_after_seconds
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return error_response(error.status_code, error.error, error.detail, error.parameter, headers)


def validation_error_handler(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[ErrorBody]:
    """Litestar's parameter validation, reshaped so ``parameter`` names the first bad one."""
    parameter: str | None = None
    detail = exc.detail
    if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
        first = exc.extra[0]
        parameter = first.get("key")
        message = first.get("message")
        if parameter and message:
            detail = f"{parameter}: {message}"
    return error_response(400, "invalid_parameter", detail, parameter)


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    error = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(exc.status_code, error, exc.detail, headers=exc.headers)


def unexpected_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ErrorBody]:
    """A bug, not a client mistake: log it whole, tell the client nothing internal."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApiError: api_error_handler,
    ReadError: api_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
