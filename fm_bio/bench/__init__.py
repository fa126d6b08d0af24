"""Benchmarks run by ``make bench``: reports written to ``experiments/bench/``, not timed tests."""
