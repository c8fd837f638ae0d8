"""The universe at 10,000 symbols (issue 20 item 6): the listing, the sensor, the UI, the runs.

Each repetition starts from a fresh data home and instance, with the project's Alpha Vantage
stub (loopback, unthrottled) answering LISTING_STATUS with a generated listing in the vendor's
wire format: 10,000 active stocks on NYSE and NASDAQ, 1,000 ETFs and 1,000 delisted stocks
(12,000 rows). ``MARKET_UNIVERSE=exchange=NYSE,NASDAQ;asset_type=Stock;status=active`` selects
the 10,000 stocks (the watchlist is the first of them).

1. the ``listings`` asset materialized (``materialize``, two calls, the 12,000 rows validated,
   kept as received and loaded);
2. the ``watchlist`` sensor's tick that registers the 10,000 symbols: its evaluation (what
   Dagster's 60 s sensor timeout bounds), then its partition request applied the way the sensor
   daemon applies it (one existence query per key, then one insert), then the next tick, which
   finds nothing to do;
3. the ``ohlcv_data`` asset page through a real ``dagster-webserver`` on 127.0.0.1: the UI's
   own ``AssetViewDefinitionQuery`` and ``PartitionHealthQuery`` (every partition key and the
   materialized / materializing / failed ones), and ``partitionStats`` as the asset graph asks
   for it, first on a cold cache, then warm;
4. orchestration per symbol: ``make ingest`` against ``bench.direct_backfill`` over the same
   symbols (``bench.orchestration``), at 1,000 and at 10,000 symbols, side by side.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import string
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    AssetMaterialization,
    DagsterInstance,
    build_sensor_context,
    materialize,
)

from bench.harness import WORK_DIR, Goal, Result
from bench.orchestration import side_by_side
from market_core.assets import OHLCV
from market_core.home import DataHome
from market_pipeline.cli.instance import open_instance
from market_pipeline.defs.automation import watchlist_sensor
from market_pipeline.defs.listings import listings
from market_pipeline.defs.partitions import PARTITIONS
from market_pipeline.defs.resources import resources_from_env
from tests.orchestration.dagster_server import DagsterServer
from tests.stubs.alpha_vantage import AlphaVantageStub

UNIVERSE = "exchange=NYSE,NASDAQ;asset_type=Stock;status=active"
SENSOR_LIMIT_SECONDS = 60.0
"""Dagster's default sensor evaluation timeout (``DEFAULT_SENSOR_GRPC_TIMEOUT``)."""
SEEDED = 500
"""ohlcv_data partitions given a materialization before the UI is asked (the rest: missing)."""

