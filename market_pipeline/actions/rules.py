"""Corporate-action rows in, (events, rejects, counts, complete kinds) out: pure polars.

The discipline of ``bars.rules``: a row that breaks a rule goes to the rejects with the
first rule it breaks, never dropped silently, and never reaches the table. A rejected row must
not delete a stored event either, so the answer also tells the store which kinds it may treat as
complete (``complete_kinds``) and which events it mentioned at all (``answered``).

Alpha Vantage's SPLITS and DIVIDENDS answers arrive as strings under their own keys. Both are
first put into one long frame under the table's column names (``stack``), so every rule is one
expression over all symbols and both kinds at once, each rule taken per symbol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from market_core.schema import DIVIDEND, SPLIT
from market_pipeline.store.actions import EVENT_SCHEMA, iso_date

REJECT_RULES: dict[str, str] = {
    "bad_date": "the ex-date is not YYYY-MM-DD, or another date is neither that nor None/empty",
    "bad_split_factor": "the split factor is not a positive finite number",
    "bad_amount": "the dividend amount is negative or not a finite number",
    "duplicate_event": "the event is listed twice in one answer (all copies if they disagree)",
}

KINDS = (SPLIT, DIVIDEND)
WIRE_NAMES: dict[str, dict[str, str]] = {
    SPLIT: {"ex_date": "effective_date", "split_factor": "split_factor"},
    DIVIDEND: {
        "ex_date": "ex_dividend_date",
        "amount": "amount",
        "declaration_date": "declaration_date",
        "record_date": "record_date",
        "payment_date": "payment_date",
    },
}
"""Each kind's table columns and the keys Alpha Vantage sends them under: the raw file's
columns. A column a file lacks reads as null (a rule then says so)."""

FIELDS = ("ex_date", "split_factor", "amount", "declaration_date", "record_date", "payment_date")
"""A row's values under the table's names, as received (strings)."""
OTHER_DATES = ("declaration_date", "record_date", "payment_date")
UNKNOWN_DATES = ("None", "")
"""How Alpha Vantage writes a date nobody recorded: null in the table, not an error."""

REJECT_COLUMNS = ("symbol", "kind", *FIELDS, "reason", "fetched_at")
FETCHED_AT = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class RawActions:
    """One symbol's two answers as the raw_actions files hold them (any extra column ignored)."""

    splits: pl.DataFrame
    dividends: pl.DataFrame


@dataclass(frozen=True)
class ValidatedActions:
    events: pl.DataFrame
    """``EVENT_SCHEMA``, each (ex_date, kind) once, ascending."""
    rejects: pl.DataFrame
    """``REJECT_COLUMNS``: the values as received, with the rule they broke."""
    reject_counts: dict[str, int] = field(default_factory=dict)
    complete_kinds: frozenset[str] = frozenset(KINDS)
    """Kinds every row of which had a readable ex-date: an event of such a kind that the answer
    does not mention has vanished from the vendor's history."""


def _received(raw: pl.DataFrame, kind: str) -> list[pl.Expr]:
    names = WIRE_NAMES[kind]
    return [
        pl.col(names[f]).cast(pl.String).alias(f)
        if f in names and names[f] in raw.columns
        else pl.lit(None, dtype=pl.String).alias(f)
        for f in FIELDS
    ]


def stack(answers: Mapping[str, RawActions]) -> pl.LazyFrame:
    """All rows of all answers in one frame: ``_n`` (the answer's position), the symbol asked
    (upper case; the file's own column is not trusted), the kind, the fields as received.

    The tags are added as columns first, so that a file lacking every vendor column still
    yields one row per row (a select of literals alone would make one)."""
    parts = [
        raw.lazy()
        .with_columns(
            pl.lit(n, dtype=pl.Int64).alias("_n"),
            pl.lit(symbol.upper()).alias("_symbol"),
            pl.lit(kind).alias("_kind"),
        )
        .select(
            "_n",
            pl.col("_symbol").alias("symbol"),
            pl.col("_kind").alias("kind"),
            *_received(raw, kind),
            (pl.col("fetched_at") if "fetched_at" in raw.columns else pl.lit(None))
            .cast(FETCHED_AT)
            .alias("fetched_at"),
        )
        for n, (symbol, answer) in enumerate(answers.items())
        for kind, raw in ((SPLIT, answer.splits), (DIVIDEND, answer.dividends))
    ]
    return pl.concat(parts, how="vertical_relaxed")


