"""The exchange whose calendar the bars follow: its time zone and today's date there."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

EXCHANGE_TZ = ZoneInfo("America/New_York")
"""NYSE's zone: bar dates, the schedule's cron and the future-date rule are read in it."""


def exchange_today() -> dt.date:
    return dt.datetime.now(EXCHANGE_TZ).date()
