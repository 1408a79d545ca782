"""Slack's JSON objects (user, conversation, message, file) from the sandbox's records.

Pure functions over a :class:`~._state.World`. API answers and event payloads
share these shapes; where events carry fewer fields, ``_events`` picks them.
"""

from __future__ import annotations

import hashlib
import mimetypes
from typing import Any
from urllib.parse import quote

from ._state import CHANNEL_TYPES, Conversation, File, Message, User, World

AVATAR_SIZES = (24, 32, 48, 72, 192, 512, 1024)

#: file type by extension: (filetype, pretty_type)
_FILETYPES: dict[str, tuple[str, str]] = {
    "txt": ("text", "Plain Text"), "md": ("markdown", "Markdown (raw)"),
    "png": ("png", "PNG"), "jpg": ("jpg", "JPEG"), "jpeg": ("jpg", "JPEG"),
    "gif": ("gif", "GIF"), "pdf": ("pdf", "PDF"), "json": ("json", "JSON"),
    "csv": ("csv", "CSV"), "zip": ("zip", "Zip"), "py": ("python", "Python"),
    "html": ("html", "HTML"), "mp4": ("mp4", "MPEG 4 Video"), "mp3": ("mp3", "MP3"),
    "webp": ("webp", "WebP"), "svg": ("svg", "SVG"), "docx": ("docx", "Word Document"),
}


def file_kind(name: str) -> tuple[str, str, str]:
    """(mimetype, filetype, pretty_type) for a file name, as Slack derives them."""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    filetype, pretty = _FILETYPES.get(extension, ("binary", "Binary"))
    mimetype = mimetypes.guess_type(name)[0] or ("text/plain" if filetype == "text"
                                                 else "application/octet-stream")
    return mimetype, filetype, pretty


def _hash(text: str, length: int = 12) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def avatar_urls(world: World, user: User) -> dict[str, str]:
    if user.avatar_url:
        urls = {f"image_{size}": user.avatar_url for size in AVATAR_SIZES}
        urls["image_original"] = user.avatar_url
        return urls
    base = f"{world.base_url}/avatars/{user.id}"
    return {f"image_{size}": f"{base}-{size}.png" for size in AVATAR_SIZES}


def profile_json(world: World, user: User, *, email: bool) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "title": user.title, "phone": user.phone, "skype": "",
        "real_name": user.real_name, "real_name_normalized": user.real_name,
        "display_name": user.display_name, "display_name_normalized": user.display_name,
        "status_text": user.status_text, "status_emoji": user.status_emoji,
        "status_expiration": 0,
        "avatar_hash": _hash(user.avatar_url or user.id),
        "first_name": user.first_name, "last_name": user.last_name,
        **avatar_urls(world, user),
        "is_custom_image": bool(user.avatar_url),
        "team": user.team_id,
    }
    if email and user.email:
        profile["email"] = user.email
    if user.is_bot:
        profile["bot_id"] = user.bot_id
        profile["api_app_id"] = user.app_id
        profile["always_active"] = True
    return profile


def user_json(world: World, user: User, *, email: bool) -> dict[str, Any]:
    return {
        "id": user.id, "team_id": user.team_id, "name": user.name, "deleted": user.deleted,
        "color": _hash(user.id, 6), "real_name": user.real_name, "tz": user.tz,
        "tz_label": user.tz_label, "tz_offset": user.tz_offset,
        "profile": profile_json(world, user, email=email),
        "is_admin": user.is_admin, "is_owner": False, "is_primary_owner": False,
        "is_restricted": False, "is_ultra_restricted": False, "is_bot": user.is_bot,
        "is_app_user": False, "updated": user.updated,
        "is_email_confirmed": bool(user.email) and not user.is_bot,
    }


def bot_profile_json(world: World, user: User) -> dict[str, Any]:
    urls = avatar_urls(world, user)
    return {"id": user.bot_id, "deleted": False, "name": user.real_name, "updated": user.updated,
            "app_id": user.app_id,
            "icons": {"image_36": urls["image_48"], "image_48": urls["image_48"],
                      "image_72": urls["image_72"]},
            "team_id": user.team_id}


def conversation_json(world: World, conv: Conversation, viewer: str, *,
                      num_members: bool = False) -> dict[str, Any]:
    if conv.kind == "im":
        other = next((m for m in conv.members if m != viewer), viewer)
        data: dict[str, Any] = {
            "id": conv.id, "created": conv.created, "is_im": True, "is_org_shared": False,
            "user": other, "is_user_deleted": world.users[other].deleted,
            "priority": 0, "is_open": True, "last_read": "0000000000.000000",
            "context_team_id": conv.team_id}
    else:
        data = {
            "id": conv.id, "name": conv.name,
            "is_channel": conv.kind == "public" or (conv.kind == "private"
                                                    and not conv.legacy_group),
            "is_group": conv.legacy_group, "is_im": False, "is_mpim": conv.kind == "mpim",
            "is_private": conv.kind != "public", "created": conv.created,
            "is_archived": conv.is_archived, "is_general": conv.is_general, "unlinked": 0,
            "name_normalized": conv.name, "is_shared": False, "is_org_shared": False,
            "is_ext_shared": False, "is_pending_ext_shared": False, "pending_shared": [],
            "context_team_id": conv.team_id, "updated": conv.created * 1000,
            "parent_conversation": None, "creator": conv.creator,
            "shared_team_ids": [conv.team_id], "pending_connected_team_ids": [],
            "is_member": viewer in conv.members,
            "topic": {"value": conv.topic.value, "creator": conv.topic.creator,
                      "last_set": conv.topic.last_set},
            "purpose": {"value": conv.purpose.value, "creator": conv.purpose.creator,
                        "last_set": conv.purpose.last_set},
            "previous_names": []}
    if num_members:
        data["num_members"] = len(conv.members)
    return data


