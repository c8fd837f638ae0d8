"""A separate process that fetches through the shared limiter (see test_rate_limit.py).

Prints ``quota: SYMBOL`` for each symbol refused for the daily quota, and carries on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from market_core.home import DataHome
from market_pipeline.source.client import AlphaVantageClient
from market_pipeline.source.errors import DailyQuotaError


def main(
    home: str, url: str, key: str, per_second: int, symbols: list[str], per_day: int = 0
) -> None:
    client = AlphaVantageClient(
        home=DataHome(Path(home)),
        api_key=key,
        base_url=url,
        requests_per_second=per_second,
        requests_per_minute=0,
        requests_per_day=per_day,
    )
    for symbol in symbols:
        try:
            client.fetch_daily(symbol, "compact")
        except DailyQuotaError:
            print(f"quota: {symbol}", flush=True)


if __name__ == "__main__":
    per_day = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(","), per_day)
