"""Rate limits over HTTP: 429 + Retry-After, and Slack's own retry handler recovers."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler

from adapters.slack._spec import sandbox_rate_limits
from adapters.slack.sandbox import RateLimitSettings, RateLimitTable, Sandbox, SandboxSettings
from adapters.slack.sandbox._cli import build_parser, rate_limits_of
from engine import ConfigError

from ._kit import GENERAL, SECRET, FakeClock, in_thread, make_seed, running


class StillUntilRefusedTwice:
    """Wall time that stands still until the sandbox has refused two calls.

    The burst and the refusals then happen at one instant however slow the
    machine; the retry handler's real sleep afterwards refills the bucket.
    """

    def __init__(self) -> None:
        self.start = time.time()
        self.sandbox: Sandbox | None = None

    def now(self) -> float:
        if self.sandbox is None or self.sandbox.limiter.limited < 2:
            return self.start
        return max(self.start, time.time())


async def test_rate_limit_error_retry_handler_recovers_from_429() -> None:
    clock = StillUntilRefusedTwice()
    async with running(make_seed(), clock=clock) as sandbox:
        clock.sandbox = sandbox
        plain = WebClient(token="xoxb-interlink", base_url=sandbox.api_url)
        patient = WebClient(token="xoxb-interlink", base_url=sandbox.api_url,
                            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])

        def work() -> None:
            for i in range(3):  # the burst chat.postMessage allows per channel
                plain.chat_postMessage(channel=GENERAL, text=f"burst {i}")
            with pytest.raises(SlackApiError) as caught:
                plain.chat_postMessage(channel=GENERAL, text="one too many")
            response = caught.value.response
            assert response.status_code == 429
            assert response.data == {"ok": False, "error": "ratelimited"}
            assert response.headers["Retry-After"] == "1"
            posted = patient.chat_postMessage(channel=GENERAL, text="after waiting")
            assert posted["ok"]

        await in_thread(work)
        # the patient client was refused once more, then its retry went through
        assert sandbox.statistics().ratelimited == 2
        assert [m["text"] for m in sandbox.messages(GENERAL)][-1] == "after waiting"


async def test_limits_can_be_switched_off() -> None:
    settings = SandboxSettings(rate_limits=RateLimitSettings(enabled=False))
    async with running(make_seed(), settings=settings) as sandbox:
        client = WebClient(token="xoxb-interlink", base_url=sandbox.api_url)

        def work() -> None:
            for i in range(30):
                client.chat_postMessage(channel=GENERAL, text=f"m{i}")

        await in_thread(work)
        assert sandbox.statistics().ratelimited == 0


# -- limits from TOML: the seed's [rate_limits], an engine's [sandbox.rate_limits], flags ------

LIMITS_TABLE = """
[rate_limits]
tiers = [1, 20, 50, 100]
channel_per_second = 100
channel_burst = 3
workspace_per_minute = 60
workspace_burst = 4
"""


async def post(http: httpx.AsyncClient, sandbox: Sandbox, channel: str) -> httpx.Response:
    return await http.post(sandbox.api_url + "chat.postMessage",
                           headers={"Authorization": "Bearer xoxb-interlink"},
                           json={"channel": channel, "text": "x"})


async def test_the_seeds_workspace_limit_spans_channels_over_http() -> None:
    clock = FakeClock()
    seed = make_seed(extra=LIMITS_TABLE)
    assert seed.rate_limits is not None
    async with running(seed, clock=clock) as sandbox, \
            httpx.AsyncClient(trust_env=False) as http:
        # 4 posts (the workspace burst) over two channels, each within its channel burst
        statuses = [(await post(http, sandbox, channel)).status_code
                    for channel in (GENERAL, SECRET, GENERAL, SECRET)]
        assert statuses == [200, 200, 200, 200]
        refused = await post(http, sandbox, GENERAL)  # the channel has one left: the
        assert refused.status_code == 429             # workspace refuses
        assert refused.json() == {"ok": False, "error": "ratelimited"}
        assert refused.headers["Retry-After"] == "1"  # 60 a minute: one a second
        clock.advance(1.0)
        assert (await post(http, sandbox, GENERAL)).status_code == 200
        # the channel's own limit: a refusal there takes nothing from the workspace
        clock.advance(10.0)
        for _ in range(3):
            assert (await post(http, sandbox, SECRET)).status_code == 200
        assert (await post(http, sandbox, SECRET)).status_code == 429  # channel burst spent
        assert (await post(http, sandbox, GENERAL)).status_code == 200  # workspace had one
        assert sandbox.statistics().ratelimited == 2


def test_the_engines_rate_limits_are_a_bool_or_a_table() -> None:
    seed = make_seed(extra=LIMITS_TABLE)
    plain = make_seed()
    assert sandbox_rate_limits(False, seed) == RateLimitSettings(enabled=False)
    assert sandbox_rate_limits(True, plain) == RateLimitSettings()  # Slack's
    from_seed = sandbox_rate_limits(True, seed)
    assert (from_seed.post_message_per_second, from_seed.post_message_workspace_per_minute,
            from_seed.post_message_workspace_burst) == (100.0, 60.0, 4)
    table = RateLimitTable(tiers=[2, 30, 60, 120], special_per_minute=100,
                           channel_per_second=0.5, channel_burst=2, workspace_per_minute=300)
    assert sandbox_rate_limits(table, seed) == RateLimitSettings(
        per_minute=(2, 30, 60, 120, 100), post_message_per_second=0.5, post_message_burst=2,
        post_message_workspace_per_minute=300, post_message_workspace_burst=50)
    assert sandbox_rate_limits(RateLimitTable(enabled=False), seed).enabled is False


@pytest.mark.parametrize(("table", "message"), [
    ("channel_burst = 0", "Expected `int` >= 1 - at `$.rate_limits.channel_burst`"),
    ("tiers = [1, 2]", "Expected `array` of length >= 4 - at `$.rate_limits.tiers`"),
    ("channel_rate = 1", "unknown field `channel_rate` - at `$.rate_limits`"),
    ("workspace_per_minute = -1", "Expected `float` >= 0.0 - at "
                                  "`$.rate_limits.workspace_per_minute`"),
])
def test_a_bad_rate_limits_table_names_its_field(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_seed(extra=f"[rate_limits]\n{table}\n")


def test_flags_replace_single_values_of_the_seeds_limits() -> None:
    seed = make_seed(extra=LIMITS_TABLE)
    args = build_parser().parse_args(["--port", "0", "--seed", "x", "--channel-rate", "2",
                                      "--workspace-rate", "600", "--workspace-burst", "9"])
    limits = rate_limits_of(args, seed)
    assert (limits.post_message_per_second, limits.post_message_burst,
            limits.post_message_workspace_per_minute, limits.post_message_workspace_burst) == (
        2.0, 3, 600.0, 9)
    args = build_parser().parse_args(["--port", "0", "--seed", "x", "--no-rate-limits",
                                      "--channel-rate", "2"])
    assert rate_limits_of(args, seed).enabled is False
    assert rate_limits_of(build_parser().parse_args(["--port", "0", "--seed", "x"]),
                          make_seed()) == RateLimitSettings()
