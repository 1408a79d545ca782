"""The Slack adapter's HTTP inbound side against the sandbox, plus de-duplication rules.

The sandbox delivers signed events and slash commands to a :class:`SlackEventsApp`
served by :func:`serve_http` on a free port; bad requests are sent by hand with
httpx. The de-duplicator's tests run on trio's MockClock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from adapters.slack._inbound import SlackEventsApp
from adapters.slack._views import EventsBody, SlackEvent
from adapters.slack.sandbox import DeliveryRecord, Sandbox, signature
from engine import Deduplicator, UnavailableError
from engine.asgi import serve_http
from tests.slack_sandbox._kit import APP, GENERAL, JOHN, fast_settings, make_seed, running

SECRET = "s3cret"
#: wall-clock seconds the bare app believes it is (the signature window is checked against it)
NOW = 1_767_225_600
HELP = {"response_type": "ephemeral", "text": "Usage: /interlink add ADDRESS | remove ADDRESS"
        " | list | help"}

Behaviour = Callable[[EventsBody, int], Awaitable[None]]


class RecordingHandler:
    """An InboundHandler that records what it is given; ``behaviour`` can fail or stall.

    ``behaviour(body, n)`` runs before an event counts as taken; ``n`` is how many
    times this event id has been seen (1 the first time).
    """

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour
        #: the event id of every on_event call, in order
        self.calls: list[str] = []
        #: bodies whose on_event returned (the "taken" state)
        self.taken: list[EventsBody] = []
        self.commands: list[dict[str, str]] = []
        self.command_error: Exception | None = None
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def on_event(self, body: EventsBody) -> None:
        event_id = body.event_id
        self.calls.append(event_id)
        self._notify()
        if self.behaviour is not None:
            await self.behaviour(body, self.calls.count(event_id))
        self.taken.append(body)
        self._notify()

    async def on_command(self, form: Mapping[str, str]) -> dict[str, Any]:
        self.commands.append(dict(form))
        self._notify()
        if self.command_error is not None:
            raise self.command_error
        return HELP

    async def wait_taken(self, count: int) -> list[EventsBody]:
        while len(self.taken) < count:
            await self._changed.wait()
        return self.taken

    async def wait_calls(self, count: int) -> None:
        while len(self.calls) < count:
            await self._changed.wait()

    def taken_ids(self) -> list[str]:
        return [body.event_id for body in self.taken]


def event_of(body: EventsBody) -> SlackEvent:
    """The inner event of a body the handler took (every event_callback has one)."""
    assert body.event is not None
    return body.event


@asynccontextmanager
async def serving(app: SlackEventsApp) -> AsyncIterator[str]:
    """``app`` served on a free loopback port: its base URL."""
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(serve_http, app, host="127.0.0.1", port=0,
                                                graceful_timeout=0.5))
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


def make_app(handler: RecordingHandler, **options: Any) -> SlackEventsApp:
    return SlackEventsApp(signing_secret=SECRET, handler=handler, dedupe=Deduplicator(),
                          **options)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client per test (making one costs ~0.1 s of TLS set-up)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def post_message(http: httpx.AsyncClient, sandbox: Sandbox, text: str, *,
                       token: str = "xoxp-john", channel: str = GENERAL) -> str:
    """A person posts ``text`` (as from the Slack client); the message's ts."""
    answer = await http.post(sandbox.api_url + "chat.postMessage",
                             headers={"Authorization": f"Bearer {token}"},
                             json={"channel": channel, "text": text})
    body = answer.json()
    assert body["ok"], body
    ts: str = body["ts"]
    return ts


def event_body(event_id: str = "Ev0TEST1", **extra: Any) -> dict[str, Any]:
    return {"token": "t", "team_id": "T0ACME", "api_app_id": APP, "type": "event_callback",
            "event_id": event_id, "event_time": NOW,
            "event": {"type": "message", "channel": GENERAL, "user": JOHN, "text": "hi",
                      "ts": "1767225600.000100", "event_ts": "1767225600.000100"}, **extra}


