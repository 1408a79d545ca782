"""Inbound: XMPP stanzas -> canonical events. Pure: no I/O, no clock (``now`` is passed in).

Stanzas are :class:`xml.etree.ElementTree.Element` trees (slixmpp stanzas
expose theirs as ``stanza.xml``). Inbound, :func:`decode_stanza` turns one
stanza into canonical events, a :class:`Query` the I/O layer answers, an
:class:`Ignored` with a content-free reason, or a :class:`StanzaError` to
send back with :func:`~._stanza.error_reply`. What needs the directory
comes through a :class:`~._stanza.MessageIdLookup` of synchronous reads; it
resolves the ids a stanza names within that stanza's conversation (the sender
and the recipient), since XMPP clients choose ids unique only there.
Outbound is :mod:`._encode`; the queries the component answers itself are
:mod:`._disco`; ids and errors are :mod:`._stanza`.

Mapping (inbound -> canonical; :mod:`._encode` is the mirror):

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

A stanza the router would refuse is answered only where XMPP expects an
answer (:func:`answers_refusals`): messages and subscription requests, never
availability presence (RFC 6121 drops those silently).
"""

from __future__ import annotations

from typing import Literal
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
    Event,
    FileShare,
    Ignored,
    Message,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    Typing,
    new_event_id,
    to_plain_text,
)

from ._jid import AddressMapper, JidError, StanzaCondition, split_jid
from ._stanza import (
    DEFAULT_ERROR_TYPE,
    NS_CHATSTATES,
    NS_CLIENT,
    NS_COMPONENT,
    NS_CORRECT,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_FALLBACK,
    NS_FASTEN,
    NS_MARKERS,
    NS_OOB,
    NS_PING,
    NS_REACTIONS,
    NS_RECEIPTS,
    NS_REPLY,
    NS_RETRACT,
    NS_RETRACT_0,
    NS_SID,
    NS_STANZAS,
    NS_VCARD,
    NS_VCARD_UPDATE,
    PLATFORM,
    MessageIdLookup,
    StanzaError,
    canonical_id_for,
    find_child,
    jid_stanza_error,
    q,
    split_tag,
    stanza_error,
    stanza_namespace,
    text_of,
)
from ._styling import styling_to_rich

#: the longest body accepted, in UTF-8 bytes
MAX_BODY_BYTES = 64 * 1024
#: the longest reaction accepted (one emoji grapheme can be several code points)
MAX_REACTION = 32


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


def answers_refusals(elem: Element) -> bool:
    """Whether the sender of ``elem`` hears, as a stanza error, that it was refused.

    Messages and subscription requests do. Availability presence does not: RFC 6121
    has a server drop one it will not deliver, without an error (the router still
    logs the refusal). Errors and iq results are never answered (:func:`error_reply`).
    """
    _, name = split_tag(elem.tag)
    kind = elem.get("type", "")
    if name == "message":
        return kind != "error"
    return name == "presence" and kind in _SUBSCRIPTIONS


def _body(elem: Element) -> Element | None:
    """The message body: the one without xml:lang, else the first."""
    bodies = elem.findall(q(stanza_namespace(elem), "body"))
    plain = [b for b in bodies if "{http://www.w3.org/XML/1998/namespace}lang" not in b.attrib]
    found = plain or bodies
    return found[0] if found else None


def receipt_requested(elem: Element) -> bool:
    """Whether an inbound message asks for a XEP-0184 delivery receipt."""
    return find_child(elem, NS_RECEIPTS, "request") is not None


def avatar_hash(elem: Element) -> str | None:
    """The XEP-0153 photo hash a presence advertises (``""``: no avatar; ``None``: not said)."""
    update = find_child(elem, NS_VCARD_UPDATE, "x")
    photo = None if update is None else find_child(update, NS_VCARD_UPDATE, "photo")
    return None if photo is None else text_of(photo).strip()


def xmpp_message_id(elem: Element) -> str:
    """The id other stanzas use for this message: its origin-id, else its ``id``."""
    origin = find_child(elem, NS_SID, "origin-id")
    return (origin.get("id", "") if origin is not None else "") or elem.get("id", "")


# ------------------------------------------------------------------- inbound


