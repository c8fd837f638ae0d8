"""The ``intraday`` sensor: every registered symbol's intraday bars once per interval, while the
NYSE trades.

Each tick finds the current slot of the session (``market_core.sessions``): the session's open
plus a whole number of intervals. Every symbol is requested once per slot, stalest first (the
oldest ``raw_intraday`` materialization, never fetched before anything), as few runs as the
registered order allows. The slots run from the open to one interval past the close, so that
the session's last bar is fetched once it is complete; nothing before the open, after that,
on a weekend or holiday, or after 13:00 (plus one interval) on an early-close day.

Quota: a slot takes at most the calls the key has left today (``calls_left_today``, the daily
schedule's own count) and at most ``ALPHAVANTAGE_REQUESTS_PER_MINUTE`` times the interval's
minutes; the symbols that do not fit stay due and go first at the next tick of the same slot,
or are the stalest at the next slot. The cursor keeps which symbols the current slot has
requested. While an intraday run is still queued or going, the sensor waits for it: slow runs
(a rate limit, a slow answer) never pile up.

A key that Alpha Vantage refused the endpoint to (a free key: ``TIME_SERIES_INTRADAY`` is
premium) is remembered in the key's facts; the run that met the refusal failed with it once,
and the sensor then skips, saying why and how to clear it, instead of calling every minute.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from market_core.assets import RAW_INTRADAY
from market_core.exchange import EXCHANGE_TZ
from market_core.sessions import Session, exchange_holiday, exchange_time, next_session, session
from market_pipeline.defs.automation import TRIGGER_TAG, block_requests
from market_pipeline.defs.partitions import PARTITIONS
from market_pipeline.defs.resources import AlphaVantageResource

INTRADAY_JOB = "intraday_job"
SLOT_TAG = "market/intraday_slot"
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def unfinished_intraday_run(instance: DagsterInstance) -> str | None:
    """The id of an intraday run still queued or going, if any: a slot's runs finish before
    the next slot's start, so that slow runs never pile up behind the key's rate limit."""
    runs = instance.get_runs(RunsFilter(job_name=INTRADAY_JOB, statuses=UNFINISHED), limit=1)
    return runs[0].run_id if runs else None


def last_intraday_updates(instance: DagsterInstance) -> Mapping[str, int]:
    """Per symbol, the storage id of its newest ``raw_intraday`` materialization (ids grow
    with time, so they order symbols by staleness)."""
    return instance.event_log_storage.get_latest_storage_id_by_partition(
        AssetKey(RAW_INTRADAY), DagsterEventType.ASSET_MATERIALIZATION
    )


def interval_minutes(interval: str) -> int:
    return int(interval.removesuffix("min"))


@dataclass(frozen=True)
class Slot:
    """One interval of a session: every symbol is fetched once in it."""

    session: Session
    start: dt.datetime

    @property
    def key(self) -> str:
        return self.start.isoformat(timespec="minutes")


def current_slot(now: dt.datetime, interval: str, *, extended: bool) -> Slot | str:
    """The slot ``now`` (naive, New York) falls in, or why there is none."""
    step = dt.timedelta(minutes=interval_minutes(interval))
    today = session(now.date(), extended=extended)
    following = f"next fetch at {next_session(now.date(), extended=extended).opens:%Y-%m-%d %H:%M}"
    if today is None:
        holiday = exchange_holiday(now.date())
        why = f"NYSE closed ({holiday})" if holiday else "a weekend"
        return f"{now.date()}: {why}, no intraday bars to fetch; {following}"
    hours = f"{today.opens:%H:%M}-{today.closes:%H:%M}"
    if now < today.opens:
        return f"before the session ({hours} New York); first fetch at {today.opens:%H:%M}"
    if now >= today.closes + step:
        early = " (an early close)" if today.closes.time() < dt.time(16, 0) else ""
        return f"the session ({hours} New York){early} is over; {following}"
    slots = (now - today.opens) // step
    return Slot(today, today.opens + slots * step)


@dataclass(frozen=True)
class IntradayPlan:
    symbols: list[str]
    waiting: list[str]
    """Due in this slot, but over the quota: they go first at the next tick."""


def plan_slot(
    registered: Sequence[str],
    done: Sequence[str],
    last_update: Mapping[str, int],
    calls: int | None,
) -> IntradayPlan:
    """The symbols of this slot not requested yet, stalest first, as many as ``calls`` allows
    (``None``: no limit)."""
    position = {symbol: i for i, symbol in enumerate(registered)}
    requested = set(done)
    due = [s for s in registered if s not in requested]
    stalest = sorted(due, key=lambda s: (last_update.get(s, -1), position[s]))
    fits = len(stalest) if calls is None else max(0, min(len(stalest), calls))
    return IntradayPlan(stalest[:fits], stalest[fits:])


def slot_calls(alpha_vantage: AlphaVantageResource, interval: str) -> int | None:
    """The calls one slot may take: today's calls left, and the per-minute rate over the
    interval's minutes (``None``: no limit at all)."""
    limits = []
    left = alpha_vantage.calls_left_today()
    if left is not None:
        limits.append(left)
    if alpha_vantage.api_key and alpha_vantage.requests_per_minute > 0:
        limits.append(alpha_vantage.requests_per_minute * interval_minutes(interval))
    return min(limits) if limits else None


