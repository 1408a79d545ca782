"""The Slack translation layer (pure): Slack events -> canonical, canonical -> Web API calls."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slack._richtext import normalise
from adapters.slack._translate import (
    ApiCall,
    Decoded,
    FileUpload,
    OutboundContext,
    Revoked,
    Sender,
    SlackLookup,
    canonical_id_for,
    decode_event,
    emoji_from_slack,
    encode_event,
    slack_emoji_name,
)
from adapters.slack._views import EventsBody, read_events_body
from engine import (
    Address,
    ContactRequest,
    DeliveryOutcome,
    Edit,
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
    session_id_for,
)
from engine._richtext import CodeBlock, Emoji, Link, Mention, Paragraph, Quote, text
from tests.test_slack_richtext import _lists, _paragraph

#: Slack's sample payloads (copied from shared/reference/slack-api/event-payloads)
GOLDEN = Path(__file__).resolve().parents[1] / "slack_sandbox" / "golden"

TEAM, CHANNEL, OTHER_CHANNEL = "T0ACME", "G0PRIV", "G0ELSE"
JOHN_ID, MARY_ID, BOT_ID, BOT_USER = "U0JOHN", "U0MARY", "B0BOT", "U0BOT"
JOHN = Address.parse("john@acme.test")
MARY = Address.parse("mary@acme.test")
PETER = Address.parse("peter@widget.test")
SESSION = SessionRecord(session_id=session_id_for(JOHN, PETER), a=JOHN, b=PETER,
                        conversation_ids={"slack": CHANNEL})


class TableLookup:
    """The directory reads as plain tables (the translation layer is pure)."""

    def __init__(self) -> None:
        self.users = {(TEAM, JOHN_ID): JOHN, (TEAM, MARY_ID): MARY}
        self.messages: dict[tuple[str, str], str] = {}

    def address_of(self, team_id: str, user_id: str) -> Address | None:
        return self.users.get((team_id, user_id))

    def user_id_of(self, address: Address) -> str | None:
        return next((u for (_, u), a in self.users.items() if a == address), None)

    def session_of(self, channel_id: str) -> SessionRecord | None:
        return SESSION if channel_id == CHANNEL else None

    def canonical_id(self, channel_id: str, ts: str) -> str | None:
        return self.messages.get((channel_id, ts))

    def is_own_bot(self, team_id: str, *, user_id: str = "", bot_id: str = "",
                   app_id: str = "") -> bool:
        return team_id == TEAM and (user_id == BOT_USER or bot_id == BOT_ID)


def decode(body: dict[str, Any], lookup: SlackLookup) -> Decoded:
    """The edge's path: the body as JSON bytes, decoded once into its view, translated."""
    view = read_events_body(json.dumps(body).encode())
    assert isinstance(view, EventsBody), view
    return decode_event(view, lookup)


