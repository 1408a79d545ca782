"""Progress lines for long runs, on stderr so stdout stays the result table."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Writes ``[suite +12.3s] message`` lines; silent when ``stream`` is ``None``."""

    def __init__(self, suite: str, stream: TextIO | None = None, *,
                 started: float | None = None) -> None:
        self._suite = suite
        self._stream = stream
        self._started = time.perf_counter() if started is None else started

    @classmethod
    def to_stderr(cls, suite: str) -> Progress:
        return cls(suite, sys.stderr)

    @classmethod
    def silent(cls, suite: str = "") -> Progress:
        return cls(suite, None)

    @classmethod
    def resumed(cls, suite: str, started: float | None) -> Progress:
        """In a worker process: stderr, with the parent's start (``None``: silent).

        ``time.perf_counter`` is the system-wide monotonic clock on Linux, so
        the elapsed times continue the parent's.
        """
        return cls.silent(suite) if started is None else cls(suite, sys.stderr, started=started)

    @property
    def started(self) -> float | None:
        """The start time to hand to a worker's :meth:`resumed` (``None`` when silent)."""
        return None if self._stream is None else self._started

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def say(self, message: str) -> None:
        if self._stream is None:
            return
        self._stream.write(f"[{self._suite} +{self.elapsed():6.1f}s] {message}\n")
        self._stream.flush()
