"""Rows in, (clean, rejects, flags) out: the data-quality rules of daily and intraday bars, as
pure polars. Impossible rows are rejected, suspicious ones (a split looks like one) flagged;
``validate`` is the one-symbol case of ``validate_many``'s query, so the two cannot drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
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
INPUT_COLUMNS = ("date", *VALUES, "meta_symbol", "fetched_at")
"""What the rules read of a raw response; its ``symbol`` column is not trusted, the ask is."""
ASKED = "_asked"
"""The symbol asked for, upper case: the unit every rule is taken over."""


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


def stack(
    responses: Mapping[str, pl.DataFrame], provisional: Mapping[str, dt.date | None]
) -> pl.LazyFrame:
    """One frame of many responses, each row tagged with its ask (its position ``_n`` in
    ``responses`` too, a cheap key to group and sort by) and its provisional date."""
    return pl.concat(
        [
            raw.lazy().select(
                pl.lit(n, dtype=pl.Int64).alias("_n"),
                pl.lit(symbol.upper()).alias(ASKED),
                pl.lit(provisional.get(symbol), dtype=pl.Date).alias("_provisional"),
                *(pl.col(c).cast(pl.String) for c in INPUT_COLUMNS[:-1]),
                pl.col("fetched_at"),
            )
            for n, (symbol, raw) in enumerate(responses.items())
        ],
        how="vertical_relaxed",
    )


def parse(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Typed columns beside the received strings (kept for the rejects), and ``_day``: the
    symbol and the date in one integer, which orders rows like (symbol, date)."""
    date = pl.col("date").str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
    return raw.with_columns(
        date.alias("_date"),
        *typed_values(),
        (pl.col("_n") * 2**32 + date.cast(pl.Int64)).alias("_day"),
    )


def typed_values() -> list[pl.Expr]:
    """``_open`` ... ``_volume``: the received strings as numbers (null where not one)."""
    return [pl.col(c).cast(pl.Float64, strict=False).alias(f"_{c}") for c in VALUES]


def value_conditions() -> list[tuple[str, pl.Expr]]:
    """The rules on a bar's values, over ``typed_values``: the same for daily and intraday
    bars, in the order a row is checked."""
    typed = [pl.col(f"_{c}") for c in VALUES]
    prices = [pl.col(f"_{c}") for c in PRICES]
    missing = pl.any_horizontal(*(e.is_null() | ~e.is_finite() for e in typed))
    return [
        ("missing_value", missing),
        ("non_positive_price", pl.any_horizontal(*(e <= 0 for e in prices))),
        ("negative_volume", pl.col("_volume") < 0),
        ("high_inconsistent", pl.col("_high") < pl.max_horizontal(*prices)),
        ("low_inconsistent", pl.col("_low") > pl.min_horizontal(*prices)),
    ]


def first_broken(conditions: Sequence[tuple[str, pl.Expr]]) -> pl.Expr:
    """The name of the first rule a row breaks, or null."""
    expr = pl.lit(None, dtype=pl.String)
    for name, condition in reversed(conditions):
        expr = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(expr)
    return expr


def _reason(today: dt.date) -> pl.Expr:
    return first_broken([
        ("bad_date", pl.col("_date").is_null()),
        ("future_date", pl.col("_date") > pl.lit(today)),
        ("wrong_symbol", pl.col("_wrong")),
        *value_conditions(),
    ])  # fmt: skip


def _wrong_symbol(ranked: pl.DataFrame, asks: Sequence[str]) -> pl.Expr:
    """``_wrong``: the response's meta symbol (normalized) is another symbol than the ask.

    Normalizing a string column is the dearest rule of all, so it runs only on the rows whose
    meta symbol differs from the ask as received (nearly none): where they are equal the
    answer is known, provided the ask is normal itself, which is checked once per ask.
    """
    normal = pl.Series(asks, dtype=pl.String)
    abnormal = normal.filter(normal.str.strip_chars().str.to_uppercase() != normal)
    meta = pl.col("meta_symbol").str.strip_chars().str.to_uppercase()
    wrong = meta.is_not_null() & (meta != "") & (meta != pl.col(ASKED))
    odd = pl.col("meta_symbol").ne_missing(pl.col(ASKED)) | pl.col(ASKED).is_in(abnormal.implode())
    rows = ranked.filter(odd).filter(wrong.fill_null(False)).get_column("_order")
    return pl.col("_order").is_in(rows.implode()).alias("_wrong")


