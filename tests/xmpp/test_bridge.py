"""The asyncio-thread bridge: calls, cancellation, batching, backpressure, clean teardown."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import pytest
import trio

from adapters.xmpp._bridge import AsyncioThread, BridgeClosedError, InboundBridge


async def test_run_returns_results_and_raises_errors_from_the_loop_thread() -> None:
    async with AsyncioThread("test") as thread:
        async def where(x: int) -> tuple[int, str]:
            await asyncio.sleep(0)
            return x * 2, threading.current_thread().name

        async def fail() -> None:
            raise ValueError("boom")

        with trio.fail_after(5):
            assert await thread.run(where, 21) == (42, "test")
            with pytest.raises(ValueError, match="boom"):
                await thread.run(fail)


async def test_cancelling_the_trio_caller_cancels_the_asyncio_task() -> None:
    async with AsyncioThread("test") as thread:
        started = trio.Event()
        token = trio.lowlevel.current_trio_token()
        outcome: list[str] = []
        finished: asyncio.Event | None = None

        async def forever() -> None:
            nonlocal finished
            finished = asyncio.Event()
            token.run_sync_soon(started.set)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            finally:
                finished.set()

        async def wait_finished() -> None:
            assert finished is not None
            await finished.wait()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(thread.run, forever)
                await started.wait()
                nursery.cancel_scope.cancel()
            await thread.run(wait_finished)
        assert outcome == ["cancelled"]


async def test_call_soon_runs_on_the_loop_in_order() -> None:
    async with AsyncioThread("test") as thread:
        seen: list[tuple[int, str]] = []
        for i in range(3):
            thread.call_soon(lambda i: seen.append((i, threading.current_thread().name)), i)

        async def nothing() -> None:
            return None

        with trio.fail_after(5):
            await thread.run(nothing)  # runs after the callbacks: the loop is FIFO
        assert seen == [(0, "test"), (1, "test"), (2, "test")]


async def test_stop_cancels_pending_tasks_without_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    thread = AsyncioThread("test")
    thread.start()

    tasks: list[asyncio.Task[object]] = []  # as any owner must, keep a reference

    async def spawn() -> None:
        tasks.append(asyncio.get_running_loop().create_task(asyncio.Event().wait()))

    with trio.fail_after(10):
        await thread.run(spawn)
        await thread.stop()
        await thread.stop()  # idempotent
    assert thread.loop.is_closed()
    assert tasks[0].cancelled()
    tasks.clear()
    gc.collect()  # a destroyed pending task would be reported here
    assert thread.loop_errors == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(BridgeClosedError):
        await thread.run(spawn)
    with pytest.raises(BridgeClosedError):
        thread.call_soon(print)


async def test_items_put_in_one_loop_iteration_cross_as_one_batch() -> None:
    send, receive = trio.open_memory_channel[list[int]](10)
    async with AsyncioThread("test") as thread, trio.open_nursery() as nursery:
        bridge = InboundBridge[int](thread, send)
        nursery.start_soon(bridge.pump)

        async def produce() -> None:
            for i in range(500):
                bridge.put(i)

        with trio.fail_after(5):
            await thread.run(produce)
            assert await receive.receive() == list(range(500))
        stats = bridge.statistics()
        assert (stats.items, stats.batches, stats.largest_batch) == (500, 1, 500)
        nursery.cancel_scope.cancel()


async def test_a_full_channel_pauses_reading_and_loses_nothing() -> None:
    send, receive = trio.open_memory_channel[list[int]](1)
    flow: list[str] = []
    async with AsyncioThread("test") as thread, trio.open_nursery() as nursery:
        bridge = InboundBridge[int](thread, send, pause=lambda: flow.append("pause"),
                                   resume=lambda: flow.append("resume"))
        nursery.start_soon(bridge.pump)

        async def produce(start: int) -> None:
            for i in range(start, start + 10):
                bridge.put(i)

        with trio.fail_after(5):
            for start in range(0, 50, 10):  # five batches into a channel that holds one
                await thread.run(produce, start)
            await trio.testing.wait_all_tasks_blocked()
            assert bridge.statistics().overflowed >= 3
            received: list[int] = []
            while len(received) < 50:
                received.extend(await receive.receive())

            async def flow_settled() -> list[str]:
                return list(flow)

            await trio.testing.wait_all_tasks_blocked()
            assert received == list(range(50))
            assert await thread.run(flow_settled) == ["pause", "resume"]
        stats = bridge.statistics()
        assert (stats.items, stats.dropped, stats.overflow_items, stats.pauses) == (50, 0, 0, 1)
        nursery.cancel_scope.cancel()


async def test_items_for_a_closed_consumer_are_counted_as_dropped() -> None:
    send, receive = trio.open_memory_channel[list[int]](1)
    await receive.aclose()
    async with AsyncioThread("test") as thread, trio.open_nursery() as nursery:
        bridge = InboundBridge[int](thread, send)
        nursery.start_soon(bridge.pump)

        async def produce() -> None:
            bridge.put(1)
            bridge.put(2)

        with trio.fail_after(5):
            await thread.run(produce)
            while bridge.statistics().batches < 1:
                await trio.testing.wait_all_tasks_blocked()
        assert bridge.statistics().dropped == 2
        nursery.cancel_scope.cancel()
