"""One backoff policy for every retry loop: actor crash restarts, delivery
retries, reconnects, Web API retries and supervisor restarts.

The delay before retry ``n`` (from 1) is ``initial * multiplier**(n-1)``
capped at ``maximum``, times a factor drawn uniformly from
``[1 - jitter, 1 + jitter]`` (``"both"``, spreads a herd both ways) or
``[1 - jitter, 1]`` (``"below"``, never waits longer than the base: for
platforms that name the wait they want), capped at ``maximum`` again.
``n <= 0`` is "no retry yet": no delay.

Why one place: six hand-written copies had drifted (different caps,
different jitter, one overflowing on a long crash loop).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from ._errors import LocalError

__all__ = ["Backoff"]

_SHARED_RANDOM = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    spread: Literal["both", "below"] = "both"

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.maximum:
            raise LocalError("backoff needs 0 <= initial <= maximum")
        if not self.multiplier >= 1:
            raise LocalError("backoff multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise LocalError("backoff jitter is a fraction between 0 and 1")

    def base(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (from 1) without jitter."""
        if attempt <= 0:
            return 0.0
        try:
            raw = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            return self.maximum
        return min(raw, self.maximum)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retry ``attempt`` (from 1), drawn from ``rng``."""
        base = self.base(attempt)
        if base == 0.0:
            return 0.0
        rng = rng or _SHARED_RANDOM
        if self.spread == "both":
            factor = rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        else:
            factor = 1.0 - self.jitter * rng.random()
        return min(self.maximum, max(0.0, base * factor))