def signed(body: bytes, *, secret: str = SECRET, timestamp: int = NOW,
           content_type: str = "application/json") -> dict[str, str]:
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature(secret, timestamp, body)}


@asynccontextmanager
async def bare_app(**options: Any) -> AsyncIterator[tuple[SlackEventsApp, RecordingHandler,
                                                          httpx.AsyncClient]]:
    """An app whose wall clock says NOW, served, and an httpx client pointed at it."""
    handler = RecordingHandler()
    app = make_app(handler, clock=lambda: float(NOW), **options)
    with trio.fail_after(10):
        async with serving(app) as url, httpx.AsyncClient(base_url=url, trust_env=False
                                                          ) as http:
            yield app, handler, http


# -- through the sandbox --------------------------------------------------------------------

async def test_a_users_message_reaches_the_handler_once(http: httpx.AsyncClient) -> None:
    handler = RecordingHandler()
    app = make_app(handler)
    async with serving(app) as url, running(make_seed(request_url=url + "/slack/events"),
                                            settings=fast_settings(ack_timeout=2.0)) as sandbox:
        await post_message(http, sandbox, "hello from john")
        [body] = await handler.wait_taken(1)
        assert (body.type, body.team_id, event_of(body).type, event_of(body).text) \
            == ("event_callback", "T0ACME", "message", "hello from john")
        record = await sandbox.wait_for_delivery(lambda r: r.id == body.event_id)
        assert (record.ok, record.status, record.attempt) == (True, 200, 0)
        assert handler.calls == [body.event_id]
        stats = app.statistics()
        assert (stats.received, stats.taken, stats.duplicates, stats.unavailable) == (1, 1, 0, 0)


async def test_url_verification_answers_the_challenge() -> None:
    handler = RecordingHandler()
    app = make_app(handler)
    async with serving(app) as url, running(make_seed(request_url=url + "/slack/events"),
                                            settings=fast_settings()) as sandbox:
        assert await sandbox.verify_request_url(APP)
        record = await sandbox.wait_for_delivery(lambda r: r.kind == "url_verification")
        assert (record.ok, record.status) == (True, 200)
        assert handler.calls == []


async def test_an_event_redelivered_after_503_is_taken_once(http: httpx.AsyncClient) -> None:
    """UnavailableError, then a handler stalling past the ack budget: 503, retry, taken."""
    async def behaviour(body: EventsBody, seen: int) -> None:
        text = event_of(body).text
        if seen == 1 and text == "unavailable":
            raise UnavailableError("engine busy")
        if seen == 1 and text == "stalls":
            await trio.sleep_forever()  # cancelled when the ack budget runs out

    handler = RecordingHandler(behaviour)
    app = make_app(handler, ack_budget=0.3)
    async with serving(app) as url, running(make_seed(request_url=url + "/slack/events"),
                                            settings=fast_settings(ack_timeout=2.0)) as sandbox:
        await post_message(http, sandbox, "unavailable")
        await post_message(http, sandbox, "stalls")
        taken = await handler.wait_taken(2)
        assert [event_of(b).text for b in taken] == ["unavailable", "stalls"]
        for body in taken:
            event_id = body.event_id

            def acked(record: DeliveryRecord, event_id: str = event_id) -> bool:
                return record.id == event_id and record.ok

            ok = await sandbox.wait_for_delivery(acked)
            assert ok.attempt == 1
            [failed] = [r for r in sandbox.deliveries.records if r.id == event_id and not r.ok]
            assert (failed.attempt, failed.status, failed.reason) == (0, 503, "http_error")
            assert handler.calls.count(event_id) == 2
        assert handler.taken_ids() == [b.event_id for b in taken]
        assert (app.stats.taken, app.stats.unavailable, app.stats.duplicates) == (2, 2, 0)


