"""Idempotency by ``webhook-id``: which ids were accepted or are in flight. Bounded.

Rules:

- ``claim(id)`` says :attr:`Claim.NEW` (handle it: it is in flight until
  ``done`` or ``release``), :attr:`Claim.DONE` (accepted before: answer the
  partner "duplicate", route nothing) or :attr:`Claim.IN_FLIGHT` (another
  request is handling it: :meth:`wait_settled`, then claim again).
- An accepted id is remembered for ``ttl`` seconds of trio's clock. With
  the default (twice the signature tolerance) every replay that passes the
  timestamp check is still remembered: a timestamp is accepted at most
  ``tolerance`` away from now in either direction.
- At most ``max_entries`` ids; when full, the oldest accepted id is forgotten
  (counted in ``evicted``); when every entry is in flight,
  :class:`engine.UnavailableError` (the partner gets 503 and retries).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

import trio

from engine import LocalError, UnavailableError

from ._signature import TOLERANCE

__all__ = ["Claim", "DedupeStats", "WebhookIdDeduplicator"]


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


class WebhookIdDeduplicator:
    def __init__(self, *, max_entries: int = 100_000, ttl: float = 2 * TOLERANCE) -> None:
        if max_entries < 1:
            raise LocalError("max_entries must be at least 1")
        if not ttl > 0:
            raise LocalError("ttl must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        #: webhook-id -> trio time it was accepted, oldest first
        self._done: OrderedDict[str, float] = OrderedDict()
        #: webhook-id -> set once done or released
        self._in_flight: dict[str, trio.Event] = {}
        self.stats = DedupeStats()

    def __len__(self) -> int:
        return len(self._done) + len(self._in_flight)

    def claim(self, webhook_id: str) -> Claim:
        self._expire()
        if webhook_id in self._done:
            self.stats.duplicates += 1
            return Claim.DONE
        if webhook_id in self._in_flight:
            return Claim.IN_FLIGHT
        if len(self) >= self.max_entries:
            if not self._done:
                raise UnavailableError(f"{len(self._in_flight)} webhooks are in flight")
            self._done.popitem(last=False)
            self.stats.evicted += 1
        self._in_flight[webhook_id] = trio.Event()
        self.stats.claimed += 1
        return Claim.NEW

    def done(self, webhook_id: str) -> None:
        """Accepted: later deliveries of ``webhook_id`` are duplicates (for ``ttl``)."""
        settled = self._in_flight.pop(webhook_id, None)
        if settled is None:
            return
        self._done[webhook_id] = trio.current_time()
        settled.set()

    def release(self, webhook_id: str) -> None:
        """Not accepted (refused, busy, failed): the partner's retry may claim it again."""
        settled = self._in_flight.pop(webhook_id, None)
        if settled is not None:
            self.stats.released += 1
            settled.set()

    async def wait_settled(self, webhook_id: str) -> None:
        settled = self._in_flight.get(webhook_id)
        if settled is not None:
            await settled.wait()

    def _expire(self) -> None:
        horizon = trio.current_time() - self.ttl
        done = self._done
        while done:
            webhook_id, stamp = next(iter(done.items()))
            if stamp > horizon:
                return
            del done[webhook_id]
            self.stats.expired += 1
