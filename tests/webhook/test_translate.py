"""Golden wire tests of the pure layer: the exact canonical event for each partner
payload, and the exact JSON the partner receives for each canonical event. No I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.webhook._decode import (
    MAX_DEPTH,
    IdResolver,
    PayloadError,
    decode_body,
    event_id_for,
    to_event,
)
from adapters.webhook._encode import encode
from engine import (
    Address,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Error,
    Event,
    Message,
    Presence,
    ReactionAdd,
    ReactionRemove,
    Retract,
    Untranslatable,
    derive_canonical_id,
)
from engine.richtext import (
    CodeBlock,
    Emoji,
    LineBreak,
    Link,
    ListBlock,
    Mention,
    Paragraph,
    Quote,
    RichText,
    paragraph,
    text,
)

WENDY = Address.parse("wendy@partner.localhost")
JOHN = Address.parse("john@acme.localhost")
NOW = 1_767_225_600.0
#: John's message, known to the directory under Interlink's id; the partner called it "p-77"
KNOWN = {"sl-john-1": "p-77"}


def _ids() -> IdResolver:
    by_partner = {v: k for k, v in KNOWN.items()}
    return IdResolver(adapter_name="webhook", from_partner_id=by_partner.get,
                      is_canonical=lambda ref: ref in KNOWN)


def _decode(kind: str, **data: Any) -> Event:
    body = json.dumps({"type": kind, "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"from": str(WENDY), "to": str(JOHN), **data}}).encode()
    return to_event(decode_body(body), adapter_name="webhook", webhook_id="msg_1", now=NOW,
                    ids=_ids())


def _event_id(partner_id: str) -> str:
    return derive_canonical_id("wh", "webhook", "event", partner_id)


RICH = {"blocks": [
    {"type": "paragraph", "inlines": [
        {"type": "text", "text": "Hi ", "styles": ["italic", "bold"]},
        {"type": "mention", "address": "John@Acme.localhost", "display": "John"},
        {"type": "br"},
        {"type": "link", "url": "https://example.com/a", "label": "docs"},
        {"type": "emoji", "name": "tada"}]},
    {"type": "code", "code": "x = 1", "language": "python"},
    {"type": "quote", "blocks": [{"type": "paragraph", "inlines": [
        {"type": "text", "text": "quoted"}]}]},
    {"type": "list", "ordered": True, "items": [
        [{"type": "paragraph", "inlines": [{"type": "text", "text": "one"}]}]]},
]}
CANONICAL_RICH = RichText(blocks=(
    Paragraph(inlines=(text("Hi ", "bold", "italic"),
                       Mention(address="john@acme.localhost", display="John"), LineBreak(),
                       Link(url="https://example.com/a", label="docs"),
                       Emoji(name="tada", unicode="🎉"))),
    CodeBlock(code="x = 1", language="python"),
    Quote(blocks=(paragraph("quoted"),)),
    ListBlock(ordered=True, items=((paragraph("one"),),)),
))

GOLDEN_DECODE: list[tuple[str, dict[str, Any], Event]] = [
    ("message.created", {"id": "p-1", "text": "hello"},
     Message.create(source=WENDY, destination=JOHN, body="hello",
                    event_id=event_id_for("webhook", "p-1"), timestamp=NOW,
                    platform_ids={"webhook": "p-1"})),
    ("message.created", {"id": "p-2", "rich": RICH, "reply_to": "sl-john-1", "thread": "p-77"},
     Message.create(source=WENDY, destination=JOHN, body=CANONICAL_RICH,
                    event_id=event_id_for("webhook", "p-2"), timestamp=NOW,
                    platform_ids={"webhook": "p-2"}, reply_to="sl-john-1",
                    thread_id="sl-john-1")),
    ("message.edited", {"id": "e-1", "target": "p-1", "text": "hello!"},
     Edit(source=WENDY, destination=JOHN, event_id=_event_id("e-1"), timestamp=NOW,
          target_id=event_id_for("webhook", "p-1"), body=RichText(blocks=(
              paragraph("hello!"),)), text="hello!")),
    ("message.deleted", {"target": "p-77"},
     Retract(source=WENDY, destination=JOHN, event_id=_event_id("webhook-id:msg_1"),
             timestamp=NOW, target_id="sl-john-1")),
    ("reaction.added", {"target": "sl-john-1", "emoji": ":+1:"},
     ReactionAdd(source=WENDY, destination=JOHN, event_id=_event_id("webhook-id:msg_1"),
                 timestamp=NOW, target_id="sl-john-1", emoji="👍")),
    ("reaction.removed", {"target": "sl-john-1", "emoji": "partyparrot"},
     ReactionRemove(source=WENDY, destination=JOHN, event_id=_event_id("webhook-id:msg_1"),
                    timestamp=NOW, target_id="sl-john-1", emoji=":partyparrot:")),
    ("contact.requested", {}, ContactRequest(source=WENDY, destination=JOHN, timestamp=NOW,
                                             event_id=_event_id("webhook-id:msg_1"))),
    ("contact.accepted", {"id": "c-1"}, ContactAccept(source=WENDY, destination=JOHN,
                                                      timestamp=NOW, event_id=_event_id("c-1"))),
    ("contact.removed", {}, ContactRemove(source=WENDY, destination=JOHN, timestamp=NOW,
                                          event_id=_event_id("webhook-id:msg_1"))),
]


@pytest.mark.parametrize(("kind", "data", "expected"), GOLDEN_DECODE,
                         ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(GOLDEN_DECODE)])
def test_golden_decode(kind: str, data: dict[str, Any], expected: Event) -> None:
    assert _decode(kind, **data) == expected


def test_nesting_is_bounded() -> None:
    block: dict[str, Any] = {"type": "paragraph", "inlines": [{"type": "text", "text": "x"}]}
    for _ in range(MAX_DEPTH):
        block = {"type": "quote", "blocks": [block]}
    with pytest.raises(PayloadError, match="nests deeper") as caught:
        _decode("message.created", id="p", rich={"blocks": [block]})
    assert caught.value.code == "invalid-payload"


def _encoded(event: Event) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(encode(event, partner_id=lambda c: KNOWN.get(c, "")))
    return payload


def test_golden_encode_of_a_message() -> None:
    event = Message.create(source=JOHN, destination=WENDY, body=CANONICAL_RICH,
                           event_id="sl-john-2", timestamp=NOW, reply_to="sl-john-1")
    assert _encoded(event) == {
        "type": "message.created", "timestamp": "2026-01-01T00:00:00Z",
        "data": {"id": "sl-john-2", "from": str(JOHN), "to": str(WENDY),
                 "text": "Hi @John\ndocs (https://example.com/a)🎉\nx = 1\n> quoted\n1. one",
                 "rich": {"blocks": [
                     {"type": "paragraph", "inlines": [
                         {"type": "text", "text": "Hi ", "styles": ["bold", "italic"]},
                         {"type": "mention", "address": "john@acme.localhost",
                          "display": "John"},
                         {"type": "br"},
                         {"type": "link", "url": "https://example.com/a", "label": "docs"},
                         {"type": "emoji", "name": "tada", "unicode": "🎉"}]},
                     {"type": "code", "code": "x = 1", "language": "python"},
                     {"type": "quote", "blocks": [{"type": "paragraph", "inlines": [
                         {"type": "text", "text": "quoted"}]}]},
                     {"type": "list", "items": [[{"type": "paragraph", "inlines": [
                         {"type": "text", "text": "one"}]}]], "ordered": True}]},
                 "reply_to": "sl-john-1", "reply_to_partner_id": "p-77"}}


GOLDEN_ENCODE: list[tuple[Event, str, dict[str, Any]]] = [
    (Edit(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW, target_id="sl-john-1",
          body=RichText(blocks=(paragraph("new"),)), text="new"),
     "message.edited", {"target": "sl-john-1", "target_partner_id": "p-77", "text": "new",
                        "rich": {"blocks": [{"type": "paragraph", "inlines": [
                            {"type": "text", "text": "new"}]}]}}),
    (Retract(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW, target_id="x-9"),
     "message.deleted", {"target": "x-9"}),
    (ReactionAdd(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW,
                 target_id="sl-john-1", emoji="👍"),
     "reaction.added", {"target": "sl-john-1", "target_partner_id": "p-77", "emoji": "👍"}),
    (ReactionRemove(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW,
                    target_id="sl-john-1", emoji="👍"),
     "reaction.removed", {"target": "sl-john-1", "target_partner_id": "p-77", "emoji": "👍"}),
    (ContactRequest(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW),
     "contact.requested", {}),
    (ContactAccept(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW),
     "contact.accepted", {}),
    (ContactRemove(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW),
     "contact.removed", {}),
    (DeliveryOutcome(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW,
                     target_event_id="wh-1", status="failed", reason="not-a-contact"),
     "delivery.outcome", {"target": "wh-1", "status": "failed", "reason": "not-a-contact"}),
    (Error(source=JOHN, destination=WENDY, event_id="e", timestamp=NOW, code="bad-command",
           reason="unknown command"),
     "notice.error", {"code": "bad-command", "reason": "unknown command"}),
]


@pytest.mark.parametrize(("event", "kind", "data"), GOLDEN_ENCODE,
                         ids=[k for _, k, _ in GOLDEN_ENCODE])
def test_golden_encode(event: Event, kind: str, data: dict[str, Any]) -> None:
    assert _encoded(event) == {"type": kind, "timestamp": "2026-01-01T00:00:00Z",
                               "data": {"id": "e", "from": str(JOHN), "to": str(WENDY),
                                        **data}}


def test_what_the_partner_cannot_receive_is_untranslatable() -> None:
    with pytest.raises(Untranslatable, match="unsupported-kind:Presence"):
        encode(Presence(source=JOHN, destination=WENDY), partner_id=lambda c: KNOWN.get(c, ""))


def test_what_we_send_decodes_back_to_the_same_tree() -> None:
    event = Message.create(source=WENDY, destination=JOHN, body=CANONICAL_RICH,
                           event_id="x", timestamp=NOW)
    sent = _encoded(event)
    sent["data"]["id"] = "p-9"
    for key in ("text",):
        del sent["data"][key]
    back = to_event(decode_body(json.dumps(sent).encode()), adapter_name="webhook",
                    webhook_id="msg_2", now=NOW, ids=_ids())
    assert isinstance(back, Message) and back.body == CANONICAL_RICH
