"""Interlink assembled in-process: the whole engine path of one event, timed at delivery.

::

    sender task ─adapter.send─► Engine.submit ─► Router (policy, directory, session)
        ─mailbox (the one task hop)─► session actor task ─► adapter.deliver ◄ timed here
                                                           ─► id map write, metadata log

One task hop per event, as in production: the router runs inline in the
inbound (here: the sender's) task. The outbound loopback adapter reports every
delivery to the running trial's :class:`~bench._load.Timeline`.

Storage is the production default (``lmdb``: an :class:`~engine.LmdbDirectory`
and an :class:`~engine.LmdbStore` under the metadata log, in a temporary
directory) or ``memory`` (:class:`~engine.testing.MemoryDirectory` and
:class:`~engine.MemoryKV`). While the engine runs, a watcher samples how full
the metadata log's buffer and the stores' write queues get during trials: if
either reaches its limit, writers were throttled and storage limited
throughput.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Literal

import msgspec
import trio

from engine import (
    METADATA_DBS,
    DeliveryResult,
    Directory,
    Engine,
    EngineSettings,
    Event,
    KeyValueStore,
    LmdbDirectory,
    LmdbStore,
    MemoryKV,
    MetadataLog,
    RoutingSettings,
    SessionRecord,
    SystemClock,
    tuned_gc,
)
from engine.testing import LoopbackAdapter, MemoryDirectory

from ._load import EventIds, Timeline
from ._traffic import EXTERNAL_PLATFORM, INTERNAL_PLATFORM, TrafficLike, seed_directory

Storage = Literal["memory", "lmdb"]
STORAGES: tuple[Storage, ...] = ("memory", "lmdb")

#: the metadata log's buffer and the LMDB stores' write queues (the engine's defaults)
LOG_BUFFER_LIMIT = 100_000
STORE_PENDING_LIMIT = 50_000
METADATA_SCHEMA_VERSION = 1
PRESSURE_SAMPLE_S = 0.01


def bench_settings(**overrides: object) -> EngineSettings:
    """The engine's default settings, except that no accepted contact is required."""
    return msgspec.structs.replace(
        EngineSettings(routing=RoutingSettings(require_accepted_contact=False)),
        **overrides)


class TimedLoopback(LoopbackAdapter):
    """A loopback platform that reports each delivery to the running trial's timeline."""

    def __init__(self, name: str) -> None:
        super().__init__(name, keep_outbox=False, capabilities=())
        self.timeline: Timeline | None = None

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        result = await super().deliver(event, session)
        timeline = self.timeline
        if timeline is not None:
            timeline.complete(event.event_id)
        return result


class StoragePressure(msgspec.Struct, frozen=True, kw_only=True):
    """The fullest the engine's write buffers got during trials (sampled every 10 ms)."""

    max_log_buffered: int
    log_buffer_limit: int
    #: LMDB write queues (``None`` with memory storage)
    max_directory_pending: int | None
    max_metadata_pending: int | None
    store_pending_limit: int | None
    samples: int

    @property
    def throttled(self) -> bool:
        """Whether a writer had to wait for room (storage limited throughput)."""
        if self.max_log_buffered >= self.log_buffer_limit:
            return True
        limit = self.store_pending_limit
        return limit is not None and max(self.max_directory_pending or 0,
                                         self.max_metadata_pending or 0) >= limit


class _PressureWatch:
    __slots__ = ("directory", "log", "samples", "store")

    def __init__(self) -> None:
        self.log = 0
        self.directory = 0
        self.store = 0
        self.samples = 0


@asynccontextmanager
async def open_storage(storage: Storage, *, directory_path: Path | None = None
                       ) -> AsyncIterator[tuple[Directory, KeyValueStore]]:
    """A seeded directory and a metadata store; LMDB ones live in a temporary directory.

    ``directory_path`` opens an existing LMDB directory there instead of a new one.
    """
    async with AsyncExitStack() as stack:
        directory: Directory
        store: KeyValueStore
        if storage == "memory":
            directory = MemoryDirectory()
            store = MemoryKV(METADATA_DBS)
        else:
            workdir = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="interlink-bench-")))
            directory = await LmdbDirectory.open(directory_path or workdir / "directory",
                                                 max_pending=STORE_PENDING_LIMIT)
            stack.push_async_callback(directory.aclose)
            store = LmdbStore.open(workdir / "metadata", db_names=METADATA_DBS,
                                   schema_version=METADATA_SCHEMA_VERSION,
                                   max_pending=STORE_PENDING_LIMIT)
            stack.push_async_callback(store.aclose)
        await seed_directory(directory)
        yield directory, store


