"""The XEP-0114 component connection: one supervised owner, reconnects, a bounded send queue.

Rules of this module:

- :meth:`ComponentConnection.run` owns everything: an :class:`AsyncioThread`,
  one slixmpp ``ComponentXMPP`` created on that thread and reused for every
  reconnect, the inbound pump and the outbound writer. Nothing else touches
  slixmpp. When ``run`` ends (cancelled or failed) the stream is closed, the
  loop torn down, and ``run`` may be called again (a supervisor restart).
- Connecting is TCP plus handshake within ``connect_timeout``. ``run`` calls
  ``task_status.started()`` after the first handshake; if none succeeds
  within ``start_timeout`` it raises :class:`ComponentUnavailable` (a start
  failure for the supervisor). A lost connection is retried at once, then
  with exponential backoff and jitter (the engine's :class:`~engine.Backoff`,
  :data:`RECONNECT_BACKOFF` unless given); the attempt count resets after
  each handshake. A handshake refused with ``not-authorized`` (wrong secret)
  or ``host-unknown`` (domain not configured on the server) raises
  :class:`ComponentRefused`: retrying cannot help.
- After every handshake, the first included, ``on_connected()`` runs in a
  task of its own (the adapter probes the presence of active contacts
  there). It is cancelled if the connection is lost before it returns; if it
  raises, ``run`` raises that error.
- Outbound: :meth:`ComponentConnection.send` validates and serialises at once
  and raises :class:`InvalidStanza` for anything the server would kill the
  stream for or refuse (a ``from`` outside the component domain, no ``to``,
  not a message/presence/iq, larger than ``max_stanza_bytes``). Valid stanzas
  join one FIFO queue; a single writer moves them to the socket in batches
  (one thread crossing per batch) while connected. While disconnected,
  stanzas wait in the queue (at most ``queue_limit`` stanzas) and are
  flushed, in order, after the next handshake. ``send`` raises
  :class:`ComponentUnavailable` (retryable) at once when the queue is full,
  or when ``queue_deadline`` seconds pass before its stanzas are written;
  they are then removed, never written later. Cancelling ``send`` before the
  write also removes them. When the socket's write buffer is full the writer
  waits for it to drain (``write_timeout``, after which the connection is
  aborted and re-established): backpressure reaches the callers of ``send``.
- Confirmation: a component stream has no acks (XEP-0198 is client-only), and
  a stanza written into a connection that then dies may never have reached
  the server. ``send(..., confirm=True)`` returns only once the server has
  *confirmed* its stanzas: after a write, the writer appends a **confirmation
  iq** (a XEP-0199 ping from the component's domain to itself, which the
  server routes back over the same stream) unless one is already out; the
  server handles a stream's stanzas in order, so its echo (or any answer:
  a result, an error) confirms every stanza written before it. One
  confirmation is out at a time: when it comes back and stanzas written
  after it wait, the next one goes at once, so at high rates one round trip
  covers a whole batch and at low rates each ``send`` costs one round trip.
  Confirmations are taken on the loop thread (they never wait behind the
  inbound channel) and never reach ``inbound``. When the connection is lost
  (or ``run`` ends) with stanzas written and not confirmed, their ``send``
  raises :class:`ComponentUnconfirmed`, **not retryable**: the server may
  have taken them (only the answer was lost), and nothing on its side would
  drop a second copy, so writing them again could duplicate them; the caller
  tells its sender instead. A confirmation not answered within
  ``confirm_timeout`` (while inbound reads are not paused by backpressure:
  the answer may be waiting behind them) aborts the connection, which then
  fails what it held unconfirmed and reconnects. Without ``confirm``, ``send``
  returns once its stanzas are written to the socket (replies, probes).
- Inbound: every message, presence and iq the server routes to the component
  crosses to trio as an :class:`xml.etree.ElementTree.Element`, in batches
  (:class:`InboundBridge`, backpressure by pausing the socket's reads). An
  incoming filter takes them before slixmpp's handlers, so slixmpp never
  answers anything by itself: the adapter answers iqs. The stream's namespace
  ``jabber:component:accept`` is rewritten to ``jabber:client`` on each
  stanza and its children, so the pure layer sees what a client would see.
  Outbound stanzas may use ``jabber:client``, ``jabber:component:accept`` or
  no namespace.
- Measurements go to ``adapter_stats`` (the adapter's
  :class:`engine.AdapterStats`) under the name ``connection``: the state
  (``connecting`` while ``run`` tries to connect or reconnect, ``connected``
  from each handshake, ``disconnected`` once ``run`` has ended); every
  handshake after the first counts as a reconnect (a supervisor's restart of
  ``run`` included).
- Logs carry connection facts (domain, address, attempt, delay, stream error
  condition) and counts; never stanza content, never the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from xml.etree.ElementTree import Element

import trio
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.xmlstream.tostring import tostring

from engine import AdapterStats, Backoff, ConfigError, LocalError, UnavailableError

from ._bridge import AsyncioThread, BridgeClosedError, InboundBridge, close_stream

log = logging.getLogger("interlink.xmpp.component")

CLIENT_NS = "jabber:client"
COMPONENT_NS = "jabber:component:accept"
STANZA_NAMES = frozenset({"message", "presence", "iq"})
_ACCEPTED_NS = frozenset({"", CLIENT_NS, COMPONENT_NS})
#: XEP-0199, the namespace of the confirmation iqs
NS_PING = "urn:xmpp:ping"
#: how the ids of confirmation iqs begin
ACK_PREFIX = "il-ack-"
#: stream errors after which reconnecting cannot help
FATAL_STREAM_ERRORS = frozenset({"not-authorized", "host-unknown"})


class ComponentUnavailable(UnavailableError):
    """The component is not connected and stanzas could not be written in time.

    ``reason`` is ``"queue_full"``, ``"deadline"`` or ``"not_connected"``
    (the first connection did not come up within ``start_timeout``).
    """

    retryable = True

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ComponentUnconfirmed(UnavailableError):
    """Stanzas were written to the server, but the connection was lost before the server
    confirmed them: they may have reached it or not.

    Not retryable: the server may hold them already (only its answer was lost) and
    nothing there drops a second copy, so sending them again could duplicate them.
    ``reason`` is ``"unconfirmed"``.
    """

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "unconfirmed"


class ComponentRefused(ConfigError):
    """The server refused the component's handshake (wrong secret or unknown domain)."""

    def __init__(self, domain: str, condition: str) -> None:
        super().__init__(f"the XMPP server refused component {domain!r}: {condition} "
                         "(check the component secret and the server's Component entry)")
        self.domain = domain
        self.condition = condition


