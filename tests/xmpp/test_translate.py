"""XMPP stanzas <-> canonical events: golden stanzas in tests/xmpp/golden, bad input, properties.

Stanzas are compared canonically (parsed, attributes and children in a
normal order, whitespace between elements ignored), never as strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, fromstring, tostring

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.xmpp._decode import (
    Decoded,
    Query,
    answers_refusals,
    avatar_hash,
    decode_stanza,
    receipt_requested,
)
from adapters.xmpp._disco import (
    answer_directly,
    disco_info_result,
    disco_items_result,
    vcard_result,
)
from adapters.xmpp._encode import encode_event, message_id_of, resync_presence, subscribe_back
from adapters.xmpp._jid import AddressingSettings, AddressMapper
from adapters.xmpp._stanza import (
    BUSY,
    NS_CLIENT,
    NS_DISCO_INFO,
    NS_STANZAS,
    StanzaError,
    canonical_id_for,
    error_reply,
    error_reply_for,
    message_id_for,
    q,
    refusal_error,
)
from adapters.xmpp._styling import normalise, rich_to_styling, styling_to_rich
from engine import (
    Address,
    ChannelInvite,
    CodeBlock,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Error,
    Event,
    FileShare,
    Ignored,
    Link,
    ListBlock,
    Message,
    Presence,
    Profile,
    Quote,
    ReactionAdd,
    ReactionRemove,
    Retract,
    RichText,
    Typing,
    Untranslatable,
)
from engine._richtext import paragraph, text

GOLDEN = Path(__file__).parent / "golden"
JOHN = Address.parse("john@acme.localhost")
PETER = Address.parse("peter@widget.localhost")
NOW = 1_700_000_000.0
DOMAIN = AddressMapper(AddressingSettings(mode="domain", component_domain="acme.localhost"))
HUB = AddressMapper(AddressingSettings(mode="hub", component_domain="hub.example.net"))


class FakeIds:
    """The message-id map: XMPP ids <-> canonical ids, reaction sets, receipt requests."""

    def __init__(self) -> None:
        self.canonical = {"peter-1": "c-peter-1", message_id_for("c-orig"): "c-orig"}
        self.reaction_sets: dict[tuple[str, Address], frozenset[str]] = {}
        self.receipts: set[str] = {"c-peter-1"}

    def canonical_id(self, xmpp_id: str) -> str | None:
        return self.canonical.get(xmpp_id)

    def xmpp_id(self, canonical_id: str) -> str | None:
        return next((x for x, c in self.canonical.items() if c == canonical_id), None)

    def reactions(self, canonical_id: str, reactor: Address) -> frozenset[str]:
        return self.reaction_sets.get((canonical_id, reactor), frozenset())

    def receipt_requested(self, canonical_id: str) -> bool:
        return canonical_id in self.receipts

    def sender_jid(self, canonical_id: str) -> str | None:
        return "peter@widget.localhost/phone" if canonical_id == "c-peter-1" else None


def golden(name: str) -> Element:
    return fromstring((GOLDEN / name).read_text())


def canonical(elem: Element) -> Any:
    """An element as a comparable value: order of attributes and children ignored."""
    children = sorted((canonical(c) for c in elem), key=repr)
    return (elem.tag, sorted(elem.attrib.items()), (elem.text or "").strip(), children)


def assert_stanzas(stanzas: list[Element], name: str) -> None:
    expected = golden(name)
    wanted = list(expected) if expected.tag == "root" else [expected]
    assert [canonical(s) for s in stanzas] == [canonical(w) for w in wanted]


def decode(elem: Element, ids: FakeIds | None = None, mapper: AddressMapper = DOMAIN,
           **kwargs: Any) -> Decoded:
    return decode_stanza(elem, mapper=mapper, ids=ids or FakeIds(), now=NOW, **kwargs)


def events(elem: Element, ids: FakeIds | None = None) -> list[Event]:
    decoded = decode(elem, ids)
    assert isinstance(decoded, list), decoded
    return decoded


def peter_id(xmpp_id: str) -> str:
    """The canonical id of a message Peter sent John with ``xmpp_id``."""
    return canonical_id_for(PETER, JOHN, xmpp_id)


# ------------------------------------------------------------------ inbound

def test_a_chat_message_becomes_a_message() -> None:
    elem = golden("in_message.xml")
    body = RichText(blocks=(
        paragraph("Hi ", text("John", "bold"), ", see ", Link(url="https://widget.test/spec")),
        Quote(blocks=(paragraph("quoted ", text("text", "italic")),)),
    ))
    [message] = events(elem)
    assert message == Message(
        event_id=peter_id("peter-2"), source=PETER, destination=JOHN, timestamp=NOW,
        platform_ids={"xmpp": "peter-2"}, body=body,
        text="Hi John, see https://widget.test/spec\n> quoted text")
    assert receipt_requested(elem)
    assert events(elem) == [message]  # a redelivered stanza keeps its canonical id


def test_a_reply_strips_its_fallback_and_names_a_known_thread() -> None:
    [message] = events(golden("in_reply.xml"))
    assert isinstance(message, Message)
    assert message.body == RichText(blocks=(paragraph("Agreed!"),))
    assert message.reply_to == "c-orig"
    assert message.thread_id == "c-orig"


def test_a_correction_becomes_an_edit() -> None:
    [edit] = events(golden("in_correction.xml"))
    assert edit == Edit(event_id=peter_id("peter-4"), source=PETER, destination=JOHN,
                        timestamp=NOW, platform_ids={"xmpp": "peter-4"}, target_id="c-peter-1",
                        body=RichText(blocks=(paragraph("fixed ", text("typo", "strike")),)),
                        text="fixed typo")


def test_a_correction_of_an_unknown_message_is_a_new_message() -> None:
    elem = golden("in_correction.xml")
    [message] = events(elem, _ids_without("peter-1"))
    assert isinstance(message, Message)
    assert message.text == "fixed typo"


def _ids_without(xmpp_id: str) -> FakeIds:
    ids = FakeIds()
    del ids.canonical[xmpp_id]
    return ids


@pytest.mark.parametrize("name", ["in_retract.xml", "in_retract_fastening.xml"])
def test_a_retraction_becomes_a_retract(name: str) -> None:
    [retract] = events(golden(name))
    assert retract == Retract(event_id=peter_id("peter-5"), source=PETER, destination=JOHN,
                              timestamp=NOW, target_id="c-peter-1")


def test_reactions_are_the_difference_from_the_previous_set() -> None:
    ids = FakeIds()
    ids.reaction_sets[("c-orig", PETER)] = frozenset({"👍", "😂"})
    decoded = events(golden("in_reactions.xml"), ids)
    assert [(type(e).__name__, getattr(e, "emoji", "")) for e in decoded] == [
        ("ReactionAdd", "🎉"), ("ReactionRemove", "😂")]
    assert all(isinstance(e, ReactionAdd | ReactionRemove) and e.target_id == "c-orig"
               and e.source == PETER for e in decoded)
    ids.reaction_sets[("c-orig", PETER)] = frozenset({"👍", "🎉"})
    assert decode(golden("in_reactions.xml"), ids) == Ignored("reactions-unchanged")


def test_chat_states_become_typing() -> None:
    [typing] = events(golden("in_typing.xml"))
    assert typing == Typing(event_id=typing.event_id, source=PETER, destination=JOHN,
                            timestamp=NOW, state="composing")
    paused = golden("in_typing.xml")
    paused.remove(paused[0])
    paused.append(Element(q("http://jabber.org/protocol/chatstates", "paused")))
    [stopped] = events(paused)
    assert isinstance(stopped, Typing)
    assert stopped.state == "paused"


def test_a_receipt_becomes_a_delivered_outcome() -> None:
    [outcome] = events(golden("in_receipt.xml"))
    assert isinstance(outcome, DeliveryOutcome)
    assert (outcome.source, outcome.destination, outcome.target_event_id, outcome.status) == (
        PETER, JOHN, "c-orig", "delivered")


def test_an_out_of_band_url_becomes_a_file_share() -> None:
    [share] = events(golden("in_file.xml"))
    assert share == FileShare(
        event_id=peter_id("peter-8"), source=PETER, destination=JOHN, timestamp=NOW,
        platform_ids={"xmpp": "peter-8"}, name="report.pdf", size=0,
        url="https://upload.widget.localhost/abc/report.pdf")


def test_presence_and_subscriptions() -> None:
    elem = golden("in_presence.xml")
    [presence] = events(elem)
    assert isinstance(presence, Presence)
    assert (presence.availability, presence.status) == ("busy", "In a meeting")
    assert avatar_hash(elem) == "01b87fcd030b72895ff8e88db57ec525450f000d"
    [offline] = events(golden("in_unavailable.xml"))
    assert isinstance(offline, Presence)
    assert offline.availability == "offline"
    [request] = events(golden("in_subscribe.xml"))
    assert isinstance(request, ContactRequest)
    assert (request.source, request.destination) == (PETER, JOHN)


@pytest.mark.parametrize(("kind", "expected"), [
    ("subscribe", ContactRequest), ("subscribed", ContactAccept),
    ("unsubscribe", ContactRemove), ("unsubscribed", ContactRemove),
])
def test_subscription_presences(kind: str, expected: type[Event]) -> None:
    elem = golden("in_subscribe.xml")
    elem.set("type", kind)
    [event] = events(elem)
    assert type(event) is expected


@pytest.mark.parametrize(("show", "availability"), [
    ("away", "away"), ("xa", "away"), ("dnd", "busy"), ("chat", "available"), ("", "available"),
])
def test_presence_show_values(show: str, availability: str) -> None:
    elem = fromstring(f'<presence xmlns="jabber:client" from="peter@widget.localhost/x" '
                      f'to="john@acme.localhost"><show>{show}</show></presence>')
    [presence] = events(elem)
    assert isinstance(presence, Presence)
    assert presence.availability == availability


def test_a_vcard_result_becomes_a_profile() -> None:
    [profile] = events(golden("in_vcard.xml"))
    assert profile == Profile(source=PETER, destination=PETER, timestamp=NOW,
                              event_id=profile.event_id, name="Peter Widget",
                              email="peter@widget.test", title="Buyer",
                              avatar_url="https://widget.test/peter.png")


def test_an_error_for_a_message_we_sent_is_a_failed_outcome() -> None:
    [outcome] = events(golden("in_error.xml"))
    assert isinstance(outcome, DeliveryOutcome)
    assert (outcome.target_event_id, outcome.status, outcome.reason) == (
        "c-orig", "failed", "xmpp:service-unavailable")
    assert (outcome.source, outcome.destination) == (PETER, JOHN)
    bounced = golden("in_error.xml")
    bounced.set("from", "widget.localhost")
    [outcome] = events(bounced)
    assert isinstance(outcome, DeliveryOutcome)
    assert outcome.source == Address.parse("postmaster@widget.localhost")
    unknown = golden("in_error.xml")
    unknown.set("id", "never-sent")
    assert decode(unknown) == Ignored("error-for-unknown-message")


def test_hub_mode_decodes_escaped_jids() -> None:
    elem = golden("in_message.xml")
    elem.set("to", "john\\40acme.com@hub.example.net/slack")
    [message] = events_hub(elem)
    assert message.destination == Address.parse("john@acme.com")


def events_hub(elem: Element) -> list[Event]:
    decoded = decode(elem, mapper=HUB)
    assert isinstance(decoded, list)
    return decoded


@pytest.mark.parametrize(("xml", "kind", "target"), [
    ('<iq type="get" id="1" from="peter@widget.localhost/x" to="acme.localhost">'
     '<query xmlns="http://jabber.org/protocol/disco#info"/></iq>', "disco-info", None),
    ('<iq type="get" id="1" from="peter@widget.localhost/x" to="john@acme.localhost">'
     '<query xmlns="http://jabber.org/protocol/disco#info"/></iq>', "disco-info", JOHN),
    ('<iq type="get" id="1" from="peter@widget.localhost/x" to="acme.localhost">'
     '<query xmlns="http://jabber.org/protocol/disco#items"/></iq>', "disco-items", None),
    ('<iq type="get" id="1" from="peter@widget.localhost/x" to="john@acme.localhost">'
     '<vCard xmlns="vcard-temp"/></iq>', "vcard", JOHN),
    ('<iq type="get" id="1" from="widget.localhost" to="acme.localhost">'
     '<ping xmlns="urn:xmpp:ping"/></iq>', "ping", None),
    ('<presence type="probe" from="peter@widget.localhost" to="john@acme.localhost"/>',
     "probe", JOHN),
])
def test_queries(xml: str, kind: str, target: Address | None) -> None:
    elem = fromstring(xml.replace("<iq ", f'<iq xmlns="{NS_CLIENT}" ', 1)
                      .replace("<presence ", f'<presence xmlns="{NS_CLIENT}" ', 1))
    decoded = decode(elem)
    assert isinstance(decoded, Query)
    assert (decoded.kind, decoded.target) == (kind, target)


# ---------------------------------------------------------------- bad input

def _message(body: str = "hi", **attrs: str) -> str:
    attributes = {"type": "chat", "id": "m1", "from": "peter@widget.localhost/phone",
                  "to": "john@acme.localhost", **attrs}
    rendered = " ".join(f'{k}="{v}"' for k, v in attributes.items() if v != "-")
    inner = f"<body>{body}</body>" if body else ""
    return f'<message xmlns="jabber:client" {rendered}>{inner}</message>'


@pytest.mark.parametrize(("xml", "condition"), [
    (_message(**{"from": "-"}), "bad-request"),
    (_message(to="-"), "bad-request"),
    (_message(type="bogus"), "bad-request"),
    (_message(body=""), "bad-request"),
    (_message(id="-"), "bad-request"),
    (_message(to="jo hn@acme.localhost"), "jid-malformed"),
    (_message(to="\\20john@acme.localhost"), "jid-malformed"),
    (_message(to="john@elsewhere.localhost"), "item-not-found"),
    (_message(to="acme.localhost"), "service-unavailable"),
    (_message(**{"from": "widget.localhost"}), "jid-malformed"),
    (_message(**{"from": "mallory@acme.localhost"}), "not-allowed"),
    (_message(**{"from": "jürgen@widget.localhost"}), "not-acceptable"),
    (_message(body="x" * 70_000), "not-acceptable"),
    ('<message xmlns="jabber:client" type="chat" id="m" from="peter@widget.localhost" '
     'to="john@acme.localhost"><replace xmlns="urn:xmpp:message-correct:0" id="peter-1"/>'
     '</message>', "bad-request"),
    ('<message xmlns="jabber:client" type="chat" id="m" from="peter@widget.localhost" '
     'to="john@acme.localhost"><x xmlns="jabber:x:oob"><url> </url></x></message>',
     "bad-request"),
    ('<presence xmlns="jabber:client" type="bogus" from="peter@widget.localhost" '
     'to="john@acme.localhost"/>', "bad-request"),
    ('<iq xmlns="jabber:client" type="get" id="1" from="peter@widget.localhost" '
     'to="john@acme.localhost"><unknown xmlns="urn:example"/></iq>', "service-unavailable"),
    ('<iq xmlns="jabber:client" type="get" from="peter@widget.localhost" '
     'to="john@acme.localhost"><ping xmlns="urn:xmpp:ping"/></iq>', "bad-request"),
    ('<iq xmlns="jabber:client" type="set" id="1" from="peter@widget.localhost" '
     'to="john@acme.localhost"/>', "bad-request"),
    ('<message xmlns="urn:example" from="peter@widget.localhost" to="john@acme.localhost"/>',
     "bad-request"),
    ('<stream xmlns="jabber:client"/>', "bad-request"),
])
def test_bad_input_is_answered_with_an_error(xml: str, condition: str) -> None:
    decoded = decode(fromstring(xml))
    assert isinstance(decoded, StanzaError), decoded
    assert decoded.condition == condition


def test_the_body_limit_is_a_parameter() -> None:
    decoded = decode(fromstring(_message(body="12345")), max_body_bytes=4)
    assert isinstance(decoded, StanzaError)
    assert (decoded.condition, decoded.type) == ("not-acceptable", "modify")


@pytest.mark.parametrize(("xml", "reason"), [
    (_message(type="groupchat"), "message-type:groupchat"),
    (_message(type="headline"), "message-type:headline"),
    ('<message xmlns="jabber:client" type="chat" from="peter@widget.localhost" '
     'to="john@acme.localhost"><displayed xmlns="urn:xmpp:chat-markers:0" id="x"/></message>',
     "chat-marker"),
    ('<message xmlns="jabber:client" from="peter@widget.localhost" to="john@acme.localhost">'
     '<received xmlns="urn:xmpp:receipts" id="nope"/></message>', "unknown-message"),
    ('<message xmlns="jabber:client" from="peter@widget.localhost" to="john@acme.localhost">'
     '<retract xmlns="urn:xmpp:message-retract:1" id="nope"/></message>', "unknown-message"),
    ('<presence xmlns="jabber:client" type="error" from="peter@widget.localhost" '
     'to="john@acme.localhost"/>', "presence-error"),
])
def test_ignored_stanzas(xml: str, reason: str) -> None:
    assert decode(fromstring(xml)) == Ignored(reason)


def test_error_replies_swap_addresses_and_never_answer_errors() -> None:
    request = fromstring(_message(id="peter-9"))
    reply = error_reply(request, "not-acceptable", text="the body is longer than 65536 bytes")
    assert reply is not None
    assert_stanzas([reply], "out_error_reply.xml")
    assert error_reply(golden("in_error.xml"), "bad-request") is None
    assert error_reply(golden("in_vcard.xml"), "bad-request") is None


def test_content_never_reaches_errors() -> None:
    decoded = decode(fromstring(_message(body="secret " * 20_000)))
    assert isinstance(decoded, StanzaError)
    assert "secret" not in decoded.text
    assert "secret" not in repr(events(fromstring(_message(body="secret")))[0])


# ----------------------------------------------------------------- outbound

def encode(event: Event, ids: FakeIds | None = None, **kwargs: Any) -> list[Element]:
    return encode_event(event, mapper=DOMAIN, ids=ids or FakeIds(), **kwargs)


def test_message_golden() -> None:
    body = RichText(blocks=(
        paragraph("Hello ", text("Peter", "bold"), ", see ",
                  Link(url="https://acme.test/q", label="the quote")),
        ListBlock(items=((paragraph("one"),), (paragraph("two"),))),
    ))
    event = Message.create(event_id="c-msg", source=JOHN, destination=PETER, body=body,
                           reply_to="c-peter-1")
    stanzas = encode(event)
    assert_stanzas(stanzas, "out_message.xml")
    assert message_id_of(stanzas) == message_id_for("c-msg")


def test_message_options() -> None:
    event = Message.create(event_id="c-msg", source=JOHN, destination=PETER, body="x",
                           thread_id="c-peter-1", reply_to="c-unknown")
    [elem] = encode(event, request_receipts=False, markable=True)
    assert elem.find(q("urn:xmpp:receipts", "request")) is None
    assert elem.find(q("urn:xmpp:chat-markers:0", "markable")) is not None
    assert elem.find(q("urn:xmpp:reply:0", "reply")) is None  # unknown targets are left out
    assert elem.findtext(q("jabber:component:accept", "thread")) == "peter-1"


def test_edit_retract_reaction_typing_presence_goldens() -> None:
    assert_stanzas(encode(Edit(event_id="c-edit", source=JOHN, destination=PETER,
                               target_id="c-orig",
                               body=RichText(blocks=(paragraph(text("corrected", "italic"),
                                                               " text"),)))),
                   "out_edit.xml")
    assert_stanzas(encode(Retract(event_id="c-retract", source=JOHN, destination=PETER,
                                  target_id="c-orig")), "out_retract.xml")
    ids = FakeIds()
    ids.reaction_sets[("c-peter-1", JOHN)] = frozenset({"👍"})
    assert_stanzas(encode(ReactionAdd(event_id="c-react", source=JOHN, destination=PETER,
                                      target_id="c-peter-1", emoji=":heart:"), ids),
                   "out_reaction_add.xml")
    assert_stanzas(encode(Typing(source=JOHN, destination=PETER)), "out_typing.xml")
    assert_stanzas(encode(Presence(source=JOHN, destination=PETER, availability="busy",
                                   status="Focusing")), "out_presence.xml")
    assert_stanzas(encode(ContactRequest(source=JOHN, destination=PETER)),
                   "out_contact_request.xml")


def test_reaction_remove_sends_the_remaining_set() -> None:
    ids = FakeIds()
    ids.reaction_sets[("c-peter-1", JOHN)] = frozenset({"👍", "🎉"})
    [elem] = encode(ReactionRemove(source=JOHN, destination=PETER, target_id="c-peter-1",
                                   emoji="👍"), ids)
    reactions = elem.find(q("urn:xmpp:reactions:0", "reactions"))
    assert reactions is not None
    assert [r.text for r in reactions] == ["🎉"]


def test_a_custom_emoji_reaction_becomes_a_note() -> None:
    [elem] = encode(ReactionAdd(source=JOHN, destination=PETER, target_id="c-peter-1",
                                emoji=":partyparrot:"))
    assert elem.findtext(q("jabber:component:accept", "body")) == "_reacted :partyparrot:_"
    assert elem.find(q("urn:xmpp:reactions:0", "reactions")) is None


@pytest.mark.parametrize(("event", "types"), [
    (ContactRequest(source=JOHN, destination=PETER), ["subscribe"]),
    (ContactAccept(source=JOHN, destination=PETER), ["subscribed"]),
    (ContactRemove(source=JOHN, destination=PETER), ["unsubscribe", "unsubscribed"]),
    (Presence(source=JOHN, destination=PETER, availability="offline"), ["unavailable"]),
])
def test_subscription_and_presence_types(event: Event, types: list[str]) -> None:
    assert [e.get("type") for e in encode(event)] == types


def test_subscribe_back_and_resync() -> None:
    [back] = subscribe_back(ContactAccept(source=JOHN, destination=PETER), mapper=DOMAIN)
    assert (back.get("type"), back.get("from"), back.get("to")) == (
        "subscribe", "john@acme.localhost", "peter@widget.localhost")
    probe, presence = resync_presence(JOHN, PETER, mapper=DOMAIN, presence=Presence(
        source=JOHN, destination=JOHN, availability="away"))
    assert probe.get("type") == "probe"
    assert (presence.get("to"), presence.findtext(q("jabber:component:accept", "show"))) == (
        "peter@widget.localhost", "away")


def test_file_share_golden() -> None:
    event = FileShare(event_id="c-file", source=JOHN, destination=PETER, name="report.pdf",
                      size=1234, url="https://interlink.acme.localhost/files/abc?sig=x",
                      caption="Here is the report")
    stanzas = encode(event)
    assert_stanzas(stanzas, "out_file.xml")
    assert message_id_of(stanzas) == message_id_for("c-file")


def test_outcome_goldens() -> None:
    delivered = DeliveryOutcome(event_id="c-out", source=JOHN, destination=PETER,
                                target_event_id="c-peter-1", status="delivered")
    assert_stanzas(encode(delivered), "out_delivered.xml")
    ids = FakeIds()
    ids.receipts.clear()
    assert encode(delivered, ids) == []  # XEP-0184: only when asked for
    failed = DeliveryOutcome(event_id="c-fail", source=JOHN, destination=PETER,
                             target_event_id="c-peter-1", status="failed",
                             reason="not-a-contact")
    assert_stanzas(encode(failed), "out_failed.xml")


def test_error_and_profile_and_untranslatable() -> None:
    [notice] = encode(Error(source=JOHN, destination=PETER, code="no-route", reason="x.test"))
    assert notice.findtext(q("jabber:component:accept", "body")) == "⚠ no-route: x.test"
    assert encode(Profile(source=JOHN, destination=PETER, name="John")) == []
    with pytest.raises(Untranslatable):
        encode(ChannelInvite(source=JOHN, destination=PETER, channel=JOHN))
    for event in (Edit(source=JOHN, destination=PETER, target_id="nope"),
                  Retract(source=JOHN, destination=PETER, target_id="nope"),
                  ReactionAdd(source=JOHN, destination=PETER, target_id="nope", emoji="👍")):
        with pytest.raises(Untranslatable) as info:
            encode(event)
        assert info.value.reason == "unknown-message"


def test_hub_mode_sends_from_escaped_jids() -> None:
    event = Message.create(source=Address.parse("john@acme.com"), destination=PETER, body="x")
    [elem] = encode_event(event, mapper=HUB, ids=FakeIds())
    assert elem.get("from") == "john\\40acme.com@hub.example.net"
    assert elem.get("to") == "peter@widget.localhost"


# ------------------------------------------------------------- replies, disco

def _request(xml: str) -> Element:
    return fromstring(xml)


DISCO_INFO = ('<iq xmlns="jabber:client" type="get" id="disco-1" '
              'from="peter@widget.localhost/phone" to="acme.localhost">'
              '<query xmlns="http://jabber.org/protocol/disco#info"/></iq>')
VCARD_GET = ('<iq xmlns="jabber:client" type="get" id="vc-2" from="peter@widget.localhost/phone" '
             'to="john@acme.localhost"><vCard xmlns="vcard-temp"/></iq>')
JOHNS_PROFILE = Profile(source=JOHN, destination=JOHN, name="John Acme", email="john@acme.test",
                        title="Sales", avatar_url="https://acme.test/john.png")


def test_disco_and_vcard_goldens() -> None:
    assert_stanzas([disco_info_result(_request(DISCO_INFO), component=True,
                                     gateway_type="slack")],
                   "out_disco_info.xml")
    assert_stanzas([vcard_result(JOHNS_PROFILE, _request(VCARD_GET))], "out_vcard.xml")
    items = disco_items_result(_request(DISCO_INFO), [("room@acme.localhost", "Room")])
    assert [i.get("jid") for i in items.iter() if i.get("jid")] == ["room@acme.localhost"]


def test_answer_directly() -> None:
    def answer(xml: str, contact: bool = True) -> list[Element] | None:
        return answer_directly(fromstring(xml), mapper=DOMAIN,
                               presence_of=lambda a: Presence(source=a, destination=a,
                                                              availability="away"),
                               profile_of=lambda a: JOHNS_PROFILE,
                               is_contact=lambda local, remote: contact,
                               gateway_type="sip")

    assert answer(_message()) is None
    [info] = answer(DISCO_INFO) or []
    assert info.get("type") == "result"
    identity = info.find(f"{q(NS_DISCO_INFO, 'query')}/{q(NS_DISCO_INFO, 'identity')}")
    assert identity is not None and identity.get("type") == "sip"  # as the caller says
    assert_stanzas(answer(VCARD_GET) or [], "out_vcard.xml")
    [anonymous] = answer(VCARD_GET, contact=False) or []
    vcard = anonymous.find(q("vcard-temp", "vCard"))
    assert vcard is not None
    assert len(vcard) == 0
    probe = ('<presence xmlns="jabber:client" type="probe" from="peter@widget.localhost/phone" '
             'to="john@acme.localhost"/>')
    [presence] = answer(probe) or []
    assert (presence.get("from"), presence.get("to")) == (
        "john@acme.localhost", "peter@widget.localhost/phone")
    assert answer(probe, contact=False) == []
    [error] = answer('<iq xmlns="jabber:client" type="get" id="1" from="peter@widget.localhost" '
                     'to="john@acme.localhost"><x xmlns="urn:example"/></iq>') or []
    assert error.get("type") == "error"


# -------------------------------------------- property: Message round trip

def _mirror(elem: Element) -> Element:
    """What the XMPP user's client sends back: the same stanza, addresses swapped."""
    mirrored = fromstring(_as_client(elem))
    sender, recipient = elem.get("from", ""), elem.get("to", "")
    mirrored.set("from", recipient + "/phone")
    mirrored.set("to", sender)
    return mirrored


