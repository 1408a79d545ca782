"""conversations.*: channels, private channels, DMs and group DMs; members; history."""

from __future__ import annotations

import re
from typing import Any

from ._call import Call, paginate
from ._render import conversation_json, message_json
from ._state import (
    HISTORY_SCOPES,
    READ_SCOPES,
    Conversation,
    ConversationKind,
    MemberJoined,
    MemberLeft,
    SlackError,
    valid_ts,
)

MAX_DM_USERS = 8
MAX_TOPIC = 250
_CHANNEL_NAME_OK = re.compile(r"^[a-z0-9_\-]+$")


_WRITE_SCOPES: dict[tuple[ConversationKind, bool], tuple[str, ...]] = {
    ("public", True): ("channels:manage",), ("public", False): ("channels:write",),
    ("private", True): ("groups:write",), ("private", False): ("groups:write",),
    ("im", True): ("im:write",), ("im", False): ("im:write",),
    ("mpim", True): ("mpim:write",), ("mpim", False): ("mpim:write",),
}
_INVITE_SCOPES: dict[ConversationKind, tuple[str, ...]] = {
    "public": ("channels:manage", "channels:write", "channels:write.invites"),
    "private": ("groups:write", "groups:write.invites"),
    "im": ("im:write",), "mpim": ("mpim:write",),
}
_TOPIC_SCOPES: dict[ConversationKind, tuple[str, ...]] = {
    "public": ("channels:manage", "channels:write", "channels:write.topic"),
    "private": ("groups:write", "groups:write.topic"),
    "im": ("im:write", "im:write.topic"), "mpim": ("mpim:write", "mpim:write.topic"),
}


def conversations_open(c: Call) -> dict[str, Any]:
    world = c.world
    ref = c.args.optional("channel")
    users = c.args.names("users")
    if ref is not None:
        conv = world.conversations.get(ref)
        if conv is None or conv.kind not in ("im", "mpim") or c.actor not in conv.members:
            raise SlackError("channel_not_found")
        c.need(_WRITE_SCOPES[(conv.kind, c.is_bot)][0])
        created = False
    else:
        if not users:
            raise SlackError("users_list_not_supplied")
        if len(users) > MAX_DM_USERS:
            raise SlackError("too_many_users")
        for user_id in users:
            user = world.users.get(user_id)
            if user is None or user.team_id != c.team:
                raise SlackError("user_not_found")
            if user.deleted:
                raise SlackError("user_disabled")
        members = list(dict.fromkeys([c.actor, *users]))
        c.need("im:write" if len(members) <= 2 else "mpim:write")
        conv, created = world.open_dm(c.team, members, c.now)
    body: dict[str, Any] = {}
    if not created:
        body["no_op"] = True
        body["already_open"] = True
    if c.args.flag("return_im"):
        body["channel"] = conversation_json(world, conv, c.actor)
    else:
        body["channel"] = {"id": conv.id}
    return body


def _check_channel_name(name: str) -> str:
    if not name:
        raise SlackError("invalid_name_required")
    if len(name) > 80:
        raise SlackError("invalid_name_maxlength")
    if not _CHANNEL_NAME_OK.match(name):
        raise SlackError("invalid_name_specials")
    if not re.search(r"[a-z0-9]", name):
        raise SlackError("invalid_name_punctuation")
    return name


def conversations_create(c: Call) -> dict[str, Any]:
    private = c.args.flag("is_private")
    c.need(*_WRITE_SCOPES[("private" if private else "public", c.is_bot)])
    name = _check_channel_name((c.args.optional("name") or "").strip())
    if c.world.conversation_by_name(c.team, name) is not None:
        raise SlackError("name_taken")
    conv = c.world.create_channel(c.team, name, private, c.actor, c.now)
    c.changes.append(MemberJoined(team_id=c.team, event_ts=c.ts(), channel=conv.id,
                                  user=c.actor))
    return {"channel": conversation_json(c.world, conv, c.actor)}


