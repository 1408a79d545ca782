"""Getting events to apps: signed HTTP POSTs with Slack's retries, or Socket Mode.

Over **HTTP** Slack POSTs each ``event_callback`` to the app's Request URL,
signed with the app's signing secret::

    X-Slack-Request-Timestamp: <unix seconds>
    X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:<timestamp>:<raw body>"))

and expects a 2xx within 3 seconds. Otherwise it retries up to 3 times (nearly
at once, after 1 minute, after 5 minutes; :class:`DeliveryTiming` scales these
for tests) with ``X-Slack-Retry-Num`` and ``X-Slack-Retry-Reason``, unless the
answer carried ``X-Slack-No-Retry: 1``.

Over **Socket Mode** the app opens a websocket (``apps.connections.open``
gives a single-use URL); the sandbox greets it with ``hello``, sends envelopes
``{"envelope_id", "type", "payload", "accepts_response_payload",
"retry_attempt", "retry_reason"}`` and expects ``{"envelope_id"}`` back within
3 seconds, else redelivers (on Slack's retry schedule) with the next
``retry_attempt``. Envelopes wait for a connection when none is open.

Each app has one worker and a bounded outbox. First attempts go out in the
order events happened; retries run beside them. Slash commands are not
retried: the person sees an error instead.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, NamedTuple
from urllib.parse import urlencode

import httpx
import msgspec
import trio

from engine import Clock

from ._events import EventDelivery, url_verification
from ._state import App

log = logging.getLogger("interlink.slack.sandbox")

MAX_ANSWER_BYTES = 1024 * 1024


class DeliveryTiming(msgspec.Struct, frozen=True, kw_only=True):
    """Slack's delivery clock: ack deadline and retry delays (``retry_scale`` shrinks them)."""

    ack_timeout: float = 3.0
    retry_delays: tuple[float, ...] = (0.0, 60.0, 300.0)
    retry_scale: float = 1.0
    #: after ``refresh_requested``, the old connection is closed this much later
    refresh_grace: float = 10.0

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based)."""
        return self.retry_delays[retry - 1] * self.retry_scale

    @property
    def max_retries(self) -> int:
        return len(self.retry_delays)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 over ``v0:{ts}:{body}``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def next_retry(timing: DeliveryTiming, attempt: int, *, ok: bool, no_retry: bool
               ) -> float | None:
    """Seconds to wait before retrying after ``attempt`` (0 = first), or None: done."""
    if ok or no_retry or attempt >= timing.max_retries:
        return None
    return timing.delay(attempt + 1)


class DeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one attempt to deliver something to an app."""

    app_id: str
    kind: Literal["event", "command", "url_verification"]
    #: the event id (events), the envelope or command id otherwise
    id: str
    event_type: str
    transport: Literal["http", "socket"]
    #: 0 for the first attempt, then the retry number
    attempt: int
    ok: bool
    status: int | None = None
    #: why it failed: http_timeout, connection_failed, http_error, timeout, …
    reason: str = ""
    no_retry: bool = False


class DeliveryLog:
    """The last ``capacity`` delivery outcomes, oldest first; tests can wait on it."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.records: deque[DeliveryRecord] = deque(maxlen=capacity)
        self._changed = trio.Event()

    def add(self, record: DeliveryRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[DeliveryRecord], bool]) -> DeliveryRecord:
        """The oldest record matching ``predicate``, waiting until one exists."""
        while True:
            for record in self.records:
                if predicate(record):
                    return record
            await self._changed.wait()


class HttpAnswer(NamedTuple):
    ok: bool
    status: int | None
    reason: str
    no_retry: bool
    body: bytes
    content_type: str


async def post_signed(http: httpx.AsyncClient, url: str, secret: str, body: bytes,
                      content_type: str, *, timestamp: int, timeout: float, retry: int = 0,
                      reason: str = "") -> HttpAnswer:
    """POST ``body`` as Slack does; never raises for the receiver's failures."""
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp),
               "X-Slack-Signature": signature(secret, timestamp, body),
               "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
    if retry:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = reason
    try:
        with trio.fail_after(timeout):
            response = await http.post(url, content=body, headers=headers, timeout=timeout)
    except (trio.TooSlowError, httpx.TimeoutException):
        return HttpAnswer(False, None, "http_timeout", False, b"", "")
    except httpx.ConnectError:
        return HttpAnswer(False, None, "connection_failed", False, b"", "")
    except httpx.HTTPError:
        return HttpAnswer(False, None, "unknown_error", False, b"", "")
    no_retry = response.headers.get("x-slack-no-retry", "") == "1"
    content = response.content[:MAX_ANSWER_BYTES]
    ctype = response.headers.get("content-type", "")
    if 200 <= response.status_code < 300:
        return HttpAnswer(True, response.status_code, "", no_retry, content, ctype)
    reason = "too_many_redirects" if 300 <= response.status_code < 400 else "http_error"
    return HttpAnswer(False, response.status_code, reason, no_retry, content, ctype)


