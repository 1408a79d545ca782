"""Slack's inbound side over Socket Mode: one websocket at a time, with trio-websocket.

The protocol (``reference/slack.md``): ``apps.connections.open`` with the app's
``xapp-`` token gives a single-use ``wss://`` URL; the server greets with
``hello``, then sends envelopes ``{"envelope_id", "type", "payload",
"accepts_response_payload", "retry_attempt", "retry_reason"}`` and expects
``{"envelope_id"}`` (plus ``"payload"`` when it accepts one) within 3 s, or it
sends the envelope again. The rules this client keeps::

    hello                      (first frame; within connect_timeout) -> connected
    events_api, event done     ack at once, handler not called
    events_api, new            on_event (ack budget) -> ack; UnavailableError or
                               budget spent -> no ack (Slack redelivers, claim released)
    slash_commands             on_command -> ack, with its answer as payload when accepted
    interactive                ack, ignored, counted
    an envelope that does not fit its view (``_views.py``)   ack, counted malformed
    other envelope types       ack, ignored, counted
    disconnect warning / refresh_requested   open a new URL, reconnect at once
    disconnect too_many_websockets           reconnect after a backoff
    disconnect link_disabled                 stop: LinkDisabledError
    events_api, behind a not-acked event of its lane   not acked, handler not called
    connection lost / refused / timed out    reconnect after a backoff: initial * 2^(n-1),
                               at most backoff_max, minus up to backoff_jitter of it at
                               random; n counts failures since the last hello, and after
                               max_failures of them run() raises UnavailableError

Frames are decoded once, from the text, into :class:`._views.SocketFrame`
whose payload stays raw until the envelope's type says which view it is
(``events_api``: :class:`._views.EventsBody`, decoded before the envelope is
queued since its conversation picks the lane). Envelopes are handled
concurrently across conversations and one after the other, in arrival order,
within one (a Slack edit must not overtake its message): each goes to the lane
of its conversation key (:func:`conversation_key`: the team and channel of a
message or reaction, the user of a ``user_change``, the channel of a slash
command; an envelope without one gets a lane of its own). At most
``max_lanes`` lanes exist and each holds at most ``lane_capacity`` envelopes;
past either, the reader waits (bounded, and every envelope keeps its own ack
budget from its arrival). Once an event in a lane is not acked (the
conversation's mailbox is full, the budget ran out), the events queued behind
it in that lane are not acked either, so Slack redelivers them after it
instead of them overtaking it. A lane ends when it is empty. An envelope whose
ack could not be sent (the connection dropped) is redelivered by Slack and
then acked from the de-duplicator without calling the handler again; one not
handled before the drop is handled on redelivery. ``open_url`` may raise
:class:`engine.UnavailableError`, ``OSError`` or any exception whose
``retryable`` attribute is true for a transient failure, which backs off like
a lost connection; anything else it raises (``invalid_auth``...) stops
``run()``.

Measurements (``adapter_stats``, the adapter's :class:`engine.AdapterStats`):
the connection's state under its ``connection`` name (``connecting`` from the
start and after every loss, ``connected`` from each ``hello``,
``disconnected`` once ``run()`` ends; every ``connected`` after the first is a
reconnect, a restarted adapter's included), a de-duplication hit for every
envelope answered from the de-duplicator, and malformed input (frames,
envelopes and bodies refused). """

from __future__ import annotations

import dataclasses
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import SplitResult, urlsplit

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from engine import UNKNOWN_TYPE, AdapterStats, Backoff, Deduplicator, UnavailableError

from ._inbound import (
    MIB,
    EventOutcome,
    InboundHandler,
    InboundStats,
    dispatch_command,
    dispatch_event,
    log_malformed,
)
from ._views import (
    MALFORMED_ENVELOPE,
    EventsBody,
    Malformed,
    SocketFrame,
    read_command_form,
    read_events_body,
    read_frame,
)

log = logging.getLogger("interlink.slack.socket_mode")

#: close code trio-websocket uses when a message is above max_message_bytes
_MESSAGE_TOO_BIG = 1009
_json = msgspec.json.Encoder()


