"""The Slack adapter's Socket Mode client against the sandbox over real websockets.

Frames the sandbox cannot send (``link_disabled``, ``interactive``, garbage,
oversized messages) come from a scripted trio-websocket server at the end.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, serve_websocket

from adapters.slack._socket_mode import LinkDisabledError, SocketModeClient
from adapters.slack._views import EventsBody
from adapters.slack.sandbox import Sandbox, SandboxSettings
from adapters.slack.sandbox._ratelimit import RateLimitSettings
from engine import Deduplicator, UnavailableError
from tests.slack_sandbox._kit import (
    APP,
    GENERAL,
    JOHN,
    SECRET,
    fast_settings,
    make_seed,
    running,
)

from .test_inbound_http import HELP, RecordingHandler, event_of, post_message


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def settings(**timing: Any) -> SandboxSettings:
    """Fast delivery clock and no rate limits (tests post bursts into one channel)."""
    return msgspec.structs.replace(fast_settings(**timing),
                                   rate_limits=RateLimitSettings(enabled=False))


def opener(http: httpx.AsyncClient, sandbox: Sandbox, token: str = "xapp-interlink"
           ) -> Callable[[], Awaitable[str]]:
    """``apps.connections.open`` on the sandbox, as the adapter's Web API client would call it."""
    async def open_url() -> str:
        try:
            answer = await http.post(sandbox.api_url + "apps.connections.open",
                                     headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            raise UnavailableError("apps.connections.open failed") from exc
        body = answer.json()
        if not body.get("ok"):
            raise RuntimeError(f"apps.connections.open: {body.get('error')}")
        url: str = body["url"]
        return url
    return open_url


def make_client(open_url: Callable[[], Awaitable[str]], handler: RecordingHandler,
                **options: Any) -> SocketModeClient:
    defaults: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05,
                                "rng": random.Random(6)}
    return SocketModeClient(open_url=open_url, handler=handler, dedupe=Deduplicator(),
                            **{**defaults, **options})


@asynccontextmanager
async def connected(client: SocketModeClient) -> AsyncIterator[SocketModeClient]:
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()


async def wait_acked(sandbox: Sandbox, event_ids: list[str]) -> None:
    """Until the sandbox has an acked delivery of every one of ``event_ids``."""
    for event_id in event_ids:
        await sandbox.wait_for_delivery(lambda r, e=event_id: r.id == e and r.ok)  # type: ignore[misc]


