"""Supervisors: strategies, restart types, intensity and escalation, backoff,
ordered start and stop, shutdown timeouts, and the operator API.

Every test runs on trio's autojump clock; tests wait for recorded events
(never for wall time) and use ``wait_all_tasks_blocked`` to let the
supervisor settle before looking at its state.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from engine._errors import LocalError
from supervisor._supervisor import (
    Backoff,
    ChildSpec,
    RestartType,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorRequestError,
)

NO_JITTER = Backoff(jitter=0.0)


class _Instance:
    """One running instance of a test child, waiting for a command."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.command = ""


class Kids:
    """Children that record what happens to them; tests make them crash or finish.

    Events: ``begin:x`` (slow start began), ``start:x`` (about to call
    started()), ``fail-start:x``, ``crash:x``, ``exit:x`` (normal return),
    ``stop:x`` (cancelled), ``stopped:x`` (a stubborn child finally gave in).
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.times: list[tuple[str, float]] = []
        self.fail_start: dict[str, int] = {}  # raise before started() this many times
        self.start_delay: dict[str, float] = {}  # seconds before calling started()
        self.lifetimes: dict[str, list[float]] = {}  # crash this long after each start
        self.stubborn: dict[str, float] = {}  # shield this long when cancelled
        self._live: dict[str, _Instance] = {}
        self._changed = trio.Event()

    def record(self, event: str) -> None:
        self.events.append(event)
        self.times.append((event, trio.current_time()))
        self._changed.set()
        self._changed = trio.Event()

    def count(self, event: str) -> int:
        return self.events.count(event)

    def at(self, event: str) -> list[float]:
        return [t for e, t in self.times if e == event]

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait for recorded events to satisfy ``predicate``, then let everyone settle."""
        with trio.fail_after(1000):
            while not predicate():
                await self._changed.wait()
        await trio.testing.wait_all_tasks_blocked()

    def spec(self, cid: str, *, restart: RestartType = "permanent",
             shutdown: float | None = 5.0) -> ChildSpec:
        return ChildSpec(cid, functools.partial(self.child, cid), restart=restart,
                         shutdown=shutdown)

    def crash(self, cid: str) -> None:
        self._command(cid, "crash")

    def finish(self, cid: str) -> None:
        self._command(cid, "exit")

    def _command(self, cid: str, command: str) -> None:
        instance = self._live.pop(cid)
        instance.command = command
        instance.event.set()

    async def child(self, cid: str, *, task_status: trio.TaskStatus[None]) -> None:
        if self.fail_start.get(cid, 0) > 0:
            self.fail_start[cid] -= 1
            self.record(f"fail-start:{cid}")
            raise RuntimeError(f"{cid} cannot start")
        if cid in self.start_delay:
            self.record(f"begin:{cid}")
            await trio.sleep(self.start_delay[cid])
        instance = _Instance()
        self._live[cid] = instance
        self.record(f"start:{cid}")
        task_status.started()
        lifetimes = self.lifetimes.get(cid)
        try:
            if lifetimes:
                await trio.sleep(lifetimes.pop(0))
                instance.command = "crash"
            else:
                await instance.event.wait()
        except trio.Cancelled:
            self.record(f"stop:{cid}")
            if cid in self.stubborn:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.stubborn[cid])
                self.record(f"stopped:{cid}")
            raise
        finally:
            if self._live.get(cid) is instance:
                del self._live[cid]
        if instance.command == "crash":
            self.record(f"crash:{cid}")
            raise RuntimeError(f"{cid} crashed")
        self.record(f"exit:{cid}")


@asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[None]:
    """Run ``sup`` in a nursery for the block, then stop it gracefully."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        yield
        await sup.stop()


async def supervise(sup: Supervisor, outcome: list[BaseException], done: trio.Event, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Run ``sup`` and keep its escalation instead of crashing the test's nursery."""
    try:
        await sup.run(task_status=task_status)
    except SupervisorEscalation as exc:
        outcome.append(exc)
    finally:
        done.set()


def states(sup: Supervisor) -> list[tuple[str, str, int]]:
    return [(info.id, info.state, info.restarts) for info in sup.which_children()]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    """Records of ``interlink.supervisor``, whatever the root logging setup is."""
    logger = logging.getLogger("interlink.supervisor")
    handler = _ListHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _for_child(records: list[logging.LogRecord], cid: str, level: int) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "child", None) == cid and r.levelno == level]


# ---------------------------------------------------------------- strategies

INITIAL = ["start:a", "start:b", "start:c", "start:d"]


