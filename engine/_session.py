"""Session and contact actors: where routed events are handled, in order.

A **session actor** owns one conversation (two addresses). For each event it
validates message references (edits, reactions and replies must name a
message the session knows), keeps contact records, adapts the event to what
the destination can express, delivers it (retrying transient failures with
backoff inside a bounded window, holding later events back so that order is
kept), records the message-id map, writes one metadata entry, and reports the
outcome to the sender.

A **contact actor** owns one address's broadcasts (presence, profile): it
remembers the latest and fans them out to every accepted contact.
"""

from __future__ import annotations

import itertools
import logging
import time

import msgspec
import trio

from ._adapter import Adapter, DeliveryError, DeliveryResult
from ._backoff import Backoff
from ._degrade import degrade
from ._directory import ContactRecord, MessageIdRecord, SessionRecord
from ._errors import LocalError
from ._events import (
    BaseEvent,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Event,
    FileShare,
    Message,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    delivered_outcome,
    failed_outcome,
    new_event_id,
)
from ._metadata_log import MetadataEntry, Outcome
from ._router import Router

log = logging.getLogger("interlink.session")

#: why a redelivered event a crash interrupted is not delivered again (see
#: :meth:`SessionActor._before_ledgered_delivery`)
REDELIVERED_UNCONFIRMED = "engine restart; it may have arrived before, not sent again"

# isinstance() with a tuple: an `X | Y` union would be built on every call (hot path)
_TARGETS_A_MESSAGE = (Edit, Retract, ReactionAdd, ReactionRemove)
_POSTS_A_MESSAGE = (Message, FileShare)
_CHANGES_CONTACTS = (ContactRequest, ContactAccept, ContactRemove)


