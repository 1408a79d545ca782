"""The Slack adapter end to end: the sandbox over real HTTP and websockets, a real
engine, and a loopback platform for the external side (``widget.test``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from adapters.slack._adapter import SlackAdapter
from adapters.slack._client import SlackWebClient, WebApiSettings
from adapters.slack._installations import SlackInstallationConfig
from adapters.slack._presence import FollowedUsers
from adapters.slack._translate import message_key
from adapters.slack.sandbox import RateLimitSettings, Sandbox
from engine import (
    Address,
    ContactAccept,
    ContactRecord,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Directory,
    DomainAgreement,
    DomainRoute,
    Edit,
    FileShare,
    Message,
    PlatformIdentity,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    SessionRecord,
    session_id_for,
)
from engine._richtext import Link, Paragraph, text
from engine.testing import check_adapter_conformance
from engine.testing._conformance import PEER_ADDRESS
from tests.slack_sandbox._kit import (
    ALL_BOT_SCOPES,
    APP,
    JOHN,
    fast_settings,
    make_seed,
    running,
)

from ._federation import (
    JOHN_ADDRESS,
    PAUL_ADDRESS,
    PETER_ADDRESS,
    SECRETS,
    TEAM,
    SlackFederation,
    slack_federation,
)

BOTH_MODES = pytest.mark.parametrize("mode", ["socket", "http"])


async def open_conversation(fed: SlackFederation, other: Any = PETER_ADDRESS) -> str:
    """Peter writes first: the adapter creates the private conversation; its id."""
    await fed.widget.send(Message.create(source=other, destination=JOHN_ADDRESS, body="hello"))
    await fed.settle()
    return fed.conversation(other)


@BOTH_MODES
async def test_a_slack_users_message_reaches_the_contact_formatted(mode: str) -> None:
    async with slack_federation(mode=mode) as fed:
        channel = await open_conversation(fed)
        blocks = [{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
            {"type": "text", "text": "Hi "}, {"type": "text", "text": "Peter",
                                              "style": {"bold": True}},
            {"type": "text", "text": ", see "},
            {"type": "link", "url": "https://acme.example/q3", "text": "Q3"}]}]}]
        posted = await fed.act("xoxp-john", "chat.postMessage", channel=channel,
                               text="Hi *Peter*, see <https://acme.example/q3|Q3>",
                               blocks=blocks)
        event = await fed.next_event()
        assert isinstance(event, Message)
        assert (event.source, event.destination) == (JOHN_ADDRESS, PETER_ADDRESS)
        assert event.body.blocks == (Paragraph(inlines=(
            text("Hi "), text("Peter", "bold"), text(", see "),
            Link(url="https://acme.example/q3", label="Q3"))),)
        assert event.platform_ids["slack"] == message_key(channel, posted["ts"])


@BOTH_MODES
async def test_a_contacts_message_appears_in_the_private_conversation_under_their_name(
        mode: str) -> None:
    async with slack_federation(mode=mode) as fed:
        await fed.widget.send(Profile(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                      name="Peter Pan", avatar_url="https://img.test/p.png"))
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="Hello *John*")
        await fed.widget.send(message)
        await fed.settle()
        channel = fed.conversation()
        info = await fed.act("xoxp-john", "conversations.info", channel=channel)
        assert info["channel"]["name"] == "ext-peter-widget-test"
        assert info["channel"]["is_private"]
        members = await fed.act("xoxb-interlink", "conversations.members", channel=channel)
        assert set(members["members"]) >= {JOHN}
        posts = [m for m in fed.sandbox.messages(channel) if m.get("username") == "Peter Pan"]
        assert [m["text"] for m in posts] == ["Hello *John*"]
        assert posts[0]["icons"]["image_48"] == "https://img.test/p.png" or \
            posts[0].get("icon_url") == "https://img.test/p.png"
        ids = fed.directory.get_message_ids(message.event_id)
        assert ids is not None
        assert ids.platform_ids["slack"] == message_key(channel, posts[0]["ts"])


async def test_each_contact_gets_a_conversation_and_taken_names_get_a_suffix() -> None:
    async with slack_federation() as fed:
        # someone already has a channel with peter's conversation name
        await fed.act("xoxp-mary", "conversations.create", name="ext-peter-widget-test",
                      is_private=True)
        peter = await open_conversation(fed, PETER_ADDRESS)
        paul = await open_conversation(fed, PAUL_ADDRESS)
        names = {}
        for channel in (peter, paul):
            info = await fed.act("xoxp-john", "conversations.info", channel=channel)
            names[channel] = info["channel"]["name"]
        assert names == {peter: "ext-peter-widget-test-2", paul: "ext-paul-widget-test"}


async def test_edits_deletes_reactions_and_threads_from_slack() -> None:
    async with slack_federation() as fed:
        channel = await open_conversation(fed)
        root = await fed.act("xoxp-john", "chat.postMessage", channel=channel, text="root")
        first = await fed.next_event()
        assert isinstance(first, Message)
        await fed.act("xoxp-john", "chat.postMessage", channel=channel, text="in thread",
                      thread_ts=root["ts"])
        reply = await fed.next_event()
        assert isinstance(reply, Message)
        assert reply.thread_id == first.event_id
        await fed.act("xoxp-john", "chat.update", channel=channel, ts=root["ts"], text="root v2")
        edit = await fed.next_event()
        assert isinstance(edit, Edit)
        assert (edit.target_id, edit.text) == (first.event_id, "root v2")
        await fed.act("xoxp-john", "reactions.add", channel=channel, timestamp=root["ts"],
                      name="tada")
        added = await fed.next_event()
        assert isinstance(added, ReactionAdd)
        assert (added.target_id, added.emoji) == (first.event_id, "🎉")
        await fed.act("xoxp-john", "reactions.remove", channel=channel, timestamp=root["ts"],
                      name="tada")
        removed = await fed.next_event()
        assert isinstance(removed, ReactionRemove)
        await fed.act("xoxp-john", "chat.delete", channel=channel, ts=root["ts"])
        retract = await fed.next_event()
        assert isinstance(retract, Retract)
        assert retract.target_id == first.event_id


async def test_edits_deletes_reactions_and_threads_from_the_contact() -> None:
    async with slack_federation() as fed:
        root = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS, body="root")
        await fed.widget.send(root)
        await fed.settle()
        channel = fed.conversation()
        reply = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS, body="reply",
                               thread_id=root.event_id)
        await fed.widget.send(reply)
        await fed.widget.send(Edit(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                   target_id=root.event_id, text="root v2",
                                   body=Message.create(source=PETER_ADDRESS,
                                                       destination=JOHN_ADDRESS,
                                                       body="root v2").body))
        await fed.widget.send(ReactionAdd(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                          target_id=root.event_id, emoji="👍"))
        await fed.settle()
        root_ts = fed.directory.get_message_ids(root.event_id).platform_ids["slack"]  # type: ignore[union-attr]
        root_ts = root_ts.partition("/")[2]
        messages = {m["ts"]: m for m in fed.sandbox.messages(channel)}
        assert messages[root_ts]["text"] == "root v2"
        assert messages[root_ts]["reactions"][0]["name"] in ("thumbsup", "+1")
        replies = [m for m in messages.values() if m.get("thread_ts") == root_ts
                   and m["ts"] != root_ts]
        assert [m["text"] for m in replies] == ["reply"]
        await fed.widget.send(ReactionRemove(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                             target_id=root.event_id, emoji="👍"))
        await fed.widget.send(Retract(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                      target_id=root.event_id))
        await fed.settle()
        left = {m["ts"]: m for m in fed.sandbox.messages(channel)}
        # a thread's root with replies stays as Slack's tombstone ("This message was deleted.")
        assert root_ts not in left or left[root_ts].get("subtype") == "tombstone"
        assert not left.get(root_ts, {}).get("reactions")


async def test_files_both_ways() -> None:
    async with slack_federation(listen=True) as fed:
        channel = await open_conversation(fed)
        # from the contact: a file at a URL is streamed into Slack's upload flow
        source_url = fed.sandbox.url + "/avatars/peter.png"
        await fed.widget.send(FileShare(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                        name="pixel.png", size=0, media_type="image/png",
                                        url=source_url, caption="a pixel"))
        await fed.settle()
        shared = [m for m in fed.sandbox.messages(channel) if m.get("files")]
        assert [f["name"] for m in shared for f in m["files"]] == ["pixel.png"]
        # from Slack: john uploads; the contact gets a signed Interlink link, no Slack login
        upload = await fed.act("xoxp-john", "files.getUploadURLExternal",
                               filename="notes.txt", length=5)
        await fed.http.post(upload["upload_url"], content=b"notes",
                            headers={"Authorization": "Bearer xoxp-john"})
        await fed.act("xoxp-john", "files.completeUploadExternal", channel_id=channel,
                      files=json.dumps([{"id": upload["file_id"], "title": "notes.txt"}]),
                      initial_comment="my notes")
        event = await fed.next_event()
        assert isinstance(event, FileShare)
        assert (event.name, event.size, event.caption) == ("notes.txt", 5, "my notes")
        assert event.url.startswith(f"http://127.0.0.1:{fed.slack.listen_port}/slack/files/")
        fetched = await fed.http.get(event.url)
        assert (fetched.status_code, fetched.content) == (200, b"notes")
        assert "notes.txt" in fetched.headers["content-disposition"]
        forged = event.url[:-3] + ("AAA" if not event.url.endswith("AAA") else "BBB")
        assert (await fed.http.get(forged)).status_code == 404


async def test_a_flood_into_one_conversation_respects_the_channel_limit_and_loses_nothing(
        ) -> None:
    # Slack's ~1/s per channel, scaled up 40x so that the test takes seconds, not minutes
    limits = RateLimitSettings(post_message_per_second=40.0, post_message_burst=3,
                               per_minute=(600.0, 6000.0, 6000.0, 6000.0, 6000.0))
    # no client burst: network jitter must not squeeze paced posts into a sandbox burst
    async with slack_federation(rate_limits=limits, pacing=32.0, pacing_burst=1,
                                deadline=90) as fed:
        channel = await open_conversation(fed)
        for n in range(200):
            await fed.widget.send(Message.create(source=PETER_ADDRESS,
                                                 destination=JOHN_ADDRESS, body=f"n{n}"))
        await fed.settle()
        posts = [m["text"] for m in await fed.wait_for_messages(channel, 201)
                 if m.get("username")]
        assert posts == ["hello"] + [f"n{n}" for n in range(200)]
        assert fed.sandbox.statistics().ratelimited == 0


async def test_a_429_on_one_conversation_does_not_delay_another() -> None:
    # The sandbox allows a post every 2 s per channel; the adapter is told 100/s, so it
    # overruns peter's channel and waits Retry-After there - paul's channel keeps flowing.
    limits = RateLimitSettings(post_message_per_second=0.5, post_message_burst=2,
                               per_minute=(600.0, 6000.0, 6000.0, 6000.0, 6000.0))
    async with slack_federation(rate_limits=limits, pacing=100.0) as fed:
        peter_channel = await open_conversation(fed, PETER_ADDRESS)
        paul_channel = await open_conversation(fed, PAUL_ADDRESS)
        # each channel has one post of its burst left: p0 goes, p1 gets a 429
        for n in range(3):
            await fed.widget.send(Message.create(source=PETER_ADDRESS,
                                                 destination=JOHN_ADDRESS, body=f"p{n}"))
        await fed.widget.send(Message.create(source=PAUL_ADDRESS, destination=JOHN_ADDRESS,
                                             body="paul"))
        paul = await fed.wait_for_messages(paul_channel, 2)
        peter_so_far = [m["text"] for m in fed.sandbox.messages(peter_channel)]
        assert paul[-1]["text"] == "paul"
        assert "p2" not in peter_so_far, "paul's message waited behind peter's 429"
        await fed.settle()
        assert [m["text"] for m in await fed.wait_for_messages(peter_channel, 4)][-3:] == [
            "p0", "p1", "p2"]
        assert fed.sandbox.statistics().ratelimited >= 1


async def test_a_retried_event_is_delivered_once() -> None:
    async with slack_federation(mode="http") as fed:
        channel = await open_conversation(fed)
        body = {"token": "x", "team_id": "T0ACME", "api_app_id": APP, "type": "event_callback",
                "event_id": "Ev0RETRY", "event_time": int(time.time()),
                "event": {"type": "message", "channel": channel, "user": JOHN,
                          "text": "once", "ts": "1700000000.000200", "team": "T0ACME",
                          "channel_type": "group", "event_ts": "1700000000.000200"}}
        raw = json.dumps(body).encode()
        for attempt in range(3):
            stamp = str(int(time.time()))
            signature = "v0=" + hmac.new(b"s3cret", f"v0:{stamp}:".encode() + raw,
                                         hashlib.sha256).hexdigest()
            headers = {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
                       "Content-Type": "application/json"}
            if attempt:
                headers |= {"X-Slack-Retry-Num": str(attempt),
                            "X-Slack-Retry-Reason": "http_timeout"}
            answer = await fed.http.post(
                f"http://127.0.0.1:{fed.slack.listen_port}/slack/events", content=raw,
                headers=headers)
            assert answer.status_code == 200
        event = await fed.next_event()
        assert isinstance(event, Message) and event.text == "once"
        await fed.settle()
        assert fed.pending_events() == []


async def test_a_socket_mode_refresh_loses_and_duplicates_nothing() -> None:
    async with slack_federation() as fed:
        channel = await open_conversation(fed)
        for n in range(30):
            await fed.act("xoxp-john", "chat.postMessage", channel=channel, text=f"m{n}")
            if n == 10:
                assert fed.sandbox.request_socket_refresh(APP) >= 1
            if n == 20:
                assert fed.sandbox.close_socket_connections(APP) >= 1
        texts = []
        for _ in range(30):
            event = await fed.next_event()
            assert isinstance(event, Message)
            texts.append(event.text)
        assert texts == [f"m{n}" for n in range(30)]
        await fed.settle()
        assert fed.pending_events() == []


async def test_own_bot_messages_are_never_relayed_back() -> None:
    async with slack_federation() as fed:
        await open_conversation(fed)
        await fed.act("xoxp-john", "chat.postMessage", channel=fed.conversation(), text="ping")
        event = await fed.next_event()
        assert isinstance(event, Message) and event.text == "ping"
        await fed.settle()
        assert fed.pending_events() == []
        assert fed.slack.stats.ignored.get("own-bot", 0) >= 1


async def command(fed: SlackFederation, text_value: str) -> str:
    """John runs ``/interlink text_value`` in #general; the ephemeral reply's text."""
    reply = await fed.sandbox.run_command("xoxp-john", "/interlink", text_value,
                                          channel="C0GENERAL")
    assert reply.ok, reply.error
    assert reply.response["response_type"] == "ephemeral"
    answer: str = reply.response["text"]
    return answer


