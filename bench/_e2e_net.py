"""The e2e suite's users: XMPP clients, a Slack person posting, a Slack app listening.

- :class:`XmppUser`: a lean XMPP client on trio (plaintext SASL PLAIN, bind, initial
  presence), one TCP stream per account. slixmpp's ``TestClient`` runs a thread per
  client; the suite logs in up to 2,000 accounts at once, so it speaks the few stanzas it
  needs itself. Received message bodies go to a callback.
- :class:`SlackPoster`: ``chat.postMessage`` through the sandbox's Web API with a token
  (a person's ``xoxp-``, or a bot's for the raw baseline), waiting out ``429`` as a Slack
  client must (``Retry-After``); with a :class:`PostPacer`, it first keeps to the
  modelled limits itself (per channel, per token's workspace), as a good Slack client
  does, so a sender is not held a whole second by a 429 another one caused.
- :class:`SocketModeListener`: an app's Socket Mode connection to the sandbox; acks each
  envelope and hands ``message`` events (channel, text) to a callback. The observer app
  sees what reaches Slack; in the raw baseline it also stands in for Interlink's app.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

log = logging.getLogger("bench.e2e")

_STREAM = "http://etherx.jabber.org/streams"
_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
_CLIENT = "jabber:client"
#: a 429's wait is bounded: a sandbox asking for longer is misconfigured
MAX_RETRY_AFTER_S = 30.0
#: a bucket holding this much has a token (float rounding after a timed sleep)
_ONE = 1.0 - 1e-9


class NetError(Exception):
    """A platform did not behave as the suite needs (login refused, API error)."""


class StanzaReader:
    """Top-level elements of an XML stream, fed in chunks (depth 1 under the stream);
    ``closed`` once the stream's own end tag came."""

    def __init__(self) -> None:
        self._parser: Any = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self.closed = False

    def feed(self, data: bytes) -> list[ET.Element]:
        self._parser.feed(data)
        found: list[ET.Element] = []
        for event, element in self._parser.read_events():
            if not isinstance(element, ET.Element):
                continue
            if event == "start":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    found.append(element)
                elif self._depth == 0:
                    self.closed = True  # </stream:stream>
        return found


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class XmppUser:
    """One logged-in account; ``on_body(body)`` is called for each chat message received."""

    def __init__(self, stream: trio.SocketStream, jid: str) -> None:
        self._stream = stream
        self.jid = jid
        self._send_lock = trio.StrictFIFOLock()
        self.received = 0

    @classmethod
    async def login(cls, host: str, port: int, jid: str, password: str) -> XmppUser:
        user, _, domain = jid.partition("@")
        stream = await trio.open_tcp_stream(host, port)
        try:
            reader = await cls._open(stream, domain)
            await cls._until(stream, reader, "features")
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            await stream.send_all(f"<auth xmlns='{_SASL}' mechanism='PLAIN'>{token}</auth>"
                                  .encode())
            answer = await cls._until(stream, reader, "success", "failure")
            if _local(answer.tag) != "success":
                raise NetError(f"{jid}: login refused")
            reader = await cls._open(stream, domain)
            await cls._until(stream, reader, "features")
            await stream.send_all(f"<iq type='set' id='bind'><bind xmlns='{_BIND}'>"
                                  f"<resource>bench</resource></bind></iq>".encode())
            await cls._until(stream, reader, "iq")
            await stream.send_all(b"<presence><priority>1</priority></presence>")
            # our own presence comes back once the server routes messages to us
            while True:
                element = await cls._until(stream, reader, "presence")
                if element.get("from", "").partition("/")[0] == jid:
                    break
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        client = cls(stream, jid)
        client._reader = reader
        return client

    _reader: StanzaReader

    @staticmethod
    async def _open(stream: trio.SocketStream, domain: str) -> StanzaReader:
        await stream.send_all(
            f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='{_CLIENT}' "
            f"xmlns:stream='{_STREAM}' version='1.0'>".encode())
        return StanzaReader()

    @staticmethod
    async def _until(stream: trio.SocketStream, reader: StanzaReader,
                     *names: str) -> ET.Element:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise NetError("the XMPP server closed the stream during login")
            for element in reader.feed(data):
                if _local(element.tag) in names:
                    return element

    async def pump(self, on_body: Callable[[str], object]) -> None:
        """Read stanzas until the stream ends; each message body goes to ``on_body``."""
        body_tag = f"{{{_CLIENT}}}body"
        while True:
            try:
                data = await self._stream.receive_some(262144)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            for element in self._reader.feed(data):
                if _local(element.tag) != "message":
                    continue
                body = element.find(body_tag)
                if body is not None and body.text:
                    self.received += 1
                    on_body(body.text)
                element.clear()

    async def send_message(self, to: str, body: str, stanza_id: str) -> None:
        async with self._send_lock:
            await self._stream.send_all(
                f"<message type='chat' to='{to}' id='{stanza_id}'><body>{escape(body)}</body>"
                f"</message>".encode())

    async def aclose(self) -> None:
        with trio.move_on_after(2) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.send_all(b"</stream:stream>")
        await trio.aclose_forcefully(self._stream)


