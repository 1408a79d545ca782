"""The engine: one object that wires the core together and runs it.

    adapters --submit--> Router --tell--> session actor --deliver--> adapter
                                  \\-----> contact actor --route--> ...

Each adapter talks to the engine through its own :class:`EnginePort`
(:meth:`Engine.port_for`), which counts the adapter's inbound events in its
:class:`AdapterStats`; ``Engine`` is an ``EnginePort`` too (counting nothing).

Stopping is graceful: :meth:`Engine.stop` first refuses new inbound events
(adapters then leave them unacknowledged, so their platforms redeliver), then
waits for every mailbox to drain (bounded by ``drain_timeout``), then flushes
the metadata log and the directory.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NamedTuple

import msgspec
import trio

from ._actors import Actor, ActorFailedError, ActorKind, ActorSystem
from ._adapter import Adapter, EnginePort, FindsDeliveries
from ._address import Address
from ._clock import Clock, SystemClock
from ._directory import Directory, LedgerRecord, MessageIdRecord
from ._errors import LocalError, RemoteError, UnavailableError
from ._events import DeliveryOutcome, Event, failed_outcome, new_event_id
from ._metadata_log import MetadataEntry, MetadataLog
from ._policy import FederationPolicy
from ._router import CONTACT_KIND, NOTICE_KIND, SESSION_KIND, Router, RoutingSettings
from ._session import ContactActor, DeliverySettings, NoticeActor, SessionActor
from ._stats import AdapterStats

log = logging.getLogger("interlink.engine")


class Service(NamedTuple):
    """A long-running task: ``await nursery.start(service.start)`` runs it."""

    group: str
    name: str
    start: Callable[..., Awaitable[object]]


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    shard_count: int = 16
    mailbox_capacity: int = 1000
    session_idle_timeout: float = 300.0
    contact_idle_timeout: float = 900.0
    sweep_interval: float = 1.0
    max_attempts: int = 3
    #: per actor: more crashes than this within restart_window marks it failed
    max_restarts: int = 10
    restart_window: float = 60.0
    drain_timeout: float = 10.0
    #: an event offered while the engine starts (an adapter's platform redelivering
    #: its backlog the moment it connects, before the last service is up) waits this
    #: long for the engine to open rather than being refused and retried much later
    start_wait: float = 30.0
    #: edits, reactions and replies can name messages up to this old
    message_id_retention_days: float = 30.0
    housekeeping_interval: float = 3600.0
    routing: RoutingSettings = RoutingSettings()
    delivery: DeliverySettings = DeliverySettings()


class Engine:
    def __init__(
        self,
        *,
        directory: Directory,
        metadata_log: MetadataLog,
        adapters: Sequence[Adapter],
        clock: Clock | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self._clock = clock or SystemClock()
        self._directory = directory
        self.metadata_log = metadata_log
        names = [a.name for a in adapters]
        if len(set(names)) != len(names):
            raise LocalError(f"adapter names must be unique, got {names}")
        self.adapters = {a.name: a for a in adapters}
        self.actors = ActorSystem(shard_count=self.settings.shard_count,
                                  mailbox_capacity=self.settings.mailbox_capacity,
                                  sweep_interval=self.settings.sweep_interval)
        self._adapter_stats = {name: AdapterStats(name) for name in self.adapters}
        self.policy = FederationPolicy(directory)
        self.router = Router(directory=directory, policy=self.policy, actors=self.actors,
                             metadata_log=metadata_log, clock=self._clock,
                             adapters=self.adapters, settings=self.settings.routing,
                             adapter_stats=self._adapter_stats)
        for kind, activate, idle in (
            (SESSION_KIND, self._activate_session, self.settings.session_idle_timeout),
            (CONTACT_KIND, self._activate_contact, self.settings.contact_idle_timeout),
            (NOTICE_KIND, self._activate_notice, self.settings.contact_idle_timeout),
        ):
            self.actors.register(ActorKind(
                kind, activate, idle_timeout=idle, max_attempts=self.settings.max_attempts,
                max_restarts=self.settings.max_restarts,
                restart_window=self.settings.restart_window,
                on_undeliverable=self._undeliverable))
        self._accepting = False
        self._opened = trio.Event()
        #: events a crash had left accepted, resolved since start (``/metrics``)
        self.ledger_resolved_at_start = 0
        self._cancel_scope: trio.CancelScope | None = None
        self._ports = {name: _AdapterPort(self, stats)
                       for name, stats in self._adapter_stats.items()}

    # -- EnginePort ---------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def directory(self) -> Directory:
        return self._directory

    def submit(self, event: Event) -> Coroutine[Any, Any, bool]:
        """``EnginePort.submit``: the router's coroutine itself (no extra layer per event);
        raises at once while the engine is not accepting events."""
        if not self._accepting:
            return self._when_open(event, wait=True)
        return self.router.route(event)

    def offer(self, event: Event) -> Coroutine[Any, Any, bool]:
        """``EnginePort.offer``: like :meth:`submit`, but a full mailbox raises
        :class:`MailboxFullError` at once (nothing routed) instead of waiting; ``False``
        for a duplicate of an event taken before (not routed again)."""
        if not self._accepting:
            return self._when_open(event, wait=False)
        return self.router.route(event, wait=False)

    def _when_open(self, event: Event, *, wait: bool) -> Coroutine[Any, Any, bool]:
        """While starting: route ``event`` once the engine opens (within ``start_wait``);
        while stopping, or once stopped: refuse at once (``UnavailableError``)."""
        if self._opened.is_set():
            raise UnavailableError("the engine is not accepting events (stopping)")

        async def route_when_open() -> bool:
            with trio.move_on_after(self.settings.start_wait):
                await self._opened.wait()
            if not self._accepting:
                raise UnavailableError("the engine is not accepting events (starting)")
            return await self.router.route(event, wait=wait)

        return route_when_open()

    def refusal(self, event: Event) -> str | None:
        """``EnginePort.refusal``: why the router would refuse ``event``, or ``None``."""
        return self.router.refusal(event)

    async def record_rejected(self, *, sender: Address, receiver: Address, reason: str,
                              event_id: str = "") -> None:
        await self.metadata_log.record(MetadataEntry(
            timestamp=self._clock.now(), event_id=event_id or new_event_id(), sender=sender,
            receiver=receiver, type="error", outcome="refused", reason=reason))
        log.info("platform event rejected", extra={"reason": reason, "sender": str(sender),
                                                   "receiver": str(receiver)})

    def may_have_delivered(self, event_id: str) -> float | None:
        """``EnginePort.may_have_delivered``."""
        return self.router.may_have_delivered(event_id)

    def adapter_stats(self, adapter: str) -> AdapterStats:
        """``EnginePort.adapter_stats``: one per adapter name, made with the engine (or at
        the first question, for an adapter the engine does not run)."""
        stats = self._adapter_stats.get(adapter)
        if stats is None:
            stats = self._adapter_stats[adapter] = AdapterStats(adapter)
        return stats

    def all_adapter_stats(self) -> list[AdapterStats]:
        """Every adapter's measurements, by name (what ``/metrics`` reads)."""
        return [self._adapter_stats[name] for name in sorted(self._adapter_stats)]

    def port_for(self, adapter: str) -> EnginePort:
        """The port the adapter named ``adapter`` runs with: the engine's, plus counts of
        its inbound events in its :class:`AdapterStats`."""
        port = self._ports.get(adapter)
        if port is None:
            port = self._ports[adapter] = _AdapterPort(self, self.adapter_stats(adapter))
        return port

    # -- actors ---------------------------------------------------------------
    async def _activate_session(self, actor_id: str) -> Actor:
        session_id = actor_id.partition("/")[2]
        record = self._directory.get_session(session_id)
        if record is None:
            raise LocalError(f"session {session_id} is not in the directory")
        return SessionActor(self.router, record, self.settings.delivery)

    async def _activate_contact(self, actor_id: str) -> Actor:
        return ContactActor(self.router, actor_id.partition("/")[2])

    async def _activate_notice(self, actor_id: str) -> Actor:
        return NoticeActor(self.router)

    async def _undeliverable(self, actor_id: str, message: Any, error: BaseException) -> None:
        """An event whose handler kept crashing: log it and tell its sender."""
        if not isinstance(message, msgspec.Struct) or not hasattr(message, "log_type"):
            return
        event: Event = message  # type: ignore[assignment]
        reason = "actor-failed" if isinstance(error, ActorFailedError) \
            else f"internal-error:{type(error).__name__}"
        await self.metadata_log.record(MetadataEntry(
            timestamp=self._clock.now(), event_id=event.event_id, sender=event.source,
            receiver=event.destination, type=event.log_type, session_id=event.session_id,
            outcome="failed", reason=reason))
        if event.wants_outcome:
            await self.router.notify_sender(
                failed_outcome(event, reason, timestamp=self._clock.now()), None)
        await self.router.settle_ledger(event.event_id)

    # -- lifecycle ------------------------------------------------------------
    def services(self) -> list[Service]:
        """Every long-running task of the engine, in start order, grouped.

        :meth:`run` starts them in one nursery; ``interlink run`` instead
        gives each group its own supervisor. Adapters come last, so nothing
        is received before everything that handles it runs.
        """
        services = [Service("storage", "metadata-log-writer", self.metadata_log.run)]
        services += [Service(kind, shard.name, shard.run)
                     for kind in (SESSION_KIND, CONTACT_KIND, NOTICE_KIND)
                     for shard in self.actors.shards(kind)]
        services.append(Service("engine", "housekeeping", self._housekeeping))
        services.append(Service("engine", "ledger-recovery", self._recover_ledger))
        services += [Service("adapters", adapter.name,
                             functools.partial(adapter.run, self.port_for(adapter.name)))
                     for adapter in self.adapters.values()]
        return services

    def open_for_events(self) -> None:
        """Start accepting inbound events (once every service has started)."""
        self._accepting = True
        self._opened.set()
        log.info("engine started", extra={"adapters": list(self.adapters)})

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every service until cancelled or :meth:`stop`."""
        with trio.CancelScope() as scope:
            self._cancel_scope = scope
            async with trio.open_nursery() as nursery:
                for service in self.services():
                    await nursery.start(service.start)
                self.open_for_events()
                task_status.started()
        self._accepting = False

    async def _housekeeping(self, *,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the message-id map bounded by age."""
        task_status.started()
        while True:
            cutoff = self._clock.now() - self.settings.message_id_retention_days * 86_400
            removed = await self._directory.prune_message_ids(cutoff)
            if removed:
                log.info("message ids pruned", extra={"removed": removed})
            await trio.sleep(self.settings.housekeeping_interval)

    async def _recover_ledger(self, *,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                              ) -> None:
        """Resolve the events a crash left accepted and not known to be delivered.

        Each waits ``restart_grace`` for the adapters to come up and its platform
        to redeliver it (a redelivery is delivered again only by an adapter that
        finds an earlier copy itself, ``delivers_idempotently``; elsewhere its
        sender is told, see ``SessionActor``). Then one whose message-id record
        reached disk was delivered (logged ``delivered``, no notice); for the
        rest, the sender is told on their own platform that delivery was not
        confirmed and when it was sent (never its content), and the metadata log
        records ``failed:engine-restart``."""
        records = self._directory.open_ledger()
        for record in records:
            self.router.interrupted[record.event_id] = record
        task_status.started()
        if records:
            log.warning("events interrupted by a restart", extra={"count": len(records)})
            await self._opened.wait()
            await trio.sleep(self.settings.delivery.restart_grace)
            resolved = 0
            for event_id, record in list(self.router.interrupted.items()):
                del self.router.interrupted[event_id]
                await self._resolve_interrupted(record)
                resolved += 1
            self.ledger_resolved_at_start += resolved
            log.info("interrupted events resolved", extra={"resolved": resolved})
        await trio.sleep_forever()

    async def _found_delivered(self, record: LedgerRecord) -> bool:
        """The destination adapter found the interrupted event on its platform (for an
        adapter that can look, :class:`FindsDeliveries`; bounded in time); its id is
        then recorded, as after a delivery."""
        destination = self.router.adapter_for(record.receiver.domain)
        session = self._directory.get_session(record.session_id)
        if not isinstance(destination, FindsDeliveries) or session is None:
            return False
        found: str | None = None
        with trio.move_on_after(self.settings.delivery.confirm_timeout):
            try:
                found = await destination.find_delivered(record.event_id, session,
                                                         record.accepted_at)
            except RemoteError as exc:
                log.info("interrupted event not confirmed", extra={
                    "event_id": record.event_id, "error": str(exc)})
        if found is None:
            return False
        if found:
            await self._directory.put_message_ids(MessageIdRecord(
                canonical_id=record.event_id, session_id=record.session_id,
                platform_ids={destination.name: found}, created_at=self._clock.now()))
        return True

    async def _resolve_interrupted(self, record: LedgerRecord) -> None:
        # its message-id record reached disk (only the ledger's resolution was lost),
        # or its destination finds it: delivered
        confirmed = "confirmed" if self._directory.get_message_ids(record.event_id) \
            is not None else "found" if await self._found_delivered(record) else ""
        if confirmed:
            await self.metadata_log.record(MetadataEntry(
                timestamp=self._clock.now(), event_id=record.event_id, sender=record.sender,
                receiver=record.receiver, type=record.type,  # type: ignore[arg-type]
                session_id=record.session_id, outcome="delivered",
                reason=f"engine-restart:{confirmed}"))
            await self._directory.resolve_ledger(record.event_id)
            return
        adapter = self.router.adapter_for(record.sender.domain)
        if adapter is not None:  # the platform that did not redeliver it
            self.adapter_stats(adapter.name).ledger_resolved_at_start += 1
        now = self._clock.now()
        sent = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.accepted_at))
        await self.metadata_log.record(MetadataEntry(
            timestamp=now, event_id=record.event_id, sender=record.sender,
            receiver=record.receiver, type=record.type,  # type: ignore[arg-type]
            session_id=record.session_id, outcome="failed", reason="engine-restart"))
        self.router.notify_sender_later(DeliveryOutcome(
            source=record.receiver, destination=record.sender, session_id=record.session_id,
            target_event_id=record.event_id, status="failed",
            reason=f"engine restart; sent {sent}; not confirmed delivered, please resend if "
                   "it is missing", timestamp=now))
        await self._directory.resolve_ledger(record.event_id)

    async def stop(self) -> None:
        """Graceful stop: refuse new events, drain mailboxes, flush, then cancel."""
        self._accepting = False
        self._opened.set()  # events waiting for a start that will not come are refused
        log.info("engine stopping", extra={"pending": self.actors.pending_messages()})
        with trio.move_on_after(self.settings.drain_timeout) as drain:
            await self.actors.drain()
        if drain.cancelled_caught:
            log.warning("drain timed out", extra={"pending": self.actors.pending_messages()})
        await self.metadata_log.flush()
        await self._directory.flush()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()
        log.info("engine stopped", extra={"routed": self.router.routed,
                                          "refused": self.router.refused})


