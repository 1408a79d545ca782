"""The benchmark's federation and traffic: who talks to whom, and what they send.

``alice@acme.bench`` (internal domain, platform ``acme``) writes to
``peer<i>@widget.bench`` (an external domain on platform ``widget``); an
allow agreement covers the two domains, and each destination is one session.
Every pipeline (Interlink, the bare trio baseline, the peers) builds the same
events in its sender: a :class:`~engine.Message` with a numeric event id that
the receiving end hands back to the trial's timeline.
"""

from __future__ import annotations

from typing import Protocol

from engine import (
    Address,
    Directory,
    DomainAgreement,
    DomainRoute,
    Message,
    SessionRecord,
    session_id_for,
)

INTERNAL_DOMAIN = "acme.bench"
EXTERNAL_DOMAIN = "widget.bench"
INTERNAL_PLATFORM = "acme"
EXTERNAL_PLATFORM = "widget"
SOURCE = Address(user="alice", domain=INTERNAL_DOMAIN)
TEXT = "benchmark"


def peer(index: int) -> Address:
    """The ``index``-th destination."""
    return Address(user=f"peer{index}", domain=EXTERNAL_DOMAIN)


def member(index: int) -> Address:
    """The ``index``-th internal user (the scale suite's sessions are member <-> peer)."""
    return Address(user=f"u{index}", domain=INTERNAL_DOMAIN)


class TrafficLike(Protocol):
    """What a sender needs to know: the sessions, and event ``seq`` of a trial."""

    @property
    def sessions(self) -> int: ...

    def event(self, event_id: str, seq: int) -> Message: ...


class Traffic:
    """Round-robin traffic from :data:`SOURCE` to ``sessions`` destinations."""

    __slots__ = ("destinations", "source")

    def __init__(self, sessions: int) -> None:
        if sessions < 1:
            raise ValueError("traffic needs at least one session")
        self.source = SOURCE
        self.destinations = [peer(i) for i in range(sessions)]

    @property
    def sessions(self) -> int:
        return len(self.destinations)

    def event(self, event_id: str, seq: int) -> Message:
        """Event ``seq`` of a trial: to destination ``seq % sessions``."""
        destinations = self.destinations
        return Message(source=self.source, destination=destinations[seq % len(destinations)],
                       text=TEXT, event_id=event_id)

    def session_records(self) -> list[SessionRecord]:
        """One session per destination, sorted by id (cheap to insert in that order)."""
        records = [SessionRecord(session_id=session_id_for(self.source, destination),
                                 a=self.source, b=destination)
                   for destination in self.destinations]
        records.sort(key=lambda record: record.session_id)
        return records


class PairTraffic:
    """One event each for sessions ``first .. first + count - 1`` (member i <-> peer i).

    The scale suite's traffic: event ``seq`` goes from ``member(first + seq)``
    to ``peer(first + seq)``, so every event of a trial reaches a different
    session.
    """

    __slots__ = ("count", "first")

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count

    @property
    def sessions(self) -> int:
        return self.count

    def event(self, event_id: str, seq: int) -> Message:
        index = self.first + seq % self.count
        return Message(source=member(index), destination=peer(index), text=TEXT,
                       event_id=event_id)


def pair_session(index: int, created_at: float = 0.0) -> SessionRecord:
    """The registered session of ``member(index)`` and ``peer(index)``."""
    a, b = member(index), peer(index)
    return SessionRecord(session_id=session_id_for(a, b), a=a, b=b, created_at=created_at)


async def seed_directory(directory: Directory) -> None:
    """The two domain routes and the agreement that lets them talk."""
    await directory.put_domain_route(DomainRoute(domain=INTERNAL_DOMAIN,
                                                 platform=INTERNAL_PLATFORM, internal=True))
    await directory.put_domain_route(DomainRoute(domain=EXTERNAL_DOMAIN,
                                                 platform=EXTERNAL_PLATFORM))
    await directory.put_domain_agreement(DomainAgreement(
        domain_a=INTERNAL_DOMAIN, domain_b=EXTERNAL_DOMAIN, decision="allow"))
