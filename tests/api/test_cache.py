"""The response cache: ETag/304, its bounds, and invalidation by a new data version."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from market_api.http.cache import CacheKey, ResponseCache, build_response
from market_api.http.fastpath import etag_matches
from market_api.http.negotiation import request_format
from market_api.settings import Settings
from market_core import data_version
from market_core.env import SettingsError
from market_core.handoff import write_lock
from tests.api.conftest import ApiClient, Dataset, MakeClient, service_of
from tests.api.writer import Row, load

URL = "/instruments/AAPL/ohlcv?limit=5"


def test_etag_and_304_on_the_cached_and_the_uncached_path(client: ApiClient) -> None:
    first = client.get(URL)  # a miss: answered by Litestar
    etag = first.headers["etag"]
    assert first.status_code == 200
    assert etag.startswith('"') and etag.endswith('"')
    assert "max-age=0" in first.headers["cache-control"]
    hit = client.get(URL, headers={"If-None-Match": etag})  # a hit: answered by the fast path
    assert hit.status_code == 304
    assert hit.content == b""
    assert hit.headers["etag"] == etag
    # Another spelling of the same question is its own entry, with the same ETag: also 304.
    other = client.get("/instruments/aapl/ohlcv?limit=5", headers={"If-None-Match": etag})
    assert other.status_code == 304
    weak_and_listed = client.get(URL, headers={"If-None-Match": f'"nope", W/{etag}'})
    assert weak_and_listed.status_code == 304
    stale = client.get(URL, headers={"If-None-Match": '"not-the-etag"'})
    assert stale.status_code == 200
    assert stale.content == first.content


def test_etags_differ_between_questions_and_formats(client: ApiClient) -> None:
    tags = {
        client.get(URL).headers["etag"],
        client.get("/instruments/AAPL/ohlcv?limit=6").headers["etag"],
        client.get(URL, headers={"Accept": "text/csv"}).headers["etag"],
        client.get("/instruments/MSFT/ohlcv?limit=5").headers["etag"],
    }
    assert len(tags) == 4


def test_a_hit_does_no_duckdb_work(dataset: Dataset, make_client: MakeClient) -> None:
    """With the file taken by a writer, cached answers still come; a miss gets a 503."""
    client = make_client(dataset.home, unavailable_wait_seconds=0.2)
    cached = client.get(URL)
    cached_lower = client.get("/instruments/aapl/ohlcv?limit=5")
    with write_lock(dataset.home):
        service_of(client).reader.close()
        again = client.get(URL)
        assert again.status_code == 200
        assert again.content == cached.content
        assert client.get("/instruments/aapl/ohlcv?limit=5").content == cached_lower.content
        # The key is the request as it arrived: a spelling never asked before is a miss.
        assert client.get("/instruments/Aapl/ohlcv?limit=5").status_code == 503
        miss = client.get("/instruments/AAPL/ohlcv?limit=7")
        assert miss.status_code == 503
        assert miss.headers["retry-after"] == "1"
        assert miss.json()["error"] == "data_unavailable"
        assert not service_of(client).reader.is_open
    assert client.get("/instruments/AAPL/ohlcv?limit=7").status_code == 200


def test_entry_bound_holds_under_many_distinct_queries(
    dataset: Dataset, make_client: MakeClient
) -> None:
    client = make_client(dataset.home, cache_entries=5)
    cache = service_of(client).cache
    for limit in range(1, 41):
        response = client.get(f"/instruments/AAPL/ohlcv?limit={limit}")
        assert len(response.json()["bars"]) == limit
        assert len(cache) <= 5
    assert len(cache) == 5
    # The newest entries are the ones kept.
    assert client.get("/instruments/AAPL/ohlcv?limit=40").json()["bars"][0]


def test_byte_bound_holds_under_many_distinct_queries(
    dataset: Dataset, make_client: MakeClient
) -> None:
    bound = 16 * 1024
    client = make_client(dataset.home, cache_bytes=bound)
    cache = service_of(client).cache
    for limit in range(1, 60):
        for accept in ("application/json", "text/csv"):
            response = client.get(f"/instruments/AAPL/ohlcv?limit={limit}",
                                  headers={"Accept": accept})  # fmt: skip
            assert response.status_code == 200
            assert cache.size_bytes <= bound
    assert 0 < len(cache) < 59
    huge = client.get("/instruments/AAPL/ohlcv")  # bigger than the whole cache: served, not kept
    assert huge.status_code == 200
    assert all(entry.size <= bound for entry in cache._entries.values())


JSON = b"application/json"


def key(path: str, query: bytes = b"") -> CacheKey:
    return (path, query, "json")


def test_lru_evicts_the_least_recently_used() -> None:
    cache = ResponseCache(max_entries=2, max_bytes=10**6, data_version=lambda: None)
    gen, version = cache.snapshot()
    for name in ("a", "b"):
        cache.put(build_response(key(f"/{name}"), name.encode(), JSON, version), gen)
    assert cache.get(key("/a")) is not None  # a is now the most recent
    cache.put(build_response(key("/c"), b"c", JSON, version), gen)
    assert cache.get(key("/b")) is None
    assert cache.get(key("/a")) is not None and cache.get(key("/c")) is not None


def test_bytes_count_key_body_and_headers_and_a_replaced_entry_once() -> None:
    cache = ResponseCache(max_entries=10, max_bytes=10**6, data_version=lambda: None)
    gen, version = cache.snapshot()
    long_query = key("/k", b"x" * 1000)
    cache.put(build_response(long_query, b"body", JSON, version), gen)
    one = cache.size_bytes
    assert one > 1000 + len(b"body")
    cache.put(build_response(long_query, b"new body", JSON, version), gen)
    assert len(cache) == 1
    assert cache.size_bytes == one + len(b"new body") - len(b"body")


def test_the_etag_depends_on_what_is_sent_not_on_how_it_was_asked() -> None:
    a = build_response(key("/instruments/AAPL/stats"), b"{}", JSON, "v1")
    b = build_response(key("/instruments/aapl/stats"), b"{}", JSON, "v1")
    assert a.etag == b.etag
    assert build_response(key("/x"), b"{}", JSON, "v2").etag != a.etag
    assert build_response(key("/x"), b"{}", b"text/csv; charset=utf-8", "v1").etag != a.etag
    assert build_response(key("/x"), b"[]", JSON, "v1").etag != a.etag


def test_a_miss_computed_before_a_new_version_is_not_stored() -> None:
    """The cache follows whatever data version its store's reader hands out."""
    versions = ["v1"]
    cache = ResponseCache(max_entries=10, max_bytes=10**6, data_version=lambda: versions[-1])
    generation, version = cache.snapshot()
    assert version == "v1"
    versions.append("v2")
    assert cache.poll()
    assert not cache.put(build_response(key("/k"), b"old", JSON, version), generation)
    assert cache.get(key("/k")) is None
    assert not cache.poll()  # nothing new


