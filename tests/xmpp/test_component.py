"""The XEP-0114 component connection against a real Prosody and a real slixmpp client."""

from __future__ import annotations

import gc
import logging
from contextlib import AbstractAsyncContextManager
from xml.etree.ElementTree import Element, SubElement

import pytest
import trio
import trio.testing

from adapters.xmpp._component import (
    CLIENT_NS,
    ComponentConnection,
    ComponentRefused,
    ComponentUnavailable,
    InvalidStanza,
)
from adapters.xmpp._prosody import ProsodyInstance

from ._clients import TestClient, open_client
from .conftest import COMPONENT, JOHN, PETER, PETER_PASSWORD, ConnectedCalls, make_component

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def chat(body: str, *, sender: str = JOHN, to: str = PETER) -> Element:
    message = Element(f"{{{CLIENT_NS}}}message", {"from": sender, "to": to, "type": "chat"})
    SubElement(message, f"{{{CLIENT_NS}}}body").text = body
    return message


def body_of(stanza: Element) -> str | None:
    return stanza.findtext(f"{{{CLIENT_NS}}}body")


async def next_inbound(component: ComponentConnection, name: str = "message") -> Element:
    """The next received stanza named ``name`` (others are skipped)."""
    while True:
        for stanza in await component.inbound.receive():
            if stanza.tag == f"{{{CLIENT_NS}}}{name}":
                return stanza


def client(prosody: ProsodyInstance) -> AbstractAsyncContextManager[TestClient]:
    return open_client(PETER, PETER_PASSWORD, "127.0.0.1", prosody.c2s_port)