def _as_client(elem: Element) -> str:
    return tostring(elem, encoding="unicode")


_words = st.text(alphabet="ab *_~`<>:/.\n>•1", min_size=1, max_size=8)
_styles = st.lists(st.sampled_from(["bold", "italic", "strike", "code"]), unique=True)
_inline = st.one_of(
    st.builds(lambda w, s: text(w, *s), _words, _styles),
    st.builds(lambda w: Link(url=f"https://x.test/{w}"), st.text(alphabet="ab_.", max_size=4)),
)
_block = st.one_of(
    st.builds(lambda xs: paragraph(*xs), st.lists(_inline, min_size=1, max_size=5)),
    st.builds(lambda c: CodeBlock(code=c), _words),
    st.builds(lambda xs: Quote(blocks=(paragraph(*xs),)), st.lists(_inline, min_size=1,
                                                                   max_size=3)),
    st.builds(lambda xs: ListBlock(items=tuple((paragraph(x),) for x in xs)),
              st.lists(_inline, min_size=1, max_size=3)),
)


@settings(max_examples=150)
@given(st.lists(_block, min_size=1, max_size=4))
def test_message_to_stanza_to_message_is_stable(blocks: list[Any]) -> None:
    body = normalise(RichText(blocks=tuple(blocks)))
    if not rich_to_styling(body).strip():
        return  # a body of whitespace only is no message on XMPP
    sent = Message.create(event_id="c-p", source=JOHN, destination=PETER, body=body)
    [once] = events(_mirror(encode(sent)[0]))
    assert isinstance(once, Message)
    assert once.body == styling_to_rich(rich_to_styling(body).strip("\n"))
    again = Message.create(event_id="c-q", source=JOHN, destination=PETER, body=once.body)
    [twice] = events(_mirror(encode(again)[0]))
    assert isinstance(twice, Message)
    assert twice.body == once.body
    assert (once.source, once.destination) == (PETER, JOHN)