def conversations_invite(c: Call) -> dict[str, Any]:
    world = c.world
    conv = c.conversation()
    users = c.args.names("users")
    if not users:
        raise SlackError("no_user")
    c.need(*_INVITE_SCOPES[conv.kind])
    if conv.kind == "im":
        raise SlackError("method_not_supported_for_channel_type")
    if conv.is_archived:
        raise SlackError("is_archived")
    if c.actor not in conv.members:
        raise SlackError("not_in_channel")
    errors: list[dict[str, Any]] = []
    valid: list[str] = []
    for user_id in dict.fromkeys(users):
        user = world.users.get(user_id)
        if user is None or user.team_id != c.team:
            code = "user_not_found"
        elif user.deleted:
            code = "user_is_inactive"
        elif user_id == c.actor:
            code = "cant_invite_self"
        elif user_id in conv.members:
            code = "already_in_channel"
        else:
            valid.append(user_id)
            continue
        errors.append({"user": user_id, "ok": False, "error": code})
    force = c.args.flag("force")
    if errors and not force:
        if len(users) > 1:
            raise SlackError(errors[0]["error"], errors=errors)
        raise SlackError(errors[0]["error"])
    for user_id in valid:
        conv.members.append(user_id)
        c.changes.append(MemberJoined(team_id=c.team, event_ts=c.ts(), channel=conv.id,
                                      user=user_id, inviter=c.actor))
    body: dict[str, Any] = {"channel": conversation_json(world, conv, c.actor)}
    if errors:
        body["errors"] = errors
    return body


def conversations_join(c: Call) -> dict[str, Any]:
    c.need("channels:join" if c.is_bot else "channels:write")
    conv = c.conversation()
    if conv.kind != "public":
        raise SlackError("method_not_supported_for_channel_type")
    if conv.is_archived:
        raise SlackError("is_archived")
    if c.actor in conv.members:
        c.warnings.append("already_in_channel")
        return {"channel": conversation_json(c.world, conv, c.actor),
                "already_in_channel": True}
    conv.members.append(c.actor)
    c.changes.append(MemberJoined(team_id=c.team, event_ts=c.ts(), channel=conv.id,
                                  user=c.actor))
    return {"channel": conversation_json(c.world, conv, c.actor)}