class InvalidStanza(LocalError):
    """An outbound stanza the server would refuse or kill the stream for; nothing was sent."""


#: reconnect delays: the first attempt at once, then 0.2 s doubling up to 5 s, +-20 %
RECONNECT_BACKOFF = Backoff(initial=0.2, maximum=5.0)


@dataclass(frozen=True, slots=True)
class ComponentStatistics:
    """Counters of one :class:`ComponentConnection` (since it was created)."""

    connected: bool
    connects: int  # successful handshakes
    reconnects: int  # handshakes after the first
    attempts: int  # connection attempts, failed ones included
    sent: int  # stanzas written to the socket (confirmation iqs not counted)
    received: int  # stanzas that crossed to trio
    queued: int  # stanzas waiting to be written now
    dropped: int  # stanzas refused with ComponentUnavailable (queue full or deadline)
    inbound_batches: int  # thread crossings that carried received stanzas
    outbound_batches: int  # thread crossings that carried written stanzas
    inbound_overflowed: int  # inbound batches that met a full channel (backpressure)
    pings: int = 0  # confirmation iqs written
    confirmed: int = 0  # stanzas sent with confirm=True that the server confirmed
    unconfirmed: int = 0  # ... that a lost connection left unconfirmed (ComponentUnconfirmed)
    awaiting_confirmation: int = 0  # stanzas written (or being written), not confirmed, now


def jid_host(jid: str) -> str:
    """The domain part of a JID (``node@domain/resource``), lower-cased."""
    bare = jid.split("/", 1)[0]
    return bare.rpartition("@")[2].lower()


def to_client_namespace(element: Element) -> Element:
    """Rewrite ``jabber:component:accept`` to ``jabber:client`` in place; returns ``element``."""
    prefix = "{" + COMPONENT_NS + "}"
    for node in element.iter():
        if node.tag.startswith(prefix):
            node.tag = "{" + CLIENT_NS + "}" + node.tag[len(prefix):]
    return element


_State = Literal["queued", "writing", "written", "confirmed", "unconfirmed"]


