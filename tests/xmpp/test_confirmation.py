"""Confirmed sends on the component stream (XEP-0114 has no acks): through a real Prosody,
with a link between the component and Prosody that stalls and resets (:mod:`._link`).

A stanza sent with ``confirm=True`` is reported sent only once the server has answered
a round trip behind it; one written into a link that then dies is reported
:class:`ComponentUnconfirmed` (not retryable) and never written again, so nothing is
lost unseen and nothing is duplicated. A confirmed stanza is never reported failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from adapters.xmpp._component import ComponentConnection, ComponentUnconfirmed
from adapters.xmpp._prosody import ProsodyInstance

from ._clients import TestClient
from ._link import Link
from .conftest import COMPONENT, FAST_RECONNECT, SECRET
from .test_component import chat, client

#: polling step while waiting on a counter the loop thread moves (no event to wait on)
POLL_S = 0.01


@asynccontextmanager
async def linked(prosody: ProsodyInstance, *, confirm_timeout: float = 30.0,
                 ) -> AsyncIterator[tuple[ComponentConnection, Link]]:
    """A running component connected to Prosody through a :class:`Link`."""
    async with trio.open_nursery() as nursery:
        link = Link(prosody.component_port)
        await nursery.start(link.run)
        component = ComponentConnection(
            COMPONENT, SECRET, "127.0.0.1", link.port, reconnect=FAST_RECONNECT,
            connect_timeout=5.0, start_timeout=10.0, queue_deadline=10.0,
            confirm_timeout=confirm_timeout)
        await nursery.start(component.run)
        yield component, link
        nursery.cancel_scope.cancel()


async def until(predicate: Callable[[], bool]) -> None:
    while True:  # the state has no event of its own: polled
        if predicate():
            return
        await trio.sleep(POLL_S)


class Senders:
    """Confirmed sends running in the background, each one's outcome kept by body."""

    def __init__(self, component: ComponentConnection, nursery: trio.Nursery) -> None:
        self._component = component
        self._nursery = nursery
        self.outcomes: dict[str, str] = {}

    def start(self, *bodies: str) -> None:
        for body in bodies:
            self._nursery.start_soon(self.send, body)

    async def send(self, body: str) -> None:
        try:
            await self._component.send([chat(body)], confirm=True)
        except ComponentUnconfirmed as exc:  # never retryable: a resend could duplicate
            self.outcomes[body] = "retryable?" if exc.retryable else "unconfirmed"
        else:
            self.outcomes[body] = "confirmed"


async def bodies_until(peter: TestClient, last: str) -> list[str]:
    """Peter's message bodies up to and including ``last``."""
    bodies: list[str] = []
    while not bodies or bodies[-1] != last:
        bodies.append((await peter.next_message()).body)
    return bodies


async def test_a_normal_flow_confirms_everything_with_few_round_trips(
        prosody: ProsodyInstance) -> None:
    with trio.fail_after(30):
        async with linked(prosody) as (component, _), client(prosody) as peter:
            async with trio.open_nursery() as nursery:
                senders = Senders(component, nursery)

                async def sequence(task: int) -> None:
                    for i in range(10):  # one after the other, as a session delivers
                        await senders.send(f"t{task}-m{i}")

                for task in range(20):
                    nursery.start_soon(sequence, task)
            received = [(await peter.next_message()).body for _ in range(200)]
            stats = component.statistics()
    assert set(senders.outcomes.values()) == {"confirmed"} and len(senders.outcomes) == 200
    assert sorted(received) == sorted(senders.outcomes)  # each one once
    assert (stats.confirmed, stats.unconfirmed, stats.awaiting_confirmation) == (200, 0, 0)
    # concurrent sends share round trips: one confirmation covers a whole write batch
    assert 1 <= stats.pings <= 100, stats.pings
    assert stats.sent == 200 and stats.received == 0  # confirmations are neither


async def test_stanzas_written_into_a_link_that_stalls_then_resets_are_reported_failed(
        prosody: ProsodyInstance) -> None:
    with trio.fail_after(30):
        async with linked(prosody) as (component, link), client(prosody) as peter:
            await component.send([chat("before")], confirm=True)
            assert (await peter.next_message()).body == "before"

            link.stall()
            async with trio.open_nursery() as nursery:
                senders = Senders(component, nursery)
                senders.start(*(f"stalled-{i}" for i in range(5)))
                # written into the stalled link (which holds them), not confirmed
                await until(lambda: all(f"stalled-{i}".encode() in link.held_toward_server()
                                        for i in range(5)))
                assert component.statistics().awaiting_confirmation == 5
                assert senders.outcomes == {}  # nobody is told "sent" yet
                assert link.reset() == 1
            assert senders.outcomes == {f"stalled-{i}": "unconfirmed" for i in range(5)}

            await link.wait_connections(2)  # the component reconnected
            await component.send([chat("after")], confirm=True)
            # the stalled ones never arrived and were never written again (a resend would
            # come before "after": one queue, in order)
            assert await bodies_until(peter, "after") == ["after"]
            stats = component.statistics()
    assert (stats.confirmed, stats.unconfirmed, stats.awaiting_confirmation) == (2, 5, 0)
    assert stats.reconnects == 1


async def test_a_confirmed_stanza_is_never_reported_failed(prosody: ProsodyInstance) -> None:
    with trio.fail_after(30):
        async with linked(prosody) as (component, link), client(prosody) as peter:
            async with trio.open_nursery() as nursery:
                senders = Senders(component, nursery)
                senders.start(*(f"m{i}" for i in range(50)))
            assert set(senders.outcomes.values()) == {"confirmed"}
            # the connection dies once all is confirmed: nothing is failed after the fact
            link.stall()
            link.reset()
            await link.wait_connections(2)
            await component.send([chat("after")], confirm=True)
            bodies = await bodies_until(peter, "after")
            stats = component.statistics()
    assert sorted(bodies) == sorted([*senders.outcomes, "after"])  # each once
    assert (stats.confirmed, stats.unconfirmed) == (51, 0)


async def test_a_confirmation_overdue_aborts_the_connection(prosody: ProsodyInstance) -> None:
    """A link that stops carrying bytes without closing (a partition): the component gives
    up on the connection after confirm_timeout, fails what it holds and reconnects."""
    with trio.fail_after(30):
        async with linked(prosody, confirm_timeout=0.5) as (component, link), \
                client(prosody) as peter:
            link.stall()
            started = trio.current_time()
            with pytest.raises(ComponentUnconfirmed):
                await component.send([chat("into the partition")], confirm=True)
            assert 0.5 <= trio.current_time() - started < 5
            link.reset()  # the partition heals as a new connection (the old one is gone)
            await link.wait_connections(2)
            await component.send([chat("after")], confirm=True)
            assert await bodies_until(peter, "after") == ["after"]
    assert component.statistics().unconfirmed == 1


async def test_sends_without_confirm_return_once_written(prosody: ProsodyInstance) -> None:
    """Replies (errors, disco answers, probes) do not wait for a round trip: they return
    once written, even into a stalled link, and are not counted as unconfirmed."""
    with trio.fail_after(30):
        async with linked(prosody) as (component, link):
            link.stall()
            await component.send([chat("a reply")])
            link.reset()
            await link.wait_connections(2)
            stats = component.statistics()
    assert (stats.sent, stats.pings, stats.unconfirmed) == (1, 0, 0)
