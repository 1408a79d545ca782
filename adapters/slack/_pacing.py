"""Pacing of Web API calls: lanes, token buckets and 429 penalties, by key.

Rules (see :mod:`._client` for how a call uses them):

1. *Keys.* A call's key is ``(team, method)``; for ``chat.postMessage`` it is
   ``(team, method, channel)``. Waiting is per key: there is no global lock.
2. *Lanes.* Callers on one key take their turns in arrival order (a fair
   ``trio.Lock`` that exists only while someone uses it).
3. *Budgets.* A turn takes one token from each of the call's buckets, all at
   once, when all have one.
4. *429.* A penalty stops a key for ``Retry-After`` seconds and empties the
   key's own bucket (the pace after the penalty is ours, not a new burst).
5. *Adaptation (AIMD-like).* A bucket whose budget has a ``ceiling`` above its
   rate learns: once it has kept callers waiting for ``raise_after`` seconds with
   no 429 since its last change, its rate grows by ``raise_by`` (a fraction of the
   rate), up to the ceiling; a 429 cuts it by ``back_off_by`` (at most once per
   Retry-After), down to a floor. A bucket that runs full (idle) stops counting.
   So a conservative start never caps the pace below what Slack allows, and a
   429 brings it back under.
6. *Bounds.* A turn that would come after the caller's deadline raises
   ``SlackApiError("ratelimited", retryable=True)`` at once. Buckets that are
   full again are forgotten once there are more than ``max_buckets``; expired
   penalties likewise.

Time is trio's (``trio.current_time``), so pacing runs on ``MockClock`` in tests.

Measurements: :attr:`Pacer.adapter_stats` (the adapter's
:class:`engine.AdapterStats`, set once the adapter runs) counts every 429
(:meth:`Pacer.penalise`) and the seconds callers waited for their turns
(:meth:`Pacer.wait_turn`: token buckets and 429 penalties; waiting in a lane
behind another caller is not a rate-limit wait).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

import trio

from engine import AdapterStats

from ._errors import SlackApiError

_EPSILON = 1e-9


class Adaptation(NamedTuple):
    """How adaptive buckets move between their start rate and their ceiling."""

    #: seconds of waiting callers with no 429 before the rate goes up one step
    raise_after: float = 10.0
    #: one step up: the rate times (1 + raise_by)
    raise_by: float = 0.25
    #: a 429: the rate times back_off_by
    back_off_by: float = 0.5
    #: a 429 never cuts a rate below this fraction of its start
    floor: float = 0.1


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; time is passed in.

    With a ``ceiling`` above ``rate`` the rate adapts (see the module's rule 5).
    """

    __slots__ = ("burst", "busy_since", "ceiling", "changed", "hold_until", "rate",
                 "start", "tokens", "updated", "waiter")

    def __init__(self, rate: float, burst: float, now: float,
                 ceiling: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.start = rate
        self.ceiling = max(rate, ceiling)
        self.burst = burst
        self.tokens = burst
        self.updated = now
        self.changed = now  # the last time the rate moved
        self.busy_since: float | None = None  # callers waited since then, no idle since
        self.hold_until = now  # no second cut before this (one 429 window, one cut)
        self.waiter = False  # the coming take is by a caller who waited

    def mark_busy(self, now: float) -> None:
        """A caller has to wait for this bucket."""
        self.waiter = True
        if self.busy_since is None:
            self.busy_since = now

    def maybe_raise(self, now: float, adaptation: Adaptation) -> bool:
        """One step up if the bucket has been busy long enough without a 429."""
        if self.ceiling <= self.rate or self.busy_since is None:
            return False
        since = max(self.busy_since, self.changed)
        if now - since < adaptation.raise_after:
            return False
        self.refill(now)
        self.rate = min(self.ceiling, self.rate * (1.0 + adaptation.raise_by))
        self.changed = now
        return True

    def back_off(self, now: float, adaptation: Adaptation, *, hold: float,
                 floor: float) -> bool:
        """Slack said 429: cut the rate (once per ``hold`` seconds), not below
        ``floor`` times the start rate."""
        lowest = min(self.rate, self.start * floor)
        # the quiet period starts again when the penalty ends
        self.changed = max(self.changed, now + max(0.0, hold))
        self.busy_since = None
        if now < self.hold_until or self.rate <= lowest:
            return False
        self.refill(now)
        self.rate = max(lowest, self.rate * adaptation.back_off_by)
        self.hold_until = now + max(hold, 1.0 / self.rate)
        return True

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0 if one is there now)."""
        self.refill(now)
        missing = 1.0 - self.tokens
        return 0.0 if missing <= _EPSILON else missing / self.rate

    def take(self, now: float) -> None:
        self.refill(now)
        if not self.waiter and self.tokens >= self.burst - _EPSILON:
            self.busy_since = None  # full, and nobody waited for it: idle, not held back
        self.waiter = False
        self.tokens -= 1.0

    def drain(self, now: float) -> None:
        """Slack said stop: no tokens left, refill from now."""
        self.refill(now)
        self.tokens = min(self.tokens, 0.0)

    def is_full(self, now: float) -> bool:
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.burst - _EPSILON


class Budget(NamedTuple):
    """One bucket a call draws on: its key, its size, and the ceiling it may adapt up to
    (0: a fixed rate)."""

    key: tuple[str, ...]
    per_second: float
    burst: float
    ceiling: float = 0.0


class _Lane:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()  # fair: turns go in arrival order
        self.users = 0


class Pacer:
    """Lanes, token buckets and 429 penalties, by key; the client's rate limiting.

    Keys are tuples, ``(team, method)`` or ``(team, method, channel)``; their second
    element names the method in the errors raised.
    """

    def __init__(self, *, max_buckets: int = 10_000,
                 adaptation: Adaptation | None = None) -> None:
        self.max_buckets = max_buckets
        self.adaptation = adaptation or Adaptation()
        #: rate changes made by adaptation: steps up, and cuts after a 429
        self.raised = 0
        self.cut = 0
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._penalties: dict[tuple[str, ...], float] = {}
        self._lanes: dict[tuple[str, ...], _Lane] = {}
        self._prune_at = max_buckets
        self.waited = 0.0
        #: where 429s and rate-limit waits are reported (the adapter's, once it runs)
        self.adapter_stats = AdapterStats("")

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    @property
    def lane_count(self) -> int:
        return len(self._lanes)

    @asynccontextmanager
    async def lane(self, key: tuple[str, ...], *, deadline: float) -> AsyncIterator[None]:
        """Hold ``key``'s lane: callers on one key go one at a time, in arrival order."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.users += 1
        start = trio.current_time()
        try:
            with trio.move_on_at(deadline) as scope:
                await lane.lock.acquire()
            self.waited += trio.current_time() - start
            if scope.cancelled_caught:  # cancelled while parked: the lock was not taken
                raise _too_long(key, 0.0)
            try:
                yield
            finally:
                lane.lock.release()
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]

    async def wait_turn(self, key: tuple[str, ...], budgets: Sequence[Budget], *,
                        deadline: float) -> float:
        """Wait out ``key``'s penalty and a token in every budget, then take them.

        Returns the seconds waited. A turn that would come after ``deadline`` raises
        ``SlackApiError("ratelimited", retryable=True)`` at once, without waiting.
        """
        start = trio.current_time()
        while True:
            now = trio.current_time()
            wait = self._penalty_left(key, now)
            for budget in budgets:
                bucket = self._bucket(budget, now)
                needs = bucket.wait(now)
                if needs > 0.0:
                    bucket.mark_busy(now)
                wait = max(wait, needs)
            if wait <= 0.0:
                for budget in budgets:
                    bucket = self._bucket(budget, now)
                    bucket.take(now)
                    if bucket.maybe_raise(now, self.adaptation):
                        self.raised += 1
                waited = now - start
                self.waited += waited
                self.adapter_stats.add_rate_limit_wait(waited)
                return waited
            if now + wait > deadline:
                self.waited += now - start
                self.adapter_stats.add_rate_limit_wait(now - start)
                raise _too_long(key, wait)
            await trio.sleep(wait)

    def penalise(self, key: tuple[str, ...], seconds: float,
                 drain: Sequence[Budget] = (),
                 back_off: Sequence[tuple[Budget, float]] = ()) -> None:
        """Slack answered 429 on ``key``: nobody on it goes for ``seconds``.

        ``drain``: buckets emptied (their pace after the penalty is ours);
        ``back_off``: ``(budget, floor)`` whose rates are cut, not below ``floor``
        times their start rate.
        """
        now = trio.current_time()
        self.adapter_stats.count_rate_limited()
        until = now + max(0.0, seconds)
        self._penalties[key] = max(until, self._penalties.get(key, until))
        for budget in drain:
            self._bucket(budget, now).drain(now)
        for budget, floor in back_off:
            if self._bucket(budget, now).back_off(now, self.adaptation, hold=seconds,
                                                  floor=floor):
                self.cut += 1
        if len(self._penalties) > self.max_buckets:
            for old, ends in list(self._penalties.items()):
                if ends <= now:
                    del self._penalties[old]

    def rate_of(self, key: tuple[str, ...]) -> float | None:
        """The per-second rate ``key``'s bucket paces at now (None: no bucket yet)."""
        bucket = self._buckets.get(key)
        return None if bucket is None else bucket.rate

    def penalty_left(self, key: tuple[str, ...]) -> float:
        """Seconds until ``key`` may go again after a 429 (0 when it may)."""
        return self._penalty_left(key, trio.current_time())

    def _penalty_left(self, key: tuple[str, ...], now: float) -> float:
        ends = self._penalties.get(key)
        if ends is None:
            return 0.0
        if ends <= now:
            del self._penalties[key]
            return 0.0
        return ends - now

    def _bucket(self, budget: Budget, now: float) -> TokenBucket:
        bucket = self._buckets.get(budget.key)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._forget_full(now)
            bucket = self._buckets[budget.key] = TokenBucket(
                budget.per_second, budget.burst, now, budget.ceiling)
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop buckets that are full again: a new one would be the same (an adapted
        rate starts again from the budget's)."""
        for key, bucket in list(self._buckets.items()):
            if bucket.is_full(now):
                del self._buckets[key]
        # prune again only once the survivors have doubled: amortised O(1) per call
        self._prune_at = max(self.max_buckets, 2 * len(self._buckets))


def _too_long(key: tuple[str, ...], wait: float) -> SlackApiError:
    method = key[1] if len(key) > 1 else ""
    return SlackApiError("ratelimited", method=method, retryable=True,
                         retry_after=wait or None)
