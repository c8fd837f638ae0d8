"""Facts of Alpha Vantage's answers that more than one path reads: the bar fields and the sizes."""

from __future__ import annotations

from typing import Literal

FIELDS = {"open": "1. open", "high": "2. high", "low": "3. low", "close": "4. close",
          "volume": "5. volume"}  # fmt: skip
"""A bar's values under our names and the keys Alpha Vantage sends them under (daily and
intraday alike; an intraday CSV names its columns by our names)."""

OutputSize = Literal["compact", "full", "auto"]
OUTPUTSIZES: tuple[OutputSize, ...] = ("compact", "full", "auto")
