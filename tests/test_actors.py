"""Actors: ordering, backpressure, ask timeouts, virtual activation and passivation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from engine import (
    ActorCrashedError,
    ActorKind,
    ActorStoppedError,
    ActorSystem,
    AskTimeoutError,
    LocalError,
    MailboxFullError,
)


def _count_tasks(task: trio.lowlevel.Task) -> int:
    """``task`` and every task below it."""
    return 1 + sum(_count_tasks(child) for nursery in task.child_nurseries
                   for child in nursery.child_tasks)


class Recorder:
    """An actor that records what it handled; ``gate`` can hold it mid-message."""

    def __init__(self, actor_id: str, log: list[tuple[str, Any]], gate: trio.Event | None) -> None:
        self.actor_id = actor_id
        self.log = log
        self.gate = gate

    async def handle(self, message: Any) -> Any:
        if message == "block" and self.gate is not None:
            await self.gate.wait()
        if message == "crash":
            raise RuntimeError("boom")
        if message == "slow":
            await trio.sleep(10)
        self.log.append((self.actor_id, message))
        return ("ok", message)


class World:
    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self.handled: list[tuple[str, Any]] = []
        self.activations: list[str] = []
        self.passivations: list[str] = []
        self.undeliverable: list[tuple[str, Any]] = []
        self.gate = trio.Event()
        self.activation_gate: trio.Event | None = None

    async def activate(self, actor_id: str) -> Recorder:
        self.activations.append(actor_id)
        if self.activation_gate is not None:
            await self.activation_gate.wait()
        return Recorder(actor_id, self.handled, self.gate)

    async def passivate(self, actor_id: str, actor: object) -> None:
        self.passivations.append(actor_id)

    async def on_undeliverable(self, actor_id: str, message: Any, error: BaseException) -> None:
        self.undeliverable.append((actor_id, message))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    system = ActorSystem(shard_count=4, mailbox_capacity=3, sweep_interval=1.0)
    w = World(system)
    system.register(ActorKind("rec", w.activate, idle_timeout=10.0, max_attempts=2,
                              on_passivate=w.passivate, on_undeliverable=w.on_undeliverable))
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        yield w
        nursery.cancel_scope.cancel()


async def test_messages_of_one_actor_are_handled_in_order(world: World) -> None:
    ref = world.system.ref("rec/a")
    for i in range(50):
        await ref.tell(i)
    await world.system.drain()
    assert [m for _, m in world.handled] == list(range(50))


async def test_tell_waits_while_the_mailbox_is_full(world: World) -> None:
    ref = world.system.ref("rec/a")
    await ref.tell("block")
    await trio.testing.wait_all_tasks_blocked()  # the actor is now inside "block"
    for i in range(3):  # capacity 3
        await ref.tell(i)
    sent = trio.Event()

    async def fourth() -> None:
        await ref.tell(3)
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fourth)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set(), "tell must wait while the mailbox is full"
        world.gate.set()
    await world.system.drain()
    assert [m for _, m in world.handled] == ["block", 0, 1, 2, 3]


async def test_tell_nowait_raises_mailbox_full(world: World) -> None:
    ref = world.system.ref("rec/a")
    await ref.tell("block")
    await trio.testing.wait_all_tasks_blocked()
    for i in range(3):
        ref.tell_nowait(i)
    with pytest.raises(MailboxFullError, match="rec/a"):
        ref.tell_nowait(99)
    world.gate.set()
    await world.system.drain()
    assert 99 not in [m for _, m in world.handled]


async def test_ask_returns_the_handlers_answer(world: World) -> None:
    assert await world.system.ref("rec/a").ask("ping", timeout=1) == ("ok", "ping")


async def test_ask_times_out(world: World, autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    with pytest.raises(AskTimeoutError, match="rec/a"):
        await world.system.ref("rec/a").ask("slow", timeout=2)
    assert trio.current_time() - start == pytest.approx(2)


async def test_activation_on_first_message_only(world: World) -> None:
    assert not world.system.is_active("rec/a")
    await world.system.ref("rec/a").tell(1)
    await world.system.ref("rec/a").tell(2)
    await world.system.drain()
    assert world.activations == ["rec/a"]
    assert world.system.is_active("rec/a")


async def test_single_activation_under_concurrent_first_messages(world: World) -> None:
    world.activation_gate = trio.Event()  # keep the first activation loading
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(world.system.ref("rec/x").tell, i)
        await trio.testing.wait_all_tasks_blocked()
        world.activation_gate.set()
    await world.system.drain()
    assert world.activations == ["rec/x"]
    assert sorted(m for _, m in world.handled) == list(range(20))


async def test_idle_actors_are_passivated_and_reactivated(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    ref = world.system.ref("rec/a")
    await ref.tell(1)
    await world.system.drain()
    await trio.sleep(5)
    assert world.system.is_active("rec/a"), "not idle long enough yet"
    await trio.sleep(7)  # idle_timeout 10 s, swept every second
    await trio.testing.wait_all_tasks_blocked()
    assert not world.system.is_active("rec/a")
    assert world.passivations == ["rec/a"]
    await ref.tell(2)
    await world.system.drain()
    assert world.activations == ["rec/a", "rec/a"]
    assert [m for _, m in world.handled] == [1, 2]


async def test_busy_actor_is_not_passivated(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    await world.system.ref("rec/a").tell("block")
    await trio.sleep(30)
    assert world.system.is_active("rec/a")
    world.gate.set()


async def test_crash_retries_then_reports_undeliverable(world: World) -> None:
    ref = world.system.ref("rec/a")
    await ref.tell("crash")
    await ref.tell("after")
    await world.system.drain()
    assert world.undeliverable == [("rec/a", "crash")]
    assert len(world.activations) == 3  # first, then one fresh activation per crash
    assert world.handled == [("rec/a", "after")], "the actor carries on after a crash"
    stats = world.system.stats("rec/a")
    assert stats is not None and stats.crashes == 2


async def test_ask_of_a_crashing_handler_raises(world: World) -> None:
    with pytest.raises(ActorCrashedError) as info:
        await world.system.ref("rec/a").ask("crash", timeout=1)
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_unknown_kind_is_a_clear_error(world: World) -> None:
    with pytest.raises(LocalError, match="no actor kind 'nope'"):
        await world.system.ref("nope/a").tell(1)


async def test_runner_stats_of_an_unknown_kind_is_a_clear_error(world: World) -> None:
    with pytest.raises(LocalError, match="no actor kind 'nope'"):
        world.system.runner_stats("nope")


async def test_refs_fail_clearly_when_the_system_is_not_running() -> None:
    system = ActorSystem()
    system.register(ActorKind("rec", World(system).activate))
    with pytest.raises(ActorStoppedError):
        await system.ref("rec/a").tell(1)


async def test_many_actors_spread_over_shards(world: World) -> None:
    for i in range(200):
        await world.system.ref(f"rec/{i}").tell(i)
    await world.system.drain()
    assert world.system.active_count() == 200
    assert all(shard.activations for shard in world.system.shards("rec"))


@pytest.fixture
async def fragile() -> AsyncIterator[World]:
    """Actors with a small restart budget: 2 restarts per 60 s, 2 attempts per message."""
    system = ActorSystem(shard_count=2, mailbox_capacity=10)
    w = World(system)
    system.register(ActorKind("rec", w.activate, max_attempts=2, max_restarts=2,
                              restart_window=60.0, backoff_initial=1.0, backoff_max=4.0,
                              on_undeliverable=w.on_undeliverable))
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        yield w
        nursery.cancel_scope.cancel()


async def test_restarts_wait_a_backoff(
    fragile: World, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    await fragile.system.ref("rec/a").tell("crash")
    await fragile.system.drain()
    assert 0.8 <= trio.current_time() - start <= 1.2  # one retry after ~1 s (jittered)


async def test_an_actor_over_its_budget_is_failed_until_restarted(
    fragile: World, autojump_clock: trio.testing.MockClock
) -> None:
    system = fragile.system
    ref = system.ref("rec/a")
    await ref.tell("crash")  # 2 crashes: within budget
    await ref.tell("crash")  # third crash: over budget -> failed
    await ref.tell("later")  # answered, not held and not dropped
    await system.drain()
    stats = system.stats("rec/a")
    assert stats is not None
    assert (stats.state, stats.crashes, stats.last_error) == ("failed", 3, "RuntimeError")
    assert [m for _, m in fragile.undeliverable] == ["crash", "crash", "later"]
    assert [s.actor_id for s in system.list_active(state="failed")] == ["rec/a"]
    with pytest.raises(ActorCrashedError):
        await ref.ask("ping", timeout=1)

    restarted = system.restart("rec/a")
    assert restarted.state == "running"
    assert await ref.ask("ping", timeout=1) == ("ok", "ping")
    assert system.list_active(state="failed") == []


async def test_a_failed_actor_stays_visible_and_is_never_passivated(
    fragile: World, autojump_clock: trio.testing.MockClock
) -> None:
    fragile.system.kinds["rec"].idle_timeout = 5.0
    for _ in range(3):
        await fragile.system.ref("rec/a").tell("crash")
    await fragile.system.drain()
    await trio.sleep(60)
    assert fragile.system.is_active("rec/a")


async def test_one_bad_actor_does_not_affect_its_neighbours(
    fragile: World, autojump_clock: trio.testing.MockClock
) -> None:
    # The bad actor's crash retries wait ~1 s each (backoff_initial); its
    # neighbours, half of them on its shard, must not wait behind it. Under
    # the autojump clock time moves only when every task waits, so a good
    # message handled behind a backoff would be handled at >= 0.8 s.
    start = trio.current_time()
    handled_at: dict[Any, float] = {}

    async def watch() -> None:
        while len(handled_at) < 20:
            for _, m in fragile.handled:
                handled_at.setdefault(m, trio.current_time() - start)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        for _ in range(3):
            await fragile.system.ref("rec/bad").tell("crash")
        for i in range(20):
            await fragile.system.ref(f"rec/good-{i}").tell(i)
        with trio.fail_after(30):
            await fragile.system.drain()
    assert sorted(m for _, m in fragile.handled) == list(range(20))
    assert max(handled_at.values()) < 0.5, "a neighbour waited behind the crashing actor"


async def test_operator_stop_and_start(world: World) -> None:
    system = world.system
    assert system.stop("rec/a") is False
    assert system.start("rec/a").state == "running"
    assert system.is_active("rec/a")
    await system.ref("rec/a").tell(1)
    assert system.stop("rec/a") is True
    await trio.testing.wait_all_tasks_blocked()
    assert not system.is_active("rec/a")
    assert world.handled == [("rec/a", 1)], "a stopped actor finishes what it had"


async def test_the_heap_is_trimmed_once_after_a_large_passivation_sweep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trims: list[int] = []

    def release() -> bool:
        trims.append(system.active_count())
        return True

    system = ActorSystem(shard_count=4, mailbox_capacity=3, sweep_interval=3600.0,
                         trim_after=5, release_memory=release)
    w = World(system)
    system.register(ActorKind("rec", w.activate, idle_timeout=1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        for i in range(3):
            await system.ref(f"rec/{i}").tell("hello")
        await system.drain()
        await trio.sleep(2)
        assert system.sweep_idle() == 3
        await trio.testing.wait_all_tasks_blocked()
        assert trims == [], "a small sweep does not trim"
        for i in range(3, 8):
            await system.ref(f"rec/{i}").tell("hello")
        await system.drain()
        await trio.sleep(2)
        assert system.sweep_idle() == 5
        await trio.testing.wait_all_tasks_blocked()
        assert trims == [0], "one trim, once every passivation of the sweep has finished"
        assert system.heap_trims == 1
        nursery.cancel_scope.cancel()


async def test_activations_create_their_crash_history_and_done_event_lazily(
    world: World,
) -> None:
    await world.system.ref("rec/a").tell("hello")
    await world.system.drain()
    act = world.system.shard_of("rec/a").activations["rec/a"]
    assert act.crash_times is None and act._done is None
    assert not hasattr(act, "__dict__")
    await world.system.ref("rec/a").tell("crash")
    await world.system.drain()
    assert act.crash_times is not None and len(act.crash_times) == 2
    world.system.restart("rec/a")
    assert act.crash_times is None


def test_malloc_trim_is_looked_up_only_where_glibc_has_it() -> None:
    from engine._gc import load_malloc_trim, release_free_memory

    class NoTrim:
        pass

    class WithTrim:
        def __init__(self) -> None:
            self.calls: list[int] = []

        def malloc_trim(self, pad: int) -> int:
            self.calls.append(pad)
            return 1

    assert load_malloc_trim(platform="darwin") is None
    assert load_malloc_trim(platform="linux", find_library=lambda name: None) is None

    def unloadable(name: str) -> object:
        raise OSError("no such library")

    assert load_malloc_trim(platform="linux", find_library=lambda name: "libc.so.6",
                            load=unloadable) is None
    assert load_malloc_trim(platform="linux", find_library=lambda name: "libc.so.6",
                            load=lambda name: NoTrim()) is None
    libc = WithTrim()
    trim = load_malloc_trim(platform="linux", find_library=lambda name: "libc.so.6",
                            load=lambda name: libc)
    assert trim is not None
    trim(0)
    assert libc.calls == [0]
    assert isinstance(release_free_memory(), bool)  # the real one: never raises


async def test_a_blocked_handler_does_not_stall_its_shard() -> None:
    """One shard: while rec/a waits inside its handler, rec/b's messages are handled."""
    system = ActorSystem(shard_count=1, mailbox_capacity=10)
    w = World(system)
    system.register(ActorKind("rec", w.activate))
    [shard] = system.shards("rec")
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        await system.ref("rec/a").tell("block")
        await trio.testing.wait_all_tasks_blocked()
        assert w.handled == [], "rec/a is inside its handler, waiting on the gate"
        for i in range(5):
            await system.ref("rec/b").tell(i)
        await system.ref("rec/a").tell("after")  # queued behind the blocked message
        await trio.testing.wait_all_tasks_blocked()
        assert w.handled == [("rec/b", i) for i in range(5)]
        assert shard.runners == 2, "the blocked handler keeps a runner; another took over"
        assert shard.handoffs >= 1
        stats = system.runner_stats("rec")
        assert (stats.runners, stats.handoffs, stats.ready) == (2, shard.handoffs, 0)
        w.gate.set()
        await system.drain()
        assert w.handled[5:] == [("rec/a", "block"), ("rec/a", "after")]
        nursery.cancel_scope.cancel()