def decode_stanza(elem: Element, *, mapper: AddressMapper, ids: MessageIdLookup, now: float,
                  max_body_bytes: int = MAX_BODY_BYTES) -> Decoded:
    """Translate one inbound stanza (from an XMPP user to a JID under the component)."""
    ns, name = split_tag(elem.tag)
    if ns not in (NS_COMPONENT, NS_CLIENT):
        return stanza_error("bad-request", "unknown stanza namespace")
    if name == "message":
        return _decode_message(elem, mapper, ids, now, max_body_bytes)
    if name == "presence":
        return decode_presence(elem, mapper, now)
    if name == "iq":
        return decode_iq(elem, mapper, now)
    return stanza_error("bad-request", "unknown stanza")


def _parties(elem: Element, mapper: AddressMapper) -> tuple[Address, Address] | StanzaError:
    sender, recipient = elem.get("from"), elem.get("to")
    if not sender or not recipient:
        return stanza_error("bad-request", "a stanza needs 'from' and 'to'")
    try:
        return mapper.address_of_remote(sender), mapper.address_of_local(recipient)
    except JidError as exc:
        return jid_stanza_error(exc)


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
        return stanza_error("bad-request", "unknown message type")
    if _is_component(elem.get("to"), mapper):
        return stanza_error("service-unavailable", "the gateway itself takes no messages")
    parties = _parties(elem, mapper)
    if isinstance(parties, StanzaError):
        return parties
    source, destination = parties
    xmpp_id = xmpp_message_id(elem)

    received = find_child(elem, NS_RECEIPTS, "received")
    if received is not None:
        target = ids.canonical_id(received.get("id", ""))
        if target is None:
            return Ignored("unknown-message")
        return [DeliveryOutcome(source=source, destination=destination, timestamp=now,
                                target_event_id=target, status="delivered")]

    retracted = _retracted_id(elem)
    replace = find_child(elem, NS_CORRECT, "replace")
    reactions = find_child(elem, NS_REACTIONS, "reactions")
    if "" in (retracted, None if replace is None else replace.get("id", ""),
              None if reactions is None else reactions.get("id", "")):
        return stanza_error("bad-request", "a correction, retraction or reaction needs the id "
                                           "of the message it refers to")
    if retracted is not None:
        target = ids.canonical_id(retracted)
        if target is None:
            return Ignored("unknown-message")
        return [Retract(event_id=_event_id(source, destination, xmpp_id), source=source,
                        destination=destination, timestamp=now, target_id=target)]

    if reactions is not None:
        return _decode_reactions(reactions, source, destination, ids, xmpp_id, now)

    body = text_of(_body(elem))
    if len(body.encode()) > max_body_bytes:
        return stanza_error("not-acceptable", f"the body is longer than {max_body_bytes} bytes")
    oob = find_child(elem, NS_OOB, "x")
    if body.strip() or oob is not None:
        if not xmpp_id:
            return stanza_error("bad-request", "a message needs an id")
        return _decode_content(elem, body, oob, replace, (source, destination, now), ids,
                               xmpp_id)
    if replace is not None:
        return stanza_error("bad-request", "a correction needs a body")
    for state in ("composing", "paused", "active", "inactive", "gone"):
        if find_child(elem, NS_CHATSTATES, state) is not None:
            typing: Literal["composing", "paused"] = \
                "composing" if state == "composing" else "paused"
            return [Typing(source=source, destination=destination, timestamp=now,
                           state=typing)]
    if any(split_tag(child.tag)[0] == NS_MARKERS for child in elem):
        return Ignored("chat-marker")
    return stanza_error("bad-request", "the message has no body")


def _event_id(source: Address, destination: Address, xmpp_id: str) -> str:
    """A stable event id for an event that carries an XMPP id (de-duplication within its
    conversation), else a new one."""
    return canonical_id_for(source, destination, xmpp_id) if xmpp_id else new_event_id()


def _retracted_id(elem: Element) -> str | None:
    retract = find_child(elem, NS_RETRACT, "retract")
    if retract is not None:
        return retract.get("id", "")
    fastening = find_child(elem, NS_FASTEN, "apply-to")
    if fastening is not None and find_child(fastening, NS_RETRACT_0, "retract") is not None:
        return fastening.get("id", "")
    return None


