"""``tidings bench``: benchmarks run from the command line (see docs/benchmarks.md)."""

__all__: list[str] = []
