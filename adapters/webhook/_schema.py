"""The webhook adapter's JSON wire schema, both directions (``docs/webhook-adapter.md``).

Every payload follows the Standard Webhooks payload shape: an envelope with a
dotted ``type``, a ``timestamp`` (RFC 3339) and a ``data`` object::

    {"type": "message.created", "timestamp": "2026-01-01T00:00:00Z",
     "data": {"id": "p-1", "from": "wendy@partner.localhost",
              "to": "john@acme.localhost", "text": "hello"}}

Types, partner -> Interlink and Interlink -> partner:

    message.created       data: id, from, to, text and/or rich, reply_to?, thread?
    message.edited        data: id?, from, to, target, text and/or rich
    message.deleted       data: id?, from, to, target
    reaction.added        data: id?, from, to, target, emoji
    reaction.removed      data: id?, from, to, target, emoji
    contact.requested     data: id?, from, to
    contact.accepted      data: id?, from, to
    contact.removed       data: id?, from, to

Interlink -> partner only:

    delivery.outcome      data: id, from, to, target, target_partner_id?, status, reason?
    notice.error          data: id, from, to, code, reason?

Inbound structs refuse unknown fields (a typo is a 400 naming the field, not
a silently empty message). Rich text is a small tree (:class:`WireRich`),
mapped to and from :mod:`engine.richtext` in ``_decode.py``/``_encode.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

# -- rich text ----------------------------------------------------------------------------

WireStyle = Literal["bold", "italic", "strike", "code"]


class _Node(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
            forbid_unknown_fields=True, omit_defaults=True):
    pass


class WireText(_Node, tag="text", frozen=True, kw_only=True):
    text: str
    styles: list[WireStyle] = []


class WireLink(_Node, tag="link", frozen=True, kw_only=True):
    url: str
    label: str = ""


class WireMention(_Node, tag="mention", frozen=True, kw_only=True):
    address: str
    display: str = ""


class WireEmoji(_Node, tag="emoji", frozen=True, kw_only=True):
    name: str
    unicode: str = ""


class WireBreak(_Node, tag="br", frozen=True, kw_only=True):
    pass


WireInline = WireText | WireLink | WireMention | WireEmoji | WireBreak


class WireParagraph(_Node, tag="paragraph", frozen=True, kw_only=True):
    inlines: list[WireInline] = []


class WireCode(_Node, tag="code", frozen=True, kw_only=True):
    code: str
    language: str = ""


class WireQuote(_Node, tag="quote", frozen=True, kw_only=True):
    blocks: list[WireBlock] = []


class WireList(_Node, tag="list", frozen=True, kw_only=True):
    items: list[list[WireBlock]] = []
    ordered: bool = False


WireBlock = WireParagraph | WireCode | WireQuote | WireList


class WireRich(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    blocks: list[WireBlock] = []


# -- inbound: partner -> Interlink -----------------------------------------------------------


class _Data(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    sender: str = msgspec.field(name="from")
    to: str
    #: the partner's id for this event (required for messages: edits and reactions name it)
    id: str = ""


class MessageData(_Data, frozen=True, kw_only=True):
    text: str = ""
    rich: WireRich | None = None
    reply_to: str | None = None
    thread: str | None = None


class EditData(_Data, frozen=True, kw_only=True):
    target: str
    text: str = ""
    rich: WireRich | None = None


class TargetData(_Data, frozen=True, kw_only=True):
    target: str


class ReactionData(_Data, frozen=True, kw_only=True):
    target: str
    emoji: str


class ContactData(_Data, frozen=True, kw_only=True):
    pass


class _In(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
          forbid_unknown_fields=True):
    #: when the partner says it happened (informational; Interlink stamps its own time)
    timestamp: datetime | None = None


class InMessageCreated(_In, tag="message.created", frozen=True, kw_only=True):
    data: MessageData


class InMessageEdited(_In, tag="message.edited", frozen=True, kw_only=True):
    data: EditData


class InMessageDeleted(_In, tag="message.deleted", frozen=True, kw_only=True):
    data: TargetData


class InReactionAdded(_In, tag="reaction.added", frozen=True, kw_only=True):
    data: ReactionData


class InReactionRemoved(_In, tag="reaction.removed", frozen=True, kw_only=True):
    data: ReactionData


class InContactRequested(_In, tag="contact.requested", frozen=True, kw_only=True):
    data: ContactData


class InContactAccepted(_In, tag="contact.accepted", frozen=True, kw_only=True):
    data: ContactData


class InContactRemoved(_In, tag="contact.removed", frozen=True, kw_only=True):
    data: ContactData


Inbound = (
    InMessageCreated | InMessageEdited | InMessageDeleted | InReactionAdded | InReactionRemoved
    | InContactRequested | InContactAccepted | InContactRemoved
)

# -- outbound: Interlink -> partner ----------------------------------------------------------


class _OutData(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    #: Interlink's id for this event (messages: what edits and reactions may name)
    id: str
    sender: str = msgspec.field(name="from")
    to: str


class OutMessage(_OutData, frozen=True, kw_only=True):
    text: str
    rich: WireRich | None = None
    reply_to: str | None = None
    reply_to_partner_id: str | None = None
    thread: str | None = None
    thread_partner_id: str | None = None


class OutEdit(_OutData, frozen=True, kw_only=True):
    target: str
    target_partner_id: str | None = None
    text: str
    rich: WireRich | None = None


class OutTarget(_OutData, frozen=True, kw_only=True):
    target: str
    target_partner_id: str | None = None


class OutReaction(_OutData, frozen=True, kw_only=True):
    target: str
    target_partner_id: str | None = None
    emoji: str


class OutContact(_OutData, frozen=True, kw_only=True):
    pass


class OutOutcome(_OutData, frozen=True, kw_only=True):
    target: str
    target_partner_id: str | None = None
    status: Literal["delivered", "failed"]
    reason: str = ""


class OutError(_OutData, frozen=True, kw_only=True):
    code: str
    reason: str = ""


OutData = OutMessage | OutEdit | OutTarget | OutReaction | OutContact | OutOutcome | OutError


class Outbound(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    timestamp: datetime
    data: OutData


class PartnerAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What the partner may answer to a delivery (a lenient view: other fields ignored)."""

    #: the partner's own id for the delivered message, for later references
    id: str = ""
