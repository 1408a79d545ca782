"""What the XMPP translation modules share: namespaces, element helpers, stanza errors,
and the ids of messages. Pure: no I/O.

Rules:

- Stanzas are :class:`xml.etree.ElementTree.Element` trees. Stanzas this
  package builds are in the component stream's namespace (:data:`STANZA_NS`);
  inbound ones arrive as ``jabber:client`` (the connection rewrites them).
- A stanza that cannot be translated is answered with a :class:`StanzaError`
  through :func:`error_reply` (RFC 6120 §8.3): same kind and id, addresses
  swapped, the payload never echoed. Errors and iq results are never
  answered. The router's refusals map to fixed errors (:func:`refusal_error`);
  a busy conversation is :data:`BUSY` (``wait``/``resource-constraint``).
- Ids: XMPP clients choose their own message ids (counters, short random
  strings), unique at best per sender: an id names a message only *within its
  conversation*, the pair of the XMPP user and the local user. A message that
  starts on XMPP is known by its XEP-0359 origin-id (else its ``id`` attribute)
  under the ``xmpp`` platform; its canonical id is derived from the sender, the
  recipient and that id (:func:`canonical_id_for`), so a resent stanza maps to
  the same canonical id and an equal id in another conversation does not. A
  message Interlink sends to XMPP gets ``id`` = origin-id =
  :func:`message_id_for` of its canonical id (unique, since canonical ids are).
  What needs the directory comes through a :class:`MessageIdLookup` of
  synchronous reads, which resolves ids within the stanza's conversation.
"""

from __future__ import annotations

import hashlib
from typing import Protocol
from xml.etree.ElementTree import Element, SubElement

import msgspec

from engine import Address, derive_canonical_id

from ._jid import ErrorType, JidError, StanzaCondition

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
        """The canonical id of the message XMPP knows as ``xmpp_id`` in the conversation
        of the stanza being decoded (never another conversation's), if known."""
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

    def sender_jid(self, canonical_id: str) -> str | None:
        """The full JID (with its resource) a message that started on XMPP came from, if
        known: where an error about it goes (RFC 6120 §8.3.1: to the sender of the
        stanza; servers drop a message error sent to a bare JID, RFC 6121 §8.5.2.1.1)."""
        ...


#: how the ids of the messages Interlink sends begin (:func:`message_id_for`)
OWN_ID_PREFIX = "il-"


def message_id_for(canonical_id: str) -> str:
    """The XMPP ``id`` and origin-id of a stanza Interlink sends for a canonical id."""
    return OWN_ID_PREFIX + hashlib.blake2b(canonical_id.encode(), digest_size=12).hexdigest()


def canonical_id_for(sender: Address, recipient: Address, xmpp_id: str) -> str:
    """A stable canonical id for a message that starts on XMPP: its coordinates are the
    conversation (sender and recipient) and the id the sender gave it there."""
    return derive_canonical_id("xm", str(sender), str(recipient), xmpp_id)


class StanzaError(msgspec.Struct, frozen=True):
    """Answer the stanza with this error (:func:`error_reply`); nothing is routed."""

    condition: StanzaCondition
    type: ErrorType
    text: str = ""


def stanza_error(condition: StanzaCondition, text: str = "") -> StanzaError:
    """A :class:`StanzaError` of ``condition`` with its usual type (RFC 6120 §8.3.3)."""
    return StanzaError(condition, DEFAULT_ERROR_TYPE[condition], text)


def jid_stanza_error(exc: JidError) -> StanzaError:
    """The stanza error a bad or foreign JID is answered with."""
    return stanza_error(exc.condition, exc.reason)


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
#: a message whose id was taken before in its conversation: XEP-0359 wants an id unique
#: per message
REUSED_ID = StanzaError("conflict", "modify",
                        "this message id was used before: give each message a new id")
#: the answer to a stanza that arrives while the engine starts or stops
RESTARTING = StanzaError("service-unavailable", "wait", "restarting")


def refusal_error(reason: str) -> StanzaError:
    """The stanza error for a refusal ``reason`` of the engine's router (``unknown-address``,
    ``not-a-contact``, ``no-route:<domain>``, ``platform-unavailable:<p>``; anything else
    is a federation policy's reason). The text is fixed: no address, no content."""
    return _REFUSALS.get(reason.partition(":")[0], _POLICY_REFUSAL)


# ------------------------------------------------------------------- helpers


def split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def stanza_namespace(elem: Element) -> str:
    return split_tag(elem.tag)[0]


def find_child(elem: Element, ns: str, tag: str) -> Element | None:
    return elem.find(q(ns, tag))


def text_of(elem: Element | None) -> str:
    return "" if elem is None or elem.text is None else elem.text


def new_stanza(name: str, from_jid: str, to_jid: str, **attrs: str) -> Element:
    elem = Element(q(STANZA_NS, name), {"from": from_jid, "to": to_jid})
    for key, value in attrs.items():
        if value:
            elem.set(key, value)
    return elem


def add_child(parent: Element, ns: str, tag: str, text: str = "", **attrs: str) -> Element:
    child = SubElement(parent, q(ns, tag), attrs)
    if text:
        child.text = text
    return child


def error_reply(elem: Element, condition: StanzaCondition, type: ErrorType | None = None,
                text: str = "") -> Element | None:
    """The error stanza answering ``elem`` (RFC 6120 §8.3): same kind and id, addresses
    swapped, ``type='error'``; the original payload is not echoed (no content).

    ``None`` when ``elem`` is itself an error or an iq result (never answered, so two
    entities cannot bounce errors at each other forever).
    """
    if elem.get("type") == "error" or (elem.get("type") == "result" and
                                       split_tag(elem.tag)[1] == "iq"):
        return None
    ns, name = split_tag(elem.tag)
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
    ns, _ = split_tag(request.tag)
    reply = Element(q(ns or STANZA_NS, "iq"), {"type": "result"})
    for attr, source in (("from", "to"), ("to", "from"), ("id", "id")):
        if request.get(source):
            reply.set(attr, request.get(source, ""))
    return reply