DEFINITION_QUERY = """
query AssetViewDefinitionQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      key { path }
      assetMaterializations(limit: 1) { timestamp runId }
      definition {
        id groupName isExecutable
        partitionDefinition { description dimensionTypes { type dynamicPartitionsDefinitionName } }
        partitionKeysByDimension { name }
        backfillPolicy { description }
      }
    }
  }
}"""
HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions materializingPartitions failedPartitions
        }
      }
    }
  }
}"""
STATS_QUERY = """
query AssetGraphLiveQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys, loadMaterializations: true) {
    id
    partitionStats { numMaterialized numMaterializing numPartitions numFailed }
  }
}"""


def ticker(index: int) -> str:
    """A four-letter symbol per index: AAAA, AAAB, ..."""
    letters = []
    for _ in range(4):
        index, digit = divmod(index, 26)
        letters.append(string.ascii_uppercase[digit])
    return "".join(reversed(letters))


def listing_rows(stocks: int, etfs: int, delisted: int) -> dict[str, list[tuple[str, ...]]]:
    """The generated listing, per LISTING_STATUS state, as the seven wire fields."""
    start = dt.date(1990, 1, 2)
    active, gone = [], []
    for i in range(stocks + etfs + delisted):
        ipo = (start + dt.timedelta(days=(i * 37) % 12_000)).isoformat()
        name = f"Generated Company {i} Inc"
        if i < stocks:
            exchange = "NYSE" if i % 2 else "NASDAQ"
            active.append((ticker(i), name, exchange, "Stock", ipo, "null", "Active"))
        elif i < stocks + etfs:
            active.append((ticker(i), name, "NYSE ARCA", "ETF", ipo, "null", "Active"))
        else:
            end = (dt.date(2024, 12, 31) - dt.timedelta(days=i % 3000)).isoformat()
            gone.append((ticker(i), name, "NYSE", "Stock", ipo, end, "Delisted"))
    return {"active": active, "delisted": gone}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (resources and the instance read it)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def apply_like_the_daemon(instance: DagsterInstance, requests: Sequence[Any]) -> int:
    """The sensor daemon's handling of a tick's add requests: one existence query per key,
    then one insert of the new ones; the keys added."""
    added = 0
    for request in requests:
        if not isinstance(request, AddDynamicPartitionsRequest):
            continue
        new = [
            key
            for key in request.partition_keys
            if not instance.has_dynamic_partition(request.partitions_def_name, key)
        ]
        if new:
            instance.add_dynamic_partitions(request.partitions_def_name, new)
        added += len(new)
    return added


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def one_repetition(stub: AlphaVantageStub, symbols: int, figures: dict[str, list[float]]) -> None:
    rows = listing_rows(symbols, symbols // 10, symbols // 10)
    for state, listed in rows.items():
        stub.set_listings(state, listed)
    home = DataHome(WORK_DIR / "universe")
    shutil.rmtree(home.root, ignore_errors=True)
    home.root.mkdir(parents=True)
    env = {
        "MARKET_DATA_HOME": str(home.root),
        "DAGSTER_HOME": str(home.dagster_home),
        "MARKET_SYMBOLS": rows["active"][0][0],
        "MARKET_UNIVERSE": UNIVERSE,
        "ALPHAVANTAGE_API_KEY": "BENCHKEY",
        "ALPHAVANTAGE_BASE_URL": stub.url,
        **{f"ALPHAVANTAGE_REQUESTS_PER_{s}": "0" for s in ("SECOND", "MINUTE", "DAY")},
    }
    with environment(env), open_instance() as instance:
        seconds, done = _timed(
            lambda: materialize([listings], instance=instance, resources=resources_from_env())
        )
        assert done.success, "the listings asset failed"
        figures["listings"].append(seconds)

        with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
            seconds, tick = _timed(lambda: watchlist_sensor.evaluate_tick(context))
        figures["evaluate"].append(seconds)
        requests = tick.dynamic_partitions_requests or []
        seconds, added = _timed(lambda: apply_like_the_daemon(instance, requests))
        figures["apply"].append(seconds)
        figures["tick"].append(figures["evaluate"][-1] + seconds)
        registered = instance.get_dynamic_partitions(PARTITIONS)
        assert added == symbols == len(registered), (added, len(registered))
        with build_sensor_context(instance=instance, resources=resources_from_env()) as context:
            seconds, again = _timed(lambda: watchlist_sensor.evaluate_tick(context))
        assert again.skip_message, "the next tick has nothing to do"
        figures["next_tick"].append(seconds)

        for key in registered[:SEEDED]:
            instance.report_runless_asset_event(AssetMaterialization(OHLCV, partition=key))
    ui_queries(env, home, symbols, figures)


def ui_queries(
    env: dict[str, str], home: DataHome, symbols: int, figures: dict[str, list[float]]
) -> None:
    key = {"assetKey": {"path": [OHLCV]}}
    with DagsterServer(env, WORK_DIR / "universe-webserver.log") as server:
        for phase in ("cold", "warm"):
            page, _ = _timed(lambda: server.query(DEFINITION_QUERY, key))
            seconds, health = _timed(lambda: server.query(HEALTH_QUERY, key))
            stats_seconds, stats = _timed(
                lambda: server.query(STATS_QUERY, {"assetKeys": [key["assetKey"]]})
            )
            figures[f"page_{phase}"].append(page + seconds)
            figures[f"health_{phase}"].append(seconds)
            figures[f"stats_{phase}"].append(stats_seconds)
            node = health["assetNodeOrError"]
            keys = node["partitionKeysByDimension"][0]["partitionKeys"]
            done = node["assetPartitionStatuses"]["materializedPartitions"]
            assert len(keys) == symbols and len(done) == SEEDED, (len(keys), len(done))
            assert stats["assetNodes"][0]["partitionStats"]["numPartitions"] == symbols


def universe(symbols: int, reps: int, orchestration_sizes: Sequence[int]) -> Result:
    figures: dict[str, list[float]] = defaultdict(list)
    runs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in orchestration_sizes}
    with AlphaVantageStub() as stub:
        for rep in range(reps):
            one_repetition(stub, symbols, figures)
            last = {name: values[-1] for name, values in figures.items()}
            print(f"  rep {rep + 1}/{reps}: listing {last['listings']:.1f}s, tick "
                  f"{last['tick']:.1f}s, page {last['page_cold']:.2f}s cold")  # fmt: skip
        for count in orchestration_sizes:
            runs[count].append(side_by_side(stub, count))
            dagster, _, direct = runs[count][-1]
            print(f"  orchestration {count}: dagster {dagster:.1f}s, direct {direct:.1f}s")
    rows = symbols + 2 * (symbols // 10)
    result = Result("universe", f"The universe: {symbols:,} symbols (issue 20 item 6)")
    add = result.add
    add(f"listings asset, {rows:,}-row listing (materialize)", "s", figures["listings"],
        better="lower")  # fmt: skip
    add("sensor tick: evaluation", "s", figures["evaluate"], better="lower")
    add("sensor tick: partitions registered as the daemon does", "s", figures["apply"],
        better="lower")  # fmt: skip
    add("sensor tick: evaluation + registration", "s", figures["tick"], better="lower")
    add("sensor: the next tick (nothing to do)", "s", figures["next_tick"], better="lower")
    for phase in ("cold", "warm"):
        add(f"UI ohlcv_data page (definition + partition health), {phase}", "s",
            figures[f"page_{phase}"], better="lower")  # fmt: skip
        add(f"UI PartitionHealthQuery, {phase}", "s", figures[f"health_{phase}"],
            better="lower")  # fmt: skip
        add(f"UI partitionStats, {phase}", "s", figures[f"stats_{phase}"], better="lower")
    for count, pairs in runs.items():
        overhead = [(d - x) * 1000 / count for d, _, x in pairs]
        add(f"make ingest, {count:,} symbols, wall", "s", [d for d, _, _ in pairs],
            better="lower")  # fmt: skip
        add(f"direct BatchRunner, {count:,} symbols, wall", "s", [x for _, _, x in pairs],
            better="lower")  # fmt: skip
        add(f"orchestration overhead per symbol at {count:,}", "ms", overhead, better="lower")
    result.params = {"symbols": symbols, "listing_rows": rows, "universe": UNIVERSE,
                     "seeded_materializations": SEEDED,
                     "orchestration_sizes": list(orchestration_sizes)}  # fmt: skip
    result.goals = [
        Goal("the sensor's registering tick inside Dagster's 60 s limit",
             "sensor tick: evaluation + registration", "<", SENSOR_LIMIT_SECONDS),
        Goal("the ohlcv_data page answers within 3 s (cold)",
             "UI ohlcv_data page (definition + partition health), cold", "<=", 3.0),
        Goal("partition status answers within 3 s (cold)", "UI partitionStats, cold", "<=", 3.0),
        *(Goal(f"orchestration <= 20 ms per symbol at {count:,}",
               f"orchestration overhead per symbol at {count:,}", "<=", 20.0)
          for count in orchestration_sizes),
    ]  # fmt: skip
    result.notes = [
        "The listing and the sensor run in the benchmark's process on a fresh instance; the "
        "UI figures are GraphQL round trips to dagster-webserver on 127.0.0.1 over that "
        f"instance, with {SEEDED} of the partitions materialized.",
        "Orchestration: one repetition per size (the 10,000-symbol pair takes the longest).",
        f"Written {Path(__file__).name}; figures are wall seconds unless said otherwise.",
    ]
    return result
