"""Schedules and sensors: the pipeline keeps itself up to date once ``dagster dev`` runs.

* ``daily_update`` (schedule, 18:30 New York, Monday to Friday, not on NYSE holidays) updates
  every registered symbol, or, when the key's daily quota has fewer calls left than there are
  symbols, the stalest ones (oldest ``raw_data`` materialization first) and says so in its tick.
  Calls of the rolling day that leave it while the run goes count as left, so yesterday's
  update at this hour does not crowd out today's (``rate_limit.calls_available``). The plan
  counts the corporate actions too: a symbol whose actions are due (``actions_policy``) costs
  3 calls, any other 1; the bars of every symbol are planned before any actions, and the due
  actions that do not fit wait (they stay due). The run itself fetches only the actions the
  calls left allow, so the plan and the run agree.
* ``watchlist`` (sensor) makes the registered partitions follow the watchlist and, with
  ``MARKET_UNIVERSE`` set, the symbols its listings select (``listings.universe``): new symbols
  are registered and get their first load (3 calls each: bars and both corporate-action
  answers); removed ones are unregistered, so nothing updates them any more, while their files,
  table rows and Dagster history stay. While the listing cannot be read, nothing is removed.
* A delisted symbol whose bars were fetched on a day after its delisting date is complete
  (``listings.plan``): neither the sensor nor the daily update fetches it again, and the plan
  says how many calls that saves. The other delisted symbols come after every active one, the
  oldest delisting last. With a universe, the daily update keeps the listing refresh's two calls
  out of its plan on the day the refresh is due (``listings_refresh`` runs it).
* ``follow_raw_data`` (declarative automation) runs ``clean_data`` and ``ohlcv_data`` after
  ``raw_data`` was materialized without them, and ``corporate_actions`` after ``raw_actions``
  (the ``eager`` conditions on their specs). Chosen
  over a job or sensor of our own because it already knows what we would have to rebuild: it
  follows every way ``raw_data`` gets materialized (UI, backfill, schedule), per partition; it
  ignores a parent updated by a run that also planned the child, so the usual run of all three
  stages in one step triggers nothing more; it waits while either side is in progress; and the
  UI shows why each partition was or was not requested. A tick over 1000 symbols takes ~0.3 s.

Runs cover one contiguous range of the registered symbols each (a run's partitions are a key
range), so every request is grouped into as few ranges as the registered order allows. Since
symbols updated together keep that order in their staleness, the stalest symbols usually form
one or two ranges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import polars as pl
from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterEventType,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from market_core.assets import ACTIONS, CLEAN, OHLCV, RAW
from market_core.exchange import EXCHANGE_TZ
from market_core.home import DataHome
from market_core.sessions import exchange_holiday
from market_pipeline.actions.fetch import last_actions_fetch
from market_pipeline.actions.policy import ACTIONS_CALLS, PRICE_CALLS, due_symbols
from market_pipeline.defs.partitions import (
    PARTITIONS,
    WatchlistResource,
    contiguous_blocks,
    range_tags,
    symbols_partitions,
)
from market_pipeline.defs.resources import AlphaVantageResource, MarketDuckDB
from market_pipeline.defs.settings import UNIVERSE_VAR
from market_pipeline.listings.fetch import last_fetched
from market_pipeline.listings.history import raw_fetched_at
from market_pipeline.listings.plan import (
    LISTING_CALLS,
    SymbolListing,
    completed,
    newest_listings,
    priority,
    refresh_due,
)
from market_pipeline.listings.universe import Universe
from market_pipeline.store.listings import listings_table

INGEST_JOB = "ingest_job"
DAILY_UPDATE_CRON = "30 18 * * 1-5"
TRIGGER_TAG = "market/trigger"
DEFERRED_TAG = "market/deferred_symbols"
FIRST_LOAD_CALLS = PRICE_CALLS + ACTIONS_CALLS
"""A new symbol's first load: its bars and both corporate-action answers."""


def last_raw_updates(instance: DagsterInstance) -> Mapping[str, int]:
    """Per symbol, the storage id of its newest ``raw_data`` materialization.

    Storage ids grow with time, so they order symbols by staleness; one grouped query answers
    for every partition at once.
    """
    return instance.event_log_storage.get_latest_storage_id_by_partition(
        AssetKey(RAW), DagsterEventType.ASSET_MATERIALIZATION
    )


def _names(symbols: Sequence[str], most: int = 10) -> str:
    return ", ".join(symbols[:most]) + (", ..." if len(symbols) > most else "")


