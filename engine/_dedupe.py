"""Inbound idempotency: which platform event ids were accepted or are in flight. Bounded.

Every edge whose platform redelivers (an event id, a delivery id)
asks one of these before routing.

Rules:

- ``claim(id)`` says :attr:`Claim.NEW` (handle it: it is in flight until
  ``done`` or ``release``), :attr:`Claim.DONE` (accepted before: answer the
  sender "duplicate", route nothing) or :attr:`Claim.IN_FLIGHT` (another
  request is handling it: :meth:`wait_settled`, then claim again).
- An accepted id is remembered for ``ttl`` seconds of trio's clock: at least
  as long as the platform retries (or accepts a replayed signature).
- At most ``max_entries`` ids; when full, the oldest accepted id is forgotten
  (counted in ``evicted``); when every entry is in flight,
  :class:`engine.UnavailableError` (the edge answers "busy"; the platform
  retries).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

import trio

from ._errors import LocalError, UnavailableError

__all__ = ["Claim", "DedupeStats", "Deduplicator"]


class Claim(enum.Enum):
    NEW = "new"
    DONE = "done"
    IN_FLIGHT = "in-flight"


@dataclass
class DedupeStats:
    claimed: int = 0
    duplicates: int = 0
    released: int = 0
    expired: int = 0
    evicted: int = 0


class Deduplicator:
    def __init__(self, *, max_entries: int = 100_000, ttl: float = 600.0) -> None:
        if max_entries < 1:
            raise LocalError("max_entries must be at least 1")
        if not ttl > 0:
            raise LocalError("ttl must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        #: event id -> trio time it was accepted, oldest first
        self._done: OrderedDict[str, float] = OrderedDict()
        #: event id -> set once done or released
        self._in_flight: dict[str, trio.Event] = {}
        self.stats = DedupeStats()

    def __len__(self) -> int:
        return len(self._done) + len(self._in_flight)

    def claim(self, event_id: str) -> Claim:
        """:attr:`Claim.NEW` (handle it now: it is in flight), else why not; a claim
        that is not new counts as a duplicate delivery."""
        self._expire()
        if event_id in self._done:
            self.stats.duplicates += 1
            return Claim.DONE
        if event_id in self._in_flight:
            self.stats.duplicates += 1
            return Claim.IN_FLIGHT
        if len(self) >= self.max_entries:
            if not self._done:
                raise UnavailableError(
                    f"{len(self._in_flight)} events are in flight; try again later")
            self._done.popitem(last=False)
            self.stats.evicted += 1
        self._in_flight[event_id] = trio.Event()
        self.stats.claimed += 1
        return Claim.NEW

    def is_done(self, event_id: str) -> bool:
        self._expire()
        return event_id in self._done

    def in_flight(self, event_id: str) -> bool:
        return event_id in self._in_flight

    def done(self, event_id: str) -> None:
        """Accepted: later deliveries of ``event_id`` are duplicates (for ``ttl``)."""
        settled = self._in_flight.pop(event_id, None)
        if settled is None:
            return
        self._done[event_id] = trio.current_time()
        settled.set()

    def release(self, event_id: str) -> None:
        """Not accepted (refused, busy, failed): the platform's retry may claim it again."""
        settled = self._in_flight.pop(event_id, None)
        if settled is not None:
            self.stats.released += 1
            settled.set()

    async def wait_settled(self, event_id: str) -> None:
        settled = self._in_flight.get(event_id)
        if settled is not None:
            await settled.wait()

    def _expire(self) -> None:
        horizon = trio.current_time() - self.ttl
        done = self._done
        while done:
            event_id, stamp = next(iter(done.items()))
            if stamp > horizon:
                return
            del done[event_id]
            self.stats.expired += 1
