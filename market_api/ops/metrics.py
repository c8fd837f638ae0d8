"""``GET /metrics``: the request tally, the cache, the streams and the store's facts in
Prometheus' text format, through ``prometheus_client``.

One worker: collectors read the plain counters at scrape time. Several: each worker moves its
counters into ``prometheus_client``'s multiprocess files every second (and the scraped one
just before it answers), and the scrape sums every worker's files. Names and meanings:
docs/metrics.md.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from market_api.ops.facts import StoreFacts
from market_api.ops.tally import BOUNDS, Row, Traffic
from market_api.readers.errors import StoreUnavailable
from market_core import vendor_usage
from market_core.home import DataHome
from market_core.vendor_usage import CallsToday

REQUESTS = ("market_api_requests", "Requests answered, by route template and status.")
LATENCY = (
    "market_api_request_duration_seconds",
    "Time from a request's arrival to its response's start, by route template and status.",
)
HITS = ("market_api_cache_hits", "Requests answered from the response cache.")
MISSES = ("market_api_cache_misses", "GETs and HEADs the response cache did not hold.")
HIT_BYTES = ("market_api_cache_hit_bytes", "Body bytes of the cached answers found by hits.")
CACHE_BYTES = ("market_api_cache_bytes", "Bytes the response cache holds (summed over workers).")
CACHE_ENTRIES = ("market_api_cache_entries", "Answers the response cache holds.")
STREAMS = ("market_api_stream_clients", "Push-stream clients connected now.")
LABELS = ("route", "status")
FLUSH_SECONDS = 1.0
"""How often a worker writes its counts to the multiprocess files: a scrape of another worker
sees this one's counts at most this late."""


@dataclass(frozen=True)
class Facts:
    """The store's facts, read before a scrape (collectors cannot wait on the store)."""

    version_age: float | None
    newest_bar: date | None
    calls: CallsToday | None


class Metrics:
    """The exposition of one worker; ``multiproc`` is the folder it shares with its siblings."""

    def __init__(
        self, traffic: Traffic, facts: StoreFacts, home: DataHome, multiproc: Path | None
    ) -> None:
        self._traffic = traffic
        self._facts = facts
        self._home = home
        self._multiproc = multiproc
        self._export = None if multiproc is None else MultiprocessExport(traffic)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> None:
        """With several workers, flush this one's counts every ``FLUSH_SECONDS`` (Litestar
        ``on_startup``)."""
        if self._export is None:
            return
        self._stop.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="metrics", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        """Last flush; this worker's live gauges leave the sums (``mark_process_dead``)."""
        if self._export is None:
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
            self._flusher = None
        self._export.flush()
        if self._multiproc is not None:
            mark_process_dead(os.getpid(), str(self._multiproc))

    def _flush_loop(self) -> None:
        assert self._export is not None
        while not self._stop.wait(FLUSH_SECONDS):
            self._export.flush()

    async def render(self) -> bytes:
        facts = await self._read_facts()
        return await anyio.to_thread.run_sync(self._render, facts)

    def _render(self, facts: Facts) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        if self._export is None:
            registry.register(TrafficCollector(self._traffic))
        else:
            self._export.flush()
            MultiProcessCollector(registry, str(self._multiproc))
        registry.register(FactsCollector(facts))
        return generate_latest(registry)

    async def _read_facts(self) -> Facts:
        try:
            newest = await self._facts.newest_bar()
        except StoreUnavailable:  # the gauge goes missing for this scrape, the rest is served
            newest = None
        return Facts(self._facts.version_age(time.time()), newest, vendor_usage.read(self._home))