class LinkDisabledError(UnavailableError):
    """Slack disabled the app's Socket Mode link (``disconnect`` with ``link_disabled``)."""

    retryable = False


@dataclass
class SocketModeStats(InboundStats):
    #: connections that reached ``hello``
    connections: int = 0
    #: connections after the first
    reconnects: int = 0
    #: connection attempts that failed (refused, timed out, lost before hello)
    failed_attempts: int = 0
    acks: int = 0
    #: ``disconnect`` frames received
    disconnects: int = 0


class _Transient(Exception):
    """A connection attempt or connection failed in a way worth retrying."""


class _Disconnect(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_TRANSIENT = (UnavailableError, OSError, HandshakeError, ConnectionClosed, trio.TooSlowError,
              trio.BrokenResourceError, _Transient)


class SocketModeClient:
    """Receives Slack events and commands over Socket Mode and hands them to ``handler``.

    ``open_url`` calls ``apps.connections.open`` and returns the websocket URL.
    ``rng`` makes the backoff jitter reproducible. ``adapter_stats`` gets the
    connection's state (as ``connection``) and what the module docstring lists.
    """

    def __init__(self, *, open_url: Callable[[], Awaitable[str]], handler: InboundHandler,
                 dedupe: Deduplicator, backoff_initial: float = 1.0,
                 backoff_max: float = 30.0, backoff_jitter: float = 0.5,
                 max_message_bytes: int = MIB, ack_budget: float = 2.5,
                 connect_timeout: float = 10.0, close_timeout: float = 2.0,
                 max_failures: int | None = 60, ssl_context: ssl.SSLContext | None = None,
                 rng: random.Random | None = None, max_lanes: int = 64,
                 lane_capacity: int = 64, adapter_stats: AdapterStats | None = None,
                 connection: str = "socket-mode") -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if not 0 <= backoff_jitter <= 1:
            raise ValueError("backoff_jitter is a fraction between 0 and 1")
        if not 0 < ack_budget < 3:
            raise ValueError("ack_budget must be below Slack's 3 s deadline")
        if max_failures is not None and max_failures < 1:
            raise ValueError("max_failures must be at least 1 (or None)")
        if max_lanes < 1 or lane_capacity < 1:
            raise ValueError("max_lanes and lane_capacity must be at least 1")
        self.max_lanes = max_lanes
        self.lane_capacity = lane_capacity
        self._open_url = open_url
        self.handler = handler
        self.dedupe = dedupe
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_jitter = backoff_jitter
        self._backoff = Backoff(initial=backoff_initial, maximum=backoff_max,
                                jitter=backoff_jitter, spread="below")
        self.max_message_bytes = max_message_bytes
        self.ack_budget = ack_budget
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.max_failures = max_failures
        self._ssl_context = ssl_context
        self._rng = rng or random.Random()
        self._failures = 0
        self._connected = False
        self._changed = trio.Event()
        self.stats = SocketModeStats()
        #: the adapter's measurements (its own when none are given: read by nobody)
        self.adapter_stats = adapter_stats or AdapterStats("")
        self.connection = connection

    def statistics(self) -> SocketModeStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self.stats)

    @property
    def connected(self) -> bool:
        """Whether a connection has said ``hello`` and is taking envelopes."""
        return self._connected

    async def wait_connected(self) -> None:
        """Wait until a connection has said ``hello`` (returns at once if one has)."""
        while not self._connected:
            await self._changed.wait()

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self._changed.set()
        self._changed = trio.Event()
        # lost: run() connects again (it says disconnected itself when it ends)
        self.adapter_stats.set_connection_state(
            self.connection, "connected" if connected else "connecting")

    def backoff_delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 = the first)."""
        return self._backoff.delay(failures, self._rng)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Connect, ``task_status.started()`` at the first ``hello``, and keep connected.

        Runs until cancelled (closing the websocket politely), or raises
        :class:`LinkDisabledError`, :class:`engine.UnavailableError` after
        ``max_failures`` failed attempts in a row, or what ``open_url`` raised.
        """
        started = False

        def on_hello() -> None:
            nonlocal started
            self._failures = 0
            self.stats.connections += 1
            if started:
                self.stats.reconnects += 1
            else:
                started = True
                task_status.started()

        self.adapter_stats.set_connection_state(self.connection, "connecting")
        try:
            await self._keep_connected(on_hello)
        finally:
            self.adapter_stats.set_connection_state(self.connection, "disconnected")

    async def _keep_connected(self, on_hello: Callable[[], None]) -> None:
        while True:
            if self._failures:
                if self.max_failures is not None and self._failures >= self.max_failures:
                    raise UnavailableError(
                        f"Socket Mode: {self._failures} connection attempts in a row failed")
                delay = self.backoff_delay(self._failures)
                log.info("socket mode reconnecting after backoff",
                         extra={"failures": self._failures, "delay": round(delay, 3)})
                await trio.sleep(delay)
            try:
                url = await self._open_url()
                reason = await self._connection(url, on_hello)
            except _TRANSIENT as exc:
                self._failed(exc)
                continue
            except BaseExceptionGroup as group:
                _, rest = group.split(_TRANSIENT)
                if rest is not None:
                    raise
                self._failed(group)
                continue
            except Exception as exc:
                if getattr(exc, "retryable", False) is not True:
                    raise
                self._failed(exc)  # e.g. the Web API client's error for a 5xx or a timeout
                continue
            self.stats.disconnects += 1
            if reason == "link_disabled":
                log.error("socket mode link disabled by Slack; stopping")
                raise LinkDisabledError(
                    "Slack disabled this app's Socket Mode link (disconnect reason "
                    "link_disabled): re-enable Socket Mode for the app, or use the Events "
                    "API over HTTP")
            if reason == "too_many_websockets":
                self._failures += 1
                log.warning("socket mode refused: too many websockets for the app")
            else:
                log.info("socket mode reconnecting", extra={"reason": reason[:64]})

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self.stats.failed_attempts += 1
        if isinstance(exc, ConnectionClosed) and exc.reason is not None \
                and exc.reason.code == _MESSAGE_TOO_BIG:
            self.stats.oversized += 1
        log.warning("socket mode connection failed or lost",
                    extra={"error": type(exc).__name__, "failures": self._failures})

    # -- one connection ----------------------------------------------------------------------
    async def _connection(self, url: str, on_hello: Callable[[], None]) -> str:
        """Connect to ``url`` and serve it until ``disconnect`` (its reason) or a failure.

        The connection runs shielded, so that when ``run()`` is cancelled the
        websocket reader is still alive to complete the close handshake: the
        cancellation is passed on by cancelling ``connecting`` / ``talking``,
        and the close is bounded by ``close_timeout``.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise _Transient("apps.connections.open gave no ws:// or wss:// URL")
        connecting, talking = trio.CancelScope(), trio.CancelScope()
        ended: list[str] = []
        lost: list[ConnectionClosed] = []
        finished = trio.Event()

        async def guarded() -> None:
            try:
                with trio.CancelScope(shield=True):
                    await self._shielded_connection(parts, connecting, talking, on_hello,
                                                    ended, lost)
            finally:
                finished.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded)
            try:
                await finished.wait()
            finally:
                connecting.cancel()
                talking.cancel()
        if lost:
            raise lost[0]
        return ended[0] if ended else "stopped"

    async def _shielded_connection(self, parts: SplitResult, connecting: trio.CancelScope,
                                   talking: trio.CancelScope, on_hello: Callable[[], None],
                                   ended: list[str], lost: list[ConnectionClosed]) -> None:
        assert parts.hostname is not None
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        with connecting, trio.fail_after(self.connect_timeout):
            if secure:
                stream = await trio.open_ssl_over_tcp_stream(
                    parts.hostname, port,
                    ssl_context=self._ssl_context or ssl.create_default_context())
            else:
                stream = await trio.open_tcp_stream(parts.hostname, port)
        if stream is None:  # stopped while connecting
            return
        try:
            async with trio.open_nursery() as nursery:
                ws: WebSocketConnection | None = None
                try:
                    with talking:
                        with trio.fail_after(self.connect_timeout):
                            ws = await wrap_client_stream(
                                nursery, stream, parts.hostname, resource,
                                max_message_size=self.max_message_bytes,
                                message_queue_size=64)
                        try:
                            ended.append(await self._converse(ws, on_hello))
                        except ConnectionClosed as exc:
                            lost.append(exc)
                finally:
                    self._set_connected(False)
                    if ws is not None:
                        with trio.move_on_after(self.close_timeout):
                            await ws.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            await stream.aclose()

    async def _converse(self, ws: WebSocketConnection, on_hello: Callable[[], None]) -> str:
        with trio.fail_after(self.connect_timeout):
            hello = self._decode(await ws.get_message())
        if hello is None or hello.type != "hello":
            if hello is not None and hello.type == "disconnect":
                return hello.reason or "unknown"
            raise _Transient("the first Socket Mode frame was not hello")
        log.info("socket mode connected", extra={"num_connections": hello.num_connections})
        on_hello()
        self._set_connected(True)
        try:
            async with trio.open_nursery() as nursery:
                return await self._read(ws, nursery)  # the lanes finish first
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # e.g. ConnectionClosed from the reader
                raise group.exceptions[0] from None
            raise

    async def _read(self, ws: WebSocketConnection, nursery: trio.Nursery) -> str:
        """Read envelopes into their lanes until ``disconnect`` (its reason)."""
        lanes = ConversationLanes(nursery, max_lanes=self.max_lanes, capacity=self.lane_capacity)
        while True:
            frame = self._decode(await ws.get_message())
            if frame is None:
                continue
            if frame.type == "disconnect":
                return frame.reason or "unknown"
            envelope_id = frame.envelope_id
            if envelope_id is not None:
                deadline = trio.current_time() + self.ack_budget
                body = _payload_of(frame)
                key = conversation_key(body) or f"envelope:{envelope_id}"
                await lanes.put(key, partial(self._envelope, ws, frame, envelope_id, body,
                                             deadline))
            else:
                self.stats.unknown += 1
                log.info("socket mode frame ignored", extra={"frame_type": frame.type[:64]})

    def _count_malformed(self) -> None:
        self.stats.malformed += 1
        self.adapter_stats.count_inbound(UNKNOWN_TYPE, "malformed")

    def _decode(self, message: str | bytes) -> SocketFrame | None:
        frame = read_frame(message)
        if isinstance(frame, Malformed):
            self._count_malformed()
            log_malformed(frame, transport="socket_mode")
            return None
        return frame

    async def _envelope(self, ws: WebSocketConnection, envelope: SocketFrame,
                        envelope_id: str, body: Payload, deadline: float,
                        behind_refused: bool) -> bool:
        """Handle one envelope by ``deadline``; False when it was not acked.

        ``body`` is its decoded payload (:func:`_payload_of`).
        ``behind_refused``: an earlier event of its lane was not acked, so an event
        is not acked either (Slack redelivers it after that one)."""
        kind = envelope.type
        self.stats.received += 1
        extra = {"envelope_id": envelope_id[:64], "envelope_type": kind[:32],
                 "retry_attempt": envelope.retry_attempt}
        if kind == MALFORMED_ENVELOPE:  # its fields do not fit the view: never redeliver
            self._count_malformed()
            log_malformed(Malformed("invalid_envelope", envelope.reason), **extra)
            await self._ack(ws, envelope_id)
        elif kind == "events_api":
            if not isinstance(body, EventsBody):
                self._count_malformed()
                log_malformed(body if isinstance(body, Malformed)
                              else Malformed("invalid_body"), **extra)
                await self._ack(ws, envelope_id)
                return True
            if behind_refused:
                self.stats.unavailable += 1
                log.info("socket mode envelope not acked: behind one not acked", extra=extra)
                return False
            outcome = await dispatch_event(body, handler=self.handler, dedupe=self.dedupe,
                                           stats=self.stats, deadline=deadline,
                                           adapter_stats=self.adapter_stats)
            if outcome is EventOutcome.MALFORMED:
                log.info("socket mode event malformed; acked", extra=extra)
            if not outcome.ack:
                log.info("socket mode envelope not acked", extra=extra)
                return False
            await self._ack(ws, envelope_id)
        elif kind == "slash_commands":
            if not isinstance(body, dict) or not body.get("command"):
                self._count_malformed()
                await self._ack(ws, envelope_id)
                return True
            answer = await dispatch_command(body, handler=self.handler, stats=self.stats,
                                            deadline=deadline)
            await self._ack(ws, envelope_id,
                            answer if envelope.accepts_response_payload else None)
        elif kind == "interactive":
            self.stats.interactive += 1
            log.info("socket mode interactive payload ignored", extra=extra)
            await self._ack(ws, envelope_id)
        else:
            self.stats.unknown += 1
            log.info("socket mode envelope type ignored", extra=extra)
            await self._ack(ws, envelope_id)
        return True

    async def _ack(self, ws: WebSocketConnection, envelope_id: str,
                   payload: dict[str, Any] | None = None) -> None:
        frame: dict[str, Any] = {"envelope_id": envelope_id}
        if payload is not None:
            frame["payload"] = payload
        try:
            await ws.send_message(_json.encode(frame).decode())
        except ConnectionClosed:
            # the envelope comes again on the next connection; dedupe answers it
            log.info("socket mode ack not sent: connection closed",
                     extra={"envelope_id": envelope_id[:64]})
            return
        self.stats.acks += 1


#: an envelope's payload as its type's view: an events_api body (or why it was refused),
#: a slash command's fields, or None (not read)
Payload = EventsBody | Malformed | dict[str, str] | None


def _payload_of(frame: SocketFrame) -> Payload:
    if frame.type == "events_api":
        return read_events_body(frame.payload)
    if frame.type == "slash_commands":
        return read_command_form(frame.payload)
    return None


def conversation_key(body: Payload) -> str | None:
    """The conversation an envelope's payload belongs to, for its lane; ``None``: none.

    A message, edit, delete or reaction: ``team/channel``; ``user_change``:
    ``team/user``; a slash command: ``team/channel``.
    """
    if isinstance(body, dict):
        channel = body.get("channel_id")
        return f"{body.get('team_id')}/{channel}" if channel is not None else None
    if not isinstance(body, EventsBody) or body.event is None:
        return None
    event, team = body.event, body.team_id
    if event.channel:
        return f"{team}/{event.channel}"
    if event.item is not None and event.item.channel:
        return f"{team}/{event.item.channel}"
    if not isinstance(event.user, str) and event.user.id:
        return f"{team}/{event.user.id}"
    return None


#: one envelope's work: given whether an earlier one of its lane was refused, whether
#: this one was taken (acked)
LaneJob = Callable[[bool], Awaitable[bool]]


class ConversationLanes:
    """Jobs run concurrently across keys, one at a time and in order within a key.

    At most ``max_lanes`` keys have a lane at once, and a lane holds at most
    ``capacity`` waiting jobs; :meth:`put` waits while either is full. A lane
    task lives in ``nursery`` and ends when its lane is empty. After a job
    returns False (refused), the jobs queued behind it in the lane are told so.
    """

    def __init__(self, nursery: trio.Nursery, *, max_lanes: int, capacity: int) -> None:
        self._nursery = nursery
        self._capacity = capacity
        self._slots = trio.Semaphore(max_lanes)
        self._lanes: dict[str, trio.MemorySendChannel[LaneJob]] = {}

    def __len__(self) -> int:
        return len(self._lanes)

    async def put(self, key: str, job: LaneJob) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            await self._slots.acquire()
            lane = self._lanes.get(key)  # opened by another put while this one waited
            if lane is None:
                lane, jobs = trio.open_memory_channel[LaneJob](self._capacity)
                self._lanes[key] = lane
                self._nursery.start_soon(self._run, key, jobs)
            else:
                self._slots.release()
        try:
            lane.send_nowait(job)
        except trio.WouldBlock:
            await lane.send(job)  # the lane is busy, so it stays open until this is in

    async def _run(self, key: str, jobs: trio.MemoryReceiveChannel[LaneJob]) -> None:
        refused = False
        try:
            while True:
                try:
                    job = jobs.receive_nowait()
                except trio.WouldBlock:
                    return
                refused = not await job(refused) or refused
        finally:
            del self._lanes[key]  # no checkpoint since the lane was seen empty
            self._slots.release()
