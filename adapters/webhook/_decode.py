"""Partner payloads -> canonical events. Pure: no I/O, the directory is read through callables.

Rules:

- The body is decoded once, into the tagged :data:`~._schema.Inbound` union;
  a schema error names the path of the bad field (``$.data.to``).
- Addresses are parsed and normalised; ``from``/``to`` that are not
  ``user@domain`` are schema errors.
- A message needs a non-empty ``data.id`` (the partner's id: edits, deletes
  and reactions name it), and text or rich text. Its canonical id is
  ``derive_canonical_id("wh", adapter name, id)``, so a redelivery maps to
  the same event and an edit can name the message before the message-id map
  has it. Other events get ids derived from ``data.id`` when given, else
  from the ``webhook-id`` (stable across the partner's retries).
- ``target``, ``reply_to`` and ``thread`` may be the partner's own id for a
  message, or Interlink's id for it (what outbound events carry), resolved
  by :class:`IdResolver`.
- Rich text is mapped to :mod:`engine.richtext`: at most :data:`MAX_DEPTH`
  nested quotes/lists, links only to ``http``, ``https`` or ``mailto``,
  mentions of valid addresses. ``text`` defaults to the rich text's plain
  rendering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from engine import (
    Address,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    Edit,
    Event,
    InvalidAddressError,
    Message,
    ReactionAdd,
    ReactionRemove,
    RemoteError,
    Retract,
    derive_canonical_id,
    emoji_from_shortcode,
)
from engine.richtext import (
    Block,
    CodeBlock,
    Emoji,
    Inline,
    LineBreak,
    Link,
    ListBlock,
    Mention,
    Paragraph,
    Quote,
    RichText,
    plain,
    text,
    to_plain_text,
)

from ._schema import (
    EditData,
    Inbound,
    InContactAccepted,
    InContactRemoved,
    InContactRequested,
    InMessageCreated,
    InMessageDeleted,
    InMessageEdited,
    InReactionAdded,
    InReactionRemoved,
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

__all__ = ["ID_PREFIX", "MAX_DEPTH", "IdResolver", "PayloadError", "decode_body",
           "event_id_for", "to_event"]

#: the prefix of canonical ids of events that start at a webhook partner
ID_PREFIX = "wh"
#: deepest nesting of quotes and lists in rich text
MAX_DEPTH = 8
#: longest id, target or emoji name a partner may send
MAX_ID_LENGTH = 256
LINK_SCHEMES = ("http://", "https://", "mailto:")

_decoder = msgspec.json.Decoder(Inbound)


class PayloadError(RemoteError):
    """A body that is not a valid payload; ``code`` is short, ``message`` tells the partner
    what to fix (field paths, never values)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class IdResolver:
    """How a message reference becomes a canonical id (reads of the message-id map)."""

    adapter_name: str
    #: the canonical id stored for the partner's id, or None
    from_partner_id: Callable[[str], str | None]
    #: whether an id is a canonical id Interlink knows
    is_canonical: Callable[[str], bool]

    def resolve(self, reference: str) -> str:
        found = self.from_partner_id(reference)
        if found is not None:
            return found
        if self.is_canonical(reference):
            return reference
        # a partner message not in the map yet (still in flight): its derived id
        return event_id_for(self.adapter_name, reference)


def event_id_for(adapter_name: str, partner_id: str) -> str:
    """The canonical id of the partner's message ``partner_id``."""
    return derive_canonical_id(ID_PREFIX, adapter_name, partner_id)


def decode_body(body: bytes) -> Inbound:
    """The payload in ``body``; :class:`PayloadError` for invalid JSON or schema."""
    try:
        payload: Inbound = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise PayloadError("invalid-payload", str(exc)) from None
    except msgspec.DecodeError:
        raise PayloadError("invalid-json", "the body is not valid JSON") from None
    except RecursionError:  # msgspec gives up on JSON nested ~1,000 deep
        raise PayloadError("invalid-json", "the body is nested too deeply") from None
    return payload


def parties(payload: Inbound) -> tuple[Address, Address]:
    """The sender and receiver, parsed; :class:`PayloadError` naming the bad field."""
    return (_address(payload.data.sender, "$.data.from"),
            _address(payload.data.to, "$.data.to"))