def callback(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event_callback", "team_id": TEAM, "event_id": "Ev1", "event": event}


def message(text_value: str = "hi", *, user: str = JOHN_ID, ts: str = "1700000000.000100",
            channel: str = CHANNEL, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": channel, "user": user, "text": text_value, "ts": ts,
            "team": TEAM, "channel_type": "group", "event_ts": ts, **extra}


RICH_BLOCKS = [{"type": "rich_text", "elements": [
    {"type": "rich_text_section", "elements": [
        {"type": "text", "text": "Hello "}, {"type": "user", "user_id": MARY_ID},
        {"type": "text", "text": " see ", "style": {"bold": True}},
        {"type": "link", "url": "https://widget.test", "text": "this"},
        {"type": "emoji", "name": "wave", "unicode": "1f44b"}]},
    {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": "x = 1"}]},
    {"type": "rich_text_quote", "elements": [{"type": "text", "text": "quoted"}]},
]}]


def test_a_composer_message_becomes_a_canonical_message() -> None:
    decoded = decode(callback(message("fallback", blocks=RICH_BLOCKS)), TableLookup())
    assert isinstance(decoded, list)
    (event,) = decoded
    assert isinstance(event, Message)
    assert (event.source, event.destination, event.session_id) == (JOHN, PETER,
                                                                   SESSION.session_id)
    assert event.event_id == canonical_id_for(TEAM, CHANNEL, "1700000000.000100")
    assert event.platform_ids == {"slack": f"{CHANNEL}/1700000000.000100"}
    assert event.timestamp == 1700000000.0001
    assert event.body.blocks == (
        Paragraph(inlines=(text("Hello "), Mention(address=str(MARY)), text(" see ", "bold"),
                           Link(url="https://widget.test", label="this"),
                           Emoji(name="wave", unicode="👋"))),
        CodeBlock(code="x = 1"),
        Quote(blocks=(Paragraph(inlines=(text("quoted"),)),)),
    )
    assert event.text.startswith("Hello @mary@acme.test see this (https://widget.test)")


def test_a_message_without_blocks_is_read_as_mrkdwn() -> None:
    decoded = decode(callback(message("*bold* &lt;tag&gt; <https://x.test|x>")),
                           TableLookup())
    assert isinstance(decoded, list)
    (event,) = decoded
    assert isinstance(event, Message)
    assert event.body.blocks == (Paragraph(inlines=(
        text("bold", "bold"), text(" <tag> "), Link(url="https://x.test", label="x"))),)


def test_thread_replies_name_their_root_when_it_is_known() -> None:
    lookup = TableLookup()
    lookup.messages[CHANNEL, "1.000"] = "root-id"
    reply = decode(callback(message(ts="2.000", thread_ts="1.000")), lookup)
    orphan = decode(callback(message(ts="3.000", thread_ts="0.500")), lookup)
    root = decode(callback(message(ts="1.000", thread_ts="1.000")), lookup)
    assert isinstance(reply, list) and isinstance(orphan, list) and isinstance(root, list)
    events = [e for e in (*reply, *orphan, *root) if isinstance(e, Message)]
    assert [e.thread_id for e in events] == ["root-id", None, None]


def test_edits_and_deletes_name_the_canonical_message() -> None:
    lookup = TableLookup()
    lookup.messages[CHANNEL, "1.000"] = "m1"
    changed: dict[str, Any] = {"type": "message", "subtype": "message_changed", "channel": CHANNEL,
               "hidden": True, "ts": "5.000", "event_ts": "5.000",
               "message": {"type": "message", "user": JOHN_ID, "text": "new", "ts": "1.000",
                           "edited": {"user": JOHN_ID, "ts": "5.000"}},
               "previous_message": {"type": "message", "user": JOHN_ID, "text": "old",
                                    "ts": "1.000"}}
    decoded = decode(callback(changed), lookup)
    assert isinstance(decoded, list)
    (edit,) = decoded
    assert isinstance(edit, Edit)
    assert (edit.target_id, edit.text, edit.source, edit.timestamp) == ("m1", "new", JOHN, 5.0)

    unfurl = copy.deepcopy(changed)
    unfurl["previous_message"]["text"] = "new"
    assert decode(callback(unfurl), lookup) == Ignored("unchanged")

    deleted = {"type": "message", "subtype": "message_deleted", "channel": CHANNEL,
               "hidden": True, "ts": "6.000", "event_ts": "6.000", "deleted_ts": "1.000",
               "previous_message": {"type": "message", "user": JOHN_ID, "text": "new",
                                    "ts": "1.000"}}
    decoded = decode(callback(deleted), lookup)
    assert isinstance(decoded, list)
    (retract,) = decoded
    assert isinstance(retract, Retract)
    assert (retract.target_id, retract.destination) == ("m1", PETER)

    deleted["deleted_ts"] = "9.999"
    assert decode(callback(deleted), lookup) == Ignored("unknown-message")


def test_file_shares_become_file_events_with_the_text_as_caption() -> None:
    files = [{"id": "F1", "name": "a.pdf", "mimetype": "application/pdf", "size": 10,
              "url_private": "https://files/a", "url_private_download": "https://files/a?dl"},
             {"id": "F2", "name": "b.png", "mimetype": "image/png", "size": 20,
              "url_private": "https://files/b"}]
    decoded = decode(callback(message("look", subtype="file_share", files=files)),
                           TableLookup())
    assert isinstance(decoded, list)
    first, second = decoded
    assert isinstance(first, FileShare) and isinstance(second, FileShare)
    assert (first.name, first.size, first.media_type, first.url, first.caption) == (
        "a.pdf", 10, "application/pdf", "https://files/a?dl", "look")
    assert (second.url, second.caption, second.platform_ids) == ("https://files/b", "", {})
    assert first.event_id != second.event_id


@pytest.mark.parametrize(("event", "reason"), [
    (message(user=BOT_USER), "own-bot"),
    (message(bot_id=BOT_ID, subtype="bot_message"), "own-bot"),
    (message(bot_id="B0OTHER", subtype="bot_message"), "bot-message"),
    (message(channel=OTHER_CHANNEL), "not-a-federated-conversation"),
    (message(user="U0NOBODY"), "unknown-user"),
    (message(user=MARY_ID), "not-a-participant"),
    (message(subtype="channel_join"), "subtype:channel_join"),
    ({"type": "app_home_opened", "user": JOHN_ID}, "event:app_home_opened"),
    ({"type": "reaction_added", "user": JOHN_ID, "reaction": "x",
      "item": {"type": "file", "file": "F1"}}, "reaction-not-on-message"),
])
def test_what_is_not_translated_says_why(event: dict[str, Any], reason: str) -> None:
    assert decode(callback(event), TableLookup()) == Ignored(reason)


def test_bodies_that_are_not_event_callbacks_are_ignored() -> None:
    assert decode({"type": "app_rate_limited", "team_id": TEAM},
                        TableLookup()) == Ignored("body:app_rate_limited")
    assert decode({"type": "event_callback", "event_id": "Ev1"},
                  TableLookup()) == Ignored("malformed")


def test_reactions_become_canonical_reactions_with_unicode_where_known() -> None:
    lookup = TableLookup()
    lookup.messages[CHANNEL, "1.000"] = "m1"
    base = {"user": JOHN_ID, "item": {"type": "message", "channel": CHANNEL, "ts": "1.000"},
            "item_user": JOHN_ID, "event_ts": "7.000"}
    cases = [("reaction_added", "+1", ReactionAdd, "👍"),
             ("reaction_removed", "partyparrot", ReactionRemove, ":partyparrot:"),
             ("reaction_added", "thumbsup::skin-tone-3", ReactionAdd, "👍🏼")]
    for kind, name, expected, emoji in cases:
        decoded = decode(callback({**base, "type": kind, "reaction": name}), lookup)
        assert isinstance(decoded, list)
        (event,) = decoded
        assert isinstance(event, ReactionAdd | ReactionRemove)
        assert type(event) is expected
        assert (event.target_id, event.emoji, event.source) == ("m1", emoji, JOHN)


@pytest.mark.parametrize(("value", "name"), [
    ("👍", "thumbsup"), ("❤️", "heart"), ("❤", "heart"), ("🎉", "tada"),
    (":partyparrot:", "partyparrot"), ("👍🏽", "thumbsup::skin-tone-4"),
    ("not-emoji", "grey_question"),
])
def test_emoji_become_slack_names(value: str, name: str) -> None:
    assert slack_emoji_name(value) == name


@given(st.sampled_from(["thumbsup", "heart", "tada", "smile", "eyes", "rocket", "fire"]))
def test_emoji_names_round_trip(name: str) -> None:
    assert slack_emoji_name(emoji_from_slack(name)) == name


def test_user_change_becomes_a_profile_broadcast() -> None:
    user = {"id": JOHN_ID, "team_id": TEAM, "name": "john", "real_name": "John Smith",
            "profile": {"real_name": "John Smith", "email": "john@acme.test",
                        "title": "Sales", "image_192": "https://img/j192"}}
    decoded = decode(callback({"type": "user_change", "user": user}), TableLookup())
    assert isinstance(decoded, list)
    (profile,) = decoded
    assert isinstance(profile, Profile)
    assert (profile.source, profile.destination, profile.name, profile.email, profile.title,
            profile.avatar_url) == (JOHN, JOHN, "John Smith", "john@acme.test", "Sales",
                                    "https://img/j192")


def test_revocations_of_the_bot_are_reported() -> None:
    lookup = TableLookup()
    assert decode(callback({"type": "app_uninstalled"}), lookup) == Revoked(
        TEAM, "app_uninstalled")
    bot = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": [BOT_USER]}}
    assert decode(callback(bot), lookup) == Revoked(TEAM, "tokens_revoked")
    person = {"type": "tokens_revoked", "tokens": {"oauth": [JOHN_ID], "bot": []}}
    assert decode(callback(person), lookup) == Ignored("user-tokens-revoked")


TS, EDITED_TS, ROOT_TS, EVENT_TS = ("1700000000.000100", "1700000005.000200",
                                    "1699999999.000900", "1700000009.000300")
ROOT_ID = "sl-root"


def plain(value: str) -> RichText:
    return RichText(blocks=(Paragraph(inlines=(text(value),)),))


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[last] = value


#: each reference payload (values blanked) with real values set at these paths, and
#: exactly what it decodes to
GOLDEN_CASES: dict[str, tuple[dict[str, Any], object]] = {
    "AppHomeOpenedPayload": ({}, Ignored("event:app_home_opened")),
    "MemberJoinedChannelPayload": ({}, Ignored("event:member_joined_channel")),
    "MemberLeftChannelPayload": ({}, Ignored("event:member_left_channel")),
    "MessageBotPayload": ({"channel": CHANNEL, "bot_id": "B0OTHER", "ts": TS},
                          Ignored("bot-message")),
    "MessagePayload": (
        {"channel": CHANNEL, "user": JOHN_ID, "text": "hello there", "ts": TS,
         "event_ts": TS},
        [Message(event_id=canonical_id_for(TEAM, CHANNEL, TS), source=JOHN, destination=PETER,
                 session_id=SESSION.session_id, timestamp=float(TS),
                 platform_ids={"slack": f"{CHANNEL}/{TS}"}, body=plain("hello there"),
                 text="hello there")]),
    "MessageThreadBroadcastPayload": (
        {"channel": CHANNEL, "user": JOHN_ID, "text": "also here", "ts": TS,
         "thread_ts": ROOT_TS, "event_ts": TS},
        [Message(event_id=canonical_id_for(TEAM, CHANNEL, TS), source=JOHN, destination=PETER,
                 session_id=SESSION.session_id, timestamp=float(TS),
                 platform_ids={"slack": f"{CHANNEL}/{TS}"}, body=plain("also here"),
                 text="also here", thread_id=ROOT_ID)]),
    "MessageChangedPayload": (
        {"channel": CHANNEL, "event_ts": EVENT_TS, "message.user": JOHN_ID,
         "message.ts": ROOT_TS, "message.text": "fixed", "message.edited.ts": EDITED_TS,
         "previous_message.text": "fxied"},
        [Edit(source=JOHN, destination=PETER, session_id=SESSION.session_id,
              target_id=ROOT_ID, body=plain("fixed"), text="fixed",
              timestamp=float(EDITED_TS))]),
    "MessageDeletedPayload": (
        {"channel": CHANNEL, "deleted_ts": ROOT_TS, "event_ts": EVENT_TS,
         "previous_message.user": JOHN_ID},
        [Retract(source=JOHN, destination=PETER, session_id=SESSION.session_id,
                 target_id=ROOT_ID, timestamp=float(EVENT_TS))]),
    "MessageFileSharePayload": (
        {"channel": CHANNEL, "user": JOHN_ID, "text": "the plan", "ts": TS, "event_ts": TS,
         "files.0.name": "plan.pdf", "files.0.size": 2048, "files.0.mimetype":
         "application/pdf", "files.0.url_private_download": "https://files.slack.com/d/plan"},
        [FileShare(event_id=canonical_id_for(TEAM, CHANNEL, TS), source=JOHN,
                   destination=PETER, session_id=SESSION.session_id, timestamp=float(TS),
                   platform_ids={"slack": f"{CHANNEL}/{TS}"}, name="plan.pdf", size=2048,
                   media_type="application/pdf", url="https://files.slack.com/d/plan",
                   caption="the plan")]),
    "ReactionAddedPayload": (
        {"user": JOHN_ID, "item.channel": CHANNEL, "item.ts": ROOT_TS, "reaction": "tada",
         "event_ts": EVENT_TS},
        [ReactionAdd(source=JOHN, destination=PETER, session_id=SESSION.session_id,
                     target_id=ROOT_ID, emoji="🎉", timestamp=float(EVENT_TS))]),
    "ReactionRemovedPayload": (
        {"user": JOHN_ID, "item.channel": CHANNEL, "item.ts": ROOT_TS,
         "reaction": "+1::skin-tone-2", "event_ts": EVENT_TS},
        [ReactionRemove(source=JOHN, destination=PETER, session_id=SESSION.session_id,
                        target_id=ROOT_ID, emoji="👍🏻", timestamp=float(EVENT_TS))]),
    "TokensRevokedPayload": ({"tokens.bot": [BOT_USER], "tokens.oauth": []},
                             Revoked(TEAM, "tokens_revoked")),
    "UserChangePayload": (
        {"user.id": JOHN_ID, "user.team_id": TEAM, "user.name": "john",
         "user.profile.real_name": "John Smith", "user.profile.email": "john@acme.test",
         "user.profile.title": "Buyer", "user.profile.image_192": "https://img/j192"},
        [Profile(source=JOHN, destination=JOHN, name="John Smith", email="john@acme.test",
                 title="Buyer", avatar_url="https://img/j192")]),
}


def test_every_reference_payload_has_a_golden_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*Payload.json")) == sorted(GOLDEN_CASES)


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_reference_payloads_decode_to_exactly_these_events(name: str) -> None:
    """Slack's own sample payloads, with real values set, decode field for field."""
    body = json.loads((GOLDEN / f"{name}.json").read_text())
    body.update(type="event_callback", team_id=TEAM, event_id=f"Ev{name}")
    fills, expected = GOLDEN_CASES[name]
    for path, value in fills.items():
        _set(body["event"], path, value)
    lookup = TableLookup()
    lookup.messages[(CHANNEL, ROOT_TS)] = ROOT_ID
    assert _fresh_ids_blanked(decode(body, lookup)) == _fresh_ids_blanked(expected)


def _fresh_ids_blanked(decoded: object) -> object:
    """As plain data, for a readable diff. Events that do not start a message get a
    fresh random id: it is blanked. Messages and files keep theirs (derived from
    team, channel and ts)."""
    if not isinstance(decoded, list):
        return type(decoded).__name__, msgspec.to_builtins(decoded)
    return [msgspec.to_builtins(
        e if isinstance(e, Message | FileShare) else msgspec.structs.replace(e, event_id=""))
        for e in decoded]


# ------------------------------------------------------------------- outbound

CONTEXT = OutboundContext(channel=CHANNEL, sender=Sender(name="Peter Pan",
                                                         icon_url="https://img/p"),
                          message_keys={"m1": f"{CHANNEL}/1.000", "root": f"{CHANNEL}/0.500"},
                          user_ids={str(JOHN): JOHN_ID})


def test_a_message_is_posted_under_the_contacts_name_with_blocks_and_fallback() -> None:
    body = RichText(blocks=(Paragraph(inlines=(text("hi "), Mention(address=str(JOHN)),
                                                text(" bold", "bold"))),))
    event = Message(source=PETER, destination=JOHN, body=body, text="hi john bold",
                    thread_id="root")
    (call,) = encode_event(event, CONTEXT)
    assert isinstance(call, ApiCall)
    assert call.method == "chat.postMessage" and call.result == "message"
    args = call.args
    assert (args["channel"], args["username"], args["icon_url"], args["thread_ts"]) == (
        CHANNEL, "Peter Pan", "https://img/p", "0.500")
    assert args["text"] == f"hi <@{JOHN_ID}> *bold*"
    assert args["blocks"][0]["type"] == "rich_text"


def test_edits_deletes_and_reactions_name_the_slack_message() -> None:
    edit = Edit(source=PETER, destination=JOHN, target_id="m1",
                body=RichText(blocks=(Paragraph(inlines=(text("new"),)),)), text="new")
    (update,) = encode_event(edit, CONTEXT)
    assert isinstance(update, ApiCall)
    assert (update.method, update.args["ts"], update.args["text"]) == ("chat.update", "1.000",
                                                                        "new")
    (delete,) = encode_event(Retract(source=PETER, destination=JOHN, target_id="m1"), CONTEXT)
    assert isinstance(delete, ApiCall)
    assert (delete.method, delete.args, "message_not_found" in delete.harmless) == (
        "chat.delete", {"channel": CHANNEL, "ts": "1.000"}, True)
    (react,) = encode_event(ReactionAdd(source=PETER, destination=JOHN, target_id="m1",
                                        emoji="🎉"), CONTEXT)
    (unreact,) = encode_event(ReactionRemove(source=PETER, destination=JOHN, target_id="m1",
                                             emoji="🎉"), CONTEXT)
    assert isinstance(react, ApiCall) and isinstance(unreact, ApiCall)
    assert (react.method, react.args["name"], react.args["timestamp"]) == ("reactions.add",
                                                                           "tada", "1.000")
    assert unreact.method == "reactions.remove" and "no_reaction" in unreact.harmless
    with pytest.raises(Untranslatable, match="unknown-message"):
        encode_event(Retract(source=PETER, destination=JOHN, target_id="nope"), CONTEXT)


def test_files_presence_and_notices() -> None:
    (upload,) = encode_event(FileShare(source=PETER, destination=JOHN, name="a.pdf", size=3,
                                       url="https://files/a", caption="see"), CONTEXT)
    assert upload == FileUpload(channel=CHANNEL, url="https://files/a", filename="a.pdf",
                                size=3, title="a.pdf", initial_comment="see")
    (topic,) = encode_event(Presence(source=PETER, destination=JOHN, availability="away",
                                     status="lunch"), CONTEXT)
    assert isinstance(topic, ApiCall)
    assert topic.args["topic"] == f"Peter Pan ({PETER}) is away: lunch"
    (request,) = encode_event(ContactRequest(source=PETER, destination=JOHN), CONTEXT)
    assert isinstance(request, ApiCall)
    assert f"/interlink accept {PETER}" in request.args["text"]
    assert "username" not in request.args  # notices come from Interlink's bot itself
    (failed,) = encode_event(DeliveryOutcome(source=PETER, destination=JOHN,
                                             target_event_id="e1", status="failed",
                                             reason="not-a-contact"), CONTEXT)
    assert isinstance(failed, ApiCall)
    assert "not connected" in failed.args["text"] and "not-a-contact" in failed.args["text"]


def test_overlong_text_is_cut_to_slacks_limit() -> None:
    event = Message.create(source=PETER, destination=JOHN, body="x" * 50_000)
    (call,) = encode_event(event, CONTEXT)
    assert isinstance(call, ApiCall)
    assert len(call.args["text"]) == 40_000


@given(st.lists(st.one_of(_paragraph, _lists(1)), min_size=1, max_size=3))
def test_canonical_to_slack_to_canonical_is_stable(blocks: list[Any]) -> None:
    """A message posted to Slack and echoed back as an event decodes to the same body."""
    lookup = TableLookup()
    lookup.messages[CHANNEL, "0.500"] = "root"
    original = Message(source=PETER, destination=JOHN, thread_id="root",
                       body=normalise(RichText(blocks=tuple(blocks))))

    def round_trip(event: Message) -> Message:
        (call,) = encode_event(event, CONTEXT)
        assert isinstance(call, ApiCall)
        echoed = message(call.args["text"], user=JOHN_ID, ts="9.000",
                         blocks=call.args.get("blocks", []), thread_ts=call.args["thread_ts"])
        decoded = decode(callback(echoed), lookup)
        assert isinstance(decoded, list)
        (back,) = decoded
        assert isinstance(back, Message)
        return Message(source=PETER, destination=JOHN, body=back.body,
                       thread_id=back.thread_id)

    once = round_trip(original)
    assert once.thread_id == "root"
    assert round_trip(once).body == once.body