class _AdapterPort:
    """One adapter's :class:`EnginePort`: the engine's, counting what becomes of the
    adapter's inbound events (a coroutine and a dict update per event: about 0.4 us)."""

    __slots__ = ("_engine", "clock", "directory", "stats")

    def __init__(self, engine: Engine, stats: AdapterStats) -> None:
        self._engine = engine
        self.clock: Clock = engine.clock  # plain attributes: read on every inbound event
        self.directory: Directory = engine.directory
        self.stats = stats

    def __repr__(self) -> str:
        return f"<EnginePort of {self.stats.name}>"

    async def submit(self, event: Event) -> bool:
        try:
            taken = await self._engine.submit(event)
        except UnavailableError:
            self.stats.count_inbound(event.log_type, "busy")
            raise
        self.stats.count_inbound(event.log_type, "accepted" if taken else "duplicate")
        return taken

    async def offer(self, event: Event) -> bool:
        try:
            taken = await self._engine.offer(event)
        except UnavailableError:  # MailboxFullError too: nothing routed, the platform retries
            self.stats.count_inbound(event.log_type, "busy")
            raise
        self.stats.count_inbound(event.log_type, "accepted" if taken else "duplicate")
        return taken

    def refusal(self, event: Event) -> str | None:
        reason = self._engine.refusal(event)
        if reason is not None:  # asked before routing: the adapter refuses it on its platform
            self.stats.count_inbound(event.log_type, "refused")
        return reason

    async def record_rejected(self, *, sender: Address, receiver: Address, reason: str,
                              event_id: str = "") -> None:
        await self._engine.record_rejected(sender=sender, receiver=receiver, reason=reason,
                                           event_id=event_id)

    def may_have_delivered(self, event_id: str) -> float | None:
        return self._engine.router.may_have_delivered(event_id)

    def adapter_stats(self, adapter: str) -> AdapterStats:
        return self._engine.adapter_stats(adapter)