# ------------------------------------------------- refusals and busy answers

@pytest.mark.parametrize(("reason", "condition", "error_type"), [
    ("unknown-address", "item-not-found", "cancel"),
    ("not-a-contact", "subscription-required", "auth"),
    ("no-route:x.test", "service-unavailable", "cancel"),
    ("platform-unavailable:sip", "service-unavailable", "cancel"),
    ("no-agreement", "not-allowed", "cancel"),
    ("user-denied:john@acme.localhost", "not-allowed", "cancel"),
])
def test_router_refusals_become_stanza_errors(reason: str, condition: str,
                                              error_type: str) -> None:
    error = refusal_error(reason)
    assert (error.condition, error.type) == (condition, error_type)
    assert "@" not in error.text  # fixed words: no address, no content
    reply = error_reply_for(golden("in_message.xml"), error)
    assert reply is not None and reply.find(f".//{q(NS_STANZAS, condition)}") is not None


@pytest.mark.parametrize(("xml", "answered"), [
    ('<message xmlns="jabber:client" type="chat"/>', True),
    ('<message xmlns="jabber:client" type="error"/>', False),
    ('<presence xmlns="jabber:client" type="subscribe"/>', True),
    ('<presence xmlns="jabber:client" type="unsubscribed"/>', True),
    ('<presence xmlns="jabber:client"/>', False),
    ('<presence xmlns="jabber:client" type="unavailable"/>', False),
    ('<iq xmlns="jabber:client" type="result"/>', False),
])
def test_which_stanzas_hear_of_a_refusal(xml: str, answered: bool) -> None:
    assert answers_refusals(fromstring(xml)) is answered


def test_the_busy_answer_asks_to_wait() -> None:
    assert (BUSY.condition, BUSY.type) == ("resource-constraint", "wait")
