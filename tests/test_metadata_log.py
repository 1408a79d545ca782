"""Metadata log: entries without content, roll-ups, retention, and no content at rest."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import trio
import trio.testing

from engine import (
    METADATA_DBS,
    Address,
    LmdbDirectory,
    LmdbStore,
    MemoryKV,
    Message,
    MetadataEntry,
    MetadataLog,
)
from engine._kv import WriteOp
from engine._metadata_log import WRITE_CHUNK, day_of
from engine.testing import MemoryDirectory, TrioWallClock

from ._harness import JOHN, MARY, PETER, federation, seed

DAY = 86_400.0


def entry(clock: TrioWallClock, sender: Address, receiver: Address, *,
          type: str = "im", outcome: str = "delivered") -> MetadataEntry:
    return MetadataEntry(timestamp=clock.now(), event_id=secrets.token_hex(4), sender=sender,
                         receiver=receiver, type=type, outcome=outcome)  # type: ignore[arg-type]


async def test_rollups_count_messages_and_unique_users_per_domain_pair() -> None:
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    log = MetadataLog(MemoryKV(METADATA_DBS), directory, clock)
    for sender, receiver in ((JOHN, PETER), (JOHN, PETER), (PETER, JOHN), (MARY, PETER)):
        await log.record(entry(clock, sender, receiver))
    await log.record(entry(clock, JOHN, PETER, type="typing"))
    await log.record(entry(clock, JOHN, PETER, outcome="failed"))
    await log.write_buffered()
    [rollup] = log.rollups()
    assert (rollup.internal_domain, rollup.external_domain, rollup.platform) == \
        ("acme.test", "widget.test", "widget")
    assert (rollup.messages, rollup.events, rollup.unique_users) == (4, 6, 3)
    assert rollup.day == day_of(clock.now())
    assert len(log.entries()) == 6


async def test_retention_prunes_entries_and_old_rollups(
    autojump_clock: trio.testing.MockClock,
) -> None:
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    log = MetadataLog(MemoryKV(METADATA_DBS), directory, clock,
                      retention_days=7, rollup_retention_days=30)
    await log.record(entry(clock, JOHN, PETER))
    await log.write_buffered()
    await trio.sleep(8 * DAY)
    await log.record(entry(clock, JOHN, PETER))
    await log.write_buffered()
    await log.prune()
    assert len(log.entries()) == 1, "entries older than 7 days are gone"
    assert len(log.rollups()) == 2, "roll-ups are kept longer"
    await trio.sleep(31 * DAY)
    await log.prune()
    assert log.entries() == [] and log.rollups() == []


async def test_unique_users_over_a_period_are_not_a_sum_of_days(
    autojump_clock: trio.testing.MockClock,
) -> None:
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    log = MetadataLog(MemoryKV(METADATA_DBS), directory, clock)
    first_day = day_of(clock.now())
    for _ in range(3):
        await log.record(entry(clock, JOHN, PETER))
        await log.write_buffered()
        await trio.sleep(DAY)
    assert log.unique_users(day_from=first_day, day_to=day_of(clock.now())) == 1
    assert sum(r.unique_users for r in log.rollups()) == 3


async def test_record_waits_when_the_buffer_is_full() -> None:
    directory = MemoryDirectory()
    clock = TrioWallClock()
    log = MetadataLog(MemoryKV(METADATA_DBS), directory, clock, max_buffered=2)
    await log.record(entry(clock, JOHN, PETER))
    await log.record(entry(clock, JOHN, PETER))
    done = trio.Event()

    async def third() -> None:
        await log.record(entry(clock, JOHN, PETER))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        await log.write_buffered()
    assert done.is_set()
    await log.write_buffered()
    assert len(log.entries()) == 3


async def test_no_message_content_reaches_the_disk(tmp_path: Path) -> None:
    """Route messages carrying a unique marker; no file under the data dir holds it."""
    marker = f"CONTENT-MARKER-{secrets.token_hex(8)}"
    directory = await LmdbDirectory.open(tmp_path / "directory")
    store = LmdbStore.open(tmp_path / "metadata", db_names=METADATA_DBS, schema_version=1)
    async with federation(directory=directory, store=store) as fed:
        for i in range(20):
            await fed.acme.send(Message.create(source=JOHN, destination=PETER,
                                               body=f"{marker} {i}",
                                               platform_ids={"acme": f"a-{i}"}))
            await fed.widget.send(Message.create(source=PETER, destination=JOHN,
                                                 body=f"re: {marker} {i}"))
        await fed.settle()
        assert len(fed.log.entries()) >= 40
        await fed.log.flush()
        await directory.flush()
    await store.aclose()
    await directory.aclose()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240 -- after close
    assert files, "the data dir should hold the LMDB files"
    for path in files:
        data = path.read_bytes()
        assert marker.encode() not in data, f"message content found in {path}"
        assert marker.encode("utf-16-le") not in data, f"message content found in {path}"


async def test_metadata_survives_a_restart(tmp_path: Path) -> None:
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    store = LmdbStore.open(tmp_path / "m", db_names=METADATA_DBS, schema_version=1)
    log = MetadataLog(store, directory, clock)
    await log.record(entry(clock, JOHN, PETER))
    await log.flush()
    await store.aclose()
    reopened = LmdbStore.open(tmp_path / "m", db_names=METADATA_DBS, schema_version=1)
    log = MetadataLog(reopened, directory, clock)
    assert len(log.entries()) == 1
    assert [r.messages for r in log.rollups()] == [1]
    await reopened.aclose()


class _NoYieldKV(MemoryKV):
    """Applies writes without a checkpoint (as LmdbStore does while it has room)."""

    def __init__(self, on_write: Callable[[int], None]) -> None:
        super().__init__(METADATA_DBS)
        self._on_write = on_write

    async def write(self, ops: Sequence[WriteOp]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        for db, key, value in ops:
            table = self._db(db)
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        self._on_write(sum(db == "entries" for db, _, _ in ops))


async def test_the_writer_yields_between_chunks_of_a_large_batch() -> None:
    """A big batch must not hold the event loop: each chunk runs in its own task step."""
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    steps = 0
    writes: list[tuple[int, int]] = []  # (entries written, task step it happened in)

    class StepCounter(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            if task is writer:
                steps += 1

    log = MetadataLog(_NoYieldKV(lambda n: writes.append((n, steps))), directory, clock)
    for _ in range(3 * WRITE_CHUNK + 1):
        await log.record(entry(clock, JOHN, PETER))
    writer = trio.lowlevel.current_task()
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        assert await log.write_buffered() == 3 * WRITE_CHUNK + 1
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert [n for n, _ in writes] == [WRITE_CHUNK] * 3 + [1]
    step_of_each = [step for _, step in writes]
    assert len(set(step_of_each)) == len(writes), "the writer did not yield between chunks"
    assert len(log.entries(limit=10_000)) == 3 * WRITE_CHUNK + 1
    [rollup] = log.rollups()
    assert rollup.messages == 3 * WRITE_CHUNK + 1


async def test_a_cancelled_write_keeps_the_unwritten_entries() -> None:
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    scope = trio.CancelScope()
    log = MetadataLog(_NoYieldKV(lambda n: scope.cancel()), directory, clock)
    total = 2 * WRITE_CHUNK + 5
    for _ in range(total):
        await log.record(entry(clock, JOHN, PETER))
    with scope:
        await log.write_buffered()
    assert scope.cancelled_caught
    assert log.statistics() == {"recorded": total, "written": WRITE_CHUNK,
                                "buffered": total - WRITE_CHUNK}
    assert await log.write_buffered() == total - WRITE_CHUNK
    entries = log.entries(limit=10_000)
    assert len(entries) == total
    assert len({e.event_id for e in entries}) == total, "nothing written twice"
    [rollup] = log.rollups()
    assert rollup.messages == total


async def test_flush_waits_for_a_batch_being_written() -> None:
    """flush() during the writer's chunked write still covers the writer's batch."""
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    log = MetadataLog(_NoYieldKV(lambda n: None), directory, clock)
    for _ in range(2 * WRITE_CHUNK):
        await log.record(entry(clock, JOHN, PETER))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.write_buffered)
        await trio.lowlevel.checkpoint()  # the writer has taken the batch, one chunk done
        await log.flush()
        assert len(log.entries(limit=10_000)) == 2 * WRITE_CHUNK


async def test_the_writer_keeps_writing_after_a_flush_found_nothing_to_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flush while the writer waits for data must not leave it waiting forever: the
    bench saw every session blocked on a full buffer the writer no longer emptied."""
    directory = MemoryDirectory()
    await seed(directory)
    clock = TrioWallClock()
    log = MetadataLog(MemoryKV(METADATA_DBS), directory, clock, max_buffered=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        await trio.testing.wait_all_tasks_blocked()  # the writer waits for data
        await log.flush()  # nothing buffered: writes nothing
        for _ in range(10):  # more than the buffer holds: only the writer makes room
            with trio.fail_after(5):
                await log.record(entry(clock, JOHN, PETER))
        await trio.sleep(1)  # virtual time (autojump): past the writer's 50 ms gathering
        assert log.statistics()["written"] == 10
        nursery.cancel_scope.cancel()
