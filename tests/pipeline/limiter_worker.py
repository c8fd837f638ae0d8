"""A separate process that fetches through the shared limiter (see test_rate_limit.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from market_core.home import DataHome
from market_pipeline.resources.alpha_vantage import AlphaVantageClient


def main(home: str, url: str, key: str, per_second: int, symbols: list[str]) -> None:
    client = AlphaVantageClient(
        home=DataHome(Path(home)),
        api_key=key,
        base_url=url,
        requests_per_second=per_second,
        requests_per_minute=0,
        requests_per_day=0,
    )
    for symbol in symbols:
        client.fetch_daily(symbol, "compact")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(","))
