"""Slack payloads <-> canonical events. Pure: no I/O, no clock, no randomness.

Inbound, :func:`decode_event` turns one Events API body, already decoded into
its view (:mod:`._views`), into canonical events (or says why it is ignored);
everything it needs from the directory comes through a :class:`SlackLookup` of
synchronous reads. Outbound, :func:`encode_event` turns one canonical event
into the Web API calls that show it in the private conversation of the
session; the I/O layer runs them.

Ids: a Slack message is ``"<channel>/<ts>"`` under the ``slack`` platform in
the message-id map. A message that starts on Slack gets a canonical id derived
from its team, channel and ts, so a redelivered event maps to the same id.
Every message Interlink posts carries :func:`post_metadata`: the canonical id of
the event it shows, and nothing else, so a post whose answer was lost can be
found again instead of being posted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

from engine import (
    Address,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Error,
    Event,
    FileShare,
    Ignored,
    Message,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    RichText,
    SessionRecord,
    Untranslatable,
    derive_canonical_id,
    emoji_from_shortcode,
    emoji_shortcode,
    failure_note,
    to_plain_text,
)

from ._richtext import blocks_to_rich, mrkdwn_to_rich, rich_to_blocks, rich_to_mrkdwn
from ._views import EventsBody, SlackEvent, SlackUser, UserProfile

PLATFORM = "slack"
Json = dict[str, Any]

#: Slack truncates text longer than this; we cut it ourselves and say so
MAX_TEXT = 40_000

#: message subtypes that carry a person's new message
_NEW_MESSAGE_SUBTYPES = frozenset({None, "", "thread_broadcast", "file_share", "me_message"})


# ------------------------------------------------------------------ lookups

class SlackLookup(Protocol):
    """Directory reads the translation needs (all synchronous)."""

    def address_of(self, team_id: str, user_id: str) -> Address | None:
        """The federated address of a Slack user, if known."""
        ...

    def user_id_of(self, address: Address) -> str | None:
        """The Slack user id of an address on Slack (for mentions)."""
        ...

    def session_of(self, channel_id: str) -> SessionRecord | None:
        """The session whose Slack conversation is ``channel_id``."""
        ...

    def canonical_id(self, channel_id: str, ts: str) -> str | None:
        """The canonical id of the Slack message ``ts`` in ``channel_id``."""
        ...

    def is_own_bot(self, team_id: str, *, user_id: str = "", bot_id: str = "",
                   app_id: str = "") -> bool:
        """Whether a user, bot or app id is Interlink's own (loop prevention)."""
        ...


#: the ``event_type`` of the metadata on Interlink's posts
POST_EVENT_TYPE = "interlink_message"


def post_metadata(event_id: str) -> Json:
    """Slack message metadata naming the canonical event a post shows (never content)."""
    return {"event_type": POST_EVENT_TYPE, "event_payload": {"event_id": event_id}}


def message_key(channel_id: str, ts: str) -> str:
    """The Slack platform id of a message in the message-id map."""
    return f"{channel_id}/{ts}"


def split_message_key(key: str) -> tuple[str, str]:
    channel_id, _, ts = key.partition("/")
    return channel_id, ts


def canonical_id_for(team_id: str, channel_id: str, ts: str) -> str:
    """A stable canonical id for a message that starts on Slack: its team, channel and ts."""
    return derive_canonical_id("sl", team_id, channel_id, ts)


# -------------------------------------------------------------------- emoji

_SKIN_TONES = {f"skin-tone-{n}": chr(0x1F3FB + n - 2) for n in range(2, 7)}
_TONE_NAMES = {v: k for k, v in _SKIN_TONES.items()}


def emoji_from_slack(name: str) -> str:
    """A Slack reaction name as Unicode where known, else ``:name:`` (custom emoji)."""
    base, _, tone = name.partition("::")
    found = emoji_from_shortcode(base)
    if found == f":{base}:":
        return f":{name}:"
    return found + _SKIN_TONES.get(tone, "")


def slack_emoji_name(value: str) -> str:
    """A canonical emoji (Unicode, or ``:name:``) as a Slack reaction name."""
    if value.startswith(":") and value.endswith(":") and len(value) > 2:
        return value[1:-1]
    tone = next((t for t in value if t in _TONE_NAMES), "")
    base = value.replace(tone, "") if tone else value
    name = emoji_shortcode(base) or "grey_question"
    return f"{name}::{_TONE_NAMES[tone]}" if tone else name


# ------------------------------------------------------------------ inbound

class Revoked(msgspec.Struct, frozen=True):
    """Slack revoked the installation's tokens (``tokens_revoked`` / ``app_uninstalled``)."""

    team_id: str
    reason: str


Decoded = list[Event] | Ignored | Revoked


