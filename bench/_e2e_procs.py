"""The e2e suite's processes: started on free ports, always stopped, their CPU read.

:func:`spawned` starts a command in a session of its own, waits (bounded) for a line on
its stdout that says it is up, and on the way out (normal end, error, Ctrl-C) sends
SIGTERM, waits at most ``stop_timeout`` and then SIGKILLs the whole session. Output
beyond the ready line goes to a log file under the run's temporary directory (the last
lines are quoted when a process fails to start).

:func:`process_cpu_s` reads one process's user + system time from ``/proc/<pid>/stat``
(every thread; children not included); :func:`children_of` lists its direct children
(the engine's LMDB writer processes).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import trio

from ._cpu import PROC, _parent_of, _stat_seconds


class ProcessError(Exception):
    """A process the suite needs did not start (the message quotes its log)."""


@dataclass(slots=True)
class Spawned:
    name: str
    process: trio.Process
    ready_line: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def _read_ready(process: trio.Process, marker: str, log_file: Path) -> str:
    """Lines of stdout until one contains ``marker``; then stdout is copied to the log."""
    assert process.stdout is not None
    buffer = b""
    with log_file.open("ab") as out:
        while True:
            data = await process.stdout.receive_some(65536)
            if not data:
                raise ProcessError("exited before it was ready")
            out.write(data)
            out.flush()
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if marker in text:
                    return text


async def _drain(process: trio.Process, log_file: Path) -> None:
    assert process.stdout is not None
    with log_file.open("ab") as out:
        while data := await process.stdout.receive_some(65536):
            out.write(data)


async def stop(process: trio.Process, timeout: float) -> None:
    """SIGTERM the process's session, wait up to ``timeout``, then SIGKILL it."""
    if process.returncode is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with trio.move_on_after(timeout):
            await process.wait()
    if process.returncode is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.move_on_after(timeout):
            await process.wait()


@asynccontextmanager
async def spawned(name: str, command: Sequence[str], *, ready: str, log_path: Path,
                  start_timeout: float = 60.0, stop_timeout: float = 15.0,
                  env: dict[str, str] | None = None,
                  merge_stderr: bool = False) -> AsyncIterator[Spawned]:
    """Run ``command`` until the block ends; yields once stdout (with ``merge_stderr``:
    stdout or stderr) printed a line containing ``ready``."""
    stderr = log_path.open("ab")
    try:
        process = await trio.lowlevel.open_process(
            list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else stderr,
            start_new_session=True, env=env)
    finally:
        stderr.close()
    try:
        try:
            with trio.fail_after(start_timeout):
                line = await _read_ready(process, ready, log_path)
        except (trio.TooSlowError, ProcessError) as exc:
            with trio.CancelScope(shield=True):
                await stop(process, stop_timeout)
            tail = Spawned(name, process, "", log_path).log_tail()
            reason = "was not ready in time" if isinstance(exc, trio.TooSlowError) else exc
            raise ProcessError(f"{name} {reason}; its log ends:\n{tail}") from None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process, log_path)
            try:
                yield Spawned(name, process, line, log_path)
            finally:
                with trio.CancelScope(shield=True):
                    await stop(process, stop_timeout)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stop(process, stop_timeout)


def process_cpu_s(pid: int, proc: Path = PROC) -> float:
    """User + system seconds of process ``pid`` so far (0 if it is gone)."""
    return _stat_seconds(proc / str(pid) / "stat")


def children_of(pid: int, proc: Path = PROC) -> list[int]:
    """The direct children of ``pid``."""
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and _parent_of(entry / "stat") == pid:
            found.append(int(entry.name))
    return found
