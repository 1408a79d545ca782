"""Trials of a pipeline: warm-up, then timed runs at maximum or at an offered load.

The same trial logic drives every async pipeline, on trio or on asyncio (an
:class:`AsyncRuntime` supplies the clock, events and deadlines), and, in its
``_sync`` form, a pipeline fed by a sender thread. Before every trial the
pipeline settles (nothing in flight, storage flushed) and the garbage
collector runs, so trials start from the same state. A trial that does not
finish within the plan's timeout is cut off and reported incomplete; the
measurement then stops, since the pipeline is no longer in a known state.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio

from ._load import (
    AsyncioLoadClock,
    EventIds,
    LoadClock,
    ThreadLoadClock,
    Timeline,
    TrioLoadClock,
    drive_closed_loop,
    drive_closed_loop_sync,
    drive_open_loop,
    drive_open_loop_sync,
)
from ._progress import Progress
from ._table import rate as fmt_rate
from ._trials import Run, TrialPlan, summarize


class Pipeline(Protocol):
    """Something an async sender pushes events through."""

    @property
    def name(self) -> str: ...

    def attach(self, timeline: Timeline | None) -> None:
        """Report completions to ``timeline`` from now on."""

    async def submit(self, seq: int) -> None:
        """Build event ``seq`` of the attached timeline and send it in."""

    async def settle(self) -> None:
        """Wait until nothing is in flight and the pipeline is ready for a trial."""


class SyncPipeline(Protocol):
    """Something a sender thread pushes events through."""

    @property
    def name(self) -> str: ...

    def attach(self, timeline: Timeline | None) -> None: ...

    def submit(self, seq: int) -> None: ...

    def settle(self, timeout: float) -> bool:
        """Wait until nothing is in flight; ``False`` if that took longer than ``timeout``."""


class DoneEvent(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> object: ...


class AsyncRuntime(Protocol):
    """What the trial logic needs from an event loop."""

    clock: LoadClock

    def event(self) -> DoneEvent: ...

    def deadline(self, seconds: float) -> AbstractAsyncContextManager[None]:
        """Run the body for at most ``seconds``; on expiry leave it quietly."""


class TrioRuntime:
    clock: LoadClock = TrioLoadClock()

    def event(self) -> DoneEvent:
        return trio.Event()

    @asynccontextmanager
    async def deadline(self, seconds: float) -> AsyncIterator[None]:
        with trio.move_on_after(seconds):
            yield


class AsyncioRuntime:
    clock: LoadClock = AsyncioLoadClock()

    def event(self) -> DoneEvent:
        return asyncio.Event()

    @asynccontextmanager
    async def deadline(self, seconds: float) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            pass


async def run_trial(runtime: AsyncRuntime, pipeline: Pipeline, count: int, ids: EventIds, *,
                    rate: float | None, timeout: float) -> Timeline:
    """One timed run of ``count`` events: closed loop, or open loop at ``rate``."""
    async with runtime.deadline(timeout):
        await pipeline.settle()
    gc.collect()
    done = runtime.event()
    timeline = Timeline(count, first_id=ids.take(count), on_done=done.set)
    pipeline.attach(timeline)
    async with runtime.deadline(timeout):
        if rate is None:
            await drive_closed_loop(pipeline.submit, timeline, runtime.clock)
        else:
            await drive_open_loop(pipeline.submit, timeline, runtime.clock, rate)
        await done.wait()
    return timeline


async def measure_max(runtime: AsyncRuntime, pipeline: Pipeline, plan: TrialPlan,
                      ids: EventIds, progress: Progress, label: str) -> Run:
    """Maximum throughput (closed loop): a calibrating warm-up, then ``plan.trials`` runs."""
    first = await run_trial(runtime, pipeline, plan.calibration_events, ids, rate=None,
                            timeout=plan.timeout)
    timelines = [first]
    if first.done:
        warm = await run_trial(runtime, pipeline,
                               plan.events_for(first.throughput(), plan.warmup_seconds), ids,
                               rate=None, timeout=plan.timeout)
        estimate = warm.throughput()
        progress.say(f"{label} {pipeline.name}: warm, ~{fmt_rate(estimate)} msg/s")
        timelines = [warm]
        if warm.done:
            timelines = []
            for trial in range(plan.trials):
                timeline = await run_trial(runtime, pipeline, plan.events_for(estimate), ids,
                                           rate=None, timeout=plan.timeout)
                timelines.append(timeline)
                progress.say(f"{label} {pipeline.name}: max trial {trial + 1}/{plan.trials} "
                             f"{fmt_rate(timeline.throughput())} msg/s")
                if not timeline.done:
                    break
    return summarize(timelines, mode="max")


async def measure_open(runtime: AsyncRuntime, pipeline: Pipeline, offered: float,
                       fraction: float, plan: TrialPlan, ids: EventIds, progress: Progress,
                       label: str) -> Run:
    """The pipeline under ``offered`` events/s, open loop (``plan.open_trials`` runs)."""
    count = plan.events_for(offered)
    timelines = []
    for trial in range(plan.open_trials):
        timeline = await run_trial(runtime, pipeline, count, ids, rate=offered,
                                   timeout=plan.timeout)
        timelines.append(timeline)
        progress.say(f"{label} {pipeline.name}: {fraction:.0%} load "
                     f"({fmt_rate(offered)} msg/s offered) trial {trial + 1}/{plan.open_trials}")
        if not timeline.done:
            break
    return summarize(timelines, mode="open", load_fraction=fraction, offered=offered)


def run_trial_sync(pipeline: SyncPipeline, count: int, ids: EventIds, *, rate: float | None,
                   timeout: float, clock: ThreadLoadClock | None = None) -> Timeline:
    """:func:`run_trial` for a sender thread (the calling thread sends)."""
    pipeline.settle(timeout)
    gc.collect()
    done = threading.Event()
    timeline = Timeline(count, first_id=ids.take(count), on_done=done.set)
    pipeline.attach(timeline)
    sender_clock = clock or ThreadLoadClock()
    if rate is None:
        drive_closed_loop_sync(pipeline.submit, timeline, sender_clock)
    else:
        drive_open_loop_sync(pipeline.submit, timeline, sender_clock, rate)
    done.wait(timeout)
    return timeline


def measure_max_sync(pipeline: SyncPipeline, plan: TrialPlan, ids: EventIds,
                     progress: Progress, label: str) -> Run:
    """:func:`measure_max` for a sender thread."""
    return _measure_sync(pipeline, plan, ids, progress, label, None, 1.0)


def measure_open_sync(pipeline: SyncPipeline, offered: float, fraction: float, plan: TrialPlan,
                      ids: EventIds, progress: Progress, label: str) -> Run:
    """:func:`measure_open` for a sender thread."""
    return _measure_sync(pipeline, plan, ids, progress, label, offered, fraction)


def _measure_sync(pipeline: SyncPipeline, plan: TrialPlan, ids: EventIds, progress: Progress,
                  label: str, offered: float | None, fraction: float) -> Run:
    def trial(count: int) -> Timeline:
        return run_trial_sync(pipeline, count, ids, rate=offered, timeout=plan.timeout)

    if offered is None:
        first = trial(plan.calibration_events)
        if not first.done:
            return summarize([first], mode="max")
        warm = trial(plan.events_for(first.throughput(), plan.warmup_seconds))
        estimate = warm.throughput()
        progress.say(f"{label} {pipeline.name}: warm, ~{fmt_rate(estimate)} msg/s")
        if not warm.done:
            return summarize([warm], mode="max")
        count, trials = plan.events_for(estimate), plan.trials
    else:
        count, trials = plan.events_for(offered), plan.open_trials
    timelines = []
    for number in range(trials):
        timeline = trial(count)
        timelines.append(timeline)
        what = "max" if offered is None else f"{fraction:.0%} load"
        progress.say(f"{label} {pipeline.name}: {what} trial {number + 1}/{trials} "
                     f"{fmt_rate(timeline.throughput())} msg/s")
        if not timeline.done:
            break
    if offered is None:
        return summarize(timelines, mode="max")
    return summarize(timelines, mode="open", load_fraction=fraction, offered=offered)
