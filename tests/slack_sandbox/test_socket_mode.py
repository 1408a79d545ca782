"""Socket Mode: Slack's own SocketModeClient, and the protocol frame by frame."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from slack_sdk import WebClient
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from ._kit import APP, BOT, GENERAL, JOHN, fast_settings, in_thread, make_seed, running


async def test_socket_mode_client_receives_acks_and_survives_refresh_requested() -> None:
    async with running(make_seed(), settings=fast_settings(ack_timeout=3.0)) as sandbox:
        trio_token = trio.lowlevel.current_trio_token()
        got_send, got = trio.open_memory_channel[tuple[str, Any]](100)

        def listener(client: BaseSocketModeClient, request: SocketModeRequest) -> None:
            answer = {"text": "Interlink is here"} if request.type == "slash_commands" else None
            client.send_socket_mode_response(SocketModeResponse(request.envelope_id, answer))
            trio.from_thread.run_sync(got_send.send_nowait, (request.type, request.payload),
                                      trio_token=trio_token)

        client = SocketModeClient(app_token="xapp-interlink",
                                  web_client=WebClient(base_url=sandbox.api_url))
        client.socket_mode_request_listeners.append(listener)
        john = WebClient(token="xoxp-john", base_url=sandbox.api_url)
        try:
            await in_thread(client.connect)
            await sandbox.wait_socket_connections(APP)
            await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="before"))
            kind, payload = await got.receive()
            assert (kind, payload["type"], payload["event"]["text"]) == (
                "events_api", "event_callback", "before")
            delivered = await sandbox.wait_for_delivery(
                lambda r: r.id == payload["event_id"] and r.ok)
            assert delivered.transport == "socket"

            reply = await sandbox.run_command("xoxp-john", "/interlink", "list",
                                              channel=GENERAL)
            assert reply.ok and reply.response == {"text": "Interlink is here"}
            kind, payload = await got.receive()
            assert (kind, payload["command"], payload["text"]) == ("slash_commands",
                                                                   "/interlink", "list")
            assert sandbox.ephemeral_messages(JOHN)[-1]["text"] == "Interlink is here"

            assert sandbox.request_socket_refresh(APP) == 1
            await sandbox.wait_socket_connections(APP)  # the client reconnected
            await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="after"))
            kind, payload = await got.receive()
            assert payload["event"]["text"] == "after"
            await sandbox.wait_for_delivery(lambda r: r.id == payload["event_id"] and r.ok)
        finally:
            # the server closes first, so the client's blocked read ends at once
            client.auto_reconnect_enabled = False
            sandbox.close_socket_connections(APP)
            await in_thread(client.close)


@asynccontextmanager
async def open_websocket_url(url: str) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client whose TCP stream is closed however the server ends it.

    (trio-websocket's own ``open_websocket_url`` leaves the socket open when the
    server closes first or refuses the handshake.)
    """
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, parts.hostname,
                                          f"{parts.path}?{parts.query}")
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()
    except ExceptionGroup as group:  # a refused handshake fails the reader task
        rejected = group.subgroup(ConnectionRejected)
        if rejected is None:
            raise
        raise rejected.exceptions[0] from None
    finally:
        await stream.aclose()


async def open_socket_url(sandbox_api: str, token: str = "xapp-interlink") -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.post(sandbox_api + "apps.connections.open",
                                 headers={"Authorization": f"Bearer {token}"})
        url: str = answer.json()["url"]
        return url


async def test_the_protocol_hello_envelopes_redelivery_and_disconnect() -> None:
    async with running(make_seed(), settings=fast_settings(ack_timeout=1.0)) as sandbox:
        url = await open_socket_url(sandbox.api_url)
        assert url.startswith(sandbox.url.replace("http://", "ws://") + "/link/?ticket=")
        john = WebClient(token="xoxp-john", base_url=sandbox.api_url)
        async with open_websocket_url(url) as ws:
            hello = json.loads(await ws.get_message())
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            assert hello["connection_info"] == {"app_id": APP}
            assert set(hello["debug_info"]) >= {"host", "approximate_connection_time"}

            await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="ping"))
            first = json.loads(await ws.get_message())
            assert set(first) == {"envelope_id", "type", "payload", "accepts_response_payload",
                                  "retry_attempt", "retry_reason"}
            assert (first["type"], first["accepts_response_payload"], first["retry_attempt"],
                    first["retry_reason"]) == ("events_api", False, 0, "")
            assert first["payload"]["event"]["text"] == "ping"
            # no ack: Slack sends it again
            second = json.loads(await ws.get_message())
            assert (second["retry_attempt"], second["retry_reason"]) == (1, "timeout")
            assert second["payload"]["event_id"] == first["payload"]["event_id"]
            assert second["envelope_id"] != first["envelope_id"]
            await ws.send_message(json.dumps({"envelope_id": second["envelope_id"]}))
            acked = await sandbox.wait_for_delivery(lambda r: r.ok)
            assert (acked.attempt, acked.id) == (1, first["payload"]["event_id"])

            async with trio.open_nursery() as nursery:
                replies: list[Any] = []

                async def command() -> None:
                    replies.append(await sandbox.run_command(
                        "xoxp-john", "/interlink", "add peter@widget.com", channel=GENERAL))

                nursery.start_soon(command)
                envelope = json.loads(await ws.get_message())
                assert (envelope["type"], envelope["accepts_response_payload"]) == (
                    "slash_commands", True)
                assert envelope["payload"]["user_id"] == JOHN
                await ws.send_message(json.dumps({
                    "envelope_id": envelope["envelope_id"],
                    "payload": {"response_type": "in_channel", "text": "Peter added"}}))
            assert replies[0].ok
            last = sandbox.messages(GENERAL)[-1]
            assert (last["text"], last["user"], last["bot_id"]) == ("Peter added", BOT,
                                                                     "B0INTERLINK")
            # the in_channel answer is a message: the app hears its own bot
            echoed = json.loads(await ws.get_message())
            assert echoed["payload"]["event"]["bot_id"] == "B0INTERLINK"
            await ws.send_message(json.dumps({"envelope_id": echoed["envelope_id"]}))

            async with httpx.AsyncClient(trust_env=False) as http:
                refresh = await http.post(sandbox.url + "/sandbox/socket_refresh",
                                          headers={"Authorization": "Bearer xapp-interlink"})
                assert refresh.json() == {"ok": True, "connections": 1}
            disconnect = json.loads(await ws.get_message())
            assert disconnect["type"] == "disconnect"
            assert disconnect["reason"] == "refresh_requested"
            with pytest.raises(ConnectionClosed):
                await ws.get_message()  # closed by the sandbox after the grace period
        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(url):
                pass  # URLs are single-use


async def test_envelopes_wait_for_a_connection() -> None:
    async with running(make_seed(), settings=fast_settings(ack_timeout=3.0)) as sandbox:
        john = WebClient(token="xoxp-john", base_url=sandbox.api_url)
        await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="early"))
        async with open_websocket_url(await open_socket_url(sandbox.api_url)) as ws:
            assert json.loads(await ws.get_message())["type"] == "hello"
            envelope = json.loads(await ws.get_message())
            assert envelope["payload"]["event"]["text"] == "early"
            await ws.send_message(json.dumps({"envelope_id": envelope["envelope_id"]}))
            await sandbox.wait_for_delivery(lambda r: r.ok)
