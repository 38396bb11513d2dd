"""Benchmarks: jobq beside its peers, BENCHMARK.md workloads. Run ``python -m benchmarks``."""
