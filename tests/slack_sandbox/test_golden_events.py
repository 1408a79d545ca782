"""Golden shapes: every event the sandbox builds, against Slack's own sample payloads.

For each event kind: the keys at every level are keys Slack's payload has
(``golden/*.json``), values have the same JSON types, and the fields Slack
always sends are there. Pure: the events are built from state changes without
sockets; the wire tests check they travel unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.sandbox import RateLimiter, RateLimitSettings, World
from adapters.slack.sandbox._commands import open_app_home
from adapters.slack.sandbox._events import events_for
from adapters.slack.sandbox._methods import call_method

from ._kit import APP, BOT, GENERAL, JOHN, MARY, SECRET, make_seed

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_767_225_600.0

ENVELOPE = {"token", "team_id", "api_app_id", "event", "type", "event_id", "event_time",
            "authorizations", "is_ext_shared_channel", "event_context"}
#: slack.md: every event carries ``event_ts``, though some samples leave it out
ALWAYS_ALLOWED = {"event": {"event_ts"}}
#: free-form values: copied from what the poster sent, not shaped by Slack
FREE_FORM = {"blocks", "attachments", "shares"}


def scenario() -> list[dict[str, Any]]:
    """People (and the bot) do everything that makes an event; the app's envelopes."""
    world = World(make_seed(), now=NOW)
    limiter = RateLimiter(RateLimitSettings(enabled=False), lambda: NOW)
    envelopes: list[dict[str, Any]] = []

    def act(method: str, token: str, **args: Any) -> dict[str, Any]:
        outcome = call_method(world, limiter, method, token, args, NOW)
        assert outcome.body["ok"], (method, outcome.body)
        for change in outcome.changes:
            envelopes.extend(d.envelope for d in events_for(world, change, now=NOW)
                             if d.app_id == APP)
        return outcome.body

    root = act("chat.postMessage", "xoxp-john", channel=GENERAL, text="hello")["ts"]
    act("chat.postMessage", "xoxp-mary", channel=GENERAL, text="a reply", thread_ts=root)
    act("chat.postMessage", "xoxp-peter", channel=GENERAL, text="for all", thread_ts=root,
        reply_broadcast=True)
    act("chat.postMessage", "xoxb-interlink", channel=GENERAL, text="from the bot")
    act("chat.postMessage", "xoxb-interlink", channel=GENERAL, text="as peter",
        username="Peter (widget.com)", icon_url="https://avatars.example/p.png")
    act("chat.update", "xoxp-john", channel=GENERAL, ts=root, text="hello, edited")
    doomed = act("chat.postMessage", "xoxp-john", channel=GENERAL, text="oops")["ts"]
    act("chat.delete", "xoxp-john", channel=GENERAL, ts=doomed)
    act("reactions.add", "xoxp-mary", channel=GENERAL, timestamp=root, name="tada")
    act("reactions.remove", "xoxp-mary", channel=GENERAL, timestamp=root, name="tada")
    act("conversations.invite", "xoxp-john", channel=SECRET, users=MARY)
    act("conversations.kick", "xoxp-john", channel=SECRET, user=MARY)
    room = act("conversations.create", "xoxb-interlink", name="ext-room")["channel"]["id"]
    act("conversations.join", "xoxp-mary", channel=room)
    act("users.setPresence", "xoxp-mary", presence="away")  # Slack sends no event for this
    upload = act("files.getUploadURLExternal", "xoxp-john", filename="notes.txt", length=5)
    world.files[upload["file_id"]].content = b"notes"
    act("files.completeUploadExternal", "xoxp-john", channel_id=GENERAL,
        files=json.dumps([{"id": upload["file_id"], "title": "Notes"}]),
        initial_comment="see notes")
    act("users.profile.set", "xoxp-mary", profile=json.dumps({"title": "CTO"}))
    john = world.authenticate("xoxp-john", NOW)
    _, changes = open_app_home(world, john, APP, "home", NOW)
    for change in changes:
        envelopes.extend(d.envelope for d in events_for(world, change, now=NOW))
    act("auth.revoke", "xoxb-interlink")
    return envelopes


def _subtype(name: str | None) -> Callable[[Mapping[str, Any]], bool]:
    return lambda e: e["type"] == "message" and e.get("subtype") == name