class PostAnswer(msgspec.Struct, frozen=True):
    ok: bool
    error: str = ""


class PostPacer:
    """Token buckets for ``chat.postMessage`` as the sandbox keeps them: one per channel
    (``channel_per_s``, burst ``channel_burst``) and one per token (a person, or an app's
    bot in one workspace: ``workspace_per_s``, burst ``workspace_burst``). A post waits
    until both have a token and takes both at once. ``clock``: seconds (trio's)."""

    def __init__(self, *, channel_per_s: float, channel_burst: int, workspace_per_s: float,
                 workspace_burst: int,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._limits = {"channel": (channel_per_s, float(channel_burst)),
                        "token": (workspace_per_s, float(workspace_burst))}
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # tokens, at

    def _tokens(self, kind: str, key: str, now: float) -> float:
        rate, burst = self._limits[kind]
        tokens, at = self._buckets.get((kind, key), (burst, now))
        return min(burst, tokens + (now - at) * rate)

    def delay(self, token: str, channel: str) -> float:
        """Seconds until a post with ``token`` into ``channel`` may go (0: now)."""
        now = self._clock()
        return max(max(0.0, (_ONE - self._tokens(kind, key, now)) / self._limits[kind][0])
                   for kind, key in (("channel", channel), ("token", token)))

    def take(self, token: str, channel: str) -> None:
        now = self._clock()
        for kind, key in (("channel", channel), ("token", token)):
            self._buckets[(kind, key)] = (self._tokens(kind, key, now) - 1.0, now)

    async def wait(self, token: str, channel: str) -> None:
        """Until a post may go; then take its tokens (no checkpoint in between)."""
        while True:
            delay = self.delay(token, channel)
            if delay <= 0:
                self.take(token, channel)
                return
            await trio.sleep(delay)


class SlackPoster:
    """``chat.postMessage`` calls on one pooled keep-alive client, paced by ``pacer``
    when there is one."""

    def __init__(self, http: httpx.AsyncClient, api_url: str,
                 pacer: PostPacer | None = None) -> None:
        self._http = http
        self._api = api_url
        self._pacer = pacer
        self.ratelimited = 0
        self._decode = msgspec.json.Decoder(PostAnswer)

    async def post(self, token: str, channel: str, text: str, **extra: str) -> None:
        """Post, waiting out 429s (``Retry-After``, bounded); :class:`NetError` otherwise."""
        if self._pacer is not None:
            await self._pacer.wait(token, channel)
        body = msgspec.json.encode({"channel": channel, "text": text, **extra})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        while True:
            response = await self._http.post(self._api + "chat.postMessage", content=body,
                                             headers=headers)
            if response.status_code == 429:
                self.ratelimited += 1
                wait = float(response.headers.get("retry-after", "1"))
                await trio.sleep(min(wait, MAX_RETRY_AFTER_S))
                continue
            answer = self._decode.decode(response.content)
            if not answer.ok:
                raise NetError(f"chat.postMessage: {answer.error}")
            return


class _Envelope(msgspec.Struct, frozen=True):
    type: str = ""
    envelope_id: str = ""
    payload: dict[str, Any] = {}


class SocketModeListener:
    """An app's Socket Mode connection; ``on_message(channel, text)`` per message event."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, app_token: str) -> None:
        self._http = http
        self._api = api_url
        self._token = app_token
        self.envelopes = 0
        self._decode = msgspec.json.Decoder(_Envelope)
        self._counted = trio.Event()

    async def wait_envelopes(self, count: int) -> None:
        """Until ``count`` events have arrived in all."""
        while self.envelopes < count:
            await self._counted.wait()

    async def _url(self) -> str:
        response = await self._http.post(self._api + "apps.connections.open",
                                         headers={"Authorization": f"Bearer {self._token}"})
        answer = response.json()
        if not answer.get("ok"):
            raise NetError(f"apps.connections.open: {answer.get('error')}")
        return str(answer["url"])

    async def run(self, on_message: Callable[[str, str], object], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report started after ``hello``, then ack and dispatch until cancelled."""
        url = await self._url()
        async with open_websocket_url(url) as socket:
            hello = self._decode.decode(await socket.get_message())
            if hello.type != "hello":
                raise NetError(f"Socket Mode: expected hello, got {hello.type!r}")
            task_status.started()
            while True:
                try:
                    frame = await socket.get_message()
                except ConnectionClosed:
                    return
                envelope = self._decode.decode(frame)
                if envelope.envelope_id:
                    await socket.send_message(
                        msgspec.json.encode({"envelope_id": envelope.envelope_id}).decode())
                if envelope.type != "events_api":
                    continue
                self.envelopes += 1
                self._counted.set()
                self._counted = trio.Event()
                event = envelope.payload.get("event") or {}
                if event.get("type") == "message" and event.get("subtype") in (
                        None, "bot_message"):
                    on_message(str(event.get("channel", "")), str(event.get("text", "")))
