"""One Dagster asset check per validation rule, so the UI shows data quality per rule and symbol.

The checks are evaluated inside the step that cleans the data (the counts are a by-product of
validation, not a second pass over the files). A reject rule that fired means the vendor sent
impossible rows: they were quarantined, so the check warns rather than blocks. A flag rule that
fired means suspicious but possible bars (a split) were kept and marked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet

from dagster import AssetCheckKey, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from market_pipeline.validation import FLAG_RULES, REJECT_RULES

CHECKED_ASSET = AssetKey("clean_data")
RULES: dict[str, tuple[str, str]] = {
    **{f"reject_{r}": (r, f"Rows rejected because {d}.") for r, d in REJECT_RULES.items()},
    **{f"flag_{r}": (r, f"Rows kept but flagged: {d}.") for r, d in FLAG_RULES.items()},
}
CHECK_SPECS = [
    AssetCheckSpec(name, asset=CHECKED_ASSET, description=description)
    for name, (_, description) in RULES.items()
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
        by_symbol = {sym: c[rule] for sym, c in sorted(counts.items()) if c.get(rule)}
        total = sum(by_symbol.values())
        yield AssetCheckResult(
            asset_key=CHECKED_ASSET,
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
