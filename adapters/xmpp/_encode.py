"""Outbound: canonical events -> XMPP stanzas. Pure: no I/O.

Rules:

- :func:`encode_event` turns one canonical event into the stanzas that show
  it on XMPP, sent from the local user's JID; the mapping mirrors
  :mod:`._decode`'s table. Every message Interlink originates (receipts
  included; not chat states, not error bounces, which repeat the failed
  message's id) gets ``id`` = XEP-0359 origin-id =
  :func:`~._stanza.message_id_for` of its canonical id: stable, and unique
  because canonical ids are, so clients and archives can name it later.
- An event that names a message XMPP never saw, or has no XMPP form (channel
  invites, until rooms exist), raises :class:`engine.Untranslatable`; an
  address with no JID here raises :class:`~._jid.JidError`.
- XEP-0444 sends a reactor's whole set: a reaction is applied to the set the
  :class:`~._stanza.MessageIdLookup` remembers. A reaction that is not one
  Unicode emoji becomes a note in words (:func:`engine.reaction_note`).
- A receipt (XEP-0184) is sent only when the XMPP sender asked for one; a
  failure bounces the original id as ``type=error`` (to the full JID the
  message came from, when known) and adds a notice in the engine's words
  (:func:`engine.failure_note`) replying to it (XEP-0461).
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree.ElementTree import Element

import msgspec

from engine import (
    Address,
    Availability,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Error,
    Event,
    FileShare,
    Message,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    RichText,
    Typing,
    Untranslatable,
    failure_note,
    reaction_note,
    single_emoji,
)

from ._jid import AddressMapper
from ._stanza import (
    NS_CHATSTATES,
    NS_CORRECT,
    NS_FALLBACK,
    NS_HINTS,
    NS_MARKERS,
    NS_OOB,
    NS_REACTIONS,
    NS_RECEIPTS,
    NS_REPLY,
    NS_RETRACT,
    NS_SID,
    NS_STANZAS,
    STANZA_NS,
    MessageIdLookup,
    add_child,
    find_child,
    message_id_for,
    new_stanza,
)
from ._styling import rich_to_styling


def _chat(event: Event, mapper: AddressMapper, message_id: str) -> Element:
    """A chat message from the local user's JID with its id and origin-id."""
    elem = new_stanza("message", mapper.local_jid(event.source),
                      mapper.remote_jid(event.destination), type="chat", id=message_id)
    add_child(elem, NS_SID, "origin-id", id=message_id)
    return elem


def _xmpp_id(ids: MessageIdLookup, canonical_id: str) -> str:
    found = ids.xmpp_id(canonical_id)
    if not found:
        raise Untranslatable("unknown-message")
    return found


def _styled_body(rich: RichText, fallback: str) -> str:
    return rich_to_styling(rich) if rich.blocks else fallback