class DeliverySettings(msgspec.Struct, frozen=True, kw_only=True):
    #: how long transient delivery failures are retried before the sender is told
    retry_window: float = 30.0
    #: after a restart, how long events a crash interrupted wait for their platform
    #: to redeliver them before their senders are told to resend
    restart_grace: float = 60.0
    #: seconds an adapter may take to tell whether an interrupted event arrived
    confirm_timeout: float = 10.0
    initial_backoff: float = 0.2
    max_backoff: float = 5.0


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionActor:
    def __init__(self, router: Router, record: SessionRecord,
                 settings: DeliverySettings) -> None:
        self._router = router
        self._record = record
        self._settings = settings

    @property
    def record(self) -> SessionRecord:
        return self._record

    async def handle(self, event: Event) -> None:
        # One coroutine for the common path: every layer of awaits costs a
        # coroutine object per event, so the steps that never wait are plain calls.
        started = time.perf_counter()
        router = self._router
        record = self._record
        try:
            if event.source not in (record.a, record.b) or \
                    event.destination not in (record.a, record.b):
                raise _Failed("not-in-session")
            self._check_references(event)
            adapter = router.adapter_for(event.destination.domain)
            if adapter is None:
                raise _Failed(f"platform-unavailable:{event.destination.domain}")
            if isinstance(event, _CHANGES_CONTACTS):
                await self._update_contacts(event)
            outgoing = degrade(event, adapter.capabilities)
            if outgoing is None:
                await self._log(event, "delivered", "unsupported-by-destination")
                await router.settle_ledger(event.event_id)
                return
            if event.event_id in router.ledgered:
                await self._before_ledgered_delivery(router, adapter, event.event_id)
            try:
                result = await adapter.deliver(outgoing, record)
            except DeliveryError as exc:
                if not exc.retryable:
                    router.count_outbound(adapter.name, outgoing.log_type, "failed")
                    raise _Failed(exc.reason) from exc
                result = await self._retry_delivery(adapter, outgoing, exc)
            router.count_outbound(adapter.name, outgoing.log_type, "delivered")
        except _Failed as failure:
            await self._log(event, "failed", failure.reason)
            if event.wants_outcome:
                await router.notify_sender(
                    failed_outcome(event, failure.reason, timestamp=router.clock.now()),
                    self._record)
            await router.settle_ledger(event.event_id)
            return
        finally:
            router.handle_latency.observe(time.perf_counter() - started)
        await self._remember(adapter, event, result)
        entry = self._entry(event, "delivered", "")
        if not router.metadata_log.record_nowait(entry):  # no coroutine while it has room
            await router.metadata_log.record(entry)
        if event.event_id in router.ledgered:
            await router.settle_ledger(event.event_id)
        if event.wants_outcome:
            source_adapter = router.adapter_for(event.source.domain)
            if source_adapter is not None and \
                    "delivery_receipts" in source_adapter.capabilities:
                await router.notify_sender(
                    delivered_outcome(event, timestamp=router.clock.now()), self._record)

    def _check_references(self, event: Event) -> None:
        directory = self._router.directory
        if isinstance(event, _TARGETS_A_MESSAGE):
            target = directory.get_message_ids(event.target_id)
            if target is None or target.session_id != self._record.session_id:
                raise _Failed("unknown-message")
        elif isinstance(event, Message):
            for ref in (event.reply_to, event.thread_id):
                if ref and directory.get_message_ids(ref) is None:
                    raise _Failed("unknown-message")

    async def _update_contacts(self, event: Event) -> None:
        directory = self._router.directory
        now = self._router.clock.now()
        source, destination = event.source, event.destination
        if isinstance(event, ContactRequest):
            existing = directory.get_contact(source, destination)
            if existing is not None and existing.state == "accepted":
                return
            state, requested_by = "pending", source
        elif isinstance(event, ContactAccept):
            pending = directory.get_contact(source, destination)
            if pending is not None and pending.state == "accepted":
                return  # accepting twice is harmless: pass it on, change nothing
            if pending is None or pending.state != "pending" or pending.requested_by == source:
                raise _Failed("no-pending-request")
            state, requested_by = "accepted", pending.requested_by
        elif isinstance(event, ContactRemove):
            state, requested_by = "removed", source
        else:
            return
        for owner, contact in ((source, destination), (destination, source)):
            await directory.put_contact(ContactRecord(
                owner=owner, contact=contact, state=state,  # type: ignore[arg-type]
                requested_by=requested_by, updated_at=now))

    async def _retry_delivery(self, adapter: Adapter, event: Event,
                              first: DeliveryError) -> DeliveryResult:
        """Retry a transient failure with backoff within the retry window; later events
        of the session wait meanwhile, so order is kept."""
        settings = self._settings
        policy = Backoff(initial=settings.initial_backoff, maximum=settings.max_backoff)
        deadline = trio.current_time() + settings.retry_window
        error = first
        count = self._router.count_outbound
        for attempt in itertools.count(1):
            if trio.current_time() + policy.base(attempt) > deadline:
                break
            count(adapter.name, event.log_type, "retried")
            delay = policy.delay(attempt)
            log.info("delivery will retry", extra={
                "session_id": self._record.session_id, "event_id": event.event_id,
                "reason": error.reason, "backoff_s": round(delay, 3)})
            await trio.sleep(delay)
            try:
                return await adapter.deliver(event, self._record)
            except DeliveryError as exc:
                if not exc.retryable:
                    count(adapter.name, event.log_type, "failed")
                    raise _Failed(exc.reason) from exc
                error = exc
        count(adapter.name, event.log_type, "failed")
        raise _Failed(error.reason) from error

    @staticmethod
    async def _before_ledgered_delivery(router: Router, adapter: Adapter, event_id: str) -> None:
        """A ledgered event is delivered only once its record is durable; one a crash
        interrupted and its platform delivered again only to an adapter that finds an
        earlier delivery itself (``delivers_idempotently``): elsewhere it may already be
        there, so its sender is told instead of it arriving twice."""
        await router.wait_ledger_durable(event_id)
        if event_id in router.redelivered and \
                not getattr(adapter, "delivers_idempotently", False):
            raise _Failed(REDELIVERED_UNCONFIRMED)

    async def _remember(self, adapter: Adapter, event: Event, result: DeliveryResult) -> None:
        directory = self._router.directory
        if result.platform_message_id and isinstance(event, _POSTS_A_MESSAGE):
            await directory.put_message_ids(MessageIdRecord(
                canonical_id=event.event_id, session_id=self._record.session_id,
                platform_ids={**event.platform_ids, adapter.name: result.platform_message_id},
                created_at=event.timestamp or self._router.clock.now()))
        conversations = self._record.conversation_ids
        if result.conversation_id and conversations.get(adapter.name) != result.conversation_id:
            self._record = msgspec.structs.replace(
                self._record, conversation_ids={**conversations,
                                                adapter.name: result.conversation_id})
            await directory.put_session(self._record)

    async def _log(self, event: BaseEvent, outcome: Outcome, reason: str) -> None:
        await self._router.metadata_log.record(self._entry(event, outcome, reason))

    def _entry(self, event: BaseEvent, outcome: Outcome, reason: str) -> MetadataEntry:
        return MetadataEntry(
            timestamp=self._router.clock.now(), event_id=event.event_id, sender=event.source,
            receiver=event.destination, type=event.log_type,
            session_id=self._record.session_id, outcome=outcome, reason=reason)


class ContactActor:
    """Fans one address's presence and profile out to its accepted contacts."""

    def __init__(self, router: Router, address_text: str) -> None:
        self._router = router
        self._address_text = address_text
        self.presence: Presence | None = None
        self.profile: Profile | None = None

    async def handle(self, event: Event) -> None:
        if isinstance(event, Presence):
            self.presence = event
        elif isinstance(event, Profile):
            self.profile = event
        else:
            raise LocalError(f"contact actor got a {type(event).__name__}")
        router = self._router
        for contact in router.directory.list_contacts(event.source):
            if contact.state != "accepted":
                continue
            await router.route(msgspec.structs.replace(
                event, destination=contact.contact, event_id=new_event_id(), session_id=""))


class NoticeActor:
    """Delivers refusal notices to one sender, in order, off every inbound path.

    Why an actor: the notice is the *sender's* platform's outbound I/O; the
    router hands it here (``tell_nowait``) so an inbound edge answers its
    platform at once, and a slow sender platform delays only its own notices.
    """

    def __init__(self, router: Router) -> None:
        self._router = router

    async def handle(self, outcome: DeliveryOutcome) -> None:
        await self._router.notify_sender(outcome, None)
