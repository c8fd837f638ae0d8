"""One asset check per validation rule, so the UI shows data quality per rule and symbol.

Evaluated in the step that validates (the counts are a by-product, not a second pass); they
warn rather than block, since rejected rows are already quarantined.
docs/design/runs-and-assets.md says what each kind of rule means.

The session checks on ``ohlcv_data`` are evaluated in the step that loads, after the load: one
query over the stored bars of the run's symbols (``daily.completeness``), whether or not each
loaded, so a 10-symbol update reads 10 symbols' bars, not the whole table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet

from dagster import AssetCheckKey, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from market_core.assets import ACTIONS, CLEAN, OHLCV
from market_pipeline.actions.rules import REJECT_RULES as ACTIONS_REJECT_RULES
from market_pipeline.bars.rules import FLAG_RULES, REJECT_RULES
from market_pipeline.daily.completeness import (
    BEFORE_LISTING,
    MISSING_SESSIONS,
    NOT_A_SESSION,
    Finding,
    ReportUnavailable,
    SessionReport,
    stored_session_report,
)
from market_pipeline.store.duckdb_file import DuckDBFileStore
from market_pipeline.store.lake import LakeStore

CHECKED_ASSET = AssetKey(CLEAN)
ACTIONS_ASSET = AssetKey(ACTIONS)
RULES: dict[str, tuple[str, str]] = {
    **{f"reject_{r}": (r, f"Rows rejected because {d}.") for r, d in REJECT_RULES.items()},
    **{f"flag_{r}": (r, f"Rows kept but flagged: {d}.") for r, d in FLAG_RULES.items()},
}
ACTIONS_RULES: dict[str, tuple[str, str]] = {
    f"reject_{r}": (r, f"Corporate-action rows rejected because {d}.")
    for r, d in ACTIONS_REJECT_RULES.items()
}
UNEXPLAINED = "unexplained_large_move"
LOADED_ASSET = AssetKey(OHLCV)
SESSION_CHECKS: dict[str, tuple[str, str]] = {
    MISSING_SESSIONS: (
        "sessions",
        "NYSE sessions with no bar, from a symbol's first bar (or its listing's ipo_date, "
        "whichever is later) to its last bar (or its delisting_date, whichever is earlier).",
    ),
    NOT_A_SESSION: (
        "bars",
        "Bars dated on a weekend or an NYSE holiday: reported, kept in the table.",
    ),
    BEFORE_LISTING: (
        "bars",
        "Bars dated before the listing's ipo_date: usually an earlier company with the same "
        "ticker. Needs the listings table.",
    ),
}
SYMBOLS_SHOWN = 100
"""The most affected symbols a session check names; ``symbols_affected`` counts them all."""
CHECK_SPECS = [
    *(
        AssetCheckSpec(name, asset=CHECKED_ASSET, description=description)
        for name, (_, description) in RULES.items()
    ),
    AssetCheckSpec(
        UNEXPLAINED,
        asset=CHECKED_ASSET,
        description=(
            "Large one-day moves (flag_large_move) that no known split or dividend explains: "
            "a split we have not heard of, or bad data. The symbol's corporate actions are "
            "fetched again once for each."
        ),
    ),
    *(
        AssetCheckSpec(name, asset=ACTIONS_ASSET, description=description)
        for name, (_, description) in ACTIONS_RULES.items()
    ),
    *(
        AssetCheckSpec(name, asset=LOADED_ASSET, description=description)
        for name, (_, description) in SESSION_CHECKS.items()
    ),
]


def check_results(
    selected: AbstractSet[AssetCheckKey],
    reject_counts: Mapping[str, Mapping[str, int]],
    flag_counts: Mapping[str, Mapping[str, int]],
) -> Iterator[AssetCheckResult]:
    """A result per selected check, with the offending symbols and their row counts."""
    for name, (rule, _) in RULES.items():
        if AssetCheckKey(CHECKED_ASSET, name) not in selected:
            continue
        counts = reject_counts if name.startswith("reject_") else flag_counts
        yield _rule_result(CHECKED_ASSET, name, rule, counts)


def _rule_result(
    asset: AssetKey, name: str, rule: str, counts: Mapping[str, Mapping[str, int]]
) -> AssetCheckResult:
    """One rule's WARN result: the rows it caught, per symbol, out of the symbols checked."""
    by_symbol = {sym: c[rule] for sym, c in sorted(counts.items()) if c.get(rule)}
    total = sum(by_symbol.values())
    return AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "rows": total,
            "symbols_checked": len(counts),
            "symbols_affected": len(by_symbol),
            "by_symbol": by_symbol,
        },
    )