async def test_runners_handle_many_actors_without_a_task_each() -> None:
    """10,000 actors, each with messages: the shard's runners stay few."""
    system = ActorSystem(shard_count=2, mailbox_capacity=10)
    w = World(system)
    system.register(ActorKind("rec", w.activate))
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        for i in range(10_000):
            await system.ref(f"rec/{i}").tell(i)
        await system.drain()
        assert sorted(m for _, m in w.handled) == list(range(10_000))
        assert all(shard.runners <= 2 for shard in system.shards("rec"))
        root = trio.lowlevel.current_root_task()
        assert root is not None and _count_tasks(root) < 50
        nursery.cancel_scope.cancel()


async def test_a_tell_while_the_shards_are_being_cancelled_wakes_no_cancelled_runner() -> None:
    """Cancelling a shard aborts its parked runners' waits (from the cancelling task);
    a message arriving before the shard has stopped must not wake one of them again."""
    system = ActorSystem(shard_count=1, mailbox_capacity=10)
    w = World(system)
    system.register(ActorKind("rec", w.activate))
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        await system.ref("rec/a").tell(1)
        await system.drain()
        await trio.testing.wait_all_tasks_blocked()  # the shard's runners are parked
        nursery.cancel_scope.cancel()  # aborts their waits here, in this task
        system.ref("rec/b").tell_nowait(2)  # the shard has not stopped yet
