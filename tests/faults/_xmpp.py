"""Peter's XMPP client: a lean trio client that stays logged in and keeps every stanza.

Why not ``bench._e2e_net.XmppUser``: its login reads up to its own presence and drops
whatever else arrived in the same read (Prosody's offline messages do, after a
restart), and it hands on message bodies only. The fault suite must also see error
stanzas (a bounce names the message it is about by its id) and Interlink's failure
notices (with their ``<reply>`` reference, when there is one).

:class:`XmppPeer` logs in (plaintext SASL PLAIN, bind, initial presence), hands every
top-level stanza it receives to ``on_stanza`` as a :class:`Stanza`, and when its server
goes away (a Prosody restart) logs in again, every ``RELOGIN_S``, until it is back.
:meth:`XmppPeer.send_message` raises :class:`NotConnected` when the stream is down: the
caller (the row's sender) waits for :meth:`XmppPeer.wait_connected` and sends again.
"""

from __future__ import annotations

import base64
import contextlib
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

import trio

from bench._e2e_net import StanzaReader

_STREAM = "http://etherx.jabber.org/streams"
_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
_CLIENT = "jabber:client"
_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
_REPLY = "urn:xmpp:reply:0"
_RECEIPTS = "urn:xmpp:receipts"
#: seconds between two login attempts while the server is away
RELOGIN_S = 0.1
#: seconds one login may take
LOGIN_TIMEOUT_S = 10.0


class NotConnected(Exception):
    """The stream is down: nothing was written."""


class LoginFailed(Exception):
    """The server refused the login (a wrong password is not retried)."""


@dataclass(frozen=True)
class Stanza:
    """One received top-level stanza, reduced to what the suite looks at."""

    name: str  # message, presence, iq
    type: str
    id: str
    sender: str  # bare JID
    body: str
    #: XEP-0461: the id of the message this one replies to
    reply_to: str
    #: the defined condition of an error stanza
    condition: str
    #: XEP-0184: the id of the message this stanza acknowledges as delivered
    receipt_for: str
    #: wall-clock time it was received
    at: float


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _stanza(element: ET.Element) -> Stanza:
    body = element.find(f"{{{_CLIENT}}}body")
    reply = element.find(f"{{{_REPLY}}}reply")
    received = element.find(f"{{{_RECEIPTS}}}received")
    condition = ""
    error = element.find(f"{{{_CLIENT}}}error")
    if error is not None:
        for child in error:
            if child.tag.startswith(f"{{{_STANZAS}}}") and _local(child.tag) != "text":
                condition = _local(child.tag)
                break
    return Stanza(name=_local(element.tag), type=element.get("type", ""),
                  id=element.get("id", ""),
                  sender=element.get("from", "").partition("/")[0],
                  body=(body.text or "") if body is not None else "",
                  reply_to=reply.get("id", "") if reply is not None else "",
                  condition=condition,
                  receipt_for=received.get("id", "") if received is not None else "",
                  at=time.time())


class _Reader:
    """The stream's top-level elements (bench's reader), queued until read."""

    def __init__(self) -> None:
        self._reader = StanzaReader()
        self.pending: deque[ET.Element] = deque()

    @property
    def closed(self) -> bool:
        return self._reader.closed

    def feed(self, data: bytes) -> None:
        self.pending.extend(self._reader.feed(data))


class _Stream:
    """One logged-in stream."""

    def __init__(self, stream: trio.SocketStream, reader: _Reader) -> None:
        self.stream = stream
        self.reader = reader
        self.lock = trio.StrictFIFOLock()

    async def next_element(self) -> ET.Element | None:
        """The next top-level element, or None once the stream ended."""
        while not self.reader.pending:
            if self.reader.closed:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self.reader.feed(data)
        return self.reader.pending.popleft()


class XmppPeer:
    """One account, logged in for the whole row; ``on_stanza`` gets what arrives."""

    def __init__(self, jid: str, password: str, host: str, port: int,
                 on_stanza: Callable[[Stanza], object]) -> None:
        self.jid = jid
        self._password = password
        self._host = host
        self._port = port
        self._on_stanza = on_stanza
        self._current: _Stream | None = None
        self._changed = trio.Event()
        self.logins = 0

    @property
    def connected(self) -> bool:
        return self._current is not None

    async def wait_connected(self) -> None:
        while self._current is None:
            await self._changed.wait()

    def _set(self, current: _Stream | None) -> None:
        self._current = current
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Log in (started once the first login is done), read, log in again when the
        stream ends; until cancelled."""
        started = False
        while True:
            try:
                with trio.fail_after(LOGIN_TIMEOUT_S):
                    current = await self._login()
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, EOFError):
                await trio.sleep(RELOGIN_S)
                continue
            self.logins += 1
            self._set(current)
            if not started:
                task_status.started()
                started = True
            try:
                while (element := await current.next_element()) is not None:
                    self._on_stanza(_stanza(element))
            finally:
                self._set(None)
                await trio.aclose_forcefully(current.stream)

    async def send_message(self, to: str, body: str, stanza_id: str) -> None:
        """Write one chat message asking for a delivery receipt (XEP-0184, as XMPP clients
        do to show a message as delivered); :class:`NotConnected` if the stream is down."""
        current = self._current
        if current is None:
            raise NotConnected(self.jid)
        data = (f"<message type='chat' to='{to}' id='{stanza_id}'><body>{escape(body)}"
                f"</body><request xmlns='{_RECEIPTS}'/></message>").encode()
        async with current.lock:
            try:
                await current.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise NotConnected(self.jid) from None

    async def close(self) -> None:
        current = self._current
        if current is None:
            return
        with trio.move_on_after(2) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async with current.lock:
                    await current.stream.send_all(b"</stream:stream>")

    # -- login --------------------------------------------------------------------------
    async def _login(self) -> _Stream:
        user, _, domain = self.jid.partition("@")
        stream = await trio.open_tcp_stream(self._host, self._port)
        try:
            current = await self._open(stream, domain)
            await self._until(current, "features")
            token = base64.b64encode(f"\0{user}\0{self._password}".encode()).decode()
            await stream.send_all(f"<auth xmlns='{_SASL}' mechanism='PLAIN'>{token}</auth>"
                                  .encode())
            answer = await self._until(current, "success", "failure")
            if _local(answer.tag) != "success":
                raise LoginFailed(f"{self.jid}: login refused")
            current = await self._open(stream, domain)
            await self._until(current, "features")
            await stream.send_all(f"<iq type='set' id='bind'><bind xmlns='{_BIND}'>"
                                  f"<resource>faults</resource></bind></iq>".encode())
            await self._until(current, "iq")
            # available, priority 1: Prosody routes chat messages (and its offline ones) here
            await stream.send_all(b"<presence><priority>1</priority></presence>")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return current

    @staticmethod
    async def _open(stream: trio.SocketStream, domain: str) -> _Stream:
        await stream.send_all(
            f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='{_CLIENT}' "
            f"xmlns:stream='{_STREAM}' version='1.0'>".encode())
        return _Stream(stream, _Reader())

    @staticmethod
    async def _until(current: _Stream, *names: str) -> ET.Element:
        while True:
            element = await current.next_element()
            if element is None:
                raise EOFError("the XMPP server closed the stream during login")
            if _local(element.tag) in names:
                return element
