"""Cheap in-process measurements the operator surface exports (as Prometheus metrics).

:class:`LatencyHistogram` for the router's and sessions' latencies,
:class:`AdapterStats` for each adapter's connections and traffic. Kept as
plain counters so the hot path pays a few hundred nanoseconds and the core
does not depend on a metrics library; ``supervisor`` turns them into metrics
at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Literal, get_args

from ._events import LogType

#: upper bounds in seconds, from 50 us to 10 s
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
)


class LatencyHistogram:
    """A fixed-bucket histogram (Prometheus semantics: cumulative on export)."""

    __slots__ = ("bucket_counts", "count", "total")

    def __init__(self) -> None:
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.bucket_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, count of observations <= bound)`` pairs, ending with ``+Inf``."""
        result, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.bucket_counts,
                                strict=True):
            running += count
            result.append((bound, running))
        return result


ConnectionState = Literal["connected", "connecting", "disconnected"]
CONNECTION_STATES: tuple[ConnectionState, ...] = ("connected", "connecting", "disconnected")
#: what became of one piece of platform input (counted by the engine, except ``malformed``)
InboundOutcome = Literal["accepted", "duplicate", "refused", "busy", "malformed"]
#: what became of one delivery attempt (the engine's sessions count them)
OutboundOutcome = Literal["delivered", "failed", "retried"]
#: the ``type`` of input that never became an event (malformed, busy before decoding)
UNKNOWN_TYPE = "unknown"
#: the event types counts are kept by: the metadata log's, and :data:`UNKNOWN_TYPE`
EVENT_TYPE_LABELS: frozenset[str] = frozenset((*get_args(LogType), UNKNOWN_TYPE))
#: named connections per adapter; past this many, a new name counts as ``other``
MAX_CONNECTIONS = 16


class AdapterStats:
    """One adapter's measurements, by the engine and by the adapter itself.

    The engine creates one per adapter name and counts what it sees: inbound
    events offered through the adapter's port (``accepted``, ``duplicate``,
    ``busy``; ``refused`` when the adapter asked :meth:`EnginePort.refusal` and
    the router would refuse) and events interrupted by a crash and resolved at
    start-up. The adapter, which gets it from ``port.adapter_stats(name)``,
    reports what only it sees: its connections' states (reconnects follow
    from them), the platform's rate-limit answers and the time waited for rate
    limits, hits of its own de-duplication, and input too malformed to become
    an event. Outbound counts (``count_outbound``) are the sessions' to make.

    Plain counters (a few hundred nanoseconds per count); ``supervisor`` reads
    them at scrape time. Labels stay bounded: event types are a fixed set
    (anything else counts as :data:`UNKNOWN_TYPE`) and connection names are a
    few fixed names of the adapter's (past :data:`MAX_CONNECTIONS`, ``other``).
    """

    __slots__ = ("_connected_before", "connections", "dedupe_hits", "inbound",
                 "ledger_resolved_at_start", "name", "outbound", "rate_limit_wait",
                 "rate_limited", "reconnects")

    def __init__(self, name: str) -> None:
        self.name = name
        #: connection name -> its state now
        self.connections: dict[str, ConnectionState] = {}
        #: connection name -> connections made again after the first
        self.reconnects: dict[str, int] = {}
        self._connected_before: set[str] = set()
        #: (event type, outcome) -> inbound events
        self.inbound: dict[tuple[str, InboundOutcome], int] = {}
        #: (event type, outcome) -> delivery attempts
        self.outbound: dict[tuple[str, OutboundOutcome], int] = {}
        #: "slow down" answers from the platform (HTTP 429 and its equivalents)
        self.rate_limited = 0
        #: seconds calls waited for rate limits (pacing turns, Retry-After penalties)
        self.rate_limit_wait = 0.0
        #: platform redeliveries recognised by the adapter's own de-duplication
        self.dedupe_hits = 0
        #: this adapter's events a crash had interrupted, failed to their senders at start-up
        self.ledger_resolved_at_start = 0

    def __repr__(self) -> str:
        return f"<AdapterStats {self.name}>"

    def set_connection_state(self, connection: str, state: ConnectionState) -> None:
        """``connection`` (a fixed name, e.g. ``socket-mode``) is now in ``state``. A
        connection ``connected`` again, after a loss or a restart of the adapter, counts
        as a reconnect."""
        connections = self.connections
        if connection not in connections and len(connections) >= MAX_CONNECTIONS:
            connection = "other"
        if state == "connected" and connection in self._connected_before \
                and connections.get(connection) != "connected":
            self.reconnects[connection] = self.reconnects.get(connection, 0) + 1
        elif state == "connected":
            self._connected_before.add(connection)
        connections[connection] = state

    def count_inbound(self, event_type: str, outcome: InboundOutcome) -> None:
        if event_type not in EVENT_TYPE_LABELS:
            event_type = UNKNOWN_TYPE
        key = (event_type, outcome)
        self.inbound[key] = self.inbound.get(key, 0) + 1

    def count_outbound(self, event_type: str, outcome: OutboundOutcome) -> None:
        if event_type not in EVENT_TYPE_LABELS:
            event_type = UNKNOWN_TYPE
        key = (event_type, outcome)
        self.outbound[key] = self.outbound.get(key, 0) + 1

    def count_rate_limited(self) -> None:
        """The platform answered "too many requests" (HTTP 429 or its own equivalent)."""
        self.rate_limited += 1

    def add_rate_limit_wait(self, seconds: float) -> None:
        """A call waited ``seconds`` for a rate limit (its pacing turn, a Retry-After)."""
        if seconds > 0.0:
            self.rate_limit_wait += seconds

    def count_dedupe_hit(self) -> None:
        """The platform delivered again something the adapter had taken: answered, not
        handled again."""
        self.dedupe_hits += 1