class _Pending:
    """One ``send`` call's stanzas in the outbound queue.

    ``done`` is set once they are written (or given up); with ``settled`` (only for
    ``confirm``), once the server confirmed them (``confirmed``) or the connection they
    were written to was lost first (``unconfirmed``). ``seq`` orders the confirmable
    entries as written; ``generation`` is the connection they were written to.
    """

    __slots__ = ("chunks", "deadline", "done", "generation", "seq", "settled", "state")

    def __init__(self, chunks: list[bytes], deadline: float, confirm: bool) -> None:
        self.chunks = chunks
        self.deadline = deadline
        self.done = trio.Event()
        self.settled = trio.Event() if confirm else None
        self.state: _State = "queued"
        self.generation = 0
        self.seq = 0


_Outcome = Literal["connected", "failed", "timeout"]


class _Stream(ComponentXMPP):
    """ComponentXMPP plus asyncio write/read flow control. Loop thread only."""

    def __init__(self, domain: str, secret: str, host: str, port: int) -> None:
        # slixmpp's ComponentXMPP.__init__ is untyped
        super().__init__(domain, secret, host, port)  # type: ignore[no-untyped-call]
        self.writable = asyncio.Event()
        self.writable.set()
        self.reading_paused = False

    # asyncio.BaseProtocol flow-control hooks (the stream is the transport's protocol)
    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exception: BaseException | None) -> None:
        super().connection_lost(exception)
        self.writable.set()  # a writer waiting for the buffer to drain must not wait in vain

    def connection_made(self, transport: asyncio.BaseTransport, send_event: bool = True) -> None:
        self.writable.set()
        super().connection_made(transport, send_event)
        if self.reading_paused and isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()

    def set_reading(self, paused: bool) -> None:
        self.reading_paused = paused
        transport = self.transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()


class _LoopSide:
    """Everything that runs on the bridge thread: the stream and its handlers."""

    def __init__(self, owner: ComponentConnection, thread: AsyncioThread) -> None:
        self.owner = owner
        self.thread = thread
        self.inbound: InboundBridge[Element] | None = None
        self.token = trio.lowlevel.current_trio_token()
        self.stream: _Stream | None = None
        # bumped at every handshake; continues the owner's count so that a notice from a
        # previous run can never match a connection of this one
        self.generation = owner._generation
        self.up = False
        self.last_stream_error = ""

    async def create(self) -> None:
        owner = self.owner
        stream = _Stream(owner.domain, owner._secret, owner.host, owner.port)
        stream.whitespace_keepalive_interval = owner._keepalive
        stream.add_filter("in", self._take)
        stream.add_event_handler("session_start", self._on_session_start)
        stream.add_event_handler("disconnected", self._on_disconnected)
        stream.add_event_handler("stream_error", self._on_stream_error)
        self.stream = stream

    # -- handlers (loop thread) --------------------------------------------------

    def _take(self, stanza: Any) -> Any:
        xml: Element = stanza.xml
        namespace, _, name = xml.tag[1:].partition("}") if xml.tag[:1] == "{" else ("", "", xml.tag)
        if name in STANZA_NAMES and namespace in (COMPONENT_NS, CLIENT_NS):
            if name == "iq" and self._confirmation(xml):
                return None
            assert self.inbound is not None
            self.inbound.put(to_client_namespace(xml))
            return None  # slixmpp's own handlers never see it
        return stanza  # handshake, stream errors

    def _confirmation(self, xml: Element) -> bool:
        """Whether ``xml`` answers (or echoes) one of the owner's confirmation iqs; if so,
        trio hears of it at once (never through the inbound channel)."""
        owner = self.owner
        stanza_id = xml.get("id", "")
        if not stanza_id.startswith(owner._ack_prefix) or xml.get("from") != owner.domain:
            return False
        try:
            generation, ping, seq = (int(part) for part in
                                     stanza_id[len(owner._ack_prefix):].split("-"))
        except ValueError:
            return False
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(owner._confirmed, generation, ping, seq)
        return True

    def _on_session_start(self, _: object) -> None:
        self.generation += 1
        self.up = True
        self.last_stream_error = ""

    def _on_stream_error(self, error: Any) -> None:
        self.last_stream_error = str(error["condition"] or "undefined-condition")

    def _on_disconnected(self, _: object) -> None:
        if not self.up:
            return
        self.up = False
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(self.owner._connection_lost, self.generation,
                                     self.last_stream_error)

    # -- calls from trio -------------------------------------------------------------

    async def connect(self, timeout: float) -> tuple[_Outcome, int, str]:
        """Connect and handshake; returns (outcome, generation, stream error condition)."""
        stream = self.stream
        assert stream is not None
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[_Outcome] = loop.create_future()

        def settle(value: _Outcome) -> Callable[[object], None]:
            def handler(_: object) -> None:
                if not outcome.done():
                    outcome.set_result(value)
            return handler

        handlers = [("session_start", settle("connected")),
                    ("connection_failed", settle("failed")),
                    ("disconnected", settle("failed"))]
        for name, handler in handlers:
            stream.add_event_handler(name, handler)
        self.last_stream_error = ""
        result: _Outcome = "timeout"
        try:
            stream.connect(self.owner.host, self.owner.port)
            try:
                async with asyncio.timeout(timeout):
                    result = await outcome
            except TimeoutError:
                result = "timeout"
        finally:
            for name, handler in handlers:
                stream.del_event_handler(name, handler)
            if result != "connected":
                await self._abort(timeout)
        return result, self.generation, self.last_stream_error

    async def drop(self, timeout: float) -> None:
        await self._abort(timeout)

    async def _abort(self, timeout: float) -> None:
        """Drop a half-made connection and wait until slixmpp has seen it closed."""
        stream = self.stream
        assert stream is not None
        stream.cancel_connection_attempt()
        if stream.transport is not None:
            closed = stream.disconnected
            stream.abort()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(closed)
            except TimeoutError:
                pass

    async def write(self, generation: int, chunks: list[bytes], timeout: float) -> bool:
        """Write all chunks if still on ``generation``'s connection; False if not written."""
        stream = self.stream
        if stream is None or not self.up or generation != self.generation:
            return False
        transport = stream.transport
        if transport is None or transport.is_closing():
            return False
        transport.writelines(chunks)
        if not stream.writable.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await stream.writable.wait()
            except TimeoutError:
                log.warning("component socket not draining: reconnecting",
                            extra={"domain": self.owner.domain})
                stream.abort()
        return True

    async def abort(self, generation: int) -> None:
        """Abort ``generation``'s connection (the owner sees it lost and reconnects)."""
        stream = self.stream
        if stream is not None and self.up and generation == self.generation:
            stream.abort()

    def set_reading(self, paused: bool) -> None:
        if self.stream is not None:
            self.stream.set_reading(paused)

    async def close(self, timeout: float) -> None:
        """Close the stream gracefully (bounded), then make sure slixmpp saw it closed."""
        if self.stream is None:
            return
        await close_stream(self.stream, timeout)
        self.up = False


