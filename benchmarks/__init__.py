"""Benchmarks: jobq beside its peers on the standard workloads. Run ``python -m benchmarks``."""
