"""Build the engine from a :class:`~engine.Config` and run it until a signal.

SIGINT or SIGTERM stops it gracefully (see :meth:`engine.Engine.stop`): no
new events are accepted, mailboxes drain, the metadata log and the directory
are flushed, and storage is closed.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from engine import (
    METADATA_DBS,
    Adapter,
    Clock,
    Config,
    ContactRequest,
    Directory,
    Engine,
    KeyValueStore,
    LmdbDirectory,
    LmdbStore,
    MemoryKV,
    Message,
    MetadataLog,
    SystemClock,
    apply_to_directory,
)
from engine._address import Address
from engine._config import LoopbackAdapterConfig
from engine.testing import LoopbackAdapter, MemoryDirectory

log = logging.getLogger("interlink.run")

METADATA_SCHEMA_VERSION = 1


@asynccontextmanager
async def open_storage(config: Config) -> AsyncIterator[tuple[Directory, KeyValueStore]]:
    """The directory and the metadata store the config asks for; closed on exit."""
    data_dir = config.data_dir()
    directory: Directory
    store: KeyValueStore
    if config.directory.backend == "lmdb":
        directory = await LmdbDirectory.open(
            data_dir / "directory", map_size=config.directory.map_size_mb << 20,
            max_pending=config.directory.max_pending_writes)
    else:
        directory = MemoryDirectory()
    try:
        if config.metadata.backend == "lmdb":
            store = LmdbStore.open(data_dir / "metadata", db_names=METADATA_DBS,
                                   schema_version=METADATA_SCHEMA_VERSION)
        else:
            store = MemoryKV(METADATA_DBS)
        try:
            yield directory, store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await directory.aclose()


def build_adapters(config: Config) -> list[Adapter]:
    adapters: list[Adapter] = []
    for entry in config.adapters:
        if isinstance(entry, LoopbackAdapterConfig):
            adapters.append(LoopbackAdapter(
                entry.name, echo_users=[Address.parse(a) for a in entry.echo_users],
                known_users=None if entry.known_users is None
                else [Address.parse(a) for a in entry.known_users],
                keep_outbox=False))
    return adapters


async def _send_seed_events(config: Config, engine: Engine, clock: Clock) -> None:
    for entry in config.adapters:
        adapter = engine.adapters[entry.name]
        assert isinstance(adapter, LoopbackAdapter)
        for seed in entry.send_on_start:
            source, destination = Address.parse(seed.source), Address.parse(seed.destination)
            if seed.kind == "contact_request":
                await adapter.send(ContactRequest(source=source, destination=destination,
                                                  timestamp=clock.now()))
            else:
                await adapter.send(Message.create(
                    source=source, destination=destination, body=seed.text,
                    timestamp=clock.now(),
                    platform_ids={adapter.name: f"seed-{seed.source}-{clock.now()}"}))
            await _quiesce(engine)  # seeds are a conversation: each waits for its answers


async def _quiesce(engine: Engine) -> None:
    """Wait until no event is in flight and no loopback echo is pending."""
    loopbacks = [a for a in engine.adapters.values() if isinstance(a, LoopbackAdapter)]
    while True:
        await engine.actors.drain()
        busy = [a for a in loopbacks if a.echo_pending]
        if not busy and not engine.actors.in_flight:
            return
        for adapter in busy:
            await adapter.wait_echo_idle()


async def run_engine(config: Config, *, clock: Clock | None = None,
                     task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the engine described by ``config`` until SIGINT/SIGTERM, then stop gracefully."""
    clock = clock or SystemClock()
    async with open_storage(config) as (directory, store):
        await apply_to_directory(config, directory, now=clock.now())
        metadata_log = MetadataLog(store, directory, clock,
                                   retention_days=config.metadata.retention_days,
                                   rollup_retention_days=config.metadata.rollup_retention_days)
        engine = Engine(directory=directory, metadata_log=metadata_log,
                        adapters=build_adapters(config), clock=clock,
                        settings=config.engine_settings())
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.run)
                log.info("ready", extra={"data_dir": str(config.data_dir())})
                await _send_seed_events(config, engine, clock)
                task_status.started(engine)
                async for signum in signals:
                    log.info("signal received", extra={"signal": signal.Signals(signum).name})
                    break
                await engine.stop()
