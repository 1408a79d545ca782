"""Per-adapter metrics (issue #13 item 6): what the engine counts through each adapter's
port, the ``interlink_adapter_*`` series ``/metrics`` exports, and their registration in
``interlink run``. The adapters' own reports are tested with each adapter
(``tests/<platform>/test_metrics.py``)."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from engine import (
    UNKNOWN_TYPE,
    AdapterStats,
    ContactRequest,
    EngineSettings,
    LmdbDirectory,
    MailboxFullError,
)
from engine._session import DeliverySettings
from supervisor._config import load_config
from supervisor._control import ControlApp
from supervisor._metrics import AdapterCollector
from supervisor._runner import Runtime, run_engine, server_token

from ._harness import EVE, JOHN, PETER, federation, next_event
from .test_edges import PAUL, GatedLoopback, message
from .test_ledger import _crash_with_one_message_in_flight

TOKEN = "metrics-token"


# -- AdapterStats ------------------------------------------------------------------------------

def test_a_connection_connected_again_is_a_reconnect() -> None:
    stats = AdapterStats("chat")
    for state in ("connecting", "connected", "connected", "connecting", "connected",
                  "disconnected", "connecting", "connected"):  # lost, then restarted
        stats.set_connection_state("link", state)
    assert stats.connections == {"link": "connected"}
    assert stats.reconnects == {"link": 2}


def test_counts_keep_their_labels_bounded() -> None:
    stats = AdapterStats("chat")
    stats.count_inbound("im", "accepted")
    stats.count_inbound("im", "accepted")
    stats.count_inbound("no-such-type", "malformed")  # a typo never makes a new series
    stats.count_outbound("reaction", "retried")
    assert stats.inbound == {("im", "accepted"): 2, (UNKNOWN_TYPE, "malformed"): 1}
    assert stats.outbound == {("reaction", "retried"): 1}
    for n in range(40):
        stats.set_connection_state(f"socket-{n}", "connected")
    assert len(stats.connections) == 17  # 16 names, then "other"
    assert stats.connections["other"] == "connected"
    assert stats.reconnects == {}  # ("other" was connected all along)
    stats.add_rate_limit_wait(1.5)
    stats.add_rate_limit_wait(-3.0)  # a clock quirk never subtracts
    stats.count_rate_limited()
    stats.count_dedupe_hit()
    assert (stats.rate_limited, stats.rate_limit_wait, stats.dedupe_hits) == (1, 1.5, 1)


# -- what the engine counts through an adapter's port ----------------------------------------

async def test_the_port_counts_accepted_duplicate_busy_and_refused_by_type() -> None:
    widget = GatedLoopback("widget", held=PETER)
    settings = EngineSettings(shard_count=1, mailbox_capacity=1)
    async with federation(widget=widget, settings=settings) as fed:
        port = fed.engine.port_for("acme")
        assert port is fed.engine.port_for("acme")  # one per adapter
        first, second, third = (message(JOHN, PETER, str(n)) for n in range(3))
        assert await port.offer(first)
        await trio.testing.wait_all_tasks_blocked()  # the session holds it in deliver
        assert await port.offer(second)
        assert not await port.offer(second)  # a redelivery of one in flight
        with pytest.raises(MailboxFullError):
            await port.offer(third)
        assert port.refusal(message(JOHN, EVE, "no agreement with evil.test")) is not None
        assert port.refusal(first) is None
        await port.submit(ContactRequest(source=JOHN, destination=PAUL))
        widget.gate.set()
        await fed.settle()
        acme = fed.engine.adapter_stats("acme")
        assert acme is port.adapter_stats("acme")
        assert acme.inbound == {("im", "accepted"): 2, ("im", "duplicate"): 1,
                                ("im", "busy"): 1, ("im", "refused"): 1,
                                ("contact", "accepted"): 1}
        assert fed.engine.adapter_stats("widget").inbound == {}  # nothing came from widget


async def test_the_engine_itself_as_a_port_counts_nothing() -> None:
    async with federation() as fed:
        await fed.engine.offer(message(JOHN, PETER, "straight in"))
        await next_event(fed.widget)
        assert [s.inbound for s in fed.engine.all_adapter_stats()] == [{}, {}]


async def test_an_interrupted_event_resolved_at_start_counts_for_its_senders_adapter(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        async with federation(directory=directory, settings=settings) as fed:
            with trio.fail_after(300):
                await next_event(fed.acme)  # John is told his message was not delivered
            assert fed.engine.adapter_stats("acme").ledger_resolved_at_start == 1
            assert fed.engine.adapter_stats("widget").ledger_resolved_at_start == 0
    finally:
        await directory.aclose()


# -- the exported series ---------------------------------------------------------------------

async def test_the_collector_exports_every_series_with_its_labels() -> None:
    async with federation() as fed:
        await fed.acme.send(message(JOHN, PETER, "hi"))
        await next_event(fed.widget)
        acme = fed.engine.adapter_stats("acme")
        for state in ("connecting", "connected", "connecting", "connected"):  # lost once
            acme.set_connection_state("socket-mode", state)
        acme.count_inbound(UNKNOWN_TYPE, "malformed")
        acme.count_outbound("im", "delivered")
        acme.count_rate_limited()
        acme.add_rate_limit_wait(2.5)
        acme.count_dedupe_hit()
        app = ControlApp(fed.engine, TOKEN, lambda: {"name": "interlink", "children": []})
        app.registry.register(AdapterCollector(fed.engine))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://control") as client:
            assert (await client.get("/metrics")).status_code == 401
            text = (await client.get("/metrics",
                                     headers={"authorization": f"Bearer {TOKEN}"})).text
    for series in (
            'interlink_adapter_connection_state{adapter="acme",connection="socket-mode",'
            'state="connected"} 1.0',
            'interlink_adapter_connection_state{adapter="acme",connection="socket-mode",'
            'state="connecting"} 0.0',
            'interlink_adapter_connection_state{adapter="acme",connection="socket-mode",'
            'state="disconnected"} 0.0',
            'interlink_adapter_reconnects_total{adapter="acme",connection="socket-mode"} 1.0',
            'interlink_adapter_inbound_total{adapter="acme",outcome="accepted",type="im"} 1.0',
            'interlink_adapter_inbound_total{adapter="acme",outcome="malformed",'
            'type="unknown"} 1.0',
            'interlink_adapter_outbound_total{adapter="acme",outcome="delivered",type="im"} 1.0',
            'interlink_adapter_rate_limited_total{adapter="acme"} 1.0',
            'interlink_adapter_rate_limit_wait_seconds_total{adapter="acme"} 2.5',
            'interlink_adapter_dedupe_hits_total{adapter="acme"} 1.0',
            'interlink_adapter_ledger_resolved_at_start_total{adapter="acme"} 0.0',
            'interlink_adapter_rate_limited_total{adapter="widget"} 0.0',
            "interlink_duplicates_total 0.0"):  # the engine's own series are still there
        assert series in text, series
    assert 'adapter="widget",connection' not in text  # widget reported no connection


LOOPBACK_CONFIG = """
[engine]
data_dir = "{data_dir}"