@dataclass(frozen=True)
class UpdatePlan:
    """Which registered symbols one update covers, and which wait for a later one; of the
    covered symbols whose corporate actions are due, which get them now (``actions``) and
    which wait for calls (``actions_deferred``, still due next time)."""

    symbols: list[str]
    deferred: list[str]
    calls_left: int | None
    actions: list[str] = field(default_factory=list)
    actions_deferred: list[str] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)
    """Delisted symbols whose history is loaded past their delisting date: not fetched again."""
    listing_calls: int = 0
    """Calls kept out of ``calls_left`` for the listing refresh that is due."""

    @property
    def calls(self) -> int:
        """The calls the planned run makes: 1 per symbol, 2 more per symbol with actions."""
        return PRICE_CALLS * len(self.symbols) + ACTIONS_CALLS * len(self.actions)

    def describe(self) -> str:
        total = len(self.symbols) + len(self.deferred)
        if self.calls_left is None:
            prices = f"updating all {total} registered symbols (no daily quota)"
        elif not self.deferred:
            prices = f"updating all {total} symbols: {self.calls_left} calls left today"
        else:
            prices = (
                f"updating the {len(self.symbols)} stalest of {total} symbols: only "
                f"{self.calls_left} calls left in the key's daily quota; {len(self.deferred)} "
                f"wait for a later update (stalest first): {_names(self.deferred)}"
            )
        return prices + "; " + self._describe_actions() + self._describe_listings()

    def _describe_listings(self) -> str:
        text = ""
        if self.complete:
            text += (
                f"; {len(self.complete)} delisted symbols not fetched again (history loaded "
                f"past their delisting date): {PRICE_CALLS * len(self.complete)} calls saved: "
                f"{_names(self.complete)}"
            )
        if self.listing_calls:
            text += (
                f"; {self.listing_calls} calls kept for the listing refresh (LISTING_STATUS "
                "active and delisted)"
            )
        return text

    def _describe_actions(self) -> str:
        due = len(self.actions) + len(self.actions_deferred)
        if not due:
            return f"corporate actions: none due; {self.calls} calls planned"
        text = (
            f"corporate actions: {due} due, {len(self.actions)} fetched "
            f"({ACTIONS_CALLS} calls each, after every symbol's bars)"
        )
        if self.actions:
            text += f": {_names(self.actions)}"
        if self.actions_deferred:
            text += (
                f"; {len(self.actions_deferred)} wait for calls (still due next time): "
                f"{_names(self.actions_deferred)}"
            )
        return text + f"; {self.calls} calls planned"


def plan_update(
    registered: Sequence[str],
    last_update: Mapping[str, int],
    calls_left: int | None,
    actions_due: Collection[str] = frozenset(),
    listings: Mapping[str, SymbolListing] | None = None,
) -> UpdatePlan:
    """The bars first: all symbols if the quota allows, else the stalest (never loaded before
    anything), 1 call each. Then, with the calls left over, the corporate actions of the chosen
    symbols that are due (``actions_due``, most urgent first), 2 calls each.

    ``listings`` (each symbol's newest listing, where known) puts the delisted symbols after
    every active one, the oldest delisting last (``listings.plan.priority``)."""
    listings = listings or {}
    position = {symbol: i for i, symbol in enumerate(registered)}
    stalest = sorted(
        registered,
        key=lambda s: (priority(listings.get(s)), last_update.get(s, -1), position[s]),
    )
    prices = len(registered) if calls_left is None else min(len(registered), calls_left)
    chosen = set(stalest[:prices])
    symbols = [s for s in registered if s in chosen]
    due = [s for s in actions_due if s in chosen]
    spare = None if calls_left is None else calls_left - PRICE_CALLS * len(symbols)
    fits = len(due) if spare is None else min(len(due), spare // ACTIONS_CALLS)
    return UpdatePlan(symbols, stalest[prices:], calls_left, due[:fits], due[fits:])


def due_for_actions(home: DataHome, symbols: Sequence[str], now: dt.datetime) -> list[str]:
    """The symbols whose corporate actions are due by age (never fetched, or a week old), most
    urgent first. A large move found in the run's own bars makes more due during the run; those
    take calls only if the run still has some (``batch``), else they wait for the next."""
    last = {s: last_actions_fetch(home, s) for s in symbols}
    return [due.symbol for due in due_symbols(symbols, last, now)]


def block_requests(
    registered: Sequence[str], symbols: Sequence[str], key: str, tags: Mapping[str, str]
) -> list[RunRequest]:
    """One run request per contiguous range of ``symbols`` in the registered order."""
    return [
        RunRequest(run_key=f"{key}:{block[0]}..{block[-1]}", tags={**tags, **range_tags(block)})
        for block in contiguous_blocks(registered, set(symbols))
    ]


def _exchange_date(moment: dt.datetime) -> dt.date:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=EXCHANGE_TZ)
    return aware.astimezone(EXCHANGE_TZ).date()


