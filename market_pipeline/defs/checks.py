"""One asset check per validation rule, so the UI shows data quality per rule and symbol.

Evaluated in the step that validates (the counts are a by-product, not a second pass); they
warn rather than block, since rejected rows are already quarantined.
docs/design/runs-and-assets.md says what each kind of rule means.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet

from dagster import AssetCheckKey, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from market_core.assets import ACTIONS, CLEAN
from market_pipeline.actions.rules import REJECT_RULES as ACTIONS_REJECT_RULES
from market_pipeline.bars.rules import FLAG_RULES, REJECT_RULES

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
