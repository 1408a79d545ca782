"""``python -m bench SUITE`` (also ``interlink bench SUITE``): run a suite, print, save.

The human table goes to stdout, progress to stderr; ``--json`` writes the
result in the shape documented in ``bench/README.md`` and ``--plot`` draws
the suite's chart as a PNG. Output paths are checked before the (long) run
starts, so a typo fails at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._progress import Progress

SUITES = ("core", "scale", "peers", "e2e")
DEFAULT_PROG = "interlink bench"

DESCRIPTION = """\
Run one of Interlink's benchmark suites. Every result carries a baseline
measured in the same run (a bare trio pipeline or task with the same hop
structure) and the ratio to it; the absolute numbers depend on the machine.

suites:
  core   events/s through the whole engine path and latency percentiles at the
         maximum and at 25/50/75 % offered load, for 1, 100 and 10,000 sessions
         on memory and LMDB storage
  scale  1k/10k/100k/1M active session actors (activation time, memory per actor,
         memory returned after passivation) and a 2M-session directory
         (lookups per second on LMDB and in memory)
  peers  the core workload on Interlink, plain trio tasks, asyncio queues and
         pykka threads, side by side
  e2e    a Slack user <-> an XMPP user through `interlink run`, the Slack sandbox and
         Prosody (separate processes), K = 1/100/1,000 conversations, Slack pacing off
         and modelled, and K = 1,000 over 10 workspaces each offered 1 msg/s, against
         the raw platforms in the same run (needs prosody)
"""

EPILOG = """\
A full run takes minutes (core ~7, scale ~6, peers ~4, e2e ~18 on 2 cores); --quick
takes under 30 s (e2e: under 60 s) and gives indicative numbers only. See bench/README.md for
the JSON shape and how to read the results.
"""


def build_parser(prog: str = DEFAULT_PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=SUITES, metavar="SUITE",
                        help="which suite to run: " + ", ".join(SUITES))
    parser.add_argument("--quick", action="store_true",
                        help="a short run (under 30 s on 2 cores): fewer sizes, trials and "
                             "events; indicative numbers only")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write the result as JSON to FILE")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw the suite's chart into FILE.png (core: latency against "
                             "offered load; scale: memory against actor count; peers: "
                             "throughput and latency per runtime; e2e: throughput against the "
                             "raw platforms and latency against offered load)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr")
    return parser


def _check_output(parser: argparse.ArgumentParser, option: str, path: Path | None,
                  suffix: str | None = None) -> None:
    if path is None:
        return
    if suffix is not None and path.suffix.lower() != suffix:
        parser.error(f"{option} {path}: the file name must end in {suffix}")
    if path.is_dir():
        parser.error(f"{option} {path}: is a directory; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        parser.error(f"{option} {path}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        parser.error(f"{option} {path}: directory {folder} is not writable")


def _run(suite: str, quick: bool, progress: Progress) -> tuple[Any, str, Callable[[Path], None]]:
    """Run ``suite``: its report, its table, and a function that plots it."""
    # Imported here: the suites pull in the engine and pykka, the plots matplotlib.
    if suite == "core":
        from ._core import CoreConfig, core_table, run_core

        core = run_core(CoreConfig.quick_run() if quick else CoreConfig.full(), progress)

        def plot_core(path: Path) -> None:
            from ._plot import plot_core

            plot_core(core, path)

        return core, core_table(core), plot_core
    if suite == "scale":
        from ._scale import ScaleConfig, run_scale, scale_table

        scale = run_scale(ScaleConfig.quick_run() if quick else ScaleConfig.full(), progress)

        def plot_scale(path: Path) -> None:
            from ._plot import plot_scale

            plot_scale(scale, path)

        return scale, scale_table(scale), plot_scale
    if suite == "e2e":
        from ._e2e import E2eConfig, e2e_table, run_e2e

        e2e = run_e2e(E2eConfig.quick_run() if quick else E2eConfig.full(), progress)

        def plot_e2e(path: Path) -> None:
            from ._plot import plot_e2e

            plot_e2e(e2e, path)

        return e2e, e2e_table(e2e), plot_e2e
    from ._peers import PeersConfig, peers_table, run_peers

    peers = run_peers(PeersConfig.quick_run() if quick else PeersConfig.full(), progress)

    def plot_peers(path: Path) -> None:
        from ._plot import plot_peers

        plot_peers(peers, path)

    return peers, peers_table(peers), plot_peers


def main(argv: Sequence[str] | None = None, *, prog: str = DEFAULT_PROG) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit status.

    0: done; 1: an output file could not be written; 2: a usage error (the
    message is on stderr); 130: interrupted.
    """
    from ._report import write_json

    parser = build_parser(prog)
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _check_output(parser, "--json", args.json)
        _check_output(parser, "--plot", args.plot, ".png")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    progress = Progress.silent(args.suite) if args.quiet else Progress.to_stderr(args.suite)
    try:
        report, summary, plot = _run(args.suite, args.quick, progress)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(summary)
    try:
        if args.json is not None:
            write_json(report, args.json)
            progress.say(f"results written to {args.json}")
        if args.plot is not None:
            plot(args.plot)
            progress.say(f"chart drawn in {args.plot}")
    except OSError as exc:
        print(f"{prog}: cannot write the output: {exc}", file=sys.stderr)
        return 1
    return 0