def split_rejects(parsed: pl.LazyFrame, asks: Sequence[str], today: dt.date) -> pl.DataFrame:
    """Add ``reason``: the first rule a row breaks, or null; then settle repeated dates.

    Only rows that broke no other rule take part in ``settle_repeats``, each symbol's on
    their own (``_day`` holds the symbol's index beside the date).
    """
    ranked = parsed.with_row_index("_order").collect(engine="in-memory")
    ranked = (
        ranked.lazy()
        .with_columns(_wrong_symbol(ranked, asks))
        .with_columns(_reason(today).alias("reason"))
        .collect(engine="in-memory")
    )
    return settle_repeats(ranked, "_day", "duplicate_date")


def settle_repeats(marked: pl.DataFrame, key: str, reason: str) -> pl.DataFrame:
    """Rows that broke no rule and share ``key`` (``marked`` carries ``_order``, ``reason`` and
    the typed ``_<value>`` columns): exact copies keep the first, copies that disagree are all
    rejected as ``reason``, because nothing tells which one is right and a wrong one must never
    replace a stored good bar. Repeats are rare, so the costly comparison of values runs on
    them alone."""
    values = pl.struct([f"_{c}" for c in VALUES])
    repeated = (
        marked.filter(pl.col("reason").is_null() & pl.col(key).is_not_null())
        .filter(pl.col(key).is_duplicated())
        .filter(
            (values.n_unique().over(key) > 1)
            | (pl.col("_order") > pl.col("_order").min().over(key))
        )
        .get_column("_order")
    )
    if repeated.is_empty():
        return marked
    return marked.with_columns(
        pl.when(pl.col("_order").is_in(repeated.implode()))
        .then(pl.lit(reason))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )


def volume_median(bars: pl.DataFrame, rules: Rules) -> pl.Series:
    """Each bar's neighbours' median volume (21 bars centred, at least 5), where it matters.

    The rolling median was the dearest step of validation (a third of its CPU), and it only
    decides ``volume_outlier``. The median lies between the window's min and max, so a symbol
    with no bar ``volume_ratio`` times off its window's min or max (cheap to find) has no
    outlier: its median is left null, which flags nothing, as the median itself would. A slack
    of 0.1 % keeps rounding on the safe side. ``bars`` must be sorted by ``_day``.
    """
    volume, r = pl.col("volume").cast(pl.Float64), rules.volume_ratio
    window = {"window_size": 21, "min_samples": 5, "center": True}
    if r > 1:
        low, high = volume.rolling_min(**window), volume.rolling_max(**window)  # type: ignore[arg-type]
        maybe = (volume > low * r * 0.999) | (volume < high / r * 1.001) | (low <= 0)
        symbols = bars.filter(maybe.over("_n")).get_column("_n").unique()
    else:
        symbols = bars.get_column("_n").unique()
    median = pl.Series("_median", [None] * bars.height, dtype=pl.Float64)
    if symbols.is_empty():
        return median
    rows = bars.with_row_index("_row").filter(pl.col("_n").is_in(symbols.implode()))
    values = rows.select(volume.rolling_median(**window).over("_n")).to_series()  # type: ignore[arg-type]
    return median.scatter(rows.get_column("_row"), values)


def flag(bars: pl.LazyFrame, rules: Rules) -> pl.LazyFrame:
    """Flags for suspicious but possible bars; ``bars`` must be sorted by ``_day`` and carry
    ``volume_median``'s ``_median``."""
    move = (pl.col("close") / pl.col("close").shift(1).over("_n") - 1).abs()
    ratio = pl.col("volume").cast(pl.Float64) / pl.col("_median")
    flags = [
        pl.when(move > rules.move_threshold).then(pl.lit("large_move")),
        pl.when((ratio < 1 / rules.volume_ratio) | (ratio > rules.volume_ratio)).then(
            pl.lit("volume_outlier")
        ),
        pl.when(pl.col("timestamp").dt.date() == pl.col("_provisional")).then(
            pl.lit("provisional")
        ),
    ]
    joined = pl.concat_str(flags, separator=",", ignore_nulls=True)
    return bars.with_columns(pl.when(joined != "").then(joined).alias("flags"))


def _rejects(marked: pl.LazyFrame) -> pl.LazyFrame:
    return (
        marked.filter(pl.col("reason").is_not_null())
        .sort("_order")
        .select(
            pl.col(ASKED).alias("symbol"),
            pl.col("date").alias("timestamp"),
            "reason",
            *(pl.col(c).cast(pl.String) for c in VALUES),
            pl.col("fetched_at"),
        )
    )