def parse(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Typed values beside the received strings (kept for the rejects); ``_bad_other_date``:
    a declaration, record or payment date that is neither ISO nor unknown."""
    unknown = [
        pl.col(c).is_null() | pl.col(c).str.strip_chars().is_in(UNKNOWN_DATES) for c in OTHER_DATES
    ]
    return rows.with_columns(
        iso_date("ex_date").alias("_ex_date"),
        pl.col("split_factor").str.strip_chars().cast(pl.Float64, strict=False).alias("_split"),
        pl.col("amount").str.strip_chars().cast(pl.Float64, strict=False).alias("_amount"),
        *(iso_date(c).alias(f"_{c}") for c in OTHER_DATES),
        pl.any_horizontal(
            [~known & iso_date(c).is_null() for c, known in zip(OTHER_DATES, unknown, strict=True)]
        ).alias("_bad_other_date"),
    )


def _reason() -> pl.Expr:
    split, amount = pl.col("_split"), pl.col("_amount")
    is_split, is_dividend = pl.col("kind") == SPLIT, pl.col("kind") == DIVIDEND
    conditions: list[tuple[str, pl.Expr]] = [
        ("bad_date", pl.col("_ex_date").is_null() | pl.col("_bad_other_date")),
        ("bad_split_factor", is_split & (split.is_null() | ~split.is_finite() | (split <= 0))),
        ("bad_amount", is_dividend & (amount.is_null() | ~amount.is_finite() | (amount < 0))),
    ]
    expr = pl.lit(None, dtype=pl.String)
    for name, condition in reversed(conditions):
        expr = pl.when(condition.fill_null(False)).then(pl.lit(name)).otherwise(expr)
    return expr


def mark(parsed: pl.LazyFrame) -> pl.DataFrame:
    """Add ``reason``: the first rule a row breaks, or null; then settle repeated events.

    Exact copies of an event (equal values once typed) keep the first; copies that disagree
    are all rejected, since nothing tells which one is right and a wrong one must never replace
    a stored event. Only rows that broke no other rule take part, each symbol's on their own."""
    ranked = parsed.with_row_index("_order").with_columns(_reason().alias("reason"))
    event = ["_n", "kind", "_ex_date"]
    values = pl.struct("_split", "_amount", *(f"_{c}" for c in OTHER_DATES))
    valid = pl.col("reason").is_null()
    repeated = (
        ranked.filter(valid)
        .filter(pl.len().over(event) > 1)
        .filter(
            (values.n_unique().over(event) > 1)
            | (pl.col("_order") > pl.col("_order").min().over(event))
        )
        .select("_order")
    )
    return (
        ranked.join(repeated.with_columns(pl.lit(True).alias("_repeated")), on="_order", how="left")
        .with_columns(
            pl.when(pl.col("_repeated").fill_null(False))
            .then(pl.lit("duplicate_event"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
        .sort("_order")
        .collect(engine="in-memory")
    )


def _events(marked: pl.DataFrame) -> pl.DataFrame:
    return (
        marked.filter(pl.col("reason").is_null())
        .sort("_n", "_ex_date", "kind")
        .select(
            "symbol",
            pl.col("_ex_date").alias("ex_date"),
            "kind",
            pl.col("_split").alias("split_factor"),
            pl.col("_amount").alias("amount"),
            *(pl.col(f"_{c}").alias(c) for c in OTHER_DATES),
        )
        .cast(EVENT_SCHEMA)  # type: ignore[arg-type]
    )


def _rejects(marked: pl.DataFrame) -> pl.DataFrame:
    return marked.filter(pl.col("reason").is_not_null()).select(REJECT_COLUMNS)


def _incomplete(marked: pl.DataFrame) -> dict[str, set[str]]:
    """Per symbol, the kinds with a row whose ex-date could not be read."""
    pairs = marked.filter(pl.col("_ex_date").is_null()).select("symbol", "kind").unique()
    incomplete: dict[str, set[str]] = {}
    for symbol, kind in pairs.iter_rows():
        incomplete.setdefault(symbol, set()).add(kind)
    return incomplete


def _reject_counts(marked: pl.DataFrame) -> pl.DataFrame:
    """``symbol, reason, n`` for the rejected rows."""
    return marked.filter(pl.col("reason").is_not_null()).group_by("symbol", "reason").len()


def _by_symbol(frame: pl.DataFrame, symbols: list[str]) -> dict[str, pl.DataFrame]:
    parts = frame.partition_by("symbol", as_dict=True)
    empty = frame.clear()
    return {s: parts.get((s,), empty) for s in symbols}


def validate_actions_many(answers: Mapping[str, RawActions]) -> dict[str, ValidatedActions]:
    """``validate_actions`` for many symbols in one query, keyed like ``answers``."""
    asked = {symbol: symbol.upper() for symbol in answers}
    if len(set(asked.values())) != len(asked):
        raise ValueError(f"symbols asked twice (case aside): {sorted(answers)}")
    if not answers:
        return {}
    marked = mark(parse(stack(answers)))
    keys = list(asked.values())
    events, rejects = _by_symbol(_events(marked), keys), _by_symbol(_rejects(marked), keys)
    counts: dict[str, dict[str, int]] = {}
    for symbol, reason, n in _reject_counts(marked).iter_rows():
        counts.setdefault(symbol, {})[reason] = int(n)
    incomplete = _incomplete(marked)
    return {
        symbol: ValidatedActions(
            events=events[key],
            rejects=rejects[key],
            reject_counts=counts.get(key, {}),
            complete_kinds=frozenset(KINDS) - incomplete.get(key, set()),
        )
        for symbol, key in asked.items()
    }


def validate_actions(
    splits: pl.DataFrame, dividends: pl.DataFrame, symbol: str
) -> ValidatedActions:
    """Split one symbol's SPLITS and DIVIDENDS answers into events, rejects and counts."""
    return validate_actions_many({symbol: RawActions(splits, dividends)})[symbol]
