"""Upsert semantics, rejects, flags and metadata, through real runs against the stub."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from dagster import AssetKey

from market_core import data_version
from market_core.home import DataHome
from tests.conftest import Run
from tests.pipeline.helpers import failure_text, materialized, recent_bars, snapshot, table_rows
from tests.stubs.alpha_vantage import AlphaVantageStub


def test_revised_bar_replaces_the_old_one_and_reruns_change_nothing(
    keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    bars = recent_bars(20)
    keyed.set_bars("AAA", bars)
    assert run(["AAA"]).success
    first_version = data_version.read(home.version_path)
    date, values = bars[-1]
    bars[-1] = (date, {**values, "4. close": "999.5000", "2. high": "1000.0000"})
    keyed.set_bars("AAA", bars)

    assert run(["AAA"]).success
    rows = table_rows(home, "AAA")
    assert len(rows) == 20
    newest = rows[-1]
    assert newest[0] == dt.datetime.fromisoformat(date) and newest[5] == 999.5
    revised_version = data_version.read(home.version_path)
    assert revised_version != first_version

    assert run(["AAA"]).success
    assert table_rows(home, "AAA") == rows
    assert data_version.read(home.version_path) == revised_version, "nothing changed"


def _bar(o: str, h: str, lo: str, c: str, v: str) -> dict[str, str]:
    return {"1. open": o, "2. high": h, "3. low": lo, "4. close": c, "5. volume": v}


def test_impossible_rows_are_rejected_with_their_rule_and_suspicious_ones_flagged(
    keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    bars = recent_bars(40)
    broken = {
        3: ("high_inconsistent", _bar("100", "99", "98", "100.5", "1000")),
        5: ("missing_value", _bar("100", "101", "99", "NaN", "1000")),
        7: ("missing_value", _bar("100", "101", "99", "100", "")),
        9: ("non_positive_price", _bar("0", "101", "99", "100", "1000")),
        11: ("negative_volume", _bar("100", "101", "99", "100", "-5")),
        13: ("low_inconsistent", _bar("100", "101", "100.5", "100.2", "1000")),
        15: ("missing_value", _bar("abc", "101", "99", "100", "1000")),
    }
    for i, (_, values) in broken.items():
        bars[i] = (bars[i][0], values)
    split_day = bars[30][0]
    bars[30] = (split_day, _bar("16.0", "16.5", "15.5", "16.2", "7000000"))  # a 7:1 split
    for i in range(31, 40):
        d = bars[i][0]
        price = 16.2 + (i - 30) * 0.05
        bars[i] = (d, _bar(f"{price}", f"{price + 0.3}", f"{price - 0.3}", f"{price}", "1000000"))
    thin_day = bars[20][0]
    bars[20] = (thin_day, {**bars[20][1], "5. volume": "100"})  # 10,000x below its neighbours
    keyed.set_bars("AAA", bars)

    result = run(["AAA"])
    assert result.success, failure_text(result)

    rejects = pl.read_parquet(home.rejects_file("AAA"))
    expected = sorted((bars[i][0], reason) for i, (reason, _) in broken.items())
    assert sorted(rejects.select("timestamp", "reason").iter_rows()) == expected
    assert rejects.filter(pl.col("reason") == "missing_value")["close"].to_list().count("NaN") == 1

    clean = pl.read_parquet(home.clean_file("AAA"))
    flags = dict(
        clean.filter(pl.col("flags").is_not_null())
        .select(pl.col("timestamp").dt.date().cast(pl.String), "flags")
        .iter_rows()
    )
    assert flags == {split_day: "large_move", thin_day: "volume_outlier"}

    loaded = {row[0].date().isoformat() for row in table_rows(home, "AAA")}
    assert len(loaded) == 40 - len(broken)
    assert split_day in loaded and thin_day in loaded
    assert not loaded & {bars[i][0] for i in broken}

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["reject_missing_value"].passed
    assert checks["reject_missing_value"].metadata["rows"].value == 3
    assert checks["reject_bad_date"].passed
    assert not checks["flag_large_move"].passed
    assert checks["flag_large_move"].metadata["by_symbol"].value == {"AAA": 1}


@pytest.mark.parametrize(("fault", "reason"), [("future", "future_date"),
                                               ("duplicates", "duplicate_date"),
                                               ("non_numeric", "missing_value")])  # fmt: skip
def test_row_level_faults_reach_the_rejects_and_never_overwrite_a_good_bar(
    fault: str, reason: str, keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    assert run(["AAA"]).success
    before = {row[0]: row for row in table_rows(home, "AAA")}
    keyed.script("AAA", fault)
    assert run(["AAA"]).success
    rejects = pl.read_parquet(home.rejects_file("AAA"))
    assert reason in rejects["reason"].to_list()
    after = {row[0]: row for row in table_rows(home, "AAA")}
    assert after == before


def test_history_start_filters_old_bars(
    keyed: AlphaVantageStub, run: Run, home: DataHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = recent_bars(30)
    keyed.set_bars("AAA", bars)
    monkeypatch.setenv("MARKET_HISTORY_START", bars[10][0])
    result = run(["AAA"])
    assert result.success
    rows = table_rows(home, "AAA")
    assert [r[0].date().isoformat() for r in rows] == [d for d, _ in bars[10:]]


def test_every_materialization_carries_metadata(keyed: AlphaVantageStub, run: Run) -> None:
    keyed.set_bars("AAA", recent_bars(12))
    result = run(["AAA"])
    events = {
        e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    raw, clean, ohlcv = (events[AssetKey(k)] for k in ("raw_data", "clean_data", "ohlcv_data"))
    assert raw["rows"].value == 12 and raw["outputsize"].value == "full"
    assert "apikey" not in raw["source"].value
    assert clean["rows"].value == 12 and clean["rejected"].value == 0
    assert clean["flagged"].value == 0
    assert clean["first_date"].value == recent_bars(12)[0][0]
    assert "| symbol |" in clean["preview"].value
    assert ohlcv["rows"].value == 12 and ohlcv["table"].value == "ohlcv_data"


def test_a_symbol_with_no_valid_bar_fails_alone_in_its_batch(
    keyed: AlphaVantageStub, run: Run, home: DataHome
) -> None:
    """The batch is validated in one query; its failures stay per symbol."""
    for symbol in ("AAA", "BBB", "CCC"):
        keyed.set_bars(symbol, recent_bars(15))
    assert run(["AAA", "BBB", "CCC"]).success
    before = snapshot([home.clean_file("BBB"), home.rejects_file("BBB")])
    keyed.set_bars(
        "BBB", [(d, _bar("100", "99", "98", "100.5", "1000")) for d, _ in recent_bars(15)]
    )
    keyed.set_bars("AAA", recent_bars(16))

    result = run(["AAA", "BBB", "CCC"])

    assert not result.success
    assert "BBB: no valid bar in the latest response (15 rows; rejected: high_inconsistent=15" in (
        failure_text(result)
    )
    assert (
        materialized(result, "clean_data") == materialized(result, "ohlcv_data") == {"AAA", "CCC"}
    )
    assert snapshot([home.clean_file("BBB"), home.rejects_file("BBB")]) == before
    assert len(table_rows(home, "AAA")) == 16 and len(table_rows(home, "BBB")) == 15


@pytest.mark.parametrize(
    ("stage_file", "selection"),
    [("raw_file", ["clean_data", "ohlcv_data"]), ("clean_file", ["ohlcv_data"])],
)
def test_an_unreadable_file_fails_its_symbol_alone(
    keyed: AlphaVantageStub, run: Run, home: DataHome, stage_file: str, selection: list[str]
) -> None:
    """Files of a batch are read in one scan; a damaged one must not fail its neighbours."""
    symbols = ["AAA", "BBB", "CCC"]
    for symbol in symbols:
        keyed.set_bars(symbol, recent_bars(15))
    assert run(symbols).success
    rows_before = table_rows(home, "BBB")
    getattr(home, stage_file)("BBB").write_bytes(b"PAR1 this is not a parquet file")

    result = run(symbols, selection=selection)

    assert not result.success
    assert "BBB: cannot read" in failure_text(result)
    assert materialized(result, "ohlcv_data") == {"AAA", "CCC"}
    assert table_rows(home, "BBB") == rows_before
