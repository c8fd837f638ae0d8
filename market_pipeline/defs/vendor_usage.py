"""The Alpha Vantage calls used and left today, on the run (tags the UI shows on the run's
page) and in ``market_core.vendor_usage``'s record, which the API's ``/metrics`` reads."""

from __future__ import annotations

from dagster import AssetExecutionContext

from market_core import vendor_usage
from market_pipeline.defs.resources import AlphaVantageResource
from market_pipeline.source.rate_limit import STORE_ERRORS, calls_today, postgres_url_from_env

CALLS_USED_TAG = "alpha_vantage/calls_used_today"
CALLS_LEFT_TAG = "alpha_vantage/calls_left_today"


def report_calls_today(context: AssetExecutionContext, alpha_vantage: AlphaVantageResource) -> None:
    """Count the key's day window once, after the run's calls; nothing for the offline sample
    or a key without a daily quota. A limiter store that cannot be read costs a warning, never
    the run."""
    if not alpha_vantage.api_key:
        return
    try:
        calls = calls_today(
            alpha_vantage.home.state_dir,
            alpha_vantage.api_key,
            per_day=alpha_vantage.requests_per_day,
            postgres_url=postgres_url_from_env(),
        )
    except STORE_ERRORS as exc:
        context.log.warning(f"Alpha Vantage calls today not counted: {exc}")
        return
    if calls is None:
        return
    vendor_usage.write(alpha_vantage.home, calls)
    tags = {CALLS_USED_TAG: str(calls.used), CALLS_LEFT_TAG: str(calls.left)}
    context.instance.add_run_tags(context.run_id, tags)
    context.log.info(f"Alpha Vantage calls today: {calls.used} used, {calls.left} left")
