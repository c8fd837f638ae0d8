"""The intraday stages, ``raw_intraday -> clean_intraday``: one TIME_SERIES_INTRADAY answer per
symbol and interval, kept as received, then validated.

Validation is the daily bars' (``bars.rules.value_conditions``, ``flag``): missing or NaN
values, non-positive prices, a negative volume, inconsistent high/low; large moves and volume
outliers are flagged. On top, the timestamp's rules: it parses, it is not after the answer was
fetched, its day is an NYSE trading day and the bar starts inside that day's session
(``market_core.sessions``, extended hours when asked). A rejected row goes to the rejects folder
with its rule; the good bars of the same answer still load.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from market_core.exchange import EXCHANGE_TZ
from market_core.home import DataHome
from market_core.schema import INTRADAY_COLUMNS
from market_core.sessions import exchange_time, session
from market_pipeline.bars.rules import (
    REJECT_COLUMNS,
    REJECT_RULES,
    VALUES,
    Rules,
    Validated,
    first_broken,
    flag,
    settle_repeats,
    typed_values,
    value_conditions,
    volume_median,
)
from market_pipeline.source.client import (
    AlphaVantageClient,
    FetchedIntraday,
    series_columns,
    text,
)
from market_pipeline.source.wire import FIELDS
from market_pipeline.store.files import write_parquet_atomic
from market_pipeline.store.intraday import BAR_SCHEMA

RAW_INTRADAY_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "symbol": pl.String,
    "timestamp": pl.String,
    **dict.fromkeys(FIELDS, pl.String),
    "meta_symbol": pl.String,
    "interval": pl.String,
    "last_refreshed": pl.String,
    "time_zone": pl.String,
    "extended_hours": pl.Boolean,
    "outputsize": pl.String,
    "source": pl.String,
    "fetched_at": pl.Datetime("us", "UTC"),
}
CLEAN_INTRADAY_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    **BAR_SCHEMA,  # what a load takes, and the flags of suspicious but possible bars
    "flags": pl.String,
}
INTRADAY_REJECT_RULES: dict[str, str] = {
    "bad_timestamp": "the timestamp is not YYYY-MM-DD HH:MM:SS",
    "future_timestamp": "the bar starts after the answer was fetched (New York time)",
    "wrong_symbol": REJECT_RULES["wrong_symbol"],
    "not_trading_day": "the NYSE does not trade that day (a weekend or a holiday)",
    "outside_session": (
        "the bar starts outside its day's session: 09:30-16:00 New York (13:00 on early-close "
        "days), 04:00-20:00 with ALPHAVANTAGE_INTRADAY_EXTENDED=true"
    ),
    **{name: REJECT_RULES[name] for name, _ in value_conditions()},
    "duplicate_timestamp": "a timestamp listed twice in one answer (all copies if they disagree)",
}
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
COMPACT_BARS = 100
DEFAULT_RULES = Rules()


class IntradayError(Exception):
    """The symbol has no readable raw intraday answer, or none of its bars is valid."""


@dataclass(frozen=True)
class RawIntraday:
    symbol: str
    interval: str
    rows: int
    first: str
    last: str
    outputsize: str
    source: str
    path: str


@dataclass(frozen=True)
class CleanIntraday:
    symbol: str
    interval: str
    validated: Validated
    path: str
    rejects_path: str

    @property
    def bars(self) -> pl.DataFrame:
        """The ``ohlcv_intraday`` columns, as ``StoreWriter.load_intraday`` takes them."""
        return self.validated.clean.select(INTRADAY_COLUMNS)


def raw_intraday_frame(fetched: FetchedIntraday) -> pl.DataFrame:
    meta, stamps, values = series_columns(fetched.payload, fetched.series)
    n = len(stamps)
    columns: dict[str, list[Any]] = {
        "symbol": [fetched.symbol] * n,
        "timestamp": stamps,
        **values,
        "meta_symbol": [text(meta.get("2. Symbol"))] * n,
        "interval": [fetched.interval] * n,
        "last_refreshed": [text(meta.get("3. Last Refreshed"))] * n,
        "time_zone": [text(meta.get("6. Time Zone"))] * n,
        "extended_hours": [fetched.extended_hours] * n,
        "outputsize": [fetched.outputsize] * n,
        "source": [fetched.source] * n,
        "fetched_at": [fetched.fetched_at] * n,
    }
    return pl.DataFrame(columns, schema=RAW_INTRADAY_SCHEMA)


def stored_newest(home: DataHome, symbol: str, interval: str) -> dt.datetime | None:
    """The newest bar start in the symbol's current raw intraday answer, if any."""
    path = home.raw_intraday_file(symbol, interval)
    if not path.exists():
        return None
    try:
        newest = pl.scan_parquet(path).select(pl.col("timestamp").max()).collect().item()
        return dt.datetime.strptime(newest, TIMESTAMP_FORMAT) if newest else None
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return None


def choose_intraday_outputsize(newest: dt.datetime | None, interval: str, now: dt.datetime) -> str:
    """``full`` for a first fetch or when 100 bars no longer reach back to the newest stored
    one (the first fetch of a morning at 1 or 5 minutes), else ``compact``."""
    if newest is None:
        return "full"
    reach = dt.timedelta(minutes=COMPACT_BARS * int(interval.removesuffix("min")))
    return "compact" if now - newest <= reach else "full"


