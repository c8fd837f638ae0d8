"""The query parameters: declared for Litestar (validation, the OpenAPI schema) and, where
Litestar cannot, parsed here. A bad one raises ``InvalidParameter`` naming it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.openapi.spec import Example
from litestar.params import Parameter, ParameterKwarg

from market_api.bars.schemas import Adjustment, Interval
from market_api.http.errors import InvalidParameter
from market_api.http.negotiation import Format
from market_api.settings import MAX_LIMIT
from market_core.exchange import EXCHANGE_TZ
from market_core.symbols import SYMBOL_PATTERN, SYMBOL_RULE, InvalidSymbolError, normalize_symbol

MAX_SYMBOLS = 1000
"""Most symbols one ``/bars`` request names."""
DEFAULT_PAGE_LIMIT = 10_000
MAX_PAGE_LIMIT = 1_000_000
"""Most bars in one page of ``/bars``: its answer streams, so the bound is on time, not memory."""


def parse_symbol(raw: str) -> str:
    """Symbols are case-insensitive on the way in and upper-case everywhere after
    (``market_core.symbols``, the rule the pipeline applies too)."""
    try:
        return normalize_symbol(raw)
    except InvalidSymbolError:
        raise InvalidParameter("symbol", f"symbol must be {SYMBOL_RULE}") from None


def check_range(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidParameter("start", f"start {start} is after end {end}")


_MOMENT = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"(?P<offset>Z|z|[+\- ]\d{2}:\d{2})?)?"
)
MOMENT_RULE = (
    "an ISO date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM[:SS[.ffffff]], exchange-local "
    "America/New_York, or with Z or an offset such as -05:00)"
)


def parse_moment(name: str, raw: str | None) -> date | None:
    """A ``start`` or ``end`` as a ``date``, or a naive exchange-local ``datetime`` (a
    ``datetime`` is a ``date``): one with an offset is converted to New York time.

    Parsed here, not by Litestar: a ``date | datetime`` parameter is a union msgspec refuses
    (a 500 in Litestar 2.25), and ``fromisoformat`` alone would also take ``20240102``, which
    the API has always refused. An empty value counts as absent, as Litestar had it. A ``+``
    left unencoded in a query string arrives as a space; it is read as the ``+`` it was."""
    if not raw:
        return None
    match = _MOMENT.fullmatch(raw)
    try:
        if match is None:
            raise ValueError(raw)
        day = date.fromisoformat(match["date"])
        if match["time"] is None:
            return day
        offset = match["offset"] or ""
        offset = "+00:00" if offset in ("Z", "z") else offset.replace(" ", "+")
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{offset}")
        if moment.tzinfo is None:
            return moment
        return moment.astimezone(EXCHANGE_TZ).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidParameter(name, f"{name} {raw!r} is not {MOMENT_RULE}") from None


AS_OF_RULE = ("an RFC 3339 timestamp",)


def query_values(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    """Every value of every query parameter, as sent (empty ones included)."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    values: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(name, []).append(value)
    return values


def check_once(request: Request[Any, Any, Any], name: str, allowed: Iterable[str]) -> None:
    """Refuse ``name`` given twice or given empty, both of which Litestar lets pass (the last
    copy wins; an empty value counts as absent, so the default would answer): ``raw`` and
    ``all`` asked together, or an empty value, have no right answer."""
    check_given_once(query_values(request), {name: tuple(allowed)})


def check_given_once(
    values: dict[str, list[str]], rules: dict[str, tuple[str, ...] | None]
) -> None:
    """``check_once`` of each parameter ``rules`` names; one whose rule is None may be empty
    (a ``start`` left empty is absent, as it has always been)."""
    for name, allowed in rules.items():
        given = values.get(name, ())
        if len(given) > 1:
            raise InvalidParameter(name, f"{name} given more than once; give it at most once")
        if given and not given[0] and allowed is not None:
            choice = f"one of {', '.join(allowed)}" if len(allowed) > 1 else allowed[0]
            raise InvalidParameter(name, f"{name} is empty; give {choice}")


def parse_symbols(raw: str | None) -> tuple[str, ...] | None:
    """``symbols`` of ``/bars``: comma-separated, each by the symbol rule, at most
    ``MAX_SYMBOLS`` entries; None (every symbol) when left out. Exactly what ``SYMBOLS_PATTERN``
    states, so the OpenAPI schema promises what is served."""
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) > MAX_SYMBOLS:
        raise InvalidParameter(
            "symbols", f"{len(parts)} symbols given; at most {MAX_SYMBOLS} per request"
        )
    symbols: list[str] = []
    for part in parts:
        if not _SYMBOL_ENTRY.fullmatch(part):
            raise InvalidParameter("symbols", f"symbols: {part!r} is not {SYMBOL_RULE}")
        symbols.append(parse_symbol(part))
    return tuple(symbols)


