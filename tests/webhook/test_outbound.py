"""Interlink's requests to the partner, over real HTTP on loopback: signed so that the
independent ``standardwebhooks`` library verifies them, carrying Interlink's ids, retried
per Retry-After, and reported to the sender as delivered or failed."""

from __future__ import annotations

import msgspec
import trio

from engine import (
    ContactRecord,
    DeliveryOutcome,
    EngineSettings,
    Message,
    ReactionAdd,
    Retract,
)

from .conftest import JOHN, NOBODY, WENDY, Answer, message, webhook_world

DEADLINE = 20.0


async def test_a_message_to_the_partner_is_signed_and_carries_interlinks_id() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            sent = Message.create(source=JOHN, destination=WENDY, body="hi Wendy",
                                  timestamp=world.engine.clock.now())
            await world.acme.send(sent)
            received = await world.partner.next_received()  # verified by standardwebhooks
            assert received.webhook_id == f"msg_{sent.event_id}"
            assert received.payload["type"] == "message.created"
            data = received.payload["data"]
            assert data["id"] == sent.event_id
            assert (data["from"], data["to"], data["text"]) == (str(JOHN), str(WENDY),
                                                                "hi Wendy")
            assert data["rich"]["blocks"][0]["inlines"][0] == {"type": "text",
                                                               "text": "hi Wendy"}
            await world.engine.actors.drain()
            ids = world.directory.get_message_ids(sent.event_id)
            assert ids is not None and ids.platform_ids["webhook"] == "partner-1"

            # John deletes it: the partner hears Interlink's id and its own
            await world.acme.send(Retract(source=JOHN, destination=WENDY,
                                          target_id=sent.event_id,
                                          timestamp=world.engine.clock.now()))
            retract = (await world.partner.next_received()).payload
            assert retract["type"] == "message.deleted"
            assert retract["data"]["target"] == sent.event_id
            assert retract["data"]["target_partner_id"] == "partner-1"


async def test_the_partner_reacts_by_either_id_and_hears_delivery_outcomes() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            sent = Message.create(source=JOHN, destination=WENDY, body="react to me",
                                  timestamp=world.engine.clock.now())
            await world.acme.send(sent)
            await world.partner.next_received()
            await world.engine.actors.drain()
            for target in (sent.event_id, "partner-1"):
                response = await world.client.post({"type": "reaction.added", "data": {
                    "from": str(WENDY), "to": str(JOHN), "target": target, "emoji": "🎉"}})
                assert response.status_code == 202, response.text
                reaction = await world.acme_gets()
                assert isinstance(reaction, ReactionAdd)
                assert reaction.target_id == sent.event_id

            # Wendy's own message: a delivered outcome names it
            response = await world.client.post(message("w-1", "hello"))
            interlink_id = response.json()["id"]
            outcome = await world.partner.next_received(skip_receipts=False)
            while outcome.payload["data"].get("target") != interlink_id:
                outcome = await world.partner.next_received(skip_receipts=False)
            assert outcome.payload["type"] == "delivery.outcome"
            assert outcome.payload["data"]["status"] == "delivered"
            assert outcome.payload["data"]["target_partner_id"] == "w-1"

            # an edit of a message nobody knows: a failed outcome, with the reason
            response = await world.client.post({"type": "message.edited", "data": {
                "from": str(WENDY), "to": str(JOHN), "target": "never-sent", "text": "x"}})
            assert response.status_code == 202
            failed = await world.partner.next_received()
            assert failed.payload["type"] == "delivery.outcome"
            assert failed.payload["data"]["status"] == "failed"
            assert failed.payload["data"]["reason"] == "unknown-message"
            assert failed.payload["data"]["target"] == response.json()["id"]


async def test_retry_after_is_honoured_and_the_webhook_id_kept() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            world.partner.answer_next(Answer(429, {}, {"retry-after": "1"}),
                                      Answer(503, {}, {}))
            sent = Message.create(source=JOHN, destination=WENDY, body="eventually",
                                  timestamp=world.engine.clock.now())
            started = trio.current_time()
            await world.acme.send(sent)
            received = await world.partner.next_received()
            assert trio.current_time() - started >= 1.0, "Retry-After: 1 was not honoured"
            assert received.payload["data"]["text"] == "eventually"
            assert [status for _, status in world.partner.attempts] == [429, 503, 200]
            assert {webhook_id for webhook_id, _ in world.partner.attempts} == \
                {f"msg_{sent.event_id}"}
            await world.engine.actors.drain()
            assert world.partner.received_nowait() == []  # delivered once


async def test_a_partner_that_stays_down_fails_the_delivery_back_to_the_sender() -> None:
    settings = EngineSettings(shard_count=2)
    settings = msgspec.structs.replace(settings, delivery=msgspec.structs.replace(
        settings.delivery, retry_window=0.5, initial_backoff=0.05, max_backoff=0.1))
    with trio.fail_after(DEADLINE):
        async with webhook_world(settings=settings, delivery_budget=0.3, max_attempts=3,
                                 retry_initial=0.05, retry_maximum=0.1) as world:
            world.partner.answer_next(*[Answer(503) for _ in range(100)])
            sent = Message.create(source=JOHN, destination=WENDY, body="lost?",
                                  timestamp=world.engine.clock.now())
            await world.acme.send(sent)
            outcome = await world.acme.next_delivered()
            assert isinstance(outcome, DeliveryOutcome), outcome
            assert (outcome.status, outcome.target_event_id) == ("failed", sent.event_id)
            assert outcome.reason == "partner-http-503"
            assert len(world.partner.attempts) >= 3
            assert world.partner.received_nowait() == []


async def test_an_unknown_partner_user_fails_at_once() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            sent = Message.create(source=JOHN, destination=NOBODY, body="anyone?",
                                  timestamp=world.engine.clock.now())
            for owner, contact in ((JOHN, NOBODY), (NOBODY, JOHN)):
                await world.directory.put_contact(ContactRecord(
                    owner=owner, contact=contact, state="accepted", requested_by=JOHN))
            await world.acme.send(sent)
            outcome = await world.acme.next_delivered()
            assert isinstance(outcome, DeliveryOutcome)
            assert (outcome.status, outcome.reason) == ("failed", "unknown-user")
            assert [status for _, status in world.partner.attempts] == [404]