def _in_window(rules: Rules) -> pl.Expr:
    if rules.history_start is None:
        return pl.lit(True)
    return pl.col("_date") >= pl.lit(rules.history_start)


def _clean(marked: pl.LazyFrame, rules: Rules) -> pl.DataFrame:
    bars = (
        marked.filter(pl.col("reason").is_null() & _in_window(rules))
        .sort("_day")
        .select(
            "_n",
            pl.col(ASKED).alias("symbol"),
            pl.col("_date").cast(pl.Datetime("us")).alias("timestamp"),
            *(pl.col(f"_{c}").alias(c) for c in PRICES),
            pl.col("_volume").round(0).cast(pl.Int64).alias("volume"),
            "_provisional",
        )
        .collect(engine="in-memory")
    )
    bars = bars.with_columns(volume_median(bars, rules))
    clean = flag(bars.lazy(), rules).select(list(CLEAN_SCHEMA)).cast(CLEAN_SCHEMA)  # type: ignore[arg-type]
    return clean.collect(engine="in-memory")


def _filtered_out(marked: pl.LazyFrame, rules: Rules) -> pl.LazyFrame:
    """Per symbol, the valid bars older than the history window."""
    outside = pl.col("reason").is_null() & ~_in_window(rules)
    return marked.group_by(ASKED).agg(outside.sum().alias("n"))


def _by_symbol(frame: pl.DataFrame, symbols: list[str]) -> dict[str, pl.DataFrame]:
    parts = frame.partition_by("symbol", as_dict=True)
    empty = frame.clear()
    return {s: parts.get((s,), empty) for s in symbols}


def _counts(frame: pl.DataFrame) -> dict[str, dict[str, int]]:
    """``symbol, name, n`` rows as ``{symbol: {name: n}}``."""
    counts: dict[str, dict[str, int]] = {}
    for symbol, name, n in frame.iter_rows():
        counts.setdefault(symbol, {})[name] = int(n)
    return counts


def validate_many(
    responses: Mapping[str, pl.DataFrame],
    *,
    today: dt.date,
    rules: Rules = Rules(),
    provisional: Mapping[str, dt.date | None] | None = None,
) -> dict[str, Validated]:
    """``validate`` for many responses at once, keyed like ``responses`` (the symbols asked).

    One query for all of them; each symbol's result is exactly what ``validate`` gives it
    alone. A symbol with no valid bar gets an empty ``clean``; the caller decides what that
    means.
    """
    asked = {symbol: symbol.upper() for symbol in responses}
    if len(set(asked.values())) != len(asked):
        raise ValueError(f"symbols asked twice (case aside): {sorted(responses)}")
    if not responses:
        return {}
    parsed = parse(stack(responses, provisional or {}))
    marked = split_rejects(parsed, list(asked.values()), today).lazy()
    rejects, outside = pl.collect_all(
        [_rejects(marked), _filtered_out(marked, rules)], engine="in-memory"
    )
    clean = _clean(marked, rules)
    reject_counts = _counts(rejects.group_by("symbol", "reason").len())
    flagged = clean.group_by("symbol").agg(
        pl.col("flags").str.contains(name).sum().alias(name) for name in FLAG_RULES
    )
    flag_counts = {row.pop("symbol"): row for row in flagged.iter_rows(named=True)}
    filtered_out = dict(outside.iter_rows())
    keys = list(asked.values())
    cleans, rejected = _by_symbol(clean, keys), _by_symbol(rejects, keys)
    return {
        symbol: Validated(
            clean=cleans[key],
            rejects=rejected[key],
            filtered_out=int(filtered_out.get(key, 0)),
            reject_counts=reject_counts.get(key, {}),
            flag_counts=flag_counts.get(key, dict.fromkeys(FLAG_RULES, 0)),
        )
        for symbol, key in asked.items()
    }


def validate(
    raw: pl.DataFrame,
    symbol: str,
    *,
    today: dt.date,
    rules: Rules = Rules(),
    provisional_date: dt.date | None = None,
) -> Validated:
    """Split a raw response into clean bars, rejects (with their rule) and counts."""
    one = validate_many(
        {symbol: raw}, today=today, rules=rules, provisional={symbol: provisional_date}
    )
    return one[symbol]
