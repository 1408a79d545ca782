"""The core suite: events per second through the whole engine path, and their latency.

For every storage (``memory``, ``lmdb``) and session count (1, 100, 10,000):

1. an engine is started and one event is routed to each destination, so
   every session exists and its actor is active;
2. **maximum throughput**: a closed-loop sender pushes events round-robin
   over the sessions as fast as the engine takes them (warm-up, then
   ``trials`` timed runs);
3. **offered load**: an open-loop sender offers 25 %, 50 % and 75 % of that
   maximum; latency counts from each event's scheduled send time.

The **baseline** is a bare trio pipeline with the same hop (sender task →
memory channel → one task per session), the same sender, the same events and
the same trial plan, offered the same absolute loads. It runs in its own
``trio.run`` right after the engine's, so the engine's background tasks
(shard sweeps, the log writer) cannot slow it down. ``ratio_to_baseline`` is
Interlink's maximum over the baseline's.

The metadata log is checked two ways: while the engine runs, a watcher
records how full the log's buffer and the stores' write queues get (full
means writers waited: storage limited throughput); and the log's own
capacity (entries recorded and written per second, alone) shows what share of
the event loop it takes at the engine's maximum.
"""

from __future__ import annotations

import time

import msgspec
import trio

from engine import Address, MetadataEntry, MetadataLog, SystemClock

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
from ._runner import TrioRuntime, measure_max, measure_open
from ._table import micros, rate, table, times
from ._traffic import EXTERNAL_DOMAIN, SOURCE, Traffic
from ._trials import Run, TrialPlan
from ._trio_pipeline import DEFAULT_CAPACITY, ChannelPipeline

SUITE = "core"
HOPS = 1
BASELINE_NAME = "trio-channel-pipeline"
BASELINE_DESCRIPTION = (
    "sender task -> trio memory channel (capacity 1000) -> one task per session: "
    "the engine's hop structure, sender and events, without the engine")
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
                   quick=True)


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
    """Interlink and the baseline under the same offered load."""

    load_fraction: float
    offered_msgs_per_s: float
    interlink: Run
    baseline: Run


class CoreScenario(msgspec.Struct, frozen=True, kw_only=True):
    sessions: int
    storage: str
    #: seconds to route the first event to every session (creation and activation)
    session_setup_s: float
    interlink: Run
    baseline: Run
    ratio_to_baseline: float
    loads: list[LoadPoint]
    storage_pressure: StoragePressure


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
    scenarios: list[CoreScenario]
    metadata_log: list[LogCapacity]


CoreReport = Report[CoreParams, CoreResults]


class _EngineSide(msgspec.Struct, frozen=True, kw_only=True):
    setup_s: float
    maximum: Run
    loads: list[Run]
    pressure: StoragePressure


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
    return _EngineSide(setup_s=setup, maximum=maximum, loads=loads, pressure=pressure)


async def _baseline_side(config: CoreConfig, sessions: int, offered: list[float],
                         progress: Progress, label: str) -> tuple[Run, list[Run]]:
    ids = EventIds()
    plan = config.plan
    async with ChannelPipeline.open(BASELINE_NAME, Traffic(sessions)) as baseline:
        runtime = TrioRuntime()
        maximum = await measure_max(runtime, baseline, plan, ids, progress, label)
        loads = []
        for fraction, load in zip(config.loads, offered, strict=True):
            loads.append(await measure_open(runtime, baseline, load, fraction, plan, ids,
                                            progress, label))
    return maximum, loads


def _scenario(config: CoreConfig, sessions: int, storage: Storage,
              progress: Progress) -> CoreScenario:
    """Interlink, then the baseline at the same offered loads, each in its own ``trio.run``."""
    engine = trio.run(_engine_side, config, sessions, storage, progress)
    offered = [run.offered_msgs_per_s or 0.0 for run in engine.loads]
    baseline_max, baseline_loads = trio.run(_baseline_side, config, sessions, offered,
                                            progress, f"{sessions} sessions/baseline:")
    points = [LoadPoint(load_fraction=mine.load_fraction or 0.0,
                        offered_msgs_per_s=mine.offered_msgs_per_s or 0.0,
                        interlink=mine, baseline=theirs)
              for mine, theirs in zip(engine.loads, baseline_loads, strict=True)]
    return CoreScenario(
        sessions=sessions, storage=storage, session_setup_s=round(engine.setup_s, 3),
        interlink=engine.maximum, baseline=baseline_max,
        ratio_to_baseline=ratio(engine.maximum.throughput_msgs_per_s,
                                baseline_max.throughput_msgs_per_s),
        loads=points, storage_pressure=engine.pressure)


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
        scenarios=scenarios, metadata_log=_log_capacities(config, scenarios, progress))
    baseline = Baseline(name=BASELINE_NAME, description=BASELINE_DESCRIPTION,
                        throughput_msgs_per_s=headline.baseline.throughput_msgs_per_s,
                        latency_us=headline.baseline.latency_us)
    return make_report(SUITE, params=params, results=results, baseline=baseline,
                       duration_s=time.perf_counter() - started)


def core_table(report: CoreReport) -> str:
    """The human summary: one row per scenario and load."""
    rows = []
    for scenario in report.results.scenarios:
        points: list[tuple[str, float | None, Run, Run, str]] = [
            ("max", None, scenario.interlink, scenario.baseline,
             times(scenario.ratio_to_baseline))]
        points += [(f"{p.load_fraction:.0%}", p.offered_msgs_per_s, p.interlink, p.baseline, "")
                   for p in scenario.loads]
        for load, offered, mine, theirs, ratio_cell in points:
            rows.append([
                f"{scenario.sessions:,}", scenario.storage, load, rate(offered),
                f"{rate(mine.throughput_msgs_per_s)} ±{mine.spread_pct:.0f}%",
                micros(mine.latency_us.p50), micros(mine.latency_us.p99),
                micros(mine.latency_us.p999),
                rate(theirs.throughput_msgs_per_s), micros(theirs.latency_us.p99), ratio_cell])
    lines = [
        "core: events through the whole engine path (1 task hop) vs a bare trio pipeline "
        "with the same hop",
        table(["sessions", "storage", "load", "offered/s", "interlink/s", "p50", "p99", "p99.9",
               "baseline/s", "base p99", "ratio"], rows),
        "",
        f"headline ({report.results.headline.sessions:,} sessions, "
        f"{report.results.headline.storage}): {rate(report.results.throughput_msgs_per_s)} "
        f"events/s = {times(report.ratio_to_baseline)} the baseline's "
        f"{rate(report.baseline.throughput_msgs_per_s)}",
    ]
    for capacity in report.results.metadata_log:
        lines.append(
            f"metadata log on {capacity.storage}: {rate(capacity.entries_per_s)} entries/s alone "
            f"({capacity.us_per_entry:.1f} us each) = {capacity.share_at_max:.0%} of the event "
            f"loop at {rate(capacity.interlink_max_msgs_per_s)} events/s; "
            f"{'THROTTLED writers' if capacity.throttled else 'never throttled writers'}")
    return "\n".join(lines)