def decode_event(body: EventsBody, lookup: SlackLookup) -> Decoded:
    """Translate one Events API body (``event_callback``) into canonical events."""
    if body.type != "event_callback":
        return Ignored(f"body:{body.type}")
    event = body.event
    if event is None:
        return Ignored("malformed")
    team_id = body.team_id
    kind = event.type
    if kind == "message":
        return _decode_message(team_id, event, lookup)
    if kind in ("reaction_added", "reaction_removed"):
        return _decode_reaction(team_id, event, lookup)
    if kind == "user_change":
        return _decode_user_change(team_id, event, lookup)
    if kind == "app_uninstalled":
        return Revoked(team_id, kind)
    if kind == "tokens_revoked":
        # Only the bot token matters to Interlink; a person's revoked token does not.
        return Revoked(team_id, kind) if event.tokens and event.tokens.bot \
            else Ignored("user-tokens-revoked")
    return Ignored(f"event:{kind}")


def _participants(channel: str, user: str, team_id: str,
                  lookup: SlackLookup) -> tuple[Address, Address, SessionRecord] | Ignored:
    """(source, destination, session) for something ``user`` did in ``channel``."""
    session = lookup.session_of(channel)
    if session is None:
        return Ignored("not-a-federated-conversation")
    source = lookup.address_of(team_id, user)
    if source is None:
        return Ignored("unknown-user")
    if source == session.a:
        return source, session.b, session
    if source == session.b:
        return source, session.a, session
    return Ignored("not-a-participant")


def _body(message: SlackEvent, lookup: SlackLookup, team_id: str) -> RichText:
    def address_of(user_id: str) -> str | None:
        found = lookup.address_of(team_id, user_id)
        return None if found is None else str(found)

    blocks = message.blocks
    if blocks and any(b.get("type") == "rich_text" for b in blocks):
        return blocks_to_rich(blocks, address_of)
    return mrkdwn_to_rich(message.text, address_of)


def _is_own(team_id: str, message: SlackEvent, lookup: SlackLookup) -> bool:
    return lookup.is_own_bot(team_id, user_id=message.user_id, bot_id=message.bot_id,
                             app_id=message.app_id)


