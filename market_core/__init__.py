"""The few facts the pipeline and the API must agree on: where a data home keeps its files,
the table's schema, the data version the API watches, and the writer/reader hand-off on the
DuckDB file. Nothing here imports Dagster or Litestar."""
