"""Engine lifecycle: refuse while stopping, drain what is in flight, flush."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine import (
    METADATA_DBS,
    Engine,
    EngineSettings,
    MemoryKV,
    Message,
    MetadataLog,
    UnavailableError,
)
from engine.testing import LoopbackAdapter, MemoryDirectory, TrioWallClock

from ._harness import JOHN, PETER, federation, seed


async def test_stop_drains_everything_in_flight_and_refuses_new_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with federation() as fed:
        fed.widget.fail_next("busy", retryable=True, times=5)  # keep the first one in flight
        sent = [Message.create(source=JOHN, destination=PETER, body=str(i),
                               timestamp=fed.clock.now()) for i in range(50)]
        for message in sent:
            await fed.acme.send(message)
        assert fed.engine.actors.in_flight > 0
        await fed.engine.stop()
        assert fed.engine.actors.in_flight == 0
        delivered = [e.event_id for e in fed.widget.delivered_nowait()]
        assert delivered == [m.event_id for m in sent]
        assert len([e for e in fed.log.entries() if e.type == "im"]) == 50, "log flushed"
        with pytest.raises(UnavailableError):
            await fed.acme.send(Message.create(source=JOHN, destination=PETER, body="late"))


async def test_services_start_in_order_with_adapters_last() -> None:
    async with federation() as fed:
        groups = [service.group for service in fed.engine.services()]
        assert groups[0] == "storage" and groups[-1] == "adapters"
        assert groups.index("session") < groups.index("adapters")
        assert fed.engine.accepting


def test_gc_tuning_freezes_start_up_and_raises_the_young_threshold() -> None:
    import gc

    from engine._gc import YOUNG_THRESHOLD, tuned_gc

    before = gc.get_threshold()
    with tuned_gc():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_hot_path_records_are_not_tracked_by_the_collector() -> None:
    """Events, rich text and metadata entries are gc=False Structs: never traversed."""
    import gc

    from engine import MetadataEntry

    message = Message.create(source=JOHN, destination=PETER, body="hi",
                             platform_ids={"acme": "a-1"})
    entry = MetadataEntry(timestamp=0.0, event_id=message.event_id, sender=JOHN,
                          receiver=PETER, type="im", outcome="delivered")
    for record in (message, message.body, message.body.blocks[0], entry):
        assert not gc.is_tracked(record), type(record).__name__


def _engine(widget: LoopbackAdapter, start_wait: float = 30.0) -> Engine:
    directory = MemoryDirectory()
    clock = TrioWallClock()
    return Engine(directory=directory, adapters=[LoopbackAdapter("acme"), widget], clock=clock,
                  metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock),
                  settings=EngineSettings(shard_count=2, start_wait=start_wait))


async def test_an_event_offered_while_the_engine_starts_waits_for_it_to_open(
        autojump_clock: trio.testing.MockClock) -> None:
    """A platform redelivering its backlog the moment its adapter connects (before the
    last service is up) is not refused: the event waits for the engine to open."""
    widget = LoopbackAdapter("widget")
    engine = _engine(widget)
    await seed(engine.directory)
    early = Message.create(source=JOHN, destination=PETER, body="early")
    async with trio.open_nursery() as nursery:
        taken: list[bool] = []

        async def offer_early() -> None:
            taken.append(await engine.offer(early))

        nursery.start_soon(offer_early)
        await trio.testing.wait_all_tasks_blocked()
        assert not engine.accepting and taken == []  # waiting, not refused
        await nursery.start(engine.run)
        with trio.fail_after(5):
            assert (await widget.next_delivered()).event_id == early.event_id
        assert taken == [True]
        nursery.cancel_scope.cancel()


async def test_an_event_offered_to_an_engine_that_never_opens_is_refused_in_time(
        autojump_clock: trio.testing.MockClock) -> None:
    engine = _engine(LoopbackAdapter("widget"), start_wait=30.0)
    started = trio.current_time()
    with pytest.raises(UnavailableError):
        await engine.offer(Message.create(source=JOHN, destination=PETER, body="x"))
    assert trio.current_time() - started == pytest.approx(30.0)
