"""The webhook adapter passes the adapter conformance suite, over real HTTP on loopback,
with the partner side played through ``standardwebhooks``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from adapters.webhook import WebhookAdapter, WebhookSecrets, parse_secret
from engine import Address, Directory, DomainRoute
from engine.asgi import serve_http
from engine.testing import AdapterHarness, check_adapter_conformance

from .conftest import (
    NOBODY,
    PARTNER_DOMAIN,
    WENDY,
    FakePartner,
    PartnerClient,
    message,
    new_secret,
    webhook_config,
)


class WebhookHarness:
    def __init__(self, adapter: WebhookAdapter, partner: FakePartner, http: httpx.AsyncClient,
                 inbound_secret: str) -> None:
        self._adapter = adapter
        self._partner = partner
        self._http = http
        self._inbound_secret = inbound_secret
        self._count = 0

    @property
    def adapter(self) -> WebhookAdapter:
        return self._adapter

    @property
    def user(self) -> Address:
        return WENDY

    @property
    def unknown_user(self) -> Address:
        return NOBODY

    async def prepare_directory(self, directory: Directory) -> None:
        await directory.put_domain_route(DomainRoute(domain=PARTNER_DOMAIN, platform="webhook"))

    async def send_as_user(self, to: Address, text: str) -> None:
        self._count += 1
        client = PartnerClient(self._http, self._adapter.url, self._inbound_secret)
        response = await client.post(message(f"conformance-{self._count}", text, to=to))
        assert response.status_code == 202, response.text

    async def receive_as_user(self) -> str:
        while True:
            received = await self._partner.next_received()
            if received.payload["type"] == "message.created":
                text: str = received.payload["data"]["text"]
                return text


@asynccontextmanager
async def webhook_harness() -> AsyncIterator[AdapterHarness]:
    inbound, outbound = new_secret(), new_secret()
    partner = FakePartner(outbound)
    async with httpx.AsyncClient(trust_env=False) as http, trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_http(
            partner, host="127.0.0.1", port=0, task_status=task_status))
        adapter = WebhookAdapter(webhook_config(f"http://127.0.0.1:{port}/events"),
                                 secrets=WebhookSecrets(inbound_keys=(parse_secret(inbound),),
                                                        outbound_key=parse_secret(outbound)))
        yield WebhookHarness(adapter, partner, http, inbound)
        nursery.cancel_scope.cancel()


async def test_the_webhook_adapter_passes_the_conformance_suite() -> None:
    await check_adapter_conformance(webhook_harness, timeout=20.0)