@pytest.mark.parametrize(
    ("strategy", "expected", "restarted"),
    [
        ("one_for_one", ["crash:b", "start:b"], {"b"}),
        ("one_for_all",
         ["crash:b", "stop:d", "stop:c", "stop:a", "start:a", "start:b", "start:c", "start:d"],
         {"a", "b", "c", "d"}),
        ("rest_for_one",
         ["crash:b", "stop:d", "stop:c", "start:b", "start:c", "start:d"],
         {"b", "c", "d"}),
    ],
)
async def test_strategy_restarts_the_right_children_in_order(
    autojump_clock: trio.testing.MockClock, logs: list[logging.LogRecord], strategy: Strategy,
    expected: list[str], restarted: set[str],
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec(c) for c in "abcd"], strategy=strategy, backoff=NO_JITTER)
    async with running(sup):
        assert kids.events == INITIAL
        kids.crash("b")
        await kids.until(lambda: len(kids.events) == len(INITIAL) + len(expected))
        assert kids.events == INITIAL + expected
        assert states(sup) == [(c, "running", int(c in restarted)) for c in "abcd"]
        info = sup.which_children()[1]
        assert info.last_error == "RuntimeError: b crashed"
        assert info.last_error_at is not None
        assert info.started_at is not None
        assert info.started_at > info.last_error_at  # restarted after its backoff
    assert kids.events[-4:] == ["stop:d", "stop:c", "stop:b", "stop:a"]
    failures = _for_child(logs, "b", logging.WARNING)
    assert len(failures) == 1  # each failure logged once
    assert failures[0].__dict__["error_type"] == "RuntimeError"
    assert failures[0].__dict__["supervisor"] == "s"
    assert "crashed" not in failures[0].getMessage()


async def test_operator_stopped_sibling_stays_stopped_under_one_for_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec(c) for c in "abc"], strategy="one_for_all",
                     backoff=NO_JITTER)
    async with running(sup):
        await sup.terminate_child("c")
        kids.crash("a")
        await kids.until(lambda: kids.count("start:b") == 2)
        assert kids.events == ["start:a", "start:b", "start:c", "stop:c", "crash:a", "stop:b",
                               "start:a", "start:b"]
        assert states(sup) == [("a", "running", 1), ("b", "running", 1), ("c", "stopped", 0)]


# ------------------------------------------------------------- restart types

async def test_temporary_child_is_never_restarted_and_its_spec_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a"), kids.spec("t", restart="temporary"),
                           kids.spec("u", restart="temporary")],
                     strategy="one_for_all", backoff=NO_JITTER)
    async with running(sup):
        kids.crash("t")
        await kids.until(lambda: "crash:t" in kids.events)
        assert [i.id for i in sup.which_children()] == ["a", "u"]
        assert states(sup) == [("a", "running", 0), ("u", "running", 0)]
        # a sibling's failure takes the temporary child down: dropped, not restarted
        kids.crash("a")
        await kids.until(lambda: kids.count("start:a") == 2)
        assert kids.events == ["start:a", "start:t", "start:u", "crash:t", "crash:a", "stop:u",
                               "start:a"]
        assert states(sup) == [("a", "running", 1)]
        assert sup.count_children() == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}


async def test_transient_child_is_restarted_only_after_an_abnormal_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("tr", restart="transient"), kids.spec("p")],
                     backoff=NO_JITTER)
    async with running(sup):
        kids.crash("tr")
        await kids.until(lambda: kids.count("start:tr") == 2)
        kids.finish("tr")
        await kids.until(lambda: "exit:tr" in kids.events)
        assert states(sup)[0] == ("tr", "stopped", 1)  # not "restarting": no restart planned
        # a permanent child is restarted even after a normal exit
        kids.finish("p")
        await kids.until(lambda: kids.count("start:p") == 2)
        assert kids.events == ["start:tr", "start:p", "crash:tr", "start:tr", "exit:tr",
                               "exit:p", "start:p"]
        assert states(sup) == [("tr", "stopped", 1), ("p", "running", 1)]
        assert sup.count_children()["active"] == 1


# ------------------------------------------------------ intensity, escalation

