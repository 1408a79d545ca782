"""Plain trio pipelines with Interlink's hop structure, and nothing else.

:class:`ChannelPipeline` keeps one task per session running::

    sender task ─(work.route)─► memory channel of session k ─► task of session k
                                                              ─(work.handle)─► delivered

One memory channel (capacity = the engine's mailbox capacity) and one task
per session; the sender builds the same events as Interlink's and, like
Interlink's inbound task, does the routing inline, so there is exactly one
task hop per event. Without ``work`` this is the bare one-hop pipeline the
scale and peers suites use. With an :class:`~bench._workload.EngineWork` it
does the engine's per-event work on bare trio, without the actor system: the
peers suite's *trio-tasks*, and, sending with ``send_nowait`` and a
checkpoint every :data:`YIELD_EVERY` events (``nowait=True``), the core
suite's baseline: the fastest plain trio design doing the same work (an
awaited ``send`` is a full scheduler pass per event).

:class:`SpawningPipeline` is the scale suite's baseline for activation: the
first event for a session creates its channel and spawns its task, as the
engine's virtual activation does, and :meth:`SpawningPipeline.stop_all`
closes every channel so the tasks end (passivation).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from engine import Message

from ._load import Timeline
from ._traffic import Traffic, TrafficLike
from ._workload import EngineWork

DEFAULT_CAPACITY = 1000
#: with ``nowait``, the sender checkpoints once every this many events (as the engine's does)
YIELD_EVERY = 64


class ChannelPipeline:
    """Sender → one channel and one task per session → delivered."""

    def __init__(self, name: str, traffic: Traffic, *, capacity: int = DEFAULT_CAPACITY,
                 work: EngineWork | None = None, nowait: bool = False) -> None:
        self.name = name
        self._traffic = traffic
        self._work = work
        self._nowait = nowait
        self._sent = 0
        channels = [trio.open_memory_channel[Message](capacity) for _ in traffic.destinations]
        self._sends = [send for send, _ in channels]
        self._receives = [receive for _, receive in channels]
        self._timeline: Timeline | None = None
        self._in_flight = 0
        self._drained: trio.Event | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, name: str, traffic: Traffic, *, capacity: int = DEFAULT_CAPACITY,
                   work: EngineWork | None = None, nowait: bool = False,
                   ) -> AsyncIterator[ChannelPipeline]:
        """Start one task per session; they stop on exit."""
        pipeline = cls(name, traffic, capacity=capacity, work=work, nowait=nowait)
        async with trio.open_nursery() as nursery:
            for receive in pipeline._receives:
                nursery.start_soon(pipeline._session, receive)
            try:
                yield pipeline
            finally:
                nursery.cancel_scope.cancel()

    async def _session(self, receive: trio.MemoryReceiveChannel[Message]) -> None:
        work = self._work
        async for event in receive:
            if work is not None:
                work.handle(event)
            timeline = self._timeline
            if timeline is not None:
                timeline.complete(event.event_id)
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()
                self._drained = None

    # -- the trial protocol (bench._runner.Pipeline) -----------------
    def attach(self, timeline: Timeline | None) -> None:
        self._timeline = timeline

    async def submit(self, seq: int) -> None:
        timeline = self._timeline
        assert timeline is not None, "attach a timeline before submitting"
        event = self._traffic.event(timeline.event_id(seq), seq)
        if self._work is not None:
            event = self._work.route(event)
        self._in_flight += 1
        send = self._sends[seq % len(self._sends)]
        if not self._nowait:
            await send.send(event)
            return
        try:
            send.send_nowait(event)
        except trio.WouldBlock:
            await send.send(event)  # full: wait for room, as the engine's tell does
            return
        self._sent += 1
        if self._sent % YIELD_EVERY == 0:
            await trio.lowlevel.checkpoint()

    async def settle(self) -> None:
        """Wait until every sent event has been handled."""
        while self._in_flight:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
        await trio.lowlevel.checkpoint()
        if self._work is not None:
            self._work.reset()


class SpawningPipeline:
    """Sender → (first event: new channel and task) → the session's task → delivered."""

    name = "trio-task-per-session"

    def __init__(self, nursery: trio.Nursery, traffic: TrafficLike, *,
                 capacity: int = DEFAULT_CAPACITY) -> None:
        self._nursery = nursery
        self._traffic = traffic
        self._capacity = capacity
        self._sends: dict[int, trio.MemorySendChannel[Message]] = {}
        self._timeline: Timeline | None = None
        self._running = 0
        self._stopped: trio.Event | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, traffic: TrafficLike, *,
                   capacity: int = DEFAULT_CAPACITY) -> AsyncIterator[SpawningPipeline]:
        async with trio.open_nursery() as nursery:
            pipeline = cls(nursery, traffic, capacity=capacity)
            try:
                yield pipeline
            finally:
                nursery.cancel_scope.cancel()

    @property
    def tasks(self) -> int:
        """Session tasks running now."""
        return self._running

    async def _session(self, receive: trio.MemoryReceiveChannel[Message]) -> None:
        try:
            async for event in receive:
                timeline = self._timeline
                if timeline is not None:
                    timeline.complete(event.event_id)
        finally:
            self._running -= 1
            if not self._running and self._stopped is not None:
                self._stopped.set()

    def attach(self, timeline: Timeline | None) -> None:
        self._timeline = timeline

    async def submit(self, seq: int) -> None:
        timeline = self._timeline
        assert timeline is not None, "attach a timeline before submitting"
        send = self._sends.get(seq)
        if send is None:
            send, receive = trio.open_memory_channel[Message](self._capacity)
            self._sends[seq] = send
            self._running += 1
            self._nursery.start_soon(self._session, receive)
        await send.send(self._traffic.event(timeline.event_id(seq), seq))

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()

    async def stop_all(self) -> None:
        """Close every session's channel and wait until every task has ended."""
        for send in self._sends.values():
            send.close()
        self._sends.clear()
        while self._running:
            self._stopped = trio.Event()
            await self._stopped.wait()