# The stored symbol's pattern, in either case: the schema then promises exactly what is served.
SYMBOL_ANY_CASE = SYMBOL_PATTERN.replace("A-Z", "A-Za-z")
_ENTRY = SYMBOL_ANY_CASE.removeprefix("^").removesuffix("$")
_SYMBOL_ENTRY = re.compile(_ENTRY)
SYMBOLS_PATTERN = f"^{_ENTRY}(,{_ENTRY}){{0,{MAX_SYMBOLS - 1}}}$"
"""``symbols`` as ``parse_symbols`` takes it: 1 to ``MAX_SYMBOLS`` symbols, no spaces."""
Symbol = Annotated[
    str,
    Parameter(
        description="Ticker, case-insensitive: letters, digits, '.', '-', at most 12",
        min_length=1,
        max_length=12,
        pattern=SYMBOL_ANY_CASE,
    ),
]
Start = Annotated[
    date | None, Parameter(description="First date, inclusive (YYYY-MM-DD); not after end")
]
End = Annotated[date | None, Parameter(description="Last date, inclusive (YYYY-MM-DD)")]
# ``str``, parsed by ``parse_moment``: Litestar cannot take a ``date | datetime``.
StartMoment = Annotated[
    str | None,
    Parameter(
        description=(
            "First bar, inclusive: an ISO date (YYYY-MM-DD) or date-time "
            "(YYYY-MM-DDTHH:MM[:SS], exchange-local America/New_York unless it carries Z or "
            "an offset); not after end. Intraday: a date means from that day's 00:00, a "
            "date-time exactly. Daily, weekly, monthly: a date-time counts as its date."
        ),
        examples=[Example(value="2024-01-02"), Example(value="2024-01-02T09:30:00")],
    ),
]
EndMoment = Annotated[
    str | None,
    Parameter(
        description=(
            "Last bar, inclusive: an ISO date or date-time as for start. Intraday: a date "
            "means through that day's end, a date-time exactly (a bar starting then is in). "
            "Daily, weekly, monthly: a date-time counts as its date."
        ),
        examples=[Example(value="2024-01-02"), Example(value="2024-01-02T12:00:00-05:00")],
    ),
]
IntervalParam = Annotated[
    Interval,
    Parameter(
        description=(
            "Bar length: 1d (daily), 1w, 1mo (built from the daily bars), or the stored "
            "intraday bars of 1min, 5min, 15min, 30min or 60min"
        ),
        default=Interval.DAY,
    ),
]
Limit = Annotated[
    int | None, Parameter(ge=1, le=MAX_LIMIT, description="Keep only the newest N bars")
]
AdjustmentParam = Annotated[
    Adjustment,
    Parameter(
        description=(
            "Prices as traded (raw), or adjusted at read time for later splits (split: prices "
            "/ S(t), volume * S(t)), dividends (dividend: prices * D(t)) or both (all); at "
            "most once. The README gives the formula."
        ),
        default=Adjustment.RAW,
    ),
]
AsOf = Annotated[
    datetime | None,
    Parameter(
        description=(
            "Answer as the data stood at this time (RFC 3339, e.g. 2026-11-30T12:00:00Z; "
            "without an offset, UTC): the bars of the newest lake snapshot committed by then. "
            "Only with the shared lake (multi-machine mode); the single-file mode answers 400. "
            "A time before the lake's oldest kept snapshot is a 400; at most once."
        ),
    ),
]
Symbols = Annotated[
    str | None,
    Parameter(
        description=(
            f"Comma-separated symbols, case-insensitive, each once or more, at most "
            f"{MAX_SYMBOLS}, no spaces; left out, every symbol with bars. Unknown ones are "
            "listed in missing_symbols (JSON) or the Missing-Symbols header"
        ),
        schema_extra={"pattern": SYMBOLS_PATTERN},
        examples=[Example(value="AAPL,MSFT")],
    ),
]


def page_limit(what: str, maximum: int, default: int) -> ParameterKwarg:
    """``limit`` of a paged answer: ``what`` per page."""
    return Parameter(
        ge=1,
        le=maximum,
        description=f"{what} per page; the next page is at next_page_token",
        default=default,
    )


def page_token(same: str) -> ParameterKwarg:
    """``page_token`` of a paged answer, valid with the ``same`` filters it was cut for."""
    return Parameter(
        description=(
            "next_page_token of the previous page (in the body or the Next-Page-Token "
            f"header), exactly as it came, with the same {same} (limit and format may change)"
        ),
    )


PageLimit = Annotated[int, page_limit("Bars", MAX_PAGE_LIMIT, DEFAULT_PAGE_LIMIT)]
PageTokenParam = Annotated[
    str | None, page_token("symbols, start, end, interval, adjustment and as_of")
]
FormatParam = Annotated[
    Format | None,
    Parameter(
        description=(
            "The answer's format, for clients that cannot send Accept (a URL given to "
            "pl.read_parquet or pd.read_csv); wins over Accept"
        ),
    ),
]