CASES: list[tuple[str, str, Callable[[Mapping[str, Any]], bool], dict[str, set[str]]]] = [
    ("message", "MessagePayload.json",
     lambda e: _subtype(None)(e) and "thread_ts" not in e and "bot_id" not in e,
     {"event": {"type", "channel", "user", "text", "ts", "event_ts", "channel_type", "team",
                "client_msg_id"}}),
    ("thread reply", "MessagePayload.json",
     lambda e: _subtype(None)(e) and "thread_ts" in e,
     {"event": {"type", "channel", "user", "text", "ts", "event_ts", "channel_type", "team",
                "thread_ts", "parent_user_id"}}),
    ("bot post", "MessagePayload.json", lambda e: _subtype(None)(e) and "bot_id" in e,
     {"event": {"type", "channel", "user", "text", "ts", "bot_id", "bot_profile", "team",
                "event_ts", "channel_type"},
      "event.bot_profile": {"id", "deleted", "name", "updated", "app_id", "icons", "team_id"}}),
    ("bot_message", "MessageBotPayload.json", _subtype("bot_message"),
     {"event": {"type", "subtype", "bot_id", "username", "icons", "text", "ts", "channel",
                "event_ts", "channel_type"}}),
    ("thread_broadcast", "MessageThreadBroadcastPayload.json", _subtype("thread_broadcast"),
     {"event": {"type", "subtype", "channel", "user", "root", "text", "ts", "thread_ts",
                "event_ts", "channel_type"},
      "event.root": {"type", "user", "text", "ts", "thread_ts", "reply_count"}}),
    ("message_changed", "MessageChangedPayload.json", _subtype("message_changed"),
     {"event": {"type", "subtype", "channel", "hidden", "message", "previous_message",
                "event_ts", "ts", "channel_type"},
      "event.message": {"type", "user", "text", "ts", "edited"},
      "event.message.edited": {"user", "ts"},
      "event.previous_message": {"type", "user", "text", "ts"}}),
    ("message_deleted", "MessageDeletedPayload.json", _subtype("message_deleted"),
     {"event": {"type", "subtype", "channel", "hidden", "deleted_ts", "previous_message",
                "event_ts", "ts", "channel_type"},
      "event.previous_message": {"type", "user", "text", "ts"}}),
    ("file_share", "MessageFileSharePayload.json", _subtype("file_share"),
     {"event": {"type", "subtype", "text", "files", "upload", "user", "ts", "channel",
                "event_ts", "channel_type"},
      "event.files[0]": {"id", "name", "title", "mimetype", "filetype", "size", "user",
                         "url_private", "url_private_download", "permalink"}}),
    ("reaction_added", "ReactionAddedPayload.json", lambda e: e["type"] == "reaction_added",
     {"event": {"type", "user", "item", "reaction", "item_user", "event_ts"},
      "event.item": {"type", "channel", "ts"}}),
    ("reaction_removed", "ReactionRemovedPayload.json",
     lambda e: e["type"] == "reaction_removed",
     {"event": {"type", "user", "item", "reaction", "item_user", "event_ts"},
      "event.item": {"type", "channel", "ts"}}),
    ("member_joined_channel", "MemberJoinedChannelPayload.json",
     lambda e: e["type"] == "member_joined_channel",
     {"event": {"type", "user", "channel", "channel_type", "team", "event_ts", "inviter"}}),
    ("member_left_channel", "MemberLeftChannelPayload.json",
     lambda e: e["type"] == "member_left_channel",
     {"event": {"type", "user", "channel", "channel_type", "team", "event_ts"}}),
    ("user_change", "UserChangePayload.json", lambda e: e["type"] == "user_change",
     {"event": {"type", "user", "cache_ts"},
      "event.user": {"id", "team_id", "name", "deleted", "real_name", "tz", "profile",
                     "is_bot", "is_admin", "updated"},
      "event.user.profile": {"real_name", "display_name", "title", "email", "image_48",
                             "image_72", "status_text", "status_emoji"}}),
    ("app_home_opened", "AppHomeOpenedPayload.json", lambda e: e["type"] == "app_home_opened",
     {"event": {"type", "user", "channel", "tab", "event_ts"}}),
    ("file_shared", "file_shared.spec.json", lambda e: e["type"] == "file_shared",
     {"event": {"type", "channel_id", "file_id", "user_id", "file", "event_ts"},
      "event.file": {"id"}}),
    ("tokens_revoked", "TokensRevokedPayload.json", lambda e: e["type"] == "tokens_revoked",
     {"event": {"type", "tokens"}, "event.tokens": {"oauth", "bot"}}),
]


