"""The control API in process: auth, listings, failed sessions, restart, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
import trio.testing

from engine import Address, EngineSettings, Message, session_id_for
from engine._router import RoutingSettings
from engine.testing import LoopbackAdapter
from supervisor._control import ControlApp

from ._harness import JOHN, MARY, PETER, Federation, federation, next_event

TOKEN = "test-token-123"
CRASHY = Address.parse("crashy@widget.test")


@asynccontextmanager
async def control(fed: Federation) -> AsyncIterator[httpx.AsyncClient]:
    app = ControlApp(fed.engine, TOKEN, lambda: {"name": "interlink", "children": []})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://control",
                                 headers={"authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def settings() -> EngineSettings:
    return EngineSettings(shard_count=2, max_attempts=2, max_restarts=1,
                          routing=RoutingSettings(require_accepted_contact=False))


async def say(fed: Federation, source: Address, destination: Address) -> Message:
    message = Message.create(source=source, destination=destination, body="x",
                             timestamp=fed.clock.now())
    adapter = fed.acme if source.domain == "acme.test" else fed.widget
    await adapter.send(message)
    return message


async def test_every_request_without_a_valid_token_is_refused() -> None:
    async with federation() as fed, control(fed) as client:
        await say(fed, JOHN, PETER)
        await fed.settle()
        for headers in ({"authorization": ""}, {"authorization": "Bearer wrong"},
                        {"authorization": f"Basic {TOKEN}"}, {"authorization": "Bearer "}):
            for method, path in (("GET", "/v1/sessions"), ("GET", "/metrics"),
                                 ("GET", "/healthz"), ("POST", "/v1/sessions/restart-failed"),
                                 ("GET", "/v1/tree"), ("GET", "/nope")):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.json() == {"error": "unauthorized",
                                           "detail": "a valid bearer token is required"}
                assert "www-authenticate" in response.headers


async def test_health_readiness_and_tree() -> None:
    async with federation() as fed, control(fed) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v1/tree")).json()["name"] == "interlink"
        assert (await client.get("/v1/nothing")).status_code == 404


async def test_sessions_are_listed_with_filters_and_pages() -> None:
    async with federation(settings=settings()) as fed, control(fed) as client:
        peers = [Address.parse(f"p{i}@widget.test") for i in range(5)]
        for peer in peers:
            await say(fed, JOHN, peer)
        await say(fed, MARY, PETER)
        await fed.settle()
        listing = (await client.get("/v1/sessions")).json()
        assert len(listing["sessions"]) == 6
        assert {s["state"] for s in listing["sessions"]} == {"running"}
        by_user = (await client.get("/v1/sessions", params={"user": str(MARY)})).json()
        assert [{s["a"], s["b"]} for s in by_user["sessions"]] == [{str(MARY), str(PETER)}]
        by_domain = (await client.get("/v1/sessions", params={"domain": "widget.test"})).json()
        assert len(by_domain["sessions"]) == 6
        seen: list[str] = []
        after = ""
        while True:
            page = (await client.get("/v1/sessions", params={"limit": "4", "after": after})).json()
            seen += [s["id"] for s in page["sessions"]]
            if not page["next"] or not page["sessions"]:
                break
            after = page["next"]
        assert sorted(seen) == sorted(s["id"] for s in listing["sessions"])
        assert len(seen) == len(set(seen))
        bad = await client.get("/v1/sessions", params={"state": "sleepy"})
        assert bad.status_code == 400
        assert (await client.get("/v1/sessions", params={"user": "nope"})).status_code == 400


async def test_a_failed_session_is_visible_then_restarted_and_routes_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    widget = LoopbackAdapter("widget", crash_deliveries={CRASHY: 2})
    async with federation(settings=settings(), widget=widget) as fed, control(fed) as client:
        first = await say(fed, JOHN, CRASHY)
        outcome = await next_event(fed.acme)
        assert getattr(outcome, "reason", "") == "internal-error:InjectedCrash"
        await say(fed, JOHN, PETER)
        await fed.settle()
        failed = (await client.get("/v1/sessions", params={"state": "failed"})).json()
        assert [{s["a"], s["b"]} for s in failed["sessions"]] == [{str(JOHN), str(CRASHY)}]
        session = failed["sessions"][0]
        assert session["id"] == session_id_for(JOHN, CRASHY)
        assert session["last_error"] == "InjectedCrash"
        assert session["restarts"] == 2
        assert session["last_error_at"] is not None
        detail = (await client.get(f"/v1/sessions/{session['id']}")).json()
        assert detail["state"] == "failed"

        # While failed, new messages are answered with a failure, not held.
        await say(fed, JOHN, CRASHY)
        outcome = await next_event(fed.acme)
        assert getattr(outcome, "reason", "") == "actor-failed"

        restarted = (await client.post("/v1/sessions/restart-failed")).json()
        assert restarted == {"restarted": [session["id"]]}
        again = await say(fed, JOHN, CRASHY)
        delivered = await next_event(fed.widget)
        while delivered.event_id != again.event_id:
            delivered = await next_event(fed.widget)
        assert first.event_id != again.event_id
        state = (await client.get(f"/v1/sessions/{session['id']}")).json()["state"]
        assert state == "running"


async def test_operator_stop_start_and_unknown_ids() -> None:
    async with federation(settings=settings()) as fed, control(fed) as client:
        await say(fed, JOHN, PETER)
        await fed.settle()
        session_id = session_id_for(JOHN, PETER)
        stopped = (await client.post(f"/v1/sessions/{session_id}/stop")).json()
        assert stopped["id"] == session_id
        await trio.testing.wait_all_tasks_blocked()
        assert (await client.get(f"/v1/sessions/{session_id}")).json()["state"] == "passive"
        started = (await client.post(f"/v1/sessions/{session_id}/start")).json()
        assert started["state"] == "running"
        assert (await client.get("/v1/sessions/s-nope")).status_code == 404
        assert (await client.post(f"/v1/sessions/{session_id}/explode")).status_code == 404


async def test_metrics_in_prometheus_text_format() -> None:
    async with federation() as fed, control(fed) as client:
        await say(fed, JOHN, PETER)
        await say(fed, PETER, Address.parse("nobody@acme.test"))
        await fed.settle()
        response = await client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert 'interlink_events_total{outcome="delivered",type="im"} 1.0' in text
        assert 'interlink_events_total{outcome="refused",type="im"} 1.0' in text
        assert 'interlink_actors{kind="session",state="running"} 1.0' in text
        assert "interlink_route_latency_seconds_bucket" in text
        assert "interlink_session_handle_seconds_count 1.0" in text
        assert "interlink_sessions_registered 1.0" in text
        assert 'interlink_mailbox_depth{kind="session"} 0.0' in text
        assert 'interlink_shard_runners{kind="session"}' in text
        assert 'interlink_shard_runner_handoffs_total{kind="session"}' in text
        assert "interlink_ledger_open 0.0" in text  # the delivered message was resolved
        assert "interlink_ledger_resolved_at_start_total 0.0" in text
        assert "interlink_duplicates_total 0.0" in text


async def test_say_sends_as_a_loopback_user_and_reports_delivery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with federation() as fed, control(fed) as client:
        response = await client.post("/v1/say", json={
            "source": str(JOHN), "destination": str(PETER), "text": "hello"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["status"] == "delivered"
        got = await next_event(fed.widget)
        assert got.event_id == answer["event_id"]
        bad = await client.post("/v1/say", json={"source": "x", "destination": str(PETER),
                                                 "text": "hello"})
        assert bad.status_code == 400
        unknown: dict[str, Any] = {"source": "a@nowhere.test", "destination": str(PETER),
                                   "text": "hi"}
        not_loopback = await client.post("/v1/say", json=unknown)
        assert not_loopback.status_code == 409
        assert not_loopback.json()["error"] == "not_loopback"
        huge = await client.post("/v1/say", content=b"x" * 70_000)
        assert huge.status_code == 413
        for wait in (-1, 61, "soon"):
            too_long = await client.post("/v1/say", json={
                "source": str(JOHN), "destination": str(PETER), "text": "x", "wait": wait})
            assert too_long.status_code == 400, wait


async def test_say_to_a_stranger_is_refused_with_the_reason_and_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stranger = Address.parse("paul@widget.test")
    async with federation() as fed, control(fed) as client:
        response = await client.post("/v1/say", json={
            "source": str(JOHN), "destination": str(stranger), "text": "hello"})
        assert response.status_code == 409
        answer = response.json()
        assert (answer["error"], answer["status"], answer["reason"]) == \
            ("refused", "refused", "not-a-contact")
        assert answer["detail"].startswith("the sender and the recipient are not accepted "
                                           "contacts")
        await fed.settle()
        assert fed.widget.delivered_nowait() == []  # nothing was sent
        assert fed.acme.delivered_nowait() == []  # and nobody was notified


async def test_say_reports_a_failed_delivery_with_its_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with federation() as fed, control(fed) as client:
        fed.widget.fail_next("unknown-user")
        response = await client.post("/v1/say", json={
            "source": str(JOHN), "destination": str(PETER), "text": "hello"})
        assert response.status_code == 502
        answer = response.json()
        assert (answer["status"], answer["reason"]) == ("failed", "unknown-user")
        assert answer["detail"] == "the recipient's platform has no such user"
        assert answer["event_id"]


async def test_say_without_waiting_reports_it_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with federation() as fed, control(fed) as client:
        fed.widget.fail_next("busy", retryable=True, times=1000)  # retried, never delivered
        response = await client.post("/v1/say", json={
            "source": str(JOHN), "destination": str(PETER), "text": "hello", "wait": 0})
        assert response.status_code == 202
        assert response.json()["status"] == "accepted"
        waited = await client.post("/v1/say", json={
            "source": str(JOHN), "destination": str(PETER), "text": "again", "wait": 1})
        assert (waited.status_code, waited.json()["status"]) == (202, "accepted")
