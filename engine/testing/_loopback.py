"""The loopback adapter: a platform that lives in memory.

Tests (and ``interlink run`` before real platforms are configured) use it as
both ends of a federation. Inbound: :meth:`LoopbackAdapter.send` submits an
event as if its platform had received it. Outbound: every delivered event is
kept in a bounded outbox that tests read with :meth:`LoopbackAdapter.next_delivered`.

Failure injection: :meth:`LoopbackAdapter.fail_next` makes the next
deliveries raise :class:`DeliveryError`, for testing retries and outcomes.

With ``crash_deliveries``, the first N deliveries to an address raise
:class:`InjectedCrash` (not a ``DeliveryError``): a simulated bug that crashes
the session, for supervision tests and demos.

With ``known_users``, delivery to anybody else fails permanently
(``unknown-user``), as a real platform's would.

Echo mode (for demos): the adapter answers every message delivered to one of
its ``echo_users`` with a message of the same body, and accepts every
contact request sent to them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping

import trio

from .._adapter import ALL_CAPABILITIES, Capability, DeliveryError, DeliveryResult, EnginePort
from .._address import Address
from .._directory import SessionRecord
from .._errors import LocalError, UnavailableError
from .._events import ContactAccept, ContactRequest, Event, Message

log = logging.getLogger("interlink.loopback")


class InjectedCrash(RuntimeError):
    """A simulated adapter bug (``crash_deliveries``), for supervision tests and demos."""


class LoopbackAdapter:
    def __init__(
        self,
        name: str = "loopback",
        *,
        capabilities: Iterable[Capability] = ALL_CAPABILITIES,
        outbox_capacity: int = 10_000,
        echo_users: Iterable[Address] = (),
        keep_outbox: bool = True,
        known_users: Iterable[Address] | None = None,
        crash_deliveries: Mapping[Address, int] | None = None,
    ) -> None:
        self._name = name
        self._capabilities = frozenset(capabilities)
        self._outbox_send, self._outbox_receive = trio.open_memory_channel[Event](outbox_capacity)
        self._echo_send, self._echo_receive = trio.open_memory_channel[Event](outbox_capacity)
        self._echo_users = frozenset(echo_users)
        self._keep_outbox = keep_outbox
        self._known_users = None if known_users is None else frozenset(known_users)
        self._crashes_left = dict(crash_deliveries or {})
        self._ids = itertools.count(1)
        self._failures: list[DeliveryError] = []
        self._port: EnginePort | None = None
        self._echo_pending = 0
        self._echo_idle = trio.Event()
        self._echo_idle.set()
        self.delivered_count = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
        task_status.started()
        try:
            async for event in self._echo_receive:
                try:
                    await self._echo(event)
                finally:
                    self._echo_pending -= 1
                    if not self._echo_pending:
                        self._echo_idle.set()
        finally:
            self._port = None

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        if self._crashes_left.get(event.destination, 0) > 0:
            self._crashes_left[event.destination] -= 1
            raise InjectedCrash(f"injected crash delivering to {event.destination}")
        if self._failures:
            raise self._failures.pop(0)
        if self._known_users is not None and event.destination not in self._known_users:
            raise DeliveryError("unknown-user")
        message_id = f"{self._name}-{next(self._ids)}"
        self.delivered_count += 1
        if log.isEnabledFor(logging.INFO):
            log.info("loopback delivered", extra={
                "adapter": self._name, "kind": event.log_type, "event_id": event.event_id,
                "source": str(event.source), "destination": str(event.destination)})
        if self._keep_outbox:
            try:
                self._outbox_send.send_nowait(event)
            except trio.WouldBlock:
                raise DeliveryError("loopback-outbox-full", retryable=True) from None
        if event.destination in self._echo_users and isinstance(event, Message | ContactRequest):
            try:
                self._echo_send.send_nowait(event)
                self._echo_pending += 1
                self._echo_idle = trio.Event() if self._echo_idle.is_set() else self._echo_idle
            except trio.WouldBlock:
                log.warning("echo queue full", extra={"adapter": self._name})
        conversation = session.session_id if session is not None else ""
        return DeliveryResult(platform_message_id=message_id, conversation_id=conversation)

    # -- test and demo surface -------------------------------------------------
    async def send(self, event: Event) -> None:
        """Submit ``event`` to the engine as if this platform had received it."""
        if self._port is None:
            raise LocalError(f"loopback adapter {self._name!r} is not running")
        await self._port.submit(event)

    async def next_delivered(self) -> Event:
        """The next event the engine delivered to this platform (waits for one)."""
        return await self._outbox_receive.receive()

    def delivered_nowait(self) -> list[Event]:
        """Every delivered event not yet read, without waiting."""
        events = []
        while True:
            try:
                events.append(self._outbox_receive.receive_nowait())
            except trio.WouldBlock:
                return events

    @property
    def echo_pending(self) -> int:
        """Echo replies queued or being submitted."""
        return self._echo_pending

    async def wait_echo_idle(self) -> None:
        """Wait until every queued echo reply has been submitted."""
        await self._echo_idle.wait()

    def fail_next(self, reason: str, *, retryable: bool = False, times: int = 1) -> None:
        """Make the next ``times`` deliveries fail with ``reason``."""
        self._failures.extend(DeliveryError(reason, retryable=retryable) for _ in range(times))

    async def _echo(self, event: Event) -> None:
        assert self._port is not None
        now = self._port.clock.now()
        reply: Event
        if isinstance(event, ContactRequest):
            reply = ContactAccept(source=event.destination, destination=event.source,
                                  timestamp=now)
        else:
            assert isinstance(event, Message)
            reply = Message(source=event.destination, destination=event.source,
                            body=event.body, text=event.text, timestamp=now,
                            platform_ids={self._name: f"{self._name}-echo-{next(self._ids)}"})
        try:
            await self._port.submit(reply)
        except UnavailableError as exc:  # the engine is stopping: the echo is not sent
            log.warning("echo not routed", extra={"adapter": self._name,
                                                  "error_type": type(exc).__name__})
