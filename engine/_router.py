"""The router: inbound event -> policy -> session -> the session actor's mailbox.

Refusals never vanish: an unknown address, a domain no platform serves, a
platform that is not connected, or a policy refusal each become a
delivery-failed outcome back to the sender (for events that want one) and a
``refused`` metadata entry with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from ._actors import ActorRef, ActorSystem
from ._adapter import Adapter, DeliveryError
from ._address import Address
from ._clock import Clock
from ._degrade import degrade
from ._directory import (
    Directory,
    LedgerRecord,
    SessionRecord,
    ordered_pair,
    session_id_for,
)
from ._errors import InterlinkError
from ._events import (
    ChannelInvite,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Error,
    Event,
    FileShare,
    Message,
    Presence,
    Profile,
    failed_outcome,
)
from ._metadata_log import MetadataEntry, MetadataLog
from ._policy import FederationPolicy, PolicyDecision
from ._stats import AdapterStats, LatencyHistogram, OutboundOutcome

log = logging.getLogger("interlink.router")

SESSION_KIND = "session"
CONTACT_KIND = "contact"
#: one actor per sender that delivers refusal notices to it, off the inbound path
NOTICE_KIND = "notice"

#: events that flow whatever the contact state (they manage or report it)
_CONTACT_FREE = (ContactRequest, ContactAccept, ContactRemove, DeliveryOutcome, Error,
                 ChannelInvite)


#: entries in each of the router's caches (decisions per pair, refs per session)
CACHE_LIMIT = 16_384


@runtime_checkable
class _PolicyVersioned(Protocol):
    """A directory that says when policy data (routes, agreements, user policies) changed."""

    @property
    def policy_version(self) -> int: ...

# a tuple, not `Presence | Profile`: a union would be built on every routed event
_ABOUT_ONESELF = (Presence, Profile)
#: events whose delivery writes the message-id map (so a redelivery is recognised)
_POSTS_A_MESSAGE = (Message, FileShare)


class RoutingSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: conversation events need an accepted contact between the two parties
    require_accepted_contact: bool = True


class Router:
    def __init__(
        self,
        *,
        directory: Directory,
        policy: FederationPolicy,
        actors: ActorSystem,
        metadata_log: MetadataLog,
        clock: Clock,
        adapters: Mapping[str, Adapter],
        settings: RoutingSettings | None = None,
        adapter_stats: Mapping[str, AdapterStats] | None = None,
    ) -> None:
        self.directory = directory
        self.policy = policy
        self.actors = actors
        self.metadata_log = metadata_log
        self.clock = clock
        self.adapters = adapters
        self.settings = settings or RoutingSettings()
        #: each adapter's measurements, by name: sessions count their deliveries there
        self.adapter_stats: Mapping[str, AdapterStats] = adapter_stats or {}
        self.routed = 0
        self.refused = 0
        #: redeliveries of events taken before, not routed again
        self.duplicates = 0
        #: ids of offered events whose ledger record is open in this run
        #: ledgered events in flight: event id -> the directory's durable mark of its record
        self.ledgered: dict[str, int] = {}
        #: events a crash interrupted that their platform delivered again: event id ->
        #: when the first copy was accepted (it may have been delivered before the crash)
        self.redelivered: dict[str, float] = {}
        #: records a crash left open, until redelivered or resolved at start-up
        self.interrupted: dict[str, LedgerRecord] = {}
        #: time from an inbound event to its place in a session's mailbox
        self.route_latency = LatencyHistogram()
        #: time a session spends handling one event (delivery included)
        self.handle_latency = LatencyHistogram()
        # Hot-path caches. Policy decisions per (source, destination), valid
        # while the directory's policy version is unchanged (only when the
        # directory has one); actor refs per session id. Both are bounded:
        # emptied when full.
        self._versioned = directory if isinstance(directory, _PolicyVersioned) else None
        self._decisions: dict[tuple[Address, Address], PolicyDecision] = {}
        self._decisions_version = -1
        self._session_refs: dict[str, ActorRef[Any]] = {}
        self._find_session_id: Callable[[Address, Address], str | None] | None = getattr(
            directory, "find_session_id", None)

    def count_outbound(self, adapter: str, event_type: str, outcome: OutboundOutcome) -> None:
        """One delivery attempt to ``adapter``: ``delivered``, ``failed`` or ``retried``."""
        stats = self.adapter_stats.get(adapter)
        if stats is not None:
            stats.count_outbound(event_type, outcome)

    def adapter_for(self, domain: str) -> Adapter | None:
        route = self.directory.get_domain_route(domain)
        return None if route is None else self.adapters.get(route.platform)

    async def route(self, event: Event, *, wait: bool = True) -> bool:
        """Route one inbound event. Returns once it is in a mailbox or refused: ``True``,
        or ``False`` for a duplicate of an event taken before (not routed again).

        ``wait=False`` (what adapters' inbound edges use) never waits for
        mailbox room: a full mailbox raises :class:`MailboxFullError` with
        nothing routed, so the adapter can give its platform's "busy" answer.
        One coroutine (no inner helper): it runs once per inbound event."""
        started = time.perf_counter()
        try:
            source, destination = event.source, event.destination
            if source == destination and isinstance(event, _ABOUT_ONESELF):
                # A broadcast: the contact actor fans it out to everyone subscribed.
                contact = self.actors.ref(f"{CONTACT_KIND}/{source}")
                if wait:
                    await contact.tell(event)
                else:
                    contact.tell_nowait(event)
                return True
            reason = self.refusal(event)
            if reason is not None:
                await self.refuse(event, reason)
                return True
            session_id = event.session_id
            if not session_id:
                found = self._session_id(source, destination)
                session_id = found if found is not None else \
                    (await self._create_session(event)).session_id
                event = msgspec.structs.replace(event, session_id=session_id)
            ref = self._session_refs.get(session_id)
            if ref is None:
                if len(self._session_refs) >= CACHE_LIMIT:
                    self._session_refs.clear()
                ref = self.actors.ref(f"{SESSION_KIND}/{session_id}")
                self._session_refs[session_id] = ref
            if wait:
                await ref.tell(event)
            elif event.wants_outcome:
                if self._is_duplicate(event):
                    return False
                await self._accept(event, session_id, ref)
            else:
                ref.tell_nowait(event)
            self.routed += 1
            return True
        finally:
            self.route_latency.observe(time.perf_counter() - started)

    def _is_duplicate(self, event: Event) -> bool:
        """A platform's redelivery of an event taken before: in flight in this run, or a
        message already delivered (its id is in the message-id map, which outlives a
        restart and every platform's retry window). Taken again, it is not routed."""
        event_id = event.event_id
        if event_id in self.ledgered or (
                isinstance(event, _POSTS_A_MESSAGE)
                and self.directory.get_message_ids(event_id) is not None):
            self.duplicates += 1
            log.info("duplicate event not routed again", extra={
                "event_id": event_id, "kind": event.log_type})
            return True
        return False

    async def _accept(self, event: Event, session_id: str, ref: ActorRef[Any]) -> None:
        """Ledger an inbound event, then queue it: the record is in the store's
        generation before the session can resolve it, and gone again if the
        mailbox is full (both usually in one commit, so neither reaches disk)."""
        event_id = event.event_id
        await self.directory.put_ledger(LedgerRecord(
            event_id=event_id, sender=event.source, receiver=event.destination,
            type=event.log_type, session_id=session_id, accepted_at=self.clock.now()))
        self.ledgered[event_id] = self.directory.durable_mark()
        interrupted = self.interrupted.pop(event_id, None)
        if interrupted is not None:  # its first copy may have been delivered before the crash
            self.redelivered[event_id] = interrupted.accepted_at
        try:
            ref.tell_nowait(event)
        except BaseException:
            await self.settle_ledger(event_id)
            raise

    async def settle_ledger(self, event_id: str) -> None:
        """``event_id`` was delivered or its sender told: drop its ledger record."""
        if event_id in self.ledgered:
            del self.ledgered[event_id]
            self.redelivered.pop(event_id, None)
            await self.directory.resolve_ledger(event_id)

    async def wait_ledger_durable(self, event_id: str) -> None:
        """Before ``event_id`` is delivered: wait until its ledger record is durable, so
        a crash after the delivery leaves a record (never a redelivery the restarted
        engine takes for new); at once when it is already (the usual case under load:
        the group commit that took it has landed while it waited in the mailbox)."""
        mark = self.ledgered.get(event_id)
        if mark:
            await self.directory.wait_durable(mark)

    def may_have_delivered(self, event_id: str) -> float | None:
        """``EnginePort.may_have_delivered``: when the first copy of ``event_id`` was
        accepted, if a crash interrupted it and its platform delivered it again."""
        return self.redelivered.get(event_id)

    def refusal(self, event: Event) -> str | None:
        """Why the router would refuse ``event`` now (content-free), or ``None``.

        Adapters that must answer their platform before routing (a
        stanza error) ask this instead of copying the rules."""
        source, destination = event.source, event.destination
        directory = self.directory
        route = directory.get_domain_route(destination.domain)
        if route is None:
            return f"no-route:{destination.domain}"
        if route.platform not in self.adapters:
            return f"platform-unavailable:{route.platform}"
        if route.internal and directory.get_identity(destination) is None:
            return "unknown-address"
        decision = self.check_policy(source, destination)
        if not decision.allowed:
            return decision.reason
        if self.settings.require_accepted_contact and not isinstance(event, _CONTACT_FREE):
            contact = directory.get_contact(source, destination)
            if contact is None or contact.state != "accepted":
                return "not-a-contact"
        return None

    def check_policy(self, source: Address, destination: Address) -> PolicyDecision:
        """``policy.check``, answered from a per-pair cache while policy data is unchanged."""
        versioned = self._versioned
        if versioned is None:
            return self.policy.check(source, destination)
        version = versioned.policy_version
        decisions = self._decisions
        if version != self._decisions_version or len(decisions) >= CACHE_LIMIT:
            decisions.clear()
            self._decisions_version = version
        decision = decisions.get((source, destination))
        if decision is None:
            decision = decisions[source, destination] = self.policy.check(source, destination)
        return decision

    def _session_id(self, source: Address, destination: Address) -> str | None:
        """The pair's session id; skips decoding the record where the directory can."""
        if self._find_session_id is not None:
            return self._find_session_id(source, destination)
        record = self.directory.find_session(source, destination)
        return None if record is None else record.session_id

    async def _create_session(self, event: Event) -> SessionRecord:
        a, b = ordered_pair(event.source, event.destination)
        record = SessionRecord(session_id=session_id_for(a, b), a=a, b=b,
                               created_at=self.clock.now())
        await self.directory.put_session(record)
        log.info("session created", extra={"session_id": record.session_id,
                                           "a": str(a), "b": str(b)})
        return record

    async def refuse(self, event: Event, reason: str) -> None:
        """Log a refusal and tell the sender, when the event wants an outcome.

        The notice goes through the sender's notice actor, never inline: an
        inbound edge must not wait on the sender platform's outbound I/O."""
        self.refused += 1
        await self.metadata_log.record(MetadataEntry(
            timestamp=self.clock.now(), event_id=event.event_id, sender=event.source,
            receiver=event.destination, type=event.log_type, session_id=event.session_id,
            outcome="refused", reason=reason))
        log.info("event refused", extra={"event_id": event.event_id, "kind": event.log_type,
                                         "reason": reason})
        if event.wants_outcome:
            self.notify_sender_later(failed_outcome(event, reason, timestamp=self.clock.now()))

    def notify_sender_later(self, outcome: DeliveryOutcome) -> None:
        """Queue ``outcome`` for the sender's notice actor (one per sender, in order)."""
        try:
            self.actors.ref(f"{NOTICE_KIND}/{outcome.destination}").tell_nowait(outcome)
        except InterlinkError as exc:  # a full notice mailbox: a sender flooding refusals
            log.warning("outcome not delivered", extra={
                "event_id": outcome.target_event_id, "status": outcome.status,
                "reason": type(exc).__name__})

    async def notify_sender(self, outcome: DeliveryOutcome,
                            session: SessionRecord | None) -> None:
        """Deliver an outcome straight to the sender's adapter (never re-routed)."""
        adapter = self.adapter_for(outcome.destination.domain)
        if adapter is None:
            log.warning("outcome has nowhere to go", extra={
                "event_id": outcome.target_event_id, "status": outcome.status})
            return
        notice = degrade(outcome, adapter.capabilities)
        if notice is None:
            return
        try:
            await adapter.deliver(notice, session)
        except DeliveryError as exc:
            self.count_outbound(adapter.name, notice.log_type, "failed")
            log.warning("outcome not delivered", extra={
                "event_id": outcome.target_event_id, "status": outcome.status,
                "reason": exc.reason})
            return
        self.count_outbound(adapter.name, notice.log_type, "delivered")
        if outcome.status == "failed":
            await self.metadata_log.record(MetadataEntry(
                timestamp=self.clock.now(), event_id=outcome.event_id,
                sender=outcome.source, receiver=outcome.destination, type="error",
                session_id=outcome.session_id, outcome="delivered", reason=outcome.reason))
