"""Wall-clock time behind an interface, so tests and benchmarks can control it.

Durations (timeouts, idle passivation, backoff) use trio's own clock, which
tests replace with ``trio.testing.MockClock``; *timestamps* (event times,
metadata log, retention) come from a :class:`Clock`.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class TrioWallClock:
    """Wall time that advances with trio's clock: ``start + trio.current_time()``.

    Under ``autojump_clock`` this makes timestamps deterministic and lets a
    test jump days ahead (retention, roll-ups) without sleeping.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._start = start

    def now(self) -> float:
        return self._start + trio.current_time()
