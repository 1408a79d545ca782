"""The Web API client: against the sandbox over real HTTP (rate limits on, scaled up so
the file runs in seconds), and its pacing on trio's MockClock without a network."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, cast

import httpx
import msgspec
import pytest
import trio
import trio.testing

from adapters.slack._client import METHOD_TIERS, SlackWebClient, WebApiSettings
from adapters.slack._errors import SlackApiError, is_transient, translate_httpx_error
from adapters.slack._pacing import Adaptation, Budget, Pacer, TokenBucket
from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings

from ..slack_sandbox._kit import BOT, GENERAL, JOHN, MARY, SECRET, make_seed, running

TEAM = "T0ACME"
BOT_TOKEN = "xoxb-interlink"
POST = "chat.postMessage"

#: Slack's limits, 100 times faster per channel: 100 posts/s, burst 3
SANDBOX = SandboxSettings(rate_limits=RateLimitSettings(post_message_per_second=100.0,
                                                        post_message_burst=3))


def settings_for(sandbox: Sandbox, **overrides: Any) -> WebApiSettings:
    """The client paced a little under the sandbox (80/s, burst 2), retrying quickly."""
    values: dict[str, Any] = {
        "base_url": sandbox.api_url, "post_message_per_second": 80.0,
        "post_message_burst": 2, "post_message_workspace_per_minute": 60_000.0,
        "post_message_workspace_burst": 100, "timeout": 2.0, "initial_backoff": 0.01,
        "max_backoff": 0.05, "retry_window": 2.0}
    values.update(overrides)
    return WebApiSettings(**values)


@asynccontextmanager
async def client_for(sandbox: Sandbox, *, hooks: dict[str, list[Any]] | None = None,
                     **overrides: Any) -> AsyncIterator[SlackWebClient]:
    async with httpx.AsyncClient(trust_env=False, event_hooks=hooks) as http, \
            SlackWebClient(settings=settings_for(sandbox, **overrides), http=http) as client:
        yield client


def texts(sandbox: Sandbox, channel: str) -> list[str]:
    return [m["text"] for m in sandbox.messages(channel)]


@contextmanager
def webapi_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record the client logs, whatever the logging configuration."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("interlink.slack.webapi")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def assert_content_free(records: list[logging.LogRecord], *secrets: str) -> None:
    assert records
    for record in records:
        rendered = record.getMessage() + json.dumps(record.__dict__, default=str)
        for secret in secrets:
            assert secret not in rendered


# -- calls and errors ---------------------------------------------------------------------------

async def test_an_ok_call_returns_slacks_answer() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        me = await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM)
        assert (me["ok"], me["user_id"], me["team_id"]) == (True, BOT, TEAM)
        user = await client.call("users.info", token=BOT_TOKEN, team_id=TEAM,
                                 args={"user": JOHN})
        assert user["user"]["name"] == "john"
        posted = await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                                   args={"channel": GENERAL, "text": "hello"})
        assert posted["channel"] == GENERAL and posted["ts"]
        assert texts(sandbox, GENERAL) == ["hello"]
        stats = client.statistics()
        assert (stats.calls, stats.ratelimited, stats.retries, stats.errors) == (3, 0, 0, 0)


async def test_chat_methods_send_json_and_the_rest_forms_like_slack_sdk() -> None:
    sent: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request)

    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox, hooks={"request": [keep]}) as client:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
        await client.call(POST, token=BOT_TOKEN, team_id=TEAM, args={
            "channel": GENERAL, "text": "hi", "blocks": blocks, "unfurl_links": False,
            "thread_ts": None})
        opened = await client.call("conversations.open", token=BOT_TOKEN, team_id=TEAM,
                                   args={"users": [JOHN, MARY], "return_im": False,
                                         "prevent_creation": None})
        assert opened["channel"]["id"]
        post, form = sent
        assert str(post.url) == sandbox.api_url + POST
        assert post.method == form.method == "POST"
        assert post.headers["authorization"] == form.headers["authorization"] == \
            f"Bearer {BOT_TOKEN}"
        assert post.headers["content-type"] == "application/json; charset=utf-8"
        assert json.loads(post.content) == {"channel": GENERAL, "text": "hi", "blocks": blocks,
                                            "unfurl_links": False}
        assert form.headers["content-type"] == "application/x-www-form-urlencoded"
        assert form.content == b"users=U0JOHN%2CU0MARY&return_im=0"
        assert sandbox.messages(GENERAL)[0]["blocks"][0]["text"] == blocks[0]["text"]


async def test_a_permanent_error_raises_at_once_with_slacks_code() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        with pytest.raises(SlackApiError) as caught:
            await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                              args={"channel": "C0NOPE", "text": "secret words"})
        error = caught.value
        assert (error.error, error.method, error.retryable, error.status) == (
            "channel_not_found", POST, False, 200)
        assert str(error) == "chat.postMessage: channel_not_found"  # and nothing else
        with pytest.raises(SlackApiError) as caught:
            await client.call("auth.test", token="xoxb-wrong", team_id=TEAM)
        assert (caught.value.error, caught.value.retryable, caught.value.auth_failed) == (
            "invalid_auth", False, True)
        with pytest.raises(SlackApiError) as caught:
            await client.call("no.suchMethod", token=BOT_TOKEN, team_id=TEAM)
        assert (caught.value.error, caught.value.status, caught.value.retryable) == (
            "unknown_method", 404, False)
        stats = client.statistics()
        assert (stats.calls, stats.retries, stats.errors) == (3, 0, 3)


async def test_missing_scope_says_which_scope_was_needed() -> None:
    seed = make_seed(scopes='"chat:write", "channels:history", "commands"')
    async with running(seed, settings=SANDBOX) as sandbox, client_for(sandbox) as client:
        with pytest.raises(SlackApiError) as caught:
            await client.call("users.info", token=BOT_TOKEN, team_id=TEAM,
                              args={"user": JOHN})
        assert (caught.value.error, caught.value.needed, caught.value.retryable) == (
            "missing_scope", "users:read", False)


@pytest.mark.parametrize(("error", "retryable"), [
    ("internal_error", True), ("fatal_error", True), ("service_unavailable", True),
    ("request_timeout", True), ("ratelimited", True), ("http_500", True),
    ("http_503", True), ("timeout", True), ("connection_error", True),
    ("channel_not_found", False), ("not_in_channel", False), ("is_archived", False),
    ("token_revoked", False), ("token_expired", False), ("invalid_auth", False),
    ("account_inactive", False), ("missing_scope", False), ("message_not_found", False),
    ("cant_update_message", False), ("cant_delete_message", False), ("msg_too_long", False),
    ("invalid_arguments", False), ("http_404", False), ("http_5000", False),
    ("some_new_code", False),
])
def test_error_codes_are_classified(error: str, retryable: bool) -> None:
    assert is_transient(error) is retryable
    assert SlackApiError(error, method="m").retryable is retryable


def test_every_httpx_exception_is_translated() -> None:
    request = httpx.Request("POST", "https://slack.com/api/auth.test")
    kinds = [obj for obj in vars(httpx).values()
             if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(kinds) > 20
    for kind in kinds:
        exc: Exception
        if issubclass(kind, httpx.HTTPStatusError):
            exc = kind("x", request=request, response=httpx.Response(500, request=request))
        elif issubclass(kind, httpx.StreamError) and kind is not httpx.StreamError:
            exc = cast(Callable[[], Exception], kind)()  # these take no message
        else:
            exc = kind("x")
        translated = translate_httpx_error(exc, "auth.test")
        assert translated.error != "unexpected_http_error", kind
        assert translated.method == "auth.test"
    assert translate_httpx_error(httpx.ReadTimeout("x"), "m").error == "timeout"
    assert translate_httpx_error(httpx.ConnectError("x"), "m").retryable


# -- rate limits ----------------------------------------------------------------------------

async def test_a_flood_of_200_posts_arrives_complete_in_order_without_a_429() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        for i in range(200):
            await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                              args={"channel": GENERAL, "text": f"m{i}"})
        assert texts(sandbox, GENERAL) == [f"m{i}" for i in range(200)]
        assert sandbox.statistics().ratelimited == 0
        stats = client.statistics()
        assert (stats.calls, stats.ratelimited, stats.retries) == (200, 0, 0)
        assert stats.waited > 0  # the client did the pacing, not Slack


class StillUntilRefused:
    """Sandbox wall time that stands still until its first 429, then runs.

    The burst and the refusal happen at one instant however slow the machine.
    """

    def __init__(self) -> None:
        self.start = time.time()
        self.sandbox: Sandbox | None = None

    def now(self) -> float:
        if self.sandbox is None or self.sandbox.limiter.limited < 1:
            return self.start
        return max(self.start, time.time())


async def test_a_429_on_one_channel_does_not_delay_another() -> None:
    clock = StillUntilRefused()
    settings = SandboxSettings(rate_limits=RateLimitSettings(post_message_per_second=50.0,
                                                             post_message_burst=3))
    refused = trio.Event()

    async def watch(response: httpx.Response) -> None:
        if response.status_code == 429:
            refused.set()

    done_a: list[int] = []
    async with running(make_seed(), settings=settings, clock=clock) as sandbox, \
            client_for(sandbox, hooks={"response": [watch]},  # far looser than the sandbox
                       post_message_per_second=1000.0, post_message_burst=100) as client:
        clock.sandbox = sandbox

        async def flood_a() -> None:
            for i in range(6):
                await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                                  args={"channel": GENERAL, "text": f"a{i}"})
                done_a.append(i)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood_a)
            await refused.wait()  # a3 was refused: Retry-After 1 s on #general
            for i in range(3):
                await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                                  args={"channel": SECRET, "text": f"b{i}"})
            # every post to #secret went through while #general still waits out its penalty
            assert done_a == [0, 1, 2]
            assert client.pacer.penalty_left((TEAM, POST, GENERAL)) > 0
            assert client.pacer.penalty_left((TEAM, POST, SECRET)) == 0
        assert done_a == list(range(6))
        assert texts(sandbox, GENERAL) == [f"a{i}" for i in range(6)]
        assert texts(sandbox, SECRET) == [f"b{i}" for i in range(3)]
        assert sandbox.statistics().ratelimited == 1
        stats = client.statistics()
        assert (stats.ratelimited, stats.retries, stats.errors) == (1, 1, 0)


async def test_a_429_past_the_wait_budget_raises_retryable_ratelimited() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox, max_rate_limit_wait=5.0) as client:
        sandbox.inject_failures("users.info", status=429, error="ratelimited", retry_after=30)
        with pytest.raises(SlackApiError) as caught:
            await client.call("users.info", token=BOT_TOKEN, team_id=TEAM,
                              args={"user": JOHN})
        assert (caught.value.error, caught.value.retryable, caught.value.retry_after) == (
            "ratelimited", True, 30.0)
        # users.info waits out its penalty; other methods do not
        assert client.pacer.penalty_left((TEAM, "users.info")) > 25
        assert (await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM))["ok"]
        with pytest.raises(SlackApiError) as caught:  # refused locally, nothing sent
            await client.call("users.info", token=BOT_TOKEN, team_id=TEAM,
                              args={"user": JOHN})
        assert caught.value.error == "ratelimited" and caught.value.retryable
        assert client.statistics().calls == 2


async def test_a_conservative_channel_pace_climbs_to_what_slack_allows_then_backs_off(
        ) -> None:
    # The sandbox allows 25 posts/s per channel; the client starts at 5/s, doubling after
    # each 0.2 s of held-back posts without a 429, until Slack's 429 says stop.
    settings = SandboxSettings(rate_limits=RateLimitSettings(post_message_per_second=25.0,
                                                             post_message_burst=1))
    async with running(make_seed(), settings=settings) as sandbox, \
            client_for(sandbox, post_message_per_second=5.0, post_message_burst=1,
                       post_message_max_per_second=1000.0, pacing_raise_after=0.2,
                       pacing_raise_by=1.0) as client:
        for i in range(30):
            await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                              args={"channel": GENERAL, "text": f"m{i}"})
        assert texts(sandbox, GENERAL) == [f"m{i}" for i in range(30)]
        stats = client.statistics()
        assert stats.rates_raised >= 3  # 5 -> 10 -> 20 -> 40 /s: past the sandbox's 25
        assert stats.ratelimited >= 1 and stats.rates_cut >= 1
        assert stats.errors == 0
        rate = client.pacer.rate_of((TEAM, POST, GENERAL))
        assert rate is not None and rate > 5.0  # never back to the conservative start
        # the workspace's budget was never the limit: it did not move
        assert client.pacer.rate_of((TEAM, POST)) == pytest.approx(60_000.0 / 60)


async def test_a_429_at_the_start_rate_is_answered_by_retry_after_alone() -> None:
    # Slack documents 1 post/s per channel: a 429 there is the two clocks' jitter, so the
    # channel keeps its start rate (halving it on every such 429 halved throughput)
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        sandbox.inject_failures(POST, status=429, error="ratelimited", retry_after=1)
        await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                          args={"channel": GENERAL, "text": "m0"})
        assert texts(sandbox, GENERAL) == ["m0"]
        assert client.statistics().ratelimited == 1
        start = client.settings.post_message_per_second
        assert client.pacer.rate_of((TEAM, POST, GENERAL)) == pytest.approx(start)


async def test_a_conservative_workspace_pace_climbs_across_channels() -> None:
    settings = SandboxSettings(rate_limits=RateLimitSettings(
        post_message_per_second=100.0, post_message_burst=3,
        post_message_workspace_per_minute=1800.0, post_message_workspace_burst=2))
    async with running(make_seed(), settings=settings) as sandbox, \
            client_for(sandbox, post_message_workspace_per_minute=300.0,
                       post_message_workspace_burst=1,
                       post_message_workspace_max_per_minute=60_000.0,
                       pacing_raise_after=0.2, pacing_raise_by=1.0) as client:

        async def flood(channel: str) -> None:
            for i in range(20):
                await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                                  args={"channel": channel, "text": f"m{i}"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood, GENERAL)
            nursery.start_soon(flood, SECRET)
        for channel in (GENERAL, SECRET):
            assert texts(sandbox, channel) == [f"m{i}" for i in range(20)]
        rate = client.pacer.rate_of((TEAM, POST))
        assert rate is not None and rate > 300.0 / 60  # it rose above the start
        assert client.statistics().rates_raised >= 2


# -- transient failures -------------------------------------------------------------------------

async def test_transient_failures_are_retried_then_succeed() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        sandbox.inject_failures("auth.test", count=2, status=503, error=None)
        sandbox.inject_failures(POST, count=2, drop_connection=True)
        sandbox.inject_failures("users.info", status=200, error="fatal_error")
        with webapi_logs() as records:
            assert (await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM))["ok"]
            await client.call(POST, token=BOT_TOKEN, team_id=TEAM,
                              args={"channel": GENERAL, "text": "private words"})
            await client.call("users.info", token=BOT_TOKEN, team_id=TEAM,
                              args={"user": JOHN})
        assert texts(sandbox, GENERAL) == ["private words"]  # once
        assert sandbox.statistics().failures_injected == 5
        stats = client.statistics()
        assert (stats.calls, stats.retries, stats.errors) == (8, 5, 0)
        retried = [r.__dict__.get("error") for r in records if r.getMessage() ==
                   "slack call will retry"]
        assert retried == ["http_503", "http_503", "connection_error", "connection_error",
                           "fatal_error"]
        assert_content_free(records, BOT_TOKEN, "private words")


async def test_a_timeout_is_retried() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox, timeout=0.3) as client:
        sandbox.inject_failures("auth.test", delay=10.0)  # answers long after the timeout
        assert (await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM))["ok"]
        assert client.statistics().retries == 1


async def test_exhausting_attempts_or_the_window_raises_a_retryable_error() -> None:
    async with running(make_seed(), settings=SANDBOX) as sandbox:
        async with client_for(sandbox, max_attempts=3) as client:
            sandbox.inject_failures("auth.test", count=1000)
            with pytest.raises(SlackApiError) as caught:
                await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM)
            assert (caught.value.error, caught.value.status, caught.value.retryable) == (
                "internal_error", 500, True)
            assert sandbox.statistics().failures_injected == 3
        async with client_for(sandbox, max_attempts=1000, retry_window=0.3,
                              initial_backoff=0.05, max_backoff=0.05) as client:
            with pytest.raises(SlackApiError) as caught:
                await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM)
            assert caught.value.retryable
            attempts = sandbox.statistics().failures_injected - 3
            assert 2 <= attempts <= 12  # the window ended it, not max_attempts
        sandbox.inject_failures("auth.test", count=0)


# -- files ----------------------------------------------------------------------------------

async def test_upload_and_download_round_trip_a_file() -> None:
    data = bytes(range(256)) * 40

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start:start + 1000]

    async def parts(*pieces: bytes) -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox) as client:
        file = await client.upload_file(
            token=BOT_TOKEN, team_id=TEAM, channel_id=SECRET, filename="notes.txt",
            content=b"quarterly numbers", length=17, title="Q3", initial_comment="for you")
        assert (file.name, file.title, file.size) == ("notes.txt", "Q3", 17)
        streamed = await client.upload_file(
            token=BOT_TOKEN, team_id=TEAM, channel_id=SECRET, filename="blob.bin",
            content=chunks(), length=len(data))
        assert streamed.size == len(data)
        shares = [m for m in sandbox.messages(SECRET) if m.get("subtype") == "file_share"]
        assert [m["files"][0]["id"] for m in shares] == [file.id, streamed.id]
        assert shares[0]["text"] == "for you"

        info = await client.call("files.info", token=BOT_TOKEN, team_id=TEAM,
                                 args={"file": streamed.id})
        async with client.download(info["file"]["url_private"], token=BOT_TOKEN) as download:
            assert download.content_length == len(data)
            assert download.content_type == info["file"]["mimetype"]
            assert await download.read() == data
        async with client.download(file.url_private_download,
                                   token="xoxp-john") as download:
            assert download.content_type.startswith("text/plain")
            assert b"".join([chunk async for chunk in download]) == b"quarterly numbers"

        for url, token, error in [
                (file.url_private, "xoxp-mary", "file_not_found"),  # not in #secret
                (file.url_private, "xoxb-wrong", "file_access_denied"),  # sign-in redirect
                ("https://evil.example/files-pri/x", BOT_TOKEN, "untrusted_url")]:
            with pytest.raises(SlackApiError) as caught:
                async with client.download(url, token=token):
                    pass
            assert (caught.value.error, caught.value.retryable) == (error, False)

    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            client_for(sandbox, max_download_bytes=100, max_upload_bytes=5000) as client:
        file = await client.upload_file(token=BOT_TOKEN, team_id=TEAM, channel_id=SECRET,
                                        filename="big.bin", content=data[:4000], length=4000)
        with pytest.raises(SlackApiError) as caught:
            async with client.download(file.url_private, token=BOT_TOKEN):
                pass
        assert caught.value.error == "file_too_large"
        cases: list[tuple[AsyncIterable[bytes] | bytes, int, str]] = [
            (data, len(data), "file_too_large"),
            (b"abc", 4, "length_mismatch"),
            (chunks(), 100, "length_mismatch"),  # the stream is longer than it said
            (parts(b"abc", b"de"), 10, "length_mismatch"),  # and shorter
            (chunks(), len(data) + 1, "file_too_large")]
        for content, length, error in cases:
            with pytest.raises(SlackApiError) as caught:
                await client.upload_file(token=BOT_TOKEN, team_id=TEAM, channel_id=SECRET,
                                         filename="x.bin", content=content, length=length)
            assert (caught.value.error, caught.value.retryable) == (error, False)


# -- pacing on trio's MockClock, no network -----------------------------------------------------

def test_token_bucket_math() -> None:
    bucket = TokenBucket(2.0, 3.0, now=10.0)
    for _ in range(3):
        assert bucket.wait(10.0) == 0.0
        bucket.take(10.0)
    assert bucket.wait(10.0) == pytest.approx(0.5)
    assert bucket.wait(10.25) == pytest.approx(0.25)
    assert bucket.wait(10.5) == 0.0
    assert not bucket.is_full(10.5)
    assert bucket.is_full(11.5)
    bucket.refill(100.0)
    assert bucket.tokens == 3.0  # never above the burst
    bucket.drain(100.0)
    assert bucket.wait(100.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0, 1.0, now=0.0)


async def test_one_channel_is_paced_at_its_rate_after_its_burst(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    channel = Budget(("c", TEAM, GENERAL), 1.0, 3.0)
    times = []
    for _ in range(7):
        await pacer.wait_turn((TEAM, POST, GENERAL), [channel], deadline=100.0)
        times.append(trio.current_time())
    assert times == pytest.approx([0, 0, 0, 1, 2, 3, 4])
    assert pacer.waited == pytest.approx(4.0)


async def test_the_workspace_budget_is_shared_by_channels(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    workspace = Budget((TEAM, POST), 1.0, 2.0)
    times = []
    for channel in ("C1", "C2", "C3", "C4"):
        await pacer.wait_turn((TEAM, POST, channel),
                              [workspace, Budget((TEAM, POST, channel), 1.0, 3.0)],
                              deadline=100.0)
        times.append(trio.current_time())
    assert times == pytest.approx([0, 0, 1, 2])


async def test_a_penalty_holds_its_own_key_only(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    finished: dict[str, float] = {}
    pacer.penalise((TEAM, POST, "A"), 5.0)

    async def post(channel: str) -> None:
        async with pacer.lane((TEAM, POST, channel), deadline=100.0):
            await pacer.wait_turn((TEAM, POST, channel),
                                  [Budget((TEAM, POST, channel), 1.0, 3.0)], deadline=100.0)
        finished[channel] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(post, "A")
        nursery.start_soon(post, "B")
    assert finished == pytest.approx({"A": 5.0, "B": 0.0})
    assert pacer.penalty_left((TEAM, POST, "A")) == 0.0


async def test_callers_on_one_lane_take_turns_in_arrival_order(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    key = (TEAM, POST, GENERAL)
    order: list[tuple[int, float]] = []

    async def post(i: int) -> None:
        async with pacer.lane(key, deadline=100.0):
            await pacer.wait_turn(key, [Budget(key, 1.0, 1.0)], deadline=100.0)
            order.append((i, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(post, i)
            await trio.testing.wait_all_tasks_blocked()  # i is queued before i + 1
    assert [i for i, _ in order] == list(range(5))
    assert [t for _, t in order] == pytest.approx([0, 1, 2, 3, 4])
    assert pacer.lane_count == 0  # lanes live only while used


async def test_a_turn_past_the_deadline_is_refused_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    key = (TEAM, "users.info")
    budget = Budget(key, 1.0 / 60, 1.0)  # tier 1
    await pacer.wait_turn(key, [budget], deadline=10.0)
    with pytest.raises(SlackApiError) as caught:
        await pacer.wait_turn(key, [budget], deadline=10.0)
    assert (caught.value.error, caught.value.method, caught.value.retryable) == (
        "ratelimited", "users.info", True)
    assert caught.value.retry_after == pytest.approx(60.0)
    assert trio.current_time() == 0.0  # no pointless wait

    async def hold() -> None:
        async with pacer.lane(key, deadline=100.0):
            await trio.sleep(50)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(SlackApiError, match="ratelimited"):
            async with pacer.lane(key, deadline=20.0):
                pass
        assert trio.current_time() == pytest.approx(20.0)


async def test_full_buckets_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(max_buckets=10)
    for i in range(100):
        await pacer.wait_turn((TEAM, POST, f"C{i}"),
                              [Budget((TEAM, POST, f"C{i}"), 1.0, 1.0)], deadline=1e9)
        assert pacer.bucket_count <= 10
        await trio.sleep(1.0)  # each bucket is full again a second later
    assert pacer.lane_count == 0


async def test_a_held_back_budget_steps_up_after_each_quiet_period_to_its_ceiling(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(adaptation=Adaptation(raise_after=5.0, raise_by=0.5))
    key = (TEAM, POST, GENERAL)
    budget = Budget(key, 1.0, 1.0, ceiling=3.0)
    rates = {}
    while trio.current_time() < 30:
        await pacer.wait_turn(key, [budget], deadline=1e9)
        rates[round(trio.current_time(), 3)] = pacer.rate_of(key)
    # busy from t=0 (the second call waited): +50 % at 5, 10, and the ceiling at 15
    assert rates[4.0] == 1.0
    assert rates[5.0] == 1.5
    assert pacer.rate_of(key) == 3.0
    assert pacer.raised == 3


async def test_an_idle_budget_does_not_step_up(autojump_clock: trio.testing.MockClock
                                                 ) -> None:
    pacer = Pacer(adaptation=Adaptation(raise_after=5.0))
    key = (TEAM, POST, GENERAL)
    budget = Budget(key, 1.0, 2.0, ceiling=10.0)
    for _ in range(10):
        for _ in range(2):  # within the burst: nobody waits
            await pacer.wait_turn(key, [budget], deadline=1e9)
        await trio.sleep(10.0)
    assert pacer.rate_of(key) == 1.0 and pacer.raised == 0


async def test_a_429_cuts_the_rate_once_per_retry_after_down_to_a_floor(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(adaptation=Adaptation(back_off_by=0.5, floor=0.1))
    channel = Budget((TEAM, POST, GENERAL), 8.0, 3.0, ceiling=8.0)
    workspace = Budget((TEAM, POST), 10.0, 50.0, ceiling=100.0)
    key = channel.key
    await pacer.wait_turn(key, [workspace, channel], deadline=1e9)
    for _ in range(3):  # a burst of 429s in one Retry-After window is one cut
        pacer.penalise(key, 2.0, drain=[channel], back_off=[(channel, 0.1), (workspace, 1.0)])
    assert pacer.rate_of(key) == 4.0 and pacer.cut == 1
    assert pacer.rate_of(workspace.key) == 10.0  # at its start: a channel's 429 leaves it
    for _ in range(10):
        await trio.sleep(2.0)
        pacer.penalise(key, 2.0, back_off=[(channel, 0.1)])
    assert pacer.rate_of(key) == pytest.approx(0.8)  # 8 * 0.1: the floor
    assert pacer.penalty_left(key) == pytest.approx(2.0)
    assert pacer.penalty_left(workspace.key) == 0.0  # only the key that got the 429


def test_settings_cover_the_methods_a_relay_uses() -> None:
    settings = WebApiSettings()
    assert settings.tier_of("users.getPresence") == 3
    assert settings.tier_of("conversations.create") == 2
    assert settings.tier_of("files.info") == 4
    assert settings.tier_of("never.heardOf") == 3
    for method in ("chat.update", "chat.delete", "chat.postEphemeral", "reactions.add",
                   "reactions.remove", "conversations.open", "conversations.invite",
                   "conversations.info", "conversations.history", "conversations.members",
                   "conversations.setTopic", "conversations.kick", "conversations.leave",
                   "users.info", "users.lookupByEmail", "users.profile.get",
                   "files.getUploadURLExternal", "files.completeUploadExternal",
                   "auth.test", "apps.connections.open", "oauth.v2.access", "team.info",
                   "bots.info"):
        assert method in METHOD_TIERS
    # a little under Slack's 1/20/50/100 per minute
    assert all(ours <= slacks for ours, slacks in
               zip(settings.tier_per_minute, (1.0, 20.0, 50.0, 100.0), strict=True))
    assert msgspec.json.decode(msgspec.json.encode(settings), type=WebApiSettings) == settings


async def test_a_request_waiting_for_a_connection_is_not_timed_out() -> None:
    # the e2e bench's ten workspaces: 1,000 sessions posting at once queued in httpx's
    # pool, the wait counted in the 5 s timeout, and each such timeout ("outcome
    # unknown") started a history lookup that queued too; only time on the wire counts
    async with running(make_seed(), settings=SANDBOX) as sandbox, \
            httpx.AsyncClient(trust_env=False,
                              limits=httpx.Limits(max_connections=1)) as http, \
            SlackWebClient(settings=settings_for(sandbox, timeout=1.0, max_in_flight=1),
                           http=http) as client:
        sandbox.inject_failures("auth.test", count=3, status=200, error="invalid_auth",
                                delay=0.6)
        errors: list[str] = []

        async def call() -> None:
            try:
                await client.call("auth.test", token=BOT_TOKEN, team_id=TEAM)
            except SlackApiError as exc:
                errors.append(exc.error)

        async with trio.open_nursery() as nursery:
            for _ in range(3):  # 1.8 s in all, one at a time: each 0.6 s on the wire
                nursery.start_soon(call)
        assert errors == ["invalid_auth"] * 3  # Slack's answer each time, no timeout
