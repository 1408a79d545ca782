"""The actor mailbox: bounded, one reader, nothing raised or kept to find it empty."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from engine._mailbox import EMPTY, Mailbox


async def test_items_come_out_in_order_and_a_full_mailbox_refuses_without_queueing() -> None:
    mailbox: Mailbox[int] = Mailbox(2)
    assert mailbox.take() is EMPTY
    assert mailbox.put_nowait(1) and mailbox.put_nowait(2)
    assert not mailbox.put_nowait(3), "full: refused, and nothing queued"
    assert len(mailbox) == 2
    assert [mailbox.take(), mailbox.take(), mailbox.take()] == [1, 2, EMPTY]


async def test_the_reader_waits_until_an_item_arrives() -> None:
    mailbox: Mailbox[str] = Mailbox(4)
    got: list[str] = []

    async def reader() -> None:
        await mailbox.wait()
        item = mailbox.take()
        assert isinstance(item, str)
        got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        assert mailbox.put_nowait("hello")
    assert got == ["hello"]


async def test_a_writer_waits_for_room_and_close_wakes_everyone() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    assert mailbox.put_nowait(1)
    outcomes: list[str] = []

    async def writer(item: int) -> None:
        try:
            await mailbox.put(item)
            outcomes.append(f"put {item}")
        except trio.ClosedResourceError:
            outcomes.append(f"closed {item}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, 2)
        nursery.start_soon(writer, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.senders_waiting == 2
        assert mailbox.take() == 1  # room for one parked writer
        await trio.testing.wait_all_tasks_blocked()
        assert len(mailbox) == 1 and mailbox.senders_waiting == 1
        mailbox.close()
    assert sorted(o.split()[0] for o in outcomes) == ["closed", "put"]
    put = next(int(o.split()[1]) for o in outcomes if o.startswith("put"))
    assert mailbox.take() == put, "what was queued before the close is still read"
    assert mailbox.take() is EMPTY
    await mailbox.wait()  # closed: returns at once
    with pytest.raises(trio.ClosedResourceError):
        mailbox.put_nowait(4)


async def test_close_ends_a_waiting_reader_and_a_cancelled_wait_leaves_no_reader() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    with trio.move_on_after(0.01) as scope:
        await mailbox.wait()
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:  # a second reader may wait: the first is gone
        nursery.start_soon(mailbox.wait)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await mailbox.wait()
        mailbox.close()
    assert mailbox.closed


async def _tracked_objects_per_waiting_task(
    count: int, wait: Callable[[int], Awaitable[object]],
) -> float:
    async with trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        before = len(gc.get_objects())
        for i in range(count):
            nursery.start_soon(wait, i)
        await trio.testing.wait_all_tasks_blocked()
        after = len(gc.get_objects())
        nursery.cancel_scope.cancel()
    return (after - before) / count


async def test_a_waiting_reader_leaves_fewer_objects_for_the_collector_than_a_channel() -> None:
    count = 300
    mailboxes: list[Mailbox[int]] = [Mailbox(1) for _ in range(count)]
    channels = [trio.open_memory_channel[int](1) for _ in range(count)]

    async def wait_on_mailbox(i: int) -> None:
        mailbox = mailboxes[i]
        if mailbox.take() is EMPTY:
            await mailbox.wait()

    async def wait_on_channel(i: int) -> None:  # what the actor loop did before
        receive = channels[i][1]
        try:
            receive.receive_nowait()
        except trio.WouldBlock:
            await receive.receive()

    mine = await _tracked_objects_per_waiting_task(count, wait_on_mailbox)
    theirs = await _tracked_objects_per_waiting_task(count, wait_on_channel)
    assert mine <= theirs - 5, (mine, theirs)


def test_a_mailbox_is_freed_by_reference_counting_alone() -> None:
    # A passivated actor's mailbox must not wait for a full collection.
    gc.disable()
    try:
        mailbox: Mailbox[int] = Mailbox(1)
        mailbox.put_nowait(1)
        assert mailbox._room is None, "no parking lot until a writer has to wait"
        mailbox._room = trio.lowlevel.ParkingLot()  # as the first waiting writer makes it
        gone = weakref.ref(mailbox._room)
        del mailbox
        assert gone() is None
    finally:
        gc.enable()
