"""Canonical events: the only thing the platform-neutral core ever sees.

Every event is a frozen msgspec Struct tagged by ``kind``. Adapters decode
platform payloads into these and encode these into platform calls. New fields
always get defaults so stored or in-flight events keep decoding.

Common fields (on :class:`BaseEvent`):
    event_id      canonical id, unique per event; for a message it is the
                  canonical message id that edits, reactions and replies name
    source        who sent it (``user@domain``)
    destination   who it is for
    session_id    the chat session; empty until the router resolves it
    platform_ids  the platform's own ids for this event, by platform name
                  (``{"chat": "C024BE91L/1700000000.000100"}``)
    timestamp     seconds since the Unix epoch (UTC), from the injected clock
"""

from __future__ import annotations

import secrets
from typing import ClassVar, Literal

import msgspec

from ._address import Address
from ._richtext import RichText, plain, to_plain_text

LogType = Literal[
    "im", "edit", "retract", "reaction", "typing", "presence", "profile",
    "contact", "file", "invite", "outcome", "error",
]


def new_event_id() -> str:
    """A fresh random event id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


class BaseEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", gc=False):
    # gc=False (inherited by every kind): an event holds strings, numbers,
    # Addresses, a dict of strings and a rich-text tree, so it can never be
    # part of a reference cycle; untracked, the thousands waiting in
    # mailboxes cost the garbage collector nothing.
    event_id: str = msgspec.field(default_factory=new_event_id)
    source: Address
    destination: Address
    session_id: str = ""
    platform_ids: dict[str, str] = msgspec.field(default_factory=dict)
    timestamp: float = 0.0

    #: the metadata log's type for this kind of event
    log_type: ClassVar[LogType]
    #: events whose failure is reported back to the sender as a DeliveryOutcome
    wants_outcome: ClassVar[bool] = True

    def __repr__(self) -> str:
        # Never show content: events end up in tracebacks and logs.
        return (f"<{type(self).__name__} {self.event_id} {self.source} -> {self.destination}"
                f" session={self.session_id or '-'}>")


class Message(BaseEvent, tag="message", frozen=True, kw_only=True):
    """An instant message. ``text`` is the plain-text fallback of ``body``."""

    log_type = "im"
    body: RichText = RichText()
    text: str = ""
    reply_to: str | None = None  # canonical message id this replies to
    thread_id: str | None = None  # canonical id of the thread's root message

    @classmethod
    def create(cls, *, source: Address, destination: Address, body: RichText | str,
               **fields: object) -> Message:
        """A message with its plain-text fallback filled in from the body."""
        rich = plain(body) if isinstance(body, str) else body
        return cls(source=source, destination=destination, body=rich,
                   text=to_plain_text(rich), **fields)  # type: ignore[arg-type]


class Edit(BaseEvent, tag="edit", frozen=True, kw_only=True):
    log_type = "edit"
    target_id: str
    body: RichText = RichText()
    text: str = ""


class Retract(BaseEvent, tag="retract", frozen=True, kw_only=True):
    log_type = "retract"
    target_id: str


class ReactionAdd(BaseEvent, tag="reaction_add", frozen=True, kw_only=True):
    log_type = "reaction"
    target_id: str
    emoji: str  # a Unicode emoji where known, else a short name like ":partyparrot:"


class ReactionRemove(BaseEvent, tag="reaction_remove", frozen=True, kw_only=True):
    log_type = "reaction"
    target_id: str
    emoji: str


class Typing(BaseEvent, tag="typing", frozen=True, kw_only=True):
    log_type = "typing"
    wants_outcome = False
    state: Literal["composing", "paused"] = "composing"


Availability = Literal["available", "away", "busy", "offline"]


class Presence(BaseEvent, tag="presence", frozen=True, kw_only=True):
    log_type = "presence"
    wants_outcome = False
    availability: Availability = "available"
    status: str = ""


class Profile(BaseEvent, tag="profile", frozen=True, kw_only=True):
    log_type = "profile"
    wants_outcome = False
    name: str = ""
    email: str = ""
    avatar_url: str = ""
    title: str = ""


class ContactRequest(BaseEvent, tag="contact_request", frozen=True, kw_only=True):
    log_type = "contact"


class ContactAccept(BaseEvent, tag="contact_accept", frozen=True, kw_only=True):
    log_type = "contact"


class ContactRemove(BaseEvent, tag="contact_remove", frozen=True, kw_only=True):
    log_type = "contact"


class FileShare(BaseEvent, tag="file_share", frozen=True, kw_only=True):
    """A shared file; Interlink never stores it, the destination fetches ``url``."""

    log_type = "file"
    name: str
    size: int
    media_type: str = "application/octet-stream"
    url: str
    caption: str = ""


class ChannelInvite(BaseEvent, tag="channel_invite", frozen=True, kw_only=True):
    """An invitation of ``destination`` into a channel bridged as a room."""

    log_type = "invite"
    channel: Address
    channel_name: str = ""


class DeliveryOutcome(BaseEvent, tag="delivery_outcome", frozen=True, kw_only=True):
    """What became of ``target_event_id``: delivered, or failed with a reason."""

    log_type = "outcome"
    wants_outcome = False
    target_event_id: str
    status: Literal["delivered", "failed"]
    reason: str = ""


class Error(BaseEvent, tag="error", frozen=True, kw_only=True):
    """An error notice for a person (a bad command, a refused contact)."""

    log_type = "error"
    wants_outcome = False
    code: str
    reason: str = ""


Event = (
    Message | Edit | Retract | ReactionAdd | ReactionRemove | Typing | Presence | Profile
    | ContactRequest | ContactAccept | ContactRemove | FileShare | ChannelInvite
    | DeliveryOutcome | Error
)

EVENT_TYPES: tuple[type[BaseEvent], ...] = (
    Message, Edit, Retract, ReactionAdd, ReactionRemove, Typing, Presence, Profile,
    ContactRequest, ContactAccept, ContactRemove, FileShare, ChannelInvite,
    DeliveryOutcome, Error,
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """Serialise an event (msgpack) for crossing a process or node boundary."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    """Inverse of :func:`encode_event`; raises ``msgspec.ValidationError`` naming the bad field."""
    event: Event = _decoder.decode(data)
    return event


def failed_outcome(event: BaseEvent, reason: str, *, timestamp: float) -> DeliveryOutcome:
    """The outcome telling ``event``'s sender that it could not be delivered."""
    return DeliveryOutcome(
        source=event.destination, destination=event.source, session_id=event.session_id,
        target_event_id=event.event_id, status="failed", reason=reason, timestamp=timestamp,
    )


def delivered_outcome(event: BaseEvent, *, timestamp: float) -> DeliveryOutcome:
    return DeliveryOutcome(
        source=event.destination, destination=event.source, session_id=event.session_id,
        target_event_id=event.event_id, status="delivered", timestamp=timestamp,
    )