def actions_check_results(
    selected: AbstractSet[AssetCheckKey], reject_counts: Mapping[str, Mapping[str, int]]
) -> Iterator[AssetCheckResult]:
    """A result per selected corporate-actions rule, with the symbols and their row counts."""
    for name, (rule, _) in ACTIONS_RULES.items():
        if AssetCheckKey(ACTIONS_ASSET, name) not in selected:
            continue
        yield _rule_result(ACTIONS_ASSET, name, rule, reject_counts)


def unexplained_move_result(
    selected: AbstractSet[AssetCheckKey],
    unexplained: Mapping[str, Sequence[dt.date]],
    symbols_checked: int,
) -> Iterator[AssetCheckResult]:
    """The large moves no known action explains, per symbol with their dates."""
    if AssetCheckKey(CHECKED_ASSET, UNEXPLAINED) not in selected:
        return
    by_symbol = {s: [d.isoformat() for d in days]
                 for s, days in sorted(unexplained.items()) if days}  # fmt: skip
    moves = sum(len(days) for days in by_symbol.values())
    yield AssetCheckResult(
        asset_key=CHECKED_ASSET,
        check_name=UNEXPLAINED,
        passed=moves == 0,
        severity=AssetCheckSeverity.WARN,
        description=(
            "; ".join(f"{s}: {', '.join(days)}" for s, days in by_symbol.items())[:2000]
            if by_symbol
            else "every large move has a split or dividend on its day"
        ),
        metadata={
            "moves": moves,
            "symbols_checked": symbols_checked,
            "symbols_affected": len(by_symbol),
            "by_symbol": by_symbol,
        },
    )


def session_check_results(
    selected: AbstractSet[AssetCheckKey],
    store: DuckDBFileStore | LakeStore,
    warn: Callable[[str], None],
    symbols: Sequence[str],
) -> Iterator[AssetCheckResult]:
    """A result per selected session check, over the stored bars of ``symbols``. A store that
    cannot be read now leaves them unevaluated (with a warning), never fails the load."""
    names = [name for name in SESSION_CHECKS if AssetCheckKey(LOADED_ASSET, name) in selected]
    if not names:
        return
    try:
        report = stored_session_report(store, symbols)
    except ReportUnavailable as exc:
        warn(f"session checks not evaluated: {exc}")
        return
    for name in names:
        yield session_result(name, report)


def session_result(name: str, report: SessionReport) -> AssetCheckResult:
    """One session check's WARN result: per symbol the count and the earliest dates, the most
    affected symbols first."""
    unit, _ = SESSION_CHECKS[name]
    found = report.findings[name]
    shown = sorted(found.items(), key=lambda item: (-item[1].count, item[0]))[:SYMBOLS_SHOWN]
    return AssetCheckResult(
        asset_key=LOADED_ASSET,
        check_name=name,
        passed=not found,
        severity=AssetCheckSeverity.WARN,
        description=(
            "; ".join(_named(symbol, finding) for symbol, finding in shown)[:2000]
            if found
            else f"none in {report.symbols_checked} symbols"
        ),
        metadata={
            unit: sum(finding.count for finding in found.values()),
            "symbols_checked": report.symbols_checked,
            "symbols_affected": len(found),
            "symbols_with_listing": report.symbols_with_listing,
            "by_symbol": {
                symbol: {"count": finding.count, "first": [d.isoformat() for d in finding.first]}
                for symbol, finding in shown
            },
        },
    )


def _named(symbol: str, finding: Finding) -> str:
    days = ", ".join(d.isoformat() for d in finding.first)
    more = (
        f" and {finding.count - len(finding.first)} more"
        if finding.count > len(finding.first)
        else ""
    )
    return f"{symbol}: {days}{more}"
