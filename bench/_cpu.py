"""Where the CPU goes: this process's threads and its child processes, from ``/proc``.

The engine's event loop runs on the main thread; the LMDB stores each keep a
writer process beside it (until schema 2's second round, also a writer
thread in this process; other threads are still counted, should any run). A reading
takes every thread's and every direct child's user + system time
(``/proc/<pid>/task/<tid>/stat`` fields 14 and 15, in clock ticks), so the
cost of one event can be split between the event loop, the other threads and
the writer processes: how much of the second core the engine uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuReading(msgspec.Struct, frozen=True, kw_only=True):
    """CPU seconds so far: the main thread, the process's live other threads, its children."""

    main_thread_s: float
    other_threads_s: float
    children_s: float


class CpuPerEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Microseconds of CPU per event, by where it was spent."""

    #: the main thread: the event loop, where every actor runs
    event_loop: float
    #: the process's other threads (none of the engine's own since the stores lost
    #: their writer threads; worker threads, if any)
    other_threads: float
    #: the process's children (the LMDB writer processes)
    writer_processes: float
    total: float


def _stat_seconds(stat: Path) -> float:
    """User + system seconds of one ``stat`` file; 0 if it vanished meanwhile."""
    try:
        text = stat.read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _parent_of(stat: Path) -> int:
    try:
        return int(stat.read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def read_cpu(proc: Path = PROC) -> CpuReading:
    """Every thread of this process, and every direct child process (all their threads)."""
    pid = os.getpid()
    main = other = 0.0
    for task in (proc / "self" / "task").iterdir():
        seconds = _stat_seconds(task / "stat")
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    children = 0.0
    for entry in proc.iterdir():
        if entry.name.isdigit() and _parent_of(entry / "stat") == pid:
            children += _stat_seconds(entry / "stat")
    return CpuReading(main_thread_s=main, other_threads_s=other, children_s=children)


def per_event(before: CpuReading, after: CpuReading, events: int) -> CpuPerEvent:
    """The CPU between two readings, per event, in microseconds.

    A child that exited between the readings is not counted; the writer
    processes live as long as their stores, which outlive the trial.
    """
    scale = 1e6 / max(events, 1)
    loop = (after.main_thread_s - before.main_thread_s) * scale
    threads = (after.other_threads_s - before.other_threads_s) * scale
    children = max(0.0, after.children_s - before.children_s) * scale
    return CpuPerEvent(event_loop=round(loop, 2), other_threads=round(threads, 2),
                       writer_processes=round(children, 2),
                       total=round(loop + threads + children, 2))