# -- Socket Mode -----------------------------------------------------------------------------------

class _Pending:
    __slots__ = ("acked", "payload")

    def __init__(self) -> None:
        self.acked = trio.Event()
        self.payload: Any = None


class SocketConnection:
    """One open Socket Mode websocket; frames to send go through ``outgoing``."""

    def __init__(self, app_id: str, connection_id: str, capacity: int = 1000) -> None:
        self.app_id = app_id
        self.id = connection_id
        self.outgoing, self.frames = trio.open_memory_channel[str | None](capacity)
        self.draining = False
        self.closed = False

    def push(self, frame: str | None) -> bool:
        """Queue a frame (``None`` closes); False when the connection cannot take it."""
        if self.closed:
            return False
        try:
            self.outgoing.send_nowait(frame)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True


class SocketHub:
    """Open Socket Mode connections per app, and the envelopes awaiting acks."""

    def __init__(self, *, max_connections: int = 10) -> None:
        self.max_connections = max_connections
        self._connections: dict[str, list[SocketConnection]] = {}
        self._pending: dict[str, _Pending] = {}
        self._changed = trio.Event()
        self._ids = itertools.count(1)
        self._turn = itertools.count()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def connections(self, app_id: str) -> list[SocketConnection]:
        return [c for c in self._connections.get(app_id, []) if not c.closed]

    def open(self, app_id: str) -> SocketConnection:
        connection = SocketConnection(app_id, f"{app_id}-{next(self._ids)}")
        self._connections.setdefault(app_id, []).append(connection)
        self._notify()
        return connection

    def close(self, connection: SocketConnection) -> None:
        connection.closed = True
        live = self._connections.get(connection.app_id, [])
        if connection in live:
            live.remove(connection)
        self._notify()

    def close_all(self, app_id: str | None = None) -> int:
        """Close the connections of ``app_id`` (or of every app); how many."""
        closing = 0
        for owner, connections in self._connections.items():
            if app_id is None or owner == app_id:
                for connection in list(connections):
                    closing += connection.push(None)
        return closing

    async def wait_connections(self, app_id: str, count: int = 1) -> None:
        """Wait until ``app_id`` has at least ``count`` connections taking envelopes."""
        while len([c for c in self.connections(app_id) if not c.draining]) < count:
            await self._changed.wait()

    async def wait_available(self, app_id: str) -> SocketConnection:
        """A connection to send on (round robin), waiting for one if none is open."""
        while True:
            ready = [c for c in self.connections(app_id) if not c.draining]
            if ready:
                return ready[next(self._turn) % len(ready)]
            await self._changed.wait()

    def send(self, connection: SocketConnection, envelope: dict[str, Any]) -> _Pending | None:
        """Send an envelope; its ack will set the returned pending (None: send failed)."""
        pending = _Pending()
        self._pending[envelope["envelope_id"]] = pending
        if not connection.push(json.dumps(envelope, separators=(",", ":"))):
            del self._pending[envelope["envelope_id"]]
            return None
        return pending

    def forget(self, envelope_id: str) -> None:
        self._pending.pop(envelope_id, None)

    def receive_frame(self, connection: SocketConnection, text: str) -> None:
        """A frame from the app: an ack ``{"envelope_id": …, "payload": …}``."""
        try:
            frame = json.loads(text)
        except ValueError:
            log.info("socket frame is not JSON", extra={"app_id": connection.app_id,
                                                        "connection": connection.id})
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("envelope_id"), str):
            log.info("socket frame without envelope_id", extra={
                "app_id": connection.app_id, "connection": connection.id})
            return
        pending = self._pending.pop(frame["envelope_id"], None)
        if pending is not None:
            pending.payload = frame.get("payload")
            pending.acked.set()

    def request_refresh(self, app_id: str, nursery: trio.Nursery, grace: float) -> int:
        """Tell every connection of ``app_id`` to reconnect; close each after ``grace``."""
        told = 0
        for connection in self.connections(app_id):
            if connection.draining:
                continue
            connection.draining = True
            frame = {"type": "disconnect", "reason": "refresh_requested",
                     "debug_info": {"host": "sandbox"}}
            if connection.push(json.dumps(frame)):
                told += 1
                nursery.start_soon(self._close_later, connection, grace)
        self._notify()
        return told

    async def _close_later(self, connection: SocketConnection, grace: float) -> None:
        await trio.sleep(grace)
        connection.push(None)


