"""The API's typed errors. Handlers raise them; ``app.py`` turns each into a JSON response."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than 200 that the client can act on."""

    status_code = 500
    error = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidParameter(ApiError):
    """A parameter the client sent cannot be used; ``parameter`` names it in the body."""

    status_code = 400
    error = "invalid_parameter"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter


class UnknownSymbol(ApiError):
    status_code = 404
    error = "unknown_symbol"

    def __init__(self, symbol: str, stored: str = "bars") -> None:
        super().__init__(
            f"{symbol}: no {stored} stored for this symbol; GET /instruments lists them"
        )
        self.symbol = symbol


class DataUnavailable(ApiError):
    """The DuckDB file stayed locked by a writer for longer than a request may wait."""

    status_code = 503
    error = "data_unavailable"

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds
