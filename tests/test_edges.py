"""Inbound edges never wait on someone else's I/O (issue #21 item 5, the core side).

- ``EnginePort.offer`` never waits for mailbox room: a full mailbox raises
  ``MailboxFullError`` with nothing routed, and the event offered again later
  is delivered once, in order.
- A refusal notice goes through the sender's notice actor: the inbound call
  returns while the sender's own platform is still busy delivering it.
- One stuck conversation does not delay another.
- ``EnginePort.refusal`` answers with the router's own rules.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine import (
    Address,
    ContactRecord,
    DeliveryOutcome,
    DeliveryResult,
    EngineSettings,
    Event,
    MailboxFullError,
    Message,
    SessionRecord,
)
from engine.testing import LoopbackAdapter

from ._harness import JOHN, PETER, federation, next_event

PAUL = Address.parse("paul@widget.test")
NOBODY = Address.parse("nobody@acme.test")


class GatedLoopback(LoopbackAdapter):
    """A loopback platform whose deliveries to ``held`` wait until ``gate`` is set."""

    def __init__(self, name: str, held: Address) -> None:
        super().__init__(name)
        self.held = held
        self.gate = trio.Event()
        self.waiting = 0

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        if event.destination == self.held and not self.gate.is_set():
            self.waiting += 1
            await self.gate.wait()
        return await super().deliver(event, session)


def message(source: Address, destination: Address, text: str) -> Message:
    return Message.create(source=source, destination=destination, body=text)


async def test_offer_answers_busy_on_a_full_mailbox_and_loses_nothing() -> None:
    widget = GatedLoopback("widget", held=PETER)
    settings = EngineSettings(shard_count=1, mailbox_capacity=2)
    async with federation(widget=widget, settings=settings) as fed:
        sent = [message(JOHN, PETER, str(i)) for i in range(4)]
        await fed.engine.offer(sent[0])
        await trio.testing.wait_all_tasks_blocked()
        assert widget.waiting == 1  # the session is inside deliver, its mailbox empty
        await fed.engine.offer(sent[1])
        await fed.engine.offer(sent[2])
        routed = fed.engine.router.routed
        with pytest.raises(MailboxFullError):
            await fed.engine.offer(sent[3])
        assert fed.engine.router.routed == routed, "nothing routed for a busy answer"
        widget.gate.set()
        await fed.settle()
        await fed.engine.offer(sent[3])  # the platform's retry
        received = [(await next_event(widget)).event_id for _ in range(4)]
        assert received == [e.event_id for e in sent]
        await fed.settle()
        assert widget.delivered_nowait() == []


async def test_a_refusal_notice_never_holds_the_inbound_call() -> None:
    acme = GatedLoopback("acme", held=JOHN)  # John's own platform is slow to deliver
    async with federation(acme=acme) as fed:
        refused = message(JOHN, NOBODY, "hello?")
        with trio.fail_after(5):  # a guard only: the call returns without any wait
            await fed.engine.offer(refused)
        await trio.testing.wait_all_tasks_blocked()
        assert acme.waiting == 1, "the notice waits in John's notice actor, not in offer()"
        acme.gate.set()
        outcome = await acme.next_delivered()
        assert isinstance(outcome, DeliveryOutcome)
        assert (outcome.status, outcome.reason, outcome.target_event_id) == (
            "failed", "unknown-address", refused.event_id)


async def test_one_stuck_conversation_does_not_delay_another() -> None:
    widget = GatedLoopback("widget", held=PETER)
    async with federation(widget=widget, settings=EngineSettings(shard_count=1)) as fed:
        for owner, contact in ((JOHN, PAUL), (PAUL, JOHN)):
            await fed.directory.put_contact(ContactRecord(
                owner=owner, contact=contact, state="accepted", requested_by=JOHN,
                updated_at=0.0))
        await fed.engine.offer(message(JOHN, PETER, "stuck"))
        await trio.testing.wait_all_tasks_blocked()
        to_paul = message(JOHN, PAUL, "flows")
        await fed.engine.offer(to_paul)
        with trio.fail_after(5):  # a guard: Paul's message needs no wait at all
            delivered = await next_event(widget)
        assert delivered.event_id == to_paul.event_id
        assert widget.waiting == 1  # Peter's conversation is still stuck meanwhile
        widget.gate.set()
        assert (await next_event(widget)).destination == PETER


async def test_refusal_answers_with_the_routers_rules() -> None:
    async with federation() as fed:
        assert fed.engine.refusal(message(JOHN, PETER, "ok")) is None
        assert fed.engine.refusal(message(JOHN, NOBODY, "x")) == "unknown-address"
        assert fed.engine.refusal(message(JOHN, PAUL, "x")) == "not-a-contact"
        assert fed.engine.refusal(message(JOHN, Address.parse("a@nowhere.test"), "x")) \
            == "no-route:nowhere.test"
