"""The comparisons the benchmarks measure ours against: floors and the original design."""
