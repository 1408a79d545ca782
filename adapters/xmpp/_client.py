"""A small XMPP client (slixmpp on its own asyncio thread) with a trio API: what
``interlink demo --script`` and the tests use to act as an XMPP user.

``open_client(jid, password, host, port)`` logs in over plaintext (the test
server allows it), sends initial presence, and returns once the server has
reflected that presence back: from then on, messages to the bare JID reach
this client. Everything the client receives is kept, in order, as
:class:`Received` records (built on the asyncio thread, so trio never touches
slixmpp objects) and read with :meth:`TestClient.next_message`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from slixmpp.clientxmpp import ClientXMPP
from slixmpp.jid import JID
from slixmpp.types import MessageTypes

from adapters.xmpp._bridge import AsyncioThread, InboundBridge, close_stream

PLAINTEXT_CONFIG = {"feature_mechanisms": {"unencrypted_plain": True, "unencrypted_scram": True}}


@dataclass(frozen=True, slots=True)
class Received:
    """One stanza the test client received (only what tests look at)."""

    kind: str  # message | presence | iq
    sender: str
    to: str
    type: str
    id: str
    body: str
    error_type: str
    error_condition: str
    delayed: bool  # carries a XEP-0203 <delay/> (offline storage)
    xml: str = ""  # the whole stanza, serialised (for extensions: oob, reactions, ...)


def _received(stanza: Any) -> Received:
    xml = stanza.xml
    kind = xml.tag.rpartition("}")[2]
    error_type = error_condition = ""
    if stanza["type"] == "error":
        error_type = stanza["error"]["type"] or ""
        error_condition = stanza["error"]["condition"] or ""
    body = ""
    if kind == "message":
        body = stanza["body"] or ""
    delayed = xml.find("{urn:xmpp:delay}delay") is not None
    return Received(kind=kind, sender=str(stanza["from"]), to=str(stanza["to"]),
                    type=str(stanza["type"] or ""), id=str(stanza["id"] or ""), body=body,
                    error_type=str(error_type), error_condition=str(error_condition),
                    delayed=delayed, xml=str(stanza))


class _ClientSide:
    """The slixmpp client; lives on the bridge thread."""

    def __init__(self, jid: str, password: str, host: str, port: int,
                 inbound: InboundBridge[Received]) -> None:
        self.jid, self.password, self.host, self.port = jid, password, host, port
        self.inbound = inbound
        self.xmpp: ClientXMPP | None = None
        self.ready: asyncio.Future[bool] | None = None
        self.recording = False  # from session start: bind/session iqs are not kept

    async def connect(self, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        # plaintext only: a bare TLS context avoids loading the system CA bundle (~0.25 s)
        xmpp = ClientXMPP(self.jid, self.password, plugin_config=PLAINTEXT_CONFIG,
                          ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        xmpp.enable_starttls = False
        xmpp.enable_direct_tls = False
        xmpp.enable_plaintext = True
        xmpp.whitespace_keepalive = False
        xmpp.add_filter("in", self._take)
        xmpp.add_event_handler("session_start", self._session_start)
        xmpp.add_event_handler("failed_auth", lambda _: self._settle(False))
        xmpp.add_event_handler("disconnected", lambda _: self._settle(False))
        self.xmpp = xmpp
        xmpp.connect(self.host, self.port)
        async with asyncio.timeout(timeout):
            ok = await self.ready
        if not ok:
            raise ConnectionError(f"test client {self.jid} could not log in")
        return str(xmpp.boundjid.full)

    def _session_start(self, _: object) -> None:
        assert self.xmpp is not None
        self.recording = True
        self.xmpp.send_presence()

    def _settle(self, value: bool) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(value)

    def _take(self, stanza: Any) -> Any:
        if not self.recording or stanza.xml.tag.rpartition("}")[2] not in (
                "message", "presence", "iq"):
            return stanza
        record = _received(stanza)
        xmpp = self.xmpp
        if (record.kind == "presence" and xmpp is not None
                and record.sender == str(xmpp.boundjid.full) and record.type in ("", "available")):
            self._settle(True)  # our initial presence came back: the server routes to us now
        self.inbound.put(record)
        return stanza

    async def send_messages(self, to: str, bodies: list[str], mtype: MessageTypes) -> None:
        assert self.xmpp is not None
        for body in bodies:
            self.xmpp.send_message(mto=JID(to), mbody=body, mtype=mtype)

    async def send_raw(self, data: str) -> None:
        assert self.xmpp is not None
        self.xmpp.send_raw(data)

    async def close(self, timeout: float) -> None:
        if self.xmpp is not None:
            await close_stream(self.xmpp, timeout)


class TestClient:
    """The trio face of one logged-in test client."""

    __test__ = False  # not a pytest test class

    def __init__(self, side: _ClientSide, thread: AsyncioThread, full_jid: str,
                 received: trio.MemoryReceiveChannel[list[Received]]) -> None:
        self._side = side
        self._thread = thread
        self.full_jid = full_jid
        self._received = received
        self._buffer: list[Received] = []

    async def send_message(self, to: str, body: str, *, mtype: MessageTypes = "chat") -> None:
        await self._thread.run(self._side.send_messages, to, [body], mtype)

    async def send_messages(self, to: str, bodies: list[str], *,
                            mtype: MessageTypes = "chat") -> None:
        """Send many messages in one thread crossing (they leave back to back)."""
        await self._thread.run(self._side.send_messages, to, bodies, mtype)

    async def send_raw(self, data: str) -> None:
        await self._thread.run(self._side.send_raw, data)

    async def next_stanza(self, kind: str = "message", *, timeout: float = 10.0) -> Received:
        """The next received stanza of ``kind`` (``"any"``: every kind); others are skipped."""
        with trio.fail_after(timeout):
            while True:
                while not self._buffer:
                    self._buffer.extend(await self._received.receive())
                record = self._buffer.pop(0)
                if kind in (record.kind, "any"):
                    return record

    async def next_message(self, *, timeout: float = 10.0) -> Received:
        return await self.next_stanza("message", timeout=timeout)


@asynccontextmanager
async def open_client(jid: str, password: str, host: str, port: int, *,
                      timeout: float = 10.0) -> AsyncIterator[TestClient]:
    async with AsyncioThread(f"test-client {jid}") as thread, trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel[list[Received]](1000)
        bridge = InboundBridge[Received](thread, send)
        nursery.start_soon(bridge.pump)
        side = _ClientSide(jid, password, host, port, bridge)
        try:
            with trio.fail_after(timeout + 1):
                full_jid = await thread.run(side.connect, timeout)
            yield TestClient(side, thread, full_jid, receive)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(timeout + 2):
                await thread.run(side.close, 2.0)
            nursery.cancel_scope.cancel()
