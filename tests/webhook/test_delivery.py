"""Outbound retries, deterministic: ``httpx.MockTransport`` plays the partner and
``autojump_clock`` makes waits exact (the real-HTTP versions are in test_outbound.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
import trio
from standardwebhooks import Webhook

from adapters.webhook import parse_secret
from adapters.webhook._delivery import DeliveryPolicy, Poster
from engine import Backoff, DeliveryError

from .conftest import new_secret

SECRET = new_secret()
WALL = 1_767_225_600.0


def _poster(handler: Callable[[httpx.Request], httpx.Response], **policy: object) -> Poster:
    transport = httpx.MockTransport(handler)
    http = httpx.AsyncClient(transport=transport)
    return Poster(url="https://partner.example/events", key=parse_secret(SECRET), http=http,
                  policy=DeliveryPolicy(**policy),  # type: ignore[arg-type]
                  wall_clock=lambda: WALL + trio.current_time())


class Script:
    """Answers in order, noting when each request came and verifying its signature."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.times: list[float] = []
        self.ids: list[str] = []
        self.stamps: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        self.ids.append(request.headers["webhook-id"])
        self.stamps.append(request.headers["webhook-timestamp"])
        headers = dict(request.headers)
        # the library checks timestamps against the real clock: sign its view of "now"
        assert Webhook(SECRET).sign(headers["webhook-id"], _when(headers),
                                    request.content.decode()) == headers["webhook-signature"]
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _when(headers: dict[str, str]) -> datetime:
    return datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)


async def test_retry_after_seconds_is_waited_exactly(autojump_clock: object) -> None:
    script = Script(httpx.Response(429, headers={"retry-after": "7"}),
                    httpx.Response(200, json={"id": "p-9"}))
    answer = await _poster(script, delivery_budget=30.0).post("msg_a", b"{}")
    assert answer == b'{"id":"p-9"}'
    assert script.times[1] - script.times[0] == pytest.approx(7.0)
    assert script.ids == ["msg_a", "msg_a"]
    assert script.stamps[0] != script.stamps[1]  # each attempt signed at its own time


async def test_retry_after_as_an_http_date(autojump_clock: object) -> None:
    later = format_datetime(datetime.fromtimestamp(WALL + 4, UTC), usegmt=True)
    script = Script(httpx.Response(503, headers={"retry-after": later}),
                    httpx.Response(204))
    await _poster(script).post("msg_b", b"{}")
    assert script.times[1] - script.times[0] == pytest.approx(4.0)


async def test_without_retry_after_the_backoff_paces_the_attempts(autojump_clock: object
                                                                   ) -> None:
    script = Script(httpx.Response(500), httpx.ConnectError("refused"),
                    httpx.ReadTimeout("slow"), httpx.Response(200))
    backoff = Backoff(initial=1.0, maximum=4.0, jitter=0.0)
    await _poster(script, backoff=backoff, max_attempts=4).post("msg_c", b"{}")
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0])


async def test_attempts_are_bounded(autojump_clock: object) -> None:
    script = Script(*[httpx.Response(502) for _ in range(3)])
    with pytest.raises(DeliveryError) as caught:
        await _poster(script, max_attempts=3).post("msg_d", b"{}")
    assert (caught.value.reason, caught.value.retryable) == ("partner-http-502", True)
    assert len(script.times) == 3


async def test_the_budget_bounds_a_long_retry_after_and_holds_later_deliveries(
        autojump_clock: object) -> None:
    script = Script(httpx.Response(503, headers={"retry-after": "50"}))
    poster = _poster(script, delivery_budget=10.0, max_retry_after=60.0)
    with pytest.raises(DeliveryError) as caught:
        await poster.post("msg_e", b"{}")
    assert caught.value.retryable and len(script.times) == 1
    assert trio.current_time() < 1.0  # gave up at once rather than sleep past the budget
    # the partner said "not for 50 s": the next delivery does not knock before then
    with pytest.raises(DeliveryError) as held:
        await poster.post("msg_f", b"{}")
    assert (held.value.reason, held.value.retryable) == ("partner-busy", True)
    assert len(script.times) == 1


async def test_a_timeout_is_retryable(autojump_clock: object) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    http = httpx.AsyncClient(transport=httpx.MockTransport(hang))
    poster = Poster(url="https://partner.example/events", key=parse_secret(SECRET), http=http,
                    policy=DeliveryPolicy(request_timeout=2.0, delivery_budget=5.0),
                    wall_clock=lambda: WALL)
    with pytest.raises(DeliveryError) as caught:
        await poster.post("msg_g", b"{}")
    assert (caught.value.reason, caught.value.retryable) == ("partner-timeout", True)
    assert trio.current_time() <= 5.0 + 1e-6


@pytest.mark.parametrize(("status", "reason"), [
    (400, "partner-rejected:400"), (401, "partner-refused-signature"),
    (403, "partner-forbidden"), (404, "unknown-user"), (410, "partner-gone"),
    (422, "partner-rejected:422"),
])
async def test_permanent_refusals_are_not_retried(status: int, reason: str,
                                                  autojump_clock: object) -> None:
    script = Script(httpx.Response(status))
    with pytest.raises(DeliveryError) as caught:
        await _poster(script).post("msg_h", b"{}")
    assert (caught.value.reason, caught.value.retryable) == (reason, False)
    assert len(script.times) == 1


async def test_a_huge_answer_is_read_only_in_part(autojump_clock: object) -> None:
    script = Script(httpx.Response(200, content=b"x" * 1_000_000))
    answer = await _poster(script).post("msg_i", b"{}")
    assert len(answer) == 16 * 1024
