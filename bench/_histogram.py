"""Latency distributions: HDR histograms in microseconds, and their summary.

An HDR histogram keeps every value to three significant digits from 1 us to
60 s in fixed memory, so p99.9 is exact to the histogram's resolution (no
sampling, no reservoir bias). Values outside the range are clamped to it and
counted in ``clamped``, never dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import msgspec
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

#: the histogram's range, in microseconds
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3


class LatencyUs(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles of one latency distribution, in microseconds."""

    p50: float
    p99: float
    p999: float
    max: float
    mean: float
    samples: int


class LatencyHistogram:
    """An HDR histogram of latencies given in seconds, read in microseconds."""

    __slots__ = ("_histogram", "_total_us", "clamped")

    def __init__(self) -> None:
        self._histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self._total_us = 0  # for the mean: the histogram's own walks every bucket (slow)
        self.clamped = 0

    def record_seconds(self, latencies: Iterable[float]) -> None:
        """Record each latency (seconds); negative ones count as 0, huge ones as 60 s."""
        counts = Counter(round(value * 1_000_000) for value in latencies)
        for micros, count in counts.items():
            value = micros
            if value < LOWEST_US or value > HIGHEST_US:
                self.clamped += count
                value = min(max(value, LOWEST_US), HIGHEST_US)
            self._histogram.record_value(value, count)
            self._total_us += value * count

    def add(self, other: LatencyHistogram) -> None:
        """Merge ``other`` into this histogram (percentiles of the union)."""
        self._histogram.add(other._histogram)
        self._total_us += other._total_us
        self.clamped += other.clamped

    @property
    def samples(self) -> int:
        return int(self._histogram.get_total_count())

    def percentile_us(self, percentile: float) -> float:
        if not self.samples:
            return 0.0
        return float(self._histogram.get_value_at_percentile(percentile))

    def summary(self) -> LatencyUs:
        if not self.samples:
            return LatencyUs(p50=0.0, p99=0.0, p999=0.0, max=0.0, mean=0.0, samples=0)
        return LatencyUs(
            p50=self.percentile_us(50.0),
            p99=self.percentile_us(99.0),
            p999=self.percentile_us(99.9),
            max=float(self._histogram.get_max_value()),
            mean=round(self._total_us / self.samples, 1),
            samples=self.samples,
        )
