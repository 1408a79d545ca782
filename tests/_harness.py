"""A small federation for engine tests: two loopback platforms and one engine.

``acme.test`` is the internal domain (platform ``acme``), ``widget.test`` an
external one (platform ``widget``); they have an allow agreement and
``john@acme.test`` <-> ``peter@widget.test`` are accepted contacts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from engine import (
    METADATA_DBS,
    Address,
    ContactRecord,
    DeliveryOutcome,
    Directory,
    DomainAgreement,
    DomainRoute,
    Engine,
    EngineSettings,
    Event,
    KeyValueStore,
    MemoryKV,
    MetadataLog,
    PlatformIdentity,
)
from engine.testing import LoopbackAdapter, MemoryDirectory, TrioWallClock

JOHN = Address.parse("john@acme.test")
MARY = Address.parse("mary@acme.test")
PETER = Address.parse("peter@widget.test")
EVE = Address.parse("eve@evil.test")


class Federation:
    def __init__(self, engine: Engine, directory: Directory, store: KeyValueStore,
                 acme: LoopbackAdapter, widget: LoopbackAdapter, clock: TrioWallClock) -> None:
        self.engine = engine
        self.directory = directory
        self.store = store
        self.acme = acme
        self.widget = widget
        self.clock = clock

    @property
    def log(self) -> MetadataLog:
        return self.engine.metadata_log

    async def settle(self) -> None:
        """Wait until every routed event has been handled and logged."""
        await self.engine.actors.drain()
        await self.log.write_buffered()


async def next_event(adapter: LoopbackAdapter) -> Event:
    """The next event delivered to ``adapter``, skipping delivery receipts."""
    while True:
        event = await adapter.next_delivered()
        if not (isinstance(event, DeliveryOutcome) and event.status == "delivered"):
            return event


async def seed(directory: Directory) -> None:
    await directory.put_domain_route(DomainRoute(domain="acme.test", platform="acme",
                                                 tenant="T1", internal=True))
    await directory.put_domain_route(DomainRoute(domain="widget.test", platform="widget"))
    await directory.put_domain_route(DomainRoute(domain="evil.test", platform="widget"))
    for address, platform in ((JOHN, "acme"), (MARY, "acme"), (PETER, "widget")):
        await directory.put_identity(PlatformIdentity(address=address, platform=platform,
                                                      user_id=address.user))
    await directory.put_domain_agreement(DomainAgreement(
        domain_a="acme.test", domain_b="widget.test", decision="allow"))
    for owner, contact in ((JOHN, PETER), (PETER, JOHN)):
        await directory.put_contact(ContactRecord(owner=owner, contact=contact,
                                                  state="accepted", requested_by=JOHN))


@asynccontextmanager
async def federation(
    *,
    directory: Directory | None = None,
    store: KeyValueStore | None = None,
    settings: EngineSettings | None = None,
    acme: LoopbackAdapter | None = None,
    widget: LoopbackAdapter | None = None,
) -> AsyncIterator[Federation]:
    directory = directory if directory is not None else MemoryDirectory()
    store = store if store is not None else MemoryKV(METADATA_DBS)
    await seed(directory)
    clock = TrioWallClock()
    acme = acme or LoopbackAdapter("acme")
    widget = widget or LoopbackAdapter("widget")
    engine = Engine(directory=directory, adapters=[acme, widget], clock=clock,
                    metadata_log=MetadataLog(store, directory, clock),
                    settings=settings or EngineSettings(shard_count=4))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield Federation(engine, directory, store, acme, widget, clock)
        nursery.cancel_scope.cancel()