async def test_intensity_exceeded_escalates_and_stops_children_in_reverse_order(
    autojump_clock: trio.testing.MockClock, logs: list[logging.LogRecord],
) -> None:
    kids = Kids()
    kids.lifetimes["b"] = [1.0] * 10
    sup = Supervisor("s", [kids.spec(c) for c in "abc"], max_restarts=2, max_seconds=5.0,
                     backoff=NO_JITTER)
    with pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert kids.events == ["start:a", "start:b", "start:c",
                           "crash:b", "start:b", "crash:b", "start:b", "crash:b",
                           "stop:c", "stop:a"]
    assert kids.at("crash:b")[-1] == pytest.approx(3.3)  # 1 + 0.1 + 1 + 0.2 + 1
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "b crashed"
    assert info.value.supervisor == "s"
    assert info.value.child == "b"
    assert isinstance(info.value, LocalError)
    assert states(sup) == [("a", "stopped", 0), ("b", "failed", 2), ("c", "stopped", 0)]
    assert len(_for_child(logs, "b", logging.WARNING)) == 3
    assert len(_for_child(logs, "b", logging.ERROR)) == 1


async def test_old_restarts_slide_out_of_the_intensity_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    kids.lifetimes["b"] = [3.0] * 4
    sup = Supervisor("s", [kids.spec("b")], max_restarts=1, max_seconds=2.0,
                     backoff=NO_JITTER)
    async with running(sup):
        await kids.until(lambda: kids.count("start:b") == 5)
        assert states(sup) == [("b", "running", 4)]


async def test_failing_restarts_count_toward_intensity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a"), kids.spec("b")], max_restarts=2,
                     backoff=NO_JITTER)
    outcome: list[BaseException] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, sup, outcome, done)
        kids.fail_start["b"] = 5
        kids.crash("b")
        with trio.fail_after(100):
            await done.wait()
    assert kids.events == ["start:a", "start:b", "crash:b", "fail-start:b", "fail-start:b",
                           "stop:a"]
    assert len(outcome) == 1
    assert str(outcome[0].__cause__) == "b cannot start"
    assert states(sup) == [("a", "stopped", 0), ("b", "failed", 2)]


async def test_start_failure_during_initial_start_escalates_before_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    kids.fail_start["b"] = 1
    sup = Supervisor("s", [kids.spec(c) for c in "abc"])
    async with trio.open_nursery() as nursery:
        with pytest.raises(SupervisorEscalation) as info:
            await nursery.start(sup.run)
    assert kids.events == ["start:a", "fail-start:b", "stop:a"]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert states(sup) == [("a", "stopped", 0), ("b", "failed", 0), ("c", "stopped", 0)]
    assert sup.which_children()[1].last_error == "RuntimeError: b cannot start"


async def test_child_returning_before_started_is_a_start_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def lazy(*, task_status: trio.TaskStatus[None]) -> None:
        return

    sup = Supervisor("s", [ChildSpec("lazy", lazy)])
    with pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert "before calling task_status.started()" in str(info.value.__cause__)


async def test_nested_supervisor_escalates_to_its_parent_which_restarts_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    kids.lifetimes["w"] = [1.0, 1.0]  # crash twice, then run
    inner = Supervisor("inner", [kids.spec("w")], max_restarts=1, backoff=NO_JITTER)
    root = Supervisor("root", [kids.spec("x"), inner.child_spec()], backoff=NO_JITTER)
    async with running(root):
        await kids.until(lambda: kids.count("start:w") == 3)
        assert kids.events == ["start:x", "start:w", "crash:w", "start:w", "crash:w",
                               "start:w"]
        assert states(root) == [("x", "running", 0), ("inner", "running", 1)]
        info = root.which_children()[1]
        assert info.type == "supervisor"
        assert info.last_error.startswith("SupervisorEscalation: supervisor 'inner'")
        assert states(inner) == [("w", "running", 0)]  # a fresh run of the inner supervisor
        tree = root.tree()
        json.dumps(tree)
        children = tree["children"]
        assert isinstance(children, list)
        assert "tree" not in children[0]
        nested = children[1]["tree"]
        assert nested["name"] == "inner"
        assert [(c["id"], c["state"]) for c in nested["children"]] == [("w", "running")]
        assert root.count_children() == {"specs": 2, "active": 2, "supervisors": 1,
                                          "workers": 1}
    # the parent stops its child supervisor, which stops its own children first
    assert kids.events[-2:] == ["stop:w", "stop:x"]


# ------------------------------------------------------------------- backoff

