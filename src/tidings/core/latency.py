"""Latency histograms kept as plain counts: cheap to observe, exposed at scrape time.

``/metrics`` (``server/metrics.py``) turns them into Prometheus histograms; nothing here
depends on a metrics library, so the core pays two clock reads and a bisect per observation.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["BUCKETS", "Latencies"]

# Upper bounds in seconds (Prometheus ``le``): sub-millisecond broker calls up to slow hooks.
BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Latencies:
    """One histogram per name (a command method, a broker operation)."""

    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}  # per bucket, the last one past every bound
        self.sums: dict[str, float] = {}

    def observe(self, name: str, seconds: float) -> None:
        counts = self.counts.get(name)
        if counts is None:
            counts = self.counts[name] = [0] * (len(BUCKETS) + 1)
            self.sums[name] = 0.0
        counts[bisect_left(BUCKETS, seconds)] += 1
        self.sums[name] += seconds
