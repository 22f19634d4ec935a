"""``tidings bench``: benchmarks run from the command line (see docs/benchmarks.md)."""