def test_backoff_delays_grow_exponentially_within_jitter_and_are_capped() -> None:
    class Extreme(random.Random):
        def __init__(self, high: bool) -> None:
            super().__init__(0)
            self.high = high

        def uniform(self, a: float, b: float) -> float:
            return b if self.high else a

    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.25)
    assert [backoff.base(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    assert [backoff.delay(n, Extreme(True)) for n in range(5)] == [1.25, 2.5, 5.0, 8.0, 8.0]
    assert [backoff.delay(n, Extreme(False)) for n in range(5)] == [0.75, 1.5, 3.0, 6.0, 6.0]
    assert backoff.base(10_000) == 8.0  # no overflow on long crash loops
    with pytest.raises(LocalError, match="multiplier"):
        Backoff(multiplier=0.5)
    with pytest.raises(LocalError, match="jitter"):
        Backoff(jitter=1.5)


async def test_backoff_timing_and_reset_after_a_long_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    kids.lifetimes["f"] = [0, 0, 0, 0, 0, 0, 20, 0]
    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.25, reset_after=10.0)
    sup = Supervisor("s", [kids.spec("f")], max_restarts=100, max_seconds=1000.0,
                     backoff=backoff, rng=random.Random(7))
    async with running(sup):
        await kids.until(lambda: kids.count("start:f") == 9)
    starts, crashes = kids.at("start:f"), kids.at("crash:f")
    gaps = [starts[i + 1] - crashes[i] for i in range(8)]
    attempts = [0, 1, 2, 3, 4, 5, 0, 1]  # the 20 s run resets the sequence
    for gap, attempt in zip(gaps, attempts, strict=True):
        base = backoff.base(attempt)
        assert base * 0.75 - 1e-9 <= gap <= min(8.0, base * 1.25) + 1e-9
    replay = random.Random(7)
    assert gaps == pytest.approx([backoff.delay(n, replay) for n in attempts])
    assert max(gaps[3:6]) <= 8.0


async def test_child_state_is_restarting_while_waiting_for_its_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a")], backoff=Backoff(initial=5.0, jitter=0.0))
    async with running(sup):
        start = trio.current_time()
        kids.crash("a")
        await kids.until(lambda: "crash:a" in kids.events)
        assert states(sup) == [("a", "restarting", 0)]
        assert sup.count_children()["active"] == 0
        await kids.until(lambda: kids.count("start:a") == 2)
        assert trio.current_time() - start == pytest.approx(5.0)
        assert states(sup) == [("a", "running", 1)]


# ----------------------------------------------------------- start and stop

async def test_ordered_start_and_reverse_stop_on_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    kids.start_delay["slow"] = 2.0
    sup = Supervisor("s", [kids.spec("slow"), kids.spec("b"), kids.spec("c")])
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert kids.events == ["begin:slow", "start:slow", "start:b", "start:c"]
        assert kids.at("start:b")[0] - t0 == pytest.approx(2.0)
        assert trio.current_time() - t0 == pytest.approx(2.0)
        nursery.cancel_scope.cancel()
    assert kids.events[4:] == ["stop:c", "stop:b", "stop:slow"]
    assert states(sup) == [("slow", "stopped", 0), ("b", "stopped", 0), ("c", "stopped", 0)]


async def test_shutdown_timeout_abandons_a_stubborn_child_and_proceeds(
    autojump_clock: trio.testing.MockClock, logs: list[logging.LogRecord],
) -> None:
    kids = Kids()
    kids.stubborn["s"] = 3.0
    sup = Supervisor("sup", [kids.spec("a"), kids.spec("s", shutdown=1.0), kids.spec("c")])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        t0 = trio.current_time()
        await sup.stop()
        # run() can only return once the abandoned task really ended
        assert trio.current_time() - t0 == pytest.approx(3.0)
    assert kids.events[3:] == ["stop:c", "stop:s", "stop:a", "stopped:s"]
    assert kids.at("stop:a")[0] - t0 == pytest.approx(1.0)  # waited 1 s, not 3 s
    assert states(sup) == [("a", "stopped", 0), ("s", "failed", 0), ("c", "stopped", 0)]
    assert sup.which_children()[1].last_error.startswith("ShutdownTimeout")
    assert len(_for_child(logs, "s", logging.ERROR)) == 1


async def test_a_child_that_stops_within_its_shutdown_is_not_abandoned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    kids.stubborn["s"] = 0.5
    sup = Supervisor("sup", [kids.spec("a"), kids.spec("s", shutdown=1.0)])
    async with running(sup):
        pass
    assert kids.events[2:] == ["stop:s", "stopped:s", "stop:a"]
    assert states(sup) == [("a", "stopped", 0), ("s", "stopped", 0)]


# -------------------------------------------------------------- operator API

async def test_operator_api(autojump_clock: trio.testing.MockClock) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a")], backoff=NO_JITTER)
    with pytest.raises(SupervisorRequestError, match="not_running"):
        await sup.start_child(kids.spec("d"))
    async with running(sup):
        await sup.start_child(kids.spec("d"))
        assert kids.events == ["start:a", "start:d"]
        assert [i.id for i in sup.which_children()] == ["a", "d"]
        with pytest.raises(SupervisorRequestError, match="already_present"):
            await sup.start_child(kids.spec("d"))

        for op in (sup.terminate_child, sup.restart_child, sup.delete_child):
            with pytest.raises(LocalError, match="not_found"):
                await op("zz")
        with pytest.raises(LocalError, match="running"):
            await sup.restart_child("a")
        with pytest.raises(LocalError, match="running"):
            await sup.delete_child("a")

        await sup.terminate_child("a")
        assert kids.events[-1] == "stop:a"
        assert states(sup) == [("a", "stopped", 0), ("d", "running", 0)]
        assert sup.count_children() == {"specs": 2, "active": 1, "supervisors": 0,
                                        "workers": 2}
        await sup.terminate_child("a")  # already stopped: nothing to do
        await sup.restart_child("a")
        assert kids.events[-1] == "start:a"
        assert states(sup) == [("a", "running", 0), ("d", "running", 0)]

        await sup.terminate_child("d")
        await sup.delete_child("d")
        assert [i.id for i in sup.which_children()] == ["a"]

        tree = sup.tree()
        assert json.loads(json.dumps(tree)) == tree
        assert tree["name"] == "s"
        assert tree["strategy"] == "one_for_one"
        assert tree["running"] is True
        assert tree["children"] == [{
            "id": "a", "type": "worker", "restart": "permanent", "state": "running",
            "restarts": 0, "last_error": "", "last_error_at": None,
            "started_at": sup.which_children()[0].started_at,
        }]
    assert sup.tree()["running"] is False


async def test_start_failures_of_dynamic_and_restarted_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a")])
    async with running(sup):
        kids.fail_start["e"] = 1
        with pytest.raises(RuntimeError, match="e cannot start"):
            await sup.start_child(kids.spec("e"))
        assert [i.id for i in sup.which_children()] == ["a"]  # spec forgotten

        await sup.terminate_child("a")
        kids.fail_start["a"] = 1
        with pytest.raises(RuntimeError, match="a cannot start"):
            await sup.restart_child("a")
        assert states(sup) == [("a", "failed", 0)]
        await sup.restart_child("a")  # a failed child can be restarted
        assert states(sup) == [("a", "running", 0)]
        assert sup.which_children()[0].last_error == "RuntimeError: a cannot start"


async def test_terminate_cancels_a_pending_restart(autojump_clock: trio.testing.MockClock) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a"), kids.spec("b")],
                     backoff=Backoff(initial=5.0, maximum=20.0, jitter=0.0))
    async with running(sup):
        kids.crash("a")
        await kids.until(lambda: "crash:a" in kids.events)
        with pytest.raises(SupervisorRequestError, match="restarting"):
            await sup.restart_child("a")
        await sup.terminate_child("a")
        assert states(sup) == [("a", "stopped", 0), ("b", "running", 0)]
        # b restarts after 5 s, then after 10 s more: a's 5 s timer has long fired by then
        kids.finish("b")
        await kids.until(lambda: kids.count("start:b") == 2)
        kids.finish("b")
        await kids.until(lambda: kids.count("start:b") == 3)
        assert kids.count("start:a") == 1
        assert states(sup) == [("a", "stopped", 0), ("b", "running", 2)]


