"""Benchmarks (``make bench``): figures go to ``bench/results/*.json``, never into test assertions."""
