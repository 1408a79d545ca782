"""Events API payloads: what Slack sends each app when the world changes. Pure.

:func:`events_for` turns one :data:`~._state.Change` into zero or more
:class:`EventDelivery` — one per app that can see the change, with Slack's
``event_callback`` envelope. Who receives what:

- an app receives events of workspaces it is installed in, for the events its
  scopes allow (``message.channels`` needs ``channels:history``, …) and, when
  the seed lists ``events``, only those it subscribed to;
- message, reaction, member and file events only for conversations its bot
  user is a member of (bot event subscriptions);
- ``user_change`` for everyone in the workspace (``users:read``);
- ``app_home_opened`` and ``tokens_revoked`` only for the app concerned.

Shapes follow the payloads in ``shared/reference/slack-api/event-payloads``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec

from ._render import channel_type, file_json, message_json, user_json
from ._state import (
    HISTORY_SCOPES,
    App,
    AppHomeOpened,
    Change,
    Conversation,
    ConversationKind,
    FileShared,
    Installation,
    MemberJoined,
    MemberLeft,
    Message,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    ReactionChanged,
    TokensRevoked,
    UserChanged,
    World,
)

_MESSAGE_EVENT: dict[ConversationKind, str] = {
    "public": "message.channels", "private": "message.groups", "im": "message.im",
    "mpim": "message.mpim"}
_MEMBER_SCOPE: dict[ConversationKind, str] = {
    "public": "channels:read", "private": "groups:read", "im": "im:read", "mpim": "mpim:read"}
_SCOPE: dict[str, str | None] = {
    "reaction_added": "reactions:read", "reaction_removed": "reactions:read",
    "user_change": "users:read", "file_shared": "files:read", "app_home_opened": None,
    "tokens_revoked": None,
}
#: message fields that a nested message (message_changed, previous_message) leaves out
_NOT_NESTED = frozenset({"reactions", "reply_users", "app_id", "channel"})
#: and what a thread_broadcast's ``root`` leaves out besides
_NOT_IN_ROOT = frozenset({"client_msg_id", "is_locked"})


class EventDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """One ``event_callback`` for one app installation."""

    app_id: str
    team_id: str
    event_id: str
    event_type: str
    envelope: dict[str, Any]


def _allowed(app: App, installation: Installation, subscription: str, scope: str | None) -> bool:
    if scope is not None and scope not in installation.scopes:
        return False
    return app.events is None or subscription in app.events


def _context(event_type: str, team_id: str, app_id: str, channel: str) -> str:
    data = json.dumps({"et": event_type, "tid": team_id, "aid": app_id, "cid": channel},
                      separators=(",", ":")).encode()
    return "4-" + base64.urlsafe_b64encode(data).decode().rstrip("=")


def envelope(app: App, installation: Installation, event: dict[str, Any], *, event_id: str,
             now: float, channel: str = "") -> dict[str, Any]:
    """Slack's ``event_callback`` wrapper around ``event``."""
    return {
        "token": app.verification_token,
        "team_id": installation.team_id,
        "api_app_id": app.id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(now),
        "authorizations": [{"enterprise_id": None, "team_id": installation.team_id,
                            "user_id": installation.bot_user_id, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
        "event_context": _context(event["type"], installation.team_id, app.id, channel),
    }


def url_verification(app: App, challenge: str) -> dict[str, Any]:
    return {"token": app.verification_token, "challenge": challenge,
            "type": "url_verification"}


def nested_message(world: World, message: Message) -> dict[str, Any]:
    """A message inside another event (``message``, ``previous_message``, ``root``)."""
    data = message_json(world, message, for_event=True)
    return {k: v for k, v in data.items() if k not in _NOT_NESTED}


def message_event(world: World, message: Message, conv: Conversation) -> dict[str, Any]:
    """The ``message`` event for a new message (any subtype)."""
    event: dict[str, Any] = {"type": "message"}
    if message.subtype == "bot_message":
        event.update({"subtype": "bot_message", "text": message.text, "ts": message.ts,
                      "bot_id": message.bot_id, "username": message.username})
        if message.icons is not None:
            event["icons"] = dict(message.icons)
    elif message.subtype == "file_share":
        event.update({"subtype": "file_share", "text": message.text, "user": message.user,
                      "ts": message.ts, "upload": True, "display_as_bot": False,
                      "files": [file_json(world, world.files[f], for_event=True)
                                for f in message.files if f in world.files]})
    elif message.subtype == "thread_broadcast":
        root = world.messages[conv.id].get(message.thread_ts or "")
        event.update({"subtype": "thread_broadcast", "text": message.text,
                      "user": message.user, "ts": message.ts})
        if message.client_msg_id is not None:
            event["client_msg_id"] = message.client_msg_id
        if message.bot_id is not None:
            event["bot_id"] = message.bot_id
        if root is not None:
            event["root"] = {k: v for k, v in nested_message(world, root).items()
                             if k not in _NOT_IN_ROOT}
    else:
        event.update({"text": message.text, "user": message.user, "ts": message.ts,
                      "team": message.team})
        if message.client_msg_id is not None:
            event["client_msg_id"] = message.client_msg_id
        if message.bot_id is not None:
            nested = message_json(world, message, for_event=True)
            event["bot_id"] = message.bot_id
            if "bot_profile" in nested:
                event["bot_profile"] = nested["bot_profile"]
    if message.blocks is not None:
        event["blocks"] = message.blocks
    if message.attachments is not None:
        event["attachments"] = message.attachments
    if message.thread_ts is not None and message.is_reply:
        event["thread_ts"] = message.thread_ts
        if message.subtype in (None, "file_share"):
            event["parent_user_id"] = message.parent_user_id
    event["channel"] = conv.id
    event["event_ts"] = message.ts
    event["channel_type"] = channel_type(conv)
    return event


def _member_channel_type(conv: Conversation) -> str:
    return "C" if conv.kind == "public" else "G"


def events_for(world: World, change: Change, *, now: float) -> list[EventDelivery]:
    """Every app delivery that ``change`` causes, in installation order."""
    deliveries: list[EventDelivery] = []
    for installation in world.installations_in(change.team_id):
        app = world.apps[installation.app_id]
        built = _event_for(world, change, app, installation)
        if built is None:
            continue
        event, channel = built
        event_id = world.next_id("Ev")
        deliveries.append(EventDelivery(
            app_id=app.id, team_id=installation.team_id, event_id=event_id,
            event_type=event["type"] if event["type"] != "message" else
            f"message{'.' + event['subtype'] if 'subtype' in event else ''}",
            envelope=envelope(app, installation, event, event_id=event_id, now=now,
                              channel=channel)))
    return deliveries


def _event_for(world: World, change: Change, app: App, installation: Installation
               ) -> tuple[dict[str, Any], str] | None:
    """The event ``app`` receives for ``change`` (and its channel), or None."""
    bot = installation.bot_user_id
    match change:
        case MessagePosted() | MessageEdited() | MessageDeleted():
            conv = world.conversations[change.channel]
            if bot not in conv.members or not _allowed(
                    app, installation, _MESSAGE_EVENT[conv.kind], HISTORY_SCOPES[conv.kind]):
                return None
            return _message_change(world, change, conv), conv.id
        case ReactionChanged():
            conv = world.conversations[change.channel]
            name = "reaction_added" if change.added else "reaction_removed"
            if bot not in conv.members or not _allowed(app, installation, name, _SCOPE[name]):
                return None
            return {"type": name, "user": change.user,
                    "item": {"type": "message", "channel": conv.id, "ts": change.ts},
                    "reaction": change.reaction, "item_user": change.item_user,
                    "event_ts": change.event_ts}, conv.id
        case MemberJoined() | MemberLeft():
            conv = world.conversations[change.channel]
            name = "member_joined_channel" if isinstance(change, MemberJoined) \
                else "member_left_channel"
            sees = bot in conv.members or bot == change.user
            if not sees or not _allowed(app, installation, name, _MEMBER_SCOPE[conv.kind]):
                return None
            event: dict[str, Any] = {"type": name, "user": change.user, "channel": conv.id,
                                     "channel_type": _member_channel_type(conv),
                                     "team": change.team_id, "event_ts": change.event_ts}
            if isinstance(change, MemberJoined) and change.inviter:
                event["inviter"] = change.inviter
            return event, conv.id
        case UserChanged():
            if not _allowed(app, installation, "user_change", _SCOPE["user_change"]):
                return None
            user = world.users[change.user]
            return {"type": "user_change",
                    "user": user_json(world, user, email="users:read.email"
                                      in installation.scopes),
                    "cache_ts": int(float(change.event_ts)),
                    "event_ts": change.event_ts}, ""
        case AppHomeOpened():
            if app.id != change.app_id or not _allowed(app, installation, "app_home_opened",
                                                       None):
                return None
            return {"type": "app_home_opened", "user": change.user, "channel": change.channel,
                    "tab": change.tab, "event_ts": change.event_ts}, change.channel
        case FileShared():
            conv = world.conversations[change.channel]
            if bot not in conv.members or not _allowed(app, installation, "file_shared",
                                                       _SCOPE["file_shared"]):
                return None
            return {"type": "file_shared", "channel_id": conv.id, "file_id": change.file_id,
                    "user_id": change.user, "file": {"id": change.file_id},
                    "event_ts": change.event_ts}, conv.id
        case TokensRevoked():
            if app.id != change.app_id or not _allowed(app, installation, "tokens_revoked",
                                                       None):
                return None
            return {"type": "tokens_revoked",
                    "tokens": {"oauth": list(change.users), "bot": list(change.bots)},
                    "event_ts": change.event_ts}, ""
    return None


def _message_change(world: World, change: MessagePosted | MessageEdited | MessageDeleted,
                    conv: Conversation) -> dict[str, Any]:
    if isinstance(change, MessagePosted):
        return message_event(world, world.messages[conv.id][change.ts], conv)
    if isinstance(change, MessageEdited):
        current = world.messages[conv.id][change.ts]
        return {"type": "message", "subtype": "message_changed", "channel": conv.id,
                "hidden": True, "message": nested_message(world, current),
                "previous_message": nested_message(world, change.previous),
                "event_ts": change.event_ts, "ts": change.event_ts,
                "channel_type": channel_type(conv)}
    return {"type": "message", "subtype": "message_deleted", "channel": conv.id,
            "hidden": True, "deleted_ts": change.previous.ts,
            "previous_message": nested_message(world, change.previous),
            "event_ts": change.event_ts, "ts": change.event_ts,
            "channel_type": channel_type(conv)}