@BOTH_MODES
async def test_slash_commands_add_accept_list_remove(mode: str) -> None:
    async with slack_federation(mode=mode, contacts=False, register_john=False) as fed:
        assert "/interlink add" in await command(fed, "help")
        bad = await command(fed, "add peter@@widget")
        assert "is not an address" in bad
        reply = await command(fed, "add peter@widget.test")
        assert "Asked peter@widget.test" in reply
        request = await fed.next_event()
        assert isinstance(request, ContactRequest)
        assert (request.source, request.destination) == (JOHN_ADDRESS, PETER_ADDRESS)
        identity = fed.directory.get_identity(JOHN_ADDRESS)
        assert identity is not None and identity.user_id == JOHN  # registered by email
        assert "waiting for them" in await command(fed, "list")
        await fed.widget.send(ContactAccept(source=PETER_ADDRESS, destination=JOHN_ADDRESS))
        await fed.settle()
        channel = fed.conversation()
        notices = [m["text"] for m in fed.sandbox.messages(channel)]
        assert any("accepted" in n for n in notices)
        assert "connected" in await command(fed, "list")
        await command(fed, "remove peter@widget.test")
        removal = await fed.next_event()
        assert isinstance(removal, ContactRemove)


async def test_a_contact_request_from_outside_is_accepted_with_a_command() -> None:
    async with slack_federation(contacts=False) as fed:
        await fed.widget.send(ContactRequest(source=PETER_ADDRESS, destination=JOHN_ADDRESS))
        await fed.settle()
        channel = fed.conversation()
        assert any("/interlink accept peter@widget.test" in m["text"]
                   for m in fed.sandbox.messages(channel))
        await command(fed, "accept peter@widget.test")
        accepted = await fed.next_event()
        assert isinstance(accepted, ContactAccept)
        assert fed.directory.get_contact(JOHN_ADDRESS, PETER_ADDRESS).state == "accepted"  # type: ignore[union-attr]


