"""The engine's per-event work without its runtime, for the peers suite.

The peers (a hand-written trio pipeline, asyncio queues, pykka threads) must do
the same work per event as Interlink, or the comparison would only measure
how much less they do. :class:`EngineWork` is that work, built from the
engine's own synchronous pieces:

- ``route`` (the router): the destination's domain route, the federation
  policy (:class:`~engine.FederationPolicy` over a directory), the session of
  the pair (``find_session``), and the event copied with its session id;
- ``handle`` (the session): a message-id map record, and a metadata entry
  encoded the way the metadata log's writer encodes it, kept in a buffer that
  is emptied every :data:`LOG_BATCH` entries.

What it leaves out is exactly what makes Interlink an actor system: mailboxes
with backpressure accounting, activation, crash handling, the degrade step,
delivery retries and the log's daily roll-ups. Reads are plain dict lookups
in a :class:`~engine.testing.MemoryDirectory`, safe from any thread.
"""

from __future__ import annotations

import itertools
import time

import msgspec
import trio

from engine import (
    FederationPolicy,
    LocalError,
    Message,
    MessageIdRecord,
    MetadataEntry,
    PolicyRefusal,
)
from engine.testing import MemoryDirectory

from ._traffic import EXTERNAL_PLATFORM, Traffic, seed_directory

#: metadata entries buffered before a (simulated) batch write
LOG_BATCH = 1000

_ENTRY_ENCODER = msgspec.msgpack.Encoder()


class EngineWork:
    """``route`` and ``handle`` for one event, over a directory holding every session."""

    def __init__(self, directory: MemoryDirectory) -> None:
        self._directory = directory
        self._policy = FederationPolicy(directory)
        self._platform_ids = itertools.count(1)
        self.id_map: dict[str, MessageIdRecord] = {}
        self._log: list[bytes] = []

    def route(self, event: Message) -> Message:
        """What the router does: policy, session resolution; the event gets its session."""
        directory = self._directory
        source, destination = event.source, event.destination
        if directory.get_domain_route(destination.domain) is None:
            raise LocalError(f"no route to {destination.domain}")
        decision = self._policy.check(source, destination)
        if not decision.allowed:
            raise PolicyRefusal(decision.reason)
        record = directory.find_session(source, destination)
        if record is None:
            raise LocalError("the benchmark's sessions must be registered first")
        return msgspec.structs.replace(event, session_id=record.session_id)

    def handle(self, event: Message) -> None:
        """What the session does besides delivering: id map, metadata entry."""
        now = time.time()
        self.id_map[event.event_id] = MessageIdRecord(
            canonical_id=event.event_id, session_id=event.session_id,
            platform_ids={EXTERNAL_PLATFORM: f"{EXTERNAL_PLATFORM}-{next(self._platform_ids)}"},
            created_at=now)
        log = self._log
        log.append(_ENTRY_ENCODER.encode(MetadataEntry(
            timestamp=now, event_id=event.event_id, sender=event.source,
            receiver=event.destination, type=event.log_type, session_id=event.session_id,
            outcome="delivered")))
        if len(log) >= LOG_BATCH:
            self._log = []

    def reset(self) -> None:
        """Forget the id map (between trials, as the engine's is pruned)."""
        self.id_map.clear()


async def registered_directory(traffic: Traffic) -> MemoryDirectory:
    """A memory directory with the benchmark's routes, agreement and every session."""
    directory = MemoryDirectory()
    await seed_directory(directory)
    for record in traffic.session_records():
        await directory.put_session(record)
    return directory


def registered_directory_sync(traffic: Traffic) -> MemoryDirectory:
    """:func:`registered_directory` from outside trio (its writes need a trio run)."""
    return trio.run(registered_directory, traffic)
