"""The peers suite: the core workload on Interlink and on other runtimes, side by side.

For each session count, in one run, each in its own event loop:

- **interlink**: the engine (memory storage, sessions registered beforehand);
- **trio-baseline**: the bare trio pipeline of the core suite (no work at all);
- **trio-tasks**: the same hop on plain trio tasks and channels, doing the
  engine's per-event work (:class:`~bench._workload.EngineWork`);
- **asyncio-queues**: the same on ``asyncio.run``, one task and one
  ``asyncio.Queue`` per session;
- **pykka-threads**: a router actor and one actor (thread) per session.

Each implementation and size runs in a fresh process (``isolate``), so none
inherits another's heap, and pykka's threads end with their process. Each
gets a maximum-throughput measurement and an open-loop run at the same
absolute offered load (``load_fraction`` of Interlink's maximum), so their
latencies compare at equal load. ``trio-tasks`` versus ``interlink`` is the
cost of the actor system and the engine's extra steps; ``asyncio`` and
``pykka`` versus ``trio-tasks`` is the cost of the runtime. A peer that cannot
run a size (too many threads, too slow to start, a trial that does not
finish) is recorded with its status and where and how it failed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import msgspec
import trio

from ._asyncio_peer import AsyncioPipeline
from ._engine_pipeline import EnginePipeline, open_storage
from ._histogram import LatencyUs
from ._isolation import run_in_fresh_process
from ._load import EventIds
from ._machine import package_versions
from ._memory import read_rss
from ._progress import Progress
from ._pykka_peer import PykkaPipeline, StartFailure
from ._report import Baseline, Report, make_report, ratio
from ._runner import (
    AsyncioRuntime,
    TrioRuntime,
    measure_max,
    measure_max_sync,
    measure_open,
    measure_open_sync,
)
from ._table import micros, rate, size, table, times
from ._traffic import Traffic
from ._trials import Run, TrialPlan
from ._trio_pipeline import ChannelPipeline
from ._workload import EngineWork, registered_directory, registered_directory_sync

SUITE = "peers"
Status = Literal["ok", "failed", "timeout", "skipped"]

INTERLINK = "interlink"
TRIO_BASELINE = "trio-baseline"
TRIO_TASKS = "trio-tasks"
PEERS = (TRIO_BASELINE, TRIO_TASKS, AsyncioPipeline.name, PykkaPipeline.name)
#: a peer delivering less than this share of the common load could not sustain it
SATURATED = 0.95
WORKLOAD = ("router: domain route, federation policy, find_session, event copy with session id; "
            "session: message-id record, encoded metadata entry (EngineWork)")


class PeersConfig(msgspec.Struct, frozen=True, kw_only=True):
    sessions: tuple[int, ...]
    plan: TrialPlan
    #: the common offered load, as a fraction of Interlink's maximum
    load_fraction: float
    headline_sessions: int
    #: pykka needs a thread per session; more than this is not attempted
    max_threads: int
    #: starting the threads of one size may take this long
    thread_start_timeout_s: float
    #: measure each implementation and size in a fresh process
    isolate: bool = True
    quick: bool = False

    @classmethod
    def full(cls) -> PeersConfig:
        return cls(sessions=(1, 100, 10_000),
                   plan=TrialPlan(trials=3, open_trials=2, seconds=2.0, warmup_seconds=1.0,
                                  min_events=2000, calibration_events=1000),
                   load_fraction=0.5, headline_sessions=100, max_threads=10_500,
                   thread_start_timeout_s=60.0)

    @classmethod
    def quick_run(cls) -> PeersConfig:
        return cls(sessions=(1, 100),
                   plan=TrialPlan(trials=1, open_trials=1, seconds=0.15, warmup_seconds=0.05,
                                  min_events=200, calibration_events=100),
                   load_fraction=0.5, headline_sessions=100, max_threads=1_000,
                   thread_start_timeout_s=10.0, quick=True)


class PeersParams(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[int]
    load_fraction: float
    trials: int
    open_trials: int
    trial_seconds: float
    warmup_seconds: float
    max_threads: int
    thread_start_timeout_s: float
    headline_sessions: int
    workload: str
    isolated_processes: bool
    quick: bool
    versions: dict[str, str]


class PeerRun(msgspec.Struct, frozen=True, kw_only=True):
    implementation: str
    #: task hops per event
    hops: int
    status: Status
    #: what went wrong, where (empty when ``ok``)
    detail: str
    #: seconds to start its per-session tasks, threads or actors
    start_s: float | None
    #: resident memory each session's task, thread or actor added
    rss_per_session_bytes: float | None
    maximum: Run | None
    at_load: Run | None
    #: maximum over Interlink's maximum at this size
    ratio_to_interlink: float | None


class PeersScenario(msgspec.Struct, frozen=True, kw_only=True):
    sessions: int
    load_fraction: float
    #: the common open-loop load: ``load_fraction`` of Interlink's maximum
    offered_msgs_per_s: float
    implementations: list[PeerRun]


class PeersResults(msgspec.Struct, frozen=True, kw_only=True):
    #: Interlink's maximum at the headline size
    throughput_msgs_per_s: float
    latency_us: LatencyUs
    headline_sessions: int
    scenarios: list[PeersScenario]


PeersReport = Report[PeersParams, PeersResults]


class _Measured(msgspec.Struct, frozen=True, kw_only=True):
    start_s: float
    rss_per_session: float
    maximum: Run
    at_load: Run | None


def _per_session(before: int, after: int, sessions: int) -> float:
    return (after - before) / sessions


async def _interlink(config: PeersConfig, traffic: Traffic, progress: Progress) -> _Measured:
    label = f"{traffic.sessions} sessions:"
    ids = EventIds()
    runtime = TrioRuntime()
    async with (
        open_storage("memory") as (directory, store),
        EnginePipeline.open(traffic, directory, store) as engine,
    ):
        for record in traffic.session_records():
            await directory.put_session(record)
        before = read_rss()
        started = time.perf_counter()
        await engine.open_sessions(ids)
        start_s = time.perf_counter() - started
        await engine.settle()
        after = read_rss()
        maximum = await measure_max(runtime, engine, config.plan, ids, progress, label)
        offered = config.load_fraction * maximum.throughput_msgs_per_s
        at_load = await measure_open(runtime, engine, offered, config.load_fraction,
                                     config.plan, ids, progress, label)
    return _Measured(start_s=start_s, maximum=maximum, at_load=at_load,
                     rss_per_session=_per_session(before.vm_rss, after.vm_rss, traffic.sessions))


async def _channels(config: PeersConfig, traffic: Traffic, offered: float, with_work: bool,
                    progress: Progress) -> _Measured:
    name = TRIO_TASKS if with_work else TRIO_BASELINE
    work = EngineWork(await registered_directory(traffic)) if with_work else None
    ids = EventIds()
    runtime = TrioRuntime()
    label = f"{traffic.sessions} sessions:"
    before = read_rss()
    started = time.perf_counter()
    async with ChannelPipeline.open(name, traffic, work=work) as pipeline:
        await trio.lowlevel.checkpoint()  # every session task has started
        start_s = time.perf_counter() - started
        after = read_rss()
        maximum = await measure_max(runtime, pipeline, config.plan, ids, progress, label)
        at_load = await measure_open(runtime, pipeline, offered, config.load_fraction,
                                     config.plan, ids, progress, label)
    return _Measured(start_s=start_s, maximum=maximum, at_load=at_load,
                     rss_per_session=_per_session(before.vm_rss, after.vm_rss, traffic.sessions))


async def _asyncio(config: PeersConfig, traffic: Traffic, work: EngineWork, offered: float,
                   progress: Progress) -> _Measured:
    ids = EventIds()
    runtime = AsyncioRuntime()
    label = f"{traffic.sessions} sessions:"
    before = read_rss()
    started = time.perf_counter()
    async with AsyncioPipeline.open(traffic, work) as pipeline:
        await asyncio.sleep(0)  # every session task has started
        start_s = time.perf_counter() - started
        after = read_rss()
        maximum = await measure_max(runtime, pipeline, config.plan, ids, progress, label)
        at_load = await measure_open(runtime, pipeline, offered, config.load_fraction,
                                     config.plan, ids, progress, label)
    return _Measured(start_s=start_s, maximum=maximum, at_load=at_load,
                     rss_per_session=_per_session(before.vm_rss, after.vm_rss, traffic.sessions))


def _pykka(config: PeersConfig, traffic: Traffic, offered: float,
           progress: Progress) -> _Measured:
    pipeline = PykkaPipeline(traffic, EngineWork(registered_directory_sync(traffic)))
    ids = EventIds()
    label = f"{traffic.sessions} sessions:"
    before = read_rss()
    started = time.perf_counter()
    try:
        pipeline.start(max_threads=config.max_threads, timeout=config.thread_start_timeout_s)
        start_s = time.perf_counter() - started
        after = read_rss()
        maximum = measure_max_sync(pipeline, config.plan, ids, progress, label)
        at_load = measure_open_sync(pipeline, offered, config.load_fraction, config.plan, ids,
                                    progress, label) if maximum.complete else None
    finally:
        pipeline.stop()
    return _Measured(start_s=start_s, maximum=maximum, at_load=at_load,
                     rss_per_session=_per_session(before.vm_rss, after.vm_rss, traffic.sessions))


def _peer_run(implementation: str, hops: int, measured: _Measured,
              interlink_max: float) -> PeerRun:
    notes = []
    for run in (measured.maximum, measured.at_load):
        if run is not None and not run.complete:
            where = "maximum" if run.mode == "max" else f"{run.load_fraction:.0%} load"
            notes.append(f"a trial at {where} did not finish within the plan's timeout "
                         f"({run.throughput_msgs_per_s:,.0f} msg/s while it ran)")
    load = measured.at_load
    if load is not None and load.complete and load.offered_msgs_per_s and \
            load.throughput_msgs_per_s < SATURATED * load.offered_msgs_per_s:
        notes.append(f"the common load ({load.offered_msgs_per_s:,.0f} msg/s) is above what it "
                     f"sustains: it delivered {load.throughput_msgs_per_s:,.0f} msg/s and the "
                     "backlog grew")
    incomplete = any(run is not None and not run.complete
                     for run in (measured.maximum, measured.at_load))
    return PeerRun(
        implementation=implementation, hops=hops, status="timeout" if incomplete else "ok",
        detail="; ".join(notes), start_s=round(measured.start_s, 4),
        rss_per_session_bytes=round(measured.rss_per_session, 1),
        maximum=measured.maximum, at_load=measured.at_load,
        ratio_to_interlink=ratio(measured.maximum.throughput_msgs_per_s, interlink_max))


def measure_peer(implementation: str, config: PeersConfig, sessions: int, offered: float,
                 interlink_max: float, progress_started: float | None) -> PeerRun:
    """Measure one implementation at one size (Interlink: ``offered`` and the max are its own)."""
    progress = Progress.resumed(SUITE, progress_started)
    traffic = Traffic(sessions)
    if implementation == INTERLINK:
        measured = trio.run(_interlink, config, traffic, progress)
        return _peer_run(INTERLINK, 1, measured, measured.maximum.throughput_msgs_per_s)
    if implementation in (TRIO_BASELINE, TRIO_TASKS):
        measured = trio.run(_channels, config, traffic, offered,
                            implementation == TRIO_TASKS, progress)
        return _peer_run(implementation, 1, measured, interlink_max)
    if implementation == AsyncioPipeline.name:
        work = EngineWork(registered_directory_sync(traffic))
        measured = asyncio.run(_asyncio(config, traffic, work, offered, progress))
        return _peer_run(implementation, 1, measured, interlink_max)
    if implementation != PykkaPipeline.name:
        raise ValueError(f"no peer implementation {implementation!r}")
    try:
        measured = _pykka(config, traffic, offered, progress)
    except StartFailure as failure:
        progress.say(f"{sessions} sessions: {implementation} {failure.status}: {failure}")
        return PeerRun(implementation=implementation, hops=PykkaPipeline.hops,
                       status=failure.status, detail=str(failure), start_s=None,
                       rss_per_session_bytes=None, maximum=None, at_load=None,
                       ratio_to_interlink=None)
    return _peer_run(implementation, PykkaPipeline.hops, measured, interlink_max)


def _scenario(config: PeersConfig, sessions: int, progress: Progress) -> PeersScenario:
    """Interlink first (it sets the common load), then each peer, each in a fresh process."""
    mine = run_in_fresh_process(config.isolate, measure_peer, INTERLINK, config, sessions, 0.0,
                                0.0, progress.started)
    assert mine.maximum is not None and mine.at_load is not None
    best = mine.maximum.throughput_msgs_per_s
    offered = mine.at_load.offered_msgs_per_s or config.load_fraction * best
    runs = [mine]
    for implementation in PEERS:
        runs.append(run_in_fresh_process(config.isolate, measure_peer, implementation, config,
                                         sessions, offered, best, progress.started))
    return PeersScenario(sessions=sessions, load_fraction=config.load_fraction,
                         offered_msgs_per_s=offered, implementations=runs)


def _find(scenario: PeersScenario, implementation: str) -> PeerRun:
    return next(run for run in scenario.implementations if run.implementation == implementation)


def run_peers(config: PeersConfig, progress: Progress) -> PeersReport:
    """Run the peers suite; each implementation and size in its own event loop."""
    started = time.perf_counter()
    scenarios = [_scenario(config, sessions, progress) for sessions in config.sessions]
    headline = next((s for s in scenarios if s.sessions == config.headline_sessions),
                    scenarios[-1])
    mine, theirs = _find(headline, INTERLINK), _find(headline, TRIO_BASELINE)
    assert mine.maximum is not None and theirs.maximum is not None
    params = PeersParams(
        sessions=list(config.sessions), load_fraction=config.load_fraction,
        trials=config.plan.trials, open_trials=config.plan.open_trials,
        trial_seconds=config.plan.seconds, warmup_seconds=config.plan.warmup_seconds,
        max_threads=config.max_threads, thread_start_timeout_s=config.thread_start_timeout_s,
        headline_sessions=headline.sessions, workload=WORKLOAD,
        isolated_processes=config.isolate, quick=config.quick,
        versions=package_versions())
    results = PeersResults(throughput_msgs_per_s=mine.maximum.throughput_msgs_per_s,
                           latency_us=mine.maximum.latency_us,
                           headline_sessions=headline.sessions, scenarios=scenarios)
    baseline = Baseline(
        name=TRIO_BASELINE,
        description="the core suite's bare trio pipeline (1 hop, no per-event work)",
        throughput_msgs_per_s=theirs.maximum.throughput_msgs_per_s,
        latency_us=theirs.maximum.latency_us)
    return make_report(SUITE, params=params, results=results, baseline=baseline,
                       duration_s=time.perf_counter() - started)


def peers_table(report: PeersReport) -> str:
    rows = []
    for scenario in report.results.scenarios:
        for run in scenario.implementations:
            top, load = run.maximum, run.at_load
            rows.append([
                f"{scenario.sessions:,}", run.implementation, str(run.hops), run.status,
                rate(top.throughput_msgs_per_s) if top else "-",
                micros(top.latency_us.p99) if top else "-",
                rate(load.throughput_msgs_per_s) if load else "-",
                micros(load.latency_us.p50) if load else "-",
                micros(load.latency_us.p99) if load else "-",
                micros(load.latency_us.p999) if load else "-",
                times(run.ratio_to_interlink) if run.ratio_to_interlink is not None else "-",
                f"{run.start_s:.3f}s" if run.start_s is not None else "-",
                size(run.rss_per_session_bytes) if run.rss_per_session_bytes is not None
                else "-"])
    lines = [
        f"peers: the same workload on each runtime; at-load = {report.params.load_fraction:.0%}"
        " of Interlink's maximum, the same offered rate for all",
        table(["sessions", "implementation", "hops", "status", "max/s", "p99@max", "load/s",
               "p50", "p99", "p99.9", "vs interlink", "start", "mem/session"], rows),
    ]
    for scenario in report.results.scenarios:
        lines += [f"{scenario.sessions:,} sessions, {run.implementation}: {run.detail}"
                  for run in scenario.implementations if run.detail]
    return "\n".join(lines)
