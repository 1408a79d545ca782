"""The core suite: events per second through the whole engine path, and their latency.

For every storage (``memory``, ``lmdb``) and session count (1, 100, 10,000):

1. an engine is started and one event is routed to each destination, so
   every session exists and its actor is active;
2. **maximum throughput**: a closed-loop sender pushes events round-robin
   over the sessions as fast as the engine takes them (warm-up, then
   ``trials`` timed runs);
3. **offered load**: an open-loop sender offers 25 %, 50 % and 75 % of that
   maximum; latency counts from each event's scheduled send time.

The **baseline** is the fastest plain trio design doing the same work: the
same hop (sender task → memory channel → one task per session), the
engine's per-event work (:class:`~bench._workload.EngineWork`: domain route,
federation policy, session lookup, event copy; message-id record, encoded
metadata entry), ``send_nowait`` with a checkpoint every 64 events (as the
engine's sender does), the same events and trial plan, offered the same
absolute loads. Beside it, the **asyncio peer** does the same on
``asyncio.run`` (one task and ``asyncio.Queue`` per session). Each runs in
its own event loop right after the engine's, so the engine's background tasks
cannot slow them down. ``ratio_to_baseline`` and ``ratio_to_asyncio`` are
Interlink's maximum over theirs. (Until schema 2 the baseline did no work
and awaited ``send`` per event: a slower design that flattered the ratio.)

**Where the CPU goes**: after the maximum trials, one more closed-loop run
reads this process's threads and its child processes from ``/proc``, so each
scenario reports the microseconds per event spent on the event loop, in other
threads of this process and in the LMDB writer processes (the second core).

The metadata log is checked two ways: while the engine runs, a watcher
records how full the log's buffer and the stores' write queues get (full
means writers waited: storage limited throughput); and the log's own
capacity (entries recorded and written per second, alone) shows what share of
the event loop it takes at the engine's maximum.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import trio

from engine import Address, MetadataEntry, MetadataLog, SystemClock

from ._asyncio_peer import AsyncioPipeline
from ._cpu import CpuPerEvent, per_event, read_cpu
from ._engine_pipeline import (
    STORAGES,
    EnginePipeline,
    Storage,
    StoragePressure,
    bench_settings,
    open_storage,
)
from ._histogram import LatencyUs
from ._load import EventIds
from ._machine import package_versions
from ._progress import Progress
from ._report import Baseline, Report, make_report, ratio
from ._runner import (
    AsyncioRuntime,
    AsyncRuntime,
    Pipeline,
    TrioRuntime,
    measure_max,
    measure_open,
    run_trial,
)
from ._table import micros, rate, table, times
from ._traffic import EXTERNAL_DOMAIN, SOURCE, Traffic
from ._trials import Run, TrialPlan
from ._trio_pipeline import DEFAULT_CAPACITY, ChannelPipeline
from ._workload import EngineWork, registered_directory, registered_directory_sync

SUITE = "core"
HOPS = 1
BASELINE_NAME = "trio-same-work"
BASELINE_DESCRIPTION = (
    "sender task (send_nowait, checkpoint every 64) -> trio memory channel (capacity 1000) "
    "-> one task per session, doing the engine's per-event work (EngineWork) without the "
    "engine: the fastest plain trio design with the same hop and work")

#: 3: ``cpu_us_per_event`` no longer counts the bench pruning its id map after the
#: CPU reading's run (the engine's own writes still count); 2: see bench/_report.py
CORE_SCHEMA_VERSION = 3
#: metadata-log entries per simulated writer batch (the writer flushes every 50 ms)
LOG_BATCH = 500


class CoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    sessions: tuple[int, ...]
    storages: tuple[Storage, ...]
    #: offered loads, as fractions of the engine's measured maximum
    loads: tuple[float, ...]
    plan: TrialPlan
    headline_sessions: int
    headline_storage: Storage
    #: entries in the metadata log's capacity measurement
    log_entries: int
    #: the CPU reading's closed-loop run lasts about this long (clock ticks are 10 ms)
    cpu_trial_s: float = 1.0
    quick: bool = False

    @classmethod
    def full(cls) -> CoreConfig:
        return cls(sessions=(1, 100, 10_000), storages=STORAGES, loads=(0.25, 0.5, 0.75),
                   plan=TrialPlan(trials=5, open_trials=3, seconds=2.0, warmup_seconds=1.0,
                                  min_events=2000, calibration_events=1000),
                   headline_sessions=10_000, headline_storage="lmdb", log_entries=100_000)

    @classmethod
    def quick_run(cls) -> CoreConfig:
        """Every size and storage, but one offered load (50 %) and one short trial each."""
        return cls(sessions=(1, 100, 10_000), storages=STORAGES, loads=(0.5,),
                   plan=TrialPlan(trials=1, open_trials=1, seconds=0.15, warmup_seconds=0.05,
                                  min_events=200, calibration_events=100),
                   headline_sessions=10_000, headline_storage="lmdb", log_entries=10_000,
                   cpu_trial_s=0.5, quick=True)


class HeadlineChoice(msgspec.Struct, frozen=True, kw_only=True):
    sessions: int
    storage: str


class CoreParams(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[int]
    storages: list[str]
    loads: list[float]
    trials: int
    open_trials: int
    trial_seconds: float
    warmup_seconds: float
    #: task hops per event, in the engine and in the baseline
    hops: int
    mailbox_capacity: int
    shard_count: int
    headline: HeadlineChoice
    quick: bool
    versions: dict[str, str]


class LoadPoint(msgspec.Struct, frozen=True, kw_only=True):
    """Interlink, the baseline and the asyncio peer under the same offered load."""

    load_fraction: float
    offered_msgs_per_s: float
    interlink: Run
    baseline: Run
    asyncio_peer: Run


class CoreScenario(msgspec.Struct, frozen=True, kw_only=True):
    sessions: int
    storage: str
    #: seconds to route the first event to every session (creation and activation)
    session_setup_s: float
    interlink: Run
    baseline: Run
    ratio_to_baseline: float
    #: the asyncio-queues peer doing the same work, at maximum
    asyncio_peer: Run
    ratio_to_asyncio: float
    loads: list[LoadPoint]
    storage_pressure: StoragePressure
    #: CPU per event at maximum throughput, by thread and process
    cpu_us_per_event: CpuPerEvent


class LogCapacity(msgspec.Struct, frozen=True, kw_only=True):
    """The metadata log alone: entries recorded and written per second."""

    storage: str
    entries_per_s: float
    us_per_entry: float
    #: the best Interlink maximum measured on this storage
    interlink_max_msgs_per_s: float
    #: the share of the event loop the log takes at that maximum (max / capacity)
    share_at_max: float
    #: whether any scenario on this storage filled the log's buffer or a write queue
    throttled: bool


class CoreResults(msgspec.Struct, frozen=True, kw_only=True):
    #: Interlink's maximum in the headline scenario
    throughput_msgs_per_s: float
    #: latency at that maximum
    latency_us: LatencyUs
    headline: HeadlineChoice
    #: the headline over the asyncio peer's maximum in the same scenario
    ratio_to_asyncio: float
    scenarios: list[CoreScenario]
    metadata_log: list[LogCapacity]


CoreReport = Report[CoreParams, CoreResults]


class _EngineSide(msgspec.Struct, frozen=True, kw_only=True):
    setup_s: float
    maximum: Run
    loads: list[Run]
    pressure: StoragePressure
    cpu: CpuPerEvent


async def _engine_side(config: CoreConfig, sessions: int, storage: Storage,
                       progress: Progress) -> _EngineSide:
    traffic = Traffic(sessions)
    ids = EventIds()
    label = f"{sessions} sessions/{storage}:"
    plan = config.plan
    async with (
        open_storage(storage) as (directory, store),
        EnginePipeline.open(traffic, directory, store) as engine,
    ):
        started = time.perf_counter()
        await engine.open_sessions(ids)
        setup = time.perf_counter() - started
        progress.say(f"{label} {sessions} sessions open in {setup:.2f}s")
        engine.take_pressure()
        runtime = TrioRuntime()
        maximum = await measure_max(runtime, engine, plan, ids, progress, label)
        loads = []
        for fraction in config.loads:
            offered = fraction * maximum.throughput_msgs_per_s
            loads.append(await measure_open(runtime, engine, offered, fraction, plan, ids,
                                            progress, label))
        await engine.settle()
        pressure = engine.take_pressure()
        cpu = await _cpu_per_event(runtime, engine, maximum, plan, ids, config.cpu_trial_s)
        progress.say(f"{label} CPU per event: {cpu.event_loop:.1f} us event loop, "
                     f"{cpu.other_threads:.1f} us other threads, "
                     f"{cpu.writer_processes:.1f} us writer processes")
    return _EngineSide(setup_s=setup, maximum=maximum, loads=loads, pressure=pressure, cpu=cpu)


async def _cpu_per_event(runtime: TrioRuntime, engine: EnginePipeline, maximum: Run,
                         plan: TrialPlan, ids: EventIds, seconds: float) -> CpuPerEvent:
    """One closed-loop run of about ``seconds``, with /proc read before and after."""
    count = max(plan.min_events, int(maximum.throughput_msgs_per_s * seconds))
    await engine.settle()
    before = read_cpu()
    timeline = await run_trial(runtime, engine, count, ids, rate=None, timeout=plan.timeout)
    # The writes this run caused are part of its cost; pruning the bench's id map
    # afterwards is not (until schema 3 it was counted: ~10-15 us per event on LMDB).
    await engine.settle(forget=False)
    after = read_cpu()
    await engine.settle()
    return per_event(before, after, timeline.completed_count)


async def _max_and_loads(runtime: AsyncRuntime, pipeline: Pipeline, config: CoreConfig,
                         offered: list[float], progress: Progress,
                         label: str) -> tuple[Run, list[Run]]:
    """A peer's maximum, then its runs at the engine's offered loads."""
    ids = EventIds()
    maximum = await measure_max(runtime, pipeline, config.plan, ids, progress, label)
    loads = [await measure_open(runtime, pipeline, load, fraction, config.plan, ids, progress,
                                label)
             for fraction, load in zip(config.loads, offered, strict=True)]
    return maximum, loads


async def _baseline_side(config: CoreConfig, sessions: int, offered: list[float],
                         progress: Progress, label: str) -> tuple[Run, list[Run]]:
    traffic = Traffic(sessions)
    work = EngineWork(await registered_directory(traffic))
    async with ChannelPipeline.open(BASELINE_NAME, traffic, work=work, nowait=True) as baseline:
        return await _max_and_loads(TrioRuntime(), baseline, config, offered, progress, label)


async def _asyncio_side(config: CoreConfig, traffic: Traffic, work: EngineWork,
                        offered: list[float], progress: Progress,
                        label: str) -> tuple[Run, list[Run]]:
    async with AsyncioPipeline.open(traffic, work) as peer:
        return await _max_and_loads(AsyncioRuntime(), peer, config, offered, progress, label)


def _scenario(config: CoreConfig, sessions: int, storage: Storage,
              progress: Progress) -> CoreScenario:
    """Interlink, then the baseline and the asyncio peer at the same offered loads, each in
    its own event loop."""
    engine = trio.run(_engine_side, config, sessions, storage, progress)
    offered = [run.offered_msgs_per_s or 0.0 for run in engine.loads]
    baseline_max, baseline_loads = trio.run(_baseline_side, config, sessions, offered,
                                            progress, f"{sessions} sessions/baseline:")
    traffic = Traffic(sessions)
    work = EngineWork(registered_directory_sync(traffic))
    peer_max, peer_loads = asyncio.run(_asyncio_side(
        config, traffic, work, offered, progress, f"{sessions} sessions/asyncio:"))
    points = [LoadPoint(load_fraction=mine.load_fraction or 0.0,
                        offered_msgs_per_s=mine.offered_msgs_per_s or 0.0,
                        interlink=mine, baseline=theirs, asyncio_peer=peer)
              for mine, theirs, peer in zip(engine.loads, baseline_loads, peer_loads,
                                            strict=True)]
    mine_max = engine.maximum.throughput_msgs_per_s
    return CoreScenario(
        sessions=sessions, storage=storage, session_setup_s=round(engine.setup_s, 3),
        interlink=engine.maximum, baseline=baseline_max,
        ratio_to_baseline=ratio(mine_max, baseline_max.throughput_msgs_per_s),
        asyncio_peer=peer_max,
        ratio_to_asyncio=ratio(mine_max, peer_max.throughput_msgs_per_s),
        loads=points, storage_pressure=engine.pressure, cpu_us_per_event=engine.cpu)


async def measure_log_capacity(storage: Storage, entries: int) -> float:
    """Metadata entries per second the log records and writes (and commits) on its own."""
    async with open_storage(storage) as (directory, store):
        log = MetadataLog(store, directory, SystemClock(), max_buffered=entries + 1)
        now = time.time()
        batch = [MetadataEntry(timestamp=now, event_id=str(i), sender=SOURCE,
                               receiver=Address(user=f"peer{i % 10_000}", domain=EXTERNAL_DOMAIN),
                               type="im", session_id=f"s-{i % 10_000}", outcome="delivered")
                 for i in range(entries)]
        # One committed entry first: the store's writer (and, on LMDB, its
        # process) is up before the clock starts, so this measures steady state.
        await log.record(msgspec.structs.replace(batch[0], event_id="warm-up"))
        await log.flush()
        started = time.perf_counter()
        for i, entry in enumerate(batch, 1):
            await log.record(entry)
            if i % LOG_BATCH == 0:
                await log.write_buffered()
        await log.flush()
        return entries / (time.perf_counter() - started)


def _log_capacities(config: CoreConfig, scenarios: list[CoreScenario],
                    progress: Progress) -> list[LogCapacity]:
    capacities = []
    for storage in config.storages:
        capacity = trio.run(measure_log_capacity, storage, config.log_entries)
        mine = [s for s in scenarios if s.storage == storage]
        best = max((s.interlink.throughput_msgs_per_s for s in mine), default=0.0)
        capacities.append(LogCapacity(
            storage=storage, entries_per_s=capacity, us_per_entry=round(1e6 / capacity, 2),
            interlink_max_msgs_per_s=best, share_at_max=ratio(best, capacity),
            throttled=any(s.storage_pressure.throttled for s in mine)))
        progress.say(f"metadata log on {storage}: {rate(capacity)} entries/s alone")
    return capacities


def _headline(config: CoreConfig, scenarios: list[CoreScenario]) -> CoreScenario:
    for scenario in scenarios:
        if (scenario.sessions, scenario.storage) == (config.headline_sessions,
                                                     config.headline_storage):
            return scenario
    return scenarios[-1]


def run_core(config: CoreConfig, progress: Progress) -> CoreReport:
    """Run the core suite; every scenario in its own ``trio.run``."""
    started = time.perf_counter()
    scenarios = []
    for storage in config.storages:
        for sessions in config.sessions:
            scenarios.append(_scenario(config, sessions, storage, progress))
    headline = _headline(config, scenarios)
    settings = bench_settings()
    params = CoreParams(
        sessions=list(config.sessions), storages=list(config.storages), loads=list(config.loads),
        trials=config.plan.trials, open_trials=config.plan.open_trials,
        trial_seconds=config.plan.seconds, warmup_seconds=config.plan.warmup_seconds,
        hops=HOPS, mailbox_capacity=DEFAULT_CAPACITY, shard_count=settings.shard_count,
        headline=HeadlineChoice(sessions=headline.sessions, storage=headline.storage),
        quick=config.quick, versions=package_versions())
    results = CoreResults(
        throughput_msgs_per_s=headline.interlink.throughput_msgs_per_s,
        latency_us=headline.interlink.latency_us, headline=params.headline,
        ratio_to_asyncio=headline.ratio_to_asyncio, scenarios=scenarios,
        metadata_log=_log_capacities(config, scenarios, progress))
    baseline = Baseline(name=BASELINE_NAME, description=BASELINE_DESCRIPTION,
                        throughput_msgs_per_s=headline.baseline.throughput_msgs_per_s,
                        latency_us=headline.baseline.latency_us)
    report = make_report(SUITE, params=params, results=results, baseline=baseline,
                         duration_s=time.perf_counter() - started)
    return msgspec.structs.replace(report, schema_version=CORE_SCHEMA_VERSION)


def core_table(report: CoreReport) -> str:
    """The human summary: one row per scenario and load, then where the CPU goes."""
    rows = []
    for scenario in report.results.scenarios:
        points: list[tuple[str, float | None, Run, Run, Run, str, str]] = [
            ("max", None, scenario.interlink, scenario.baseline, scenario.asyncio_peer,
             times(scenario.ratio_to_baseline), times(scenario.ratio_to_asyncio))]
        points += [(f"{p.load_fraction:.0%}", p.offered_msgs_per_s, p.interlink, p.baseline,
                    p.asyncio_peer, "", "") for p in scenario.loads]
        for load, offered, mine, theirs, peer, base_ratio, peer_ratio in points:
            rows.append([
                f"{scenario.sessions:,}", scenario.storage, load, rate(offered),
                f"{rate(mine.throughput_msgs_per_s)} ±{mine.spread_pct:.0f}%",
                micros(mine.latency_us.p50), micros(mine.latency_us.p99),
                rate(theirs.throughput_msgs_per_s), micros(theirs.latency_us.p99), base_ratio,
                rate(peer.throughput_msgs_per_s), micros(peer.latency_us.p99), peer_ratio])
    cpu_rows = [[f"{s.sessions:,}", s.storage, f"{s.cpu_us_per_event.event_loop:.1f}",
                 f"{s.cpu_us_per_event.other_threads:.1f}",
                 f"{s.cpu_us_per_event.writer_processes:.1f}",
                 f"{s.cpu_us_per_event.total:.1f}"] for s in report.results.scenarios]
    lines = [
        "core: events through the whole engine path vs the fastest plain trio design doing "
        "the same work (baseline) and asyncio queues doing the same work",
        table(["sessions", "storage", "load", "offered/s", "interlink/s", "p50", "p99",
               "baseline/s", "base p99", "ratio", "asyncio/s", "aio p99", "ratio"], rows),
        "",
        "CPU per event at maximum (us): event loop, other threads, LMDB writer processes",
        table(["sessions", "storage", "loop", "threads", "writers", "total"], cpu_rows),
        "",
        f"headline ({report.results.headline.sessions:,} sessions, "
        f"{report.results.headline.storage}): {rate(report.results.throughput_msgs_per_s)} "
        f"events/s = {times(report.ratio_to_baseline)} the baseline's "
        f"{rate(report.baseline.throughput_msgs_per_s)}, "
        f"{times(report.results.ratio_to_asyncio)} the asyncio peer's",
    ]
    for capacity in report.results.metadata_log:
        lines.append(
            f"metadata log on {capacity.storage}: {rate(capacity.entries_per_s)} entries/s alone "
            f"({capacity.us_per_entry:.1f} us each) = {capacity.share_at_max:.0%} of the event "
            f"loop at {rate(capacity.interlink_max_msgs_per_s)} events/s; "
            f"{'THROTTLED writers' if capacity.throttled else 'never throttled writers'}")
    return "\n".join(lines)
