"""Benchmarks for `make bench` (not pytest tests: no module here is named test_*)."""