async def test_refused_messages_are_reported_to_the_slack_user() -> None:
    async with slack_federation() as fed:
        channel = await open_conversation(fed)
        await fed.widget.send(ContactRemove(source=PETER_ADDRESS, destination=JOHN_ADDRESS))
        await fed.settle()
        await fed.act("xoxp-john", "chat.postMessage", channel=channel, text="still there?")
        await fed.quiesce()
        notices = [m["text"] for m in fed.sandbox.messages(channel)]
        assert any("Not delivered to peter@widget.test" in n and "not-a-contact" in n
                   for n in notices), notices


async def test_slack_profiles_reach_the_contact_and_follow_user_change() -> None:
    async with slack_federation() as fed:
        await fed.widget.send(Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                             body="hello"))
        profile = await fed.next_event(profiles=True)
        assert isinstance(profile, Profile)
        assert (profile.source, profile.name, profile.email, profile.title) == (
            JOHN_ADDRESS, "John Smith", "john@acme.localhost", "Head of Sales")
        await fed.act("xoxp-john", "users.profile.set",
                      profile={"title": "VP Sales", "real_name": "John Smith"})
        changed = await fed.next_event(profiles=True)
        assert isinstance(changed, Profile)
        assert (changed.source, changed.title) == (JOHN_ADDRESS, "VP Sales")


