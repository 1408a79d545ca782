"""The delivery ledger (issue #13 item 1): an accepted inbound event has a record of
metadata until it is delivered or its sender told; one a crash interrupted is failed
to its sender after the restart grace, unless its platform redelivers it first."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from engine import (
    DeliveryOutcome,
    DeliveryResult,
    EnginePort,
    EngineSettings,
    Event,
    LmdbDirectory,
    MailboxFullError,
    Message,
    MessageIdRecord,
    SessionRecord,
)
from engine._session import REDELIVERED_UNCONFIRMED, DeliverySettings
from engine.testing import LoopbackAdapter

from ._harness import JOHN, PETER, federation, next_event
from .test_edges import GatedLoopback, message


@pytest.fixture
def durable_clock() -> trio.testing.MockClock:
    """Autojumping, but only after 0.1 s of real time with every task blocked: a delivery
    waits for its ledger record's commit (a thread), which must land before time jumps
    (a plain ``autojump_clock`` would jump to the next deadline first)."""
    return trio.testing.MockClock(autojump_threshold=0.1)


async def test_an_offered_message_is_ledgered_until_delivered() -> None:
    widget = GatedLoopback("widget", held=PETER)
    async with federation(widget=widget) as fed:
        sent = message(JOHN, PETER, "hello")
        await fed.engine.offer(sent)
        await trio.testing.wait_all_tasks_blocked()
        (record,) = fed.directory.open_ledger()
        assert (record.event_id, record.sender, record.receiver, record.type) == (
            sent.event_id, JOHN, PETER, "im")
        assert not hasattr(record, "body") and not hasattr(record, "text")  # metadata only
        widget.gate.set()
        await next_event(widget)
        await fed.settle()
        assert fed.directory.open_ledger() == []


async def test_a_busy_answer_leaves_no_ledger_record() -> None:
    widget = GatedLoopback("widget", held=PETER)
    async with federation(widget=widget,
                          settings=EngineSettings(shard_count=1, mailbox_capacity=1)) as fed:
        sent = [message(JOHN, PETER, str(i)) for i in range(3)]
        await fed.engine.offer(sent[0])
        await trio.testing.wait_all_tasks_blocked()
        await fed.engine.offer(sent[1])
        with pytest.raises(MailboxFullError):
            await fed.engine.offer(sent[2])
        assert [r.event_id for r in fed.directory.open_ledger()] == [
            sent[0].event_id, sent[1].event_id]
        widget.gate.set()


async def _crash_with_one_message_in_flight(path: Path) -> Message:
    """Run an engine, accept a message its destination never takes, make the ledger
    durable (as an adapter does before acknowledging), then stop without draining."""
    directory = await LmdbDirectory.open(path)
    try:
        widget = GatedLoopback("widget", held=PETER)  # never released: the crash comes first
        async with federation(directory=directory, widget=widget) as fed:
            sent = message(JOHN, PETER, "caught by the crash")
            await fed.engine.offer(sent)
            await directory.flush()
            await trio.testing.wait_all_tasks_blocked()
            assert widget.waiting == 1
        return sent  # the federation's nursery is cancelled: no drain, no resolution
    finally:
        await directory.aclose()


async def test_an_interrupted_message_is_failed_to_its_sender_after_a_restart(
        tmp_path: Path, durable_clock: trio.testing.MockClock) -> None:
    sent = await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        assert [r.event_id for r in directory.open_ledger()] == [sent.event_id]
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        async with federation(directory=directory, settings=settings) as fed:
            started = trio.current_time()
            with trio.fail_after(300):  # autojumped: a missing resolution fails, not hangs
                outcome = await next_event(fed.acme)
            assert trio.current_time() - started >= 30.0  # the platform had its chance
            assert isinstance(outcome, DeliveryOutcome)
            assert (outcome.status, outcome.target_event_id, outcome.destination) == (
                "failed", sent.event_id, JOHN)
            assert outcome.reason.startswith("engine restart; sent ")
            assert "caught" not in outcome.reason  # the time, never the content
            await fed.settle()
            (entry,) = [e for e in fed.log.entries() if e.event_id == sent.event_id]
            assert (entry.outcome, entry.reason) == ("failed", "engine-restart")
            assert directory.open_ledger() == []
            assert fed.engine.ledger_resolved_at_start == 1
    finally:
        await directory.aclose()


class IdempotentLoopback(LoopbackAdapter):
    """A destination that finds an earlier delivery itself (as the Slack adapter does by
    its posts' metadata): it notes what ``may_have_delivered`` told it."""

    delivers_idempotently = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.told: list[float | None] = []
        self.port: EnginePort | None = None

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.port = port
        await super().run(port, task_status=task_status)

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        assert self.port is not None
        self.told.append(self.port.may_have_delivered(event.event_id))
        return await super().deliver(event, session)


async def test_a_redelivered_message_goes_once_to_a_destination_that_finds_copies(
        tmp_path: Path, durable_clock: trio.testing.MockClock) -> None:
    sent = await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        (interrupted,) = directory.open_ledger()
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        widget = IdempotentLoopback("widget")
        async with federation(directory=directory, settings=settings, widget=widget) as fed:
            await fed.engine.offer(sent)  # the platform redelivers within the grace
            with trio.fail_after(10):
                assert (await next_event(fed.widget)).event_id == sent.event_id
            # it was told to look for a copy from the first acceptance on
            assert widget.told == [interrupted.accepted_at]
            await trio.sleep(60.0)  # past the grace
            await fed.settle()
            failures = [e for e in fed.acme.delivered_nowait()
                        if isinstance(e, DeliveryOutcome) and e.status == "failed"]
            assert failures == []
            assert fed.widget.delivered_nowait() == []  # once
            assert directory.open_ledger() == []
            assert fed.engine.ledger_resolved_at_start == 0
            assert fed.engine.router.redelivered == {}
    finally:
        await directory.aclose()


async def test_a_redelivered_message_is_not_sent_twice_where_copies_cannot_be_found(
        tmp_path: Path, durable_clock: trio.testing.MockClock) -> None:
    """The first copy may have been delivered just before the crash: a destination that
    cannot tell is not sent it again; the sender is told instead."""
    sent = await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        async with federation(directory=directory, settings=settings) as fed:
            assert await fed.engine.offer(sent)  # taken (and acknowledged), not delivered
            with trio.fail_after(10):
                outcome = await next_event(fed.acme)
            assert isinstance(outcome, DeliveryOutcome)
            assert (outcome.status, outcome.target_event_id, outcome.reason) == (
                "failed", sent.event_id, REDELIVERED_UNCONFIRMED)
            await trio.sleep(60.0)  # past the grace: not told a second time
            await fed.settle()
            assert fed.widget.delivered_nowait() == []
            assert fed.acme.delivered_nowait() == []
            assert directory.open_ledger() == []
            assert fed.engine.ledger_resolved_at_start == 0
    finally:
        await directory.aclose()


async def test_an_interrupted_message_whose_id_record_reached_disk_is_not_failed(
        tmp_path: Path, durable_clock: trio.testing.MockClock) -> None:
    """Delivered, with its message-id record durable, but the ledger's resolution lost
    in the crash: resolved as delivered at the restart, with no notice."""
    sent = await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        (interrupted,) = directory.open_ledger()
        await directory.put_message_ids(MessageIdRecord(
            canonical_id=sent.event_id, session_id=interrupted.session_id,
            platform_ids={"widget": "w-1"}, created_at=interrupted.accepted_at))
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        async with federation(directory=directory, settings=settings) as fed:
            await trio.sleep(60.0)  # past the grace
            await fed.settle()
            assert fed.acme.delivered_nowait() == []  # no notice
            (entry,) = [e for e in fed.log.entries() if e.event_id == sent.event_id]
            assert (entry.outcome, entry.reason) == ("delivered", "engine-restart:confirmed")
            assert directory.open_ledger() == []
    finally:
        await directory.aclose()


async def test_a_redelivery_is_not_routed_again_even_after_a_restart(tmp_path: Path) -> None:
    """Durable de-duplication (issue #13 item 2): a platform's retry of a message taken
    before is answered as taken and not delivered twice, in flight or after a restart."""
    path = tmp_path / "directory"
    sent = message(JOHN, PETER, "once")
    directory = await LmdbDirectory.open(path)
    try:
        widget = GatedLoopback("widget", held=PETER)
        async with federation(directory=directory, widget=widget) as fed:
            await fed.engine.offer(sent)
            await trio.testing.wait_all_tasks_blocked()
            await fed.engine.offer(sent)  # a retry while the first is in flight
            widget.gate.set()
            assert (await next_event(widget)).event_id == sent.event_id
            await fed.settle()
            assert fed.engine.router.duplicates == 1
        await directory.flush()
    finally:
        await directory.aclose()
    directory = await LmdbDirectory.open(path)
    try:
        async with federation(directory=directory) as fed:
            await fed.engine.offer(sent)  # a retry after the restart
            await fed.settle()
            assert fed.widget.delivered_nowait() == []
            assert fed.engine.router.duplicates == 1
    finally:
        await directory.aclose()


class FindingLoopback(LoopbackAdapter):
    """A destination that can look for an event on its platform (``FindsDeliveries``)."""

    def __init__(self, name: str, found: dict[str, str]) -> None:
        super().__init__(name)
        self.found = found
        self.asked: list[tuple[str, float]] = []

    async def find_delivered(self, event_id: str, session: SessionRecord,
                             since: float) -> str | None:
        self.asked.append((event_id, since))
        return self.found.get(event_id)


async def test_an_interrupted_message_its_destination_finds_is_resolved_as_delivered(
        tmp_path: Path, durable_clock: trio.testing.MockClock) -> None:
    sent = await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        (interrupted,) = directory.open_ledger()
        widget = FindingLoopback("widget", {sent.event_id: "w-42"})
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        async with federation(directory=directory, settings=settings, widget=widget) as fed:
            await trio.sleep(60.0)  # past the grace
            await fed.settle()
            assert widget.asked == [(sent.event_id, interrupted.accepted_at)]
            assert fed.acme.delivered_nowait() == []  # no notice
            (entry,) = [e for e in fed.log.entries() if e.event_id == sent.event_id]
            assert (entry.outcome, entry.reason) == ("delivered", "engine-restart:found")
            record = directory.get_message_ids(sent.event_id)
            assert record is not None and record.platform_ids == {"widget": "w-42"}
            assert directory.open_ledger() == []
    finally:
        await directory.aclose()


async def test_an_interrupted_message_its_destination_does_not_find_is_failed(
        tmp_path: Path, durable_clock: trio.testing.MockClock) -> None:
    sent = await _crash_with_one_message_in_flight(tmp_path / "directory")
    directory = await LmdbDirectory.open(tmp_path / "directory")
    try:
        widget = FindingLoopback("widget", {})
        settings = EngineSettings(shard_count=2, delivery=DeliverySettings(restart_grace=30.0))
        async with federation(directory=directory, settings=settings, widget=widget) as fed:
            with trio.fail_after(300):
                outcome = await next_event(fed.acme)
            assert isinstance(outcome, DeliveryOutcome) and outcome.status == "failed"
            assert "not confirmed delivered" in outcome.reason
            assert [event_id for event_id, _ in widget.asked] == [sent.event_id]
    finally:
        await directory.aclose()
