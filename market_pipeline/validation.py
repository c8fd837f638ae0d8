"""Rows in, (clean, rejects, flags) out: the data-quality rules, as pure polars functions.

Two kinds of rule, because unadjusted prices contain real events that look like errors:

* an impossible row (``REJECT_RULES``) goes to the rejects with the first rule it breaks:
  nothing is dropped silently, and a rejected row can never overwrite a good bar;
* a suspicious row (``FLAG_RULES``) is kept and flagged: a one-day move beyond the threshold is
  what a stock split looks like in ``TIME_SERIES_DAILY`` prices.

Timestamps follow one convention: midnight of the trading date, naive, exchange-local.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

PRICES = ("open", "high", "low", "close")
VALUES = (*PRICES, "volume")

REJECT_RULES: dict[str, str] = {
    "bad_date": "the date is not YYYY-MM-DD",
    "future_date": "the bar is dated after today (US/Eastern)",
    "wrong_symbol": "the series is for another symbol than asked",
    "missing_value": "a price or the volume is missing, empty, non-numeric or NaN",
    "non_positive_price": "a price is zero or negative",
    "negative_volume": "the volume is negative",
    "high_inconsistent": "high is below open, close or low",
    "low_inconsistent": "low is above open, close or high",
    "duplicate_date": "a date listed twice in one response (all copies if they disagree)",
}
FLAG_RULES: dict[str, str] = {
    "large_move": "close moved more than the threshold in one day (a split looks like this)",
    "volume_outlier": "volume is 100x below or above the median of its neighbours",
    "provisional": "the newest bar of a response fetched during the trading day",
}

CLEAN_SCHEMA = {
    "symbol": pl.String,
    "timestamp": pl.Datetime("us"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Int64,
    "flags": pl.String,
}
REJECT_COLUMNS = ("symbol", "timestamp", "reason", *VALUES, "fetched_at")


@dataclass(frozen=True)
class Rules:
    move_threshold: float = 0.4
    volume_ratio: float = 100.0
    history_start: dt.date | None = None


@dataclass
class Validated:
    clean: pl.DataFrame
    rejects: pl.DataFrame
    filtered_out: int = 0
    reject_counts: dict[str, int] = field(default_factory=dict)
    flag_counts: dict[str, int] = field(default_factory=dict)


def parse(raw: pl.DataFrame) -> pl.DataFrame:
    """Typed columns beside the received strings (kept for the rejects)."""
    number = {c: pl.col(c).cast(pl.Float64, strict=False) for c in VALUES}
    return raw.with_columns(
        pl.col("symbol").str.strip_chars().str.to_uppercase(),
        pl.col("date").str.strip_chars().str.to_date("%Y-%m-%d", strict=False).alias("_date"),
        *(expr.alias(f"_{c}") for c, expr in number.items()),
    )


def _reason(symbol_expected: str, today: dt.date) -> pl.Expr:
    typed = [pl.col(f"_{c}") for c in VALUES]
    prices = [pl.col(f"_{c}") for c in PRICES]
    missing = pl.any_horizontal(*(e.is_null() | ~e.is_finite() for e in typed))
    meta = pl.col("meta_symbol").str.strip_chars().str.to_uppercase()
    conditions: list[tuple[str, pl.Expr]] = [
        ("bad_date", pl.col("_date").is_null()),
        ("future_date", pl.col("_date") > pl.lit(today)),
        ("wrong_symbol", meta.is_not_null() & (meta != "") & (meta != symbol_expected)),
        ("missing_value", missing),
        ("non_positive_price", pl.any_horizontal(*(e <= 0 for e in prices))),
        ("negative_volume", pl.col("_volume") < 0),
        ("high_inconsistent", pl.col("_high") < pl.max_horizontal(*prices)),
        ("low_inconsistent", pl.col("_low") > pl.min_horizontal(*prices)),
    ]
    expr = pl.lit(None, dtype=pl.String)
    for name, condition in reversed(conditions):
        expr = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(expr)
    return expr


def split_rejects(parsed: pl.DataFrame, symbol: str, today: dt.date) -> pl.DataFrame:
    """Add ``reason``: the first rule a row breaks, or null; then settle repeated dates.

    Exact copies of a bar keep the first; copies that disagree are all rejected, because
    nothing tells which one is right and a wrong one must never replace a stored good bar.
    """
    ranked = parsed.with_row_index("_order").with_columns(_reason(symbol, today).alias("reason"))
    values = pl.struct([f"_{c}" for c in VALUES])
    repeated = (
        ranked.filter(pl.col("reason").is_null())
        .filter((values.n_unique().over("_date") > 1) | ~pl.col("_date").is_first_distinct())
        .get_column("_order")
    )
    return ranked.with_columns(
        pl.when(pl.col("_order").is_in(repeated.implode()))
        .then(pl.lit("duplicate_date"))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )


def flag(clean: pl.DataFrame, rules: Rules, provisional_date: dt.date | None) -> pl.DataFrame:
    """Flags for suspicious but possible bars; ``clean`` must be sorted by timestamp."""
    move = (pl.col("close") / pl.col("close").shift(1) - 1).abs()
    median = pl.col("volume").cast(pl.Float64).rolling_median(21, min_samples=5, center=True)
    ratio = pl.col("volume").cast(pl.Float64) / median
    flags = [
        pl.when(move > rules.move_threshold).then(pl.lit("large_move")),
        pl.when((ratio < 1 / rules.volume_ratio) | (ratio > rules.volume_ratio)).then(
            pl.lit("volume_outlier")
        ),
        pl.when(pl.col("timestamp").dt.date() == pl.lit(provisional_date)).then(
            pl.lit("provisional")
        ),
    ]
    joined = pl.concat_str(flags, separator=",", ignore_nulls=True)
    return clean.with_columns(pl.when(joined != "").then(joined).alias("flags"))


def validate(
    raw: pl.DataFrame,
    symbol: str,
    *,
    today: dt.date,
    rules: Rules = Rules(),
    provisional_date: dt.date | None = None,
) -> Validated:
    """Split a raw response into clean bars, rejects (with their rule) and counts."""
    marked = split_rejects(parse(raw), symbol.upper(), today)
    rejects = (
        marked.filter(pl.col("reason").is_not_null())
        .sort("_order")
        .select(
            pl.lit(symbol.upper()).alias("symbol"),
            pl.col("date").alias("timestamp"),
            "reason",
            *(pl.col(c).cast(pl.String) for c in VALUES),
            pl.col("fetched_at"),
        )
    )
    good = marked.filter(pl.col("reason").is_null())
    if rules.history_start is not None:
        in_window = good.filter(pl.col("_date") >= pl.lit(rules.history_start))
        filtered_out = good.height - in_window.height
        good = in_window
    else:
        filtered_out = 0
    clean = good.select(
        pl.lit(symbol.upper()).alias("symbol"),
        pl.col("_date").cast(pl.Datetime("us")).alias("timestamp"),
        *(pl.col(f"_{c}").alias(c) for c in PRICES),
        pl.col("_volume").round(0).cast(pl.Int64).alias("volume"),
    ).sort("timestamp")
    clean = flag(clean, rules, provisional_date).cast(CLEAN_SCHEMA)  # type: ignore[arg-type]
    reject_counts = dict(rejects.group_by("reason").len().iter_rows())
    flag_counts = {
        name: int(clean.get_column("flags").str.contains(name).sum()) for name in FLAG_RULES
    }
    return Validated(clean, rejects, filtered_out, reject_counts, flag_counts)
