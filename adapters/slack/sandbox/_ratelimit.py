"""Slack's rate limits as token buckets on an injected clock.

Slack limits each Web API method per app per workspace by *tier*:

    tier 1    1+ per minute        tier 3    50+ per minute
    tier 2   20+ per minute        tier 4   100+ per minute

and some methods have a special limit: ``chat.postMessage`` allows about one
message per second per channel with short bursts. A caller over its limit gets
HTTP 429 with ``Retry-After: <seconds>`` and ``{"ok": false, "error":
"ratelimited"}``.

Each (subject, workspace, method[, channel]) key has a bucket holding up to
``burst`` calls that refills at ``rate`` calls per second. A subject is an app
(bot, app-level and OAuth tokens count for their app) or a seeded person.
Buckets are created on first use and forgotten once full again, so memory is
bounded by the keys active in the last burst window.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

Tier = int  # 1..4, or SPECIAL for methods with their own rule
SPECIAL = 5


class RateLimitSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How hard the sandbox limits; ``enabled=False`` switches every limit off."""

    enabled: bool = True
    #: calls per minute for tiers 1-4 and SPECIAL (auth.test, oauth.v2.access)
    per_minute: tuple[float, float, float, float, float] = (1.0, 20.0, 50.0, 100.0, 600.0)
    #: chat.postMessage: sustained messages per second per channel, and the burst allowed
    post_message_per_second: float = 1.0
    post_message_burst: int = 3


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Token buckets keyed by caller; ``now`` is a clock in seconds (any origin)."""

    def __init__(self, settings: RateLimitSettings, now: Callable[[], float]) -> None:
        self.settings = settings
        self._now = now
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self.limited = 0

    def _limit(self, tier: Tier) -> tuple[float, float]:
        """(rate per second, burst) for a tier."""
        per_minute = self.settings.per_minute[tier - 1]
        return per_minute / 60.0, max(1.0, per_minute)

    def check(self, key: tuple[str, ...], tier: Tier) -> float | None:
        """Take one call from ``key``'s bucket; ``None`` if allowed, else seconds to wait."""
        rate, burst = self._limit(tier)
        return self._take(("tier", *key), rate, burst)

    def check_post_message(self, key: tuple[str, ...], channel: str) -> float | None:
        settings = self.settings
        return self._take(("post", *key, channel), settings.post_message_per_second,
                          float(max(1, settings.post_message_burst)))

    def _take(self, key: tuple[str, ...], rate: float, burst: float) -> float | None:
        if not self.settings.enabled:
            return None
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self._forget_full(now)
            return None
        self.limited += 1
        return (1.0 - bucket.tokens) / rate

    def _forget_full(self, now: float) -> None:
        if len(self._buckets) < 10_000:
            return
        for key, bucket in list(self._buckets.items()):
            # every bucket refills within a minute at the slowest tier (1 per minute, burst 1)
            if now - bucket.updated > 120:
                del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` is whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
