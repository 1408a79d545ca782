"""Posting once: a chat.postMessage whose answer is lost after Slack committed it (timeout,
dropped connection, 5xx) is found by its metadata, not posted again. Through the sandbox
over real HTTP, a real engine and a loopback contact (peter@widget.test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio

from adapters.slack._adapter import SlackAdapter
from adapters.slack._client import SlackWebClient, WebApiSettings
from adapters.slack._delivery import UNCONFIRMED_CHANNEL, UNCONFIRMED_SINCE
from adapters.slack._installations import SlackInstallationConfig, SlackSettings
from adapters.slack._translate import (
    POST_EVENT_TYPE,
    ApiCall,
    OutboundContext,
    Sender,
    encode_event,
    message_key,
)
from adapters.slack.sandbox import RateLimitSettings
from engine import (
    METADATA_DBS,
    ContactRecord,
    ContactRequest,
    DeliveryOutcome,
    DomainAgreement,
    DomainRoute,
    Edit,
    Engine,
    EngineSettings,
    LedgerRecord,
    MemoryKV,
    Message,
    MetadataLog,
    PlatformIdentity,
    ReactionAdd,
    Retract,
    SystemClock,
)
from engine._session import DeliverySettings
from engine.testing import MemoryDirectory
from tests.slack_sandbox._kit import APP, fast_settings, make_seed, running

from ._federation import (
    JOHN_ADDRESS,
    PETER_ADDRESS,
    SECRETS,
    TEAM,
    GatedLoopback,
    SlackFederation,
)

POST = "chat.postMessage"
BOT_TOKEN = "xoxb-interlink"


@asynccontextmanager
async def federation(*, retry_window: float = 5.0) -> AsyncIterator[SlackFederation]:
    """The sandbox (no rate limits), the engine (the session retries within
    ``retry_window``) and the Slack adapter, whose Web API client times out after 1.5 s
    and retries quickly (3 attempts within 4 s)."""
    settings = msgspec.structs.replace(fast_settings(),
                                       rate_limits=RateLimitSettings(enabled=False))
    async with running(make_seed(), settings=settings) as sandbox, \
            httpx.AsyncClient(trust_env=False) as http:
        directory = MemoryDirectory()
        await directory.put_domain_route(DomainRoute(
            domain="acme.localhost", platform="slack", tenant=TEAM, internal=True))
        await directory.put_domain_route(DomainRoute(domain="widget.test", platform="widget"))
        await directory.put_domain_agreement(DomainAgreement(
            domain_a="acme.localhost", domain_b="widget.test", decision="allow"))
        await directory.put_identity(PlatformIdentity(
            address=JOHN_ADDRESS, platform="slack", tenant=TEAM, user_id="U0JOHN"))
        await directory.put_identity(PlatformIdentity(
            address=PETER_ADDRESS, platform="widget", user_id="peter"))
        for owner, contact in ((JOHN_ADDRESS, PETER_ADDRESS), (PETER_ADDRESS, JOHN_ADDRESS)):
            await directory.put_contact(ContactRecord(
                owner=owner, contact=contact, state="accepted", requested_by=JOHN_ADDRESS))
        web = SlackWebClient(settings=WebApiSettings(
            base_url=sandbox.api_url, post_message_per_second=200.0, timeout=1.5,
            max_attempts=3, retry_window=4.0, initial_backoff=0.02, max_backoff=0.1),
            http=http)
        slack = SlackAdapter(
            settings=SlackSettings(mode="socket", presence_interval=3600.0), secrets=SECRETS,
            web=web, installations=[SlackInstallationConfig(team_id=TEAM,
                                                            bot_token=BOT_TOKEN)])
        widget = GatedLoopback("widget")
        clock = SystemClock()
        engine = Engine(
            directory=directory, adapters=[slack, widget], clock=clock,
            metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock),
            settings=EngineSettings(shard_count=2, delivery=DeliverySettings(
                retry_window=retry_window, initial_backoff=0.05, max_backoff=0.2)))
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await sandbox.wait_socket_connections(APP)
            yield SlackFederation(sandbox, engine, slack, widget, directory, http)
            nursery.cancel_scope.cancel()


async def opened(fed: SlackFederation) -> str:
    """Peter's first message opens the private conversation; its id."""
    await fed.widget.send(Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                         body="hello"))
    await fed.settle()
    return fed.conversation()


