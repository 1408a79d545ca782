"""Slack's rate limits as token buckets on an injected clock.

Slack limits each Web API method per app per workspace by *tier*:

    tier 1    1+ per minute        tier 3    50+ per minute
    tier 2   20+ per minute        tier 4   100+ per minute

and some methods have a special limit: ``chat.postMessage`` allows about one
message per second per channel with short bursts, under a workspace-wide limit
Slack only describes as "several hundred messages per minute" (off here unless
configured). A caller over its limit gets
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
from typing import Annotated

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
    #: chat.postMessage per app per workspace, across channels: messages per minute
    #: (0: no such limit) and the burst allowed
    post_message_workspace_per_minute: float = 0.0
    post_message_workspace_burst: int = 50


Positive = Annotated[float, msgspec.Meta(gt=0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]


class RateLimitTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limits as written in TOML: ``[rate_limits]`` in a seed file,
    ``[sandbox.rate_limits]`` in an engine config. Defaults are Slack's."""

    enabled: bool = True
    #: calls per minute per method per app per workspace, tiers 1-4
    tiers: Annotated[list[Positive], msgspec.Meta(min_length=4, max_length=4)] = \
        msgspec.field(default_factory=lambda: [1.0, 20.0, 50.0, 100.0])
    #: calls per minute of the special methods (auth.test, oauth.v2.access)
    special_per_minute: Positive = 600.0
    #: chat.postMessage per channel: messages per second, and the burst allowed
    channel_per_second: Positive = 1.0
    channel_burst: AtLeastOne = 3
    #: chat.postMessage per app per workspace: messages per minute (0: no limit), burst
    workspace_per_minute: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    workspace_burst: AtLeastOne = 50

    def settings(self) -> RateLimitSettings:
        t1, t2, t3, t4 = self.tiers
        return RateLimitSettings(
            enabled=self.enabled, per_minute=(t1, t2, t3, t4, self.special_per_minute),
            post_message_per_second=self.channel_per_second,
            post_message_burst=self.channel_burst,
            post_message_workspace_per_minute=self.workspace_per_minute,
            post_message_workspace_burst=self.workspace_burst)


class _Bucket:
    __slots__ = ("full_after", "tokens", "updated")

    def __init__(self, tokens: float, updated: float, full_after: float) -> None:
        self.tokens = tokens
        self.updated = updated
        self.full_after = full_after  # seconds an untouched bucket takes to refill


class RateLimiter:
    """Token buckets keyed by caller; ``now`` is a clock in seconds (any origin)."""

    def __init__(self, settings: RateLimitSettings, now: Callable[[], float], *,
                 max_buckets: int = 10_000) -> None:
        self.settings = settings
        self._now = now
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self._max_buckets = max_buckets
        self._prune_at = max_buckets
        self.limited = 0

    def _limit(self, tier: Tier) -> tuple[float, float]:
        """(rate per second, burst) for a tier."""
        per_minute = self.settings.per_minute[tier - 1]
        return per_minute / 60.0, max(1.0, per_minute)

    def check(self, key: tuple[str, ...], tier: Tier) -> float | None:
        """Take one call from ``key``'s bucket; ``None`` if allowed, else seconds to wait."""
        rate, burst = self._limit(tier)
        return self._take([(("tier", *key), rate, burst)])

    def check_post_message(self, key: tuple[str, ...], channel: str) -> float | None:
        """chat.postMessage into ``channel``: one token from its channel's bucket and
        (when set) its workspace's, both or neither; ``None`` if allowed, else seconds
        to wait."""
        settings = self.settings
        buckets = [(("post", *key, channel), settings.post_message_per_second,
                    float(max(1, settings.post_message_burst)))]
        if settings.post_message_workspace_per_minute > 0:
            buckets.append((("post-workspace", *key),
                            settings.post_message_workspace_per_minute / 60.0,
                            float(max(1, settings.post_message_workspace_burst))))
        return self._take(buckets)

    def _take(self, buckets: list[tuple[tuple[str, ...], float, float]]) -> float | None:
        if not self.settings.enabled:
            return None
        now = self._now()
        wait = 0.0
        found = []
        for key, rate, burst in buckets:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(burst, now, burst / rate)
            else:
                bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
                bucket.updated = now
            found.append(bucket)
            if bucket.tokens < 1.0:
                wait = max(wait, (1.0 - bucket.tokens) / rate)
        if wait > 0.0:
            self.limited += 1
            return wait
        for bucket in found:
            bucket.tokens -= 1.0
        self._forget_full(now)
        return None

    def _forget_full(self, now: float) -> None:
        """Past ``max_buckets``, drop the buckets that are full again."""
        if len(self._buckets) < self._prune_at:
            return
        for key, bucket in list(self._buckets.items()):
            if now - bucket.updated > bucket.full_after:
                del self._buckets[key]
        # prune again only once the survivors have doubled: amortised O(1) per call
        self._prune_at = max(self._max_buckets, 2 * len(self._buckets))


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` is whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
