"""What the webhook adapter's ``AdapterStats`` show (issue #13 item 6): inbound through the
real adapter and engine (the engine's port counts events, the endpoint replays and bad
input), and the ``interlink_adapter_*`` series of a scrape; outbound 429s and Retry-After
waits in the poster, on trio's MockClock."""

from __future__ import annotations

import httpx
import msgspec
import pytest
import trio

from adapters.webhook import parse_secret
from adapters.webhook._delivery import DeliveryPolicy, Poster
from engine import UNKNOWN_TYPE, AdapterStats, Message
from supervisor._control import ControlApp
from supervisor._metrics import AdapterCollector

from .conftest import JOHN, STRANGER, WENDY, Answer, message, new_secret, webhook_world

DEADLINE = 20
TOKEN = "metrics-token"


async def test_inbound_counts_and_dedupe_hits_reach_metrics() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            client = world.client
            body = msgspec.json.encode(message("p-1", "hello"))
            headers = client.signed(body, webhook_id="msg_once")
            assert (await client.post(body, headers=headers)).status_code == 202
            for _ in range(2):  # the partner did not hear the 202: it sends it again
                replay = await client.post(body, headers=client.signed(
                    body, webhook_id="msg_once"))
                assert replay.json()["status"] == "duplicate"
            garbage = b'{"type": "message.created"'
            assert (await client.post(garbage)).status_code == 400
            not_served = message("p-2", "from acme", sender=JOHN, to=JOHN)
            assert (await client.post(not_served)).status_code == 403
            no_route = message("p-3", "to nowhere", to=STRANGER)
            assert (await client.post(no_route)).status_code == 404
            await world.acme_gets()
            stats = world.engine.adapter_stats("webhook")
            assert stats.dedupe_hits == 2
            assert stats.inbound == {("im", "accepted"): 1, ("im", "refused"): 2,
                                     (UNKNOWN_TYPE, "malformed"): 1}
            app = ControlApp(world.engine, TOKEN, lambda: {"name": "interlink", "children": []})
            app.registry.register(AdapterCollector(world.engine))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://control") as control:
                text = (await control.get(
                    "/metrics", headers={"authorization": f"Bearer {TOKEN}"})).text
    for series in (
            'interlink_adapter_dedupe_hits_total{adapter="webhook"} 2.0',
            'interlink_adapter_inbound_total{adapter="webhook",outcome="accepted",type="im"} 1.0',
            'interlink_adapter_inbound_total{adapter="webhook",outcome="refused",type="im"} 2.0',
            'interlink_adapter_inbound_total{adapter="webhook",outcome="malformed",'
            'type="unknown"} 1.0',
            'interlink_adapter_rate_limited_total{adapter="webhook"} 0.0'):
        assert series in text, series


# -- outbound: the poster, deterministic --------------------------------------------------------

SECRET = new_secret()


def _poster(answers: list[httpx.Response], stats: AdapterStats) -> Poster:
    def partner(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    return Poster(url="https://partner.example/events", key=parse_secret(SECRET),
                  http=httpx.AsyncClient(transport=httpx.MockTransport(partner)),
                  policy=DeliveryPolicy(delivery_budget=30.0),
                  wall_clock=trio.current_time, adapter_stats=stats)


async def test_a_429_with_retry_after_is_counted_and_its_wait_measured(
        autojump_clock: object) -> None:
    stats = AdapterStats("webhook")
    poster = _poster([httpx.Response(429, headers={"retry-after": "7"}),
                      httpx.Response(200)], stats)
    await poster.post("msg_a", b"{}")
    assert stats.rate_limited == 1
    assert stats.rate_limit_wait == pytest.approx(7.0)


async def test_a_later_delivery_held_by_the_partners_retry_after_waits_too(
        autojump_clock: object) -> None:
    stats = AdapterStats("webhook")
    answers = [httpx.Response(503, headers={"retry-after": "20"}), httpx.Response(200),
               httpx.Response(200)]
    poster = _poster(answers, stats)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poster.post, "msg_first", b"{}")  # 503 at 0 s: waits 20 s
        await trio.sleep(5)
        await poster.post("msg_second", b"{}")  # held from 5 s until 20 s
    assert answers == []
    assert stats.rate_limited == 0  # a 503 is not a 429; its Retry-After is still a wait
    assert stats.rate_limit_wait == pytest.approx(20.0 + 15.0)


async def test_backoff_without_retry_after_is_not_a_rate_limit_wait(
        autojump_clock: object) -> None:
    stats = AdapterStats("webhook")
    poster = _poster([httpx.Response(500), httpx.Response(200)], stats)
    await poster.post("msg_b", b"{}")
    assert (stats.rate_limited, stats.rate_limit_wait) == (0, 0.0)


async def test_a_partners_429_with_retry_after_is_counted_and_waited() -> None:
    with trio.fail_after(20):
        async with webhook_world() as world:
            world.partner.answer_next(Answer(429, {"error": "slow down"},
                                             {"retry-after": "1"}))
            await world.acme.send(Message.create(source=JOHN, destination=WENDY,
                                                 body="after the 429"))
            received = await world.partner.next_received()
            assert received.payload["data"]["text"] == "after the 429"
            await world.engine.actors.drain()
            stats = world.engine.adapter_stats("webhook")
            assert stats.rate_limited == 1
            assert stats.rate_limit_wait >= 1.0
            assert stats.outbound[("im", "delivered")] == 1
