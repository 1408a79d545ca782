"""What the Slack adapter's parts report to its ``AdapterStats`` (issue #13 item 6), against
the sandbox over real HTTP and websockets: Socket Mode's connection state and reconnects,
de-duplication hits and malformed input on both transports, 429s and rate-limit waits in
the Web API client's pacing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, serve_websocket

from adapters.slack._pacing import Pacer
from adapters.slack._socket_mode import LinkDisabledError
from adapters.slack._views import EventsBody
from adapters.slack.sandbox import Sandbox
from engine import UNKNOWN_TYPE, AdapterStats, Message

from ..slack_sandbox._kit import APP, GENERAL, make_seed, running
from ._federation import JOHN_ADDRESS, PETER_ADDRESS, slack_federation
from .test_adapter import open_conversation
from .test_inbound_http import RecordingHandler, bare_app, event_body, post_message, signed
from .test_socket_mode import connected, make_client, opener, settings
from .test_webapi import BOT_TOKEN, POST, SANDBOX, TEAM, client_for


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def test_socket_mode_reports_its_state_and_a_reconnect_after_a_drop(
        http: httpx.AsyncClient) -> None:
    stats = AdapterStats("slack")
    handler = RecordingHandler()
    async with running(make_seed(), settings=settings(ack_timeout=0.5)) as sandbox:
        client = make_client(opener(http, sandbox), handler, adapter_stats=stats)
        assert stats.connections == {}
        async with connected(client):
            assert stats.connections == {"socket-mode": "connected"}
            assert stats.reconnects == {}
            assert sandbox.close_socket_connections(APP) == 1
            await post_message(http, sandbox, "after the drop")
            await handler.wait_taken(1)  # came over the new connection
            assert stats.connections == {"socket-mode": "connected"}
            assert stats.reconnects == {"socket-mode": 1}
            assert client.stats.reconnects == 1
        assert stats.connections == {"socket-mode": "disconnected"}


async def test_socket_mode_counts_a_redelivery_it_answers_from_the_deduplicator(
        http: httpx.AsyncClient) -> None:
    """The handler takes its time: Slack (the sandbox) gives up waiting for the ack and
    sends the envelope again, which is acked without calling the handler: a hit."""
    stats = AdapterStats("slack")
    platform: list[Sandbox] = []

    async def slow(body: EventsBody, seen: int) -> None:
        await platform[0].wait_for_delivery(lambda r: r.id == body.event_id and not r.ok)

    handler = RecordingHandler(slow)
    async with running(make_seed(), settings=settings(ack_timeout=0.5)) as sandbox:
        platform.append(sandbox)
        client = make_client(opener(http, sandbox), handler, adapter_stats=stats,
                             connection="socket-1")
        async with connected(client):
            await post_message(http, sandbox, "slow to take")
            [body] = await handler.wait_taken(1)
            await sandbox.wait_for_delivery(lambda r: r.id == body.event_id and r.ok)
            assert handler.calls == [body.event_id]
        assert stats.dedupe_hits == 1 == client.stats.duplicates
        assert stats.connections == {"socket-1": "disconnected"}


async def test_socket_mode_counts_malformed_frames_and_envelopes() -> None:
    async def server(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.send_message(json.dumps({"type": "hello", "num_connections": 1}))
            await ws.send_message("not json at all")
            await ws.send_message(json.dumps({"envelope_id": "e1", "type": "events_api",
                                              "payload": "nonsense"}))
            await ws.get_message()  # its ack
            await ws.send_message(json.dumps({"type": "disconnect",
                                              "reason": "link_disabled"}))
            await ws.get_message()  # until the client closes
        except ConnectionClosed:
            pass

    stats = AdapterStats("slack")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            scripted: WebSocketServer = await nursery.start(serve_websocket, server,
                                                            "127.0.0.1", 0, None)

            async def open_url() -> str:
                return f"ws://127.0.0.1:{scripted.port}/link/?ticket=t"

            client = make_client(open_url, RecordingHandler(), adapter_stats=stats)
            with pytest.raises(LinkDisabledError):
                await client.run()
            nursery.cancel_scope.cancel()
    assert stats.inbound == {(UNKNOWN_TYPE, "malformed"): 2}
    assert stats.connections == {"socket-mode": "disconnected"}
    assert stats.reconnects == {}


async def test_the_events_api_counts_dedupe_hits_and_malformed_bodies() -> None:
    stats = AdapterStats("slack")
    async with bare_app(adapter_stats=stats) as (app, handler, http):
        body = msgspec.json.encode(event_body("Ev0ONCE"))
        for _ in range(3):  # Slack's retries of a delivery whose ack it did not see
            assert (await http.post("/slack/events", content=body,
                                    headers=signed(body))).status_code == 200
        assert handler.calls == ["Ev0ONCE"]
        garbage = b"{not json"
        assert (await http.post("/slack/events", content=garbage,
                                headers=signed(garbage))).status_code == 400
        no_id = msgspec.json.encode(event_body(""))
        assert (await http.post("/slack/events", content=no_id,
                                headers=signed(no_id))).status_code == 400
        forged = await http.post("/slack/events", content=body,
                                 headers=signed(body, secret="wrong"))
        assert forged.status_code == 401  # not the platform's input: not counted
    assert stats.dedupe_hits == 2
    assert stats.inbound == {(UNKNOWN_TYPE, "malformed"): 2}
    assert app.statistics().duplicates == 2


async def test_a_429_on_chat_post_message_is_counted_and_waited_out() -> None:
    stats = AdapterStats("slack")
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        client.pacer.adapter_stats = stats  # what the adapter does when it runs
        sandbox.inject_failures(POST, status=429, error="ratelimited", retry_after=1)
        posted = await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                                   args={"channel": GENERAL, "text": "after the 429"})
        assert posted["ok"]
        assert stats.rate_limited == 1 == client.statistics().ratelimited
        assert stats.rate_limit_wait >= 1.0  # Retry-After: 1, waited in the key's turn
        assert stats.rate_limit_wait <= client.pacer.waited


def test_a_pacer_reports_to_nobody_until_given_the_adapters_stats() -> None:
    pacer = Pacer()
    assert pacer.adapter_stats.name == ""  # its own: read by nobody


async def test_a_dropped_socket_mode_connection_is_a_reconnect_and_connected_again() -> None:
    async with slack_federation() as fed:
        stats = fed.engine.adapter_stats("slack")
        channel = await open_conversation(fed)
        assert stats.connections == {"socket-mode": "connected"}
        assert fed.sandbox.close_socket_connections(APP) == 1
        await fed.act("xoxp-john", "chat.postMessage", channel=channel, text="after the drop")
        event = await fed.next_event()
        assert isinstance(event, Message) and event.text == "after the drop"
        assert stats.connections == {"socket-mode": "connected"}
        assert stats.reconnects == {"socket-mode": 1}
        assert stats.inbound[("im", "accepted")] == 1
        assert stats.outbound[("im", "delivered")] == 1  # open_conversation's hello


async def test_an_injected_429_on_chat_post_message_is_counted_and_waited() -> None:
    async with slack_federation() as fed:
        stats = fed.engine.adapter_stats("slack")
        await open_conversation(fed)
        fed.sandbox.inject_failures("chat.postMessage", status=429, error="ratelimited",
                                    retry_after=1)
        started = trio.current_time()
        await fed.widget.send(Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                             body="after the 429"))
        await fed.settle()
        assert trio.current_time() - started >= 1.0
        assert stats.rate_limited == 1
        assert stats.rate_limit_wait >= 1.0
        assert stats.outbound[("im", "delivered")] == 2