@schedule(
    name="daily_update",
    cron_schedule=DAILY_UPDATE_CRON,
    execution_timezone=str(EXCHANGE_TZ),
    job_name=INGEST_JOB,
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "After the US close on trading days: update every registered symbol, or the stalest "
        "ones when the key's daily quota has fewer calls left than there are symbols."
    ),
)
def daily_update(
    context: ScheduleEvaluationContext,
    alpha_vantage: AlphaVantageResource,
    duckdb: MarketDuckDB,
    watchlist: WatchlistResource,
) -> SkipReason | list[RunRequest]:
    day = _exchange_date(context.scheduled_execution_time)
    holiday = exchange_holiday(day)
    if holiday:
        return SkipReason(f"{day}: NYSE closed ({holiday}), nothing new to load")
    registered = context.instance.get_dynamic_partitions(PARTITIONS)
    if not registered:
        return SkipReason("no symbols registered yet (the watchlist sensor registers them)")
    now = dt.datetime.now(dt.UTC)
    listings = newest_listings(listings_table(duckdb.store()).read(), registered)
    complete = complete_histories(alpha_vantage.home, listings)
    done = set(complete)
    updated = [s for s in registered if s not in done]
    calls_left = alpha_vantage.calls_left_today()
    listing_calls = _listing_calls_due(watchlist, alpha_vantage.home, now, calls_left)
    plan = replace(
        plan_update(
            updated,
            last_raw_updates(context.instance),
            None if calls_left is None else calls_left - listing_calls,
            due_for_actions(alpha_vantage.home, updated, now),
            listings,
        ),
        complete=complete,
        listing_calls=listing_calls,
    )
    if not plan.symbols and complete and not plan.deferred:
        return SkipReason(plan.describe())
    if not plan.symbols:
        return SkipReason(
            f"the key's daily quota is used up: none of the {len(registered)} symbols updated "
            "today; the stalest go first once calls are left"
        )
    short = plan.deferred or plan.actions_deferred
    (context.log.warning if short else context.log.info)(plan.describe())
    tags = {TRIGGER_TAG: "daily_update", DEFERRED_TAG: str(len(plan.deferred))}
    return block_requests(registered, plan.symbols, f"daily_update:{day}", tags)


def complete_histories(home: DataHome, listings: Mapping[str, SymbolListing]) -> list[str]:
    """The delisted symbols among ``listings`` whose bars were fetched on a day after their
    delisting date: nothing more can come, so they are not fetched again."""
    delisted = {s: listing for s, listing in listings.items() if listing.delisted}
    return completed(delisted, raw_fetched_at(home, delisted))


def _listing_calls_due(
    watchlist: WatchlistResource, home: DataHome, now: dt.datetime, calls_left: int | None
) -> int:
    """The calls the listing refresh takes today (``listings_refresh`` runs it): with a
    universe, once the last good listing is old enough; none without a daily quota."""
    if calls_left is None or watchlist.selection() is None:
        return 0
    due = refresh_due(last_fetched(home), now, watchlist.listings_refresh_days)
    return min(LISTING_CALLS, calls_left) if due else 0


@dataclass(frozen=True)
class WatchlistChange:
    added: list[str]
    removed: list[str]

    @classmethod
    def between(cls, registered: Sequence[str], wanted: Sequence[str]) -> WatchlistChange:
        known, keep = set(registered), set(wanted)
        return cls([s for s in wanted if s not in known], [s for s in registered if s not in keep])


