"""Run one measurement in a fresh interpreter.

Memory a measurement frees stays with the process (allocator arenas, the C
heap), and the next measurement in the same process would reuse it and look
cheaper than it is; threads a measurement starts could outlive it. A fresh
process per measurement (``multiprocessing``'s *spawn* start method) gives
each one the same clean start and takes everything with it when it ends.
The function and its arguments must be importable and picklable.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: the longest one measurement may take
TIMEOUT_S = 1800.0


def run_in_fresh_process(isolate: bool, function: Callable[..., T], *args: object) -> T:
    """``function(*args)``, in a new process when ``isolate`` (else right here)."""
    if not isolate:
        return function(*args)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result(timeout=TIMEOUT_S)
