"""chat.* and reactions.*: posting, editing, deleting, ephemeral messages, reactions."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import msgspec

from ._call import Args, Call
from ._render import message_json
from ._state import (
    Conversation,
    Edited,
    Ephemeral,
    Message,
    MessageDeleted,
    MessageEdited,
    MessagePosted,
    Reaction,
    ReactionChanged,
    SlackError,
    valid_ts,
)

MAX_TEXT = 40_000
MAX_BLOCKS = 50
MAX_ATTACHMENTS = 100
#: bytes of compact JSON; Slack answers metadata_too_large past a limit it does not
#: publish, so this one is the sandbox's
MAX_METADATA_BYTES = 8 * 1024

KNOWN_BLOCKS = frozenset({
    "actions", "context", "divider", "file", "header", "image", "input", "markdown",
    "rich_text", "section", "video", "call", "table", "context_actions"})
_EMOJI_NAME = re.compile(r"^[a-z0-9_+'\-]{1,100}(::skin-tone-[2-6])?$")


def blocks_arg(args: Args) -> list[Any] | None:
    """The ``blocks`` argument, checked as Slack checks it; each block gets a block_id."""
    value = args.decoded("blocks", error="invalid_blocks_format")
    if value is None:
        return None
    if not isinstance(value, list):
        raise SlackError("invalid_blocks_format")
    if len(value) > MAX_BLOCKS:
        raise _block_error(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    blocks: list[Any] = []
    for i, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else block
        if not isinstance(block, dict) or kind not in KNOWN_BLOCKS:
            raise _block_error(f"unsupported type: {kind!r} [json-pointer:/blocks/{i}/type]")
        copy = dict(block)
        if not isinstance(copy.get("block_id", ""), str):
            raise SlackError("invalid_blocks")
        copy.setdefault("block_id", hashlib.sha1(
            json.dumps(block, sort_keys=True).encode() + str(i).encode()).hexdigest()[:5])
        blocks.append(copy)
    return blocks


def _block_error(message: str) -> SlackError:
    return SlackError("invalid_blocks", response_metadata={"messages": [f"[ERROR] {message}"]})


def _attachments(args: Args) -> list[Any] | None:
    value = args.decoded("attachments", error="invalid_attachments")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise SlackError("invalid_attachments")
    if len(value) > MAX_ATTACHMENTS:
        raise SlackError("too_many_attachments")
    return [{**a, "id": i + 1} for i, a in enumerate(value)]


def metadata_arg(c: Call) -> dict[str, Any] | None:
    """The ``metadata`` argument, checked as Slack checks it: None when absent, ``{}`` for
    an empty object (chat.update: remove it), else ``{"event_type", "event_payload"}``.

    A JSON object (or, in a form, its JSON text) is required (``invalid_metadata_format``),
    posted by an app's token (``metadata_must_be_sent_from_app``), with a non-empty
    string ``event_type`` and an object ``event_payload`` and nothing else
    (``invalid_metadata_schema``), at most :data:`MAX_METADATA_BYTES` as JSON
    (``metadata_too_large``).
    """
    value = c.args.decoded("metadata", error="invalid_metadata_format")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SlackError("invalid_metadata_format")
    if not c.token.app_id:
        raise SlackError("metadata_must_be_sent_from_app")
    if not value:
        return {}
    event_type = value.get("event_type")
    payload = value.get("event_payload")
    if set(value) != {"event_type", "event_payload"} or not isinstance(event_type, str) \
            or not event_type.strip() or not isinstance(payload, dict):
        raise SlackError("invalid_metadata_schema")
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) \
            > MAX_METADATA_BYTES:
        raise SlackError("metadata_too_large")
    return {"event_type": event_type, "event_payload": payload}


def message_content(c: Call, *, truncate: bool) -> tuple[str, list[Any] | None, list[Any] | None]:
    """(text, blocks, attachments); text over 40,000 characters is cut or refused."""
    text = c.args.optional("text") or ""
    markdown = c.args.optional("markdown_text")
    blocks = blocks_arg(c.args)
    attachments = _attachments(c.args)
    if markdown is not None:
        if text or blocks:
            raise SlackError("markdown_text_conflict")
        text = markdown
    if not text and not blocks and not attachments:
        raise SlackError("no_text")
    if len(text) > MAX_TEXT:
        if not truncate:
            raise SlackError("msg_too_long")
        text = text[:MAX_TEXT]
        c.warnings.append("message_truncated")
    return text, blocks, attachments


def _post_target(c: Call) -> Conversation:
    """Where chat.postMessage posts: an id, a #name, or a user id (their DM)."""
    world = c.world
    ref = c.args.text("channel", missing="channel_not_found")
    conv = world.conversations.get(ref)
    if conv is None and ref[:1] in ("U", "W") and ref in world.users:
        target = world.users[ref]
        if target.team_id == c.team and not target.deleted:
            conv, _ = world.open_dm(c.team, [c.actor, ref], c.now)
    if conv is None:
        conv = world.conversation_by_name(c.team, ref.lstrip("#"))
    if conv is None or not world.can_see(c.actor, conv):
        raise SlackError("channel_not_found")
    return conv