async def test_presence_is_polled_and_shown_as_the_topic() -> None:
    async with slack_federation(presence_interval=0.05) as fed:
        channel = await open_conversation(fed)
        await fed.act("xoxp-john", "users.setPresence", presence="away")
        while True:  # the first poll may still see John active; then the change arrives
            event = await fed.next_event()
            if isinstance(event, Presence) and event.availability == "away":
                break
        assert event.source == JOHN_ADDRESS
        await fed.widget.send(Presence(source=PETER_ADDRESS, destination=PETER_ADDRESS,
                                       availability="busy", status="in a meeting"))
        await fed.settle()
        info = await fed.act("xoxp-john", "conversations.info", channel=channel)
        assert info["channel"]["topic"]["value"] == \
            "peter@widget.test (peter@widget.test) is busy: in a meeting"


async def test_revoked_tokens_stop_the_installation() -> None:
    async with slack_federation() as fed:
        await open_conversation(fed)
        fed.sandbox.revoke_token("xoxb-interlink")
        await fed.sandbox.wait_for_delivery(lambda r: r.ok and r.event_type == "tokens_revoked")
        installation = fed.directory.get_installation("slack", TEAM)
        assert installation is not None
        assert (installation.status, installation.credentials) == ("revoked", {})
        await fed.widget.send(Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                             body="anyone?"))
        outcome = await fed.next_event()
        assert isinstance(outcome, DeliveryOutcome)
        assert (outcome.status, outcome.reason) == ("failed", "installation-revoked")