def file_url(world: World, file: File, *, download: bool = False) -> str:
    name = quote(file.name)
    middle = "/download" if download else ""
    return f"{world.base_url}/files-pri/{file.team_id}-{file.id}{middle}/{name}"


def file_json(world: World, file: File, *, for_event: bool = False) -> dict[str, Any]:
    domain = world.workspaces[file.team_id].domain
    data: dict[str, Any] = {
        "id": file.id, "created": file.created, "timestamp": file.created, "name": file.name,
        "title": file.title, "mimetype": file.mimetype, "filetype": file.filetype,
        "pretty_type": file.pretty_type, "user": file.user, "user_team": file.team_id,
        "editable": False, "size": file.size, "mode": "hosted", "is_external": False,
        "external_type": "", "is_public": any(world.conversations[s.channel].kind == "public"
                                               for s in file.shares),
        "public_url_shared": False, "display_as_bot": False, "username": "",
        "url_private": file_url(world, file),
        "url_private_download": file_url(world, file, download=True),
        "permalink": f"https://{domain}.slack.com/files/{file.user}/{file.id}/"
                     f"{quote(file.name)}",
        "permalink_public": f"https://slack-files.com/{file.team_id}-{file.id}-"
                            f"{_hash(file.id, 10)}",
        "has_rich_preview": False, "file_access": "visible",
    }
    if file.alt_txt:
        data["alt_txt"] = file.alt_txt
    if file.bot_id:
        data["bot_id"] = file.bot_id
    shares: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for share in file.shares:
        conv = world.conversations[share.channel]
        group = "public" if conv.kind == "public" else "private"
        entry: dict[str, Any] = {"reply_users": [], "reply_users_count": 0, "reply_count": 0,
                                 "ts": share.ts, "team_id": file.team_id}
        if conv.is_channel_like:
            entry["channel_name"] = conv.name
        shares.setdefault(group, {}).setdefault(share.channel, []).append(entry)
    data["shares"] = shares
    if not for_event:
        kinds = {s.channel: world.conversations[s.channel].kind for s in file.shares}
        data["channels"] = sorted(c for c, k in kinds.items() if k == "public")
        data["groups"] = sorted(c for c, k in kinds.items() if k in ("private", "mpim"))
        data["ims"] = sorted(c for c, k in kinds.items() if k == "im")
        data["comments_count"] = 0
    return data


def message_json(world: World, message: Message, *, with_channel: bool = False,
                 for_event: bool = False, metadata: bool = False) -> dict[str, Any]:
    """A message as the Web API shows it (history, replies, chat.* answers).

    ``metadata``: with the message's metadata, if it has any (history and replies
    with ``include_all_metadata``, the poster's own chat.* answers); events never
    carry it.
    """
    data: dict[str, Any] = {"type": "message"}
    if message.subtype is not None:
        data["subtype"] = message.subtype
    if message.subtype != "bot_message":
        data["user"] = message.user
    data["text"] = message.text
    data["ts"] = message.ts
    if with_channel:
        data["channel"] = message.channel
    if message.subtype != "bot_message":
        data["team"] = message.team
    if message.client_msg_id is not None:
        data["client_msg_id"] = message.client_msg_id
    if message.bot_id is not None:
        data["bot_id"] = message.bot_id
        data["app_id"] = message.app_id
        bot = world.users.get(message.user)
        if bot is not None and message.subtype != "bot_message":
            data["bot_profile"] = bot_profile_json(world, bot)
    if message.username is not None:
        data["username"] = message.username
    if message.icons is not None:
        data["icons"] = dict(message.icons)
    if message.blocks is not None:
        data["blocks"] = message.blocks
    if message.attachments is not None:
        data["attachments"] = message.attachments
    if message.files:
        data["files"] = [file_json(world, world.files[f], for_event=for_event)
                         for f in message.files if f in world.files]
        data["upload"] = message.subtype == "file_share"
        data["display_as_bot"] = False
    if message.edited is not None:
        data["edited"] = {"user": message.edited.user, "ts": message.edited.ts}
    if message.thread_ts is not None:
        data["thread_ts"] = message.thread_ts
        if message.is_reply:
            data["parent_user_id"] = message.parent_user_id
        else:
            users = world.reply_users(message)
            data["reply_count"] = len(message.replies)
            data["reply_users_count"] = len(users)
            data["reply_users"] = users
            data["latest_reply"] = message.replies[-1] if message.replies else message.ts
            data["is_locked"] = False
            data["subscribed"] = False
    if message.reactions:
        data["reactions"] = [{"name": r.name, "users": list(r.users), "count": len(r.users)}
                             for r in message.reactions]
    if metadata and message.metadata:
        data["metadata"] = {"event_type": message.metadata["event_type"],
                            "event_payload": dict(message.metadata["event_payload"])}
    return data


def channel_type(conv: Conversation) -> str:
    """``channel_type`` of message events: channel, group, im or mpim."""
    return CHANNEL_TYPES[conv.kind]
