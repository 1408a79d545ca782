"""Events over HTTP: a slack_bolt app accepts the sandbox's signed events and commands."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import trio
import trio.testing
from slack_bolt import Ack, App, BoltRequest
from slack_sdk import WebClient

from adapters.slack.sandbox import DeliveryTiming, Sandbox, signature
from adapters.slack.sandbox._delivery import next_retry

from ._kit import (
    APP,
    GENERAL,
    JOHN,
    MARY,
    Answer,
    Endpoint,
    Received,
    event_of,
    fast_settings,
    in_thread,
    make_seed,
    running,
)


def bolt_app(sandbox: Sandbox, secret: str, seen: trio.MemorySendChannel[dict[str, Any]]
             ) -> App:
    """A Bolt app as Interlink would write one, reporting what its listeners saw."""
    trio_token = trio.lowlevel.current_trio_token()
    bolt = App(client=WebClient(token="xoxb-interlink", base_url=sandbox.api_url),
               signing_secret=secret, token_verification_enabled=False,
               process_before_response=True)

    def report(item: dict[str, Any]) -> None:
        trio.from_thread.run_sync(seen.send_nowait, item, trio_token=trio_token)

    @bolt.event("message")
    def on_message(event: dict[str, Any]) -> None:
        report(event)

    @bolt.event("reaction_added")
    def on_reaction(event: dict[str, Any]) -> None:
        report(event)

    @bolt.command("/interlink")
    def on_command(ack: Ack, command: dict[str, Any]) -> None:
        ack(text=f"Added {command['text']}")
        report({"type": "command", **command})

    return bolt


class BoltEndpoint:
    """Serves a Bolt app at the app's Request URL (Bolt's own request handling)."""

    def __init__(self) -> None:
        self.bolt: App | None = None

    async def __call__(self, request: Received) -> Answer:
        assert self.bolt is not None
        bolt_request = BoltRequest(body=request.body.decode(), headers=dict(request.headers))
        response = await trio.to_thread.run_sync(self.bolt.dispatch, bolt_request)
        headers = {k: v[0] for k, v in response.headers.items() if v}
        return response.status, headers, response.body.encode()


async def test_bolt_accepts_signed_events_url_verification_and_slash_commands(
        nursery: trio.Nursery) -> None:
    handler = BoltEndpoint()
    endpoint = Endpoint(handler)
    url = await nursery.start(endpoint.serve)
    seen_send, seen = trio.open_memory_channel[dict[str, Any]](100)
    async with running(make_seed(request_url=url), settings=fast_settings(ack_timeout=3.0)
                       ) as sandbox:
        handler.bolt = bolt_app(sandbox, "s3cret", seen_send)
        assert await sandbox.verify_request_url(APP)
        john = WebClient(token="xoxp-john", base_url=sandbox.api_url)
        mary = WebClient(token="xoxp-mary", base_url=sandbox.api_url)
        posted = await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="hi all"))
        event = await seen.receive()
        assert (event["type"], event["user"], event["text"], event["channel"],
                event["channel_type"], event["ts"]) == (
            "message", JOHN, "hi all", GENERAL, "channel", posted["ts"])
        await in_thread(lambda: mary.reactions_add(channel=GENERAL, timestamp=posted["ts"],
                                                   name="wave"))
        reaction = await seen.receive()
        assert (reaction["type"], reaction["user"], reaction["reaction"],
                reaction["item_user"], reaction["item"]) == (
            "reaction_added", MARY, "wave", JOHN,
            {"type": "message", "channel": GENERAL, "ts": posted["ts"]})
        reply = await sandbox.run_command("xoxp-john", "/interlink", "peter@widget.com",
                                          channel=GENERAL)
        assert reply.ok
        command = await seen.receive()
        assert (command["command"], command["text"], command["user_id"],
                command["channel_id"], command["team_id"]) == (
            "/interlink", "peter@widget.com", JOHN, GENERAL, "T0ACME")
        assert command["response_url"].startswith(sandbox.url + "/commands/T0ACME/")
        assert [e["text"] for e in sandbox.ephemeral_messages(JOHN)] == [
            "Added peter@widget.com"]
        # the wire: what Bolt verified
        verification = await endpoint.next()
        assert verification.json()["type"] == "url_verification"
        raw = await endpoint.next()
        assert raw.json()["api_app_id"] == APP and event_of(raw)["text"] == "hi all"
        assert raw.headers["content-type"] == "application/json"
        timestamp = int(raw.headers["x-slack-request-timestamp"])
        assert raw.headers["x-slack-signature"] == signature("s3cret", timestamp, raw.body)


async def test_bolt_rejects_events_signed_with_another_secret_and_slack_retries(
        nursery: trio.Nursery) -> None:
    handler = BoltEndpoint()
    endpoint = Endpoint(handler)
    url = await nursery.start(endpoint.serve)
    seen_send, seen = trio.open_memory_channel[dict[str, Any]](100)
    async with running(make_seed(request_url=url), settings=fast_settings(ack_timeout=3.0)
                       ) as sandbox:
        handler.bolt = bolt_app(sandbox, "not-the-signing-secret", seen_send)
        john = WebClient(token="xoxp-john", base_url=sandbox.api_url)
        await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="hi"))
        last = await sandbox.wait_for_delivery(lambda r: r.attempt == 3)
        attempts = [r for r in sandbox.deliveries.records if r.id == last.id]
        assert [(r.attempt, r.ok, r.status, r.reason) for r in attempts] == [
            (n, False, 401, "http_error") for n in range(4)]
        requests = [await endpoint.next() for _ in range(4)]
        assert [r.headers.get("x-slack-retry-num") for r in requests] == [None, "1", "2", "3"]
        assert {r.headers.get("x-slack-retry-reason") for r in requests[1:]} == {"http_error"}
        assert len({r.json()["event_id"] for r in requests}) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert seen.statistics().current_buffer_used == 0  # no listener ever ran


async def test_slow_receivers_get_retries_and_no_retry_is_honoured(
        nursery: trio.Nursery) -> None:
    answers: list[str] = ["hang", "ok", "refuse", "ok"]

    async def responder(request: Received) -> Answer:
        what = answers.pop(0)
        if what == "hang":
            await trio.sleep_forever()
        if what == "refuse":
            return 500, {"X-Slack-No-Retry": "1"}, b"no thanks"
        return 200, {}, b""

    endpoint = Endpoint(responder)
    url = await nursery.start(endpoint.serve)
    async with running(make_seed(request_url=url), settings=fast_settings(ack_timeout=1.0)
                       ) as sandbox:
        john = WebClient(token="xoxp-john", base_url=sandbox.api_url)
        await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="first"))
        first, retried = await endpoint.next(), await endpoint.next()
        assert first.json()["event_id"] == retried.json()["event_id"]
        assert (retried.headers["x-slack-retry-num"],
                retried.headers["x-slack-retry-reason"]) == ("1", "http_timeout")
        await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="second"))
        refused = await endpoint.next()
        record = await sandbox.wait_for_delivery(
            lambda r: r.id == refused.json()["event_id"])
        assert (record.ok, record.status, record.no_retry) == (False, 500, True)
        await in_thread(lambda: john.chat_postMessage(channel=GENERAL, text="third"))
        third = await endpoint.next()
        assert event_of(third)["text"] == "third"  # not a retry of "second"
        assert answers == []


def test_retry_schedule_is_slacks_scaled() -> None:
    timing = DeliveryTiming()
    assert [next_retry(timing, n, ok=False, no_retry=False) for n in range(4)] == [
        0.0, 60.0, 300.0, None]
    assert next_retry(timing, 0, ok=True, no_retry=False) is None
    assert next_retry(timing, 0, ok=False, no_retry=True) is None
    fast = DeliveryTiming(retry_scale=0.01)
    assert next_retry(fast, 2, ok=False, no_retry=False) == 3.0


async def test_commands_that_get_no_answer_in_time_fail_for_the_person(
        nursery: trio.Nursery) -> None:
    async def hang(request: Received) -> Answer:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    endpoint = Endpoint(hang)
    url = await nursery.start(endpoint.serve)
    async with running(make_seed(request_url=url), settings=fast_settings(ack_timeout=0.3)
                       ) as sandbox:
        reply = await sandbox.run_command("xoxp-john", "/interlink", "list", channel=GENERAL)
        assert (reply.ok, reply.error) == (False, "operation_timeout")
        request = await endpoint.next()
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"


async def test_sandbox_only_endpoints_stand_in_for_the_slack_client(
        nursery: trio.Nursery) -> None:
    async def responder(request: Received) -> Answer:
        if b"event_callback" in request.body:
            return 200, {}, b""
        return 200, {"Content-Type": "application/json"}, b'{"text": "Added"}'

    endpoint = Endpoint(responder)
    url = await nursery.start(endpoint.serve)
    async with running(make_seed(request_url=url), settings=fast_settings(ack_timeout=3.0)
                       ) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.url, trust_env=False) as http:
        john = {"Authorization": "Bearer xoxp-john"}
        ran = await http.post("/sandbox/command", headers=john, data={
            "command": "/interlink", "text": "add peter@widget.com", "channel": GENERAL})
        assert ran.json() == {"ok": True, "response": {"text": "Added"}}
        command = await endpoint.next()
        form = dict(parse_qsl(command.body.decode()))
        assert (form["command"], form["text"], form["user_name"]) == (
            "/interlink", "add peter@widget.com", "john")
        shown = await http.get("/sandbox/ephemeral", headers=john)
        assert [m["text"] for m in shown.json()["messages"]] == ["Added"]

        later = await http.post(form["response_url"],
                                json={"response_type": "in_channel", "text": "Peter added"})
        assert later.json() == {"ok": True}
        posted = event_of(await endpoint.next())
        assert (posted["text"], posted["bot_id"]) == ("Peter added", "B0INTERLINK")
        for _ in range(4):
            assert (await http.post(form["response_url"], json={"text": "x"})).status_code == 200
        used = await http.post(form["response_url"], json={"text": "x"})
        assert (used.status_code, used.json()["error"]) == (404, "used_url")

        home = await http.post("/sandbox/app_home_opened", headers=john,
                               data={"app_id": APP, "tab": "home"})
        dm = home.json()["channel"]
        assert dm == sandbox.dm_id(JOHN, "U0BOT")
        opened = event_of(await endpoint.next())
        assert (opened["type"], opened["user"], opened["channel"], opened["tab"]) == (
            "app_home_opened", JOHN, dm, "home")

        unknown = await http.post("/sandbox/command", headers=john,
                                  data={"command": "/nope", "channel": GENERAL})
        assert unknown.json() == {"ok": False, "error": "unknown_command"}
        as_bot = await http.post("/sandbox/command", data={
            "token": "xoxb-interlink", "command": "/interlink", "channel": GENERAL})
        assert as_bot.json() == {"ok": False, "error": "not_allowed_token_type"}
        assert (await http.post("/sandbox/command")).json()["error"] == "not_authed"
    assert sandbox.messages(GENERAL, as_user=MARY)[-1]["text"] == "Peter added"
    with pytest.raises(LookupError):
        sandbox.messages("C0SECRET", as_user=MARY)