async def send(fed: SlackFederation, event: Any) -> None:
    """Peter sends ``event``; back once the session has finished with it (retries too)."""
    await fed.widget.send(event)
    await fed.settle()


def posts(fed: SlackFederation, channel: str, text: str) -> list[dict[str, Any]]:
    return [m for m in fed.sandbox.messages(channel) if m["text"] == text]


def slack_key(fed: SlackFederation, event_id: str) -> str | None:
    record = fed.directory.get_message_ids(event_id)
    return None if record is None else record.platform_ids.get("slack")


async def history(fed: SlackFederation, channel: str) -> list[dict[str, Any]]:
    """The conversation as the bot reads it, metadata included (newest first)."""
    answer = await fed.act(BOT_TOKEN, "conversations.history", channel=channel,
                           include_all_metadata=True)
    messages: list[dict[str, Any]] = answer["messages"]
    return messages


# -- the metadata ---------------------------------------------------------------------------

def test_every_post_names_its_event_and_nothing_else() -> None:
    context = OutboundContext(channel="C1", sender=Sender(name="Peter Pan"))
    message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                             body="secret words")
    request = ContactRequest(source=PETER_ADDRESS, destination=JOHN_ADDRESS)
    for event in (message, request):
        (call,) = encode_event(event, context)
        assert isinstance(call, ApiCall) and call.method == POST
        assert call.args["metadata"] == {"event_type": POST_EVENT_TYPE,
                                         "event_payload": {"event_id": event.event_id}}
    # an edit is an update (repeating one is harmless): Slack keeps the post's metadata
    context = OutboundContext(channel="C1", sender=Sender(name="Peter Pan"),
                              message_keys={"m1": "C1/1.000"})
    (update,) = encode_event(Edit(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                  target_id="m1", text="new"), context)
    assert isinstance(update, ApiCall) and "metadata" not in update.args


async def test_posts_carry_their_event_id_as_metadata_and_echoes_are_ignored() -> None:
    async with federation() as fed:
        channel = await opened(fed)
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="no *content* in metadata")
        await send(fed, message)
        (post,) = [m for m in await history(fed, channel)
                   if m["text"] == "no *content* in metadata"]
        assert post["metadata"] == {"event_type": "interlink_message",
                                    "event_payload": {"event_id": message.event_id}}
        await fed.quiesce()  # the sandbox's events for the bot's posts came back ...
        assert fed.slack.stats.ignored.get("own-bot", 0) >= 2
        assert fed.pending_events() == []  # ... and none reached peter
        assert fed.slack.web.statistics().post_lookups == 0  # nothing unknown: no lookup


# -- committed, then the answer was lost ---------------------------------------------------

async def test_a_post_committed_then_timed_out_is_found_not_posted_again() -> None:
    async with federation() as fed:
        channel = await opened(fed)
        fed.sandbox.inject_failures(POST, delay=30.0, after_commit=True)  # > the 1.5 s timeout
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="once only")
        await send(fed, message)
        (post,) = posts(fed, channel, "once only")
        assert slack_key(fed, message.event_id) == message_key(channel, post["ts"])
        stats = fed.slack.web.statistics()
        assert (stats.post_lookups, stats.posts_found, stats.posts_unconfirmed) == (1, 1, 0)
        # the lookup was paced on conversations.history's own (tier 3) budget
        assert fed.slack.web.pacer.rate_of((TEAM, "conversations.history")) == 45.0 / 60
        assert fed.pending_events() == []  # no failure went back to peter

        # edits, reactions and deletes work against the message that was found
        await send(fed, Edit(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                             target_id=message.event_id, text="once, edited"))
        await send(fed, ReactionAdd(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                    target_id=message.event_id, emoji="🎉"))
        (edited,) = [m for m in fed.sandbox.messages(channel) if m["ts"] == post["ts"]]
        assert edited["text"] == "once, edited"
        assert [r["name"] for r in edited["reactions"]] == ["tada"]
        await send(fed, Retract(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                target_id=message.event_id))
        assert [m for m in fed.sandbox.messages(channel) if m["ts"] == post["ts"]] == []
        assert fed.pending_events() == []


