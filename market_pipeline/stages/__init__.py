"""The three stages' work per symbol, free of Dagster: fetch (``raw``), validate (``clean``),
upsert (``ohlcv``). ``market_pipeline.batch`` drives them; ``market_pipeline.assets`` exposes them
as the asset graph."""