@sensor(
    name="watchlist",
    job_name=INGEST_JOB,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Registers the watchlist's new symbols (MARKET_SYMBOLS or the watchlist file) and, with "
        "MARKET_UNIVERSE set, those its listings select, and loads them; unregisters removed "
        "ones, whose data stays."
    ),
)
def watchlist_sensor(
    context: SensorEvaluationContext,
    watchlist: WatchlistResource,
    alpha_vantage: AlphaVantageResource,
    duckdb: MarketDuckDB,
) -> SkipReason | SensorResult:
    follow = followed(watchlist, duckdb)
    if not follow.symbols:  # an emptied (or half-written) file must not unregister everything
        return SkipReason("the watchlist is empty; the registered symbols are kept")
    registered = context.instance.get_dynamic_partitions(PARTITIONS)
    change = WatchlistChange.between(registered, follow.symbols)
    if change.removed and follow.partial:
        context.log.info(f"{follow.partial}: nothing is unregistered")
        change = WatchlistChange(change.added, [])
    if not change.added and not change.removed:
        return SkipReason(f"the {len(registered)} registered symbols match {follow.describe()}")
    if follow.universe is not None:
        context.log.info(f"{follow.describe()}: {len(follow.symbols)} symbols")
    complete = set(complete_histories(alpha_vantage.home, follow.listings_of(change.added)))
    # The symbols to load first lead, so that they form one range of the registered order.
    added = [s for s in change.added if s not in complete] + [
        s for s in change.added if s in complete
    ]
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(symbols_partitions.build_add_request(added))
    if change.removed:
        requests.append(symbols_partitions.build_delete_request(change.removed))
        context.log.info(f"no longer updated (data kept): {', '.join(change.removed)}")
    loadable = added[: len(added) - len(complete)]
    if complete:
        context.log.info(
            f"{len(complete)} delisted symbols registered without a first load: their history "
            f"is loaded past their delisting date ({FIRST_LOAD_CALLS * len(complete)} calls "
            f"saved): {_names(sorted(complete))}"
        )
    calls_left = alpha_vantage.calls_left_today()
    fits = None if calls_left is None else calls_left // FIRST_LOAD_CALLS
    first_loads = loadable if fits is None else loadable[:fits]
    if len(first_loads) < len(loadable):
        context.log.warning(
            f"{len(loadable) - len(first_loads)} new symbols registered without a first "
            f"load: only {calls_left} calls left today ({FIRST_LOAD_CALLS} per first load: the "
            "bars, SPLITS and DIVIDENDS); the daily update loads them first"
        )
    # New keys are appended to the registered order, so they form one range.
    runs = (
        [RunRequest(tags={TRIGGER_TAG: "watchlist", **range_tags(first_loads)})]
        if first_loads
        else []
    )
    return SensorResult(run_requests=runs, dynamic_partitions_requests=requests)


@dataclass(frozen=True)
class Followed:
    """The symbols the registered partitions follow: the watchlist's, then the universe's
    (active first, the oldest delisting last), and the listing they were selected from."""

    symbols: list[str]
    universe: Universe | None = None
    listing: pl.DataFrame | None = None
    partial: str = ""
    """Why the symbols may be only part of what is followed (the watchlist is empty, or the
    listing cannot be read), so that nothing registered is removed; empty when they are all."""

    def describe(self) -> str:
        if self.universe is None:
            return "the watchlist"
        return f"the watchlist and the universe ({UNIVERSE_VAR}={self.universe.describe()})"

    def listings_of(self, symbols: Sequence[str]) -> dict[str, SymbolListing]:
        """The newest listing of each of ``symbols`` that has one."""
        return newest_listings(self.listing, symbols) if symbols else {}


def followed(watchlist: WatchlistResource, duckdb: MarketDuckDB) -> Followed:
    """The watchlist, and with ``MARKET_UNIVERSE`` set the symbols its listings select (read
    from the ``listings`` table; none before the first listing is loaded)."""
    wanted = watchlist.wanted()
    universe = watchlist.selection()
    if universe is None:
        return Followed(wanted)
    table = listings_table(duckdb.store()).read()
    if table is None:
        why = "the listing cannot be read (none loaded yet, or a load holds it)"
        return Followed(wanted, universe, partial=why)
    known = set(wanted)
    symbols = wanted + [s for s in universe.select(table) if s not in known]
    why = "" if wanted else "the watchlist is empty"
    return Followed(symbols, universe, table, partial=why)


follow_raw_data = AutomationConditionSensorDefinition(
    "follow_raw_data",
    target=AssetSelection.assets(CLEAN, OHLCV, ACTIONS),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "clean_data and ohlcv_data follow raw_data, corporate_actions follows raw_actions "
        "(AutomationCondition.eager()): a raw asset materialized on its own is cleaned and "
        "loaded without anyone clicking."
    ),
)
