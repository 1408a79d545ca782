"""Lenient msgspec views of Slack's payloads, decoded once, from bytes, at the edge.

A view names only the fields the adapter reads; Slack's other fields, and any
it adds later, are skipped (``forbid_unknown_fields`` is off). A field the
adapter reads must have its documented type: the decoder checks it, and a
payload that breaks that is refused with the path of the bad field (never
its value). The rules::

    Events API body (HTTP, or a Socket Mode events_api payload) -> EventsBody
        not JSON                                                  invalid_json
        not an object with a string "type"                        invalid_body
        url_verification whose challenge is not a string          invalid_challenge
        event_callback / app_rate_limited with a mistyped field   invalid_event
          ... in an event of a type the adapter does not handle   EventsBody whose
              (its shape is not modelled: e.g. "channel" is an      event holds only
              object in channel_created)                            its type
        any other body type with a mistyped field                 EventsBody(type) only
    Socket Mode frame -> SocketFrame; its payload stays raw until its type says
        which view it is (events_api: EventsBody; slash_commands: a flat form)
    Web API answer -> a subclass of Answer (ok, error, needed), one per method read

``user`` is a user id in most events and a whole user object in
``user_change``: :attr:`SlackEvent.user` decodes both. Rich-text ``blocks``
stay plain lists of objects, for :mod:`._richtext`. Decoders are made once
per view and reused.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: events the translator reads; the shape of any other event is not checked
HANDLED_EVENT_TYPES = frozenset({"message", "reaction_added", "reaction_removed", "user_change",
                                 "app_uninstalled", "tokens_revoked"})
#: body types whose fields are checked (the others are only counted and ignored)
CHECKED_BODY_TYPES = frozenset({"event_callback", "app_rate_limited", "url_verification"})


# -- users (user_change, users.info) --------------------------------------------------------


class UserProfile(msgspec.Struct, kw_only=True):
    real_name: str = ""
    display_name: str = ""
    email: str = ""
    title: str = ""
    image_72: str = ""
    image_192: str = ""
    image_512: str = ""
    image_original: str = ""


class SlackUser(msgspec.Struct, kw_only=True):
    """A Slack user object (``user_change``'s ``user``, ``users.info``'s ``user``)."""

    id: str = ""
    team_id: str = ""
    name: str = ""
    real_name: str = ""
    profile: UserProfile | None = None


# -- events ---------------------------------------------------------------------------------


class SlackFile(msgspec.Struct, kw_only=True):
    """A file of a ``file_share`` message."""

    id: str = ""
    name: str = ""
    title: str = ""
    mimetype: str = ""
    size: int = 0
    url_private: str = ""
    url_private_download: str = ""


class Edited(msgspec.Struct, kw_only=True):
    user: str = ""
    ts: str = ""


class Item(msgspec.Struct, kw_only=True):
    """What a reaction is on: a message (channel, ts) or a file."""

    type: str = ""
    channel: str = ""
    ts: str = ""


class Tokens(msgspec.Struct, kw_only=True):
    """The ids whose tokens ``tokens_revoked`` revokes."""

    oauth: list[str] = []
    bot: list[str] = []


class SlackEvent(msgspec.Struct, kw_only=True):
    """The inner ``event`` of an Events API body, and a message nested in one.

    One view for every event the adapter handles (the fields of all of them);
    a message inside ``message_changed`` (``message``, ``previous_message``)
    is a SlackEvent too.
    """

    type: str = ""
    subtype: str | None = None
    channel: str = ""
    #: a user id; the whole user object in ``user_change``
    user: str | SlackUser = ""
    text: str = ""
    ts: str = ""
    event_ts: str = ""
    thread_ts: str = ""
    bot_id: str = ""
    app_id: str = ""
    blocks: list[dict[str, Any]] | None = None
    files: list[SlackFile] = []
    edited: Edited | None = None
    message: SlackEvent | None = None
    previous_message: SlackEvent | None = None
    deleted_ts: str = ""
    reaction: str = ""
    item: Item | None = None
    tokens: Tokens | None = None

    @property
    def user_id(self) -> str:
        """The user id, whether ``user`` is an id or a user object."""
        return self.user if isinstance(self.user, str) else self.user.id


class EventsBody(msgspec.Struct, kw_only=True):
    """An Events API body: ``event_callback``, ``app_rate_limited``, ``url_verification``..."""

    type: str
    event_id: str = ""
    team_id: str = ""
    api_app_id: str = ""
    event: SlackEvent | None = None
    #: url_verification only
    challenge: str | None = None


class Malformed(msgspec.Struct, frozen=True):
    """Why a payload was refused: an error code, and where (a path such as ``$.event.ts``)."""

    code: str
    where: str = "$"


# -- decoding Events API bodies -------------------------------------------------------------


class _EventHead(msgspec.Struct):
    type: Any = None


class _BodyHead(msgspec.Struct):
    type: str
    event_id: Any = None
    team_id: Any = None
    event: msgspec.Raw = msgspec.Raw(b"null")


_body_decoder = msgspec.json.Decoder(EventsBody)
_body_head_decoder = msgspec.json.Decoder(_BodyHead)
_event_head_decoder = msgspec.json.Decoder(_EventHead)


def read_events_body(data: bytes | str) -> EventsBody | Malformed:
    """An Events API body from its JSON, or why it is refused (see the module's rules).

    The happy path is one decode; the slower look at a refused body runs only then.
    """
    try:
        return _body_decoder.decode(data)
    except msgspec.ValidationError as exc:
        where = _path_of(exc)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        return Malformed("invalid_json")
    try:
        head = _body_head_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        return Malformed("invalid_body", where)
    if head.type == "url_verification":
        return Malformed("invalid_challenge", where)
    if head.type not in CHECKED_BODY_TYPES:
        return EventsBody(type=head.type)  # not read, so its shape does not matter
    if head.type == "event_callback" and isinstance(head.event_id, str) \
            and isinstance(head.team_id, str | None):
        try:
            event_type = _event_head_decoder.decode(head.event).type
        except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
            event_type = None
        if isinstance(event_type, str) and event_type not in HANDLED_EVENT_TYPES:
            return EventsBody(type=head.type, event_id=head.event_id,
                              team_id=head.team_id or "", event=SlackEvent(type=event_type))
    return Malformed("invalid_event", where)


def _path_of(exc: msgspec.ValidationError) -> str:
    """The path in a validation error (``$.event.ts``); msgspec's message names no value."""
    message = str(exc)
    _, found, path = message.rpartition(" - at `")
    return path.rstrip("`")[:128] if found else "$"


# -- Socket Mode ----------------------------------------------------------------------------


class SocketFrame(msgspec.Struct, kw_only=True):
    """A Socket Mode frame: ``hello``, ``disconnect`` or an envelope (its payload raw)."""

    type: str = ""
    envelope_id: str | None = None
    payload: msgspec.Raw = msgspec.Raw(b"null")
    accepts_response_payload: bool = False
    retry_attempt: int | None = None
    #: disconnect only
    reason: str = ""
    #: hello only
    num_connections: int | None = None


class _FrameHead(msgspec.Struct):
    envelope_id: Any = None


_frame_decoder = msgspec.json.Decoder(SocketFrame)
_frame_head_decoder = msgspec.json.Decoder(_FrameHead)
_form_decoder = msgspec.json.Decoder(dict[str, Any])


def read_frame(data: bytes | str) -> SocketFrame | Malformed:
    """A Socket Mode frame, or why it is refused.

    A refused frame that still names a string ``envelope_id`` comes back as a
    SocketFrame of type :data:`MALFORMED_ENVELOPE` with that id and the bad
    field's path as ``reason``, so the envelope can be acked and counted.
    """
    try:
        return _frame_decoder.decode(data)
    except msgspec.ValidationError as exc:
        where = _path_of(exc)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        return Malformed("invalid_json")
    try:
        envelope_id = _frame_head_decoder.decode(data).envelope_id
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        return Malformed("invalid_frame", where)
    if isinstance(envelope_id, str):
        return SocketFrame(type=MALFORMED_ENVELOPE, envelope_id=envelope_id, reason=where)
    return Malformed("invalid_frame", where)


#: the type given to an envelope whose fields do not fit :class:`SocketFrame`
MALFORMED_ENVELOPE = "interlink:malformed"


def read_command_form(payload: msgspec.Raw) -> dict[str, str] | None:
    """A slash command's fields from a Socket Mode payload (flat strings), or None."""
    try:
        fields = _form_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        return None
    return {str(k): str(v) for k, v in fields.items()}


# -- Web API answers ------------------------------------------------------------------------


class Answer(msgspec.Struct, kw_only=True):
    """The part of every Web API answer the client reads: ok, or the error."""

    ok: bool = False
    error: str = ""
    #: missing_scope: the scope the call needed
    needed: str = ""


class ConnectionsOpen(Answer, kw_only=True):
    """apps.connections.open"""

    url: str = ""


class AuthTest(Answer, kw_only=True):
    """auth.test"""

    team_id: str = ""
    user_id: str = ""
    bot_id: str = ""
    app_id: str = ""


class OAuthTeam(msgspec.Struct, kw_only=True):
    id: str = ""


class OAuthAccess(Answer, kw_only=True):
    """oauth.v2.access (an install, or a token rotation)"""

    access_token: str = ""
    bot_user_id: str = ""
    refresh_token: str = ""
    expires_in: float | None = None
    team: OAuthTeam | None = None


class ChannelRef(msgspec.Struct, kw_only=True):
    id: str = ""
    is_archived: bool = False
    #: conversations.info: whether the caller (the bot) is a member; None if not said
    is_member: bool | None = None


class ChannelAnswer(Answer, kw_only=True):
    """conversations.create, conversations.open, conversations.info"""

    channel: ChannelRef | None = None

    @property
    def channel_id(self) -> str:
        return self.channel.id if self.channel is not None else ""


class UsersInfo(Answer, kw_only=True):
    """users.info"""

    user: SlackUser | None = None


class UsersPresence(Answer, kw_only=True):
    """users.getPresence"""

    presence: str = ""


class Posted(Answer, kw_only=True):
    """chat.postMessage, chat.update and the other calls of a delivery (``ts`` if any)."""

    ts: str = ""


class MessageMetadata(msgspec.Struct, kw_only=True):
    """A message's ``metadata`` (an app's; history and replies with ``include_all_metadata``)."""

    event_type: str = ""
    event_payload: dict[str, Any] = {}


class HistoryMessage(msgspec.Struct, kw_only=True):
    """A message of conversations.history / conversations.replies: what finding a post reads."""

    ts: str = ""
    bot_id: str | None = None
    metadata: MessageMetadata | None = None


class Cursor(msgspec.Struct, kw_only=True):
    next_cursor: str = ""


class History(Answer, kw_only=True):
    """conversations.history, conversations.replies"""

    messages: list[HistoryMessage] = []
    has_more: bool = False
    response_metadata: Cursor | None = None

    @property
    def next_cursor(self) -> str:
        return self.response_metadata.next_cursor if self.response_metadata else ""


class UploadUrl(Answer, kw_only=True):
    """files.getUploadURLExternal"""

    upload_url: str = ""
    file_id: str = ""


class Share(msgspec.Struct, kw_only=True):
    ts: str = ""


class Shares(msgspec.Struct, kw_only=True):
    private: dict[str, list[Share]] = {}
    public: dict[str, list[Share]] = {}


class UploadedFile(msgspec.Struct, kw_only=True):
    """A file object from files.completeUploadExternal."""

    id: str = ""
    name: str = ""
    title: str = ""
    size: int = 0
    url_private: str = ""
    url_private_download: str = ""
    shares: Shares | None = None

    def message_ts(self, channel: str) -> str:
        """The ts of the message that shares this file in ``channel`` ("" when none yet)."""
        for posts in (self.shares.private, self.shares.public) if self.shares else ():
            if found := posts.get(channel):
                return found[0].ts
        return ""


class UploadCompleted(Answer, kw_only=True):
    """files.completeUploadExternal"""

    files: list[UploadedFile] = []