async def test_hello_then_events_are_handled_once_and_acked(http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    async with running(make_seed(), settings=settings(ack_timeout=2.0)) as sandbox:
        client = make_client(opener(http, sandbox), handler)
        async with connected(client):
            assert client.connected and sandbox.socket_connections(APP) == 1
            for text in ("one", "two", "three"):
                await post_message(http, sandbox, text)
            taken = await handler.wait_taken(3)
            assert [event_of(b).text for b in taken] == ["one", "two", "three"]
            assert {b.type for b in taken} == {"event_callback"}
            await wait_acked(sandbox, handler.taken_ids())
            assert [r.attempt for r in sandbox.deliveries.records] == [0, 0, 0]
            assert {r.transport for r in sandbox.deliveries.records} == {"socket"}
            assert handler.calls == handler.taken_ids()
            stats = client.statistics()
            assert (stats.connections, stats.reconnects, stats.received, stats.taken,
                    stats.acks, stats.duplicates) == (1, 0, 3, 3, 3, 0)


async def test_slash_command_is_answered_in_the_ack_payload(http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    async with running(make_seed(), settings=settings(ack_timeout=2.0)) as sandbox, \
            connected(make_client(opener(http, sandbox), handler)) as client:
            reply = await sandbox.run_command("xoxp-john", "/interlink", "help",
                                              channel=GENERAL)
            assert reply.ok and reply.response == HELP
            [form] = handler.commands
            assert (form["command"], form["text"], form["user_id"]) == ("/interlink", "help",
                                                                        JOHN)
            assert sandbox.ephemeral_messages(JOHN)[-1]["text"] == HELP["text"]
            assert (client.stats.commands, client.stats.acks) == (1, 1)


async def test_a_refresh_mid_stream_loses_and_duplicates_nothing(http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    texts = [f"message {n}" for n in range(50)]
    async with running(make_seed(), settings=settings(ack_timeout=1.0)) as sandbox, \
            connected(make_client(opener(http, sandbox), handler)) as client:
            for n, text in enumerate(texts):
                if n == 25:
                    assert sandbox.request_socket_refresh(APP) == 1
                await post_message(http, sandbox, text)
            taken = await handler.wait_taken(50)
            await wait_acked(sandbox, handler.taken_ids())
            assert [event_of(b).text for b in taken] == texts  # in order, each once
            assert len(handler.calls) == 50
            assert client.stats.disconnects == 1 and client.stats.reconnects == 1
            assert client.stats.failed_attempts == 0  # a refresh is not a failure


async def test_network_loss_reconnects_and_loses_and_duplicates_nothing(
        http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    texts = [f"message {n}" for n in range(20)]
    async with running(make_seed(), settings=settings(ack_timeout=0.5)) as sandbox, \
            connected(make_client(opener(http, sandbox), handler)) as client:
            for n, text in enumerate(texts):
                if n == 10:
                    assert sandbox.close_socket_connections(APP) == 1
                await post_message(http, sandbox, text)
            taken = await handler.wait_taken(20)
            await wait_acked(sandbox, handler.taken_ids())
            assert sorted(event_of(b).text for b in taken) == sorted(texts)
            assert sorted(handler.calls) == sorted(set(handler.calls))  # none twice
            assert len(handler.calls) == 20
            await client.wait_connected()
            assert client.stats.failed_attempts >= 1 and client.stats.reconnects >= 1


async def test_unavailable_handler_means_no_ack_and_a_later_redelivery(
        http: httpx.AsyncClient) -> None:
    async def behaviour(body: EventsBody, seen: int) -> None:
        if seen == 1:
            raise UnavailableError("mailbox full")

    handler = RecordingHandler(behaviour)
    async with running(make_seed(), settings=settings(ack_timeout=0.5)) as sandbox, \
            connected(make_client(opener(http, sandbox), handler)) as client:
            await post_message(http, sandbox, "later")
            [body] = await handler.wait_taken(1)
            event_id = body.event_id
            acked = await sandbox.wait_for_delivery(lambda r: r.id == event_id and r.ok)
            [missed] = [r for r in sandbox.deliveries.records if not r.ok]
            assert (missed.attempt, missed.reason, acked.attempt) == (0, "timeout", 1)
            assert handler.calls == [event_id, event_id]
            assert (client.stats.unavailable, client.stats.taken, client.stats.acks) == (1, 1, 1)


async def test_too_many_websockets_backs_off_until_a_slot_frees(http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    seed = make_seed()
    async with running(seed, settings=msgspec.structs.replace(
            settings(ack_timeout=2.0), max_socket_connections=1)) as sandbox:
        first = make_client(opener(http, sandbox), RecordingHandler())
        attempts = 0
        refused = trio.Event()
        open_url = opener(http, sandbox)

        async def counting_open_url() -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 2:  # the first attempt was turned away
                refused.set()
            return await open_url()

        second = make_client(counting_open_url, handler)
        async with trio.open_nursery() as nursery:
            first_scope = trio.CancelScope()

            async def run_first(*, task_status: trio.TaskStatus[None]) -> None:
                with first_scope:
                    await first.run(task_status=task_status)

            await nursery.start(run_first)
            nursery.start_soon(second.run)
            await refused.wait()
            assert second.stats.disconnects >= 1 and not second.connected
            first_scope.cancel()  # the slot frees
            await second.wait_connected()
            await post_message(http, sandbox, "to the second")
            [body] = await handler.wait_taken(1)
            assert event_of(body).text == "to the second"
            nursery.cancel_scope.cancel()


async def test_one_stuck_conversation_does_not_delay_another(http: httpx.AsyncClient) -> None:
    """Envelopes of different conversations are handled concurrently; within one, in order."""
    release = trio.Event()

    async def stall_general(body: EventsBody, seen: int) -> None:
        if event_of(body).channel == GENERAL:
            await release.wait()

    handler = RecordingHandler(stall_general)
    async with running(make_seed(), settings=settings(ack_timeout=2.0)) as sandbox:
        client = make_client(opener(http, sandbox), handler)
        async with connected(client):
            await post_message(http, sandbox, "stuck", channel=GENERAL)
            await handler.wait_calls(1)  # general's lane is inside the handler
            await post_message(http, sandbox, "queued", channel=GENERAL)
            await post_message(http, sandbox, "elsewhere", channel=SECRET)
            [body] = await handler.wait_taken(1)
            assert event_of(body).text == "elsewhere"
            assert len(handler.calls) == 2  # "queued" waits behind "stuck" in its lane
            release.set()
            taken = await handler.wait_taken(3)
            assert [event_of(b).text for b in taken] == ["elsewhere", "stuck", "queued"]
            await wait_acked(sandbox, handler.taken_ids())
            assert [r.attempt for r in sandbox.deliveries.records] == [0, 0, 0]


async def test_backoff_grows_is_capped_and_gives_up(autojump_clock: trio.testing.MockClock
                                                    ) -> None:
    calls: list[float] = []

    async def unreachable() -> str:
        calls.append(trio.current_time())
        raise UnavailableError("Slack is down")

    client = make_client(unreachable, RecordingHandler(), backoff_initial=1.0,
                         backoff_max=4.0, backoff_jitter=0.0, max_failures=6)
    with pytest.raises(UnavailableError, match="6 connection attempts"):
        await client.run()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0, 4.0, 4.0])
    assert client.stats.failed_attempts == 6

    jittery = make_client(unreachable, RecordingHandler(), backoff_initial=1.0,
                          backoff_max=4.0, backoff_jitter=0.5, max_failures=6)
    delays = [jittery.backoff_delay(n) for n in range(1, 7)]
    for delay, base in zip(delays, [1.0, 2.0, 4.0, 4.0, 4.0, 4.0], strict=True):
        assert base * 0.5 <= delay <= base


async def test_a_permanent_open_url_error_stops_run(http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    async with running(make_seed(), settings=settings()) as sandbox:
        client = make_client(opener(http, sandbox, token="xapp-wrong"), handler)
        with pytest.raises(RuntimeError, match="invalid_auth"):
            await client.run()
        assert client.stats.connections == 0


# -- frames the sandbox cannot send -----------------------------------------------------------

async def test_frames_the_sandbox_cannot_send() -> None:
    """Interactive, unknown and malformed envelopes, garbage, too big a message, link_disabled."""
    acks: list[dict[str, Any]] = []
    connections = 0

    async def server(request: WebSocketRequest) -> None:
        nonlocal connections
        connections += 1
        ws = await request.accept()
        try:
            await ws.send_message(json.dumps({"type": "hello", "num_connections": 1}))
            if connections == 1:  # too big for the client: it closes and reconnects
                await ws.send_message("x" * 5000)
                await ws.get_message()
                return
            await ws.send_message("not json at all")
            await ws.send_message(json.dumps({"type": "surprise"}))
            for envelope in (
                    {"envelope_id": "e1", "type": "interactive", "payload": {"type": "shortcut"},
                     "accepts_response_payload": False},
                    {"envelope_id": "e2", "type": "mystery"},
                    {"envelope_id": "e3", "type": "events_api",
                     "payload": {"type": "event_callback", "event": {"type": "message"}}},
                    {"envelope_id": "e4", "type": "events_api", "payload": "nonsense"},
                    {"envelope_id": "e5", "type": "slash_commands", "payload": {"text": "x"}}):
                await ws.send_message(json.dumps(envelope))
                acks.append(json.loads(await ws.get_message()))
            await ws.send_message(json.dumps({"type": "disconnect",
                                              "reason": "link_disabled"}))
            await ws.get_message()  # until the client closes
        except ConnectionClosed:
            pass

    handler = RecordingHandler()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            scripted: WebSocketServer = await nursery.start(serve_websocket, server,
                                                            "127.0.0.1", 0, None)
            port = scripted.port

            async def open_url() -> str:
                return f"ws://127.0.0.1:{port}/link/?ticket=t"

            client = make_client(open_url, handler, max_message_bytes=4096)
            with pytest.raises(LinkDisabledError, match="link_disabled"):
                await client.run()
            nursery.cancel_scope.cancel()
    assert acks == [{"envelope_id": f"e{n}"} for n in range(1, 6)]
    assert handler.calls == [] and handler.commands == []
    stats = client.stats
    assert (stats.interactive, stats.unknown, stats.malformed, stats.oversized) == (1, 2, 4, 1)
    assert (stats.connections, stats.reconnects, stats.acks) == (2, 1, 5)