def encode_event(event: Event, *, mapper: AddressMapper, ids: MessageIdLookup,
                 request_receipts: bool = True, markable: bool = False) -> list[Element]:
    """The stanzas that show ``event`` on XMPP, from ``event.source``'s local JID.

    Raises :class:`Untranslatable` when the event names a message XMPP never
    saw, or has no XMPP form (channel invites, until rooms exist), and
    :class:`~adapters.xmpp._jid.JidError` when an address has no JID here.
    """
    if isinstance(event, Message):
        elem = _chat(event, mapper, message_id_for(event.event_id))
        add_child(elem, STANZA_NS, "body", _styled_body(event.body, event.text))
        if event.reply_to and (target := ids.xmpp_id(event.reply_to)):
            add_child(elem, NS_REPLY, "reply", id=target)
        if event.thread_id:
            add_child(elem, STANZA_NS, "thread",
                      ids.xmpp_id(event.thread_id) or message_id_for(event.thread_id))
        add_child(elem, NS_CHATSTATES, "active")
        if request_receipts:
            add_child(elem, NS_RECEIPTS, "request")
        if markable:
            add_child(elem, NS_MARKERS, "markable")
        return [elem]
    if isinstance(event, Edit):
        target = _xmpp_id(ids, event.target_id)
        elem = _chat(event, mapper, message_id_for(event.event_id))
        add_child(elem, STANZA_NS, "body", _styled_body(event.body, event.text))
        add_child(elem, NS_CORRECT, "replace", id=target)
        if request_receipts:
            add_child(elem, NS_RECEIPTS, "request")
        return [elem]
    if isinstance(event, Retract):
        elem = _chat(event, mapper, message_id_for(event.event_id))
        add_child(elem, NS_RETRACT, "retract", id=_xmpp_id(ids, event.target_id))
        add_child(elem, NS_FALLBACK, "fallback", **{"for": NS_RETRACT})
        add_child(elem, STANZA_NS, "body",
                  "/me retracted a previous message, but it's unsupported by your client.")
        add_child(elem, NS_HINTS, "store")
        return [elem]
    if isinstance(event, ReactionAdd | ReactionRemove):
        return _encode_reaction(event, mapper, ids)
    if isinstance(event, Typing):
        elem = new_stanza("message", mapper.local_jid(event.source),
                          mapper.remote_jid(event.destination), type="chat")
        add_child(elem, NS_CHATSTATES, event.state)
        add_child(elem, NS_HINTS, "no-store")
        return [elem]
    if isinstance(event, Presence):
        return [encode_presence(event, mapper)]
    if isinstance(event, Profile):
        # A presence cannot carry a profile without restating availability, which a
        # Profile does not know: XMPP clients fetch the vCard (vcard_result) instead.
        return []
    if isinstance(event, ContactRequest | ContactAccept | ContactRemove):
        kinds = {ContactRequest: ("subscribe",), ContactAccept: ("subscribed",),
                 ContactRemove: ("unsubscribe", "unsubscribed")}[type(event)]
        return [new_stanza("presence", mapper.local_jid(event.source),
                           mapper.remote_jid(event.destination), type=kind) for kind in kinds]
    if isinstance(event, FileShare):
        return _encode_file(event, mapper, request_receipts)
    if isinstance(event, DeliveryOutcome):
        return _encode_outcome(event, mapper, ids)
    if isinstance(event, Error):
        elem = _chat(event, mapper, message_id_for(event.event_id))
        detail = f": {event.reason}" if event.reason else ""
        add_child(elem, STANZA_NS, "body", f"⚠ {event.code}{detail}")
        return [elem]
    raise Untranslatable(f"unsupported:{type(event).__name__}")


def _encode_reaction(event: ReactionAdd | ReactionRemove, mapper: AddressMapper,
                     ids: MessageIdLookup) -> list[Element]:
    target = _xmpp_id(ids, event.target_id)
    value = single_emoji(event.emoji)
    if value is None:
        # Not an emoji XMPP clients accept (a custom Slack emoji): say it in words.
        elem = _chat(event, mapper, message_id_for(event.event_id))
        note = reaction_note(event.emoji, added=isinstance(event, ReactionAdd))
        add_child(elem, STANZA_NS, "body", f"_{note}_")
        add_child(elem, NS_REPLY, "reply", id=target)
        return [elem]
    current = {v for v in (single_emoji(r) for r in ids.reactions(event.target_id,
                                                                   event.source)) if v}
    if isinstance(event, ReactionAdd):
        current.add(value)
    else:
        current.discard(value)
    elem = _chat(event, mapper, message_id_for(event.event_id))
    reactions = add_child(elem, NS_REACTIONS, "reactions", id=target)
    for item in sorted(current):
        add_child(reactions, NS_REACTIONS, "reaction", item)
    add_child(elem, NS_HINTS, "store")
    return [elem]


_SHOW_OF: dict[Availability, str] = {"away": "away", "busy": "dnd"}


def encode_presence(event: Presence, mapper: AddressMapper) -> Element:
    elem = new_stanza("presence", mapper.local_jid(event.source),
                      mapper.remote_jid(event.destination),
                      type="unavailable" if event.availability == "offline" else "")
    if event.availability in _SHOW_OF:
        add_child(elem, STANZA_NS, "show", _SHOW_OF[event.availability])
    if event.status:
        add_child(elem, STANZA_NS, "status", event.status)
    return elem


