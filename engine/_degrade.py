"""Graceful degradation: what to send when a destination cannot express an event.

A destination without a capability gets a short text note instead (a
reaction becomes "reacted 👍"), or nothing where a note would only be noise
(typing, presence). Never a silent drop: the metadata log records
``unsupported`` for events that are not sent.
"""

from __future__ import annotations

from ._adapter import REQUIRED_CAPABILITY, Capability
from ._events import (
    ChannelInvite,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Event,
    FileShare,
    Message,
    ReactionAdd,
    ReactionRemove,
    Retract,
)
from ._richtext import Link, RichText, paragraph, text


def _note(event: Event, body: RichText, reply_to: str | None = None) -> Message:
    return Message.create(
        source=event.source, destination=event.destination, body=body,
        event_id=event.event_id, session_id=event.session_id, timestamp=event.timestamp,
        platform_ids=event.platform_ids, reply_to=reply_to,
    )


def _italic_note(event: Event, note: str, reply_to: str | None = None) -> Message:
    return _note(event, RichText(blocks=(paragraph(text(note, "italic")),)), reply_to)


def reaction_note(emoji: str, *, added: bool) -> str:
    """The words for a reaction a destination cannot show as one (every adapter uses these)."""
    return f"reacted {emoji}" if added else f"removed the reaction {emoji}"


def failure_note(reason: str) -> str:
    """The words telling a sender their message did not arrive (content-free ``reason``)."""
    return f"your message could not be delivered ({reason})"


def degrade(event: Event, capabilities: frozenset[Capability]) -> Event | None:
    """``event`` itself when the destination can express it, else a substitute or ``None``."""
    needed = REQUIRED_CAPABILITY.get(type(event))
    if needed is None or needed in capabilities:
        return event
    if isinstance(event, ReactionAdd):
        return _italic_note(event, reaction_note(event.emoji, added=True), event.target_id)
    if isinstance(event, ReactionRemove):
        return _italic_note(event, reaction_note(event.emoji, added=False), event.target_id)
    if isinstance(event, Edit):
        body = RichText(blocks=(paragraph(text("(edited) ", "italic")), *event.body.blocks))
        return _note(event, body, event.target_id)
    if isinstance(event, Retract):
        return _italic_note(event, "deleted a message", event.target_id)
    if isinstance(event, FileShare):
        label = f"{event.name} ({event.size} bytes)"
        return _note(event, RichText(blocks=(paragraph(Link(url=event.url, label=label)),)))
    if isinstance(event, ChannelInvite):
        return _italic_note(event, f"invited you to {event.channel_name or event.channel}")
    if isinstance(event, ContactRequest):
        return _italic_note(event, f"{event.source} would like to add you as a contact")
    if isinstance(event, ContactAccept):
        return _italic_note(event, f"{event.source} accepted your contact request")
    if isinstance(event, ContactRemove):
        return _italic_note(event, f"{event.source} removed you as a contact")
    if isinstance(event, DeliveryOutcome) and event.status == "failed":
        return _italic_note(event, failure_note(event.reason),
                            event.target_event_id)
    return None  # typing, presence, profile, delivered outcomes: nothing worth a note
