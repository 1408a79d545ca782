"""The scale suite: many session actors, a big directory, and what they cost.

1. **Directory**: ``registered_sessions`` sessions are written into an
   :class:`~engine.LmdbDirectory` with ``put_session`` (in batches, progress
   on stderr), then read back: ``get_session``, ``find_session`` and
   ``get_domain_route`` per second, on uniformly random keys over every
   session and on a small hot set, on LMDB and on a
   :class:`~engine.testing.MemoryDirectory` holding the same sessions. The
   baseline is a plain ``dict.get`` of the same records.
2. **Actors**: for each count in ``actor_counts``, sessions registered in
   that directory are activated by routing one event to each (the whole
   engine path: the first event creates the activation, which loads the
   session from the directory); then they are left idle and passivated by the
   idle sweep (``session_idle_timeout`` is short, the periodic sweep is off and
   :meth:`~engine.ActorSystem.sweep_idle` is called). Resident memory is read
   before, while active and after passivation (after a full collection, with
   the sessions' LMDB pages read beforehand so that file pages do not count
   as actor memory). The baseline is a bare trio task with a memory channel,
   spawned by its first message and ended by closing the channel.

Each actor measurement runs in a fresh process (``isolate``), so memory freed
by one measurement cannot be reused by the next and flatter it.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.testing

from engine import Directory, LmdbDirectory, SessionRecord
from engine.testing import MemoryDirectory

from ._engine_pipeline import STORE_PENDING_LIMIT, EnginePipeline, bench_settings, open_storage
from ._histogram import LatencyHistogram, LatencyUs
from ._isolation import run_in_fresh_process
from ._load import EventIds, Timeline
from ._machine import package_versions
from ._memory import Rss, read_rss, trim_heap
from ._progress import Progress
from ._report import Baseline, Report, make_report, ratio
from ._runner import TrioRuntime, run_trial
from ._table import micros, rate, size, table, times
from ._traffic import (
    EXTERNAL_DOMAIN,
    INTERNAL_DOMAIN,
    PairTraffic,
    member,
    pair_session,
    peer,
    seed_directory,
)
from ._trio_pipeline import SpawningPipeline

SUITE = "scale"
#: the longest one activation run may take
WORKER_TIMEOUT_S = 1800.0
#: sessions written between two progress lines
PROGRESS_EVERY = 100_000


class ScaleConfig(msgspec.Struct, frozen=True, kw_only=True):
    actor_counts: tuple[int, ...]
    registered_sessions: int
    #: ``put_session`` calls per batch (the writer group-commits them)
    write_batch: int
    #: lookups per measured operation
    lookups: int
    hot_keys: int
    idle_timeout_s: float
    #: run each actor measurement in a fresh process
    isolate: bool = True
    quick: bool = False

    @classmethod
    def full(cls) -> ScaleConfig:
        return cls(actor_counts=(1_000, 10_000, 100_000, 1_000_000),
                   registered_sessions=2_000_000,
                   write_batch=10_000, lookups=200_000, hot_keys=1_000, idle_timeout_s=0.5)

    @classmethod
    def quick_run(cls) -> ScaleConfig:
        return cls(actor_counts=(1_000, 10_000), registered_sessions=100_000,
                   write_batch=10_000, lookups=20_000, hot_keys=1_000, idle_timeout_s=0.2,
                   quick=True)


class ScaleParams(msgspec.Struct, frozen=True, kw_only=True):
    actor_counts: list[int]
    registered_sessions: int
    write_batch: int
    lookups: int
    hot_keys: int
    idle_timeout_s: float
    isolated_processes: bool
    quick: bool
    versions: dict[str, str]


class ActorMemory(msgspec.Struct, frozen=True, kw_only=True):
    """Activating ``actors`` actors (or tasks), then passivating them."""

    actors: int
    activation_s: float
    activations_per_s: float
    #: first event sent -> delivered, per actor
    latency_us: LatencyUs
    rss_before_bytes: int
    rss_active_bytes: int
    rss_passivated_bytes: int
    #: after the C allocator was asked to give free pages back (``None``: no such call)
    rss_trimmed_bytes: int | None
    #: (active - before) / actors, from VmRSS
    rss_per_actor_bytes: float
    #: the same from RssAnon (excludes memory-mapped file pages)
    anon_rss_per_actor_bytes: float
    #: interpreter-allocated blocks (objects) per actor
    blocks_per_actor: float
    #: actors (tasks) that were passivated (ended)
    passivated: int
    #: (active - passivated) / (active - before) of VmRSS: the growth given back
    returned_fraction: float
    #: the same for allocated blocks: the objects freed
    blocks_returned_fraction: float
    #: the same for VmRSS after the allocator trim (``None``: no trim)
    trimmed_returned_fraction: float | None


class ActorScale(msgspec.Struct, frozen=True, kw_only=True):
    actors: int
    interlink: ActorMemory
    baseline: ActorMemory
    #: Interlink's activations/s over the baseline's spawns/s
    ratio_to_baseline: float
    #: Interlink's RSS per actor over the baseline's RSS per task
    memory_ratio: float


class LookupRate(msgspec.Struct, frozen=True, kw_only=True):
    backend: str
    operation: str
    #: ``uniform`` over every registered session, or a ``hot`` set repeated
    keys: str
    lookups_per_s: float
    ns_per_lookup: float


class DirectoryScale(msgspec.Struct, frozen=True, kw_only=True):
    registered_sessions: int
    #: writing them into LMDB (put_session, then flush)
    load_s: float
    sessions_written_per_s: float
    lookups: list[LookupRate]
    #: ``dict.get`` of the same records on the same uniform keys
    baseline_dict_gets_per_s: float


class ScaleResults(msgspec.Struct, frozen=True, kw_only=True):
    #: Interlink's activations per second at the largest actor count
    throughput_msgs_per_s: float
    #: first-event latency of those activations
    latency_us: LatencyUs
    actors: list[ActorScale]
    directory: DirectoryScale


ScaleReport = Report[ScaleParams, ScaleResults]


# -- directory -------------------------------------------------------------------
def _rate(operation: Callable[[Any], object], keys: list[Any]) -> float:
    started = time.perf_counter()
    for key in keys:
        operation(key)
    return len(keys) / (time.perf_counter() - started)


def _lookups(backend: str, directory: Directory, config: ScaleConfig,
             rng: random.Random) -> list[LookupRate]:
    """Lookups per second on uniform and hot keys, after a warm-up on other uniform keys.

    The warm-up pages the store in (as a long-running engine would have it)
    without warming any cache for the measured keys, which are drawn apart.
    """
    total = config.registered_sessions
    for i in (rng.randrange(total) for _ in range(config.lookups)):
        directory.find_session(member(i), peer(i))
    uniform = [rng.randrange(total) for _ in range(config.lookups)]
    hot_set = [rng.randrange(total) for _ in range(config.hot_keys)]
    hot = [hot_set[i % len(hot_set)] for i in range(config.lookups)]
    domains = [(EXTERNAL_DOMAIN, INTERNAL_DOMAIN)[i % 2] for i in range(config.lookups)]
    rates: list[LookupRate] = []

    def add(operation: str, keys: str, per_second: float) -> None:
        rates.append(LookupRate(backend=backend, operation=operation, keys=keys,
                                lookups_per_s=per_second,
                                ns_per_lookup=round(1e9 / per_second, 1)))

    for keys, indexes in (("uniform", uniform), ("hot", hot)):
        ids = [pair_session(i).session_id for i in indexes]
        pairs = [(member(i), peer(i)) for i in indexes]
        add("get_session", keys, _rate(directory.get_session, ids))
        add("find_session", keys, _rate(lambda pair: directory.find_session(*pair), pairs))
    add("get_domain_route", "hot", _rate(directory.get_domain_route, domains))
    return rates


async def _write_sessions(directory: Directory, config: ScaleConfig, progress: Progress,
                          backend: str) -> float:
    """Register every session (in id order for the memory directory); the seconds it took."""
    started = time.perf_counter()
    now = time.time()
    total, batch = config.registered_sessions, config.write_batch
    for first in range(0, total, batch):
        records = [pair_session(i, now) for i in range(first, min(first + batch, total))]
        if backend == "memory":
            records.sort(key=lambda record: record.session_id)
        for record in records:
            await directory.put_session(record)
        if (first + batch) % PROGRESS_EVERY == 0:
            progress.say(f"directory/{backend}: {first + batch:,} of {total:,} sessions written")
    await directory.flush()
    return time.perf_counter() - started


async def _lmdb_directory(path: Path, config: ScaleConfig,
                          progress: Progress) -> tuple[float, list[LookupRate]]:
    directory = await LmdbDirectory.open(path, max_pending=STORE_PENDING_LIMIT)
    try:
        await seed_directory(directory)
        load_s = await _write_sessions(directory, config, progress, "lmdb")
        progress.say(f"directory/lmdb: {config.registered_sessions:,} sessions in {load_s:.1f}s")
        return load_s, _lookups("lmdb", directory, config, random.Random(1))
    finally:
        await directory.aclose()


async def _memory_directory(config: ScaleConfig, progress: Progress
                            ) -> tuple[list[LookupRate], float]:
    directory = MemoryDirectory()
    await seed_directory(directory)
    await _write_sessions(directory, config, progress, "memory")
    rates = _lookups("memory", directory, config, random.Random(1))
    rng = random.Random(1)
    records: dict[str, SessionRecord] = {}
    for i in range(config.registered_sessions):
        record = pair_session(i)
        records[record.session_id] = record
    keys = [pair_session(rng.randrange(config.registered_sessions)).session_id
            for _ in range(config.lookups)]
    return rates, _rate(records.get, keys)


# -- actors (each in a worker process) ------------------------------------------------
def _fraction_returned(before: int, active: int, after: int) -> float:
    return round(ratio(active - after, active - before), 3)


def _memory(actors: int, activation: Timeline, before: Rss, active: Rss, after: Rss,
            passivated: int) -> ActorMemory:
    trimmed = read_rss() if trim_heap() else None
    histogram = LatencyHistogram()
    histogram.record_seconds(activation.latencies())
    return ActorMemory(
        actors=actors, activation_s=round(activation.count / activation.throughput(), 4),
        activations_per_s=activation.throughput(), latency_us=histogram.summary(),
        rss_before_bytes=before.vm_rss, rss_active_bytes=active.vm_rss,
        rss_passivated_bytes=after.vm_rss,
        rss_trimmed_bytes=trimmed.vm_rss if trimmed else None,
        rss_per_actor_bytes=round((active.vm_rss - before.vm_rss) / actors, 1),
        anon_rss_per_actor_bytes=round((active.rss_anon - before.rss_anon) / actors, 1),
        blocks_per_actor=round((active.blocks - before.blocks) / actors, 1),
        passivated=passivated,
        returned_fraction=_fraction_returned(before.vm_rss, active.vm_rss, after.vm_rss),
        blocks_returned_fraction=_fraction_returned(before.blocks, active.blocks, after.blocks),
        trimmed_returned_fraction=_fraction_returned(before.vm_rss, active.vm_rss,
                                                     trimmed.vm_rss) if trimmed else None)


async def _engine_actors(path: Path, first: int, count: int, idle_timeout: float,
                         progress: Progress) -> ActorMemory:
    traffic = PairTraffic(first, count)
    settings = bench_settings(session_idle_timeout=idle_timeout, sweep_interval=86_400.0)
    async with (
        open_storage("lmdb", directory_path=path) as (directory, store),
        EnginePipeline.open(traffic, directory, store, settings,
                            forget_message_ids=False) as engine,
    ):
        for i in range(first, first + count):  # page the sessions in: not actor memory
            directory.find_session(member(i), peer(i))
        await engine.settle()
        before = read_rss()
        activation = await engine.open_sessions(EventIds())
        progress.say(f"actors/interlink: {count:,} activated in "
                     f"{count / activation.throughput():.2f}s")
        await engine.settle()
        active = read_rss()
        actors = engine.engine.actors
        await trio.sleep(idle_timeout * 1.5)
        passivated = actors.sweep_idle()
        await trio.testing.wait_all_tasks_blocked()
        await engine.settle()
        after = read_rss()
        progress.say(f"actors/interlink: {passivated:,} passivated; {actors.active_count()} "
                     "still active")
    return _memory(count, activation, before, active, after, passivated)


def measure_engine_actors(path: str, first: int, count: int, idle_timeout: float,
                          progress_started: float | None) -> ActorMemory:
    """Activate and passivate ``count`` registered sessions of the directory at ``path``."""
    progress = Progress.resumed(SUITE, progress_started)
    return trio.run(_engine_actors, Path(path), first, count, idle_timeout, progress)


async def _bare_actors(count: int, progress: Progress) -> ActorMemory:
    traffic = PairTraffic(0, count)
    async with SpawningPipeline.open(traffic) as pipeline:
        await trio.testing.wait_all_tasks_blocked()
        before = read_rss()
        activation = await run_trial(TrioRuntime(), pipeline, count, EventIds(), rate=None,
                                     timeout=WORKER_TIMEOUT_S)
        await pipeline.settle()
        active = read_rss()
        tasks = pipeline.tasks
        await pipeline.stop_all()
        after = read_rss()
        progress.say(f"actors/baseline: {count:,} tasks spawned and ended")
    return _memory(count, activation, before, active, after, tasks)


def measure_bare_actors(count: int, progress_started: float | None) -> ActorMemory:
    """Spawn ``count`` bare trio tasks with a channel each (by a first message), then end them."""
    progress = Progress.resumed(SUITE, progress_started)
    return trio.run(_bare_actors, count, progress)


# -- the suite --------------------------------------------------------------------------
def run_scale(config: ScaleConfig, progress: Progress) -> ScaleReport:
    if max(config.actor_counts) * 2 > config.registered_sessions:
        raise ValueError("registered_sessions must be at least twice the largest actor count")
    started = time.perf_counter()
    started_at = progress.started
    with tempfile.TemporaryDirectory(prefix="interlink-bench-scale-") as workdir:
        path = Path(workdir) / "directory"
        load_s, lmdb_rates = trio.run(_lmdb_directory, path, config, progress)
        memory_rates, dict_rate = trio.run(_memory_directory, config, progress)
        progress.say(f"directory: lookups measured ({rate(dict_rate)} dict gets/s baseline)")
        entries = []
        first = 0
        for count in config.actor_counts:
            mine = run_in_fresh_process(config.isolate, measure_engine_actors, str(path), first,
                                        count, config.idle_timeout_s, started_at)
            theirs = run_in_fresh_process(config.isolate, measure_bare_actors, count,
                                          started_at)
            first += count
            entries.append(ActorScale(
                actors=count, interlink=mine, baseline=theirs,
                ratio_to_baseline=ratio(mine.activations_per_s, theirs.activations_per_s),
                memory_ratio=round(ratio(mine.rss_per_actor_bytes, theirs.rss_per_actor_bytes),
                                   2)))
            progress.say(f"actors: {count:,} measured")
    largest = entries[-1]
    params = ScaleParams(
        actor_counts=list(config.actor_counts), registered_sessions=config.registered_sessions,
        write_batch=config.write_batch, lookups=config.lookups, hot_keys=config.hot_keys,
        idle_timeout_s=config.idle_timeout_s, isolated_processes=config.isolate,
        quick=config.quick, versions=package_versions())
    directory = DirectoryScale(
        registered_sessions=config.registered_sessions, load_s=round(load_s, 2),
        sessions_written_per_s=config.registered_sessions / load_s,
        lookups=lmdb_rates + memory_rates, baseline_dict_gets_per_s=dict_rate)
    results = ScaleResults(throughput_msgs_per_s=largest.interlink.activations_per_s,
                           latency_us=largest.interlink.latency_us, actors=entries,
                           directory=directory)
    baseline = Baseline(
        name=SpawningPipeline.name,
        description="a bare trio task and memory channel per session, spawned by its first "
                    "message (activation) and ended by closing the channel (passivation)",
        throughput_msgs_per_s=largest.baseline.activations_per_s,
        latency_us=largest.baseline.latency_us)
    return make_report(SUITE, params=params, results=results, baseline=baseline,
                       duration_s=time.perf_counter() - started)


def scale_table(report: ScaleReport) -> str:
    rows = []
    for entry in report.results.actors:
        mine, theirs = entry.interlink, entry.baseline
        rows.append([
            f"{entry.actors:,}", rate(mine.activations_per_s), micros(mine.latency_us.p99),
            size(mine.rss_per_actor_bytes), size(mine.anon_rss_per_actor_bytes),
            f"{mine.returned_fraction:.0%}", rate(theirs.activations_per_s),
            size(theirs.rss_per_actor_bytes), f"{theirs.returned_fraction:.0%}",
            times(entry.ratio_to_baseline), times(entry.memory_ratio)])
    directory = report.results.directory
    lookups = [[item.backend, item.operation, item.keys, rate(item.lookups_per_s),
                f"{item.ns_per_lookup:,.0f}",
                times(ratio(item.lookups_per_s, directory.baseline_dict_gets_per_s))]
               for item in directory.lookups]
    return "\n".join([
        "scale: session actors activated by their first event, then passivated by the idle "
        "sweep; baseline: a bare trio task + channel",
        table(["actors", "activations/s", "p99", "RSS/actor", "anon/actor", "returned",
               "base spawns/s", "base RSS/task", "base returned", "speed", "memory"], rows),
        "",
        f"directory: {directory.registered_sessions:,} sessions written to LMDB in "
        f"{directory.load_s:.1f}s ({rate(directory.sessions_written_per_s)}/s); baseline "
        f"dict.get: {rate(directory.baseline_dict_gets_per_s)}/s",
        table(["backend", "operation", "keys", "lookups/s", "ns each", "vs dict"], lookups),
    ])
