"""Memory settings for a long-running engine process: the collector, the C heap.

CPython's cyclic collector runs a young collection every 700 allocations of
tracked objects, and a full one whenever the survivors since the last full
collection reach a quarter of the long-lived objects. An engine holds many
long-lived objects (the start-up state, and per active actor a task, its
coroutine frames, a mailbox and a handful of records), so full collections
take ~120 ms with 10,000 active sessions and ~1 s with 100,000, and they land
inside routing: the tail latency. :func:`tune_gc` does three things:

- a full collection, then ``gc.freeze()``: everything alive at start-up moves
  to the permanent generation, which no later collection traverses;
- a larger young-generation threshold (:data:`YOUNG_THRESHOLD` instead of
  700): most of the engine's short-lived container objects die by reference
  counting before a collection would see them, so fewer, cheaper collections;
- the older generations' thresholds are left as they are.

The hot-path records (events, rich text, metadata entries) are msgspec
Structs with ``gc=False``, so they are never tracked at all.

Call it once, after start-up (configuration loaded, storage open, the
engine's services started) and before traffic: ``interlink run`` calls it
when the supervision tree is up, the bench suites when their pipeline is.
Objects frozen and later dropped are still freed by reference counting; only
cyclic garbage among them would stay, which is why it runs after start-up,
not after actors have come and gone.

:func:`release_free_memory` asks glibc's allocator to give free heap pages
back to the system (``malloc_trim(0)``). CPython frees passivated actors'
objects, but the C heap keeps the pages they used while anything allocated
later sits above them, so without it resident memory hardly shrinks after a
sweep. The actor system calls it after large passivation sweeps. Elsewhere
than glibc (musl, macOS, Windows) it does nothing and returns ``False``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable, Iterator

#: young-generation threshold (CPython's default: 700). 5,000 since actors have no task
#: of their own: 20,000 made each young collection scan ~6 ms of survivors (message-id
#: records of the in-memory storage), the p99 at 50 % load; 5,000 keeps them near 1 ms
#: at the same throughput.
YOUNG_THRESHOLD = 5_000


def tune_gc(*, young_threshold: int = YOUNG_THRESHOLD, freeze: bool = True) -> None:
    """Collect, freeze what survives (``freeze``), and raise the young-generation threshold."""
    if young_threshold < 1:
        raise ValueError("young_threshold must be at least 1")
    gc.collect()
    if freeze:
        gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


@contextlib.contextmanager
def tuned_gc(*, young_threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """:func:`tune_gc` for a while: thresholds restored and everything unfrozen on exit.

    For code that shares its process with other work (the bench suites when
    run from the test suite); an engine process just calls :func:`tune_gc`.
    """
    thresholds = gc.get_threshold()
    tune_gc(young_threshold=young_threshold)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def load_malloc_trim(
    *,
    platform: str = sys.platform,
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
    load: Callable[[str], object] = ctypes.CDLL,
) -> Callable[[int], object] | None:
    """glibc's ``malloc_trim``, or ``None`` where there is no such call."""
    if not platform.startswith("linux"):
        return None
    name = find_library("c")
    if name is None:
        return None
    try:
        libc = load(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    return trim if callable(trim) else None


_malloc_trim: list[Callable[[int], object] | None] = []  # looked up on first use


def release_free_memory() -> bool:
    """Return free C-heap pages to the system (glibc only); ``False`` where unsupported."""
    if not _malloc_trim:
        _malloc_trim.append(load_malloc_trim())
    trim = _malloc_trim[0]
    if trim is None:
        return False
    trim(0)
    return True