def fetch_raw_intraday(
    client: AlphaVantageClient, home: DataHome, symbol: str, interval: str, *, extended: bool
) -> RawIntraday:
    now = exchange_time(dt.datetime.now(EXCHANGE_TZ))
    outputsize = choose_intraday_outputsize(stored_newest(home, symbol, interval), interval, now)
    fetched = client.fetch_intraday(
        symbol, interval, extended_hours=extended, outputsize=outputsize
    )
    frame = raw_intraday_frame(fetched)
    path = home.raw_intraday_file(symbol, interval)
    write_parquet_atomic(frame, path)
    stamps = frame.get_column("timestamp")
    return RawIntraday(
        symbol=symbol,
        interval=interval,
        rows=frame.height,
        first=str(stamps.min()),
        last=str(stamps.max()),
        outputsize=fetched.outputsize,
        source=fetched.source,
        path=str(path),
    )


def _sessions(days: pl.Series, extended: bool) -> pl.DataFrame:
    """Each trading day's session bounds; a day that does not trade has no row."""
    rows = [
        (found.day, found.opens, found.closes)
        for day in days.drop_nulls().unique().to_list()
        if (found := session(day, extended=extended)) is not None
    ]
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "_d": pl.Date,
        "_opens": pl.Datetime("us"),
        "_closes": pl.Datetime("us"),
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _mark(raw: pl.DataFrame, symbol: str, extended: bool) -> pl.DataFrame:
    """The raw rows with typed values and ``reason``: the first rule each breaks, or null."""
    stamp = (
        pl.col("timestamp")
        .str.strip_chars()
        .str.strptime(pl.Datetime("us"), TIMESTAMP_FORMAT, strict=False)
    )
    fetched = pl.col("fetched_at").dt.convert_time_zone(str(EXCHANGE_TZ)).dt.replace_time_zone(None)
    frame = raw.with_row_index("_order").with_columns(
        stamp.alias("_ts"), fetched.alias("_fetched"), *typed_values()
    )
    frame = frame.with_columns(pl.col("_ts").dt.date().alias("_d"))
    frame = frame.join(_sessions(frame.get_column("_d"), extended), on="_d", how="left")
    meta = pl.col("meta_symbol").str.strip_chars().str.to_uppercase()
    wrong = meta.is_not_null() & (meta != "") & (meta != symbol.upper())
    outside = (pl.col("_ts") < pl.col("_opens")) | (pl.col("_ts") >= pl.col("_closes"))
    reason = first_broken([
        ("bad_timestamp", pl.col("_ts").is_null()),
        ("future_timestamp", pl.col("_ts") > pl.col("_fetched")),
        ("wrong_symbol", wrong),
        ("not_trading_day", pl.col("_opens").is_null()),
        ("outside_session", outside),
        *value_conditions(),
    ])  # fmt: skip
    marked = frame.with_columns(reason.alias("reason")).sort("_order")
    return settle_repeats(marked, "_ts", "duplicate_timestamp")


def validate_intraday(
    raw: pl.DataFrame, symbol: str, interval: str, *, extended: bool, rules: Rules = DEFAULT_RULES
) -> Validated:
    """Split one raw intraday answer into clean bars (flagged like daily ones), rejects (with
    their rule) and counts."""
    marked = _mark(raw, symbol, extended)
    rejects = marked.filter(pl.col("reason").is_not_null()).select(
        pl.lit(symbol.upper()).alias("symbol"),
        "timestamp",
        "reason",
        *(pl.col(c).cast(pl.String) for c in VALUES),
        "fetched_at",
    )
    bars = (
        marked.filter(pl.col("reason").is_null())
        .sort("_ts")
        .select(
            pl.lit(0, dtype=pl.Int64).alias("_n"),
            pl.col("_ts").alias("timestamp"),
            pl.lit(symbol.upper()).alias("symbol"),
            pl.lit(interval).alias("interval"),
            *(pl.col(f"_{c}").alias(c) for c in VALUES[:-1]),
            pl.col("_volume").round(0).cast(pl.Int64).alias("volume"),
            pl.lit(None, dtype=pl.Date).alias("_provisional"),
        )
    )
    bars = bars.with_columns(volume_median(bars, rules))
    clean = flag(bars.lazy(), rules).select(list(CLEAN_INTRADAY_SCHEMA)).collect()
    counts = rejects.group_by("reason").len().iter_rows()
    flags = clean.get_column("flags").drop_nulls()
    return Validated(
        clean=clean.cast(CLEAN_INTRADAY_SCHEMA),  # type: ignore[arg-type]
        rejects=rejects.select(REJECT_COLUMNS),
        reject_counts={str(reason): int(n) for reason, n in counts},
        flag_counts={
            name: int(flags.str.contains(name).sum()) for name in ("large_move", "volume_outlier")
        },
    )


def clean_intraday(
    home: DataHome, symbol: str, interval: str, *, extended: bool, rules: Rules = DEFAULT_RULES
) -> CleanIntraday:
    """Validate the symbol's raw intraday answer and write its clean bars and rejects; with
    no valid bar at all the previous clean file stays and the symbol fails."""
    path = home.raw_intraday_file(symbol, interval)
    if not path.exists():
        raise IntradayError(f"{symbol}: no raw intraday data yet; materialize raw_intraday first")
    try:
        raw = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise IntradayError(f"{symbol}: cannot read {path}: {exc}") from exc
    result = validate_intraday(raw, symbol, interval, extended=extended, rules=rules)
    rejects_path = home.intraday_rejects_file(symbol, interval)
    write_parquet_atomic(result.rejects, rejects_path)
    if result.clean.is_empty():
        counts = ", ".join(f"{k}={v}" for k, v in sorted(result.reject_counts.items()))
        raise IntradayError(
            f"{symbol}: no valid {interval} bar in the latest answer ({raw.height} rows; "
            f"rejected: {counts or 'none'}; see {rejects_path})"
        )
    clean_path = home.clean_intraday_file(symbol, interval)
    write_parquet_atomic(result.clean, clean_path)
    return CleanIntraday(symbol, interval, result, str(clean_path), str(rejects_path))
