"""An asyncio loop in a dedicated thread, bridged to trio (slixmpp is asyncio-only).

Rules of this module:

- :class:`AsyncioThread` owns one asyncio loop running in its own thread.
  Every asyncio object (the loop's futures and tasks, slixmpp streams) is
  created and touched only on that thread. trio reaches it in two ways only:
  :meth:`AsyncioThread.run` awaits a coroutine function run on the loop (the
  coroutine's task is cancelled when the trio caller is cancelled) and
  :meth:`AsyncioThread.call_soon` schedules a callback there.
- asyncio reaches trio only through ``TrioToken.run_sync_soon`` — never
  ``trio.from_thread.run``, which would block the loop until trio answers.
- :class:`InboundBridge` carries items from the loop to a trio memory channel
  **in batches**: ``put`` appends to a list on the loop side and the list
  crosses once, at the loop's next iteration, so a read of many stanzas costs
  one thread wake-up instead of one per stanza.
- Inbound backpressure, never drops: a batch that finds the trio channel full
  is kept, in order, in a trio-side overflow deque, and the bridge asks the
  loop to *pause reading* (the owner passes ``pause``/``resume`` callbacks
  that call ``transport.pause_reading()``; TCP flow control then pushes back
  on the server). :meth:`InboundBridge.pump` moves the overflow into the
  channel as the consumer makes room, then resumes reading. The overflow is
  bounded by what the loop had already read when the pause took effect (one
  iteration: at most one read of 256 KiB per socket). Items are dropped (and
  counted) only when the consumer has closed its end, or at teardown.
- Teardown (:meth:`AsyncioThread.stop`): owners first close their streams
  (await ``disconnected``); ``stop`` then cancels every task left on the loop
  and awaits them, shuts down async generators and the default executor,
  stops the loop, joins the thread and closes the loop. Skipping any of that
  yields "Task was destroyed but it is pending!" or ``XMLStream.__del__``
  errors at garbage collection. Every step is bounded by ``stop_timeout``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple, Unpack

import trio

from engine import LocalError, UnavailableError

log = logging.getLogger("interlink.xmpp.bridge")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class BridgeClosedError(UnavailableError):
    """The bridge's asyncio loop is not running (not started yet, or stopped)."""