@pytest.fixture(scope="module")
def envelopes() -> list[dict[str, Any]]:
    return scenario()


def _golden(name: str) -> dict[str, Any]:
    """A sample envelope; for an event spec (``*.spec.json``), its example in an envelope."""
    data: dict[str, Any] = json.loads((GOLDEN / name).read_text())
    if name.endswith(".spec.json"):
        envelope: dict[str, Any] = json.loads((GOLDEN / "MessagePayload.json").read_text())
        envelope["event"] = data["example"]
        return envelope
    return data


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        name, _, index = part.partition("[")
        data = data[name]
        if index:
            data = data[int(index.rstrip("]"))]
    return data


def _same_json_type(value: Any, golden: Any) -> bool:
    kinds = (bool, int, str, list, dict)
    return next(k for k in kinds if isinstance(golden, k)) is next(
        (k for k in kinds if isinstance(value, k)), type(None))


def _check_shape(value: Mapping[str, Any], golden: Mapping[str, Any], path: str) -> None:
    if not golden:  # the sample leaves this object open
        return
    extra = ALWAYS_ALLOWED.get(path, set())
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        assert key in golden or key in extra, f"{where} is not in Slack's payload"
        sample = golden.get(key)
        if key in FREE_FORM or item is None or sample is None:
            continue
        assert _same_json_type(item, sample), f"{where}: {item!r} vs {sample!r}"
        if isinstance(item, dict):
            _check_shape(item, sample, where)
        elif isinstance(item, list) and item and sample and isinstance(sample[0], dict):
            for element in item:
                _check_shape(element, sample[0], f"{where}[]")


@pytest.mark.parametrize(("name", "golden_file", "which", "required"), CASES,
                         ids=[c[0] for c in CASES])
def test_event_matches_slacks_payload(envelopes: list[dict[str, Any]], name: str,
                                      golden_file: str,
                                      which: Callable[[Mapping[str, Any]], bool],
                                      required: dict[str, set[str]]) -> None:
    golden = _golden(golden_file)
    matching = [e for e in envelopes if which(e["event"])]
    assert matching, f"the scenario produced no {name} event"
    envelope = matching[0]
    assert set(envelope) == ENVELOPE
    assert envelope["type"] == "event_callback" and envelope["api_app_id"] == APP
    assert isinstance(envelope["event_time"], int)
    assert envelope["authorizations"] == [{
        "enterprise_id": None, "team_id": "T0ACME", "user_id": "U0BOT", "is_bot": True,
        "is_enterprise_install": False}]
    _check_shape(envelope, golden, "")
    for path, keys in required.items():
        present = set(_at(envelope, path))
        assert keys <= present, f"{path} lacks {sorted(keys - present)}"


def test_every_event_has_a_unique_id_and_nothing_else_was_sent(
        envelopes: list[dict[str, Any]]) -> None:
    ids = [e["event_id"] for e in envelopes]
    assert len(set(ids)) == len(ids)
    uncovered = [e["event"] for e in envelopes
                 if not any(which(e["event"]) for _, _, which, _ in CASES)]
    assert uncovered == []
    kinds = [e["event"]["type"] + ("." + e["event"]["subtype"] if "subtype" in e["event"]
                                   else "") for e in envelopes]
    assert kinds == [
        "message", "message", "message.thread_broadcast", "message", "message.bot_message",
        "message.message_changed", "message", "message.message_deleted", "reaction_added",
        "reaction_removed", "member_joined_channel", "member_left_channel",
        "member_joined_channel", "member_joined_channel", "message.file_share", "file_shared",
        "user_change", "app_home_opened", "tokens_revoked"]
    joins = [e["event"] for e in envelopes if e["event"]["type"] == "member_joined_channel"]
    assert [(j["user"], j.get("inviter")) for j in joins] == [
        (MARY, JOHN), (BOT, None), (MARY, None)]
    assert joins[0]["channel"] == SECRET and joins[0]["channel_type"] == "G"
    assert joins[2]["channel_type"] == "C"
