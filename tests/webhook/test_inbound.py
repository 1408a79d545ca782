"""The partner's requests, over real HTTP on loopback, through a real engine: what is
accepted and routed, and every bad input answered with its status, a JSON error body,
nothing routed and an error entry in the metadata log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import trio

from engine import (
    ALL_CAPABILITIES,
    Capability,
    ContactRequest,
    DeliveryResult,
    DomainRoute,
    Edit,
    EnginePort,
    Event,
    Message,
    ReactionAdd,
    Retract,
    SessionRecord,
    derive_canonical_id,
)

from .conftest import JOHN, MARY, STRANGER, WENDY, PartnerClient, message, new_secret, webhook_world

DEADLINE = 20.0


async def test_a_signed_message_reaches_the_engine_before_the_partner_hears_202() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            response = await world.client.post(message("p-1", "hello John"))
            assert response.status_code == 202, response.text
            answer = response.json()
            assert answer["status"] == "accepted"
            assert answer["id"] == derive_canonical_id("wh", "webhook", "p-1")
            assert world.engine.router.routed == 1  # in the session's mailbox at 202
            delivered = await world.acme.next_delivered()
            assert isinstance(delivered, Message)
            assert (delivered.source, delivered.destination) == (WENDY, JOHN)
            assert delivered.text == "hello John"
            assert delivered.event_id == answer["id"]
            assert delivered.platform_ids == {"webhook": "p-1"}
            assert delivered.timestamp > 0


async def test_rich_text_edits_deletes_reactions_and_contacts_become_canonical_events() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            rich = {"blocks": [{"type": "paragraph", "inlines": [
                {"type": "text", "text": "bold", "styles": ["bold"]},
                {"type": "link", "url": "https://example.com", "label": "site"}]}]}
            assert (await world.client.post(message("p-2", "", rich=rich))).status_code == 202
            first = await world.acme.next_delivered()
            assert isinstance(first, Message) and first.text == "boldsite (https://example.com)"
            for payload in (
                {"type": "message.edited", "data": {"target": "p-2", "text": "edited"}},
                {"type": "reaction.added", "data": {"target": "p-2", "emoji": "thumbsup"}},
                {"type": "message.deleted", "data": {"target": "p-2"}},
                {"type": "contact.requested", "data": {"to": str(MARY)}},
            ):
                data: dict[str, Any] = payload["data"]  # type: ignore[assignment]
                data.setdefault("to", str(JOHN))
                data["from"] = str(WENDY)
                response = await world.client.post(payload)
                assert response.status_code == 202, response.text
            edit, reaction, retract, request = [await world.acme.next_delivered()
                                                for _ in range(4)]
            assert isinstance(edit, Edit) and edit.target_id == first.event_id
            assert edit.text == "edited"
            assert isinstance(reaction, ReactionAdd) and reaction.emoji == "👍"
            assert reaction.target_id == first.event_id
            assert isinstance(retract, Retract) and retract.target_id == first.event_id
            assert isinstance(request, ContactRequest)
            assert (request.source, request.destination) == (WENDY, MARY)


async def _refused(world: Any, response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code and body["message"], body
    await world.nothing_routed()
    errors = await world.errors()
    assert [e.reason for e in errors] == [f"webhook:{code}"], errors


async def test_missing_signature_headers_are_401() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            body = msgspec.json.encode(message("p-1", "hi"))
            headers = world.client.signed(body)
            del headers["webhook-signature"]
            await _refused(world, await world.client.post(body, headers=headers),
                           401, "missing-headers")


async def test_a_forged_signature_is_401() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            forger = PartnerClient(world.client.http, world.client.url, new_secret())
            await _refused(world, await forger.post(message("p-1", "hi")),
                           401, "invalid-signature")


async def test_a_body_changed_after_signing_is_401() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            body = msgspec.json.encode(message("p-1", "hi"))
            headers = world.client.signed(body)
            tampered = body.replace(b"hi", b"ho")
            await _refused(world, await world.client.post(tampered, headers=headers),
                           401, "invalid-signature")


@pytest.mark.parametrize("offset", [-301, 301], ids=["old", "future"])
async def test_a_timestamp_outside_five_minutes_is_401(offset: int) -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            body = msgspec.json.encode(message("p-1", "hi"))
            when = datetime.now(UTC) + timedelta(seconds=offset)
            headers = world.client.signed(body, when=when)
            await _refused(world, await world.client.post(body, headers=headers),
                           401, "stale-timestamp")


async def test_a_replayed_webhook_id_is_a_200_no_op() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            body = msgspec.json.encode(message("p-1", "once"))
            headers = world.client.signed(body)
            first = await world.client.post(body, headers=headers)
            replay = await world.client.post(body, headers=headers)
            assert first.status_code == 202
            assert replay.status_code == 200
            assert replay.json() == {"status": "duplicate", "webhook_id": headers["webhook-id"]}
            await world.engine.actors.drain()
            assert world.engine.router.routed == 1
            assert len([e for e in world.acme.delivered_nowait()
                        if isinstance(e, Message)]) == 1
            assert await world.errors() == []  # a replay is not an error
            assert world.adapter.statistics().inbound.duplicates == 1


@pytest.mark.parametrize(("body", "code", "names"), [
    (b"{not json", "invalid-json", ""),
    (b'{"type": "message.created", "data": {"id": "p", "from": "wendy@partner.localhost"}}',
     "invalid-payload", "$.data"),
    (b'{"type": "message.created", "data": {"id": "p", "from": "wendy@partner.localhost", '
     b'"to": "john@acme.test", "txt": "typo"}}', "invalid-payload", "txt"),
    (b'{"type": "message.sent", "data": {}}', "invalid-payload", "$.type"),
    (b'{"type": "message.created", "data": {"id": "p", "from": "wendy", '
     b'"to": "john@acme.test", "text": "hi"}}', "invalid-address", "$.data.from"),
    (b'{"type": "message.created", "data": {"id": "", "from": "wendy@partner.localhost", '
     b'"to": "john@acme.test", "text": "hi"}}', "invalid-payload", "$.data.id"),
    (b'{"type": "message.created", "data": {"id": "p", "from": "wendy@partner.localhost", '
     b'"to": "john@acme.test", "text": "  "}}', "invalid-payload", "empty"),
    (b'{"type": "message.created", "data": {"id": "p", "from": "wendy@partner.localhost", '
     b'"to": "john@acme.test", "rich": {"blocks": [{"type": "paragraph", "inlines": '
     b'[{"type": "link", "url": "javascript:alert(1)"}]}]}}}', "invalid-payload", "url"),
], ids=["not-json", "missing-field", "unknown-field", "unknown-type", "bad-address",
        "no-message-id", "empty-message", "unsafe-link"])
async def test_malformed_payloads_are_400(body: bytes, code: str, names: str) -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            response = await world.client.post(body)
            await _refused(world, response, 400, code)
            assert names in response.json()["message"]


async def test_an_oversized_body_is_413() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world(max_body_bytes=1024) as world:
            await _refused(world, await world.client.post(message("p-1", "x" * 2000)),
                           413, "request-too-large")


@pytest.mark.parametrize(("sender", "to", "status", "code"), [
    (WENDY, "nobody@acme.test", 404, "unknown-address"),
    (WENDY, "someone@nowhere.invalid", 404, "no-route:nowhere.invalid"),
    (WENDY, str(STRANGER), 403, "no-agreement"),
    (WENDY, str(MARY), 403, "not-a-contact"),
    (JOHN, str(MARY), 403, "sender-not-served"),
], ids=["unknown-user", "no-route", "not-federated", "not-a-contact", "not-our-user"])
async def test_unknown_users_and_policy_refusals(sender: Any, to: str, status: int,
                                                 code: str) -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            await world.directory.put_domain_route(DomainRoute(domain="elsewhere.test",
                                                               platform="acme"))
            payload = message("p-1", "hi", sender=sender)
            payload["data"]["to"] = to
            response = await world.client.post(payload)
            await _refused(world, response, status, code)
            entry = (await world.errors())[0]
            assert str(entry.sender) == str(sender) and str(entry.receiver) == to


async def test_wrong_paths_and_methods() -> None:
    with trio.fail_after(DEADLINE):
        async with webhook_world() as world:
            http, url = world.client.http, world.client.url
            assert (await http.get(url)).status_code == 405
            assert (await http.post(url.replace("/webhook", "/other"))).status_code == 404
            assert (await http.get(url.replace("/webhook", "/healthz"))).json() == \
                {"status": "ok"}


class GatedAdapter:
    """A platform whose deliveries wait for :attr:`gate`: its conversations back up."""

    name = "acme"
    capabilities: frozenset[Capability] = ALL_CAPABILITIES

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.delivered: list[Event] = []
        self.started = trio.Event()

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        self.started.set()
        await self.gate.wait()
        self.delivered.append(event)
        return DeliveryResult(platform_message_id=f"acme-{len(self.delivered)}")


async def test_a_full_mailbox_is_503_with_retry_after_and_the_retry_is_taken() -> None:
    gated = GatedAdapter()
    with trio.fail_after(DEADLINE):
        async with webhook_world(acme=gated, mailbox_capacity=1, busy_retry_after=2) as world:
            accepted, busy = [], None
            for n in range(6):
                body = msgspec.json.encode(message(f"p-{n}", f"message {n}"))
                headers = world.client.signed(body)
                response = await world.client.post(body, headers=headers)
                if response.status_code == 503:
                    busy = (body, headers, response)
                    break
                assert response.status_code == 202, response.text
                accepted.append(n)
                await gated.started.wait()  # the first is being delivered: the rest queue
            assert busy is not None, "the mailbox never filled"
            body, headers, response = busy
            assert response.headers["retry-after"] == "2"
            assert response.json()["error"] == "busy"
            assert await world.errors() == []  # busy is not a rejection
            gated.gate.set()
            await world.engine.actors.drain()
            retry = await world.client.post(body, headers=headers)  # the same webhook-id
            assert retry.status_code == 202, retry.text
            await world.engine.actors.drain()
            texts = [e.text for e in gated.delivered if isinstance(e, Message)]
            assert texts == [f"message {n}" for n in range(len(accepted) + 1)]