async def test_stop_during_a_backoff_wait_does_not_wait_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a"), kids.spec("b")], backoff=Backoff(initial=5.0))
    async with running(sup):
        kids.crash("a")
        await kids.until(lambda: "crash:a" in kids.events)
        t0 = trio.current_time()
    assert trio.current_time() == t0
    assert kids.events == ["start:a", "start:b", "crash:a", "stop:b"]
    assert states(sup) == [("a", "stopped", 0), ("b", "stopped", 0)]


async def test_stop_is_idempotent_and_the_supervisor_can_run_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kids = Kids()
    sup = Supervisor("s", [kids.spec("a")])
    await sup.stop()  # not running: nothing to do
    async with running(sup):
        await sup.start_child(kids.spec("dyn"))
    async with running(sup):
        # a new run starts from the constructor's specs
        assert [i.id for i in sup.which_children()] == ["a"]
    assert kids.events == ["start:a", "start:dyn", "stop:dyn", "stop:a", "start:a", "stop:a"]


def test_invalid_configuration_is_refused() -> None:
    async def noop(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    with pytest.raises(LocalError, match="duplicate"):
        Supervisor("s", [ChildSpec("a", noop), ChildSpec("a", noop)])
    with pytest.raises(LocalError, match="strategy"):
        Supervisor("s", strategy="simple_one_for_one")  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="restart type"):
        ChildSpec("a", noop, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(LocalError, match="shutdown"):
        ChildSpec("a", noop, shutdown=-1.0)
