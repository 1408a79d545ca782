"""Canonical events -> the partner's payloads. Pure: the message-id map is read through a callable.

Rules:

- Every payload is one envelope (``type``, ``timestamp``, ``data``) encoded
  as compact JSON; ``data.id`` is Interlink's id for the event, which the
  partner may name later as a ``target``, ``reply_to`` or ``thread``.
- References (``target``, ``reply_to``, ``thread``) carry Interlink's id and,
  when the partner has its own id for that message (it sent it, or answered
  the delivery with one), also ``*_partner_id``.
- Kinds the partner cannot receive (typing, presence, profiles, files,
  channel invites: not in the adapter's capabilities, so the engine degrades
  or drops them first) raise :class:`engine.Untranslatable`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from engine import (
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Error,
    Event,
    Message,
    ReactionAdd,
    ReactionRemove,
    Retract,
    Untranslatable,
)
from engine.richtext import (
    Block,
    CodeBlock,
    Emoji,
    Inline,
    Link,
    ListBlock,
    Mention,
    Paragraph,
    Quote,
    RichText,
    Text,
)

from ._schema import (
    Outbound,
    OutContact,
    OutData,
    OutEdit,
    OutError,
    OutMessage,
    OutOutcome,
    OutReaction,
    OutTarget,
    WireBlock,
    WireBreak,
    WireCode,
    WireEmoji,
    WireInline,
    WireLink,
    WireList,
    WireMention,
    WireParagraph,
    WireQuote,
    WireRich,
    WireText,
)

__all__ = ["encode", "outbound_type", "rich_to_wire"]

_encoder = msgspec.json.Encoder()

#: partner id of a canonical message id ("" when the partner has none)
PartnerId = Callable[[str], str]

_CONTACT_TYPES = {ContactRequest: "contact.requested", ContactAccept: "contact.accepted",
                  ContactRemove: "contact.removed"}


def outbound_type(event: Event) -> str:
    """The envelope type ``event`` is sent as; :class:`Untranslatable` if none."""
    if isinstance(event, Message):
        return "message.created"
    if isinstance(event, Edit):
        return "message.edited"
    if isinstance(event, Retract):
        return "message.deleted"
    if isinstance(event, ReactionAdd):
        return "reaction.added"
    if isinstance(event, ReactionRemove):
        return "reaction.removed"
    if isinstance(event, DeliveryOutcome):
        return "delivery.outcome"
    if isinstance(event, Error):
        return "notice.error"
    found = _CONTACT_TYPES.get(type(event))
    if found is None:
        raise Untranslatable(f"unsupported-kind:{type(event).__name__}")
    return found


def encode(event: Event, *, partner_id: PartnerId) -> bytes:
    """The JSON body sent to the partner for ``event``."""
    kind = outbound_type(event)
    envelope = Outbound(type=kind, timestamp=datetime.fromtimestamp(event.timestamp, UTC),
                        data=_data(event, partner_id))
    return _encoder.encode(envelope)


def _data(event: Event, partner_id: PartnerId) -> OutData:
    common = {"id": event.event_id, "sender": str(event.source), "to": str(event.destination)}

    def ref(canonical: str | None) -> str | None:
        return (partner_id(canonical) or None) if canonical else None

    if isinstance(event, Message):
        return OutMessage(**common, text=event.text,
                          rich=rich_to_wire(event.body) if event.body.blocks else None,
                          reply_to=event.reply_to, reply_to_partner_id=ref(event.reply_to),
                          thread=event.thread_id, thread_partner_id=ref(event.thread_id))
    if isinstance(event, Edit):
        return OutEdit(**common, target=event.target_id,
                       target_partner_id=ref(event.target_id), text=event.text,
                       rich=rich_to_wire(event.body) if event.body.blocks else None)
    if isinstance(event, Retract):
        return OutTarget(**common, target=event.target_id,
                         target_partner_id=ref(event.target_id))
    if isinstance(event, ReactionAdd | ReactionRemove):
        return OutReaction(**common, target=event.target_id,
                           target_partner_id=ref(event.target_id), emoji=event.emoji)
    if isinstance(event, DeliveryOutcome):
        return OutOutcome(**common, target=event.target_event_id,
                          target_partner_id=ref(event.target_event_id),
                          status=event.status, reason=event.reason)
    if isinstance(event, Error):
        return OutError(**common, code=event.code, reason=event.reason)
    return OutContact(**common)


def rich_to_wire(rich: RichText) -> WireRich:
    return WireRich(blocks=[_block(b) for b in rich.blocks])


def _block(block: Block) -> WireBlock:
    if isinstance(block, Paragraph):
        return WireParagraph(inlines=[_inline(i) for i in block.inlines])
    if isinstance(block, CodeBlock):
        return WireCode(code=block.code, language=block.language)
    if isinstance(block, Quote):
        return WireQuote(blocks=[_block(b) for b in block.blocks])
    assert isinstance(block, ListBlock)
    return WireList(ordered=block.ordered, items=[[_block(b) for b in item]
                                                  for item in block.items])


def _inline(node: Inline) -> WireInline:
    if isinstance(node, Text):
        return WireText(text=node.text, styles=list(node.styles))
    if isinstance(node, Link):
        return WireLink(url=node.url, label=node.label)
    if isinstance(node, Mention):
        return WireMention(address=node.address, display=node.display)
    if isinstance(node, Emoji):
        return WireEmoji(name=node.name, unicode=node.unicode)
    return WireBreak()
