"""Repeated trials and their summary: median, spread and merged latency percentiles.

A measurement is a warm-up followed by ``trials`` timed runs of the same
size. Its throughput is the median over the trials, with the trials listed
and their spread (``(max - min) / median``) so a noisy number is visible as
noisy. Latencies of all trials are merged into one HDR histogram, and each
trial's own p99 is listed too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

import msgspec

from ._histogram import LatencyHistogram, LatencyUs
from ._load import Timeline

Mode = Literal["max", "open"]


class TrialPlan(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how often to measure."""

    #: timed runs at maximum throughput
    trials: int
    #: timed runs at each offered load
    open_trials: int
    #: target length of one timed run
    seconds: float
    #: length of the warm-up run (also calibrates the event counts)
    warmup_seconds: float
    #: no timed run has fewer events than this
    min_events: int
    #: events of the first, calibrating, warm-up run
    calibration_events: int = 500

    def events_for(self, rate: float, seconds: float | None = None) -> int:
        """Events that last about ``seconds`` (default: one trial) at ``rate`` events/s."""
        length = self.seconds if seconds is None else seconds
        return max(self.min_events, round(rate * length))

    @property
    def timeout(self) -> float:
        """The most one run may take before it is cut off and reported incomplete."""
        return max(15.0, 20 * self.seconds)


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """One pipeline at one load, over several trials."""

    mode: Mode
    #: offered load as a fraction of the reference maximum (``None`` at maximum)
    load_fraction: float | None
    #: offered events/s (``None`` at maximum: the sender goes as fast as it can)
    offered_msgs_per_s: float | None
    #: median over the trials of delivered events/s
    throughput_msgs_per_s: float
    throughput_trials: list[float]
    #: (max - min) / median of the trials, in percent
    spread_pct: float
    #: percentiles of every delivered event of every trial
    latency_us: LatencyUs
    p99_trials_us: list[float]
    events_per_trial: int
    #: False when a trial was cut off before every event was delivered
    complete: bool


def spread_pct(values: Sequence[float]) -> float:
    """``(max - min) / median`` in percent (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    return 0.0 if middle == 0 else (max(values) - min(values)) / middle * 100


def summarize(timelines: Sequence[Timeline], *, mode: Mode, load_fraction: float | None = None,
              offered: float | None = None) -> Run:
    """Reduce the timelines of one measurement to a :class:`Run`."""
    if not timelines:
        raise ValueError("a measurement needs at least one trial")
    merged = LatencyHistogram()
    throughputs: list[float] = []
    p99s: list[float] = []
    for timeline in timelines:
        trial = LatencyHistogram()
        trial.record_seconds(timeline.latencies())
        merged.add(trial)
        throughputs.append(timeline.throughput())
        p99s.append(trial.percentile_us(99.0))
    return Run(
        mode=mode, load_fraction=load_fraction, offered_msgs_per_s=offered,
        throughput_msgs_per_s=statistics.median(throughputs),
        throughput_trials=throughputs, spread_pct=round(spread_pct(throughputs), 2),
        latency_us=merged.summary(), p99_trials_us=p99s,
        events_per_trial=timelines[0].count,
        complete=all(timeline.done for timeline in timelines),
    )