class TrafficCollector(Collector):
    """One worker's counters as metric families, read when scraped."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*REQUESTS, labels=LABELS)
        latency = HistogramMetricFamily(*LATENCY, labels=LABELS)
        for (route, status), row in list(self._traffic.tally.rows.items()):
            counts = list(row.counts)
            labels = [route, str(status)]
            requests.add_metric(labels, sum(counts))
            cumulative, buckets = 0, []
            for bound, count in zip((*BOUNDS, math.inf), counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            latency.add_metric(labels, buckets, sum_value=sum(row.sums))
        yield requests
        yield latency
        cache, hub = self._traffic.cache, self._traffic.hub
        yield CounterMetricFamily(*HITS, value=cache.hits)
        yield CounterMetricFamily(*MISSES, value=cache.misses)
        yield CounterMetricFamily(*HIT_BYTES, value=cache.hit_bytes)
        yield GaugeMetricFamily(*CACHE_BYTES, value=cache.size_bytes)
        yield GaugeMetricFamily(*CACHE_ENTRIES, value=len(cache))
        yield GaugeMetricFamily(*STREAMS, value=hub.open_streams)


class FactsCollector(Collector):
    """The store's and the vendor's facts: the same in every worker, so the scraped one says
    them (a custom collector, which multiprocess mode does not sum)."""

    def __init__(self, facts: Facts) -> None:
        self._facts = facts

    def collect(self) -> Iterator[Metric]:
        facts = self._facts
        if facts.version_age is not None:
            yield GaugeMetricFamily(
                "market_api_data_version_age_seconds",
                "Seconds since the data version being served was published.",
                value=facts.version_age,
            )
        if facts.newest_bar is not None:
            midnight = datetime.combine(facts.newest_bar, datetime.min.time(), UTC)
            yield GaugeMetricFamily(
                "market_api_newest_bar_timestamp_seconds",
                "The newest daily bar's date (00:00 UTC of that day, as a Unix time).",
                value=midnight.timestamp(),
            )
        if facts.calls is not None:
            calls = facts.calls
            for name, doc, value in (
                ("used", "Alpha Vantage calls in the key's day window.", calls.used),
                ("left", "Alpha Vantage calls left in the key's day window.", calls.left),
                ("limit", "ALPHAVANTAGE_REQUESTS_PER_DAY.", calls.limit),
            ):
                yield GaugeMetricFamily(f"market_alpha_vantage_calls_{name}", doc, value=value)
            yield GaugeMetricFamily(
                "market_alpha_vantage_calls_counted_timestamp_seconds",
                "When the pipeline last counted the calls (after its last run that made some).",
                value=calls.at,
            )


class MultiprocessExport:
    """Moves one worker's counters into ``prometheus_client``'s multiprocess files.

    Only what changed since the last flush is written. The histogram takes a bucket's new
    observations as that many observations of their mean, which lies in the bucket: counts and
    sum stay exact."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic
        self._requests = Counter(*REQUESTS, labelnames=LABELS, registry=None)
        self._latency = Histogram(*LATENCY, labelnames=LABELS, buckets=BOUNDS, registry=None)
        self._hits = Counter(*HITS, registry=None)
        self._misses = Counter(*MISSES, registry=None)
        self._hit_bytes = Counter(*HIT_BYTES, registry=None)
        self._cache_bytes = Gauge(*CACHE_BYTES, registry=None, multiprocess_mode="livesum")
        self._entries = Gauge(*CACHE_ENTRIES, registry=None, multiprocess_mode="livesum")
        self._streams = Gauge(*STREAMS, registry=None, multiprocess_mode="livesum")
        self._sent: dict[tuple[str, int], Row] = {}
        self._sent_cache = (0, 0, 0)
        self._lock = threading.Lock()

    def flush(self) -> None:
        with self._lock:
            for key, row in list(self._traffic.tally.rows.items()):
                self._flush_row(key, row, self._sent.setdefault(key, Row()))
            cache, hub = self._traffic.cache, self._traffic.hub
            now = (cache.hits, cache.misses, cache.hit_bytes)
            for counter, new, old in zip(
                (self._hits, self._misses, self._hit_bytes), now, self._sent_cache, strict=True
            ):
                if new > old:
                    counter.inc(new - old)
            self._sent_cache = now
            self._cache_bytes.set(cache.size_bytes)
            self._entries.set(len(cache))
            self._streams.set(hub.open_streams)

    def _flush_row(self, key: tuple[str, int], row: Row, sent: Row) -> None:
        labels = (key[0], str(key[1]))
        for i, count in enumerate(list(row.counts)):
            new = count - sent.counts[i]
            if new <= 0:
                continue
            value = _within(i, (row.sums[i] - sent.sums[i]) / new)
            child = self._latency.labels(*labels)
            for _ in range(new):
                child.observe(value)
            self._requests.labels(*labels).inc(new)
            sent.counts[i] += new
            sent.sums[i] += value * new


def _within(bucket: int, value: float) -> float:
    """``value`` kept inside bucket ``bucket`` (a count read one request ahead of its sum
    would otherwise move a mean across a bound); the next flush makes up the difference."""
    lower = BOUNDS[bucket - 1] if bucket > 0 else 0.0
    upper = BOUNDS[bucket] if bucket < len(BOUNDS) else math.inf
    return min(max(value, math.nextafter(lower, math.inf)), upper)


def _le(bound: float) -> str:
    return floatToGoString(bound)