[directory]
backend = "memory"

[metadata]
backend = "memory"

[control]
listen = "127.0.0.1:0"

[[adapters]]
type = "loopback"
name = "acme-loop"
send_on_start = [
  {{ source = "alice@acme.localhost", destination = "bob@widget.localhost", text = "hi" }},
]

[[adapters]]
type = "loopback"
name = "widget-loop"

[[domains]]
domain = "acme.localhost"
platform = "acme-loop"

[[domains]]
domain = "widget.localhost"
platform = "widget-loop"

[[agreements]]
domain_a = "acme.localhost"
domain_b = "widget.localhost"
decision = "allow"

[[contacts]]
a = "alice@acme.localhost"
b = "bob@widget.localhost"
"""


async def test_interlink_run_serves_the_adapter_series_on_metrics(tmp_path: Path) -> None:
    path = tmp_path / "interlink.toml"
    path.write_text(LOOPBACK_CONFIG.format(data_dir=tmp_path / "data"))
    config = load_config(path)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            runtime: Runtime = await nursery.start(functools.partial(
                run_engine, config, config_path=str(path)))
            assert runtime.control_url is not None
            token = server_token(config)  # what the control API was given
            async with httpx.AsyncClient(base_url=runtime.control_url, trust_env=False) as http:
                response = await http.get("/metrics",
                                          headers={"authorization": f"Bearer {token}"})
            nursery.cancel_scope.cancel()
    assert response.status_code == 200
    text = response.text
    # the seed message went in through acme-loop's port (submit), once
    assert ('interlink_adapter_inbound_total{adapter="acme-loop",outcome="accepted",'
            'type="im"} 1.0') in text
    for name in ("acme-loop", "widget-loop"):
        assert f'interlink_adapter_dedupe_hits_total{{adapter="{name}"}} 0.0' in text
