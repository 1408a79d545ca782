"""Rate limits over HTTP: 429 + Retry-After, and Slack's own retry handler recovers."""

from __future__ import annotations

import time

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler

from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings

from ._kit import GENERAL, in_thread, make_seed, running


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
