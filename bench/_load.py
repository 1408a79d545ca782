"""Load generation: when each event is sent, and when it counts as done.

Two sender shapes drive every pipeline (Interlink, the bare trio baseline and
the peers) the same way:

- **Closed loop** (maximum throughput): send the next event as soon as the
  previous ``submit`` returns. An event's *scheduled* time is the moment the
  sender got to it, so a full mailbox delays the sender and the latency
  measures time in the pipeline only.
- **Open loop** (offered load): event ``i`` is scheduled at
  ``start + i / rate`` on the clock, whatever the pipeline is doing. If the
  pipeline (or the sender's own timer) falls behind, the events are sent late,
  but their latency is still measured from the *scheduled* time. That avoids
  coordinated omission: a stall shows up in the latency of every event that
  should have been sent during it, not only in the one that hit it.

A :class:`Timeline` holds both times for every event of one trial. The clock
is injected (:class:`LoadClock` for async senders, :class:`SyncLoadClock` for
a sender thread) so the scheduler can be tested with a fake one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

#: the first open-loop event is scheduled this long after the sender starts
START_LEAD_S = 0.001
#: an async clock sleeps until this close to a deadline, then yields until it passes
SPIN_WINDOW_S = 0.0015
#: a sender thread sleeps until this close to a deadline, then spins
THREAD_SPIN_WINDOW_S = 0.0005


class Timeline:
    """Scheduled and completion times of the events of one trial.

    Event ``seq`` (``0 <= seq < count``) carries the id ``str(first_id + seq)``;
    :meth:`complete` takes that id back. Completions of ids outside the trial
    (late events of an earlier one) are ignored, as are repeated ones.
    ``on_done`` runs once, from whichever thread completes the last event.
    """

    __slots__ = ("_countdown", "_now", "_on_done", "completed", "count", "first_id",
                 "scheduled")

    def __init__(self, count: int, *, first_id: int = 0,
                 now: Callable[[], float] = time.perf_counter,
                 on_done: Callable[[], object] | None = None) -> None:
        if count < 1:
            raise ValueError("a trial needs at least one event")
        self.count = count
        self.first_id = first_id
        self.scheduled = array("d", bytes(8 * count))
        self.completed = array("d", bytes(8 * count))
        self._now = now
        self._on_done = on_done
        self._countdown = itertools.count(1)  # next() is atomic under the GIL

    def event_id(self, seq: int) -> str:
        return str(self.first_id + seq)

    def complete(self, event_id: str) -> None:
        """Record that the event with ``event_id`` has been delivered, now."""
        seq = int(event_id) - self.first_id
        if not 0 <= seq < self.count or self.completed[seq]:
            return
        self.completed[seq] = self._now()
        if next(self._countdown) == self.count and self._on_done is not None:
            self._on_done()

    @property
    def completed_count(self) -> int:
        return self.count - self.completed.tolist().count(0.0)

    @property
    def done(self) -> bool:
        return self.completed_count == self.count

    def latencies(self) -> list[float]:
        """Completion minus *scheduled* time, in seconds, of every completed event."""
        return [done - scheduled for scheduled, done in zip(self.scheduled, self.completed,
                                                            strict=True) if done]

    def throughput(self) -> float:
        """Completed events per second, from the first scheduled send to the last completion."""
        finished = [done for done in self.completed if done]
        if not finished:
            return 0.0
        elapsed = max(finished) - self.scheduled[0]
        return len(finished) / elapsed if elapsed > 0 else 0.0


class EventIds:
    """Hands out disjoint ranges of numeric event ids, one range per trial."""

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def take(self, count: int) -> int:
        """The first id of a fresh range of ``count`` ids."""
        first = self._next
        self._next += count
        return first


Submit = Callable[[int], Awaitable[None]]
SubmitSync = Callable[[int], None]


class LoadClock(Protocol):
    """Time for an async sender: ``now`` in seconds and a precise ``wait_until``."""

    def now(self) -> float: ...

    async def wait_until(self, deadline: float) -> None: ...


class SyncLoadClock(Protocol):
    """Time for a sender thread."""

    def now(self) -> float: ...

    def wait_until(self, deadline: float) -> None: ...


class TrioLoadClock:
    """``time.perf_counter`` with trio: sleep until just before a deadline, then yield.

    trio's sleeps wake up to a millisecond late (epoll's resolution); the
    final stretch yields at every scheduler pass instead, so the sender is
    at most one pass late and the pipeline's tasks keep running meanwhile.
    """

    def now(self) -> float:
        return time.perf_counter()

    async def wait_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            if remaining > SPIN_WINDOW_S:
                await trio.sleep(remaining - SPIN_WINDOW_S)
            else:
                await trio.lowlevel.checkpoint()


class AsyncioLoadClock:
    """Like :class:`TrioLoadClock`, for asyncio."""

    def now(self) -> float:
        return time.perf_counter()

    async def wait_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining - SPIN_WINDOW_S if remaining > SPIN_WINDOW_S else 0)


class ThreadLoadClock:
    """For a sender thread: sleep until just before a deadline, then spin with ``sleep(0)``."""

    def now(self) -> float:
        return time.perf_counter()

    def wait_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            time.sleep(remaining - THREAD_SPIN_WINDOW_S if remaining > THREAD_SPIN_WINDOW_S
                       else 0)


def open_loop_times(count: int, rate: float, start: float) -> list[float]:
    """The scheduled send times of an open-loop trial: ``start + i / rate``."""
    if rate <= 0:
        raise ValueError(f"an offered load must be positive, got {rate}")
    interval = 1.0 / rate
    return [start + seq * interval for seq in range(count)]


async def drive_closed_loop(submit: Submit, timeline: Timeline, clock: LoadClock) -> None:
    """Send every event of ``timeline`` back to back (maximum throughput)."""
    scheduled = timeline.scheduled
    now = clock.now
    for seq in range(timeline.count):
        scheduled[seq] = now()
        await submit(seq)


async def drive_open_loop(submit: Submit, timeline: Timeline, clock: LoadClock,
                          rate: float) -> None:
    """Send event ``i`` at ``start + i / rate`` (late if need be; latency counts from then)."""
    times = open_loop_times(timeline.count, rate, clock.now() + START_LEAD_S)
    scheduled = timeline.scheduled
    for seq, at in enumerate(times):
        scheduled[seq] = at
        if clock.now() < at:
            await clock.wait_until(at)
        await submit(seq)


def drive_closed_loop_sync(submit: SubmitSync, timeline: Timeline,
                           clock: SyncLoadClock) -> None:
    """:func:`drive_closed_loop` for a sender thread."""
    scheduled = timeline.scheduled
    now = clock.now
    for seq in range(timeline.count):
        scheduled[seq] = now()
        submit(seq)


def drive_open_loop_sync(submit: SubmitSync, timeline: Timeline, clock: SyncLoadClock,
                         rate: float) -> None:
    """:func:`drive_open_loop` for a sender thread."""
    times = open_loop_times(timeline.count, rate, clock.now() + START_LEAD_S)
    scheduled = timeline.scheduled
    for seq, at in enumerate(times):
        scheduled[seq] = at
        if clock.now() < at:
            clock.wait_until(at)
        submit(seq)