class ComponentConnection:
    """The component's connection to its XMPP server, as one supervised task.

    ``inbound`` yields lists of received stanzas (Elements in the
    ``jabber:client`` namespace) and stays open across reconnects and across
    calls of :meth:`run`.
    """

    def __init__(
        self,
        domain: str,
        secret: str,
        host: str,
        port: int,
        *,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        reconnect: Backoff | None = None,
        rng: random.Random | None = None,
        connect_timeout: float = 10.0,
        start_timeout: float = 60.0,
        queue_limit: int = 10_000,
        queue_deadline: float = 30.0,
        write_timeout: float = 30.0,
        confirm_timeout: float = 30.0,
        max_write_batch: int = 512,
        max_stanza_bytes: int = 256 * 1024,
        inbound_capacity: int = 64,
        keepalive: int = 300,
        name: str | None = None,
        adapter_stats: AdapterStats | None = None,
        connection: str = "component",
    ) -> None:
        if not domain or domain != domain.lower() or "@" in domain or "/" in domain:
            raise ConfigError(f"component domain must be a lower-case domain: {domain!r}")
        for label, value in (("connect_timeout", connect_timeout),
                             ("start_timeout", start_timeout),
                             ("queue_deadline", queue_deadline),
                             ("write_timeout", write_timeout),
                             ("confirm_timeout", confirm_timeout)):
            if not value > 0:
                raise ConfigError(f"{label} must be positive")
        for label, count in (("queue_limit", queue_limit), ("max_write_batch", max_write_batch),
                             ("max_stanza_bytes", max_stanza_bytes),
                             ("inbound_capacity", inbound_capacity)):
            if count < 1:
                raise ConfigError(f"{label} must be at least 1")
        self.domain = domain
        self._secret = secret
        self.host = host
        self.port = port
        self.name = name or f"xmpp-component {domain}"
        #: the adapter's measurements (its own when none are given: read by nobody)
        self.adapter_stats = adapter_stats or AdapterStats("")
        self.connection = connection
        self._on_connected = on_connected
        self._reconnect = reconnect or RECONNECT_BACKOFF
        self._rng = rng or random.Random()
        self._connect_timeout = connect_timeout
        self._start_timeout = start_timeout
        self._queue_limit = queue_limit
        self._queue_deadline = queue_deadline
        self._write_timeout = write_timeout
        self._confirm_timeout = confirm_timeout
        self._max_write_batch = max_write_batch
        self._max_stanza_bytes = max_stanza_bytes
        self._keepalive = keepalive
        self._inbound_send, self.inbound = trio.open_memory_channel[list[Element]](inbound_capacity)
        self._running = False
        self._connected = False
        self._generation = 0
        self._last_lost = 0  # generation of the last connection the loop saw closed
        self._lost_condition = ""
        self._state_lot = trio.lowlevel.ParkingLot()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._queue: deque[_Pending] = deque()
        self._queued = 0
        self._bridge: InboundBridge[Element] | None = None
        # confirmations: ids "<prefix><generation>-<ping>-<seq>"; the nonce keeps another
        # component's (or an earlier process's) ids from ever matching
        self._ack_prefix = f"{ACK_PREFIX}{secrets.token_hex(4)}-"
        self._write_seq = 0  # confirmable entries written so far (each one's seq)
        self._unconfirmed: deque[_Pending] = deque()  # written, not confirmed, by seq
        self._awaiting = 0  # their stanzas
        self._ping = 0  # the confirmation out now (its number), 0 when none is
        self._ping_generation = 0
        self._ping_sent_at = 0.0
        self._ping_wanted = False  # stanzas written after the one out: ask again when back
        self._ping_lot = trio.lowlevel.ParkingLot()
        # counters
        self._connects = 0
        self._attempts = 0
        self._sent = 0
        self._dropped = 0
        self._outbound_batches = 0
        self._pings = 0
        self._confirmed_count = 0
        self._unconfirmed_count = 0
        self._received_before = 0  # inbound counts of previous runs
        self._inbound_batches_before = 0
        self._overflowed_before = 0

    def __repr__(self) -> str:  # never shows the secret
        return f"<ComponentConnection {self.domain} {self.host}:{self.port}>"

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    async def wait_connected(self) -> None:
        while not self._connected:
            await self._state_lot.park()

    async def wait_disconnected(self) -> None:
        while self._connected:
            await self._state_lot.park()

    def statistics(self) -> ComponentStatistics:
        received, batches, overflowed = (self._received_before, self._inbound_batches_before,
                                         self._overflowed_before)
        if self._bridge is not None:
            stats = self._bridge.statistics()
            received += stats.items
            batches += stats.batches
            overflowed += stats.overflowed
        return ComponentStatistics(
            connected=self._connected, connects=self._connects,
            reconnects=max(0, self._connects - 1), attempts=self._attempts, sent=self._sent,
            received=received, queued=self._queued, dropped=self._dropped,
            inbound_batches=batches, outbound_batches=self._outbound_batches,
            inbound_overflowed=overflowed, pings=self._pings,
            confirmed=self._confirmed_count, unconfirmed=self._unconfirmed_count,
            awaiting_confirmation=self._awaiting)

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        self._state_lot.unpark_all()
        self._writer_lot.unpark_all()
        # lost: run() connects again (it says disconnected itself when it ends)
        self.adapter_stats.set_connection_state(
            self.connection, "connected" if value else "connecting")

    def _connection_lost(self, generation: int, condition: str) -> None:
        """Called in trio (through the token) when the stream of ``generation`` closed."""
        self._last_lost = max(self._last_lost, generation)
        self._lost_condition = condition
        self._fail_unconfirmed(generation)
        if generation == self._generation and self._connected:
            self._set_connected(False)

    # -- confirmations -----------------------------------------------------------------

    def _ping_chunk(self, generation: int) -> bytes:
        """The next confirmation iq, covering every confirmable entry written so far."""
        self._pings += 1
        self._ping = self._pings
        self._ping_generation = generation
        self._ping_sent_at = trio.current_time()
        self._ping_wanted = False
        self._ping_lot.unpark_all()
        return (f"<iq type='get' id='{self._ack_prefix}{generation}-{self._ping}-"
                f"{self._write_seq}' from='{self.domain}' to='{self.domain}'>"
                f"<ping xmlns='{NS_PING}'/></iq>").encode()

    def _confirmed(self, generation: int, ping: int, seq: int) -> None:
        """Called in trio (through the token): the server answered a confirmation iq, so
        it has taken every stanza written to ``generation``'s connection before it."""
        if (generation, ping) == (self._ping_generation, self._ping):
            self._ping = 0
        unconfirmed = self._unconfirmed
        while unconfirmed and unconfirmed[0].generation <= generation \
                and unconfirmed[0].seq <= seq:
            entry = unconfirmed.popleft()
            self._awaiting -= len(entry.chunks)
            if entry.generation < generation:  # its connection was lost before this one
                self._settle(entry, "unconfirmed")
            else:
                self._confirmed_count += len(entry.chunks)
                self._settle(entry, "confirmed")
        if unconfirmed and not self._ping:
            self._ping_wanted = True
            self._writer_lot.unpark_all()

    def _fail_unconfirmed(self, generation: int | None = None) -> None:
        """The connection of ``generation`` (of every one, if None) is gone: what it held
        unconfirmed is failed, never written again."""
        if generation is None or generation == self._ping_generation:
            self._ping = 0
            self._ping_wanted = False
        unconfirmed = self._unconfirmed
        # entries of a write still crossing are the writer's to settle (if it went out)
        while unconfirmed and unconfirmed[0].state != "writing" and (
                generation is None or unconfirmed[0].generation <= generation):
            entry = unconfirmed.popleft()
            self._awaiting -= len(entry.chunks)
            self._settle(entry, "unconfirmed")
        if not unconfirmed:
            self._ping_wanted = False

    def _settle(self, entry: _Pending, state: _State) -> None:
        assert entry.settled is not None
        if entry.settled.is_set():  # given up by its sender already (send's backstop)
            return
        entry.state = state
        if state == "unconfirmed":
            self._unconfirmed_count += len(entry.chunks)
        entry.settled.set()

    async def _watch_confirmations(self, loop_side: _LoopSide, thread: AsyncioThread,
                                   generation: int) -> None:
        """Abort ``generation``'s connection when a confirmation is not answered within
        ``confirm_timeout`` (time with inbound reads paused by backpressure not counted:
        the answer may be waiting behind what the consumer has not taken yet)."""
        while True:
            while not (self._ping and self._ping_generation == generation):
                await self._ping_lot.park()
            ping = self._ping
            deadline = self._ping_sent_at + self._confirm_timeout
            while True:
                await trio.sleep_until(deadline)
                if self._ping != ping or self._ping_generation != generation:
                    break
                bridge = self._bridge
                if bridge is not None and bridge.backpressured:
                    deadline = trio.current_time() + self._confirm_timeout
                    continue
                log.warning("component server did not confirm in time: reconnecting", extra={
                    "domain": self.domain, "timeout_s": self._confirm_timeout,
                    "awaiting": self._awaiting})
                with contextlib.suppress(BridgeClosedError):
                    await thread.run(loop_side.abort, generation)
                return

    # -- outbound ------------------------------------------------------------------------

    def encode(self, stanza: Element) -> bytes:
        """Validate ``stanza`` against the server's rules and serialise it."""
        tag = stanza.tag
        namespace, _, name = tag[1:].partition("}") if tag[:1] == "{" else ("", "", tag)
        if name not in STANZA_NAMES or namespace not in _ACCEPTED_NS:
            raise InvalidStanza(f"not a message, presence or iq stanza: <{name}>")
        to = stanza.get("to")
        if not to:
            raise InvalidStanza(f"<{name}> without 'to' (the server would answer bad-request)")
        sender = stanza.get("from")
        if sender is not None and jid_host(sender) != self.domain:
            raise InvalidStanza(
                f"<{name}> from a JID outside {self.domain!r} (the server would close the "
                "stream with invalid-from)")
        data = tostring(stanza, xmlns=namespace, top_level=True).encode()
        if len(data) > self._max_stanza_bytes:
            raise InvalidStanza(f"<{name}> of {len(data)} bytes exceeds the limit of "
                                f"{self._max_stanza_bytes}")
        return data

    async def send(self, stanzas: list[Element], *, confirm: bool = False) -> None:
        """Write ``stanzas`` to the server, in order; with ``confirm``, return only once the
        server has confirmed them (:class:`ComponentUnconfirmed` if the connection is lost
        first). See the module rules for the guarantees."""
        if not stanzas:
            return
        chunks = [self.encode(stanza) for stanza in stanzas]
        count = len(chunks)
        if self._queued + count > self._queue_limit:
            self._dropped += count
            raise ComponentUnavailable(
                f"component {self.domain!r} outbound queue is full ({self._queue_limit} stanzas"
                f", {'connected' if self._connected else 'disconnected'})", reason="queue_full")
        entry = _Pending(chunks, trio.current_time() + self._queue_deadline, confirm)
        self._queue.append(entry)
        self._queued += count
        self._writer_lot.unpark_all()
        try:
            with trio.move_on_at(entry.deadline):
                await entry.done.wait()
            if entry.state == "writing":  # the write itself is bounded by write_timeout
                await entry.done.wait()
        finally:
            if entry.state == "queued":
                self._queue.remove(entry)
                self._queued -= count
        if entry.state == "queued":
            self._dropped += count
            raise ComponentUnavailable(
                f"component {self.domain!r} was not connected within {self._queue_deadline} s; "
                f"{count} stanza(s) not sent", reason="deadline")
        if entry.settled is None:
            return
        if entry.state == "written":
            # the watchdog aborts a connection whose confirmation is overdue, and the loss
            # settles the entry; this bound is only a backstop
            with trio.move_on_after(2 * self._confirm_timeout + self._write_timeout):
                await entry.settled.wait()
        if entry.state != "confirmed":
            if entry.state == "written":  # the backstop: given up, never settled
                self._settle(entry, "unconfirmed")
            raise ComponentUnconfirmed(
                f"component {self.domain!r}: the connection was lost before the server "
                f"confirmed {count} stanza(s); they may not have been delivered")

    async def _writer(self, loop_side: _LoopSide, thread: AsyncioThread) -> None:
        while True:
            while not (self._connected and (self._queue or self._ping_wanted)):
                await self._writer_lot.park()
            # One scheduler pass first: every task ready in this turn queues its stanzas,
            # and they cross to the loop thread and the socket as one batch (a crossing
            # is a self-pipe write and a thread wake-up, paid per batch, not per stanza)
            await trio.lowlevel.checkpoint()
            if not (self._connected and (self._queue or self._ping_wanted)):
                continue
            generation = self._generation
            batch: list[_Pending] = []
            count = 0
            confirmable = False
            while self._queue and (not batch or count + len(self._queue[0].chunks)
                                   <= self._max_write_batch):
                entry = self._queue.popleft()
                entry.state = "writing"
                if entry.settled is not None:
                    # registered before the write crosses: the server's answer may be back
                    # before this task hears that the write is done
                    self._write_seq += 1
                    entry.seq = self._write_seq
                    entry.generation = generation
                    self._unconfirmed.append(entry)
                    self._awaiting += len(entry.chunks)
                    confirmable = True
                batch.append(entry)
                count += len(entry.chunks)
            self._queued -= count
            written = False
            try:
                chunks = [chunk for entry in batch for chunk in entry.chunks]
                # a confirmation goes behind the batch unless one is out already (its
                # answer asks for the next one: _confirmed)
                ping_out = bool(self._ping) and self._ping_generation == generation
                if self._ping_wanted or (confirmable and not ping_out):
                    chunks.append(self._ping_chunk(generation))
                # shielded (and bounded) so that a cancelled writer still knows whether the
                # stanzas went out: re-sending them on the next connection would duplicate
                with trio.CancelScope(shield=True), trio.move_on_after(self._write_timeout + 5):
                    written = await thread.run(loop_side.write, generation, chunks,
                                               self._write_timeout)
                await trio.lowlevel.checkpoint_if_cancelled()
            finally:
                if written:
                    self._sent += count
                    self._outbound_batches += 1 if count else 0
                    for entry in batch:
                        if entry.state == "writing":  # else confirmed already
                            entry.state = "written"
                        entry.done.set()
                    if self._last_lost >= generation:  # lost while the write crossed
                        self._fail_unconfirmed(generation)
                else:  # back to the head of the queue, in order, for the next connection
                    if self._ping_generation == generation:
                        self._ping = 0  # not sent (the entries go again, with one)
                    unconfirmed = self._unconfirmed
                    while unconfirmed and unconfirmed[-1].state == "writing":  # this batch's
                        self._awaiting -= len(unconfirmed.pop().chunks)
                    for entry in reversed(batch):
                        entry.state = "queued"
                        self._queue.appendleft(entry)
                        if entry.deadline <= trio.current_time():
                            entry.done.set()  # its sender raises
                    self._queued += count
            if not written and self._connected and generation == self._generation:
                # the loop saw the loss before trio did; wait for the notice
                await self.wait_disconnected()

    # -- the owner task ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Connect, serve and reconnect until cancelled; see the module rules."""
        if self._running:
            raise LocalError(f"{self!r} is already running")
        self._running = True
        self.adapter_stats.set_connection_state(self.connection, "connecting")
        try:
            async with AsyncioThread(self.name) as thread, trio.open_nursery() as nursery:
                loop_side = _LoopSide(self, thread)
                bridge = InboundBridge[Element](
                    thread, self._inbound_send,
                    pause=lambda: loop_side.set_reading(True),
                    resume=lambda: loop_side.set_reading(False))
                loop_side.inbound = bridge
                self._bridge = bridge
                nursery.start_soon(bridge.pump)
                nursery.start_soon(self._writer, loop_side, thread)
                try:
                    await thread.run(loop_side.create)
                    await self._serve(loop_side, thread, task_status)
                finally:
                    self._set_connected(False)
                    with trio.CancelScope(shield=True), trio.move_on_after(
                            self._connect_timeout + 2), contextlib.suppress(BridgeClosedError):
                        await thread.run(loop_side.close, 1.0)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # the supervisor should see ComponentRefused, not a nursery's group
            error = _sole_error(group)
            if error is None:
                raise
            raise error from None
        finally:
            self._running = False
            # the writer has finished (its nursery is closed): whatever is still written
            # and unconfirmed will never be confirmed now
            self._fail_unconfirmed()
            self.adapter_stats.set_connection_state(self.connection, "disconnected")
            if self._bridge is not None:
                stats = self._bridge.statistics()
                self._received_before += stats.items
                self._inbound_batches_before += stats.batches
                self._overflowed_before += stats.overflowed
                self._bridge = None

    async def _serve(self, loop_side: _LoopSide, thread: AsyncioThread,
                     task_status: trio.TaskStatus[None]) -> None:
        started = False
        failures = 0  # consecutive failed attempts since the last handshake
        first_deadline = trio.current_time() + self._start_timeout
        while True:
            delay = self._reconnect.delay(failures, self._rng)
            if not started and trio.current_time() + delay > first_deadline:
                raise ComponentUnavailable(
                    f"component {self.domain!r} could not connect to {self.host}:{self.port}"
                    f" within {self._start_timeout} s", reason="not_connected")
            if delay:
                await trio.sleep(delay)
            self._attempts += 1
            outcome, generation, condition = await thread.run(
                loop_side.connect, self._connect_timeout)
            if outcome == "connected" and self._last_lost >= generation:
                # lost again before trio heard of the handshake
                outcome = "failed"
                await thread.run(loop_side.drop, self._connect_timeout)
            if outcome != "connected":
                if condition in FATAL_STREAM_ERRORS:
                    log.error("component refused", extra={
                        "domain": self.domain, "condition": condition})
                    raise ComponentRefused(self.domain, condition)
                failures += 1
                log.info("component connection attempt failed", extra={
                    "domain": self.domain, "address": f"{self.host}:{self.port}",
                    "outcome": outcome, "condition": condition, "failures": failures})
                continue
            failures = 0
            self._generation = generation
            self._connects += 1
            self._set_connected(True)
            log.info("component connected", extra={
                "domain": self.domain, "address": f"{self.host}:{self.port}",
                "connects": self._connects})
            if not started:
                started = True
                task_status.started()
            await self._while_connected(loop_side, thread, generation)
            log.warning("component connection lost", extra={
                "domain": self.domain, "condition": self._lost_condition,
                "queued": self._queued})

    async def _while_connected(self, loop_side: _LoopSide, thread: AsyncioThread,
                               generation: int) -> None:
        """Run ``on_connected`` and the confirmation watchdog; return when the connection
        is lost."""
        failure: list[Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_confirmations, loop_side, thread, generation)
            if self._on_connected is not None:
                callback = self._on_connected

                async def probe() -> None:
                    try:
                        await callback()
                    except Exception as exc:
                        failure.append(exc)
                        nursery.cancel_scope.cancel()

                nursery.start_soon(probe)
            await self.wait_disconnected()
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one non-Cancelled exception in ``group`` (nested groups flattened), if exactly one."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None