async def test_a_post_committed_then_dropped_or_answered_5xx_is_posted_once() -> None:
    async with federation() as fed:
        channel = await opened(fed)
        faults: list[dict[str, Any]] = [
            {"drop_connection": True}, {"status": 500}, {"status": 503, "error": None},
            {"status": 200, "error": "fatal_error"}]
        for n, fault in enumerate(faults):
            fed.sandbox.inject_failures(POST, after_commit=True, **fault)
            message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                     body=f"message {n}")
            await send(fed, message)
            (post,) = posts(fed, channel, f"message {n}")
            assert slack_key(fed, message.event_id) == message_key(channel, post["ts"])
        stats = fed.slack.web.statistics()
        assert (stats.post_lookups, stats.posts_found) == (4, 4)
        assert fed.sandbox.statistics().failures_injected == 4
        assert fed.pending_events() == []


async def test_a_thread_reply_is_looked_up_in_its_thread() -> None:
    async with federation() as fed:
        channel = await opened(fed)
        root = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS, body="root")
        await send(fed, root)
        # history would fail: the reply is found with conversations.replies
        fed.sandbox.inject_failures("conversations.history", count=100)
        fed.sandbox.inject_failures(POST, drop_connection=True, after_commit=True)
        reply = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                               body="in the thread", thread_id=root.event_id)
        await send(fed, reply)
        root_key = slack_key(fed, root.event_id)
        assert root_key is not None
        thread = await fed.act(BOT_TOKEN, "conversations.replies", channel=channel,
                               ts=root_key.partition("/")[2])
        assert [m["text"] for m in thread["messages"]] == ["root", "in the thread"]
        assert slack_key(fed, reply.event_id) == message_key(channel,
                                                              thread["messages"][1]["ts"])
        assert fed.slack.web.statistics().posts_found == 1


# -- not committed ---------------------------------------------------------------------------

async def test_a_post_that_really_failed_is_posted_once_on_retry() -> None:
    async with federation() as fed:
        channel = await opened(fed)
        fed.sandbox.inject_failures(POST, status=500)  # refused before it ran: not posted
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="second try")
        await send(fed, message)
        (post,) = posts(fed, channel, "second try")
        assert slack_key(fed, message.event_id) == message_key(channel, post["ts"])
        stats = fed.slack.web.statistics()
        assert (stats.post_lookups, stats.posts_found) == (1, 0)  # looked, absent: posted

        # a clean Slack error answer says nothing was done: retried without a lookup
        fed.sandbox.inject_failures(POST, status=200, error="service_unavailable")
        again = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS, body="third")
        await send(fed, again)
        assert len(posts(fed, channel, "third")) == 1
        assert fed.slack.web.statistics().post_lookups == 1
        assert fed.pending_events() == []


# -- the lookup fails too ------------------------------------------------------------------

async def test_a_failed_lookup_is_retried_by_the_session_and_never_posts_twice() -> None:
    async with federation() as fed:
        channel = await opened(fed)
        fed.sandbox.inject_failures(POST, drop_connection=True, after_commit=True)
        # every lookup attempt of the first delivery fails (the client makes 3)
        fed.sandbox.inject_failures("conversations.history", count=3)
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="looked for twice")
        await send(fed, message)
        (post,) = posts(fed, channel, "looked for twice")
        assert slack_key(fed, message.event_id) == message_key(channel, post["ts"])
        stats = fed.slack.web.statistics()
        # the first lookup failed; the session's retry looked again before posting
        assert (stats.post_lookups, stats.posts_unconfirmed, stats.posts_found) == (2, 1, 1)
        assert fed.directory.get_message_state(message.event_id, "slack") == {}  # cleared
        assert fed.pending_events() == []


