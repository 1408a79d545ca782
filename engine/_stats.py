"""Cheap in-process measurements the operator surface exports (as Prometheus metrics).

Kept as plain counters so the hot path pays a few hundred nanoseconds and the
core does not depend on a metrics library; ``supervisor`` turns them into
metrics at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

#: upper bounds in seconds, from 50 us to 10 s
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
)


class LatencyHistogram:
    """A fixed-bucket histogram (Prometheus semantics: cumulative on export)."""

    __slots__ = ("bucket_counts", "count", "total")

    def __init__(self) -> None:
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.bucket_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, count of observations <= bound)`` pairs, ending with ``+Inf``."""
        result, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.bucket_counts,
                                strict=True):
            running += count
            result.append((bound, running))
        return result
