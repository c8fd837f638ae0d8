"""The API key is never written anywhere, even when Alpha Vantage or requests echo it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, Run
from tests.pipeline.helpers import failure_text
from tests.stubs.alpha_vantage import AlphaVantageStub


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_key_is_in_no_file_log_or_error_after_every_kind_of_failure(
    keyed: AlphaVantageStub,
    run: Run,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed.script("BBB", "reset", "reset", "reset")
    keyed.script("CCC", "error_message")
    keyed.script("DDD", "info_daily")
    result = run(["AAA", "BBB", "CCC", "DDD"], max_attempts=3)

    assert not result.success
    assert keyed.requests[0].apikey == TEST_KEY, "the stub did receive the key"
    messages = failure_text(result)
    assert "BBB" in messages and "CCC" in messages and "DDD" in messages
    assert TEST_KEY not in messages
    assert "apikey=***" in caplog.text, "urllib3 logged the request line, redacted"
    assert TEST_KEY not in caplog.text
    out, err = capfd.readouterr()
    assert TEST_KEY not in out + err
    assert files_containing(tmp_path, TEST_KEY.encode()) == []
    assert list(tmp_path.rglob("*.parquet")), "the run did write files to search"
