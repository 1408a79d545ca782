"""The loopback adapter passes the adapter conformance suite (and the suite can fail)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from engine import (
    Address,
    Directory,
    DomainRoute,
    Event,
    Message,
    PlatformIdentity,
    SessionRecord,
)
from engine._adapter import DeliveryResult
from engine.testing import AdapterHarness, LoopbackAdapter, TrioWallClock, check_adapter_conformance

USER = Address.parse("alice@loop.test")


class LoopbackHarness:
    def __init__(self, adapter: LoopbackAdapter) -> None:
        self._adapter = adapter
        self._clock = TrioWallClock()
        self._sent = 0

    @property
    def adapter(self) -> LoopbackAdapter:
        return self._adapter

    @property
    def user(self) -> Address:
        return USER

    @property
    def unknown_user(self) -> Address:
        return Address.parse("ghost@loop.test")

    async def prepare_directory(self, directory: Directory) -> None:
        await directory.put_domain_route(DomainRoute(domain="loop.test", platform="loop",
                                                     internal=True))
        await directory.put_identity(PlatformIdentity(address=USER, platform="loop",
                                                      user_id="alice"))

    async def send_as_user(self, to: Address, text: str) -> None:
        self._sent += 1
        await self._adapter.send(Message.create(
            source=USER, destination=to, body=text, timestamp=self._clock.now(),
            platform_ids={"loop": f"in-{self._sent}"}))

    async def receive_as_user(self) -> str:
        while True:
            event = await self._adapter.next_delivered()
            if isinstance(event, Message) and event.destination == USER:
                return event.text


def harness_of(adapter: LoopbackAdapter) -> object:
    @asynccontextmanager
    async def make() -> AsyncIterator[AdapterHarness]:
        yield LoopbackHarness(adapter)

    return make


async def test_loopback_adapter_conforms() -> None:
    await check_adapter_conformance(
        harness_of(LoopbackAdapter("loop", known_users=[USER])))  # type: ignore[arg-type]


class ForgetfulAdapter(LoopbackAdapter):
    """Returns no platform message id: the suite must catch that."""

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        await super().deliver(event, session)
        return DeliveryResult()


async def test_the_suite_catches_a_nonconforming_adapter() -> None:
    with pytest.raises(AssertionError, match="platform's message id"):
        await check_adapter_conformance(
            harness_of(ForgetfulAdapter("loop", known_users=[USER])))  # type: ignore[arg-type]