def may_post(c: Call, conv: Conversation) -> None:
    """Members post; bots with chat:write.public also post to public channels."""
    if conv.is_archived:
        raise SlackError("is_archived")
    if c.actor in conv.members:
        return
    if conv.kind == "public" and c.is_bot and "chat:write.public" in c.scopes:
        return
    raise SlackError("not_in_channel")


def thread_root_arg(c: Call, conv: Conversation) -> Message | None:
    """The root of the thread ``thread_ts`` names (a reply's ts leads to its root)."""
    thread_ts = c.args.optional("thread_ts")
    if thread_ts is None:
        return None
    if not valid_ts(thread_ts):
        raise SlackError("thread_not_found")
    root = c.world.thread_root(conv.id, thread_ts)
    if root.subtype == "tombstone":
        raise SlackError("cannot_reply_to_message")
    return root


def new_message(c: Call, conv: Conversation, root: Message | None, text: str,
                blocks: list[Any] | None, attachments: list[Any] | None) -> Message:
    """A message by the call's user (or bot) in ``conv``, in ``root``'s thread if any."""
    message = Message(ts=c.ts(), channel=conv.id, team=conv.team_id, user=c.actor, text=text,
                      blocks=blocks, attachments=attachments,
                      thread_ts=root.ts if root is not None else None,
                      parent_user_id=root.user if root is not None else None)
    installation = c.installation
    if c.is_bot and installation is not None:
        message.bot_id = installation.bot_id
        message.app_id = installation.app_id
    elif c.token.kind == "user":
        message.client_msg_id = str(uuid.uuid4())
    return message


def chat_post_message(c: Call) -> dict[str, Any]:
    c.need("chat:write")
    conv = _post_target(c)
    text, blocks, attachments = message_content(c, truncate=True)
    username = c.args.optional("username")
    icon_url = c.args.optional("icon_url")
    icon_emoji = c.args.optional("icon_emoji")
    customised = c.is_bot and (username or icon_url or icon_emoji)
    if customised:
        c.need("chat:write.customize")
    metadata = metadata_arg(c)
    may_post(c, conv)
    root = thread_root_arg(c, conv)
    message = new_message(c, conv, root, text, blocks, attachments)
    message.metadata = metadata or None
    if customised:
        message.subtype = "bot_message"
        message.username = username or c.world.users[c.actor].real_name
        if icon_emoji:
            message.icons = {"emoji": icon_emoji}
        elif icon_url:
            message.icons = {"image_36": icon_url, "image_48": icon_url, "image_72": icon_url}
    elif root is not None and c.args.flag("reply_broadcast"):
        message.subtype = "thread_broadcast"
    c.world.add_message(message)
    c.changes.append(MessagePosted(team_id=conv.team_id, event_ts=message.ts, channel=conv.id,
                                   ts=message.ts))
    return {"channel": conv.id, "ts": message.ts,
            "message": message_json(c.world, message, metadata=True)}


def _own_message(c: Call, message: Message) -> bool:
    if message.user != c.actor:
        return False
    return (message.bot_id is not None) == c.is_bot


def _snapshot(message: Message) -> Message:
    return msgspec.convert(msgspec.to_builtins(message), Message)