PASSED_THROUGH = [
    "/instruments/ZZZZ/stats",
    "/instruments/AAPL/ohlcv?limit=0",
    "/nowhere",
    "/schema",
    "/schema/openapi.json",
    "/schema/swagger-ui/swagger-ui.css",
]


def test_only_cacheable_answers_are_stored(client: ApiClient) -> None:
    """Errors, the docs and other methods pass through; only the data endpoints' 200s stay."""
    cache = service_of(client).cache
    for url in PASSED_THROUGH:
        first, again = client.get(url), client.get(url)
        assert first.status_code == again.status_code, url
        assert first.content == again.content, url
        assert "etag" not in first.headers or url.startswith("/schema"), url
    assert client.post("/instruments").status_code == 405
    assert len(cache) == 0
    assert client.get(URL).status_code == 200
    assert len(cache) == 1


def test_a_format_the_question_lacks_is_answered_and_stored_as_json(client: ApiClient) -> None:
    """``/health`` has no CSV: asked for CSV it answers JSON, and so does the stored entry."""
    for _ in range(2):  # a miss, then a hit
        health = client.get("/health", headers={"Accept": "text/csv"})
        assert health.headers["content-type"] == "application/json"
        assert health.json()["status"] == "ok"
    # Two Accept fields are one list (RFC 9110): the key and the answer agree on CSV.
    both = client.get(URL, headers=[("Accept", "text/csv"), ("Accept", "application/json;q=0.1")])
    assert both.headers["content-type"].startswith("text/csv")
    assert client.get(URL).headers["content-type"] == "application/json"