BETA_SEED = f"""
[[workspace]]
id = "T0BETA"
name = "Beta"
domain = "beta"

[[workspace.user]]
id = "U0ANN"
name = "ann"
real_name = "Ann Lee"
email = "ann@beta.localhost"
token = "xoxp-ann"

[[workspace.app]]
id = "A0INTERLINK"
name = "Interlink"
bot_user_id = "U0BOTB"
bot_token = "xoxb-beta"
app_token = "xapp-interlink"
signing_secret = "s3cret"
commands = ["/interlink"]
client_id = "111.222"
client_secret = "client-secret"
scopes = [{ALL_BOT_SCOPES}]
"""


async def test_each_workspace_is_served_with_its_own_installation() -> None:
    ann = Address.parse("ann@beta.localhost")
    async with slack_federation(seed_extra=BETA_SEED, installations=(
            SlackInstallationConfig(team_id="T0BETA", bot_token="xoxb-beta"),)) as fed:
        await fed.directory.put_domain_route(DomainRoute(domain="beta.localhost",
                                                         platform="slack", tenant="T0BETA",
                                                         internal=True))
        await fed.directory.put_domain_agreement(DomainAgreement(
            domain_a="beta.localhost", domain_b="widget.test", decision="allow"))
        await fed.directory.put_identity(PlatformIdentity(address=ann, platform="slack",
                                                          tenant="T0BETA", user_id="U0ANN"))
        for owner, contact in ((ann, PETER_ADDRESS), (PETER_ADDRESS, ann)):
            await fed.directory.put_contact(ContactRecord(owner=owner, contact=contact,
                                                          state="accepted", requested_by=ann))
        john_channel = await open_conversation(fed, PETER_ADDRESS)
        await fed.widget.send(Message.create(source=PETER_ADDRESS, destination=ann,
                                             body="hi ann"))
        await fed.settle()
        session = fed.directory.find_session(ann, PETER_ADDRESS)
        assert session is not None
        ann_channel = session.conversation_ids["slack"]
        assert fed.sandbox.world.conversations[ann_channel].team_id == "T0BETA"
        assert fed.sandbox.world.conversations[john_channel].team_id == "T0ACME"
        await fed.act("xoxp-ann", "chat.postMessage", channel=ann_channel, text="hi peter")
        event = await fed.next_event()
        assert isinstance(event, Message)
        assert (event.source, event.destination, event.text) == (ann, PETER_ADDRESS,
                                                                 "hi peter")


