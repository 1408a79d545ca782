"""Memory of this process: resident pages (``/proc/self/status``) and live allocations.

``VmRSS`` is everything resident; ``RssAnon`` is its anonymous part (the
Python heap, thread stacks), which excludes pages of memory-mapped files such
as LMDB's. ``sys.getallocatedblocks()`` counts the objects the interpreter
holds, so comparing it with RSS separates memory the program still uses from
memory the allocators keep after it was freed (fragmented arenas, the C
heap). Readings are taken after a full garbage collection.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from pathlib import Path

import msgspec

STATUS = Path("/proc/self/status")


class Rss(msgspec.Struct, frozen=True, kw_only=True):
    """One reading: resident bytes, and blocks the interpreter has allocated."""

    vm_rss: int
    rss_anon: int
    blocks: int = 0


def parse_status(text: str) -> Rss:
    """Read ``VmRSS`` and ``RssAnon`` (kB) out of a ``/proc/<pid>/status`` text."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            number, _, unit = value.strip().partition(" ")
            if unit.strip() != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {key}")
            fields[key] = int(number) * 1024
    if "VmRSS" not in fields:
        raise ValueError("no VmRSS line in the status text")
    return Rss(vm_rss=fields["VmRSS"], rss_anon=fields.get("RssAnon", fields["VmRSS"]))


def read_rss(status: Path = STATUS) -> Rss:
    """Current resident memory and allocated blocks, after a full collection."""
    gc.collect()
    gc.collect()
    reading = parse_status(status.read_text())
    return msgspec.structs.replace(reading, blocks=sys.getallocatedblocks())


def trim_heap() -> bool:
    """Ask the C allocator to return free heap pages to the system (glibc's
    ``malloc_trim``); ``False`` where there is no such call."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True