def conversations_leave(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    c.need(*_WRITE_SCOPES[(conv.kind, c.is_bot)])
    if conv.kind == "im":
        raise SlackError("method_not_supported_for_channel_type")
    if conv.is_general:
        raise SlackError("cant_leave_general")
    if c.actor not in conv.members:
        return {"not_in_channel": True}
    if conv.kind == "private" and len(conv.members) == 1:
        raise SlackError("last_member")
    conv.members.remove(c.actor)
    c.changes.append(MemberLeft(team_id=c.team, event_ts=c.ts(), channel=conv.id,
                                user=c.actor))
    return {}


def conversations_kick(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    c.need(*_WRITE_SCOPES[(conv.kind, c.is_bot)])
    user = c.args.text("user", missing="user_not_found")
    if conv.kind in ("im", "mpim"):
        raise SlackError("method_not_supported_for_channel_type")
    if conv.is_general:
        raise SlackError("cant_kick_from_general")
    if user == c.actor:
        raise SlackError("cant_kick_self")
    if c.actor not in conv.members:
        raise SlackError("not_in_channel")
    if user not in c.world.users:
        raise SlackError("user_not_found")
    if user not in conv.members:
        raise SlackError("not_in_channel")
    conv.members.remove(user)
    c.changes.append(MemberLeft(team_id=c.team, event_ts=c.ts(), channel=conv.id, user=user))
    return {}


def conversations_info(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    c.need_for(conv, READ_SCOPES)
    return {"channel": conversation_json(c.world, conv, c.actor,
                                         num_members=c.args.flag("include_num_members"))}


def conversations_set_topic(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    c.need(*_TOPIC_SCOPES[conv.kind])
    topic = c.args.optional("topic") or ""
    if conv.is_archived:
        raise SlackError("is_archived")
    if c.actor not in conv.members:
        raise SlackError("not_in_channel")
    if len(topic) > MAX_TOPIC:
        raise SlackError("too_long")
    conv.topic.value = topic
    conv.topic.creator = c.actor
    conv.topic.last_set = int(c.now)
    return {"channel": conversation_json(c.world, conv, c.actor)}


def _ts_bound(c: Call, name: str, error: str) -> str | None:
    value = c.args.optional(name)
    if value is None or value == "0":
        return None
    try:
        float(value)
    except ValueError:
        raise SlackError(error) from None
    return f"{float(value):.6f}" if not valid_ts(value) else value


def _in_range(ts: str, oldest: str | None, latest: str | None, inclusive: bool) -> bool:
    value = float(ts)
    if oldest is not None and (value < float(oldest) or (value == float(oldest)
                                                         and not inclusive)):
        return False
    return not (latest is not None and (value > float(latest) or (value == float(latest)
                                                                  and not inclusive)))


def _readable(c: Call, conv: Conversation) -> None:
    c.need_for(conv, HISTORY_SCOPES)
    if c.actor not in conv.members and (c.is_bot or conv.kind != "public"):
        raise SlackError("not_in_channel")


def conversations_history(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    _readable(c, conv)
    oldest = _ts_bound(c, "oldest", "invalid_ts_oldest")
    latest = _ts_bound(c, "latest", "invalid_ts_latest")
    inclusive = c.args.flag("inclusive")
    log = c.world.messages[conv.id]
    listed = [m for m in reversed(log.values())
              if (not m.is_reply or m.subtype == "thread_broadcast")
              and _in_range(m.ts, oldest, latest, inclusive)]
    page, cursor = paginate(listed, lambda m: m.ts, c, 100)
    metadata = c.args.flag("include_all_metadata")
    body: dict[str, Any] = {"messages": [message_json(c.world, m, metadata=metadata)
                                         for m in page],
                            "has_more": bool(cursor), "pin_count": 0,
                            "channel_actions_ts": None, "channel_actions_count": 0,
                            "response_metadata": {"next_cursor": cursor}}
    if latest is not None:
        body["latest"] = latest
    return body


def conversations_replies(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    _readable(c, conv)
    ts = c.args.text("ts", missing="thread_not_found")
    if not valid_ts(ts):
        raise SlackError("thread_not_found")
    root = c.world.thread_root(conv.id, ts)
    oldest = _ts_bound(c, "oldest", "invalid_ts_oldest")
    latest = _ts_bound(c, "latest", "invalid_ts_latest")
    inclusive = c.args.flag("inclusive", default=True)
    log = c.world.messages[conv.id]
    replies = [log[r] for r in root.replies if r in log
               and _in_range(r, oldest, latest, inclusive)]
    page, cursor = paginate(replies, lambda m: m.ts, c, 1000)
    metadata = c.args.flag("include_all_metadata")
    messages = [message_json(c.world, m, metadata=metadata) for m in (root, *page)]
    return {"messages": messages, "has_more": bool(cursor),
            "response_metadata": {"next_cursor": cursor}}


def conversations_members(c: Call) -> dict[str, Any]:
    conv = c.conversation()
    c.need_for(conv, READ_SCOPES)
    page, cursor = paginate(list(conv.members), lambda m: str(m), c, 100)
    return {"members": page, "response_metadata": {"next_cursor": cursor}}


_TYPES: dict[str, ConversationKind] = {"public_channel": "public", "private_channel": "private",
                                       "im": "im", "mpim": "mpim"}


def conversations_list(c: Call) -> dict[str, Any]:
    names = c.args.names("types") or ["public_channel"]
    kinds: list[ConversationKind] = []
    for name in names:
        if name not in _TYPES:
            raise SlackError("invalid_types")
        kinds.append(_TYPES[name])
    for kind in kinds:
        c.need(READ_SCOPES[kind])
    exclude_archived = c.args.flag("exclude_archived")
    listed = [conv for conv in c.world.conversations_of(c.team)
              if conv.kind in kinds and c.world.can_see(c.actor, conv)
              and not (exclude_archived and conv.is_archived)]
    page, cursor = paginate(listed, lambda conv: conv.id, c, 100)
    return {"channels": [conversation_json(c.world, conv, c.actor) for conv in page],
            "response_metadata": {"next_cursor": cursor}}
