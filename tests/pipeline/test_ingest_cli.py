"""``make ingest``'s program, run as users run it: a subprocess with only environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from market_core.home import DataHome
from tests.conftest import ENV_VARS
from tests.pipeline.helpers import recent_bars, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub

REPO = Path(__file__).resolve().parents[2]


def ingest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [sys.executable, "-m", "market_pipeline.cli.ingest"],
        cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_ingest_loads_exactly_the_served_bars_minus_rejects(
    stub: AlphaVantageStub, tmp_path: Path
) -> None:
    bars_a, bars_b = recent_bars(25), recent_bars(30, start_price=50)
    bars_b[4] = (bars_b[4][0], {**bars_b[4][1], "2. high": "1.0"})  # high below low: rejected
    stub.set_bars("A", bars_a)
    stub.set_bars("B", bars_b)
    home = DataHome(tmp_path / "d")
    done = ingest({
        "ALPHAVANTAGE_API_KEY": "x", "ALPHAVANTAGE_BASE_URL": stub.url,
        "MARKET_SYMBOLS": "A,b", "MARKET_DATA_HOME": str(home.root),
        "ALPHAVANTAGE_REQUESTS_PER_SECOND": "0", "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0",
    })  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    def served(bars: list[tuple[str, dict[str, str]]]) -> list[tuple[str, float, int]]:
        return [(d, float(v["4. close"]), int(v["5. volume"])) for d, v in bars]

    def stored(symbol: str) -> list[tuple[str, float, int]]:
        return [(r[0].date().isoformat(), r[5], r[6]) for r in table_rows(home, symbol)]

    assert stored("A") == served(bars_a)
    assert stored("B") == served(bars_b[:4] + bars_b[5:])
    rejects = pl.read_parquet(home.rejects_file("B"))
    assert rejects.select("timestamp", "reason").rows() == [(bars_b[4][0], "high_inconsistent")]
    assert (home.dagster_home / "dagster.yaml").exists(), "the instance lives in the data home"


def test_ingest_exits_non_zero_and_names_the_failed_symbol(
    stub: AlphaVantageStub, tmp_path: Path
) -> None:
    stub.script("BAD", "error_message")
    done = ingest({
        "ALPHAVANTAGE_API_KEY": "x", "ALPHAVANTAGE_BASE_URL": stub.url,
        "MARKET_SYMBOLS": "GOOD,BAD", "MARKET_DATA_HOME": str(tmp_path / "d"),
        "ALPHAVANTAGE_REQUESTS_PER_SECOND": "0",
    })  # fmt: skip
    assert done.returncode == 1
    assert "BAD: Alpha Vantage refused the call" in done.stdout
    assert {r[1] for r in table_rows(DataHome(tmp_path / "d"))} == {"GOOD"}


def test_ingest_rejects_bad_configuration_with_a_clear_message(tmp_path: Path) -> None:
    done = ingest({"MARKET_SYMBOLS": "AAPL,not a symbol", "MARKET_DATA_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "'not a symbol' is not a ticker symbol" in done.stderr
    done = ingest({"ALPHAVANTAGE_REQUESTS_PER_DAY": "many", "MARKET_DATA_HOME": str(tmp_path)})
    assert done.returncode == 2 and "ALPHAVANTAGE_REQUESTS_PER_DAY" in done.stderr
    done = ingest({"MARKET_HISTORY_START": "2020-13-01", "MARKET_DATA_HOME": str(tmp_path)})
    assert done.returncode == 2 and "MARKET_HISTORY_START" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, "one line the user can act on, not a stack trace"


def test_offline_default_loads_the_watchlist_from_the_sample(tmp_path: Path) -> None:
    home = DataHome(tmp_path / "d")
    done = ingest({"MARKET_DATA_HOME": str(home.root)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundled offline sample" in done.stdout
    rows = table_rows(home)
    symbols = {r[1] for r in rows}
    assert symbols == {"AAPL", "MSFT", "GOOGL", "AMZN", "NVDA"}
    assert all(r[0].weekday() < 5 for r in rows), "trading days only"
    assert all(r[4] <= min(r[2], r[5]) <= max(r[2], r[5]) <= r[3] for r in rows), "valid OHLC"
    for symbol in symbols:
        rejects = pl.read_parquet(home.rejects_file(symbol))
        assert rejects.height == 3, "the sample's bad rows show in validation"
        flags = pl.read_parquet(home.clean_file(symbol))["flags"].drop_nulls().to_list()
        assert "large_move" in flags, "the sample's split-like drop is flagged"
