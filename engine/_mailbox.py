"""An actor's mailbox: bounded, one reader, and cheap to wait on.

Why not a trio memory channel: an idle actor waits on its mailbox, and with
thousands of sessions most actors are waiting most of the time. Each wait on
``MemoryReceiveChannel.receive()`` (after a ``receive_nowait()`` that found
it empty) left ~14 objects the cyclic collector tracks: two ``WouldBlock``
exceptions with their tracebacks (kept alive while the reader waited inside
the ``except``), an abort closure and its cell, coroutines. They live as long
as the actor waits, so they survive young collections; and because every
woken actor frees as many older ones as it allocates, the young generation's
net allocation count barely moves while the young list grows to ~10 objects
per waiting actor. With 10,000 sessions at a steady 7,000 events/s, young
collections found ~100,000 objects and took 40-60 ms each: the p99 at 50 %
load was 45 ms.

Here a wait allocates only what trio's own parking needs (the coroutines and
the ``WaitTaskRescheduled`` trap) and one bound method as its abort callback
(not kept: a mailbox holding its own bound method would be a reference cycle,
freed only by a full collection after the actor passivates), nothing is raised
to find the mailbox empty (:meth:`take` returns :data:`EMPTY`), and putting
into a mailbox with room is a ``deque.append``.
Senders that find it full park in a ``ParkingLot`` (created by the first
one) until the reader makes room.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Generic, TypeVar

import trio

T = TypeVar("T")


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


#: what :meth:`Mailbox.take` returns when there is nothing to take
EMPTY: Final = _Empty()


class Mailbox(Generic[T]):
    """A bounded FIFO for one reader task and any number of writers.

    After :meth:`close`, puts raise ``trio.ClosedResourceError``; the reader
    still takes what is queued, then :meth:`wait` returns at once and
    :meth:`take` keeps answering :data:`EMPTY`.
    """

    __slots__ = ("_capacity", "_closed", "_items", "_reader", "_room", "_writers_parked")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, not {capacity}")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._closed = False
        self._reader: trio.lowlevel.Task | None = None
        #: where writers wait for room; created by the first writer that has to (most
        #: mailboxes never fill, and a lot holds an OrderedDict: per actor, that adds up)
        self._room: trio.lowlevel.ParkingLot | None = None
        #: writers parked in ``_room`` (an int: cheaper to test per take than the lot)
        self._writers_parked = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def senders_waiting(self) -> int:
        """Writers parked until there is room."""
        return self._writers_parked

    # -- writers --------------------------------------------------------------
    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` and wake the reader; ``False`` (nothing queued) when full."""
        if self._closed:
            raise trio.ClosedResourceError("the mailbox is closed")
        items = self._items
        if len(items) >= self._capacity:
            return False
        items.append(item)
        reader = self._reader
        if reader is not None:
            self._reader = None
            trio.lowlevel.reschedule(reader)
        return True

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the mailbox is full; a checkpoint only if it waits.

        Raises ``trio.ClosedResourceError`` if the mailbox is (or gets) closed
        first; a cancelled wait has queued nothing.
        """
        while not self.put_nowait(item):
            room = self._room
            if room is None:
                room = self._room = trio.lowlevel.ParkingLot()
            self._writers_parked += 1
            try:
                await room.park()
            finally:
                self._writers_parked -= 1

    def close(self) -> None:
        """Refuse further puts; the reader drains what is queued, then sees the end."""
        if self._closed:
            return
        self._closed = True
        reader = self._reader
        if reader is not None:
            self._reader = None
            trio.lowlevel.reschedule(reader)
        if self._room is not None:
            self._room.unpark_all()  # parked writers retry and find it closed

    # -- the reader -------------------------------------------------------------
    def take(self) -> T | _Empty:
        """The oldest item, or :data:`EMPTY`; never waits."""
        items = self._items
        if not items:
            return EMPTY
        item = items.popleft()
        if self._writers_parked:
            assert self._room is not None  # a writer parked there
            self._room.unpark()
        return item

    async def wait(self) -> None:
        """Return once there is an item to take or the mailbox is closed.

        Waits only when there is neither (then it is a checkpoint: cancellable).
        One reader at a time.
        """
        if self._items or self._closed:
            return
        if self._reader is not None:
            raise trio.BusyResourceError("another task is already waiting on this mailbox")
        self._reader = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._reader = None
        return trio.lowlevel.Abort.SUCCEEDED
