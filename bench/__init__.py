"""Benchmark suites for the Interlink engine."""