def chat_update(c: Call) -> dict[str, Any]:
    c.need("chat:write")
    conv = c.conversation()
    ts = c.args.text("ts", missing="message_not_found")
    message = c.world.message(conv.id, ts)
    if not _own_message(c, message) or message.subtype == "tombstone":
        raise SlackError("cant_update_message")
    provided = [name for name in ("text", "blocks", "attachments", "markdown_text")
                if name in c.args]
    if not provided:
        raise SlackError("no_text")
    text = c.args.optional("text")
    if text is not None and len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")
    blocks = blocks_arg(c.args)
    attachments = _attachments(c.args)
    metadata = metadata_arg(c)
    markdown = c.args.optional("markdown_text")
    previous = _snapshot(message)
    if markdown is not None:
        if text is not None or blocks is not None:
            raise SlackError("markdown_text_conflict")
        text = markdown
    if text is not None:
        message.text = text
    if blocks is not None:
        message.blocks = blocks
    if attachments is not None:
        message.attachments = attachments
    if metadata is not None:  # absent: kept; an empty object: removed
        message.metadata = metadata or None
    message.edited = Edited(user=c.actor, ts=c.ts())
    c.changes.append(MessageEdited(team_id=conv.team_id, event_ts=message.edited.ts,
                                   channel=conv.id, ts=message.ts, previous=previous))
    rendered = message_json(c.world, message, metadata=True)
    return {"channel": conv.id, "ts": message.ts, "text": message.text, "message": rendered}


def chat_delete(c: Call) -> dict[str, Any]:
    c.need("chat:write")
    conv = c.conversation()
    ts = c.args.text("ts", missing="message_not_found")
    message = c.world.message(conv.id, ts)
    admin = c.token.kind == "user" and c.world.users[c.actor].is_admin
    if message.subtype == "tombstone" or not (_own_message(c, message) or admin):
        raise SlackError("cant_delete_message")
    previous = _snapshot(message)
    c.world.remove_message(message)
    c.changes.append(MessageDeleted(team_id=conv.team_id, event_ts=c.ts(), channel=conv.id,
                                    previous=previous))
    return {"channel": conv.id, "ts": ts}


def chat_post_ephemeral(c: Call) -> dict[str, Any]:
    c.need("chat:write")
    conv = c.conversation()
    recipient = c.args.text("user", missing="user_not_in_channel")
    text, blocks, _ = message_content(c, truncate=False)
    if recipient not in conv.members:
        raise SlackError("user_not_in_channel")
    may_post(c, conv)
    ts = c.ts()
    installation = c.installation
    c.world.ephemerals.append(Ephemeral(
        channel=conv.id, user=recipient, ts=ts, text=text, blocks=blocks, author=c.actor,
        app_id=installation.app_id if c.is_bot and installation else None,
        bot_id=installation.bot_id if c.is_bot and installation else None))
    return {"message_ts": ts}



# -- reactions -------------------------------------------------------------------------------------

def _reaction_target(c: Call) -> tuple[Conversation, Message, str]:
    name = (c.args.optional("name") or "").strip(":")
    if not name or not _EMOJI_NAME.match(name):
        raise SlackError("invalid_name")
    if "channel" not in c.args or "timestamp" not in c.args:
        if "file" in c.args or "file_comment" in c.args:
            raise SlackError("not_reactable")
        raise SlackError("no_item_specified")
    conv = c.conversation()
    ts = c.args.text("timestamp")
    if not valid_ts(ts):
        raise SlackError("bad_timestamp")
    message = c.world.message(conv.id, ts)
    if message.subtype == "tombstone":
        raise SlackError("message_not_found")
    return conv, message, name


def reactions_add(c: Call) -> dict[str, Any]:
    c.need("reactions:write")
    conv, message, name = _reaction_target(c)
    if conv.is_archived:
        raise SlackError("is_archived")
    reaction = next((r for r in message.reactions if r.name == name), None)
    if reaction is not None and c.actor in reaction.users:
        raise SlackError("already_reacted")
    if reaction is None:
        if len(message.reactions) >= 50:
            raise SlackError("too_many_emoji")
        mine = sum(1 for r in message.reactions if c.actor in r.users)
        if mine >= 23:
            raise SlackError("too_many_reactions")
        reaction = Reaction(name=name)
        message.reactions.append(reaction)
    reaction.users.append(c.actor)
    c.changes.append(ReactionChanged(team_id=conv.team_id, event_ts=c.ts(), added=True,
                                     channel=conv.id, ts=message.ts, user=c.actor,
                                     reaction=name, item_user=message.user))
    return {}


def reactions_remove(c: Call) -> dict[str, Any]:
    c.need("reactions:write")
    conv, message, name = _reaction_target(c)
    reaction = next((r for r in message.reactions if r.name == name), None)
    if reaction is None or c.actor not in reaction.users:
        raise SlackError("no_reaction")
    reaction.users.remove(c.actor)
    if not reaction.users:
        message.reactions.remove(reaction)
    c.changes.append(ReactionChanged(team_id=conv.team_id, event_ts=c.ts(), added=False,
                                     channel=conv.id, ts=message.ts, user=c.actor,
                                     reaction=name, item_user=message.user))
    return {}
