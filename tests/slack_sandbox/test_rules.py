"""The Web API's rules, without sockets: errors Slack answers, limits, signing."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.sandbox import RateLimiter, RateLimitSettings, World, signature
from adapters.slack.sandbox._call import Outcome
from adapters.slack.sandbox._methods import call_method
from adapters.slack.sandbox._ratelimit import retry_after_header

from ._kit import GENERAL, JOHN, MARY, PARTNERS, SECRET, FakeClock, make_seed

NOW = 1_767_225_600.0
OFF = RateLimiter(RateLimitSettings(enabled=False), lambda: NOW)


def world() -> World:
    return World(make_seed(), now=NOW)


def call(w: World, method: str, token: str, **args: Any) -> Outcome:
    return call_method(w, OFF, method, token, args, NOW)


def error(w: World, method: str, token: str, **args: Any) -> str:
    outcome = call(w, method, token, **args)
    assert outcome.body["ok"] is False, outcome.body
    return str(outcome.body["error"])


BAD_INPUT = [
    # (method, token, args, Slack's error)
    ("auth.test", "", {}, "not_authed"),
    ("auth.test", "xoxb-nope", {}, "invalid_auth"),
    ("chat.postMessage", "xoxb-interlink", {"text": "x"}, "channel_not_found"),
    ("chat.postMessage", "xoxb-interlink", {"channel": "C0NOPE", "text": "x"},
     "channel_not_found"),
    ("chat.postMessage", "xoxb-interlink", {"channel": GENERAL}, "no_text"),
    ("chat.postMessage", "xoxp-mary", {"channel": SECRET, "text": "x"}, "channel_not_found"),
    ("chat.postMessage", "xoxp-peter", {"channel": PARTNERS, "text": "x"}, "not_in_channel"),
    ("chat.postMessage", "xoxb-interlink", {"channel": GENERAL, "blocks": "[{"},
     "invalid_blocks_format"),
    ("chat.postMessage", "xoxb-interlink",
     {"channel": GENERAL, "blocks": [{"type": "no_such_block"}]}, "invalid_blocks"),
    ("chat.postMessage", "xoxb-interlink",
     {"channel": GENERAL, "text": "x", "thread_ts": "1.000001"}, "thread_not_found"),
    ("chat.postEphemeral", "xoxb-interlink",
     {"channel": GENERAL, "user": JOHN, "text": "x" * 40_001}, "msg_too_long"),
    ("chat.postEphemeral", "xoxp-peter", {"channel": PARTNERS, "user": JOHN, "text": "x"},
     "not_in_channel"),
    ("chat.postEphemeral", "xoxb-interlink", {"channel": SECRET, "user": MARY, "text": "x"},
     "user_not_in_channel"),
    ("chat.update", "xoxb-interlink", {"channel": GENERAL, "ts": "1.000001", "text": "x"},
     "message_not_found"),
    ("chat.delete", "xoxb-interlink", {"channel": GENERAL}, "message_not_found"),
    ("reactions.add", "xoxb-interlink", {"channel": GENERAL, "timestamp": "1.000001"},
     "invalid_name"),
    ("reactions.add", "xoxb-interlink", {"name": "tada"}, "no_item_specified"),
    ("reactions.add", "xoxb-interlink", {"name": "tada", "channel": GENERAL,
                                         "timestamp": "yesterday"}, "bad_timestamp"),
    ("conversations.history", "xoxb-interlink", {"channel": PARTNERS}, "not_in_channel"),
    ("conversations.history", "xoxb-interlink", {"channel": GENERAL, "cursor": "%%%"},
     "invalid_cursor"),
    ("conversations.replies", "xoxb-interlink", {"channel": GENERAL}, "thread_not_found"),
    ("conversations.create", "xoxp-john", {"name": "Has Spaces"}, "invalid_name_specials"),
    ("conversations.create", "xoxp-john", {"name": "x" * 81}, "invalid_name_maxlength"),
    ("conversations.create", "xoxp-john", {"name": "general"}, "name_taken"),
    ("conversations.create", "xoxp-john", {"name": "---"}, "invalid_name_punctuation"),
    ("conversations.invite", "xoxp-john", {"channel": PARTNERS}, "no_user"),
    ("conversations.invite", "xoxp-john", {"channel": PARTNERS, "users": JOHN},
     "cant_invite_self"),
    ("conversations.invite", "xoxp-john", {"channel": PARTNERS, "users": MARY},
     "already_in_channel"),
    ("conversations.invite", "xoxp-peter", {"channel": PARTNERS, "users": "U0PETER"},
     "not_in_channel"),
    ("conversations.open", "xoxb-interlink", {}, "users_list_not_supplied"),
    ("conversations.open", "xoxb-interlink", {"users": "U0NOBODY"}, "user_not_found"),
    ("conversations.setTopic", "xoxp-john", {"channel": GENERAL, "topic": "t" * 251},
     "too_long"),
    ("conversations.members", "xoxb-interlink", {"channel": GENERAL, "limit": 5000},
     "invalid_limit"),
    ("users.info", "xoxb-interlink", {}, "user_not_found"),
    ("users.info", "xoxb-interlink", {"user": "U0NOBODY"}, "user_not_found"),
    ("users.lookupByEmail", "xoxb-interlink", {"email": "nobody@acme.localhost"},
     "users_not_found"),
    ("users.setPresence", "xoxp-john", {"presence": "busy"}, "invalid_presence"),
    ("users.profile.set", "xoxb-interlink", {"name": "title", "value": "x"},
     "missing_scope"),
    ("files.getUploadURLExternal", "xoxb-interlink", {"filename": "a.txt"},
     "invalid_arguments"),
    ("files.getUploadURLExternal", "xoxb-interlink", {"filename": "a.txt", "length": 0},
     "missing_argument"),
    ("files.completeUploadExternal", "xoxb-interlink",
     {"files": '[{"id": "F0NOPE"}]', "channel_id": GENERAL}, "file_not_found"),
    ("files.info", "xoxb-interlink", {"file": "F0NOPE"}, "file_not_found"),
    ("apps.connections.open", "xoxb-interlink", {}, "not_allowed_token_type"),
    ("chat.postMessage", "xapp-interlink", {"channel": GENERAL, "text": "x"},
     "not_allowed_token_type"),
    ("no.suchMethod", "xoxb-interlink", {}, "unknown_method"),
]


@pytest.mark.parametrize(("method", "token", "args", "code"), BAD_INPUT,
                         ids=[f"{m}-{c}" for m, _, _, c in BAD_INPUT])
def test_bad_input_is_answered_with_slacks_error_code(method: str, token: str,
                                                      args: dict[str, Any], code: str) -> None:
    assert error(world(), method, token, **args) == code


def test_unknown_methods_are_404_and_missing_scope_says_what_is_needed() -> None:
    w = world()
    assert call(w, "no.suchMethod", "xoxb-interlink").status == 404
    body = call(w, "users.profile.set", "xoxb-interlink", name="title", value="x").body
    assert body["needed"] == "users.profile:write"
    assert "chat:write" in body["provided"].split(",")


def test_revoked_and_expired_tokens_and_deleted_accounts() -> None:
    w = world()
    assert call(w, "auth.revoke", "xoxp-mary").body == {"ok": True, "revoked": True}
    assert error(w, "auth.test", "xoxp-mary") == "token_revoked"
    w.users[JOHN].deleted = True
    assert error(w, "auth.test", "xoxp-john") == "account_inactive"


def test_long_text_is_truncated_with_a_warning_and_updates_refuse_it() -> None:
    w = world()
    posted = call(w, "chat.postMessage", "xoxb-interlink", channel=GENERAL, text="y" * 40_010)
    assert posted.body["ok"] and len(posted.body["message"]["text"]) == 40_000
    assert posted.body["warning"] == "message_truncated"
    assert posted.body["response_metadata"]["warnings"] == ["message_truncated"]
    ts = posted.body["ts"]
    assert error(w, "chat.update", "xoxb-interlink", channel=GENERAL, ts=ts,
                 text="z" * 40_001) == "msg_too_long"


def test_only_authors_edit_and_admins_may_delete() -> None:
    w = world()
    ts = call(w, "chat.postMessage", "xoxp-mary", channel=GENERAL, text="hi").body["ts"]
    assert error(w, "chat.update", "xoxb-interlink", channel=GENERAL, ts=ts,
                 text="x") == "cant_update_message"
    assert error(w, "chat.delete", "xoxp-peter", channel=GENERAL, ts=ts) == \
        "cant_delete_message"
    assert call(w, "chat.delete", "xoxp-john", channel=GENERAL, ts=ts).body["ok"]


def test_overrides_need_chat_write_customize() -> None:
    seed = make_seed(scopes='"chat:write", "channels:history", "commands"')
    w = World(seed, now=NOW)
    body = call(w, "chat.postMessage", "xoxb-interlink", channel=GENERAL, text="x",
                username="Peter").body
    assert body["error"] == "missing_scope"
    assert body["needed"] == "chat:write.customize"
    assert body["provided"] == "channels:history,chat:write,commands"


def test_reactions_cannot_be_doubled_or_removed_twice() -> None:
    w = world()
    ts = call(w, "chat.postMessage", "xoxp-mary", channel=GENERAL, text="hi").body["ts"]
    assert call(w, "reactions.add", "xoxp-john", channel=GENERAL, timestamp=ts,
                name=":tada:").body["ok"]
    assert error(w, "reactions.add", "xoxp-john", channel=GENERAL, timestamp=ts,
                 name="tada") == "already_reacted"
    assert call(w, "reactions.remove", "xoxp-john", channel=GENERAL, timestamp=ts,
                name="tada").body["ok"]
    assert error(w, "reactions.remove", "xoxp-john", channel=GENERAL, timestamp=ts,
                 name="tada") == "no_reaction"


def test_invite_reports_every_bad_user() -> None:
    body = call(world(), "conversations.invite", "xoxp-john", channel=PARTNERS,
                users=f"U0NOBODY,{MARY}").body
    assert body["error"] == "user_not_found"
    assert body["errors"] == [
        {"user": "U0NOBODY", "ok": False, "error": "user_not_found"},
        {"user": MARY, "ok": False, "error": "already_in_channel"}]


def test_history_pages_with_cursors() -> None:
    w = world()
    posted = [call(w, "chat.postMessage", "xoxp-john", channel=GENERAL,
                   text=f"m{i}").body["ts"] for i in range(5)]
    seen: list[str] = []
    cursor = ""
    while True:
        body = call(w, "conversations.history", "xoxb-interlink", channel=GENERAL, limit=2,
                    cursor=cursor).body
        seen += [m["ts"] for m in body["messages"]]
        cursor = body["response_metadata"]["next_cursor"]
        assert body["has_more"] == bool(cursor)
        if not cursor:
            break
    assert seen == list(reversed(posted))


def test_token_buckets_by_tier_and_per_channel_posting() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimitSettings(), clock.now)
    key = ("A0INTERLINK", "T0ACME", "conversations.create")
    assert all(limiter.check(key, 2) is None for _ in range(20))
    wait = limiter.check(key, 2)
    assert wait is not None and 2.9 < wait <= 3.0  # tier 2: 20 a minute, one every 3 s
    assert retry_after_header(wait) == "3"
    clock.advance(3.0)
    assert limiter.check(key, 2) is None
    assert limiter.check(("A0OTHER", "T0ACME", "conversations.create"), 2) is None
    post = ("A0INTERLINK", "T0ACME")
    assert [limiter.check_post_message(post, GENERAL) is None for _ in range(4)] == [
        True, True, True, False]
    assert limiter.check_post_message(post, PARTNERS) is None  # another channel
    clock.advance(1.0)
    assert limiter.check_post_message(post, GENERAL) is None
    off = RateLimiter(RateLimitSettings(enabled=False), clock.now)
    assert all(off.check(key, 1) is None for _ in range(100))


def test_rate_limited_calls_get_429_and_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimitSettings(), clock.now)
    w = world()
    outcomes = [call_method(w, limiter, "chat.postMessage", "xoxb-interlink",
                            {"channel": GENERAL, "text": "x"}, NOW) for _ in range(4)]
    assert [o.status for o in outcomes] == [200, 200, 200, 429]
    assert outcomes[-1].body == {"ok": False, "error": "ratelimited"}
    assert outcomes[-1].headers == {"Retry-After": "1"}


def test_signature_matches_slacks_test_vector() -> None:
    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
        "G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebh"
        "ook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%"
        "2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0"
        "bc887a14d10d2c447fce8b6703c")
    assert signature("8f742231b10e8888abcd99yyyzzz85a5", 1531420618, body.encode()) == \
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_listing_leaving_and_posting_by_name_or_to_a_person() -> None:
    w = world()
    listed = call(w, "conversations.list", "xoxp-john",
                  types="public_channel,private_channel").body["channels"]
    assert [c["name"] for c in listed] == ["general", "partners", "secret"]
    mary_sees = call(w, "conversations.list", "xoxp-mary",
                     types=["private_channel"]).body["channels"]
    assert mary_sees == []
    assert error(w, "conversations.list", "xoxp-john", types="dms") == "invalid_types"
    by_name = call(w, "chat.postMessage", "xoxb-interlink", channel="#general", text="hi").body
    assert by_name["channel"] == GENERAL
    to_person = call(w, "chat.postMessage", "xoxb-interlink", channel=MARY, text="hi").body
    dm = w.conversations[to_person["channel"]]
    assert dm.kind == "im" and set(dm.members) == {"U0BOT", MARY}
    assert error(w, "conversations.leave", "xoxp-john", channel=GENERAL) == \
        "cant_leave_general"
    assert call(w, "conversations.leave", "xoxp-john", channel=PARTNERS).body == {"ok": True}
    assert call(w, "conversations.leave", "xoxp-john", channel=PARTNERS).body == {
        "ok": True, "not_in_channel": True}
    bot = call(w, "bots.info", "xoxb-interlink", bot="B0INTERLINK").body["bot"]
    assert (bot["app_id"], bot["user_id"], bot["name"]) == ("A0INTERLINK", "U0BOT", "Interlink")
    assert error(w, "bots.info", "xoxb-interlink", bot="B0NOPE") == "bot_not_found"


def test_a_deleted_root_with_replies_leaves_a_tombstone_until_they_go() -> None:
    w = world()
    root = call(w, "chat.postMessage", "xoxp-john", channel=GENERAL, text="root").body["ts"]
    reply = call(w, "chat.postMessage", "xoxp-mary", channel=GENERAL, text="reply",
                 thread_ts=root).body["ts"]
    assert call(w, "chat.delete", "xoxp-john", channel=GENERAL, ts=root).body["ok"]
    tombstone = w.messages[GENERAL][root]
    assert (tombstone.subtype, tombstone.text) == ("tombstone", "This message was deleted.")
    assert error(w, "chat.postMessage", "xoxp-john", channel=GENERAL, text="x",
                 thread_ts=root) == "cannot_reply_to_message"
    assert call(w, "chat.delete", "xoxp-mary", channel=GENERAL, ts=reply).body["ok"]
    assert w.messages[GENERAL] == {}
