"""What the XMPP component connection reports to the adapter's ``AdapterStats`` (issue #13
item 6), against a real Prosody: its state through a server restart, and reconnects."""

from __future__ import annotations

import trio

from adapters.xmpp._adapter import XmppAdapter, XmppSettings
from adapters.xmpp._component import ComponentConnection
from adapters.xmpp._jid import AddressingSettings
from adapters.xmpp._prosody import ProsodyInstance
from engine import (
    METADATA_DBS,
    AdapterStats,
    DomainRoute,
    Engine,
    EngineSettings,
    MemoryKV,
    MetadataLog,
    SystemClock,
)
from engine.testing import LoopbackAdapter, MemoryDirectory

from .conftest import COMPONENT, FAST_RECONNECT, HOST, SECRET


async def test_the_component_reports_its_state_and_reconnects_after_a_server_restart(
        prosody: ProsodyInstance) -> None:
    stats = AdapterStats("xmpp")
    component = ComponentConnection(COMPONENT, SECRET, "127.0.0.1", prosody.component_port,
                                    reconnect=FAST_RECONNECT, connect_timeout=5.0,
                                    start_timeout=10.0, adapter_stats=stats)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            assert stats.connections == {"component": "connected"}
            assert stats.reconnects == {}
            await prosody.stop()
            await component.wait_disconnected()
            assert stats.connections == {"component": "connecting"}
            await prosody.start()
            await component.wait_connected()
            assert stats.connections == {"component": "connected"}
            assert stats.reconnects == {"component": 1}
            nursery.cancel_scope.cancel()
        assert stats.connections == {"component": "disconnected"}
        # a supervisor's restart of run(): the same connection comes up again
        async with trio.open_nursery() as nursery:
            await nursery.start(component.run)
            assert stats.connections == {"component": "connected"}
            assert stats.reconnects == {"component": 2}
            nursery.cancel_scope.cancel()
    assert component.statistics().reconnects == 2


async def test_the_adapters_component_reports_state_and_a_reconnect(
        prosody: ProsodyInstance) -> None:
    directory = MemoryDirectory()
    await directory.put_domain_route(DomainRoute(domain=COMPONENT, platform="acme",
                                                 internal=True))
    await directory.put_domain_route(DomainRoute(domain=HOST, platform="xmpp"))
    xmpp = XmppAdapter(
        settings=XmppSettings(addressing=AddressingSettings(component_domain=COMPONENT)),
        server=lambda: ("127.0.0.1", prosody.component_port, SECRET),
        connection_options={"reconnect": FAST_RECONNECT})
    clock = SystemClock()
    engine = Engine(directory=directory, adapters=[LoopbackAdapter("acme"), xmpp],
                    clock=clock, metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory,
                                                          clock),
                    settings=EngineSettings(shard_count=2))
    stats = engine.adapter_stats("xmpp")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            assert stats.connections == {"component": "connected"}
            await prosody.stop()
            await xmpp.connection.wait_disconnected()
            assert stats.connections == {"component": "connecting"}
            await prosody.start()
            await xmpp.connection.wait_connected()
            assert stats.connections == {"component": "connected"}
            assert stats.reconnects == {"component": 1}
            nursery.cancel_scope.cancel()
    assert stats.connections == {"component": "disconnected"}