def to_event(payload: Inbound, *, adapter_name: str, webhook_id: str, now: float,
             ids: IdResolver) -> Event:
    """The canonical event for a verified payload; :class:`PayloadError` if it makes none."""
    source, destination = parties(payload)
    data = payload.data
    partner_id = _bounded(data.id, "$.data.id")
    common = {"source": source, "destination": destination, "timestamp": now}
    if isinstance(payload, InMessageCreated):
        if not partner_id:
            raise PayloadError("invalid-payload",
                               "a message needs its id (your id for it) - at `$.data.id`")
        message = payload.data
        body = _body(message.text, message.rich)
        return Message(
            **common, event_id=event_id_for(adapter_name, partner_id),  # type: ignore[arg-type]
            platform_ids={adapter_name: partner_id}, body=body,
            text=message.text or to_plain_text(body),
            reply_to=_reference(message.reply_to, "$.data.reply_to", ids),
            thread_id=_reference(message.thread, "$.data.thread", ids))
    event_id = derive_canonical_id(ID_PREFIX, adapter_name, "event",
                                   partner_id or f"webhook-id:{webhook_id}")
    common["event_id"] = event_id
    if isinstance(payload, InMessageEdited):
        edit: EditData = payload.data
        body = _body(edit.text, edit.rich)
        return Edit(**common, target_id=_target(edit.target, ids),  # type: ignore[arg-type]
                    body=body, text=edit.text or to_plain_text(body))
    if isinstance(payload, InMessageDeleted):
        return Retract(**common,  # type: ignore[arg-type]
                       target_id=_target(payload.data.target, ids))
    if isinstance(payload, InReactionAdded | InReactionRemoved):
        reaction = payload.data
        emoji = _emoji(reaction.emoji)
        kind = ReactionAdd if isinstance(payload, InReactionAdded) else ReactionRemove
        return kind(**common, target_id=_target(reaction.target, ids),  # type: ignore[arg-type]
                    emoji=emoji)
    if isinstance(payload, InContactRequested):
        return ContactRequest(**common)  # type: ignore[arg-type]
    if isinstance(payload, InContactAccepted):
        return ContactAccept(**common)  # type: ignore[arg-type]
    assert isinstance(payload, InContactRemoved)
    return ContactRemove(**common)  # type: ignore[arg-type]


def _address(value: str, where: str) -> Address:
    try:
        return Address.parse(value)
    except InvalidAddressError:
        raise PayloadError("invalid-address",
                           f"expected an address user@domain - at `{where}`") from None


def _bounded(value: str, where: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise PayloadError("invalid-payload",
                           f"longer than {MAX_ID_LENGTH} characters - at `{where}`")
    return value


def _target(reference: str, ids: IdResolver) -> str:
    if not reference:
        raise PayloadError("invalid-payload", "name the message - at `$.data.target`")
    return ids.resolve(_bounded(reference, "$.data.target"))


def _reference(reference: str | None, where: str, ids: IdResolver) -> str | None:
    return ids.resolve(_bounded(reference, where)) if reference else None


def _emoji(value: str) -> str:
    """A Unicode emoji as sent, or a short name (``thumbsup`` / ``:thumbsup:``) mapped to
    Unicode where known (else kept as ``:name:``)."""
    name = _bounded(value.strip(), "$.data.emoji")
    if not name:
        raise PayloadError("invalid-payload", "an emoji is required - at `$.data.emoji`")
    if name.isascii():
        short = name.strip(":")
        if not short:
            raise PayloadError("invalid-payload", "an emoji is required - at `$.data.emoji`")
        return emoji_from_shortcode(short)
    return name


# -- rich text ----------------------------------------------------------------------------


def _body(plain_text: str, rich: WireRich | None) -> RichText:
    body = plain(plain_text) if rich is None else rich_from_wire(rich)
    if not body.blocks or not to_plain_text(body).strip():
        raise PayloadError("invalid-payload",
                           "the message is empty: give `text` or `rich` - at `$.data`")
    return body


def rich_from_wire(rich: WireRich) -> RichText:
    """The canonical tree for a wire tree; :class:`PayloadError` naming the bad node."""
    return RichText(blocks=tuple(_block(b, f"$.data.rich.blocks[{i}]", 1)
                                 for i, b in enumerate(rich.blocks)))


def _block(block: WireBlock, where: str, depth: int) -> Block:
    if depth > MAX_DEPTH:
        raise PayloadError("invalid-payload",
                           f"rich text nests deeper than {MAX_DEPTH} levels - at `{where}`")
    if isinstance(block, WireParagraph):
        return Paragraph(inlines=tuple(_inline(n, f"{where}.inlines[{i}]")
                                       for i, n in enumerate(block.inlines)))
    if isinstance(block, WireCode):
        return CodeBlock(code=block.code, language=block.language)
    if isinstance(block, WireQuote):
        return Quote(blocks=tuple(_block(b, f"{where}.blocks[{i}]", depth + 1)
                                  for i, b in enumerate(block.blocks)))
    assert isinstance(block, WireList)
    return ListBlock(ordered=block.ordered, items=tuple(
        tuple(_block(b, f"{where}.items[{i}][{j}]", depth + 1) for j, b in enumerate(item))
        for i, item in enumerate(block.items)))


def _inline(node: WireInline, where: str) -> Inline:
    if isinstance(node, WireText):
        return text(node.text, *node.styles)
    if isinstance(node, WireLink):
        if not node.url.lower().startswith(LINK_SCHEMES):
            raise PayloadError("invalid-payload", "links must be http, https or mailto URLs "
                               f"- at `{where}.url`")
        return Link(url=node.url, label=node.label)
    if isinstance(node, WireMention):
        return Mention(address=str(_address(node.address, f"{where}.address")),
                       display=node.display)
    if isinstance(node, WireEmoji):
        known = emoji_from_shortcode(node.name)
        return Emoji(name=node.name,
                     unicode=node.unicode or ("" if known.startswith(":") else known))
    assert isinstance(node, WireBreak)
    return LineBreak()