def _decode_reactions(reactions: Element, source: Address, destination: Address,
                      ids: MessageIdLookup, xmpp_id: str, now: float) -> Decoded:
    target = ids.canonical_id(reactions.get("id", ""))
    if target is None:
        return Ignored("unknown-message")
    new: set[str] = set()
    for reaction in reactions.findall(q(NS_REACTIONS, "reaction")):
        value = text_of(reaction).strip()
        if value and len(value) <= MAX_REACTION and "\n" not in value:
            new.add(value)
    before = ids.reactions(target, source)
    events: list[Event] = []
    for value in sorted(new - before):
        events.append(ReactionAdd(
            event_id=_event_id(source, destination, f"{xmpp_id}+{value}" if xmpp_id else ""),
            source=source, destination=destination, timestamp=now, target_id=target,
            emoji=value))
    for value in sorted(before - new):
        events.append(ReactionRemove(
            event_id=_event_id(source, destination, f"{xmpp_id}-{value}" if xmpp_id else ""),
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
    canonical = canonical_id_for(source, destination, xmpp_id)
    platform_ids = {PLATFORM: xmpp_id}
    reply = find_child(elem, NS_REPLY, "reply")
    reply_to = ids.canonical_id(reply.get("id", "")) if reply is not None else None
    if reply is not None:
        body = _strip_fallback(elem, body, NS_REPLY)
    thread = text_of(elem.find(q(stanza_namespace(elem), "thread"))).strip()
    thread_id = ids.canonical_id(thread) if thread else None
    if oob is not None:
        url = text_of(find_child(oob, NS_OOB, "url")).strip()
        if not url:
            return stanza_error("bad-request", "out-of-band data without a URL")
        desc = text_of(find_child(oob, NS_OOB, "desc")).strip()
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
    error = elem.find(q(stanza_namespace(elem), "error"))
    if error is not None:
        for child in error:
            ns, name = split_tag(child.tag)
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


def decode_presence(elem: Element, mapper: AddressMapper, now: float) -> Decoded:
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
    ns = stanza_namespace(elem)
    status = text_of(elem.find(q(ns, "status"))).strip()
    if kind == "unavailable":
        return [Presence(source=source, destination=destination, timestamp=now,
                         availability="offline", status=status)]
    if kind:
        return stanza_error("bad-request", "unknown presence type")
    show = text_of(elem.find(q(ns, "show"))).strip()
    return [Presence(source=source, destination=destination, timestamp=now,
                     availability=_SHOW.get(show, "available"), status=status)]


def decode_iq(elem: Element, mapper: AddressMapper, now: float) -> Decoded:
    kind = elem.get("type", "")
    if not elem.get("id"):
        return stanza_error("bad-request", "an iq needs an id")
    if kind == "result":
        vcard = find_child(elem, NS_VCARD, "vCard")
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
        return stanza_error("bad-request", "an iq get or set has exactly one child")
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
            return jid_stanza_error(exc)
    query: QueryKind | None = None
    if kind == "get":
        query = {q(NS_DISCO_INFO, "query"): "disco-info",
                 q(NS_DISCO_ITEMS, "query"): "disco-items",
                 q(NS_VCARD, "vCard"): "vcard",
                 q(NS_PING, "ping"): "ping"}.get(payload.tag)  # type: ignore[assignment]
    if query is None:
        return stanza_error("service-unavailable")
    return Query(kind=query, target=target, requester=requester)


def profile_from_vcard(vcard: Element, address: Address, *, timestamp: float = 0.0) -> Profile:
    """A vCard-temp (XEP-0054) as a profile broadcast.

    An avatar is taken only as an external URL (``PHOTO/EXTVAL``); an inline
    ``BINVAL`` photo would need Interlink to serve it, which it does not yet.
    """
    def field(*path: str) -> str:
        found = vcard.find("/".join(q(NS_VCARD, p) for p in path))
        return text_of(found).strip()

    name = field("FN") or " ".join(
        p for p in (field("N", "GIVEN"), field("N", "FAMILY")) if p) or field("NICKNAME")
    return Profile(source=address, destination=address, timestamp=timestamp, name=name,
                   email=field("EMAIL", "USERID"), title=field("TITLE"),
                   avatar_url=field("PHOTO", "EXTVAL"))


def query_of(elem: Element, *, mapper: AddressMapper) -> Query | StanzaError | None:
    """The :class:`Query` ``elem`` asks (iq get/set, presence probe); ``None`` when it is
    not a query. The same answer :func:`decode_stanza` gives for such stanzas."""
    _, name = split_tag(elem.tag)
    if name == "iq" and elem.get("type") in ("get", "set"):
        found = decode_iq(elem, mapper, 0.0)
    elif name == "presence" and elem.get("type") == "probe":
        found = decode_presence(elem, mapper, 0.0)
    else:
        return None
    return found if isinstance(found, Query | StanzaError) else None
