"""Crashing sessions never take healthy ones down, and nothing is lost to a crash."""

from __future__ import annotations

import trio
import trio.testing

from engine import Address, DeliveryOutcome, EngineSettings, Message
from engine._router import RoutingSettings
from engine.testing import LoopbackAdapter

from ._harness import JOHN, federation


async def test_100_crashing_sessions_among_10000_do_not_stop_the_healthy_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peers = [Address.parse(f"peer{i}@widget.test") for i in range(10_000)]
    crashing = set(peers[::100])  # 100 of them
    widget = LoopbackAdapter("widget", crash_deliveries={p: 1_000 for p in crashing},
                             outbox_capacity=20_000)
    acme = LoopbackAdapter("acme", outbox_capacity=20_000)
    settings = EngineSettings(shard_count=8, max_attempts=3, max_restarts=2,
                              routing=RoutingSettings(require_accepted_contact=False))
    async with federation(settings=settings, widget=widget, acme=acme) as fed:
        sent = {}
        for peer in peers:
            message = Message.create(source=JOHN, destination=peer, body="hi",
                                     timestamp=fed.clock.now())
            sent[message.event_id] = peer
            await fed.acme.send(message)
        with trio.fail_after(600):
            await fed.settle()
        delivered = {e.event_id for e in fed.widget.delivered_nowait()}
        assert delivered == {eid for eid, peer in sent.items() if peer not in crashing}
        failures = [e for e in fed.acme.delivered_nowait()
                    if isinstance(e, DeliveryOutcome) and e.status == "failed"]
        assert {sent[f.target_event_id] for f in failures} == crashing
        assert {f.reason for f in failures} == {"internal-error:InjectedCrash"}
        failed = fed.engine.actors.list_active(kind="session", state="failed")
        assert len(failed) == 100
        assert len(fed.engine.actors.list_active(kind="session", state="running")) == 9_900


async def test_messages_waiting_in_the_mailbox_survive_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crashy = Address.parse("crashy@widget.test")
    widget = LoopbackAdapter("widget", crash_deliveries={crashy: 1})
    settings = EngineSettings(shard_count=2, max_attempts=3,
                              routing=RoutingSettings(require_accepted_contact=False))
    async with federation(settings=settings, widget=widget) as fed:
        messages = [Message.create(source=JOHN, destination=crashy, body=str(i),
                                   timestamp=fed.clock.now()) for i in range(5)]
        for message in messages:
            await fed.acme.send(message)
        await fed.settle()
        delivered = [e.event_id for e in fed.widget.delivered_nowait()]
        assert delivered == [m.event_id for m in messages], "retried, in order, none lost"
        entries = {e.event_id: e.outcome for e in fed.log.entries()}
        assert all(entries[m.event_id] == "delivered" for m in messages)
