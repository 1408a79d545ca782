"""Charts of a suite's results, drawn with matplotlib's Agg backend (no display needed).

- core: latency (p50, p99) against offered load, per session count,
  one panel per storage, with the baseline's p99 dashed;
- scale: memory per actor and total resident memory against actor count;
- peers: maximum throughput and p99 at the common load, per implementation;
- e2e: maximum throughput of Interlink and of the raw platforms per scenario, and
  Interlink's p50/p99 against offered load.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), so
plotting never touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._core import CoreReport
from ._e2e import E2eReport, PathResult
from ._peers import PeersReport
from ._scale import ScaleReport

_KB = 1024
_MB = 1024 * 1024


def _save(figure: Figure, path: Path, title: str, machine: str) -> None:
    figure.suptitle(f"{title}\n{machine}", fontsize=10)
    figure.tight_layout()
    FigureCanvasAgg(figure)  # attach the Agg canvas: savefig renders with it
    figure.savefig(path, format="png", dpi=110)


def _panels(figure: Figure, count: int) -> list[Axes]:
    axes = figure.subplots(1, count, squeeze=False)
    return list(axes[0])


def plot_core(report: CoreReport, path: Path) -> None:
    storages = list(dict.fromkeys(s.storage for s in report.results.scenarios))
    figure = Figure(figsize=(6 * len(storages), 4.8))
    for axis, storage in zip(_panels(figure, len(storages)), storages, strict=True):
        for scenario in (s for s in report.results.scenarios if s.storage == storage):
            loads = [p.load_fraction * 100 for p in scenario.loads]
            label = f"{scenario.sessions:,} session{'s' if scenario.sessions != 1 else ''}"
            line = axis.plot(loads, [p.interlink.latency_us.p99 for p in scenario.loads],
                             marker="o", label=f"{label} p99")[0]
            color = line.get_color()
            axis.plot(loads, [p.interlink.latency_us.p50 for p in scenario.loads],
                      marker=".", linestyle=":", color=color, label=f"{label} p50")
            axis.plot(loads, [p.baseline.latency_us.p99 for p in scenario.loads],
                      marker="x", linestyle="--", color=color, alpha=0.5,
                      label=f"{label} baseline p99")
        axis.axhline(2000, color="grey", linewidth=0.8, linestyle=":")
        axis.set_yscale("log")
        axis.set_xlabel("offered load (% of Interlink's maximum)")
        axis.set_ylabel("latency from scheduled send (us)")
        axis.set_title(f"storage: {storage}")
        axis.legend(fontsize=6, ncol=2)
        axis.grid(True, which="both", alpha=0.3)
    _save(figure, path, "core: latency against offered load (dotted line: 2 ms)",
          report.machine.cpu)


def plot_scale(report: ScaleReport, path: Path) -> None:
    entries = report.results.actors
    counts = [entry.actors for entry in entries]
    figure = Figure(figsize=(12, 4.8))
    per_actor, total = _panels(figure, 2)
    per_actor.plot(counts, [e.interlink.rss_per_actor_bytes / _KB for e in entries],
                   marker="o", label="Interlink session actor (VmRSS)")
    per_actor.plot(counts, [e.interlink.anon_rss_per_actor_bytes / _KB for e in entries],
                   marker=".", linestyle=":", label="Interlink session actor (RssAnon)")
    per_actor.plot(counts, [e.baseline.rss_per_actor_bytes / _KB for e in entries],
                   marker="x", linestyle="--", label="bare trio task + channel")
    per_actor.axhline(8, color="grey", linewidth=0.8, linestyle=":")
    per_actor.set_ylabel("resident memory per actor (KB)")
    for label, memory in (("Interlink", [e.interlink for e in entries]),
                          ("baseline", [e.baseline for e in entries])):
        growth = [(m.rss_active_bytes - m.rss_before_bytes) / _MB for m in memory]
        kept = [(m.rss_passivated_bytes - m.rss_before_bytes) / _MB for m in memory]
        line = total.plot(counts, growth, marker="o", label=f"{label}: active")[0]
        total.plot(counts, kept, marker="v", linestyle="--", color=line.get_color(),
                   label=f"{label}: after passivation")
    total.set_ylabel("resident memory growth (MB)")
    for axis in (per_actor, total):
        axis.set_xscale("log")
        axis.set_xlabel("active actors")
        axis.legend(fontsize=7)
        axis.grid(True, which="both", alpha=0.3)
    _save(figure, path, "scale: memory against actor count (dotted line: 8 KB)",
          report.machine.cpu)


def _bars(axis: Axes, names: Sequence[str], sizes: Sequence[int],
          values: dict[tuple[str, int], float]) -> None:
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        positions = [j + i * width for j in range(len(sizes))]
        axis.bar(positions, [values.get((name, size), 0.0) for size in sizes], width,
                 label=name)
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))],
                    [f"{size:,} session{'s' if size != 1 else ''}" for size in sizes])
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    axis.grid(True, axis="y", which="both", alpha=0.3)


def plot_peers(report: PeersReport, path: Path) -> None:
    scenarios = report.results.scenarios
    sizes = [scenario.sessions for scenario in scenarios]
    names = list(dict.fromkeys(run.implementation for s in scenarios
                               for run in s.implementations))
    throughput: dict[tuple[str, int], float] = {}
    latency: dict[tuple[str, int], float] = {}
    for scenario in scenarios:
        for run in scenario.implementations:
            if run.maximum is not None:
                throughput[run.implementation, scenario.sessions] = \
                    run.maximum.throughput_msgs_per_s
            if run.at_load is not None:
                latency[run.implementation, scenario.sessions] = run.at_load.latency_us.p99
    figure = Figure(figsize=(12, 4.8))
    left, right = _panels(figure, 2)
    _bars(left, names, sizes, throughput)
    left.set_ylabel("maximum throughput (events/s)")
    _bars(right, names, sizes, latency)
    right.set_ylabel(f"p99 at {report.params.load_fraction:.0%} of Interlink's max (us)")
    _save(figure, path, "peers: the same workload on each runtime", report.machine.cpu)


def plot_e2e(report: E2eReport, path: Path) -> None:
    scenarios = report.results.scenarios
    labels = [f"{'S>X' if s.direction == 'slack_to_xmpp' else 'X>S'} K={s.conversations:,}"
              f"\n{s.pacing}" + (f" {s.workspaces} ws" if s.workspaces > 1 else "")
              for s in scenarios]
    figure = Figure(figsize=(max(8, 1.6 * len(scenarios)) + 6, 4.8))
    left, right = _panels(figure, 2)
    width = 0.27
    for i, (name, attribute) in enumerate((("interlink", "interlink"),
                                           ("raw sandbox", "raw_sandbox"),
                                           ("raw prosody", "raw_prosody"))):
        values = []
        for scenario in scenarios:
            result: PathResult | None = getattr(scenario, attribute)
            maximum = result.maximum if result is not None else None
            values.append(maximum.throughput_msgs_per_s if maximum is not None else 0.0)
        left.bar([j + i * width for j in range(len(scenarios))], values, width, label=name)
    left.set_xticks([j + width for j in range(len(scenarios))], labels, fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("maximum (messages/s)")
    left.legend(fontsize=7)
    left.grid(True, axis="y", which="both", alpha=0.3)
    for scenario, label in zip(scenarios, labels, strict=True):
        points = [p for p in scenario.latency_us if p.offered_msgs_per_s is not None]
        if not points:
            continue
        loads = [float(p.load.rstrip("%")) for p in points]
        line = right.plot(loads, [p.p99 / 1000 for p in points], marker="o",
                          label=f"{label.replace(chr(10), ' ')} p99")[0]
        right.plot(loads, [p.p50 / 1000 for p in points], marker=".", linestyle=":",
                   color=line.get_color())
    right.set_yscale("log")
    right.set_xlabel("offered load (% of Interlink's maximum)")
    right.set_ylabel("latency from scheduled send (ms; dotted: p50)")
    right.legend(fontsize=6)
    right.grid(True, which="both", alpha=0.3)
    _save(figure, path, "e2e: Slack <-> XMPP through interlink run vs the raw platforms",
          report.machine.cpu)
