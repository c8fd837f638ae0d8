"""The OpenAPI pieces every resource's routes share: the error answers, the cache and paging
headers, and the CSV, Arrow and Parquet alternatives of a 200 answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)

from market_api.http.errors import ErrorBody
from market_api.http.negotiation import ARROW_STREAM, PARQUET


def error(description: str) -> ResponseSpec:
    """A 4xx/5xx answer with the one error body."""
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


CACHE_HEADERS = [
    ResponseHeader(
        name="ETag",
        documentation_only=True,
        description="Changes with the data version and the content; send it as If-None-Match.",
    ),
    ResponseHeader(
        name="Cache-Control",
        documentation_only=True,
        description="public, max-age=0, must-revalidate",
    ),
]
NEXT_PAGE_HEADER = ResponseHeader(
    name="Next-Page-Token",
    documentation_only=True,
    required=False,
    description="next_page_token, in every format (absent on the last page)",
)
NOT_MODIFIED = ResponseSpec(data_container=None, description="The If-None-Match ETag is current")
UNAVAILABLE = error("A load held the data for too long; retry after Retry-After seconds")
STALE_PAGE_TOKEN = error(
    "The data changed since page_token was cut (single-file mode): start again without it"
)


@dataclass
class AlternativesOperation(Operation):
    """Documents the CSV, Arrow and Parquet alternatives of the 200 answer, chosen by
    ``Accept`` or ``format``; a subclass names its columns, their types and a CSV row."""

    columns: ClassVar[tuple[str, ...]] = ()
    typed: ClassVar[str] = ""
    """The Arrow and Parquet columns' types, after ``Columns a, b, c:``."""
    csv_row: ClassVar[str] = "a line"
    """What each CSV line after the header holds."""
    example_row: ClassVar[str] = ""

    def __post_init__(self) -> None:
        ok = self.responses.get("200") if self.responses else None
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content.update(self.alternatives())

    @classmethod
    def alternatives(cls) -> dict[str, OpenAPIMediaType]:
        header = ",".join(cls.columns)
        typed = f"Columns {', '.join(cls.columns)}: {cls.typed}"

        def binary(what: str) -> OpenAPIMediaType:
            return OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.STRING,
                    format=OpenAPIFormat.BINARY,
                    description=f"{what}. {typed}",
                )
            )

        return {
            "text/csv": OpenAPIMediaType(
                schema=Schema(type=None, description=f"Header row {header}, then {cls.csv_row}"),
                example=f"{header}\r\n{cls.example_row}",
            ),
            ARROW_STREAM: binary("Arrow IPC stream"),
            PARQUET: binary("Parquet file"),
        }
