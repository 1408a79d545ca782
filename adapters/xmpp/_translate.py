"""XMPP stanzas <-> canonical events. Pure: no I/O, no clock (``now`` is passed in).

Stanzas are :class:`xml.etree.ElementTree.Element` trees (slixmpp stanzas
expose theirs as ``stanza.xml``). Inbound, :func:`decode_stanza` turns one
stanza into canonical events, a :class:`Query` the I/O layer answers, an
:class:`Ignored` with a content-free reason, or a :class:`StanzaError` to
send back with :func:`error_reply`. Outbound, :func:`encode_event` turns one
canonical event into the stanzas that show it on XMPP (sent from the local
user's JID). What needs the directory comes through a
:class:`MessageIdLookup` of synchronous reads.

Mapping (inbound -> canonical; outbound is the mirror):

    <message type=chat|normal><body>            Message (XEP-0393 styling -> rich text)
      + <reply id/> (XEP-0461)                  Message.reply_to, fallback text stripped (XEP-0428)
      + <thread>                                Message.thread_id when it names a known message
      + <x xmlns=jabber:x:oob> (XEP-0066)       FileShare (a body equal to the URL is the fallback)
    <replace id/> + <body> (XEP-0308)           Edit (a new Message when the original is unknown)
    <retract id/> (XEP-0424, also fasten:0)     Retract
    <reactions id><reaction/>… (XEP-0444)       ReactionAdd / ReactionRemove (diff of the full set)
    <composing/> / <paused/>… (XEP-0085)        Typing
    <received id/> (XEP-0184)                   DeliveryOutcome delivered
    <message type=error id>                     DeliveryOutcome failed (for a message we sent)
    <presence> show/status / unavailable        Presence
    <presence type=subscribe|subscribed|…>      ContactRequest / ContactAccept / ContactRemove
    <iq type=result><vCard> (XEP-0054)          Profile
    <iq type=get> disco#info/#items, vCard, ping Query (answer with the *_result helpers)
    <presence type=probe>                       Query (answer with the contact's presence)

Ids: a message that starts on XMPP is known by its XEP-0359 origin-id (else
its ``id`` attribute) under the ``xmpp`` platform; its canonical id is
derived from the sender and that id, so a redelivered stanza maps to the
same canonical id. A message Interlink sends to XMPP gets ``id`` = origin-id
= :func:`message_id_for` of its canonical id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Literal, Protocol
from xml.etree.ElementTree import Element, SubElement

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
    Ignored,
    Message,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    RichText,
    Typing,
    Untranslatable,
    derive_canonical_id,
    failure_note,
    new_event_id,
    reaction_note,
    single_emoji,
    to_plain_text,
)

from ._jid import AddressMapper, ErrorType, JidError, StanzaCondition, split_jid
from ._styling import rich_to_styling, styling_to_rich

PLATFORM = "xmpp"

# ---------------------------------------------------------------- namespaces

NS_COMPONENT = "jabber:component:accept"
NS_CLIENT = "jabber:client"
#: the namespace of stanzas this module builds (the component stream's)
STANZA_NS = NS_COMPONENT
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SID = "urn:xmpp:sid:0"                            # XEP-0359
NS_CORRECT = "urn:xmpp:message-correct:0"            # XEP-0308
NS_RETRACT = "urn:xmpp:message-retract:1"            # XEP-0424
NS_RETRACT_0 = "urn:xmpp:message-retract:0"          # XEP-0424 before 0.4 (fastening)
NS_FASTEN = "urn:xmpp:fasten:0"                      # XEP-0422
NS_REACTIONS = "urn:xmpp:reactions:0"                # XEP-0444
NS_REPLY = "urn:xmpp:reply:0"                        # XEP-0461
NS_FALLBACK = "urn:xmpp:fallback:0"                  # XEP-0428
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"  # XEP-0085
NS_RECEIPTS = "urn:xmpp:receipts"                    # XEP-0184
NS_MARKERS = "urn:xmpp:chat-markers:0"               # XEP-0333
NS_OOB = "jabber:x:oob"                              # XEP-0066
NS_VCARD = "vcard-temp"                              # XEP-0054
NS_VCARD_UPDATE = "vcard-temp:x:update"              # XEP-0153
NS_HINTS = "urn:xmpp:hints"                          # XEP-0334
NS_STYLING = "urn:xmpp:styling:0"                    # XEP-0393
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"    # XEP-0030
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"                            # XEP-0199

#: features every JID of the component answers disco#info with
FEATURES: tuple[str, ...] = (
    NS_DISCO_INFO, NS_CHATSTATES, NS_RECEIPTS, NS_CORRECT, NS_RETRACT, NS_REACTIONS,
    NS_REPLY, NS_FALLBACK, NS_SID, NS_OOB, NS_VCARD, NS_STYLING, NS_PING,
)
#: features only the component's own domain adds
COMPONENT_FEATURES: tuple[str, ...] = (NS_DISCO_ITEMS,)

#: the longest body accepted, in UTF-8 bytes
MAX_BODY_BYTES = 64 * 1024
#: the longest reaction accepted (one emoji grapheme can be several code points)
MAX_REACTION = 32

#: RFC 6120 §8.3.3: the usual error type of each condition
DEFAULT_ERROR_TYPE: dict[StanzaCondition, ErrorType] = {
    "bad-request": "modify", "conflict": "cancel", "feature-not-implemented": "cancel",
    "forbidden": "auth", "gone": "cancel", "internal-server-error": "cancel",
    "item-not-found": "cancel", "jid-malformed": "modify", "not-acceptable": "modify",
    "not-allowed": "cancel", "not-authorized": "auth", "policy-violation": "modify",
    "recipient-unavailable": "wait", "redirect": "modify", "registration-required": "auth",
    "remote-server-not-found": "cancel", "remote-server-timeout": "wait",
    "resource-constraint": "wait", "service-unavailable": "cancel",
    "subscription-required": "auth", "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


def q(ns: str, tag: str) -> str:
    """An ElementTree qualified name (``{ns}tag``)."""
    return f"{{{ns}}}{tag}"


# ------------------------------------------------------------------- lookups

class MessageIdLookup(Protocol):
    """Directory reads the translation needs (all synchronous)."""

    def canonical_id(self, xmpp_id: str) -> str | None:
        """The canonical id of the message XMPP knows as ``xmpp_id``, if known."""
        ...

    def xmpp_id(self, canonical_id: str) -> str | None:
        """The XMPP id (origin-id) of a canonical message, if it was seen on XMPP."""
        ...

    def reactions(self, canonical_id: str, reactor: Address) -> frozenset[str]:
        """``reactor``'s reactions on a message *before* the event being translated.

        XEP-0444 always carries the full set: inbound, the new set is diffed
        against this; outbound, the event is applied to it. The caller keeps
        the set up to date from the events (only emoji, never content)."""
        ...

    def receipt_requested(self, canonical_id: str) -> bool:
        """Whether the XMPP sender of a message asked for a XEP-0184 receipt
        (see :func:`receipt_requested`); only then is one sent."""
        ...


def message_id_for(canonical_id: str) -> str:
    """The XMPP ``id`` and origin-id of a stanza Interlink sends for a canonical id."""
    return "il-" + hashlib.blake2b(canonical_id.encode(), digest_size=12).hexdigest()


def canonical_id_for(sender: Address, xmpp_id: str) -> str:
    """A stable canonical id for a message that starts on XMPP: its coordinates are the
    sender and the id the sender gave it."""
    return derive_canonical_id("xm", str(sender), xmpp_id)


# ------------------------------------------------------------------- results

class StanzaError(msgspec.Struct, frozen=True):
    """Answer the stanza with this error (:func:`error_reply`); nothing is routed."""

    condition: StanzaCondition
    type: ErrorType
    text: str = ""


QueryKind = Literal["disco-info", "disco-items", "vcard", "ping", "probe"]


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """A request the I/O layer answers: disco (:func:`disco_info_result`,
    :func:`disco_items_result`), vCard (:func:`vcard_result`), ping
    (:func:`iq_result`), presence probe (the contact's current presence).

    ``target`` is the local address asked about; ``None`` for the component itself.
    ``requester`` is the asking XMPP user, when the ``from`` is one.
    """

    kind: QueryKind
    target: Address | None = None
    requester: Address | None = None


Decoded = list[Event] | Query | Ignored | StanzaError


def _error(condition: StanzaCondition, text: str = "") -> StanzaError:
    return StanzaError(condition, DEFAULT_ERROR_TYPE[condition], text)


def _jid_error(exc: JidError) -> StanzaError:
    return _error(exc.condition, exc.reason)


#: the stanza error answering each reason the router gives for a refusal
_REFUSALS: dict[str, StanzaError] = {
    "unknown-address": StanzaError("item-not-found", "cancel", "no such user"),
    "not-a-contact": StanzaError("subscription-required", "auth", "add this contact first"),
    "no-route": StanzaError("service-unavailable", "cancel", "no platform serves this domain"),
    "platform-unavailable": StanzaError("service-unavailable", "cancel",
                                        "the platform is not connected"),
}
_POLICY_REFUSAL = StanzaError("not-allowed", "cancel", "not allowed by federation policy")
#: the answer to a stanza whose conversation is busy: the sender should send it again
BUSY = StanzaError("resource-constraint", "wait", "busy, try again")
#: the answer to a stanza that arrives while the engine starts or stops
RESTARTING = StanzaError("service-unavailable", "wait", "restarting")


def refusal_error(reason: str) -> StanzaError:
    """The stanza error for a refusal ``reason`` of the engine's router (``unknown-address``,
    ``not-a-contact``, ``no-route:<domain>``, ``platform-unavailable:<p>``; anything else
    is a federation policy's reason). The text is fixed: no address, no content."""
    return _REFUSALS.get(reason.partition(":")[0], _POLICY_REFUSAL)


def answers_refusals(elem: Element) -> bool:
    """Whether the sender of ``elem`` hears, as a stanza error, that it was refused.

    Messages and subscription requests do. Availability presence does not: RFC 6121
    has a server drop one it will not deliver, without an error (the router still
    logs the refusal). Errors and iq results are never answered (:func:`error_reply`).
    """
    _, name = _ns_name(elem.tag)
    kind = elem.get("type", "")
    if name == "message":
        return kind != "error"
    return name == "presence" and kind in _SUBSCRIPTIONS


# ------------------------------------------------------------------- helpers

def _ns_name(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _stanza_ns(elem: Element) -> str:
    return _ns_name(elem.tag)[0]


def _child(elem: Element, ns: str, tag: str) -> Element | None:
    return elem.find(q(ns, tag))


def _text(elem: Element | None) -> str:
    return "" if elem is None or elem.text is None else elem.text


def _body(elem: Element) -> Element | None:
    """The message body: the one without xml:lang, else the first."""
    bodies = elem.findall(q(_stanza_ns(elem), "body"))
    plain = [b for b in bodies if "{http://www.w3.org/XML/1998/namespace}lang" not in b.attrib]
    found = plain or bodies
    return found[0] if found else None


def receipt_requested(elem: Element) -> bool:
    """Whether an inbound message asks for a XEP-0184 delivery receipt."""
    return _child(elem, NS_RECEIPTS, "request") is not None


def avatar_hash(elem: Element) -> str | None:
    """The XEP-0153 photo hash a presence advertises (``""``: no avatar; ``None``: not said)."""
    update = _child(elem, NS_VCARD_UPDATE, "x")
    photo = None if update is None else _child(update, NS_VCARD_UPDATE, "photo")
    return None if photo is None else _text(photo).strip()


def xmpp_message_id(elem: Element) -> str:
    """The id other stanzas use for this message: its origin-id, else its ``id``."""
    origin = _child(elem, NS_SID, "origin-id")
    return (origin.get("id", "") if origin is not None else "") or elem.get("id", "")


# ------------------------------------------------------------------- inbound

def decode_stanza(elem: Element, *, mapper: AddressMapper, ids: MessageIdLookup, now: float,
                  max_body_bytes: int = MAX_BODY_BYTES) -> Decoded:
    """Translate one inbound stanza (from an XMPP user to a JID under the component)."""
    ns, name = _ns_name(elem.tag)
    if ns not in (NS_COMPONENT, NS_CLIENT):
        return _error("bad-request", "unknown stanza namespace")
    if name == "message":
        return _decode_message(elem, mapper, ids, now, max_body_bytes)
    if name == "presence":
        return _decode_presence(elem, mapper, now)
    if name == "iq":
        return _decode_iq(elem, mapper, now)
    return _error("bad-request", "unknown stanza")


def _parties(elem: Element, mapper: AddressMapper) -> tuple[Address, Address] | StanzaError:
    sender, recipient = elem.get("from"), elem.get("to")
    if not sender or not recipient:
        return _error("bad-request", "a stanza needs 'from' and 'to'")
    try:
        return mapper.address_of_remote(sender), mapper.address_of_local(recipient)
    except JidError as exc:
        return _jid_error(exc)


def _is_component(jid: str | None, mapper: AddressMapper) -> bool:
    try:
        local, domain, _ = split_jid(jid or "")
    except JidError:
        return False
    return not local and mapper.is_local(domain)


def _decode_message(elem: Element, mapper: AddressMapper, ids: MessageIdLookup, now: float,
                    max_body_bytes: int) -> Decoded:
    kind = elem.get("type", "normal")
    if kind == "error":
        return _decode_message_error(elem, mapper, ids, now)
    if kind in ("groupchat", "headline"):
        return Ignored(f"message-type:{kind}")
    if kind not in ("chat", "normal"):
        return _error("bad-request", "unknown message type")
    if _is_component(elem.get("to"), mapper):
        return _error("service-unavailable", "the gateway itself takes no messages")
    parties = _parties(elem, mapper)
    if isinstance(parties, StanzaError):
        return parties
    source, destination = parties
    xmpp_id = xmpp_message_id(elem)

    received = _child(elem, NS_RECEIPTS, "received")
    if received is not None:
        target = ids.canonical_id(received.get("id", ""))
        if target is None:
            return Ignored("unknown-message")
        return [DeliveryOutcome(source=source, destination=destination, timestamp=now,
                                target_event_id=target, status="delivered")]

    retracted = _retracted_id(elem)
    replace = _child(elem, NS_CORRECT, "replace")
    reactions = _child(elem, NS_REACTIONS, "reactions")
    if "" in (retracted, None if replace is None else replace.get("id", ""),
              None if reactions is None else reactions.get("id", "")):
        return _error("bad-request", "a correction, retraction or reaction needs the id of "
                                     "the message it refers to")
    if retracted is not None:
        target = ids.canonical_id(retracted)
        if target is None:
            return Ignored("unknown-message")
        return [Retract(event_id=_event_id(source, xmpp_id), source=source,
                        destination=destination, timestamp=now, target_id=target)]

    if reactions is not None:
        return _decode_reactions(reactions, source, destination, ids, xmpp_id, now)

    body = _text(_body(elem))
    if len(body.encode()) > max_body_bytes:
        return _error("not-acceptable", f"the body is longer than {max_body_bytes} bytes")
    oob = _child(elem, NS_OOB, "x")
    if body.strip() or oob is not None:
        if not xmpp_id:
            return _error("bad-request", "a message needs an id")
        return _decode_content(elem, body, oob, replace, (source, destination, now), ids,
                               xmpp_id)
    if replace is not None:
        return _error("bad-request", "a correction needs a body")
    for state in ("composing", "paused", "active", "inactive", "gone"):
        if _child(elem, NS_CHATSTATES, state) is not None:
            typing: Literal["composing", "paused"] = \
                "composing" if state == "composing" else "paused"
            return [Typing(source=source, destination=destination, timestamp=now,
                           state=typing)]
    if any(_ns_name(child.tag)[0] == NS_MARKERS for child in elem):
        return Ignored("chat-marker")
    return _error("bad-request", "the message has no body")


def _event_id(source: Address, xmpp_id: str) -> str:
    """A stable event id for an event that carries an XMPP id (de-duplication), else a new one."""
    return canonical_id_for(source, xmpp_id) if xmpp_id else new_event_id()


def _retracted_id(elem: Element) -> str | None:
    retract = _child(elem, NS_RETRACT, "retract")
    if retract is not None:
        return retract.get("id", "")
    fastening = _child(elem, NS_FASTEN, "apply-to")
    if fastening is not None and _child(fastening, NS_RETRACT_0, "retract") is not None:
        return fastening.get("id", "")
    return None


def _decode_reactions(reactions: Element, source: Address, destination: Address,
                      ids: MessageIdLookup, xmpp_id: str, now: float) -> Decoded:
    target = ids.canonical_id(reactions.get("id", ""))
    if target is None:
        return Ignored("unknown-message")
    new: set[str] = set()
    for reaction in reactions.findall(q(NS_REACTIONS, "reaction")):
        value = _text(reaction).strip()
        if value and len(value) <= MAX_REACTION and "\n" not in value:
            new.add(value)
    before = ids.reactions(target, source)
    events: list[Event] = []
    for value in sorted(new - before):
        events.append(ReactionAdd(
            event_id=_event_id(source, f"{xmpp_id}+{value}" if xmpp_id else ""),
            source=source, destination=destination, timestamp=now, target_id=target,
            emoji=value))
    for value in sorted(before - new):
        events.append(ReactionRemove(
            event_id=_event_id(source, f"{xmpp_id}-{value}" if xmpp_id else ""),
            source=source, destination=destination, timestamp=now, target_id=target,
            emoji=value))
    return events or Ignored("reactions-unchanged")


def _strip_fallback(elem: Element, body: str, for_ns: str) -> str:
    """``body`` without the XEP-0428 fallback ranges marked for ``for_ns``."""
    ranges: list[tuple[int, int]] = []
    for fallback in elem.findall(q(NS_FALLBACK, "fallback")):
        if fallback.get("for") != for_ns:
            continue
        for part in fallback.findall(q(NS_FALLBACK, "body")):
            try:
                start, end = int(part.get("start", "0")), int(part.get("end", str(len(body))))
            except ValueError:
                continue
            if 0 <= start <= end <= len(body):
                ranges.append((start, end))
    for start, end in sorted(ranges, reverse=True):
        body = body[:start] + body[end:]
    return body


def _decode_content(elem: Element, body: str, oob: Element | None, replace: Element | None,
                    parties: tuple[Address, Address, float], ids: MessageIdLookup,
                    xmpp_id: str) -> Decoded:
    source, destination, now = parties
    canonical = canonical_id_for(source, xmpp_id)
    platform_ids = {PLATFORM: xmpp_id}
    reply = _child(elem, NS_REPLY, "reply")
    reply_to = ids.canonical_id(reply.get("id", "")) if reply is not None else None
    if reply is not None:
        body = _strip_fallback(elem, body, NS_REPLY)
    thread = _text(elem.find(q(_stanza_ns(elem), "thread"))).strip()
    thread_id = ids.canonical_id(thread) if thread else None
    if oob is not None:
        url = _text(_child(oob, NS_OOB, "url")).strip()
        if not url:
            return _error("bad-request", "out-of-band data without a URL")
        desc = _text(_child(oob, NS_OOB, "desc")).strip()
        caption = "" if body.strip() == url else body.strip()
        name = url.rstrip("/").rpartition("/")[2].partition("?")[0] or "file"
        return [FileShare(event_id=canonical, platform_ids=platform_ids, source=source,
                          destination=destination, timestamp=now, name=name, size=0, url=url,
                          caption=caption or desc)]
    rich = styling_to_rich(body.strip("\n"))
    if replace is not None:
        target = ids.canonical_id(replace.get("id", ""))
        if target is not None:
            return [Edit(event_id=canonical, platform_ids=platform_ids, source=source,
                         destination=destination, timestamp=now, target_id=target, body=rich,
                         text=to_plain_text(rich))]
        # XEP-0308: a correction of an unknown message is shown as a new message.
    return [Message(event_id=canonical, platform_ids=platform_ids, source=source,
                    destination=destination, timestamp=now, body=rich,
                    text=to_plain_text(rich), reply_to=reply_to, thread_id=thread_id)]


def _error_condition(elem: Element) -> StanzaCondition:
    error = elem.find(q(_stanza_ns(elem), "error"))
    if error is not None:
        for child in error:
            ns, name = _ns_name(child.tag)
            if ns == NS_STANZAS and name in DEFAULT_ERROR_TYPE:
                return name
    return "undefined-condition"


def _decode_message_error(elem: Element, mapper: AddressMapper, ids: MessageIdLookup,
                          now: float) -> Decoded:
    target = ids.canonical_id(elem.get("id", ""))
    if target is None:
        return Ignored("error-for-unknown-message")
    try:
        destination = mapper.address_of_local(elem.get("to", ""))
        local, domain, _ = split_jid(elem.get("from", ""))
        source = (mapper.address_of_remote(elem.get("from", "")) if local
                  else Address.parse(f"postmaster@{domain}"))  # the remote server bounced it
    except (JidError, ValueError):
        return Ignored("error-from-unknown-jid")
    return [DeliveryOutcome(source=source, destination=destination, timestamp=now,
                            target_event_id=target, status="failed",
                            reason=f"xmpp:{_error_condition(elem)}")]


_SHOW: dict[str, Availability] = {"away": "away", "xa": "away", "dnd": "busy",
                                  "chat": "available"}
_SUBSCRIPTIONS: dict[str, type[ContactRequest | ContactAccept | ContactRemove]] = {
                  "subscribe": ContactRequest, "subscribed": ContactAccept,
                  "unsubscribe": ContactRemove, "unsubscribed": ContactRemove}


def _decode_presence(elem: Element, mapper: AddressMapper, now: float) -> Decoded:
    kind = elem.get("type", "")
    if kind == "error":
        return Ignored("presence-error")
    if _is_component(elem.get("to"), mapper):
        return Ignored("presence-to-gateway")
    parties = _parties(elem, mapper)
    if isinstance(parties, StanzaError):
        return parties
    source, destination = parties
    if kind == "probe":
        return Query(kind="probe", target=destination, requester=source)
    subscription = _SUBSCRIPTIONS.get(kind)
    if subscription is not None:
        return [subscription(source=source, destination=destination, timestamp=now)]
    ns = _stanza_ns(elem)
    status = _text(elem.find(q(ns, "status"))).strip()
    if kind == "unavailable":
        return [Presence(source=source, destination=destination, timestamp=now,
                         availability="offline", status=status)]
    if kind:
        return _error("bad-request", "unknown presence type")
    show = _text(elem.find(q(ns, "show"))).strip()
    return [Presence(source=source, destination=destination, timestamp=now,
                     availability=_SHOW.get(show, "available"), status=status)]


def _decode_iq(elem: Element, mapper: AddressMapper, now: float) -> Decoded:
    kind = elem.get("type", "")
    if not elem.get("id"):
        return _error("bad-request", "an iq needs an id")
    if kind == "result":
        vcard = _child(elem, NS_VCARD, "vCard")
        if vcard is None:
            return Ignored("iq-result")
        try:
            address = mapper.address_of_remote(elem.get("from", ""))
        except JidError:
            return Ignored("vcard-from-unknown-jid")
        return [profile_from_vcard(vcard, address, timestamp=now)]
    if kind == "error":
        return Ignored("iq-error")
    if kind not in ("get", "set") or len(elem) != 1:
        return _error("bad-request", "an iq get or set has exactly one child")
    payload = elem[0]
    requester: Address | None = None
    target: Address | None = None
    try:
        requester = mapper.address_of_remote(elem.get("from", ""))
    except JidError:
        requester = None  # a server or another component may ask too
    if not _is_component(elem.get("to"), mapper):
        try:
            target = mapper.address_of_local(elem.get("to", ""))
        except JidError as exc:
            return _jid_error(exc)
    query: QueryKind | None = None
    if kind == "get":
        query = {q(NS_DISCO_INFO, "query"): "disco-info",
                 q(NS_DISCO_ITEMS, "query"): "disco-items",
                 q(NS_VCARD, "vCard"): "vcard",
                 q(NS_PING, "ping"): "ping"}.get(payload.tag)  # type: ignore[assignment]
    if query is None:
        return _error("service-unavailable")
    return Query(kind=query, target=target, requester=requester)


def profile_from_vcard(vcard: Element, address: Address, *, timestamp: float = 0.0) -> Profile:
    """A vCard-temp (XEP-0054) as a profile broadcast.

    An avatar is taken only as an external URL (``PHOTO/EXTVAL``); an inline
    ``BINVAL`` photo would need Interlink to serve it, which it does not yet.
    """
    def field(*path: str) -> str:
        found = vcard.find("/".join(q(NS_VCARD, p) for p in path))
        return _text(found).strip()

    name = field("FN") or " ".join(
        p for p in (field("N", "GIVEN"), field("N", "FAMILY")) if p) or field("NICKNAME")
    return Profile(source=address, destination=address, timestamp=timestamp, name=name,
                   email=field("EMAIL", "USERID"), title=field("TITLE"),
                   avatar_url=field("PHOTO", "EXTVAL"))


# ------------------------------------------------------------------ outbound

def _stanza(name: str, from_jid: str, to_jid: str, **attrs: str) -> Element:
    elem = Element(q(STANZA_NS, name), {"from": from_jid, "to": to_jid})
    for key, value in attrs.items():
        if value:
            elem.set(key, value)
    return elem


def _add(parent: Element, ns: str, tag: str, text: str = "", **attrs: str) -> Element:
    child = SubElement(parent, q(ns, tag), attrs)
    if text:
        child.text = text
    return child


def _chat(event: Event, mapper: AddressMapper, message_id: str) -> Element:
    """A chat message from the local user's JID with its id and origin-id."""
    elem = _stanza("message", mapper.local_jid(event.source), mapper.remote_jid(event.destination),
                   type="chat", id=message_id)
    _add(elem, NS_SID, "origin-id", id=message_id)
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
        _add(elem, STANZA_NS, "body", _styled_body(event.body, event.text))
        if event.reply_to and (target := ids.xmpp_id(event.reply_to)):
            _add(elem, NS_REPLY, "reply", id=target)
        if event.thread_id:
            _add(elem, STANZA_NS, "thread",
                 ids.xmpp_id(event.thread_id) or message_id_for(event.thread_id))
        _add(elem, NS_CHATSTATES, "active")
        if request_receipts:
            _add(elem, NS_RECEIPTS, "request")
        if markable:
            _add(elem, NS_MARKERS, "markable")
        return [elem]
    if isinstance(event, Edit):
        target = _xmpp_id(ids, event.target_id)
        elem = _chat(event, mapper, message_id_for(event.event_id))
        _add(elem, STANZA_NS, "body", _styled_body(event.body, event.text))
        _add(elem, NS_CORRECT, "replace", id=target)
        if request_receipts:
            _add(elem, NS_RECEIPTS, "request")
        return [elem]
    if isinstance(event, Retract):
        elem = _chat(event, mapper, message_id_for(event.event_id))
        _add(elem, NS_RETRACT, "retract", id=_xmpp_id(ids, event.target_id))
        _add(elem, NS_FALLBACK, "fallback", **{"for": NS_RETRACT})
        _add(elem, STANZA_NS, "body",
             "/me retracted a previous message, but it's unsupported by your client.")
        _add(elem, NS_HINTS, "store")
        return [elem]
    if isinstance(event, ReactionAdd | ReactionRemove):
        return _encode_reaction(event, mapper, ids)
    if isinstance(event, Typing):
        elem = _stanza("message", mapper.local_jid(event.source),
                       mapper.remote_jid(event.destination), type="chat")
        _add(elem, NS_CHATSTATES, event.state)
        _add(elem, NS_HINTS, "no-store")
        return [elem]
    if isinstance(event, Presence):
        return [_encode_presence(event, mapper)]
    if isinstance(event, Profile):
        # A presence cannot carry a profile without restating availability, which a
        # Profile does not know: XMPP clients fetch the vCard (vcard_result) instead.
        return []
    if isinstance(event, ContactRequest | ContactAccept | ContactRemove):
        kinds = {ContactRequest: ("subscribe",), ContactAccept: ("subscribed",),
                 ContactRemove: ("unsubscribe", "unsubscribed")}[type(event)]
        return [_stanza("presence", mapper.local_jid(event.source),
                        mapper.remote_jid(event.destination), type=kind) for kind in kinds]
    if isinstance(event, FileShare):
        return _encode_file(event, mapper, request_receipts)
    if isinstance(event, DeliveryOutcome):
        return _encode_outcome(event, mapper, ids)
    if isinstance(event, Error):
        elem = _chat(event, mapper, message_id_for(event.event_id))
        detail = f": {event.reason}" if event.reason else ""
        _add(elem, STANZA_NS, "body", f"⚠ {event.code}{detail}")
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
        _add(elem, STANZA_NS, "body", f"_{note}_")
        _add(elem, NS_REPLY, "reply", id=target)
        return [elem]
    current = {v for v in (single_emoji(r) for r in ids.reactions(event.target_id,
                                                                   event.source)) if v}
    if isinstance(event, ReactionAdd):
        current.add(value)
    else:
        current.discard(value)
    elem = _chat(event, mapper, message_id_for(event.event_id))
    reactions = _add(elem, NS_REACTIONS, "reactions", id=target)
    for item in sorted(current):
        _add(reactions, NS_REACTIONS, "reaction", item)
    _add(elem, NS_HINTS, "store")
    return [elem]


_SHOW_OF: dict[Availability, str] = {"away": "away", "busy": "dnd"}


def _encode_presence(event: Presence, mapper: AddressMapper) -> Element:
    elem = _stanza("presence", mapper.local_jid(event.source),
                   mapper.remote_jid(event.destination),
                   type="unavailable" if event.availability == "offline" else "")
    if event.availability in _SHOW_OF:
        _add(elem, STANZA_NS, "show", _SHOW_OF[event.availability])
    if event.status:
        _add(elem, STANZA_NS, "status", event.status)
    return elem


def _encode_file(event: FileShare, mapper: AddressMapper,
                 request_receipts: bool) -> list[Element]:
    stanzas: list[Element] = []
    if event.caption:
        caption = _chat(event, mapper, message_id_for(event.event_id + "/caption"))
        _add(caption, STANZA_NS, "body", event.caption)
        stanzas.append(caption)
    elem = _chat(event, mapper, message_id_for(event.event_id))
    _add(elem, STANZA_NS, "body", event.url)
    oob = _add(elem, NS_OOB, "x")
    _add(oob, NS_OOB, "url", event.url)
    _add(oob, NS_OOB, "desc", event.name)
    if request_receipts:
        _add(elem, NS_RECEIPTS, "request")
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
        elem = _stanza("message", from_jid, to_jid, id=message_id_for(event.event_id))
        _add(elem, NS_RECEIPTS, "received", id=target)
        _add(elem, NS_HINTS, "store")
        return [elem]
    stanzas: list[Element] = []
    reason = event.reason or "undeliverable"
    if target:
        # The XMPP-native failure: clients mark the message with this id as failed.
        bounce = _stanza("message", from_jid, to_jid, type="error", id=target)
        error = _add(bounce, STANZA_NS, "error", type="cancel")
        _add(error, NS_STANZAS, "recipient-unavailable"
             if reason.startswith("unavailable") else "undefined-condition")
        _add(error, NS_STANZAS, "text", reason)
        stanzas.append(bounce)
    notice = _chat(event, mapper, message_id_for(event.event_id))
    words = failure_note(reason)
    _add(notice, STANZA_NS, "body", f"⚠ {words[:1].upper()}{words[1:]}.")
    if target:
        _add(notice, NS_REPLY, "reply", id=target)
    stanzas.append(notice)
    return stanzas


def subscribe_back(event: ContactAccept, *, mapper: AddressMapper) -> list[Element]:
    """After a local user accepts a remote contact (``subscribed``), ask for the remote's
    presence in turn (``subscribe``), so that both sides see each other."""
    return [_stanza("presence", mapper.local_jid(event.source),
                    mapper.remote_jid(event.destination), type="subscribe")]


def resync_presence(local: Address, remote: Address, *, mapper: AddressMapper,
                    presence: Presence | None = None) -> list[Element]:
    """After a (re)connect: probe ``remote``'s presence and restate ``local``'s, if known."""
    stanzas = [_stanza("presence", mapper.local_jid(local), mapper.remote_jid(remote),
                       type="probe")]
    if presence is not None:
        stanzas.append(_encode_presence(
            msgspec.structs.replace(presence, source=local, destination=remote), mapper))
    return stanzas


def message_id_of(stanzas: Iterable[Element]) -> str | None:
    """The XMPP id to record for the message among ``stanzas`` (the last with an origin-id)."""
    found = None
    for elem in stanzas:
        origin = _child(elem, NS_SID, "origin-id")
        if origin is not None:
            found = origin.get("id") or found
    return found


# ------------------------------------------------------- replies and queries

def error_reply(elem: Element, condition: StanzaCondition, type: ErrorType | None = None,
                text: str = "") -> Element | None:
    """The error stanza answering ``elem`` (RFC 6120 §8.3): same kind and id, addresses
    swapped, ``type='error'``; the original payload is not echoed (no content).

    ``None`` when ``elem`` is itself an error or an iq result (never answered, so two
    entities cannot bounce errors at each other forever).
    """
    if elem.get("type") == "error" or (elem.get("type") == "result" and
                                       _ns_name(elem.tag)[1] == "iq"):
        return None
    ns, name = _ns_name(elem.tag)
    reply = Element(q(ns or STANZA_NS, name), {"type": "error"})
    for attr, source in (("from", "to"), ("to", "from"), ("id", "id")):
        if elem.get(source):
            reply.set(attr, elem.get(source, ""))
    error = SubElement(reply, q(ns or STANZA_NS, "error"),
                       {"type": type or DEFAULT_ERROR_TYPE[condition]})
    SubElement(error, q(NS_STANZAS, condition))
    if text:
        SubElement(error, q(NS_STANZAS, "text")).text = text
    return reply


def error_reply_for(elem: Element, error: StanzaError) -> Element | None:
    """:func:`error_reply` for a decoded :class:`StanzaError`."""
    return error_reply(elem, error.condition, error.type, error.text)


def iq_result(request: Element) -> Element:
    """An empty ``result`` for an iq ``get``/``set`` (a ping's answer)."""
    ns, _ = _ns_name(request.tag)
    reply = Element(q(ns or STANZA_NS, "iq"), {"type": "result"})
    for attr, source in (("from", "to"), ("to", "from"), ("id", "id")):
        if request.get(source):
            reply.set(attr, request.get(source, ""))
    return reply


def disco_info_result(request: Element, *, component: bool, gateway_type: str,
                      name: str = "Interlink") -> Element:
    """The XEP-0030 disco#info answer for the component itself or one of its users.

    ``gateway_type`` is the XEP-0100 identity type of the component: the
    platform its users live on, as the I/O layer learns it (never named here).
    """
    reply = iq_result(request)
    asked = request.find(q(NS_DISCO_INFO, "query"))
    query = _add(reply, NS_DISCO_INFO, "query")
    if asked is not None and asked.get("node"):
        query.set("node", asked.get("node", ""))
    if component:
        _add(query, NS_DISCO_INFO, "identity", category="gateway", type=gateway_type, name=name)
    else:
        _add(query, NS_DISCO_INFO, "identity", category="client", type="pc")
    for feature in sorted(set(FEATURES) | (set(COMPONENT_FEATURES) if component else set())):
        _add(query, NS_DISCO_INFO, "feature", var=feature)
    return reply


def disco_items_result(request: Element, items: Iterable[tuple[str, str]] = ()) -> Element:
    """The XEP-0030 disco#items answer: ``(jid, name)`` pairs (rooms, later)."""
    reply = iq_result(request)
    query = _add(reply, NS_DISCO_ITEMS, "query")
    for jid, label in items:
        _add(query, NS_DISCO_ITEMS, "item", jid=jid, **({"name": label} if label else {}))
    return reply


def vcard_result(profile: Profile, request: Element) -> Element:
    """The vCard-temp (XEP-0054) answer describing ``profile``."""
    reply = iq_result(request)
    vcard = _add(reply, NS_VCARD, "vCard")
    if profile.name:
        _add(vcard, NS_VCARD, "FN", profile.name)
        _add(vcard, NS_VCARD, "NICKNAME", profile.name)
    if profile.email:
        email = _add(vcard, NS_VCARD, "EMAIL")
        _add(email, NS_VCARD, "INTERNET")
        _add(email, NS_VCARD, "USERID", profile.email)
    if profile.title:
        _add(vcard, NS_VCARD, "TITLE", profile.title)
    if profile.avatar_url:
        photo = _add(vcard, NS_VCARD, "PHOTO")
        _add(photo, NS_VCARD, "EXTVAL", profile.avatar_url)
    return reply


def vcard_request(from_jid: str, to_jid: str, request_id: str) -> Element:
    """An iq asking ``to_jid``'s vCard (after :func:`avatar_hash` changed, or on add)."""
    iq = _stanza("iq", from_jid, to_jid, type="get", id=request_id)
    _add(iq, NS_VCARD, "vCard")
    return iq


PresenceOf = Callable[[Address], Presence | None]
ProfileOf = Callable[[Address], Profile | None]
IsContact = Callable[[Address, Address], bool]


def query_of(elem: Element, *, mapper: AddressMapper) -> Query | StanzaError | None:
    """The :class:`Query` ``elem`` asks (iq get/set, presence probe); ``None`` when it is
    not a query. The same answer :func:`decode_stanza` gives for such stanzas."""
    _, name = _ns_name(elem.tag)
    if name == "iq" and elem.get("type") in ("get", "set"):
        found = _decode_iq(elem, mapper, 0.0)
    elif name == "presence" and elem.get("type") == "probe":
        found = _decode_presence(elem, mapper, 0.0)
    else:
        return None
    return found if isinstance(found, Query | StanzaError) else None


def answer_directly(elem: Element, *, mapper: AddressMapper, presence_of: PresenceOf,
                    profile_of: ProfileOf, is_contact: IsContact,
                    gateway_type: str) -> list[Element] | None:
    """The answer to a query the adapter handles itself (disco, vCard, ping, probe), or
    ``None`` when ``elem`` is not one (decode it with :func:`decode_stanza`).

    Profiles and presence are shown only to accepted contacts (``is_contact(local,
    remote)``): others get an empty vCard and no presence.
    """
    query = query_of(elem, mapper=mapper)
    if query is None:
        return None
    if isinstance(query, StanzaError):
        reply = error_reply_for(elem, query)
        return [] if reply is None else [reply]
    target, requester = query.target, query.requester
    shared = target is not None and requester is not None and is_contact(target, requester)
    if query.kind == "disco-info":
        return [disco_info_result(elem, component=target is None, gateway_type=gateway_type)]
    if query.kind == "disco-items":
        return [disco_items_result(elem)]
    if query.kind == "ping":
        return [iq_result(elem)]
    if query.kind == "vcard":
        profile = profile_of(target) if target is not None and shared else None
        return [vcard_result(profile or Profile(source=_NOBODY, destination=_NOBODY), elem)]
    if not shared or target is None or requester is None:
        return []  # a probe from someone who is not a contact: no presence for them
    presence = presence_of(target) or Presence(source=target, destination=requester,
                                               availability="offline")
    reply_to = elem.get("from", "")
    answer = _encode_presence(
        msgspec.structs.replace(presence, source=target, destination=requester), mapper)
    answer.set("to", reply_to)  # the probing resource
    return [answer]


_NOBODY = Address(user="nobody", domain="invalid")
