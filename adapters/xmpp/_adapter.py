"""The XMPP adapter's I/O layer: one component connection, stanzas in and out.

Translation is pure (:mod:`._decode`, :mod:`._encode` and :mod:`._disco`, which
share :mod:`._stanza`); the connection (:mod:`._component`) owns reconnects and
the bounded queue of stanzas sent while disconnected.
This module wires both to the engine:

- **Inbound**: each stanza -> ``decode_stanza`` -> ``port.offer``, which never
  waits for mailbox room. What cannot be translated (malformed, unknown JIDs,
  oversized bodies) and what the router would refuse (``port.refusal``: unknown
  users, strangers, federation policy) is answered with an XMPP error stanza,
  never routed, and logged in the metadata log as an error. A stanza whose
  conversation is busy (a full mailbox) is answered ``wait``/
  ``resource-constraint``: nothing routed, the sender sends it again, and the
  next stanza (another conversation's) is handled at once. Service discovery
  and vCard requests are answered here.
- **Outbound**: ``encode_event`` -> ``connection.send(confirm=True)``: a
  delivery succeeds once the XMPP server has confirmed its stanzas (a round
  trip behind them on the component stream, which has no acks of its own). A
  full queue or a deadline while the server is away is a retryable
  ``DeliveryError``; stanzas written into a connection that was lost before
  the server confirmed them are ``xmpp:unconfirmed``, not retryable (the
  server may have taken them: a retry could duplicate), so the sender is told
  it may not have arrived.
- **Resync**: after every (re)connect, the presence of active contacts is
  probed, so both sides see current presence again.
- **Profiles**: a contact's vCard is asked when they first show up online as
  a contact, and again when their presence advertises a new avatar hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from xml.etree.ElementTree import Element

import msgspec
import trio

from engine import (
    UNKNOWN_TYPE,
    Address,
    Bounded,
    Capability,
    ContactAccept,
    ContactRemove,
    DeliveryError,
    DeliveryResult,
    EnginePort,
    Event,
    FileShare,
    Ignored,
    MailboxFullError,
    Message,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    SessionRecord,
    UnavailableError,
    Untranslatable,
    session_id_for,
)

from ._component import (
    ComponentConnection,
    ComponentUnavailable,
    ComponentUnconfirmed,
    InvalidStanza,
)
from ._decode import Query, answers_refusals, avatar_hash, decode_stanza, receipt_requested
from ._disco import answer_directly, vcard_request
from ._encode import encode_event, message_id_of, resync_presence, subscribe_back
from ._jid import AddressingSettings, AddressMapper, JidError, bare_jid
from ._stanza import (
    BUSY,
    NS_CLIENT,
    OWN_ID_PREFIX,
    RESTARTING,
    REUSED_ID,
    MessageIdLookup,
    StanzaError,
    canonical_id_for,
    error_reply_for,
    refusal_error,
)

log = logging.getLogger("interlink.xmpp")

PLATFORM = "xmpp"
CAPABILITIES: frozenset[Capability] = frozenset({
    "edits", "retractions", "reactions", "typing", "presence", "profiles", "files",
    "contacts", "outcomes", "delivery_receipts", "threads",
})

#: the delivery error of stanzas the server may or may not have taken (not retryable);
#: it says so, as the engine's own notices do when delivery cannot be known
UNCONFIRMED = ("xmpp:unconfirmed; the connection to the XMPP server dropped before it "
               "confirmed the message: it may have arrived, not sent again")

#: host, port and secret of the server's component listener, asked at each start
ServerSource = Callable[[], tuple[str, int, str]]


class XmppSettings(msgspec.Struct, frozen=True, kw_only=True):
    name: str = PLATFORM
    addressing: AddressingSettings
    max_body_bytes: int = 64 * 1024
    queue_limit: int = 10_000
    queue_deadline: float = 30.0
    #: sessions scanned for contacts to probe after a reconnect
    max_resync_sessions: int = 10_000
    #: remembered presences, profiles and vCard hashes (least recent dropped first); the
    #: protocol state of messages (reaction sets, receipt requests) is in the directory
    max_remembered: int = 50_000
    #: the XEP-0100 gateway type the component announces in disco#info; empty: the
    #: platform the directory routes the component's domain to (``"interlink"`` if none)
    gateway_type: str = ""


class XmppStats(msgspec.Struct, kw_only=True):
    stanzas_in: int = 0
    events_submitted: int = 0
    rejected: int = 0
    #: stanzas answered "wait, resource-constraint": their conversation's mailbox was full
    busy: int = 0
    ignored: int = 0
    answered: int = 0
    deliveries: int = 0
    probes_sent: int = 0




class XmppAdapter:
    """Interlink as an XMPP server component (XEP-0114)."""

    def __init__(self, *, settings: XmppSettings, server: ServerSource,
                 connection_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.mapper = AddressMapper(settings.addressing)
        self._server = server
        self._options = connection_options or {}
        self.stats = XmppStats()
        self._port: EnginePort | None = None
        self._connection: ComponentConnection | None = None
        self._connection_key: tuple[str, int, str] | None = None
        #: latest presence and profile of each platform-side (local) user
        self._presence = Bounded(settings.max_remembered)
        self._profiles = Bounded(settings.max_remembered)
        #: remote contacts whose vCard was asked, with the avatar hash they advertised then
        self._vcard_hashes = Bounded(settings.max_remembered)
        self._vcard_requests = 0
        self.ready = trio.Event()

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    @property
    def port(self) -> EnginePort:
        if self._port is None:
            raise UnavailableError("the XMPP adapter is not running")
        return self._port

    @property
    def connection(self) -> ComponentConnection:
        if self._connection is None:
            raise UnavailableError("the XMPP adapter is not running")
        return self._connection

    # -- Adapter protocol -------------------------------------------------------
    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
        host, server_port, secret = self._server()
        connection = self._connection
        if connection is None or self._connection_key != (host, server_port, secret):
            connection = ComponentConnection(
                self.mapper.component_domain, secret, host, server_port,
                on_connected=self._resync, queue_limit=self.settings.queue_limit,
                queue_deadline=self.settings.queue_deadline, **self._options)
        # else a restart (by a supervisor): the same connection, so that stanzas queued
        # while the adapter was down are written after the handshake, not stranded
        connection.adapter_stats = port.adapter_stats(self.name)  # state, reconnects
        self._connection = connection
        self._connection_key = (host, server_port, secret)
        async with trio.open_nursery() as nursery:
            await nursery.start(connection.run)
            nursery.start_soon(self._inbound)
            self.ready.set()
            log.info("xmpp adapter started", extra={
                "component": self.mapper.component_domain, "mode": self.mapper.mode,
                "server": f"{host}:{server_port}"})
            task_status.started()

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        if isinstance(event, Presence):
            self._presence.remember(event.source, event)
        elif isinstance(event, Profile):
            self._profiles.remember(event.source, event)
        try:
            stanzas = encode_event(event, mapper=self.mapper, ids=self._ids())
        except Untranslatable as exc:
            raise DeliveryError(exc.reason) from None
        except JidError as exc:
            raise DeliveryError(f"jid:{exc.condition}") from None
        if isinstance(event, ContactAccept):
            # accepting also subscribes back, so that both sides see each other's presence
            stanzas += subscribe_back(event, mapper=self.mapper)
        elif isinstance(event, ContactRemove):
            # servers act on unsubscribe(d) only for roster states they track; a directed
            # "unavailable" tells the XMPP user's client in any case that the contact left
            stanzas = encode_event(
                Presence(source=event.source, destination=event.destination,
                         availability="offline"), mapper=self.mapper, ids=self._ids()) + stanzas
        try:
            await self.connection.send(stanzas, confirm=True)
        except ComponentUnavailable as exc:
            raise DeliveryError(f"xmpp-unavailable:{exc.reason}", retryable=True) from None
        except ComponentUnconfirmed:
            # written, then the connection was lost before the server confirmed it: it may
            # have arrived, so it is not sent again (a duplicate); its sender is told
            raise DeliveryError(UNCONFIRMED) from None
        except InvalidStanza as exc:
            raise DeliveryError(f"invalid-stanza:{type(exc).__name__}") from None
        self.stats.deliveries += 1
        await self._track_reaction(event)
        message_id = message_id_of(stanzas)
        return DeliveryResult(platform_message_id=message_id or "")

    # -- inbound ------------------------------------------------------------------
    async def _inbound(self) -> None:
        async for batch in self.connection.inbound:
            for stanza in batch:
                self.stats.stanzas_in += 1
                await self._handle(stanza)

    async def _handle(self, stanza: Element) -> None:
        resubscribe = self._approve_resubscribe(stanza)
        if resubscribe is not None:
            self.stats.answered += 1
            await self._send_quietly(resubscribe)
            return
        if self._redundant_approval(stanza):
            self.stats.ignored += 1
            return
        answer = answer_directly(stanza, mapper=self.mapper,
                                           presence_of=self._presence.get,
                                           profile_of=self._profiles.get,
                                           is_contact=self._is_contact,
                                           gateway_type=self._gateway_type())
        if answer is not None:
            self.stats.answered += 1
            await self._send_quietly(answer)
            return
        decoded = decode_stanza(stanza, mapper=self.mapper,
                                          ids=self._ids(conversation=self._conversation(stanza)),
                                          now=self.port.clock.now(),
                                          max_body_bytes=self.settings.max_body_bytes)
        if isinstance(decoded, StanzaError):
            self.port.adapter_stats(self.name).count_inbound(UNKNOWN_TYPE, "malformed")
            await self._reject(stanza, decoded)
            return
        if isinstance(decoded, Ignored | Query):
            self.stats.ignored += 1  # queries were answered above; nothing else to do
            return
        port = self.port
        for event in decoded:
            if answers_refusals(stanza):
                reason = port.refusal(event)  # the router's rules, asked (never copied)
                if reason is not None:
                    await self._reject(stanza, refusal_error(reason))
                    return
            if isinstance(event, Presence) and event.availability != "offline":
                await self._fetch_profile(stanza, event.destination, event.source)
            await self._remember_inbound(stanza, event)
            try:
                taken = await port.offer(event)
            except MailboxFullError:
                # the conversation is busy: nothing routed, the sender is told to send
                # it again (no acks on a component stream); other conversations go on
                self.stats.busy += 1
                log.info("xmpp stanza answered busy", extra={"kind": event.log_type})
                await self._answer(stanza, BUSY)
                return
            except UnavailableError:
                await self._reject(stanza, RESTARTING)
                return
            if not taken:
                # XMPP never redelivers: the same id again is a client reusing ids,
                # told so instead of being dropped in silence
                await self._reject(stanza, REUSED_ID)
                return
            self.stats.events_submitted += 1
            await self._track_reaction(event)

    def _approve_resubscribe(self, stanza: Element) -> list[Element] | None:
        """A ``subscribe`` from a contact already accepted (clients subscribe back after
        accepting), or from one the local user asked to connect (a client that approves
        and subscribes back at once, before the engine has seen the approval): approve it
        here instead of asking the local user again."""
        if stanza.tag != f"{{{NS_CLIENT}}}presence" or \
                stanza.get("type") != "subscribe":
            return None
        try:
            remote = self.mapper.address_of_remote(bare_jid(stanza.get("from", "")))
            local = self.mapper.address_of_local(bare_jid(stanza.get("to", "")))
        except (JidError, ValueError):
            return None
        record = self.port.directory.get_contact(local, remote)
        if record is None or not (record.state == "accepted" or (
                record.state == "pending" and record.requested_by == local)):
            return None
        approval = encode_event(ContactAccept(source=local, destination=remote),
                                          mapper=self.mapper, ids=self._ids())
        presence = self._presence.get(local)
        if presence is not None:  # and show where the local user is, as a server would
            approval += resync_presence(local, remote, mapper=self.mapper,
                                                  presence=presence)[1:]
        return approval

    async def _fetch_profile(self, stanza: Element, local: Address, remote: Address) -> None:
        """Ask a contact's vCard (XEP-0054) the first time they show up online as a contact,
        and again when their presence advertises a new avatar hash (XEP-0153); the answer
        comes back as an iq result that decodes to their Profile."""
        if not self._is_contact(local, remote):
            return
        advertised = avatar_hash(stanza)
        known = self._vcard_hashes.get(remote)
        if known is not None and (advertised is None or advertised == known):
            return
        self._vcard_hashes.remember(remote, advertised or "")
        self._vcard_requests += 1
        await self._send_quietly(vcard_request(
            self.mapper.local_jid(local), self.mapper.remote_jid(remote),
            f"vcard-{self._vcard_requests}"))

    def _redundant_approval(self, stanza: Element) -> bool:
        """A ``subscribed`` from a contact already accepted (clients that auto-approve, or
        a user approving twice): RFC 6121 §3.1.6 has the user's server ignore it, so the
        local user is not told "accepted" twice."""
        if stanza.tag != f"{{{NS_CLIENT}}}presence" or \
                stanza.get("type") != "subscribed":
            return False
        try:
            remote = self.mapper.address_of_remote(bare_jid(stanza.get("from", "")))
            local = self.mapper.address_of_local(bare_jid(stanza.get("to", "")))
        except (JidError, ValueError):
            return False
        return self._is_contact(local, remote)

    async def _remember_inbound(self, stanza: Element, event: Event) -> None:
        """Before routing a message that starts on XMPP: its XMPP id (a correction, reply
        or reaction right behind it must find it before the engine has delivered it and
        recorded its ids; the session's mailbox keeps them in order) and whether its
        sender asked for a receipt (XEP-0184: sent only then), and the full JID it came
        from (an error about it goes there). Written first, so all are known whenever
        the engine gets to the message; a message answered busy is sent again under the
        same ids."""
        if not isinstance(event, Message | FileShare):
            return
        changes: dict[str, str | None] = {}
        xmpp_id = event.platform_ids.get(self.name)
        if xmpp_id:
            changes[STATE_XMPP_ID] = xmpp_id
        sender = stanza.get("from", "")
        if "/" in sender:  # where an error about it must go (a bare JID drops it)
            changes[STATE_XMPP_FROM] = sender
        if isinstance(event, Message) and receipt_requested(stanza):
            changes[STATE_RECEIPT] = "requested"
        if changes:
            await self.port.directory.put_message_state(
                event.event_id, self.name, changes, now=self.port.clock.now())

    async def _track_reaction(self, event: Event) -> None:
        """XEP-0444 sends a reactor's whole set each time: keep each set current, in the
        directory (a restart must not turn the next reaction into a one-element set)."""
        if not isinstance(event, ReactionAdd | ReactionRemove):
            return
        current = self._ids().reactions(event.target_id, event.source)
        updated = current | {event.emoji} if isinstance(event, ReactionAdd) \
            else current - {event.emoji}
        await self.port.directory.put_message_state(
            event.target_id, self.name,
            {reactions_key(event.source): "\n".join(sorted(updated)) or None},
            now=self.port.clock.now())

    def _conversation(self, stanza: Element) -> tuple[Address, Address] | None:
        """The XMPP sender and the local recipient of ``stanza``: the conversation whose
        message ids it names. ``None`` when the sender is no user (a server's bounce)."""
        try:
            return (self.mapper.address_of_remote(bare_jid(stanza.get("from", ""))),
                    self.mapper.address_of_local(bare_jid(stanza.get("to", ""))))
        except (JidError, ValueError):
            return None

    def _gateway_type(self) -> str:
        """What the component is a gateway to: a setting, else the platform that serves
        the component's own domain (the users it shows on XMPP live there)."""
        if self.settings.gateway_type:
            return self.settings.gateway_type
        route = self.port.directory.get_domain_route(self.mapper.component_domain)
        if route is None or route.platform == self.name:
            return "interlink"
        return route.platform

    def _is_contact(self, local: Address, remote: Address) -> bool:
        record = self.port.directory.get_contact(local, remote)
        return record is not None and record.state == "accepted"

    async def _reject(self, stanza: Element, error: StanzaError) -> None:
        """Answer ``stanza`` with ``error`` and log it as rejected (nothing routed)."""
        self.stats.rejected += 1
        await self._answer(stanza, error)
        sender, receiver = self._parties(stanza)
        await self.port.record_rejected(sender=sender, receiver=receiver,
                                        reason=f"xmpp:{error.condition}")

    async def _answer(self, stanza: Element, error: StanzaError) -> None:
        reply = error_reply_for(stanza, error)
        if reply is not None:
            await self._send_quietly(reply)

    def _parties(self, stanza: Element) -> tuple[Address, Address]:
        unknown = Address(user="unknown", domain="invalid")
        addresses = []
        for attribute, local in (("from", False), ("to", True)):
            try:
                jid = bare_jid(stanza.get(attribute, ""))
                addresses.append(self.mapper.address_of_local(jid) if local
                                 else self.mapper.address_of_remote(jid))
            except (JidError, ValueError):
                addresses.append(unknown)
        return addresses[0], addresses[1]

    async def _send_quietly(self, stanzas: Element | list[Element]) -> None:
        """Replies the server may drop while we are away (errors, disco, vCards)."""
        try:
            await self.connection.send(stanzas if isinstance(stanzas, list) else [stanzas])
        except (ComponentUnavailable, InvalidStanza) as exc:
            log.info("xmpp reply not sent", extra={"error": type(exc).__name__})

    def _ids(self, *, conversation: tuple[Address, Address] | None = None) -> MessageIdLookup:
        return _Ids(self, conversation)

    # -- resync -------------------------------------------------------------------
    async def _resync(self) -> None:
        """After a (re)connect: probe active contacts' presence and show ours again."""
        probes: list[Element] = []
        for local, remote in self._active_pairs():
            probes += resync_presence(local, remote, mapper=self.mapper,
                                                presence=self._presence.get(local))
        if probes:
            self.stats.probes_sent += len(probes)
            await self._send_quietly(probes)
        log.info("xmpp presence resynced", extra={"stanzas": len(probes)})

    def _active_pairs(self) -> Iterable[tuple[Address, Address]]:
        directory = self.port.directory
        after, seen = "", 0
        while seen < self.settings.max_resync_sessions:
            page = directory.list_sessions(after=after, limit=500)
            if not page:
                return
            for session in page:
                seen += 1
                for local, remote in ((session.a, session.b), (session.b, session.a)):
                    # remote: a real XMPP user (routed to this adapter); local: a user of
                    # another platform, shown on XMPP under the component
                    if self._serves(local) or not self._serves(remote):
                        continue
                    if self._is_contact(local, remote):
                        yield local, remote
            after = page[-1].session_id

    def _serves(self, address: Address) -> bool:
        route = self.port.directory.get_domain_route(address.domain)
        return route is not None and route.platform == self.name


#: per-message state (``Directory.put_message_state`` under the adapter's name) keys:
#: the XMPP id of a message that started on XMPP, known before the engine records its ids
STATE_XMPP_ID = "xmpp-id"
#: its sender asked for a XEP-0184 receipt
STATE_RECEIPT = "receipt"
#: the full JID (with resource) it came from
STATE_XMPP_FROM = "xmpp-from"


def reactions_key(reactor: Address) -> str:
    """The state key of ``reactor``'s XEP-0444 reaction set on a message (one emoji a line)."""
    return f"reactions/{reactor}"


class _Ids:
    """The message-id map and message state as the translation layer sees them
    (synchronous directory reads).

    ``conversation`` is the XMPP sender and the local recipient of the stanza being
    decoded. XMPP clients choose their own ids (``"1"``, ``"abc"``), so an id names a
    message only within its conversation: ids are looked up within that session, never
    platform-wide, and a message of the sender's not yet recorded is found by the id
    they gave it there. Without a conversation (a server bouncing a message), only
    the ids Interlink gave its own messages (unique: derived from canonical ids) are
    looked up platform-wide."""

    def __init__(self, adapter: XmppAdapter,
                 conversation: tuple[Address, Address] | None) -> None:
        self._name = adapter.name
        self._directory = adapter.port.directory
        self._conversation = conversation

    def canonical_id(self, xmpp_id: str) -> str | None:
        if not xmpp_id:
            return None
        directory, conversation = self._directory, self._conversation
        if conversation is None:
            return directory.find_canonical_id(self._name, xmpp_id) \
                if xmpp_id.startswith(OWN_ID_PREFIX) else None
        sender, recipient = conversation
        session_id = directory.find_session_id(sender, recipient) or \
            session_id_for(sender, recipient)
        found = directory.find_canonical_id(self._name, xmpp_id, session_id=session_id)
        if found is None:
            candidate = canonical_id_for(sender, recipient, xmpp_id)
            state = directory.get_message_state(candidate, self._name)
            if state.get(STATE_XMPP_ID) == xmpp_id:
                found = candidate
        return found

    def xmpp_id(self, canonical_id: str) -> str | None:
        """The id-map's entry (written once a message is delivered), else, for a message
        that started on XMPP, the id its sender gave it (the message state, written
        before routing): a message that failed on the far side is never in the map, and
        its sender's error bounce and notice must still name it."""
        record = self._directory.get_message_ids(canonical_id)
        found = None if record is None else record.platform_ids.get(self._name)
        if found:
            return found
        return self._directory.get_message_state(canonical_id, self._name).get(STATE_XMPP_ID)

    def reactions(self, canonical_id: str, reactor: Address) -> frozenset[str]:
        state = self._directory.get_message_state(canonical_id, self._name)
        stored = state.get(reactions_key(reactor), "")
        return frozenset(stored.split("\n")) if stored else frozenset()

    def receipt_requested(self, canonical_id: str) -> bool:
        state = self._directory.get_message_state(canonical_id, self._name)
        return state.get(STATE_RECEIPT) == "requested"

    def sender_jid(self, canonical_id: str) -> str | None:
        return self._directory.get_message_state(canonical_id, self._name).get(
            STATE_XMPP_FROM)
