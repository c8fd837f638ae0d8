"""One symbol rule for the pipeline and the API (``market_core.symbols``).

``str.upper()`` turns some non-ASCII letters into ASCII ones, so a watchlist entry that only
looks like a ticker once upper-cased (``ibm`` with a dotless i, ``spy`` after a sharp s) used to
load another ticker's bars. It must be a configuration error naming the entry, and nothing may
be fetched or written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from market_api.bars.params import parse_symbol
from market_api.http.errors import InvalidParameter
from market_core.home import DataHome
from market_core.symbols import InvalidSymbolError, normalize_symbol
from tests.pipeline.test_ingest_cli import ingest
from tests.stubs.alpha_vantage import AlphaVantageStub

# Each becomes an existing ticker under str.upper() or looks like one on screen.
LOOK_ALIKES = [
    "\u0131bm",  # dotless i: IBM
    "\u00dfpy",  # sharp s: SSPY
    "\u017f",  # long s: S
    "\ufb00",  # ff ligature: FF
    "\uff29\uff22\uff2d",  # fullwidth IBM
    "IBM\u200b",  # zero-width space
    "i\u0307bm",  # combining dot above
]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_a_look_alike_is_refused_by_the_pipeline_and_the_api_alike(text: str) -> None:
    with pytest.raises(InvalidSymbolError) as refused:
        normalize_symbol(text)
    assert repr(text) in str(refused.value), "the error names the entry as written"
    with pytest.raises(InvalidParameter) as api_refused:
        parse_symbol(text)
    assert api_refused.value.parameter == "symbol"


@pytest.mark.parametrize(
    ("text", "symbol"), [("aapl", "AAPL"), (" brk.b ", "BRK.B"), ("rds-a", "RDS-A")]
)
def test_ascii_symbols_are_case_insensitive_in_both(text: str, symbol: str) -> None:
    assert normalize_symbol(text) == symbol
    assert parse_symbol(text) == symbol


@pytest.mark.parametrize("where", ["MARKET_SYMBOLS", "MARKET_WATCHLIST"])
def test_ingest_refuses_a_look_alike_and_loads_nothing(
    stub: AlphaVantageStub, tmp_path: Path, where: str
) -> None:
    home = DataHome(tmp_path / "d")
    env = {
        "ALPHAVANTAGE_API_KEY": "x", "ALPHAVANTAGE_BASE_URL": stub.url,
        "MARKET_DATA_HOME": str(home.root), "ALPHAVANTAGE_REQUESTS_PER_SECOND": "0",
        "ALPHAVANTAGE_REQUESTS_PER_MINUTE": "0", "ALPHAVANTAGE_REQUESTS_PER_DAY": "0",
    }  # fmt: skip
    if where == "MARKET_SYMBOLS":
        env[where] = "AAPL,\u0131bm"
    else:
        watchlist = tmp_path / "watchlist.txt"
        watchlist.write_text("AAPL\n\u00dfpy  # looks like SSPY\n", encoding="utf-8")
        env[where] = str(watchlist)
    done = ingest(env)
    assert done.returncode == 2, done.stdout + done.stderr
    bad = "\u0131bm" if where == "MARKET_SYMBOLS" else "\u00dfpy"
    assert repr(bad) in done.stderr and "not a ticker symbol" in done.stderr, done.stderr
    assert stub.count() == 0, "no symbol of a bad watchlist is fetched"
    assert not home.raw_dir.exists() and not home.duckdb_path.exists()
