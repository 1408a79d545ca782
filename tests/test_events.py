"""Canonical events and the rich-text tree: shapes, tags, round trips, redaction."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import (
    Address,
    ChannelInvite,
    CodeBlock,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Emoji,
    Error,
    Event,
    FileShare,
    Installation,
    Link,
    ListBlock,
    Mention,
    Message,
    Paragraph,
    Presence,
    Profile,
    Quote,
    ReactionAdd,
    RichText,
    Text,
    Typing,
    decode_event,
    degrade,
    encode_event,
    to_plain_text,
)
from engine._events import EVENT_TYPES, failed_outcome
from engine._richtext import LineBreak, paragraph, text

A = Address.parse("john@acme.com")
B = Address.parse("peter@widget.com")

RICH = RichText(blocks=(
    paragraph(text("bold ", "bold"), text("both", "italic", "bold"), " plain ",
              Link(url="https://example.com", label="a link"), " ",
              Mention(address="peter@widget.com", display="Peter"), " ",
              Emoji(name="wave", unicode="👋"), LineBreak(), text("x", "strike", "code")),
    CodeBlock(code="print(1)\nprint(2)", language="python"),
    Quote(blocks=(paragraph("quoted"),)),
    ListBlock(ordered=True, items=((paragraph("one"),), (paragraph("two"),))),
))


def test_every_event_kind_round_trips_and_is_tagged() -> None:
    events: list[Event] = [
        Message.create(source=A, destination=B, body=RICH, reply_to="m0", thread_id="m0"),
        Edit(source=A, destination=B, target_id="m1", body=RICH, text="t"),
        ReactionAdd(source=A, destination=B, target_id="m1", emoji="👍"),
        Typing(source=A, destination=B),
        Presence(source=A, destination=B, availability="busy", status="in a meeting"),
        Profile(source=A, destination=B, name="John", email="john@acme.com", title="CTO"),
        ContactRequest(source=A, destination=B),
        FileShare(source=A, destination=B, name="a.pdf", size=10, media_type="application/pdf",
                  url="https://files.example/a"),
        ChannelInvite(source=A, destination=B, channel=Address.parse("general@acme.com")),
        DeliveryOutcome(source=B, destination=A, target_event_id="m1", status="delivered"),
        Error(source=B, destination=A, code="bad-command", reason="unknown"),
    ]
    for event in events:
        data = encode_event(event)
        assert decode_event(data) == event
        assert msgspec.msgpack.decode(data)["kind"] == type(event).__struct_config__.tag
    kinds = {t.__struct_config__.tag for t in EVENT_TYPES}
    assert len(kinds) == len(EVENT_TYPES), "kinds are unique"


def test_common_fields_on_every_event() -> None:
    for event_type in EVENT_TYPES:
        fields = set(event_type.__struct_fields__)
        assert {"event_id", "source", "destination", "session_id", "platform_ids",
                "timestamp"} <= fields, event_type


def test_events_are_frozen() -> None:
    event = Message.create(source=A, destination=B, body="x")
    with pytest.raises(AttributeError):
        event.text = "y"  # type: ignore[misc]


def test_decoding_names_the_bad_field() -> None:
    bad = msgspec.msgpack.encode({"kind": "message", "source": {"user": "a", "domain": "b"},
                                  "destination": 5})
    with pytest.raises(msgspec.ValidationError, match=r"\$\.destination"):
        decode_event(bad)


def test_repr_never_shows_content_or_secrets() -> None:
    event = Message.create(source=A, destination=B, body="top secret plans")
    assert "secret" not in repr(event)
    assert "john@acme.com" in repr(event)
    installation = Installation(platform="slack", tenant="T1",
                                credentials={"bot_token": "xoxb-123"})
    assert "xoxb" not in repr(installation) and "xoxb" not in str(installation)


def test_plain_text_fallback() -> None:
    assert to_plain_text(RICH) == (
        "bold both plain a link (https://example.com) @Peter 👋\nx\n"
        "print(1)\nprint(2)\n> quoted\n1. one\n2. two"
    )
    assert Message.create(source=A, destination=B, body="hello").text == "hello"


def test_styles_are_kept_in_canonical_order() -> None:
    assert text("x", "code", "bold") == Text(text="x", styles=("bold", "code"))


def test_failed_outcome_goes_back_to_the_sender() -> None:
    event = Message.create(source=A, destination=B, body="x", session_id="s-1")
    outcome = failed_outcome(event, "no-route", timestamp=1.0)
    assert (outcome.source, outcome.destination, outcome.target_event_id, outcome.session_id) == \
        (B, A, event.event_id, "s-1")


def test_degrade_keeps_what_the_destination_supports() -> None:
    reaction = ReactionAdd(source=A, destination=B, target_id="m1", emoji="🎉")
    assert degrade(reaction, frozenset({"reactions"})) is reaction
    note = degrade(reaction, frozenset())
    assert isinstance(note, Message) and note.reply_to == "m1" and "🎉" in note.text
    assert degrade(Typing(source=A, destination=B), frozenset()) is None
    share = FileShare(source=A, destination=B, name="a.pdf", size=3, url="https://f/a")
    link = degrade(share, frozenset())
    assert isinstance(link, Message) and "https://f/a" in link.text


_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
_inlines = st.one_of(
    st.builds(lambda t, s: text(t, *s), _texts,
              st.lists(st.sampled_from(["bold", "italic", "strike", "code"]), unique=True)),
    st.builds(lambda u, label: Link(url=u, label=label), _texts, _texts),
    st.builds(lambda a: Mention(address=a), _texts),
)
_blocks = st.recursive(
    st.one_of(st.builds(lambda xs: Paragraph(inlines=tuple(xs)), st.lists(_inlines, max_size=4)),
              st.builds(lambda c: CodeBlock(code=c), _texts)),
    lambda children: st.one_of(
        st.builds(lambda bs: Quote(blocks=tuple(bs)), st.lists(children, max_size=3)),
        st.builds(lambda items: ListBlock(items=tuple(tuple(i) for i in items)),
                  st.lists(st.lists(children, max_size=2), max_size=3)),
    ),
    max_leaves=8,
)


@given(st.lists(_blocks, max_size=4))
def test_rich_text_round_trips_through_msgpack(blocks: list[object]) -> None:
    rich = RichText(blocks=tuple(blocks))  # type: ignore[arg-type]
    event = Message.create(source=A, destination=B, body=rich)
    assert decode_event(encode_event(event)) == event
    assert isinstance(to_plain_text(rich), str)