async def test_a_retry_while_the_first_delivery_is_in_flight_is_not_handled_again(
        http: httpx.AsyncClient) -> None:
    """The handler outlasts the sandbox's ack timeout; its retry waits and gets 200."""
    sandbox_box: list[Sandbox] = []

    async def behaviour(body: EventsBody, seen: int) -> None:
        # still busy when the sandbox gives up on this attempt and retries at once
        await sandbox_box[0].wait_for_delivery(
            lambda r: r.id == body.event_id and r.reason == "http_timeout")

    handler = RecordingHandler(behaviour)
    app = make_app(handler, ack_budget=2.5)
    async with serving(app) as url, running(make_seed(request_url=url + "/slack/events"),
                                            settings=fast_settings(ack_timeout=0.5)) as sandbox:
        sandbox_box.append(sandbox)
        await post_message(http, sandbox, "slow")
        [body] = await handler.wait_taken(1)
        retry = await sandbox.wait_for_delivery(lambda r: r.id == body.event_id and r.ok)
        assert (retry.attempt, retry.status) == (1, 200)
        assert handler.calls == [body.event_id]
        assert (app.stats.taken, app.stats.duplicates) == (1, 1)


async def test_a_poison_event_is_acked_counted_and_not_redelivered(
        caplog: pytest.LogCaptureFixture, http: httpx.AsyncClient) -> None:
    caplog.set_level(logging.DEBUG, logger="interlink.slack.inbound")
    async def behaviour(body: EventsBody, seen: int) -> None:
        if event_of(body).text == "poison":
            raise RuntimeError("secret message text must not reach the log")

    handler = RecordingHandler(behaviour)
    app = make_app(handler)
    async with serving(app) as url, running(make_seed(request_url=url + "/slack/events"),
                                            settings=fast_settings(ack_timeout=2.0)) as sandbox:
        await post_message(http, sandbox, "poison")
        await handler.wait_calls(1)
        record = await sandbox.wait_for_delivery(lambda r: r.kind == "event")
        assert (record.ok, record.status, record.attempt) == (True, 200, 0)
        assert app.stats.handler_errors == 1 and handler.taken == []
        # a later event goes through: the poison one was not redelivered in between
        await post_message(http, sandbox, "next")
        [body] = await handler.wait_taken(1)
        await sandbox.wait_for_delivery(lambda r: r.id == body.event_id and r.ok)
        assert len(handler.calls) == 2
        assert [r.attempt for r in sandbox.deliveries.records if r.kind == "event"] == [0, 0]
    failure = [r for r in caplog.records if r.name == "interlink.slack.inbound"
               and r.levelname == "ERROR"]
    assert len(failure) == 1 and vars(failure[0])["error"] == "RuntimeError"
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records
                      if r.name.startswith("interlink.slack.inbound"))
    assert "event_id" in logged
    assert "poison" not in logged and "secret message" not in logged and SECRET not in logged


async def test_slash_command_gets_the_handlers_ephemeral_reply() -> None:
    handler = RecordingHandler()
    app = make_app(handler)
    async with serving(app) as url, running(make_seed(request_url=url + "/slack/events"),
                                            settings=fast_settings(ack_timeout=2.0)) as sandbox:
        reply = await sandbox.run_command("xoxp-john", "/interlink", "help", channel=GENERAL)
        assert reply.ok and reply.response == HELP
        [form] = handler.commands
        assert (form["command"], form["text"], form["user_id"], form["team_id"],
                form["channel_id"]) == ("/interlink", "help", JOHN, "T0ACME", GENERAL)
        assert form["response_url"].startswith(sandbox.url + "/commands/")
        assert sandbox.ephemeral_messages(JOHN)[-1]["text"] == HELP["text"]

        handler.command_error = UnavailableError("directory down")
        reply = await sandbox.run_command("xoxp-john", "/interlink", "list", channel=GENERAL)
        assert reply.ok and reply.response["response_type"] == "ephemeral"
        assert "try again" in reply.response["text"]
        assert app.stats.commands == 2 and handler.calls == []


# -- bad input, sent by hand ----------------------------------------------------------------

@pytest.mark.parametrize("case", ["forged", "stale", "future", "missing", "not_a_number",
                                  "other_body"])
