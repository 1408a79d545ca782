"""files.*: the two-step upload (URL, bytes, complete), sharing, and who may see a file."""

from __future__ import annotations

import secrets
from typing import Any

from ._call import Call, invalid_arguments
from ._chat import MAX_TEXT, blocks_arg, new_message, thread_root_arg
from ._render import file_json, file_kind
from ._state import Conversation, File, FileShare, FileShared, MessagePosted, SlackError, World

SNIPPET_TYPES = frozenset({
    "text", "python", "javascript", "json", "markdown", "shell", "sql", "java", "go", "rust",
    "c", "cpp", "csharp", "html", "css", "xml", "yaml", "ruby", "php", "typescript", "diff",
    "kotlin", "swift", "scala"})


def files_get_upload_url_external(c: Call) -> dict[str, Any]:
    c.need("files:write")
    filename = c.args.text("filename")
    if "length" not in c.args:
        raise invalid_arguments("missing required field: length")
    length = c.args.integer("length", 0)
    if length <= 0:
        raise SlackError("missing_argument")
    if length > c.world.max_upload_bytes:
        raise SlackError("file_upload_size_restricted")
    alt_txt = c.args.optional("alt_txt") or c.args.optional("alt_text") or ""
    if len(alt_txt) > 1000:
        raise SlackError("alt_txt_too_large")
    snippet_type = c.args.optional("snippet_type") or ""
    if snippet_type and snippet_type not in SNIPPET_TYPES:
        raise SlackError("unknown_snippet_type")
    mimetype, filetype, pretty = file_kind(filename)
    installation = c.installation
    file = File(id=c.world.next_id("F"), team_id=c.team, user=c.actor, name=filename,
                title=filename, mimetype=mimetype, filetype=snippet_type or filetype,
                pretty_type=pretty, declared_size=length, created=int(c.now), alt_txt=alt_txt,
                snippet_type=snippet_type,
                bot_id=installation.bot_id if c.is_bot and installation else None)
    c.world.files[file.id] = file
    ticket = secrets.token_urlsafe(24)
    c.world.upload_tickets[ticket] = file.id
    return {"upload_url": f"{c.world.base_url}/upload/v1/{ticket}", "file_id": file.id}


def files_complete_upload_external(c: Call) -> dict[str, Any]:
    c.need("files:write")
    world = c.world
    entries = c.args.decoded("files", error="invalid_arguments")
    if entries is None:
        raise invalid_arguments("missing required field: files")
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries):
        raise invalid_arguments("files must be a JSON list of {\"id\": ..., \"title\": ...}")
    files: list[File] = []
    for entry in entries:
        file = world.files.get(entry["id"])
        if file is None or file.team_id != c.team or file.content is None or file.completed:
            raise SlackError("file_not_found")
        if file.user != c.actor:
            raise SlackError("access_denied")
        files.append(file)
    refs = c.args.names("channels") or ([c.args.text("channel_id")]
                                        if "channel_id" in c.args else [])
    if len(refs) > 100:
        raise SlackError("channels_limit_exceeded")
    targets: list[Conversation] = []
    for ref in refs:
        conv = world.conversations.get(ref)
        if conv is None or not world.can_see(c.actor, conv):
            raise SlackError("channel_not_found")
        if c.actor not in conv.members:
            raise SlackError("not_in_channel")
        if conv.is_archived:
            raise SlackError("posting_to_channel_denied")
        targets.append(conv)
    comment = c.args.optional("initial_comment") or ""
    if len(comment) > MAX_TEXT:
        raise SlackError("msg_too_long")
    blocks = blocks_arg(c.args)
    roots = [thread_root_arg(c, conv) for conv in targets] if "thread_ts" in c.args else \
        [None] * len(targets)
    for file, entry in zip(files, entries, strict=True):
        title = entry.get("title")
        if isinstance(title, str) and title:
            file.title = title
        file.completed = True
    for conv, root in zip(targets, roots, strict=True):
        message = new_message(c, conv, root, comment, blocks, None)
        message.subtype = "file_share"
        message.files = [f.id for f in files]
        world.add_message(message)
        for file in files:
            file.shares.append(FileShare(channel=conv.id, ts=message.ts))
        c.changes.append(MessagePosted(team_id=c.team, event_ts=message.ts, channel=conv.id,
                                       ts=message.ts))
        for file in files:
            c.changes.append(FileShared(team_id=c.team, event_ts=message.ts, file_id=file.id,
                                        channel=conv.id, user=c.actor))
    return {"files": [file_json(world, f) for f in files]}


def can_see_file(world: World, user_id: str, file: File) -> bool:
    if file.user == user_id:
        return True
    return any(world.can_see(user_id, world.conversations[s.channel]) for s in file.shares)


def files_info(c: Call) -> dict[str, Any]:
    c.need("files:read")
    file = c.world.files.get(c.args.text("file", missing="file_not_found"))
    if file is None or file.team_id != c.team or not file.completed:
        raise SlackError("file_not_found")
    if not can_see_file(c.world, c.actor, file):
        raise SlackError("file_not_found")
    return {"file": file_json(c.world, file), "comments": [],
            "response_metadata": {"next_cursor": ""}}