async def test_the_oauth_install_flow_stores_a_working_installation() -> None:
    async with slack_federation(mode="http") as fed:
        base = f"http://127.0.0.1:{fed.slack.listen_port}"
        before = fed.directory.get_installation("slack", TEAM)
        assert before is not None
        start = await fed.http.get(base + "/slack/install")
        assert start.status_code == 302
        authorize = start.headers["location"] + "&user=" + JOHN  # the sandbox has no sign-in
        approved = await fed.http.get(authorize)
        assert approved.status_code == 302
        finished = await fed.http.get(approved.headers["location"])
        assert finished.status_code == 200, finished.text
        installation = fed.directory.get_installation("slack", TEAM)
        assert installation is not None
        assert installation.installed_at > before.installed_at  # stored anew from oauth.v2
        assert installation.credentials["bot_token"].startswith("xoxb-")
        assert installation.credentials["bot_user_id"] == "U0BOT"
        assert "xoxb" not in repr(installation)
        await open_conversation(fed)  # the new token works
        forged = await fed.http.get(base + "/slack/oauth_redirect?code=x&state=forged")
        assert forged.status_code == 400


class ConformanceHarness:
    """John on the sandbox, with a private conversation for the suite's peer."""

    def __init__(self, sandbox: Sandbox, adapter: SlackAdapter, http: httpx.AsyncClient,
                 channel: str) -> None:
        self.sandbox = sandbox
        self.adapter = adapter
        self.http = http
        self.channel = channel
        self.user = JOHN_ADDRESS
        self.unknown_user = Address.parse("nobody@acme.localhost")
        self._seen: set[str] = set()

    async def prepare_directory(self, directory: Directory) -> None:
        await directory.put_domain_route(DomainRoute(domain="acme.localhost", platform="slack",
                                                     tenant=TEAM, internal=True))
        await directory.put_identity(PlatformIdentity(address=JOHN_ADDRESS, platform="slack",
                                                      tenant=TEAM, user_id=JOHN))
        a, b = sorted((JOHN_ADDRESS, PEER_ADDRESS))
        await directory.put_session(SessionRecord(
            session_id=session_id_for(a, b), a=a, b=b, conversation_ids={"slack": self.channel}))

    async def send_as_user(self, to: Address, text_value: str) -> None:
        assert to == PEER_ADDRESS
        await self.http.post(self.sandbox.api_url + "chat.postMessage",
                             headers={"Authorization": "Bearer xoxp-john"},
                             json={"channel": self.channel, "text": text_value})

    async def receive_as_user(self) -> str:
        while True:
            for message in self.sandbox.messages(self.channel):
                if message.get("username") and message["ts"] not in self._seen:
                    self._seen.add(message["ts"])
                    return str(message["text"])
            await trio.sleep(0.01)


@asynccontextmanager
async def conformance_harness() -> AsyncIterator[ConformanceHarness]:
    async with running(make_seed(), settings=fast_settings(ack_timeout=3.0)) as sandbox, \
            httpx.AsyncClient(trust_env=False) as http:
        created = await http.post(sandbox.api_url + "conversations.create",
                                  headers={"Authorization": "Bearer xoxb-interlink"},
                                  json={"name": "ext-conformance", "is_private": True})
        channel = created.json()["channel"]["id"]
        await http.post(sandbox.api_url + "conversations.invite",
                        headers={"Authorization": "Bearer xoxb-interlink"},
                        json={"channel": channel, "users": JOHN})
        adapter = SlackAdapter(
            secrets=SECRETS, web=SlackWebClient(
                settings=WebApiSettings(base_url=sandbox.api_url), http=http),
            installations=[SlackInstallationConfig(team_id=TEAM, bot_token="xoxb-interlink")])
        yield ConformanceHarness(sandbox, adapter, http, channel)