async def test_a_post_that_stays_unconfirmed_fails_to_the_sender_and_is_never_doubled(
) -> None:
    async with federation(retry_window=1.0) as fed:
        channel = await opened(fed)
        fed.sandbox.inject_failures(POST, drop_connection=True, after_commit=True)
        fed.sandbox.inject_failures("conversations.history", count=10_000)
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="maybe there")
        await send(fed, message)
        # the sender is told: not confirmed (it may have arrived; it was not posted twice)
        (outcome,) = fed.pending_events()
        assert isinstance(outcome, DeliveryOutcome)
        assert (outcome.status, outcome.reason, outcome.target_event_id) == (
            "failed", "post_unconfirmed", message.event_id)
        assert len(posts(fed, channel, "maybe there")) == 1
        assert slack_key(fed, message.event_id) is None
        stats = fed.slack.web.statistics()
        assert stats.post_lookups >= 2 and stats.posts_unconfirmed == stats.post_lookups
        # where and since when to look stays beside the message-id map, for any later
        # delivery of the same event (a redelivery, after a restart too)
        state = fed.directory.get_message_state(message.event_id, "slack")
        assert state[UNCONFIRMED_CHANNEL] == channel and float(state[UNCONFIRMED_SINCE]) > 0

        fed.sandbox.inject_failures("conversations.history", count=0)  # Slack reads again
        await send(fed, message)  # delivered again: looked up first, found, not posted
        (post,) = posts(fed, channel, "maybe there")
        assert slack_key(fed, message.event_id) == message_key(channel, post["ts"])
        assert fed.directory.get_message_state(message.event_id, "slack") == {}


# -- after a crash ------------------------------------------------------------------------

async def test_an_interrupted_post_is_found_by_its_metadata_at_start_up() -> None:
    """What the engine asks at start-up for an event a crash interrupted
    (``engine.FindsDeliveries``): the post is found in the session's conversation by
    its metadata, and an event never posted is not."""
    async with federation() as fed:
        channel = await opened(fed)
        message = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                 body="posted just before the crash")
        await send(fed, message)
        (post,) = posts(fed, channel, "posted just before the crash")
        session = fed.directory.find_session(PETER_ADDRESS, JOHN_ADDRESS)
        assert session is not None
        since = fed.engine.clock.now() - 30.0
        assert await fed.slack.find_delivered(message.event_id, session, since) == \
            message_key(channel, post["ts"])
        never = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS, body="never")
        assert await fed.slack.find_delivered(never.event_id, session, since) is None


async def test_a_redelivered_event_the_crash_interrupted_is_looked_up_before_posting(
        ) -> None:
    """Posted before a crash, redelivered by its platform after it: the engine tells the
    adapter (``may_have_delivered``), which finds the post instead of posting again; one
    that was never posted is posted once."""
    async with federation() as fed:
        channel = await opened(fed)
        before = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                body="posted before the crash")
        await send(fed, before)
        (post,) = posts(fed, channel, "posted before the crash")
        # the restarted engine's view: its id map lost, both events interrupted
        await fed.directory.prune_message_ids(fed.engine.clock.now() + 1)
        lost = Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                              body="never posted")
        for event in (before, lost):
            fed.engine.router.interrupted[event.event_id] = LedgerRecord(
                event_id=event.event_id, sender=PETER_ADDRESS, receiver=JOHN_ADDRESS,
                type="im", session_id=post_session(fed),
                accepted_at=fed.engine.clock.now() - 5.0)
            assert await fed.engine.offer(event)  # the platform's redelivery (ledgered)
            await fed.settle()
        assert posts(fed, channel, "posted before the crash") == [post]  # found, not again
        assert slack_key(fed, before.event_id) == message_key(channel, post["ts"])
        assert len(posts(fed, channel, "never posted")) == 1
        assert fed.slack.web.statistics().post_lookups == 2
        assert fed.pending_events() == []  # no failure went back to peter
        assert fed.engine.router.redelivered == {}


def post_session(fed: SlackFederation) -> str:
    session = fed.directory.find_session(PETER_ADDRESS, JOHN_ADDRESS)
    assert session is not None
    return session.session_id