class AsyncioThread:
    """An asyncio event loop running in a thread of its own, driven from trio.

    Use as ``async with AsyncioThread() as thread:`` or call :meth:`start`
    and :meth:`stop` explicitly.
    """

    def __init__(self, name: str = "interlink-asyncio", *, stop_timeout: float = 5.0) -> None:
        if stop_timeout <= 0:
            raise LocalError("stop_timeout must be positive")
        self.name = name
        self._stop_timeout = stop_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False  # no new calls accepted
        self._closing = False  # the loop was told to stop
        self.loop_errors = 0  # exceptions the loop reported to its exception handler

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._stopping

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop; for code that already runs on the bridge thread."""
        if self._loop is None:
            raise BridgeClosedError(f"asyncio thread {self.name!r} is not started")
        return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self) -> None:
        """Start the loop's thread; coroutines may be submitted at once."""
        if self._thread is not None:
            raise LocalError(f"asyncio thread {self.name!r} was already started")
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        self._loop = loop
        self._thread = threading.Thread(target=self._main, args=(loop,), name=self.name,
                                        daemon=True)
        self._thread.start()

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            asyncio.set_event_loop(None)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio's default handler logs the context, which may hold stanza reprs: log
        # only the error type and the message asyncio wrote, never the objects.
        self.loop_errors += 1
        error = context.get("exception")
        log.error("asyncio loop error", extra={
            "bridge": self.name, "reason": str(context.get("message", ""))[:200],
            "error_type": type(error).__name__ if error is not None else ""})

    async def run(self, coro_fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        """Run ``coro_fn(*args)`` on the loop and return its result to trio.

        If the trio caller is cancelled, the asyncio task is cancelled too (the
        trio side does not wait for it to finish). Raises
        :class:`BridgeClosedError` if the loop is not running or stops first.
        """
        return await self._run_on(self._require_running(), coro_fn, *args)

    async def _run_on(self, loop: asyncio.AbstractEventLoop,
                      coro_fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        async def call() -> T:
            return await coro_fn(*args)

        coro = call()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop was closed under us
            coro.close()
            raise BridgeClosedError(f"asyncio thread {self.name!r} is stopped") from None

        def wake(_: concurrent.futures.Future[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise BridgeClosedError(
                f"asyncio thread {self.name!r} stopped while running a call") from None

    def call_soon(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """Schedule ``fn(*args)`` on the loop; its errors go to the loop's error handler."""
        loop = self._require_running()
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            raise BridgeClosedError(f"asyncio thread {self.name!r} is stopped") from None

    def _require_running(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or self._stopping or loop.is_closed():
            raise BridgeClosedError(f"asyncio thread {self.name!r} is not running")
        return loop

    async def stop(self) -> None:
        """Cancel what is left on the loop, stop it, join the thread, close the loop.

        Shielded and bounded by ``stop_timeout`` per step; idempotent.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._stopping:
            return
        self._stopping = True
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._stop_timeout) as scope:
                with contextlib.suppress(BridgeClosedError):
                    await self._run_on(loop, _cancel_remaining_tasks)
            if scope.cancelled_caught:
                log.error("asyncio tasks did not finish cancelling in time",
                          extra={"bridge": self.name})
            self._closing = True
            loop.call_soon_threadsafe(loop.stop)
            await trio.to_thread.run_sync(thread.join, self._stop_timeout)
            if thread.is_alive():
                # A callback blocks the loop: the thread is abandoned (it is a daemon).
                log.error("asyncio thread did not stop in time", extra={"bridge": self.name})
                return
            loop.close()

    async def __aenter__(self) -> AsyncioThread:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def _cancel_remaining_tasks() -> None:
    """On the loop: cancel and await every other task, then release loop resources."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    for _ in range(10):  # cancelling a task may start another (bounded)
        tasks = [task for task in asyncio.all_tasks(loop) if task is not current]
        if not tasks:
            break
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


@dataclass(frozen=True, slots=True)
class InboundStatistics:
    """Counters of one :class:`InboundBridge`."""

    items: int  # items that crossed to trio
    batches: int  # thread crossings (one per loop iteration that had items)
    largest_batch: int
    overflowed: int  # batches that found the trio channel full (backpressure engaged)
    pauses: int  # times reading was paused
    dropped: int  # items lost because the consumer closed its end, or at teardown
    overflow_items: int  # items waiting in the overflow right now


class InboundBridge(Generic[T]):
    """asyncio -> trio delivery in batches, with backpressure instead of drops.

    Construct it in trio (it captures the trio token). ``put`` is called on the
    loop thread; ``pump`` must run in a trio task for as long as items may
    arrive (it releases backpressure); ``send_channel`` stays open.
    """

    def __init__(self, thread: AsyncioThread, send_channel: trio.MemorySendChannel[list[T]], *,
                 pause: Callable[[], None] | None = None,
                 resume: Callable[[], None] | None = None) -> None:
        self._thread = thread
        self._send = send_channel
        self._token = trio.lowlevel.current_trio_token()
        self._pause_cb = pause
        self._resume_cb = resume
        # loop side
        self._pending: list[T] = []
        self._flush_scheduled = False
        self.paused = False  # reading paused (read on the loop thread)
        # trio side
        self._overflow: deque[list[T]] = deque()
        self._overflow_items = 0
        self._pause_requested = False
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        # counters (each written by one thread only)
        self._items = 0
        self._batches = 0
        self._largest = 0
        self._overflowed = 0
        self._pauses = 0
        self._dropped = 0
        self._lost_at_flush = 0

    @property
    def backpressured(self) -> bool:
        """Whether reading is paused, or asked to pause, for the consumer (trio side): what
        the peer wrote since may sit unread in the socket."""
        return self._pause_requested

    def statistics(self) -> InboundStatistics:
        return InboundStatistics(
            items=self._items, batches=self._batches, largest_batch=self._largest,
            overflowed=self._overflowed, pauses=self._pauses,
            dropped=self._dropped + self._lost_at_flush, overflow_items=self._overflow_items)

    # -- loop side -------------------------------------------------------------

    def put(self, item: T) -> None:
        """Queue ``item`` for trio; call on the loop thread only."""
        self._pending.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._thread.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._token.run_sync_soon(self._arrive, batch)
        except trio.RunFinishedError:
            self._lost_at_flush += len(batch)

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            self._pauses += 1
            if self._pause_cb is not None:
                self._pause_cb()

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            if self._resume_cb is not None:
                self._resume_cb()

    # -- trio side -------------------------------------------------------------

    def _arrive(self, batch: list[T]) -> None:
        self._batches += 1
        self._items += len(batch)
        self._largest = max(self._largest, len(batch))
        if self._closed:
            self._drop(batch)
            return
        if not self._overflow:
            try:
                self._send.send_nowait(batch)
                return
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(batch)
                return
        self._overflowed += 1
        self._overflow.append(batch)
        self._overflow_items += len(batch)
        if not self._pause_requested:
            self._pause_requested = True
            with contextlib.suppress(BridgeClosedError):
                self._thread.call_soon(self._pause)
        self._lot.unpark_all()

    def _drop(self, batch: list[T]) -> None:
        if self._dropped == 0:
            log.warning("inbound consumer gone: items dropped", extra={"count": len(batch)})
        self._dropped += len(batch)

    async def pump(self) -> None:
        """Move overflowed batches into the channel as room appears; runs until cancelled.

        On cancellation, batches still in the overflow are counted as dropped.
        """
        try:
            while True:
                while not self._overflow:
                    await self._lot.park()
                batch = self._overflow[0]
                try:
                    await self._send.send(batch)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._drop(batch)
                self._overflow.popleft()
                self._overflow_items -= len(batch)
                if not self._overflow and self._pause_requested:
                    self._pause_requested = False
                    with contextlib.suppress(BridgeClosedError):
                        self._thread.call_soon(self._resume)
        finally:
            self._closed = True
            while self._overflow:
                batch = self._overflow.popleft()
                self._overflow_items -= len(batch)
                self._drop(batch)


async def close_stream(stream: Any, timeout: float) -> None:
    """Close a slixmpp stream gracefully within ``timeout``, else abort it; on its loop."""
    stream.cancel_connection_attempt()
    if stream.transport is None:
        return
    closed = stream.disconnected
    stream.disconnect(wait=timeout, ignore_send_queue=True)
    try:
        async with asyncio.timeout(timeout + 1):
            await asyncio.shield(closed)
    except TimeoutError:
        stream.abort()
