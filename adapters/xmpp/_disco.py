"""Queries the component answers itself: service discovery (XEP-0030), vCards
(XEP-0054), ping (XEP-0199) and presence probes. Pure: no I/O.

Rules:

- :func:`answer_directly` gives the answer to such a query, or ``None`` when
  the stanza is not one (then it goes to :func:`~._decode.decode_stanza`).
- Profiles and presence are shown only to accepted contacts; others get an
  empty vCard and no presence.
- The component names no platform itself: ``gateway_type`` (its XEP-0100
  identity) is the platform the I/O layer finds its users on.
- :func:`vcard_request` asks a remote contact's vCard; the answer decodes to
  their Profile in :mod:`._decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from xml.etree.ElementTree import Element

import msgspec

from engine import Address, Presence, Profile

from ._decode import query_of
from ._encode import encode_presence
from ._jid import AddressMapper
from ._stanza import (
    NS_CHATSTATES,
    NS_CORRECT,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_FALLBACK,
    NS_OOB,
    NS_PING,
    NS_REACTIONS,
    NS_RECEIPTS,
    NS_REPLY,
    NS_RETRACT,
    NS_SID,
    NS_STYLING,
    NS_VCARD,
    StanzaError,
    add_child,
    error_reply_for,
    iq_result,
    new_stanza,
    q,
)

#: features every JID of the component answers disco#info with
FEATURES: tuple[str, ...] = (
    NS_DISCO_INFO, NS_CHATSTATES, NS_RECEIPTS, NS_CORRECT, NS_RETRACT, NS_REACTIONS,
    NS_REPLY, NS_FALLBACK, NS_SID, NS_OOB, NS_VCARD, NS_STYLING, NS_PING,
)
#: features only the component's own domain adds
COMPONENT_FEATURES: tuple[str, ...] = (NS_DISCO_ITEMS,)


def disco_info_result(request: Element, *, component: bool, gateway_type: str,
                      name: str = "Interlink") -> Element:
    """The XEP-0030 disco#info answer for the component itself or one of its users.

    ``gateway_type`` is the XEP-0100 identity type of the component: the
    platform its users live on, as the I/O layer learns it (never named here).
    """
    reply = iq_result(request)
    asked = request.find(q(NS_DISCO_INFO, "query"))
    query = add_child(reply, NS_DISCO_INFO, "query")
    if asked is not None and asked.get("node"):
        query.set("node", asked.get("node", ""))
    if component:
        add_child(query, NS_DISCO_INFO, "identity", category="gateway", type=gateway_type,
                  name=name)
    else:
        add_child(query, NS_DISCO_INFO, "identity", category="client", type="pc")
    for feature in sorted(set(FEATURES) | (set(COMPONENT_FEATURES) if component else set())):
        add_child(query, NS_DISCO_INFO, "feature", var=feature)
    return reply


def disco_items_result(request: Element, items: Iterable[tuple[str, str]] = ()) -> Element:
    """The XEP-0030 disco#items answer: ``(jid, name)`` pairs (rooms, later)."""
    reply = iq_result(request)
    query = add_child(reply, NS_DISCO_ITEMS, "query")
    for jid, label in items:
        add_child(query, NS_DISCO_ITEMS, "item", jid=jid, **({"name": label} if label else {}))
    return reply


def vcard_result(profile: Profile, request: Element) -> Element:
    """The vCard-temp (XEP-0054) answer describing ``profile``."""
    reply = iq_result(request)
    vcard = add_child(reply, NS_VCARD, "vCard")
    if profile.name:
        add_child(vcard, NS_VCARD, "FN", profile.name)
        add_child(vcard, NS_VCARD, "NICKNAME", profile.name)
    if profile.email:
        email = add_child(vcard, NS_VCARD, "EMAIL")
        add_child(email, NS_VCARD, "INTERNET")
        add_child(email, NS_VCARD, "USERID", profile.email)
    if profile.title:
        add_child(vcard, NS_VCARD, "TITLE", profile.title)
    if profile.avatar_url:
        photo = add_child(vcard, NS_VCARD, "PHOTO")
        add_child(photo, NS_VCARD, "EXTVAL", profile.avatar_url)
    return reply


def vcard_request(from_jid: str, to_jid: str, request_id: str) -> Element:
    """An iq asking ``to_jid``'s vCard (after :func:`avatar_hash` changed, or on add)."""
    iq = new_stanza("iq", from_jid, to_jid, type="get", id=request_id)
    add_child(iq, NS_VCARD, "vCard")
    return iq


PresenceOf = Callable[[Address], Presence | None]
ProfileOf = Callable[[Address], Profile | None]
IsContact = Callable[[Address, Address], bool]


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
    answer = encode_presence(
        msgspec.structs.replace(presence, source=target, destination=requester), mapper)
    answer.set("to", reply_to)  # the probing resource
    return [answer]


_NOBODY = Address(user="nobody", domain="invalid")
