"""The asyncio peer: one task per session with an ``asyncio.Queue``, under ``asyncio.run``.

::

    sender task ─(work.route)─► asyncio.Queue(maxsize=1000) of session k ─► task of session k
                                                                         ─(work.handle)─► done

The same hop, events, sender and per-event work as Interlink and the
*trio-tasks* peer. One difference is asyncio's own: ``Queue.put`` does not
yield while the queue has room, so the sender runs ahead until a queue is
full and the session tasks then work through batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from engine import Message

from ._load import Timeline
from ._traffic import Traffic
from ._trio_pipeline import DEFAULT_CAPACITY
from ._workload import EngineWork


class AsyncioPipeline:
    name = "asyncio-queues"

    def __init__(self, traffic: Traffic, work: EngineWork, capacity: int) -> None:
        self._traffic = traffic
        self._work = work
        self._queues = [asyncio.Queue[Message](capacity) for _ in traffic.destinations]
        self._timeline: Timeline | None = None
        self._in_flight = 0
        self._drained: asyncio.Event | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, traffic: Traffic, work: EngineWork,
                   capacity: int = DEFAULT_CAPACITY) -> AsyncIterator[AsyncioPipeline]:
        """Start one task per session; they are cancelled on exit."""
        pipeline = cls(traffic, work, capacity)
        tasks = [asyncio.create_task(pipeline._session(queue)) for queue in pipeline._queues]
        try:
            yield pipeline
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _session(self, queue: asyncio.Queue[Message]) -> None:
        work = self._work
        while True:
            event = await queue.get()
            work.handle(event)
            timeline = self._timeline
            if timeline is not None:
                timeline.complete(event.event_id)
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()
                self._drained = None

    def attach(self, timeline: Timeline | None) -> None:
        self._timeline = timeline

    async def submit(self, seq: int) -> None:
        timeline = self._timeline
        assert timeline is not None, "attach a timeline before submitting"
        event = self._work.route(self._traffic.event(timeline.event_id(seq), seq))
        self._in_flight += 1
        await self._queues[seq % len(self._queues)].put(event)

    async def settle(self) -> None:
        while self._in_flight:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()
        await asyncio.sleep(0)
        self._work.reset()