async def test_a_client_message_reaches_the_component_inbound(prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            assert component.connected
            async with client(prosody) as peter:
                await peter.send_message(JOHN, "hello john")
                stanza = await next_inbound(component)
            nursery.cancel_scope.cancel()
    assert stanza.get("to") == JOHN
    assert stanza.get("from", "").startswith(PETER + "/")
    assert stanza.get("type") == "chat"
    assert body_of(stanza) == "hello john"  # children are in jabber:client too


async def test_the_component_sends_as_a_contact_jid(prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            async with client(prosody) as peter:
                await component.send([chat("hello peter")])
                received = await peter.next_message()
            nursery.cancel_scope.cancel()
    assert (received.sender, received.type, received.body) == (JOHN, "chat", "hello peter")
    stats = component.statistics()
    assert (stats.connects, stats.sent, stats.queued, stats.dropped) == (1, 1, 0, 0)


async def test_iqs_reach_the_component_and_slixmpp_answers_nothing(
        prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            async with client(prosody) as peter:
                await peter.send_raw(
                    f"<iq type='get' id='disco1' to='{JOHN}'>"
                    "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
                iq = await next_inbound(component, "iq")
                assert (iq.get("id"), iq.get("type")) == ("disco1", "get")
                reply = Element(f"{{{CLIENT_NS}}}iq", {
                    "type": "result", "id": "disco1", "from": JOHN, "to": iq.get("from", "")})
                SubElement(reply, "{http://jabber.org/protocol/disco#info}query")
                await component.send([reply])
                # the adapter's answer is the only one: slixmpp sent no error of its own first
                answer = await peter.next_stanza("iq")
            nursery.cancel_scope.cancel()
    assert (answer.id, answer.type, answer.sender) == ("disco1", "result", JOHN)


async def test_prosody_restart_reconnects_and_flushes_what_was_queued(
        prosody: ProsodyInstance) -> None:
    calls = ConnectedCalls()
    component = make_component(prosody, on_connected=calls)
    sent: list[str] = []

    async def send(*bodies: str) -> None:
        await component.send([chat(body) for body in bodies])
        sent.extend(bodies)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            await calls.wait_for(1)
            async with client(prosody) as peter:
                await send("before")
                assert (await peter.next_message()).body == "before"

            await prosody.stop()
            await component.wait_disconnected()
            async with trio.open_nursery() as senders:
                senders.start_soon(send, "down-1", "down-2")
                senders.start_soon(send, "down-3")
                await trio.testing.wait_all_tasks_blocked()
                assert component.statistics().queued == 3
                assert sent == ["before"]  # nothing is written while down
                await prosody.start()
                await component.wait_connected()
            # every send() returned normally: written after the reconnect
            assert sorted(sent) == ["before", "down-1", "down-2", "down-3"]
            await calls.wait_for(2)

            async with client(prosody) as peter:
                bodies = [(await peter.next_message()).body for _ in range(3)]
                assert sorted(bodies) == ["down-1", "down-2", "down-3"]
                assert bodies.index("down-1") < bodies.index("down-2")  # one send keeps order
                await send("after")  # the next one is "after": nothing was duplicated
                assert (await peter.next_message()).body == "after"
                await peter.send_message(JOHN, "back")
                assert body_of(await next_inbound(component)) == "back"
            nursery.cancel_scope.cancel()
    stats = component.statistics()
    assert (stats.connects, stats.reconnects, stats.sent, stats.dropped) == (2, 1, 5, 0)
    assert calls.count == 2


async def test_a_stopped_component_makes_prosody_bounce(prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            nursery.cancel_scope.cancel()
        assert not component.connected
        async with client(prosody) as peter:
            await peter.send_message(JOHN, "anyone there?")
            bounce = await peter.next_message()
    assert (bounce.type, bounce.sender) == ("error", JOHN)
    assert (bounce.error_type, bounce.error_condition) == ("wait", "remote-server-timeout")


async def test_a_restarted_component_accepts_traffic_again(prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(20):
        for round_ in range(2):  # run() may be called again, as a supervisor restart does
            async with trio.open_nursery() as nursery:
                await nursery.start(component.run)
                async with client(prosody) as peter:
                    await peter.send_message(JOHN, f"round {round_}")
                    assert body_of(await next_inbound(component)) == f"round {round_}"
                nursery.cancel_scope.cancel()
    assert component.statistics().received >= 2


async def test_queue_bound_and_deadline_raise_component_unavailable(
        prosody: ProsodyInstance) -> None:
    component = make_component(prosody, queue_limit=2, queue_deadline=0.5)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            await prosody.stop()
            await component.wait_disconnected()
            errors: list[ComponentUnavailable] = []

            async def send_and_record(*bodies: str) -> None:
                try:
                    await component.send([chat(body) for body in bodies])
                except ComponentUnavailable as exc:
                    errors.append(exc)

            async with trio.open_nursery() as senders:
                senders.start_soon(send_and_record, "a", "b")
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(ComponentUnavailable) as full:
                    await component.send([chat("c")])  # the queue holds 2: refused at once
                assert full.value.reason == "queue_full" and full.value.retryable
            # the first send waited its deadline, then gave up; nothing stays queued
            assert [e.reason for e in errors] == ["deadline"]
            stats = component.statistics()
            assert (stats.queued, stats.dropped, stats.sent) == (0, 3, 0)

            await prosody.start()
            await component.wait_connected()
            async with client(prosody) as peter:
                await component.send([chat("d")])
                assert (await peter.next_message()).body == "d"  # the expired ones never went
            nursery.cancel_scope.cancel()


async def test_stanzas_prosody_would_reject_are_refused_before_sending(
        prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            with pytest.raises(InvalidStanza, match="invalid-from"):
                await component.send([chat("x", sender="john@widget.localhost")])
            with pytest.raises(InvalidStanza, match="without 'to'"):
                await component.send([Element("message", {"from": JOHN})])
            with pytest.raises(InvalidStanza, match="not a message"):
                await component.send([Element("{jabber:client}handshake", {"to": PETER})])
            with pytest.raises(InvalidStanza, match="exceeds"):
                await component.send([chat("x" * 300_000)])
            # nothing was sent: the stream is still up and works
            async with client(prosody) as peter:
                await component.send([chat("still here", sender=f"{COMPONENT}")])
                received = await peter.next_message()
            nursery.cancel_scope.cancel()
    assert (received.sender, received.body) == (COMPONENT, "still here")
    assert component.statistics().connects == 1


async def test_a_wrong_secret_is_a_clear_refusal(prosody: ProsodyInstance) -> None:
    component = make_component(prosody, secret="wrong")
    with trio.fail_after(20), pytest.raises(ComponentRefused, match="not-authorized"):
        await component.run()  # a start failure: it never connects, never retries


async def test_no_server_is_a_start_failure_within_start_timeout(
        prosody: ProsodyInstance) -> None:
    await prosody.stop()
    component = make_component(prosody, start_timeout=0.5)
    with trio.fail_after(20), pytest.raises(ComponentUnavailable, match=r"within 0\.5 s"):
        await component.run()
    assert component.statistics().attempts >= 2


async def test_500_inbound_stanzas_cross_in_few_batches(prosody: ProsodyInstance) -> None:
    component = make_component(prosody)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            async with client(prosody) as peter:
                before = component.statistics()
                await peter.send_messages(JOHN, [f"m{i}" for i in range(500)])
                bodies: list[str | None] = []
                while len(bodies) < 500:
                    bodies.extend(body_of(s) for s in await component.inbound.receive())
            after = component.statistics()
            nursery.cancel_scope.cancel()
    assert bodies == [f"m{i}" for i in range(500)]
    assert after.received - before.received == 500
    crossings = after.inbound_batches - before.inbound_batches
    assert crossings <= 100, crossings  # far fewer thread wake-ups than stanzas


async def test_teardown_leaves_no_warnings_or_loop_errors(
        prosody: ProsodyInstance, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    component = make_component(prosody)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            async with client(prosody) as peter:
                await component.send([chat("bye")])
                await peter.next_message()
            nursery.cancel_scope.cancel()
    gc.collect()  # XMLStream.__del__ and destroyed pending tasks would complain here
    noisy = [r for r in caplog.records
             if r.name.startswith(("asyncio", "interlink.xmpp.bridge", "slixmpp"))]
    assert noisy == []