async def test_the_adapter_passes_the_conformance_suite() -> None:
    await check_adapter_conformance(conformance_harness)


def test_presence_state_goes_with_a_followed_user_when_evicted() -> None:
    followed = FollowedUsers(2)
    john, paul = (PlatformIdentity(address=a, platform="slack", tenant=TEAM, user_id=u)
                  for a, u in ((JOHN_ADDRESS, "U1"), (PAUL_ADDRESS, "U2")))
    assert followed.follow(john) and followed.follow(paul)
    assert followed.tell(JOHN_ADDRESS, "available") and followed.tell(PAUL_ADDRESS, "away")
    assert not followed.tell(JOHN_ADDRESS, "available")  # unchanged: nothing to tell
    ringo = PlatformIdentity(address=Address.parse("ringo@acme.test"), platform="slack",
                             tenant=TEAM, user_id="U3")
    assert followed.follow(ringo)  # john, least recently seen, is dropped with his state
    assert JOHN_ADDRESS not in followed and len(followed) == 2
    assert followed.told(JOHN_ADDRESS) is None
    assert not followed.tell(JOHN_ADDRESS, "away")  # not followed: nothing kept for him
    assert followed.told(PAUL_ADDRESS) == "away"
    assert not followed.follow(paul)  # seen again: still followed, state kept
    assert followed.told(PAUL_ADDRESS) == "away"
    assert followed.follow(john)  # followed afresh: told again at the next poll
    assert followed.told(JOHN_ADDRESS) is None and len(followed) == 2


async def _next_record(fed: SlackFederation, seen: set[str], *, ok: bool) -> str:
    """The id of the next message event the sandbox delivered (``ok``: acked) that
    is not in ``seen``; it is added."""
    record = await fed.sandbox.wait_for_delivery(
        lambda r: r.event_type == "message" and r.ok is ok and r.id not in seen)
    seen.add(record.id)
    return record.id


@BOTH_MODES
async def test_a_full_mailbox_gets_slacks_busy_answer_and_the_retry_gets_through(
        mode: str) -> None:
    """Peter's conversation is stuck (his platform holds a delivery) and its mailbox of
    one is full: John's next message there is refused as busy (HTTP 503 / no Socket
    Mode ack) and arrives once Slack's retry comes; John's conversation with Paul is
    not delayed meanwhile."""
    async with slack_federation(mode=mode, mailbox_capacity=1, ack_timeout=1.0,
                                retry_scale=0.005) as fed:
        to_peter = await open_conversation(fed)
        to_paul = await open_conversation(fed, PAUL_ADDRESS)
        await fed.quiesce()
        fed.widget.delivered_nowait()
        seen = {r.id for r in fed.sandbox.deliveries.records}
        fed.widget.hold(PETER_ADDRESS)
        await fed.act("xoxp-john", "chat.postMessage", channel=to_peter, text="one")
        await fed.widget.wait_held()  # Peter's session is stuck delivering "one"
        await _next_record(fed, seen, ok=True)
        await fed.act("xoxp-john", "chat.postMessage", channel=to_peter, text="two")
        await _next_record(fed, seen, ok=True)  # "two" waits in the mailbox: now full
        await fed.act("xoxp-john", "chat.postMessage", channel=to_peter, text="three")
        refused = await _next_record(fed, seen, ok=False)
        refusal = next(r for r in fed.sandbox.deliveries.records if r.id == refused)
        assert refusal.attempt == 0
        if mode == "http":
            assert refusal.status == 503
        else:
            assert refusal.reason == "timeout"  # never acked

        await fed.act("xoxp-john", "chat.postMessage", channel=to_paul, text="hi paul")
        to_paul_event = await fed.next_event()
        assert isinstance(to_paul_event, Message) and to_paul_event.text == "hi paul"
        assert to_paul_event.destination == PAUL_ADDRESS

        fed.widget.release(PETER_ADDRESS)
        texts: list[str] = []
        while len(texts) < 3:
            event = await fed.next_event()
            assert isinstance(event, Message) and event.destination == PETER_ADDRESS
            texts.append(event.text)
        assert texts == ["one", "two", "three"]
        await fed.sandbox.wait_for_delivery(lambda r: r.id == refused and r.ok)
        await fed.quiesce()
        assert fed.pending_events() == []  # nothing twice
        assert fed.slack.stats.events_submitted >= 4
