"""Fixtures for the webhook adapter's tests: a partner system on loopback, and Prosody.

The partner is played by code that knows Interlink only through Standard
Webhooks: the independent ``standardwebhooks`` library signs its requests
and verifies Interlink's. Prosody must be installed (``apt-get install -y
prosody``); without it the tests that need it are skipped with that reason
locally, and FAIL under ``CI=true``.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from standardwebhooks import Webhook, WebhookVerificationError

from adapters.webhook import WebhookAdapter, WebhookAdapterConfig, WebhookSecrets, parse_secret
from adapters.xmpp import ProsodyInstance, ProsodySettings, run_prosody
from engine import (
    METADATA_DBS,
    Adapter,
    Address,
    ContactRecord,
    DeliveryOutcome,
    DomainAgreement,
    DomainRoute,
    Engine,
    EngineSettings,
    Event,
    MemoryKV,
    MetadataEntry,
    MetadataLog,
    PlatformIdentity,
    SecretRef,
    SystemClock,
)
from engine.asgi import Receive, Scope, Send, answer_lifespan, serve_http
from engine.testing import LoopbackAdapter, MemoryDirectory
from tests._prosody import require_prosody

PARTNER_DOMAIN = "partner.localhost"
WENDY = Address.parse(f"wendy@{PARTNER_DOMAIN}")
#: a partner user the partner's system does not know (its endpoint answers 404)
NOBODY = Address.parse(f"nobody@{PARTNER_DOMAIN}")
JOHN = Address.parse("john@acme.test")
MARY = Address.parse("mary@acme.test")
STRANGER = Address.parse("eve@elsewhere.test")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# -- the partner's side ------------------------------------------------------------------------


@dataclass
class Received:
    """One request Interlink made to the partner (after the library verified it)."""

    webhook_id: str
    timestamp: int
    payload: dict[str, Any]


@dataclass
class Answer:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class FakePartner:
    """The partner's event receiver, as an ASGI app: verifies with ``standardwebhooks``,
    keeps what it received, answers 404 for users it does not know and an id for messages,
    or the answers queued with :meth:`answer_next`."""

    def __init__(self, secret: str, *, known_users: tuple[Address, ...] = (WENDY,)) -> None:
        self.webhook = Webhook(secret)
        self.known_users = {str(a) for a in known_users}
        self._send, self._receive = trio.open_memory_channel[Received](1000)
        self.attempts: list[tuple[str, int]] = []  # (webhook-id, status answered)
        self.refused_signatures = 0
        self._queued: list[Answer] = []
        self._ids = 0

    def answer_next(self, *answers: Answer) -> None:
        self._queued.extend(answers)

    async def next_received(self, *, skip_receipts: bool = True) -> Received:
        while True:
            received = await self._receive.receive()
            data = received.payload["data"]
            if skip_receipts and received.payload["type"] == "delivery.outcome" and \
                    data["status"] == "delivered":
                continue
            return received

    def received_nowait(self) -> list[Received]:
        found = []
        while True:
            try:
                found.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {bytes(k).decode(): bytes(v).decode() for k, v in scope["headers"]}
        try:
            payload = self.webhook.verify(body, headers)
        except WebhookVerificationError:
            self.refused_signatures += 1
            await _answer(send, Answer(401, {"error": "bad signature"}))
            return
        answer = self._queued.pop(0) if self._queued else self._default(payload)
        self.attempts.append((headers["webhook-id"], answer.status))
        if 200 <= answer.status < 300:
            self._send.send_nowait(Received(headers["webhook-id"],
                                            int(headers["webhook-timestamp"]), payload))
        await _answer(send, answer)

    def _default(self, payload: dict[str, Any]) -> Answer:
        if payload["data"]["to"] not in self.known_users:
            return Answer(404, {"error": "no such user"})
        if payload["type"] == "message.created":
            self._ids += 1
            return Answer(200, {"id": f"partner-{self._ids}"})
        return Answer(200, {})


async def _answer(send: Send, answer: Answer) -> None:
    body = msgspec.json.encode(answer.body)
    headers = [(b"content-type", b"application/json"),
               *((k.encode(), v.encode()) for k, v in answer.headers.items())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PartnerClient:
    """The partner's outbound side: signs with ``standardwebhooks`` and POSTs."""

    def __init__(self, http: httpx.AsyncClient, url: str, secret: str) -> None:
        self.http = http
        self.url = url
        self.webhook = Webhook(secret)
        self._count = 0

    def signed(self, body: bytes, *, webhook_id: str | None = None,
               when: datetime | None = None) -> dict[str, str]:
        self._count += 1
        msg_id = webhook_id or f"msg_test{self._count}_{secrets.token_hex(4)}"
        moment = when or datetime.now(UTC)
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())),
                "webhook-signature": self.webhook.sign(msg_id, moment, body.decode()),
                "content-type": "application/json"}

    async def post(self, payload: dict[str, Any] | bytes, *, webhook_id: str | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        sent = headers if headers is not None else self.signed(body, webhook_id=webhook_id)
        return await self.http.post(self.url, content=body, headers=sent)

    async def send(self, kind: str, **data: Any) -> httpx.Response:
        data.setdefault("from", str(WENDY))
        return await self.post({"type": kind, "data": data})


def message(partner_id: str, text: str, *, sender: Address = WENDY,
            to: Address = JOHN, **extra: Any) -> dict[str, Any]:
    return {"type": "message.created",
            "data": {"id": partner_id, "from": str(sender), "to": str(to), "text": text,
                     **extra}}


# -- a small federation: the webhook partner and a loopback "acme" platform --------------------


class WebhookWorld:
    def __init__(self, engine: Engine, adapter: WebhookAdapter, acme: Any,
                 directory: MemoryDirectory, partner: FakePartner, client: PartnerClient
                 ) -> None:
        self.engine = engine
        self.adapter = adapter
        self.acme = acme
        self.directory = directory
        self.partner = partner
        self.client = client

    async def acme_gets(self) -> Event:
        """The next event the acme side receives, delivery receipts left out."""
        while True:
            event: Event = await self.acme.next_delivered()
            if not (isinstance(event, DeliveryOutcome) and event.status == "delivered"):
                return event

    async def errors(self) -> list[MetadataEntry]:
        """The metadata log's refused ``error`` entries so far."""
        await self.engine.metadata_log.flush()
        return [e for e in self.engine.metadata_log.entries()
                if e.type == "error" and e.outcome == "refused"]

    async def nothing_routed(self) -> None:
        await self.engine.actors.drain()
        assert self.engine.router.routed == 0, "an event was routed"
        assert self.acme.delivered_nowait() == [], "an event reached the other side"


def webhook_config(partner_url: str, **overrides: Any) -> WebhookAdapterConfig:
    return WebhookAdapterConfig(listen="127.0.0.1:0", partner_url=partner_url,
                                inbound_secret=SecretRef(env="UNUSED"),
                                outbound_secret=SecretRef(env="UNUSED"), **overrides)


async def prepare_directory(directory: MemoryDirectory) -> None:
    await directory.put_domain_route(DomainRoute(domain=PARTNER_DOMAIN, platform="webhook"))
    await directory.put_domain_route(DomainRoute(domain="acme.test", platform="acme",
                                                 internal=True))
    for address in (JOHN, MARY):
        await directory.put_identity(PlatformIdentity(address=address, platform="acme",
                                                      user_id=address.user))
    await directory.put_domain_agreement(DomainAgreement(
        domain_a=PARTNER_DOMAIN, domain_b="acme.test", decision="allow"))
    for owner, contact in ((WENDY, JOHN), (JOHN, WENDY)):
        await directory.put_contact(ContactRecord(owner=owner, contact=contact,
                                                  state="accepted", requested_by=WENDY))


@asynccontextmanager
async def webhook_world(*, settings: EngineSettings | None = None,
                        http_transport: httpx.AsyncBaseTransport | None = None,
                        mailbox_capacity: int | None = None,
                        wall_clock: Callable[[], float] | None = None,
                        acme: Adapter | None = None, **config: Any) -> AsyncIterator[WebhookWorld]:
    """An engine with the webhook adapter (endpoint on a free loopback port) whose partner
    is a :class:`FakePartner` on another, and a loopback platform serving ``acme.test``."""
    inbound, outbound = new_secret(), new_secret()
    partner = FakePartner(outbound)
    directory = MemoryDirectory()
    await prepare_directory(directory)
    engine_settings = settings or EngineSettings(shard_count=2)
    if mailbox_capacity is not None:
        engine_settings = msgspec.structs.replace(engine_settings,
                                                  mailbox_capacity=mailbox_capacity)
    async with httpx.AsyncClient(trust_env=False, transport=http_transport) as http, \
            httpx.AsyncClient(trust_env=False) as partner_http, \
            trio.open_nursery() as nursery:
        partner_port = await nursery.start(lambda task_status: serve_http(
            partner, host="127.0.0.1", port=0, task_status=task_status))
        adapter = WebhookAdapter(
            webhook_config(f"http://127.0.0.1:{partner_port}/events", **config),
            secrets=WebhookSecrets(inbound_keys=(parse_secret(inbound),),
                                   outbound_key=parse_secret(outbound)),
            http=http, wall_clock=wall_clock or time.time)
        acme = acme or LoopbackAdapter("acme")
        clock = SystemClock()
        engine = Engine(directory=directory, adapters=[adapter, acme], clock=clock,
                        metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock),
                        settings=engine_settings)
        await nursery.start(engine.run)
        yield WebhookWorld(engine, adapter, acme, directory, partner,
                           PartnerClient(partner_http, adapter.url, inbound))
        nursery.cancel_scope.cancel()


# -- Prosody -----------------------------------------------------------------------------------




@pytest.fixture
def prosody_installed() -> None:
    require_prosody()


@asynccontextmanager
async def running_prosody(settings: ProsodySettings) -> AsyncIterator[ProsodyInstance]:
    async with trio.open_nursery() as nursery:
        instance: ProsodyInstance = await nursery.start(run_prosody, settings)
        yield instance
        nursery.cancel_scope.cancel()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path