def _encode_file(event: FileShare, mapper: AddressMapper,
                 request_receipts: bool) -> list[Element]:
    stanzas: list[Element] = []
    if event.caption:
        caption = _chat(event, mapper, message_id_for(event.event_id + "/caption"))
        add_child(caption, STANZA_NS, "body", event.caption)
        stanzas.append(caption)
    elem = _chat(event, mapper, message_id_for(event.event_id))
    add_child(elem, STANZA_NS, "body", event.url)
    oob = add_child(elem, NS_OOB, "x")
    add_child(oob, NS_OOB, "url", event.url)
    add_child(oob, NS_OOB, "desc", event.name)
    if request_receipts:
        add_child(elem, NS_RECEIPTS, "request")
    stanzas.append(elem)
    return stanzas


def _encode_outcome(event: DeliveryOutcome, mapper: AddressMapper,
                    ids: MessageIdLookup) -> list[Element]:
    target = ids.xmpp_id(event.target_event_id)
    from_jid = mapper.local_jid(event.source)
    to_jid = mapper.remote_jid(event.destination)
    if event.status == "delivered":
        if not target or not ids.receipt_requested(event.target_event_id):
            return []  # XEP-0184: no receipt unless one was asked for
        message_id = message_id_for(event.event_id)
        elem = new_stanza("message", from_jid, to_jid, id=message_id)
        add_child(elem, NS_RECEIPTS, "received", id=target)
        add_child(elem, NS_SID, "origin-id", id=message_id)
        add_child(elem, NS_HINTS, "store")
        return [elem]
    stanzas: list[Element] = []
    reason = event.reason or "undeliverable"
    if target:
        # The XMPP-native failure: clients mark the message with this id as failed. It
        # goes to the resource that sent the message: a server drops a message error
        # addressed to a bare JID (RFC 6121 §8.5.2.1.1)
        sender = ids.sender_jid(event.target_event_id)
        bounce_to = sender if sender and sender.partition("/")[0].lower() == to_jid.lower() \
            else to_jid
        bounce = new_stanza("message", from_jid, bounce_to, type="error", id=target)
        error = add_child(bounce, STANZA_NS, "error", type="cancel")
        add_child(error, NS_STANZAS, "recipient-unavailable"
                  if reason.startswith("unavailable") else "undefined-condition")
        add_child(error, NS_STANZAS, "text", reason)
        stanzas.append(bounce)
    notice = _chat(event, mapper, message_id_for(event.event_id))
    words = failure_note(reason)
    add_child(notice, STANZA_NS, "body", f"⚠ {words[:1].upper()}{words[1:]}.")
    if target:
        add_child(notice, NS_REPLY, "reply", id=target)
    stanzas.append(notice)
    return stanzas


def subscribe_back(event: ContactAccept, *, mapper: AddressMapper) -> list[Element]:
    """After a local user accepts a remote contact (``subscribed``), ask for the remote's
    presence in turn (``subscribe``), so that both sides see each other."""
    return [new_stanza("presence", mapper.local_jid(event.source),
                       mapper.remote_jid(event.destination), type="subscribe")]


def resync_presence(local: Address, remote: Address, *, mapper: AddressMapper,
                    presence: Presence | None = None) -> list[Element]:
    """After a (re)connect: probe ``remote``'s presence and restate ``local``'s, if known."""
    stanzas = [new_stanza("presence", mapper.local_jid(local), mapper.remote_jid(remote),
                          type="probe")]
    if presence is not None:
        stanzas.append(encode_presence(
            msgspec.structs.replace(presence, source=local, destination=remote), mapper))
    return stanzas


def message_id_of(stanzas: Iterable[Element]) -> str | None:
    """The XMPP id to record for the message among ``stanzas`` (the last with an origin-id)."""
    found = None
    for elem in stanzas:
        origin = find_child(elem, NS_SID, "origin-id")
        if origin is not None:
            found = origin.get("id") or found
    return found
