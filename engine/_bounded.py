"""A bounded, least-recently-used dict: adapters' in-memory caches stay bounded."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class Bounded(OrderedDict[Any, Any]):
    """An LRU dict: the oldest entries go once ``limit`` is reached."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
