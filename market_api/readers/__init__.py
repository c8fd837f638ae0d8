"""The store's readers: one interface (``interface.Reader``), two implementations."""

from __future__ import annotations

from market_api.readers.file import FileReader
from market_api.readers.interface import Query, Reader
from market_api.readers.lake import LakeReader
from market_api.settings import Settings
from market_core.lake import LakeSettings

__all__ = ["Query", "Reader", "open_reader"]


def open_reader(settings: Settings) -> Reader:
    """The shared lake's reader when ``MARKET_POSTGRES_URL`` is set, else the data home's
    DuckDB file's."""
    lake = LakeSettings.from_env()
    if lake is None:
        return FileReader(
            settings.home,
            wait_seconds=settings.unavailable_wait_seconds,
            retry_seconds=settings.poll_seconds,
            retry_after_seconds=settings.retry_after_seconds,
        )
    return LakeReader(
        lake,
        wait_seconds=settings.unavailable_wait_seconds,
        retry_seconds=settings.poll_seconds,
        retry_after_seconds=settings.retry_after_seconds,
    )