def test_cache_can_be_turned_off(dataset: Dataset, make_client: MakeClient) -> None:
    client = make_client(dataset.home, cache_entries=0)
    for _ in range(3):
        assert client.get(URL).status_code == 200
    assert len(service_of(client).cache) == 0


def next_day_bar(dataset: Dataset) -> Row:
    newest = dataset.rows["AAPL"][-1][0]
    new_day = newest + timedelta(days=3 if newest.weekday() == 4 else 1)
    return (new_day, "AAPL", 1.0, 2.0, 0.5, 1.5, 42)


def test_a_load_is_served_from_the_first_poll_after_it(
    dataset: Dataset, make_client: MakeClient
) -> None:
    """Staleness is bounded by the poll and nothing else: until a poll sees the new data
    version the cache answers as before; from the first poll after it, every answer is new.
    (The watch thread's own poll is parked an hour away, so the test decides when it runs.)"""
    client = make_client(dataset.home, poll_seconds=3600.0)
    service = service_of(client)
    old = client.get(URL)
    service.reader.close()  # a writer in this very process: hand the file over, as poll() would
    bar = next_day_bar(dataset)
    load(dataset.home, [bar])
    assert client.get(URL).content == old.content, "invalidated without a poll"
    assert service.cache.poll()
    response = client.get(URL)
    assert response.json()["bars"][-1]["timestamp"] == bar[0].date().isoformat()
    assert response.json()["bars"][-1]["volume"] == 42
    assert response.headers["etag"] != old.headers["etag"]
    health = client.get("/health").json()
    assert health["data_version"] == data_version.read(dataset.home.version_path)
    assert health["newest_bar_date"] == bar[0].date().isoformat()
    aapl = client.get("/instruments").json()["instruments"][0]
    assert aapl["bar_count"] == len(dataset.rows["AAPL"]) + 1


def test_the_watch_thread_polls_so_a_load_shows_without_restart(
    client: ApiClient, dataset: Dataset
) -> None:
    """How soon is a benchmark's question; here only that it happens (the deadline only stops
    a broken build from hanging). The poll interval itself is capped at 1 s."""
    old = client.get(URL)
    bar = next_day_bar(dataset)
    load(dataset.home, [bar])
    deadline = time.monotonic() + 60
    while client.get(URL).content == old.content:
        assert time.monotonic() < deadline, "the new data version was never picked up"
        time.sleep(0.01)
    assert client.get(URL).json()["bars"][-1]["timestamp"] == bar[0].date().isoformat()
    with pytest.raises(SettingsError, match="MARKET_API_POLL_SECONDS"):
        Settings.from_env({"MARKET_API_POLL_SECONDS": "1.5"})


def test_an_unchanged_version_keeps_the_cache(client: ApiClient) -> None:
    client.get(URL)
    cache = service_of(client).cache
    time.sleep(0.1)  # several poll ticks
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        (b"", "json"),
        (b"text/csv", "csv"),
        (b"TEXT/CSV", "csv"),
        (b"text/*", "csv"),
        (b"text/csv;q=0.2, */*;q=0.1", "csv"),
        (b"application/json, text/csv", "json"),
        (b"text/csv;q=oops, application/json", "json"),
        (b"image/png", "json"),
    ],
)
def test_request_format(accept: bytes | None, expected: str) -> None:
    assert request_format(accept) == expected


def test_etag_matches() -> None:
    assert etag_matches(b'"a"', b'"a"')
    assert etag_matches(b'W/"a"', b'"a"')
    assert etag_matches(b'"x", "a"', b'"a"')
    assert etag_matches(b"*", b'"a"')
    assert not etag_matches(b'"b"', b'"a"')
    assert not etag_matches(None, b'"a"')


def test_settings_from_env() -> None:
    settings = Settings.from_env(
        {"MARKET_API_CACHE_ENTRIES": "7", "MARKET_API_CACHE_BYTES": "1_000_000"}
    )
    assert (settings.cache_entries, settings.cache_bytes) == (7, 1_000_000)
    assert Settings.from_env({}).cache_entries == 10_000
    with pytest.raises(SettingsError, match="MARKET_API_CACHE_BYTES"):
        Settings.from_env({"MARKET_API_CACHE_BYTES": "lots"})
    with pytest.raises(SettingsError, match="MARKET_API_CACHE_ENTRIES"):
        Settings.from_env({"MARKET_API_CACHE_ENTRIES": "-1"})