def _decode_message(team_id: str, event: SlackEvent, lookup: SlackLookup) -> Decoded:
    subtype = event.subtype
    channel = event.channel
    if subtype == "message_changed":
        return _decode_edit(team_id, channel, event, lookup)
    if subtype == "message_deleted":
        return _decode_delete(team_id, channel, event, lookup)
    if _is_own(team_id, event, lookup):
        return Ignored("own-bot")
    if subtype == "bot_message" or event.bot_id:
        return Ignored("bot-message")
    if subtype not in _NEW_MESSAGE_SUBTYPES:
        return Ignored(f"subtype:{subtype}")
    ts = event.ts
    if not channel or not ts:
        return Ignored("malformed")
    parties = _participants(channel, event.user_id, team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    common: dict[str, Any] = {
        "source": source, "destination": destination, "session_id": session.session_id,
        "timestamp": _timestamp(ts)}
    canonical = canonical_id_for(team_id, channel, ts)
    platform_ids = {PLATFORM: message_key(channel, ts)}
    thread_ts = event.thread_ts
    thread_id = lookup.canonical_id(channel, thread_ts) if thread_ts and thread_ts != ts else None
    body = _body(event, lookup, team_id)
    if not event.files:
        return [Message(event_id=canonical, platform_ids=platform_ids, body=body,
                        text=to_plain_text(body), thread_id=thread_id, **common)]
    shares: list[Event] = []
    caption = to_plain_text(body)
    for index, file in enumerate(event.files):
        url = file.url_private_download or file.url_private
        if not url:
            continue
        first = not shares
        shares.append(FileShare(
            event_id=canonical if first else f"{canonical}-{index}",
            platform_ids=platform_ids if first else {},
            name=file.name or file.title or "file", size=file.size,
            media_type=file.mimetype or "application/octet-stream",
            url=url, caption=caption if first else "", **common))
    return shares or Ignored("file-without-url")


def _decode_edit(team_id: str, channel: str, event: SlackEvent,
                 lookup: SlackLookup) -> Decoded:
    message = event.message
    if message is None:
        return Ignored("malformed")
    if _is_own(team_id, message, lookup):
        return Ignored("own-bot")
    previous = event.previous_message
    if previous is not None and previous.text == message.text \
            and previous.blocks == message.blocks:
        return Ignored("unchanged")  # unfurls and other attachment-only changes
    ts = message.ts
    target = lookup.canonical_id(channel, ts)
    if target is None:
        return Ignored("unknown-message")
    parties = _participants(channel, message.user_id, team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    body = _body(message, lookup, team_id)
    edited_ts = message.edited.ts if message.edited is not None else ""
    return [Edit(source=source, destination=destination, session_id=session.session_id,
                 target_id=target, body=body, text=to_plain_text(body),
                 timestamp=_timestamp(edited_ts or event.event_ts or ts))]


def _decode_delete(team_id: str, channel: str, event: SlackEvent,
                   lookup: SlackLookup) -> Decoded:
    previous = event.previous_message or _NO_MESSAGE
    if _is_own(team_id, previous, lookup):
        return Ignored("own-bot")
    target = lookup.canonical_id(channel, event.deleted_ts)
    if target is None:
        return Ignored("unknown-message")
    parties = _participants(channel, previous.user_id, team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    return [Retract(source=source, destination=destination, session_id=session.session_id,
                    target_id=target, timestamp=_timestamp(event.event_ts))]


def _decode_reaction(team_id: str, event: SlackEvent, lookup: SlackLookup) -> Decoded:
    item = event.item
    if item is None or item.type != "message":
        return Ignored("reaction-not-on-message")
    if _is_own(team_id, event, lookup):
        return Ignored("own-bot")
    channel, ts = item.channel, item.ts
    target = lookup.canonical_id(channel, ts)
    if target is None:
        return Ignored("unknown-message")
    parties = _participants(channel, event.user_id, team_id, lookup)
    if isinstance(parties, Ignored):
        return parties
    source, destination, session = parties
    name = event.reaction
    if not name:
        return Ignored("malformed")
    kind = ReactionAdd if event.type == "reaction_added" else ReactionRemove
    return [kind(source=source, destination=destination, session_id=session.session_id,
                 target_id=target, emoji=emoji_from_slack(name),
                 timestamp=_timestamp(event.event_ts))]


def _decode_user_change(team_id: str, event: SlackEvent, lookup: SlackLookup) -> Decoded:
    user = event.user
    if isinstance(user, str):
        return Ignored("malformed")
    address = lookup.address_of(user.team_id or team_id, user.id)
    if address is None:
        return Ignored("unknown-user")
    return [profile_event(address, user)]


def profile_event(address: Address, user: SlackUser, *, timestamp: float = 0.0) -> Profile:
    """A Slack user object (users.info, user_change) as a profile broadcast."""
    profile = user.profile or _NO_PROFILE
    name = profile.real_name or user.real_name or profile.display_name or user.name
    avatar = (profile.image_192 or profile.image_512 or profile.image_72
              or profile.image_original)
    return Profile(source=address, destination=address, name=name, email=profile.email,
                   title=profile.title, avatar_url=avatar, timestamp=timestamp)


_NO_MESSAGE = SlackEvent()
_NO_PROFILE = UserProfile()


def _timestamp(ts: str) -> float:
    try:
        return float(ts)
    except ValueError:
        return 0.0


# ----------------------------------------------------------------- outbound

class ApiCall(msgspec.Struct, frozen=True, kw_only=True):
    """One Web API call. ``result`` says what the call's answer means to the engine."""

    method: str
    args: Json
    result: Literal["message", "none"] = "none"
    #: Slack errors that mean the call's effect is already there (done, not failed)
    harmless: frozenset[str] = frozenset()


class FileUpload(msgspec.Struct, frozen=True, kw_only=True):
    """Stream ``url`` into the conversation (files upload v2)."""

    channel: str
    url: str
    filename: str
    size: int
    title: str = ""
    initial_comment: str = ""
    thread_ts: str | None = None


class Sender(msgspec.Struct, frozen=True, kw_only=True):
    """How the external contact appears in Slack (``username`` / ``icon_url``)."""

    name: str
    icon_url: str = ""


class OutboundContext(msgspec.Struct, frozen=True, kw_only=True):
    """What the I/O layer resolved for one delivery."""

    channel: str
    sender: Sender
    #: Slack keys (``channel/ts``) of the canonical ids the event names
    message_keys: Mapping[str, str] = {}
    #: Slack user ids of mentioned addresses
    user_ids: Mapping[str, str] = {}


Outbound = list[ApiCall | FileUpload]


def encode_event(event: Event, context: OutboundContext) -> Outbound:
    """The Web API calls that show ``event`` in ``context.channel``."""
    channel = context.channel
    if isinstance(event, Message):
        args = _message_args(event.body, event.text, context)
        root = event.thread_id or event.reply_to
        if root:
            args["thread_ts"] = _ts_of(root, context)
        if event.event_id:
            args["metadata"] = post_metadata(event.event_id)
        return [ApiCall(method="chat.postMessage", args=args, result="message")]
    if isinstance(event, Edit):
        args = _message_args(event.body, event.text, context)
        args["ts"] = _ts_of(event.target_id, context)
        return [ApiCall(method="chat.update", args=args)]
    if isinstance(event, Retract):
        return [ApiCall(method="chat.delete",
                        args={"channel": channel, "ts": _ts_of(event.target_id, context)},
                        harmless=frozenset({"message_not_found"}))]
    if isinstance(event, ReactionAdd | ReactionRemove):
        adding = isinstance(event, ReactionAdd)
        return [ApiCall(
            method="reactions.add" if adding else "reactions.remove",
            args={"channel": channel, "timestamp": _ts_of(event.target_id, context),
                  "name": slack_emoji_name(event.emoji)},
            harmless=frozenset({"already_reacted"} if adding else {"no_reaction"}))]
    if isinstance(event, FileShare):
        return [FileUpload(channel=channel, url=event.url, filename=event.name, size=event.size,
                           title=event.name, initial_comment=event.caption)]
    if isinstance(event, Presence):
        return [ApiCall(method="conversations.setTopic",
                        args={"channel": channel, "topic": presence_topic(event, context)})]
    if isinstance(event, ContactRequest | ContactAccept | ContactRemove | DeliveryOutcome
                  | Error):
        return [notice_call(channel, notice_text(event, context.sender.name),
                            event_id=event.event_id)]
    raise Untranslatable(f"unsupported:{type(event).__name__}")


def _message_args(body: RichText, text: str, context: OutboundContext) -> Json:
    def user_id_of(address: str) -> str | None:
        return context.user_ids.get(address)

    blocks = rich_to_blocks(body, user_id_of)
    fallback = rich_to_mrkdwn(body, user_id_of) if body.blocks else text
    if len(fallback) > MAX_TEXT:
        fallback = fallback[:MAX_TEXT - 1] + "…"
    args: Json = {"channel": context.channel, "text": fallback,
                  "username": context.sender.name, "unfurl_links": False}
    if blocks:
        args["blocks"] = blocks
    if context.sender.icon_url:
        args["icon_url"] = context.sender.icon_url
    return args


def _ts_of(canonical_id: str, context: OutboundContext) -> str:
    key = context.message_keys.get(canonical_id)
    if not key:
        raise Untranslatable("unknown-message")
    return split_message_key(key)[1]


def presence_topic(event: Presence, context: OutboundContext) -> str:
    words = {"available": "online", "away": "away", "busy": "busy", "offline": "offline"}
    topic = f"{context.sender.name} ({event.source}) is {words[event.availability]}"
    return f"{topic}: {event.status}"[:250] if event.status else topic


def notice_call(channel: str, text: str, *, event_id: str = "") -> ApiCall:
    """A message from Interlink's bot itself (not under the contact's name); with
    ``event_id``, the metadata naming the event it shows."""
    args: Json = {"channel": channel, "text": text, "unfurl_links": False}
    if event_id:
        args["metadata"] = post_metadata(event_id)
    return ApiCall(method="chat.postMessage", args=args, result="message")


def notice_text(event: Event, name: str) -> str:
    """What Interlink's bot says about a contact or delivery event."""
    who = f"*{name}* ({event.source})" if name != str(event.source) else f"*{event.source}*"
    if isinstance(event, ContactRequest):
        return (f"{who} would like to chat with you. Accept with "
                f"`/interlink accept {event.source}`, or ignore this.")
    if isinstance(event, ContactAccept):
        return f"{who} accepted. Messages you write here go to them."
    if isinstance(event, ContactRemove):
        return f"{who} removed the contact. Messages here no longer reach them."
    if isinstance(event, DeliveryOutcome):
        if event.status == "delivered":
            return f"Delivered to {event.source}."
        return (f":warning: Not delivered to {event.source} — {failure_note(event.reason)}"
                + (f": {explained}." if (explained := explain_reason(event.reason)) else "."))
    if isinstance(event, Error):
        return f":warning: {describe_reason(event.code)}" + (
            f": {event.reason}" if event.reason else "")
    raise Untranslatable(f"unsupported:{type(event).__name__}")


_REASONS = {
    "not-a-contact": "you are not connected (use `/interlink add`)",
    "unknown-address": "no such user",
    "unknown-message": "the message it refers to is unknown or too old",
    "actor-failed": "the conversation is stopped by an operator or failed",
    "no-pending-request": "there is no request to accept",
    "no-agreement": "federation with that domain is not allowed",
    "agreement-denies": "federation with that domain is not allowed",
    "user-denied": "federation is not allowed for this user",
    "not-opted-in": "a user has not opted in to federation",
    "no-route": "no platform serves that domain",
}


def explain_reason(reason: str) -> str:
    """A short human explanation of an outcome reason, or ``""`` when there is none."""
    return _REASONS.get(reason) or _REASONS.get(reason.partition(":")[0]) or ""


def describe_reason(reason: str) -> str:
    """The explanation of an outcome reason with the code kept visible."""
    explained = explain_reason(reason)
    return f"{explained} ({reason})" if explained else reason
