"""The benchmark harness: its CLI, its load generator, and the shape of its results.

Suites run here at a tiny size (a few dozen events): these tests check that
they run end to end and report in the documented shape, not the numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import pytest
import trio

from bench._core import CoreConfig, CoreReport, core_table, run_core
from bench._histogram import LatencyHistogram
from bench._isolation import run_in_fresh_process
from bench._load import (
    START_LEAD_S,
    EventIds,
    Timeline,
    drive_closed_loop,
    drive_open_loop,
    open_loop_times,
)
from bench._memory import parse_status, read_rss
from bench._peers import PeersConfig, PeersReport, peers_table, run_peers
from bench._plot import plot_core, plot_peers, plot_scale
from bench._progress import Progress
from bench._report import encode_json
from bench._scale import ScaleConfig, ScaleReport, measure_bare_actors, run_scale, scale_table
from bench._trials import TrialPlan, spread_pct, summarize
from bench.cli import main

TINY_PLAN = TrialPlan(trials=1, open_trials=1, seconds=0.02, warmup_seconds=0.01,
                      min_events=40, calibration_events=20)

# -- the JSON shape -------------------------------------------------------------------
#: every struct in the results and its fields, in order; change only with bench/README.md
GOLDEN_FIELDS: dict[str, list[str]] = {
    "Report": ["suite", "schema_version", "generated_at", "duration_s", "machine", "params",
               "results", "baseline", "ratio_to_baseline"],
    "Machine": ["cpu", "cores", "python", "platform"],
    "Baseline": ["name", "description", "throughput_msgs_per_s", "latency_us"],
    "LatencyUs": ["p50", "p99", "p999", "max", "mean", "samples"],
    "Run": ["mode", "load_fraction", "offered_msgs_per_s", "throughput_msgs_per_s",
            "throughput_trials", "spread_pct", "latency_us", "p99_trials_us",
            "events_per_trial", "complete"],
    "CoreParams": ["sessions", "storages", "loads", "trials", "open_trials", "trial_seconds",
                   "warmup_seconds", "hops", "mailbox_capacity", "shard_count", "headline",
                   "quick", "versions"],
    "HeadlineChoice": ["sessions", "storage"],
    "CoreResults": ["throughput_msgs_per_s", "latency_us", "headline", "ratio_to_asyncio",
                    "scenarios", "metadata_log"],
    "CoreScenario": ["sessions", "storage", "session_setup_s", "interlink", "baseline",
                     "ratio_to_baseline", "asyncio_peer", "ratio_to_asyncio", "loads",
                     "storage_pressure", "cpu_us_per_event"],
    "LoadPoint": ["load_fraction", "offered_msgs_per_s", "interlink", "baseline",
                  "asyncio_peer"],
    "CpuPerEvent": ["event_loop", "other_threads", "writer_processes", "total"],
    "StoragePressure": ["max_log_buffered", "log_buffer_limit", "max_directory_pending",
                        "max_metadata_pending", "store_pending_limit", "samples"],
    "LogCapacity": ["storage", "entries_per_s", "us_per_entry", "interlink_max_msgs_per_s",
                    "share_at_max", "throttled"],
    "ScaleParams": ["actor_counts", "registered_sessions", "write_batch", "lookups", "hot_keys",
                    "idle_timeout_s", "isolated_processes", "quick", "versions"],
    "ScaleResults": ["throughput_msgs_per_s", "latency_us", "actors", "directory"],
    "ActorScale": ["actors", "interlink", "baseline", "ratio_to_baseline", "memory_ratio"],
    "ActorMemory": ["actors", "activation_s", "activations_per_s", "latency_us",
                    "rss_before_bytes", "rss_active_bytes", "rss_passivated_bytes",
                    "rss_trimmed_bytes", "rss_per_actor_bytes", "anon_rss_per_actor_bytes",
                    "blocks_per_actor", "passivated", "returned_fraction",
                    "blocks_returned_fraction", "trimmed_returned_fraction"],
    "DirectoryScale": ["registered_sessions", "load_s", "sessions_written_per_s", "lookups",
                       "baseline_dict_gets_per_s"],
    "LookupRate": ["backend", "operation", "keys", "lookups_per_s", "ns_per_lookup"],
    "PeersParams": ["sessions", "load_fraction", "trials", "open_trials", "trial_seconds",
                    "warmup_seconds", "max_threads", "thread_start_timeout_s",
                    "headline_sessions", "workload", "isolated_processes", "quick", "versions"],
    "PeersResults": ["throughput_msgs_per_s", "latency_us", "headline_sessions", "scenarios"],
    "PeersScenario": ["sessions", "load_fraction", "offered_msgs_per_s", "implementations"],
    "PeerRun": ["implementation", "hops", "status", "detail", "start_s",
                "rss_per_session_bytes", "maximum", "at_load", "ratio_to_interlink"],
}


def struct_fields(kind: Any) -> dict[str, list[str]]:
    """Every struct reachable from ``kind``, by class name, with its field names."""
    found: dict[str, list[str]] = {}

    def visit(info: msgspec.inspect.Type) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            name = info.cls.__name__
            if name in found:
                return
            found[name] = [field.name for field in info.fields]
            for field in info.fields:
                visit(field.type)
        elif isinstance(info, msgspec.inspect.UnionType):
            for member in info.types:
                visit(member)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            visit(info.item_type if isinstance(info, msgspec.inspect.ListType)
                  else info.value_type)

    visit(msgspec.inspect.type_info(kind))
    return found


@pytest.mark.parametrize("report_type", [CoreReport, ScaleReport, PeersReport])
def test_the_result_schema_matches_the_golden_field_lists(report_type: Any) -> None:
    fields = struct_fields(report_type)
    assert fields == {name: GOLDEN_FIELDS[name] for name in fields}


def check_report(raw: bytes, report_type: Any, suite: str) -> dict[str, Any]:
    """``raw`` has the documented shape (typed, no extra keys); return it as plain JSON."""
    data: dict[str, Any] = json.loads(raw)
    typed = msgspec.json.decode(raw, type=report_type, strict=True)
    assert json.loads(msgspec.json.encode(typed)) == data  # no key the schema lacks
    assert list(data) == GOLDEN_FIELDS["Report"]
    assert data["suite"] == suite
    assert list(data["machine"]) == GOLDEN_FIELDS["Machine"]
    assert isinstance(data["machine"]["cores"], int) and data["machine"]["cores"] >= 1
    results, baseline = data["results"], data["baseline"]
    for side in (results, baseline):
        assert isinstance(side["throughput_msgs_per_s"], float)
        assert side["throughput_msgs_per_s"] > 0
        assert {"p50", "p99", "p999"} <= set(side["latency_us"])
        assert side["latency_us"]["p50"] <= side["latency_us"]["p99"] <= \
            side["latency_us"]["p999"]
    assert {"name", "throughput_msgs_per_s"} <= set(baseline)
    assert data["ratio_to_baseline"] == pytest.approx(
        results["throughput_msgs_per_s"] / baseline["throughput_msgs_per_s"], rel=1e-12)
    return data


# -- the suites at a tiny size ----------------------------------------------------------
def test_core_runs_and_reports_in_the_documented_shape(tmp_path: Path) -> None:
    config = CoreConfig(sessions=(1, 3), storages=("memory", "lmdb"), loads=(0.5,),
                        plan=TINY_PLAN, headline_sessions=3, headline_storage="lmdb",
                        log_entries=200, cpu_trial_s=0.01)
    report = run_core(config, Progress.silent())
    data = check_report(encode_json(report), CoreReport, "core")
    scenarios = data["results"]["scenarios"]
    assert [(s["sessions"], s["storage"]) for s in scenarios] == \
        [(1, "memory"), (3, "memory"), (1, "lmdb"), (3, "lmdb")]
    headline = scenarios[-1]
    assert data["results"]["throughput_msgs_per_s"] == \
        headline["interlink"]["throughput_msgs_per_s"]
    assert data["baseline"]["throughput_msgs_per_s"] == \
        headline["baseline"]["throughput_msgs_per_s"]
    for scenario in scenarios:
        assert scenario["interlink"]["complete"] and scenario["baseline"]["complete"]
        [load] = scenario["loads"]
        assert load["interlink"]["offered_msgs_per_s"] == \
            load["baseline"]["offered_msgs_per_s"] == pytest.approx(
                0.5 * scenario["interlink"]["throughput_msgs_per_s"])
        assert scenario["ratio_to_baseline"] == pytest.approx(
            scenario["interlink"]["throughput_msgs_per_s"]
            / scenario["baseline"]["throughput_msgs_per_s"])
        assert scenario["asyncio_peer"]["complete"]
        assert load["asyncio_peer"]["offered_msgs_per_s"] == load["interlink"]["offered_msgs_per_s"]
        assert scenario["ratio_to_asyncio"] == pytest.approx(
            scenario["interlink"]["throughput_msgs_per_s"]
            / scenario["asyncio_peer"]["throughput_msgs_per_s"])
        cpu = scenario["cpu_us_per_event"]
        assert cpu["total"] == pytest.approx(
            cpu["event_loop"] + cpu["other_threads"] + cpu["writer_processes"], abs=0.05)
        assert min(cpu.values()) >= 0
    assert data["results"]["ratio_to_asyncio"] == headline["ratio_to_asyncio"]
    assert [c["storage"] for c in data["results"]["metadata_log"]] == ["memory", "lmdb"]
    assert "headline (3 sessions, lmdb)" in core_table(report)
    plot_core(report, tmp_path / "core.png")
    assert (tmp_path / "core.png").read_bytes().startswith(b"\x89PNG")


def test_scale_runs_and_reports_in_the_documented_shape(tmp_path: Path) -> None:
    config = ScaleConfig(actor_counts=(20, 50), registered_sessions=200, write_batch=64,
                         lookups=300, hot_keys=10, idle_timeout_s=0.05, isolate=False)
    report = run_scale(config, Progress.silent())
    data = check_report(encode_json(report), ScaleReport, "scale")
    actors = data["results"]["actors"]
    assert [entry["actors"] for entry in actors] == [20, 50]
    for entry in actors:
        assert entry["interlink"]["passivated"] == entry["actors"]
        assert entry["baseline"]["passivated"] == entry["actors"]
    directory = data["results"]["directory"]
    assert directory["registered_sessions"] == 200
    assert {(r["backend"], r["operation"], r["keys"]) for r in directory["lookups"]} == {
        (backend, operation, keys) for backend in ("lmdb", "memory")
        for operation, keys in (("get_session", "uniform"), ("get_session", "hot"),
                                ("find_session", "uniform"), ("find_session", "hot"),
                                ("get_domain_route", "hot"))}
    assert "directory: 200 sessions" in scale_table(report)
    plot_scale(report, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").read_bytes().startswith(b"\x89PNG")


def test_scale_measures_actors_in_a_fresh_process() -> None:
    memory = run_in_fresh_process(True, measure_bare_actors, 10, None)
    assert memory.actors == memory.passivated == 10
    assert memory.activations_per_s > 0


def test_peers_run_side_by_side_and_a_thread_cap_is_reported(tmp_path: Path) -> None:
    config = PeersConfig(sessions=(1, 3), plan=TINY_PLAN, load_fraction=0.5,
                         headline_sessions=3, max_threads=3, thread_start_timeout_s=5.0,
                         isolate=False)
    report = run_peers(config, Progress.silent())
    data = check_report(encode_json(report), PeersReport, "peers")
    by_size = {s["sessions"]: {r["implementation"]: r for r in s["implementations"]}
               for s in data["results"]["scenarios"]}
    names = ["interlink", "trio-baseline", "trio-tasks", "asyncio-queues", "pykka-threads"]
    assert all(list(runs) == names for runs in by_size.values())
    assert all(run["status"] == "ok" for run in by_size[1].values())
    capped = by_size[3]["pykka-threads"]
    assert capped["status"] == "skipped" and "cap is 3" in capped["detail"]
    assert capped["maximum"] is None
    assert by_size[3]["interlink"]["ratio_to_interlink"] == 1.0
    assert data["results"]["throughput_msgs_per_s"] == \
        by_size[3]["interlink"]["maximum"]["throughput_msgs_per_s"]
    assert "pykka-threads: needs 4 threads; the cap is 3" in peers_table(report)
    plot_peers(report, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").read_bytes().startswith(b"\x89PNG")


# -- the load generator ---------------------------------------------------------------------
class FakeClock:
    """A clock that only moves when told to; waiting jumps straight to the deadline."""

    def __init__(self) -> None:
        self.time = 100.0

    def now(self) -> float:
        return self.time

    async def wait_until(self, deadline: float) -> None:
        self.time = max(self.time, deadline)
        await trio.lowlevel.checkpoint()


async def test_open_loop_latency_counts_from_the_scheduled_send_time() -> None:
    """A sender stalled 10 ms on event 1 makes events 2-4 late: their latency shows it."""
    clock = FakeClock()
    timeline = Timeline(5, now=clock.now)

    async def submit(seq: int) -> None:
        if seq == 1:
            clock.time += 0.010  # e.g. a full mailbox held the sender up
        clock.time += 0.001  # every event takes 1 ms to deliver
        timeline.complete(timeline.event_id(seq))

    await drive_open_loop(submit, timeline, clock, rate=1000.0)
    start = 100.0 + START_LEAD_S
    assert list(timeline.scheduled) == pytest.approx([start + i * 0.001 for i in range(5)])
    assert timeline.latencies() == pytest.approx([0.001, 0.011, 0.011, 0.011, 0.011])
    assert timeline.done


async def test_closed_loop_schedules_each_event_when_the_sender_gets_to_it() -> None:
    clock = FakeClock()
    timeline = Timeline(3, now=clock.now)

    async def submit(seq: int) -> None:
        clock.time += 0.002
        timeline.complete(timeline.event_id(seq))

    await drive_closed_loop(submit, timeline, clock)
    assert list(timeline.scheduled) == pytest.approx([100.0, 100.002, 100.004])
    assert timeline.latencies() == pytest.approx([0.002] * 3)
    assert timeline.throughput() == pytest.approx(3 / 0.006)


def test_open_loop_times_are_evenly_spaced_and_need_a_positive_rate() -> None:
    assert open_loop_times(3, 4.0, 10.0) == [10.0, 10.25, 10.5]
    with pytest.raises(ValueError, match="positive"):
        open_loop_times(3, 0.0, 10.0)


def test_a_timeline_ignores_foreign_and_repeated_completions() -> None:
    finished: list[bool] = []
    ids = EventIds(start=1000)
    timeline = Timeline(2, first_id=ids.take(2), now=lambda: 5.0,
                        on_done=lambda: finished.append(True))
    assert (timeline.event_id(0), ids.take(1)) == ("1000", 1002)
    timeline.scheduled[0] = timeline.scheduled[1] = 4.0
    for event_id in ("999", "1002", "1000", "1000"):
        timeline.complete(event_id)
    assert (timeline.completed_count, finished) == (1, [])
    timeline.complete("1001")
    assert (timeline.completed_count, finished, timeline.latencies()) == (2, [True], [1.0, 1.0])


# -- statistics and readings ------------------------------------------------------------------
def test_percentiles_come_from_an_hdr_histogram_in_microseconds() -> None:
    histogram = LatencyHistogram()
    histogram.record_seconds([0.001] * 990 + [0.010] * 9 + [0.5])
    summary = histogram.summary()
    assert (summary.samples, summary.p50) == (1000, 1000.0)
    assert summary.max == pytest.approx(500_000, rel=1e-3)
    assert summary.p99 == pytest.approx(1000, rel=1e-3)
    assert summary.p999 == pytest.approx(10_000, rel=1e-3)
    histogram.record_seconds([-1.0, 1e6])
    assert histogram.clamped == 2


def test_a_summary_takes_the_median_trial_and_merges_latencies() -> None:
    timelines = []
    for seconds in (0.001, 0.002, 0.004):
        timeline = Timeline(10, now=lambda: 0.0)
        for seq in range(10):
            timeline.scheduled[seq] = 10.0 + seq * seconds
            timeline.completed[seq] = timeline.scheduled[seq] + seconds
        timelines.append(timeline)
    run = summarize(timelines, mode="max")
    assert run.throughput_trials == pytest.approx([1000, 500, 250])
    assert run.throughput_msgs_per_s == pytest.approx(500)
    assert run.spread_pct == pytest.approx(150)
    assert run.latency_us.samples == 30 and run.complete
    assert spread_pct([3.0]) == 0.0


def test_resident_memory_is_read_from_proc_status() -> None:
    reading = parse_status("Name:\tpython\nVmRSS:\t  2048 kB\nRssAnon:\t 1024 kB\n")
    assert (reading.vm_rss, reading.rss_anon) == (2 * 1024 * 1024, 1024 * 1024)
    with pytest.raises(ValueError, match="VmRSS"):
        parse_status("Name:\tpython\n")
    assert read_rss().vm_rss > 0


# -- the command line -----------------------------------------------------------------------
def test_help_names_every_suite_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("core", "scale", "peers", "--quick", "--json", "--plot"):
        assert word in out


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required: SUITE"),
    (["speed"], "invalid choice: 'speed'"),
    (["core", "--plot", "chart.jpg"], "must end in .png"),
    (["core", "--json", "/nonexistent-dir/core.json"], "does not exist"),
    (["core", "--trials", "3"], "unrecognized arguments: --trials 3"),
])
def test_bad_arguments_are_clear_errors_before_anything_runs(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: interlink bench" in err and "Traceback" not in err


def test_a_directory_is_not_an_output_file(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def _cpu_split() -> tuple[float, float, float, float, float]:
    """Spin the main thread, a thread and a child; their CPU as the readings split it.

    Runs in a fresh process: threads that earlier tests left behind and that end
    meanwhile would take their CPU out of the "other threads" sum."""
    import subprocess
    import sys
    import threading

    from bench._cpu import per_event, read_cpu

    def spin(seconds: float) -> None:
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    before = read_cpu()
    spin(0.1)
    spun, release = threading.Event(), threading.Event()

    def work() -> None:
        spin(0.1)
        spun.set()
        release.wait(10)  # a thread's CPU is readable only while it lives

    worker = threading.Thread(target=work)
    worker.start()
    spun.wait(10)
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nend=time.process_time()+0.3\n"
                              "while time.process_time()<end: pass\ninput()"],
                             stdin=subprocess.PIPE)
    try:
        while read_cpu().children_s - before.children_s < 0.2:
            time.sleep(0.01)  # a child's CPU shows once it has spent it: poll, bounded below
        after = read_cpu()
    finally:
        child.communicate(b"\n", timeout=10)
        release.set()
        worker.join()
    cost = per_event(before, after, 1000)
    return (after.main_thread_s - before.main_thread_s,
            after.other_threads_s - before.other_threads_s,
            cost.writer_processes, cost.total,
            cost.event_loop + cost.other_threads + cost.writer_processes)


def test_cpu_readings_split_the_main_thread_other_threads_and_child_processes() -> None:
    main_s, threads_s, children_us, total, parts = run_in_fresh_process(True, _cpu_split)
    assert main_s >= 0.05
    assert threads_s >= 0.05
    assert children_us >= 200  # >= 0.2 s over 1,000 events
    assert total == pytest.approx(parts, abs=0.05)