async def test_bad_signatures_get_401_and_nothing_runs(case: str) -> None:
    body = json.dumps(event_body()).encode()
    headers = {
        "forged": signed(body, secret="not-the-secret"),
        "stale": signed(body, timestamp=NOW - 301),
        "future": signed(body, timestamp=NOW + 301),
        "missing": {"Content-Type": "application/json"},
        "not_a_number": {**signed(body), "X-Slack-Request-Timestamp": "soon"},
        "other_body": signed(b'{"type":"event_callback"}'),
    }[case]
    async with bare_app() as (app, handler, http):
        answer = await http.post("/slack/events", content=body, headers=headers)
        assert answer.status_code == 401
        assert handler.calls == [] and len(app.dedupe) == 0
        assert (app.stats.rejected_signature, app.stats.received) == (1, 0)


async def test_the_signature_window_is_five_minutes_either_way() -> None:
    async with bare_app() as (_, handler, http):
        for n, timestamp in enumerate((NOW - 300, NOW + 300)):
            body = json.dumps(event_body(f"Ev0EDGE{n}")).encode()
            answer = await http.post("/slack/events", content=body,
                                     headers=signed(body, timestamp=timestamp))
            assert answer.status_code == 200
        assert handler.taken_ids() == ["Ev0EDGE0", "Ev0EDGE1"]


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"type": "event_callback", ', "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'{"challenge": "no type"}', "application/json"),
    (json.dumps(event_body(event_id="")).encode(), "application/json"),
    (json.dumps(event_body(event="nonsense")).encode(), "application/json"),
    (json.dumps(event_body(event={"type": "message", "user": 5})).encode(), "application/json"),
    (b'{"type": "url_verification", "challenge": 5}', "application/json"),
    (b"text=hello&user_id=U0JOHN", "application/x-www-form-urlencoded"),
    (b"", "application/json"),
])
async def test_malformed_bodies_get_400(body: bytes, content_type: str) -> None:
    async with bare_app() as (app, handler, http):
        answer = await http.post("/slack/commands", content=body,
                                 headers=signed(body, content_type=content_type))
        assert answer.status_code == 400
        assert handler.calls == [] and handler.commands == []
        assert app.stats.malformed == 1


async def test_a_mistyped_field_is_refused_with_its_path_and_unread_shapes_pass(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="interlink.slack.inbound")
    async with bare_app() as (app, handler, http):
        body = json.dumps(event_body("Ev0BAD", event={
            "type": "message", "text": ["secret words"], "ts": "1.0"})).encode()
        answer = await http.post("/slack/events", content=body, headers=signed(body))
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_event")
        [refused] = [r for r in caplog.records if r.getMessage() == "slack request refused"]
        assert vars(refused)["where"] == "$.event.text"
        assert "secret" not in f"{refused.getMessage()} {vars(refused)}"
        # an event the adapter does not read may have any shape: taken, as its type
        body = json.dumps(event_body("Ev0NEW", event={
            "type": "channel_created", "channel": {"id": "C0NEW", "name": "new"}})).encode()
        answer = await http.post("/slack/events", content=body, headers=signed(body))
        assert answer.status_code == 200
        assert [(b.event_id, event_of(b).type) for b in handler.taken] == [
            ("Ev0NEW", "channel_created")]
        assert (app.stats.malformed, app.stats.taken) == (1, 1)


async def test_oversized_bodies_get_413() -> None:
    limit = 64 * 1024
    async with bare_app(max_body_bytes=limit) as (app, handler, http):
        big = json.dumps(event_body(padding="x" * (limit + 10))).encode()
        answer = await http.post("/slack/events", content=big, headers=signed(big))
        assert answer.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the body grows
            for _ in range(10):
                yield b" " * (limit // 4)

        answer = await http.post("/slack/events", content=chunks(), headers=signed(b""))
        assert answer.status_code == 413

        # a declared length far past the limit is refused before the body is read
        port = http.base_url.port
        assert port is not None
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: application/json\r\n"
                                  b"Content-Length: 104857600\r\n\r\n")
            raw = b""
            while chunk := await stream.receive_some(4096):  # the server closes after it
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 413 ") and raw.endswith(b"request_too_large\"}")
        assert app.stats.oversized == 3 and handler.calls == []


