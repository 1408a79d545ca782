"""Message metadata (chat.postMessage / chat.update ``metadata``, history and replies with
``include_all_metadata``) judged by Slack's own ``slack_sdk.WebClient``, and faults that
strike after a call committed (``Sandbox.inject_failures(after_commit=True)``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.metadata import Metadata

from adapters.slack.sandbox import RateLimiter, RateLimitSettings, Sandbox, SandboxSettings, World
from adapters.slack.sandbox._events import events_for
from adapters.slack.sandbox._methods import call_method

from ._kit import GENERAL, JOHN, in_thread, make_seed, running

NO_LIMITS = SandboxSettings(rate_limits=RateLimitSettings(enabled=False))
TASK = {"event_type": "task_created", "event_payload": {"id": "TK-1", "priority": 2,
                                                         "tags": [{"name": "a"}]}}
NOW = 1_767_225_600.0


def bot_and_john(sandbox: Sandbox) -> tuple[WebClient, WebClient]:
    return (WebClient(token="xoxb-interlink", base_url=sandbox.api_url),
            WebClient(token="xoxp-john", base_url=sandbox.api_url))


def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        call()
    error: str = caught.value.response["error"]
    return error


async def test_metadata_is_stored_and_shown_only_to_those_who_ask() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox:
        bot, john = bot_and_john(sandbox)

        def work() -> None:
            posted = bot.chat_postMessage(channel=GENERAL, text="task", metadata=TASK)
            assert posted["message"]["metadata"] == TASK  # the poster's own answer
            root = posted["ts"]
            model = Metadata(event_type="task_updated", event_payload={"id": "TK-1"})
            reply = bot.chat_postMessage(channel=GENERAL, text="more", thread_ts=root,
                                         metadata=model)
            plain = john.chat_postMessage(channel=GENERAL, text="no metadata")
            assert "metadata" not in plain["message"]

            listed = bot.conversations_history(channel=GENERAL, include_all_metadata=True)
            by_ts = {m["ts"]: m for m in listed["messages"]}
            assert by_ts[root]["metadata"] == TASK
            assert "metadata" not in by_ts[plain["ts"]]
            # john reads it too: metadata is visible to the workspace's members
            thread = john.conversations_replies(channel=GENERAL, ts=root,
                                                include_all_metadata=True)
            assert [m.get("metadata") for m in thread["messages"]] == [
                TASK, {"event_type": "task_updated", "event_payload": {"id": "TK-1"}}]
            for answer in (bot.conversations_history(channel=GENERAL),
                           bot.conversations_replies(channel=GENERAL, ts=root),
                           bot.conversations_history(channel=GENERAL,
                                                     include_all_metadata=False)):
                assert all("metadata" not in m for m in answer["messages"])

            # chat.update: absent keeps it, a new one replaces it, {} removes it
            kept = bot.chat_update(channel=GENERAL, ts=reply["ts"], text="edited")
            assert kept["message"]["metadata"]["event_type"] == "task_updated"
            replaced = bot.chat_update(channel=GENERAL, ts=reply["ts"], text="again",
                                       metadata={"event_type": "task_done",
                                                 "event_payload": {"id": "TK-1"}})
            assert replaced["message"]["metadata"]["event_type"] == "task_done"
            removed = bot.chat_update(channel=GENERAL, ts=reply["ts"], text="plain",
                                      metadata={})
            assert "metadata" not in removed["message"]
            thread = bot.conversations_replies(channel=GENERAL, ts=root,
                                               include_all_metadata=True)
            assert "metadata" not in thread["messages"][1]

        await in_thread(work)


async def test_metadata_is_checked_as_slack_checks_it() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.api_url, trust_env=False) as http:
        bot, john = bot_and_john(sandbox)

        def work() -> None:
            assert error_of(lambda: john.chat_postMessage(
                channel=GENERAL, text="x", metadata=TASK)) == "metadata_must_be_sent_from_app"
            schema_errors: list[dict[str, Any]] = [
                {"event_type": "t"}, {"event_payload": {}},
                {"event_type": "", "event_payload": {}},
                {"event_type": 3, "event_payload": {}},
                {"event_type": "t", "event_payload": []},
                {"event_type": "t", "event_payload": {}, "extra": 1}]
            for bad in schema_errors:
                assert error_of(lambda bad=bad: bot.chat_postMessage(
                    channel=GENERAL, text="x", metadata=bad)) == "invalid_metadata_schema"
            big = {"event_type": "t", "event_payload": {"blob": "x" * 9000}}
            assert error_of(lambda: bot.chat_postMessage(
                channel=GENERAL, text="x", metadata=big)) == "metadata_too_large"
            root = bot.chat_postMessage(channel=GENERAL, text="root")["ts"]
            assert error_of(lambda: bot.chat_update(
                channel=GENERAL, ts=root, text="x", metadata={"event_type": "t"})) == \
                "invalid_metadata_schema"

        await in_thread(work)
        bearer = {"Authorization": "Bearer xoxb-interlink"}
        # a form carries it as JSON text; text that is not JSON is a format error
        form = await http.post("chat.postMessage", headers=bearer, data={
            "channel": GENERAL, "text": "form", "metadata": json.dumps(TASK)})
        assert form.json()["message"]["metadata"] == TASK
        for text in ("{not json", '["not", "an", "object"]'):
            broken = await http.post("chat.postMessage", headers=bearer, data={
                "channel": GENERAL, "text": "form", "metadata": text})
            assert broken.json() == {"ok": False, "error": "invalid_metadata_format"}
        listed = await http.post("chat.postMessage", headers=bearer, json={
            "channel": GENERAL, "text": "json", "metadata": ["not", "an", "object"]})
        assert listed.json() == {"ok": False, "error": "invalid_metadata_format"}
        # nothing refused was posted
        assert [m["text"] for m in sandbox.messages(GENERAL)] == ["root", "form"]


def test_events_never_carry_metadata() -> None:
    """Golden shapes hold: metadata is Web API only (the poster's answer, and readers
    who ask with include_all_metadata)."""
    world = World(make_seed(), now=NOW)
    limiter = RateLimiter(RateLimitSettings(enabled=False), lambda: NOW)
    outcome = call_method(world, limiter, "chat.postMessage", "xoxb-interlink",
                          {"channel": GENERAL, "text": "hi", "metadata": TASK}, NOW)
    assert outcome.body["ok"] and outcome.body["message"]["metadata"] == TASK
    (change,) = outcome.changes
    envelopes = [d.envelope for d in events_for(world, change, now=NOW)]
    assert envelopes
    assert all("metadata" not in envelope["event"] for envelope in envelopes)


# -- faults after the commit ------------------------------------------------------------------

async def test_a_committed_call_whose_connection_drops_is_posted_and_published() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.api_url, trust_env=False) as http:
        bearer = {"Authorization": "Bearer xoxb-interlink"}
        published = sandbox.statistics().events_published
        sandbox.inject_failures("chat.postMessage", drop_connection=True, after_commit=True)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("chat.postMessage", headers=bearer,
                            json={"channel": GENERAL, "text": "posted", "metadata": TASK})
        (message,) = sandbox.messages(GENERAL)
        assert message["text"] == "posted"
        assert sandbox.statistics().events_published > published  # its events went out
        history = await http.post("conversations.history", headers=bearer, data={
            "channel": GENERAL, "include_all_metadata": "true"})
        assert history.json()["messages"][0]["metadata"] == TASK
        statistics = sandbox.statistics()
        assert (statistics.failures_injected, statistics.api_calls) == (1, 2)


async def test_a_committed_call_can_answer_5xx_or_time_out() -> None:
    async with running(make_seed(), settings=NO_LIMITS) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.api_url, trust_env=False) as http:
        bearer = {"Authorization": "Bearer xoxp-john"}
        sandbox.inject_failures("chat.postMessage", status=503, error=None, retry_after=2,
                                after_commit=True)
        failed = await http.post("chat.postMessage", headers=bearer,
                                 json={"channel": GENERAL, "text": "one"})
        assert (failed.status_code, failed.text, failed.headers["retry-after"]) == (
            503, "injected failure", "2")
        sandbox.inject_failures("chat.postMessage", status=500, after_commit=True)
        failed = await http.post("chat.postMessage", headers=bearer,
                                 json={"channel": GENERAL, "text": "two"})
        assert (failed.status_code, failed.json()) == (
            500, {"ok": False, "error": "internal_error"})
        sandbox.inject_failures("chat.postMessage", delay=30.0, after_commit=True)
        with pytest.raises(httpx.ReadTimeout):
            await http.post("chat.postMessage", headers=bearer,
                            json={"channel": GENERAL, "text": "three"}, timeout=0.3)
        # all three committed, and each only once
        assert [m["text"] for m in sandbox.messages(GENERAL)] == ["one", "two", "three"]
        assert [m["user"] for m in sandbox.messages(GENERAL)] == [JOHN] * 3
        # a fault that is not after_commit still answers instead of the method
        sandbox.inject_failures("chat.postMessage", status=500)
        refused = await http.post("chat.postMessage", headers=bearer,
                                  json={"channel": GENERAL, "text": "never"})
        assert refused.status_code == 500
        assert len(sandbox.messages(GENERAL)) == 3
        assert sandbox.statistics().failures_injected == 4