def refusal_reason(alpha_vantage: AlphaVantageResource) -> str | None:
    refusal = alpha_vantage.intraday_refusal()
    if refusal is None:
        return None
    facts = alpha_vantage.key_facts()
    where = f" ({facts.path})" if facts is not None else ""
    return (
        f"Alpha Vantage refused TIME_SERIES_INTRADAY to this key on {refusal.since}: "
        f"{refusal.message}. Not asking again for this key: after upgrading it to a premium "
        f"plan, materialize raw_intraday by hand once (a success clears the refusal) or delete "
        f"the key's facts file{where}; a new ALPHAVANTAGE_API_KEY starts afresh. Or set "
        "ALPHAVANTAGE_INTRADAY_INTERVAL=off."
    )


def intraday_tick(
    context: SensorEvaluationContext, alpha_vantage: AlphaVantageResource, now: dt.datetime
) -> SkipReason | SensorResult:
    """The sensor's decision at ``now`` (any zone; read on the New York clock)."""
    if not alpha_vantage.intraday_on:
        return SkipReason(
            "ALPHAVANTAGE_INTRADAY_INTERVAL is off: no intraday bars are fetched (set it to "
            "1min, 5min, 15min, 30min or 60min; TIME_SERIES_INTRADAY needs a premium key)"
        )
    refused = refusal_reason(alpha_vantage)
    if refused is not None:
        return SkipReason(refused)
    interval = alpha_vantage.intraday_interval
    slot = current_slot(exchange_time(now), interval, extended=alpha_vantage.extended_hours)
    if isinstance(slot, str):
        return SkipReason(slot)
    registered = context.instance.get_dynamic_partitions(PARTITIONS)
    if not registered:
        return SkipReason("no symbols registered yet (the watchlist sensor registers them)")
    running = unfinished_intraday_run(context.instance)
    if running is not None:
        return SkipReason(
            f"the intraday run {running} has not finished yet; the due symbols wait for it "
            "(stalest first at the next tick)"
        )
    cursor = json.loads(context.cursor) if context.cursor else {}
    done = cursor.get("done", []) if cursor.get("slot") == slot.key else []
    calls = slot_calls(alpha_vantage, interval)
    plan = plan_slot(registered, done, last_intraday_updates(context.instance), calls)
    if not plan.symbols:
        if plan.waiting:
            return SkipReason(
                f"{len(plan.waiting)} symbols wait for calls: the key's quota has none left "
                f"for the {interval} slot at {slot.start:%H:%M}"
            )
        return SkipReason(
            f"all {len(registered)} symbols requested for the {interval} slot at "
            f"{slot.start:%H:%M}; next slot at "
            f"{slot.start + dt.timedelta(minutes=interval_minutes(interval)):%H:%M}"
        )
    if plan.waiting:
        context.log.warning(
            f"{len(plan.waiting)} of {len(registered)} symbols wait for calls in the {interval} "
            f"slot at {slot.start:%H:%M} (quota: {calls} calls this slot)"
        )
    tags = {TRIGGER_TAG: "intraday", SLOT_TAG: slot.key}
    requests = block_requests(registered, plan.symbols, f"intraday:{slot.key}", tags)
    cursor_after = json.dumps({"slot": slot.key, "done": [*done, *plan.symbols]})
    return SensorResult(run_requests=requests, cursor=cursor_after)


@sensor(
    name="intraday",
    job_name=INTRADAY_JOB,
    minimum_interval_seconds=30,  # twice a minute: no 1min slot is missed
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "During the NYSE session, fetches every registered symbol's intraday bars once per "
        "ALPHAVANTAGE_INTRADAY_INTERVAL, stalest first, within the key's quota; skips when the "
        "interval is off, outside the session, and once the key was refused the endpoint."
    ),
)
def intraday_sensor(
    context: SensorEvaluationContext, alpha_vantage: AlphaVantageResource
) -> SkipReason | SensorResult:
    return intraday_tick(context, alpha_vantage, dt.datetime.now(EXCHANGE_TZ))