async def test_unknown_body_types_are_acked_counted_and_ignored() -> None:
    async with bare_app() as (app, handler, http):
        body = json.dumps({"type": "mystery_callback", "team_id": "T0ACME"}).encode()
        answer = await http.post("/slack/events", content=body, headers=signed(body))
        assert answer.status_code == 200
        body = b"payload=%7B%22type%22%3A%22block_actions%22%7D"
        answer = await http.post("/slack/events", content=body, headers=signed(
            body, content_type="application/x-www-form-urlencoded"))
        assert answer.status_code == 200
        assert (app.stats.unknown, app.stats.interactive) == (1, 1)
        assert handler.calls == [] and handler.commands == []
        # app_rate_limited has no event_id: it goes to the handler as it is
        body = json.dumps({"type": "app_rate_limited", "team_id": "T0ACME",
                           "minute_rate_limited": NOW, "api_app_id": APP}).encode()
        answer = await http.post("/slack/events", content=body, headers=signed(body))
        assert answer.status_code == 200 and handler.taken[0].type == "app_rate_limited"


async def test_a_duplicate_is_answered_without_the_handler() -> None:
    async with bare_app() as (app, handler, http):
        body = json.dumps(event_body("Ev0DUP")).encode()
        for _ in range(3):
            answer = await http.post("/slack/events", content=body, headers=signed(body))
            assert answer.status_code == 200
        assert handler.calls == ["Ev0DUP"] and app.stats.duplicates == 2


async def test_unavailable_from_a_handlers_nursery_is_still_not_acked() -> None:
    async with bare_app() as (app, handler, http):
        async def behaviour(body: EventsBody, seen: int) -> None:
            if seen == 1:
                raise ExceptionGroup("from a nursery", [UnavailableError("busy")])

        handler.behaviour = behaviour
        body = json.dumps(event_body("Ev0GROUP")).encode()
        statuses = [(await http.post("/slack/events", content=body, headers=signed(body))
                     ).status_code for _ in range(3)]
        assert statuses == [503, 200, 200]
        assert handler.calls == ["Ev0GROUP", "Ev0GROUP"] and handler.taken_ids() == ["Ev0GROUP"]
        assert (app.stats.unavailable, app.stats.handler_errors, app.stats.duplicates) == (1, 0, 1)


async def test_routes_healthz_404_and_405() -> None:
    async with bare_app() as (_, _handler, http):
        answer = await http.get("/healthz")
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        assert (await http.get("/slack/events")).status_code == 405
        assert (await http.post("/healthz")).status_code == 405
        assert (await http.post("/elsewhere", content=b"{}")).status_code == 404


async def test_serve_http_finishes_requests_in_flight_when_cancelled() -> None:
    entered = trio.Event()
    release = trio.Event()

    async def behaviour(body: EventsBody, seen: int) -> None:
        entered.set()
        await release.wait()

    handler = RecordingHandler(behaviour)
    app = make_app(handler, clock=lambda: float(NOW))
    body = json.dumps(event_body("Ev0LATE")).encode()
    answers: list[int] = []
    server = trio.CancelScope()

    async def run_server(*, task_status: trio.TaskStatus[int]) -> None:
        with server:
            await serve_http(app, host="127.0.0.1", port=0, graceful_timeout=5.0,
                             task_status=task_status)

    with trio.fail_after(10):
        async with httpx.AsyncClient(trust_env=False) as http, trio.open_nursery() as outer:
            port: int = await outer.start(run_server)
            url = f"http://127.0.0.1:{port}"

            async def send() -> None:
                answer = await http.post(url + "/slack/events", content=body,
                                         headers=signed(body))
                answers.append(answer.status_code)

            outer.start_soon(send)
            await entered.wait()
            server.cancel()  # serve_http stops accepting, waits for the request
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert answers == [200] and handler.taken_ids() == ["Ev0LATE"]
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(trust_env=False) as http:
                await http.get(url + "/healthz")


def test_bad_app_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ack_budget"):
        make_app(RecordingHandler(), ack_budget=3.0)
