"""Per-adapter metrics for ``/metrics``: the engine's :class:`engine.AdapterStats`, read at
scrape time (nothing on the hot path).

Every series has an ``adapter`` label (the adapter's name); connections add
``connection`` (a few fixed names per adapter), traffic adds ``type`` (the
metadata log's event types, or ``unknown``) and ``outcome``. The names and
what they mean are in ``docs/operations.md`` (Metrics).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine import CONNECTION_STATES, Engine


class AdapterCollector(Collector):
    """Exports every adapter's measurements under ``interlink_adapter_*``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "interlink_adapter_connection_state",
            "1 for the state each named connection of an adapter is in now, 0 for the others",
            labels=["adapter", "connection", "state"])
        reconnects = CounterMetricFamily(
            "interlink_adapter_reconnects",
            "Connections made again after a loss", labels=["adapter", "connection"])
        inbound = CounterMetricFamily(
            "interlink_adapter_inbound",
            "Platform input by event type and what became of it: accepted (taken by the "
            "engine), duplicate, refused, busy (the platform is told to retry), malformed",
            labels=["adapter", "type", "outcome"])
        outbound = CounterMetricFamily(
            "interlink_adapter_outbound",
            "Deliveries to the platform by event type and outcome: delivered, failed, retried",
            labels=["adapter", "type", "outcome"])
        rate_limited = CounterMetricFamily(
            "interlink_adapter_rate_limited",
            "Rate-limit answers from the platform (HTTP 429 or its equivalent)",
            labels=["adapter"])
        waited = CounterMetricFamily(
            "interlink_adapter_rate_limit_wait_seconds",
            "Seconds calls to the platform waited for rate limits (pacing, Retry-After)",
            labels=["adapter"])
        dedupe = CounterMetricFamily(
            "interlink_adapter_dedupe_hits",
            "Platform redeliveries the adapter recognised and answered without handling them "
            "again", labels=["adapter"])
        resolved = CounterMetricFamily(
            "interlink_adapter_ledger_resolved_at_start",
            "Events from this platform a crash had interrupted, failed to their senders after "
            "the restart grace", labels=["adapter"])
        for stats in self._engine.all_adapter_stats():
            name = stats.name
            for connection, current in sorted(stats.connections.items()):
                for each in CONNECTION_STATES:
                    state.add_metric([name, connection, each], 1.0 if each == current else 0.0)
            for connection, count in sorted(stats.reconnects.items()):
                reconnects.add_metric([name, connection], count)
            for (event_type, taken), count in sorted(stats.inbound.items()):
                inbound.add_metric([name, event_type, taken], count)
            for (event_type, delivered), count in sorted(stats.outbound.items()):
                outbound.add_metric([name, event_type, delivered], count)
            rate_limited.add_metric([name], stats.rate_limited)
            waited.add_metric([name], stats.rate_limit_wait)
            dedupe.add_metric([name], stats.dedupe_hits)
            resolved.add_metric([name], stats.ledger_resolved_at_start)
        yield from (state, reconnects, inbound, outbound, rate_limited, waited, dedupe,
                    resolved)