class EnginePipeline:
    """A running engine, its two loopback platforms, and the trial plumbing."""

    name = "interlink"

    def __init__(self, engine: Engine, directory: Directory, store: KeyValueStore,
                 source: TrafficLike, inbound: LoopbackAdapter, outbound: TimedLoopback,
                 *, forget_message_ids: bool = True) -> None:
        self.engine = engine
        self.directory = directory
        self.store = store
        self.source = source
        self._inbound = inbound
        self._outbound = outbound
        self._forget_message_ids = forget_message_ids
        self._watch = _PressureWatch()
        self._watching = False

    @classmethod
    @asynccontextmanager
    async def open(cls, source: TrafficLike, directory: Directory, store: KeyValueStore,
                   settings: EngineSettings | None = None, *, forget_message_ids: bool = True,
                   ) -> AsyncIterator[EnginePipeline]:
        """Start an engine over ``directory`` and ``store``; cancelled on exit.

        ``forget_message_ids``: prune the message-id map when settling between
        trials, so that it does not grow from trial to trial.
        """
        clock = SystemClock()
        inbound = LoopbackAdapter(INTERNAL_PLATFORM, keep_outbox=False, capabilities=())
        outbound = TimedLoopback(EXTERNAL_PLATFORM)
        engine = Engine(directory=directory, adapters=[inbound, outbound], clock=clock,
                        metadata_log=MetadataLog(store, directory, clock,
                                                 max_buffered=LOG_BUFFER_LIMIT),
                        settings=settings or bench_settings())
        pipeline = cls(engine, directory, store, source, inbound, outbound,
                       forget_message_ids=forget_message_ids)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            nursery.start_soon(pipeline._watch_pressure)
            # The collector tuned as `interlink run` tunes it once its services are up.
            with tuned_gc():
                try:
                    yield pipeline
                finally:
                    nursery.cancel_scope.cancel()

    # -- the trial protocol (bench._runner.Pipeline) -----------------
    def attach(self, timeline: Timeline | None) -> None:
        self._outbound.timeline = timeline
        self._watching = timeline is not None

    async def submit(self, seq: int) -> None:
        timeline = self._outbound.timeline
        assert timeline is not None, "attach a timeline before submitting"
        await self._inbound.send(self.source.event(timeline.event_id(seq), seq))

    async def settle(self, *, forget: bool = True) -> None:
        """Quiesce between trials: drain mailboxes, write the log, forget the id map.

        The pressure watcher pauses until the next trial is attached: pruning
        the id map queues one large write that is the bench's, not the engine's
        (``forget=False`` leaves it for a later call: the work is then only the
        engine's, for a CPU reading).
        """
        self._watching = False
        await self.engine.actors.drain()
        await self.engine.metadata_log.flush()
        if forget and self._forget_message_ids:
            await self.directory.prune_message_ids(time.time() + 1)
        await self.directory.flush()

    # -- set-up ---------------------------------------------------------------
    async def open_sessions(self, ids: EventIds) -> Timeline:
        """Send one event to every destination: creates (or loads) and activates each session."""
        done = trio.Event()
        timeline = Timeline(self.source.sessions, first_id=ids.take(self.source.sessions),
                            on_done=done.set)
        self.attach(timeline)
        for seq in range(timeline.count):
            timeline.scheduled[seq] = time.perf_counter()
            await self._inbound.send(self.source.event(timeline.event_id(seq), seq))
        await done.wait()
        return timeline

    # -- storage pressure -------------------------------------------------------
    def take_pressure(self) -> StoragePressure:
        """The fullest buffers since the last call (then start over)."""
        watch = self._watch
        lmdb = isinstance(self.directory, LmdbDirectory) or isinstance(self.store, LmdbStore)
        pressure = StoragePressure(
            max_log_buffered=watch.log, log_buffer_limit=LOG_BUFFER_LIMIT,
            max_directory_pending=watch.directory if lmdb else None,
            max_metadata_pending=watch.store if lmdb else None,
            store_pending_limit=STORE_PENDING_LIMIT if lmdb else None,
            samples=watch.samples)
        self._watch = _PressureWatch()
        return pressure

    async def _watch_pressure(self) -> None:
        log = self.engine.metadata_log
        directory_store = self.directory.store if isinstance(self.directory,
                                                             LmdbDirectory) else None
        metadata_store = self.store if isinstance(self.store, LmdbStore) else None
        while True:
            await trio.sleep(PRESSURE_SAMPLE_S)
            if not self._watching:
                continue
            watch = self._watch
            watch.samples += 1
            watch.log = max(watch.log, log.statistics()["buffered"])
            if directory_store is not None:
                watch.directory = max(watch.directory, directory_store.pending)
            if metadata_store is not None:
                watch.store = max(watch.store, metadata_store.pending)