# -- the dispatcher ------------------------------------------------------------------------------

class CommandReply(NamedTuple):
    """What an app answered to a slash command: ok and its response, or an error."""

    ok: bool
    response: Any = None
    error: str = ""


class Dispatcher:
    """One outbox and worker per app; HTTP or Socket Mode by the app's configuration."""

    def __init__(self, apps: dict[str, App], *, http: httpx.AsyncClient, hub: SocketHub,
                 timing: DeliveryTiming, clock: Clock, records: DeliveryLog,
                 capacity: int = 10_000) -> None:
        self._apps = apps
        self._http = http
        self._hub = hub
        self._timing = timing
        self._clock = clock
        self.records = records
        self._outboxes: dict[str, trio.MemorySendChannel[EventDelivery]] = {}
        self._inboxes: dict[str, trio.MemoryReceiveChannel[EventDelivery]] = {}
        for app_id in apps:
            send, receive = trio.open_memory_channel[EventDelivery](capacity)
            self._outboxes[app_id], self._inboxes[app_id] = send, receive
        self._nursery: trio.Nursery | None = None
        self.published = 0
        self.dropped = 0

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the dispatcher is not running")
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for app_id, app in self._apps.items():
                worker = self._socket_worker if app.socket_mode else self._http_worker
                nursery.start_soon(worker, app, self._inboxes[app_id])
            task_status.started()
            await trio.sleep_forever()

    def publish(self, delivery: EventDelivery) -> None:
        """Queue an event for its app (never blocks; a full outbox drops and logs)."""
        try:
            self._outboxes[delivery.app_id].send_nowait(delivery)
        except trio.WouldBlock:
            self.dropped += 1
            log.warning("event dropped: outbox full", extra={
                "app_id": delivery.app_id, "event_id": delivery.event_id,
                "event_type": delivery.event_type})
            return
        self.published += 1

    def _record(self, record: DeliveryRecord) -> None:
        self.records.add(record)
        extra = {"app_id": record.app_id, "kind": record.kind, "id": record.id,
                 "event_type": record.event_type, "transport": record.transport,
                 "attempt": record.attempt, "status": record.status, "reason": record.reason}
        if record.ok:
            log.debug("delivered", extra=extra)
        else:
            log.info("delivery failed", extra=extra)

    # -- HTTP -----------------------------------------------------------------------------------
    async def _http_worker(self, app: App,
                           inbox: trio.MemoryReceiveChannel[EventDelivery]) -> None:
        async for delivery in inbox:
            await self._http_attempt(app, delivery, 0, "")

    async def _http_attempt(self, app: App, delivery: EventDelivery, retry: int,
                            reason: str) -> None:
        body = json.dumps(delivery.envelope, separators=(",", ":")).encode()
        answer = await post_signed(self._http, app.request_url, app.signing_secret, body,
                                   "application/json", timestamp=int(self._clock.now()),
                                   timeout=self._timing.ack_timeout, retry=retry,
                                   reason=reason)
        self._record(DeliveryRecord(app_id=app.id, kind="event", id=delivery.event_id,
                                    event_type=delivery.event_type, transport="http",
                                    attempt=retry, ok=answer.ok, status=answer.status,
                                    reason=answer.reason, no_retry=answer.no_retry))
        delay = next_retry(self._timing, retry, ok=answer.ok, no_retry=answer.no_retry)
        if delay is not None:
            self.nursery.start_soon(self._http_retry, app, delivery, retry + 1, answer.reason,
                                    delay)

    async def _http_retry(self, app: App, delivery: EventDelivery, retry: int,
                          reason: str, delay: float) -> None:
        await trio.sleep(delay)
        await self._http_attempt(app, delivery, retry, reason)

    # -- Socket Mode ------------------------------------------------------------------------------
    async def _socket_worker(self, app: App,
                             inbox: trio.MemoryReceiveChannel[EventDelivery]) -> None:
        async for delivery in inbox:
            await self._socket_attempt(app, delivery, 0, "")

    async def _socket_attempt(self, app: App, delivery: EventDelivery, retry: int,
                              reason: str) -> None:
        while True:
            connection = await self._hub.wait_available(app.id)
            envelope_id = str(uuid.uuid4())
            pending = self._hub.send(connection, {
                "envelope_id": envelope_id, "type": "events_api",
                "payload": delivery.envelope, "accepts_response_payload": False,
                "retry_attempt": retry, "retry_reason": reason})
            if pending is not None:
                break
            self._hub.close(connection)
        self.nursery.start_soon(self._await_ack, app, delivery, retry, envelope_id, pending)

    async def _await_ack(self, app: App, delivery: EventDelivery, retry: int,
                         envelope_id: str, pending: _Pending) -> None:
        with trio.move_on_after(self._timing.ack_timeout):
            await pending.acked.wait()
        acked = pending.acked.is_set()
        self._hub.forget(envelope_id)
        self._record(DeliveryRecord(app_id=app.id, kind="event", id=delivery.event_id,
                                    event_type=delivery.event_type, transport="socket",
                                    attempt=retry, ok=acked,
                                    reason="" if acked else "timeout"))
        delay = next_retry(self._timing, retry, ok=acked, no_retry=False)
        if delay is None:
            return
        await trio.sleep(delay)
        await self._socket_attempt(app, delivery, retry + 1, "timeout")

    # -- slash commands and URL verification -----------------------------------------------------
    async def run_command(self, app: App, payload: dict[str, str]) -> CommandReply:
        """Send a slash command to ``app`` and wait (3 s) for its answer."""
        command_id = payload.get("trigger_id", "")
        if app.socket_mode:
            reply = await self._socket_command(app, payload)
            transport: Literal["http", "socket"] = "socket"
            status = None
        else:
            transport = "http"
            answer = await post_signed(
                self._http, app.request_url, app.signing_secret,
                urlencode(payload).encode(), "application/x-www-form-urlencoded",
                timestamp=int(self._clock.now()), timeout=self._timing.ack_timeout)
            status = answer.status
            if answer.ok:
                reply = CommandReply(True, _decode_answer(answer.body, answer.content_type))
            else:
                reply = CommandReply(False, error="operation_timeout"
                                     if answer.reason == "http_timeout" else "dispatch_failed")
        self._record(DeliveryRecord(app_id=app.id, kind="command", id=command_id,
                                    event_type=payload.get("command", ""), transport=transport,
                                    attempt=0, ok=reply.ok, status=status, reason=reply.error))
        return reply

    async def _socket_command(self, app: App, payload: dict[str, str]) -> CommandReply:
        envelope_id = str(uuid.uuid4())
        with trio.move_on_after(self._timing.ack_timeout):
            connection = await self._hub.wait_available(app.id)
            pending = self._hub.send(connection, {
                "envelope_id": envelope_id, "type": "slash_commands", "payload": payload,
                "accepts_response_payload": True, "retry_attempt": 0, "retry_reason": ""})
            if pending is None:
                return CommandReply(False, error="dispatch_failed")
            await pending.acked.wait()
            return CommandReply(True, pending.payload)
        self._hub.forget(envelope_id)
        return CommandReply(False, error="operation_timeout")

    async def verify_url(self, app: App) -> bool:
        """Slack's ``url_verification`` handshake with an HTTP app's Request URL."""
        if app.socket_mode:
            return False
        challenge = uuid.uuid4().hex
        body = json.dumps(url_verification(app, challenge)).encode()
        answer = await post_signed(self._http, app.request_url, app.signing_secret, body,
                                   "application/json", timestamp=int(self._clock.now()),
                                   timeout=self._timing.ack_timeout)
        ok = answer.ok and challenge == _challenge(answer.body, answer.content_type)
        self._record(DeliveryRecord(app_id=app.id, kind="url_verification", id=challenge,
                                    event_type="url_verification", transport="http",
                                    attempt=0, ok=ok, status=answer.status,
                                    reason=answer.reason or ("" if ok else "bad_challenge")))
        return ok


def _decode_answer(body: bytes, content_type: str) -> Any:
    if not body.strip():
        return None
    text = body.decode("utf-8", "replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _challenge(body: bytes, content_type: str) -> str:
    answer = _decode_answer(body, content_type)
    if isinstance(answer, dict):
        value = answer.get("challenge")
        return value if isinstance(value, str) else ""
    return answer.strip() if isinstance(answer, str) else ""
