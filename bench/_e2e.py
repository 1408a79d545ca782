"""The e2e suite: messages from a Slack user to an XMPP user and back, through Interlink
running as ``interlink run`` beside the Slack sandbox and Prosody, each its own process.

For each K (conversations) the suite starts **Prosody** (free ports; K accounts ``x<i>``
and K partners ``y<i>`` written into its data directory) and logs every account in with
a lean XMPP client (:mod:`._e2e_net`). Then, for each **block** of that K (a pacing and a
number of workspaces, :class:`Block`): each **pacing** in one workspace (``off``: the
sandbox answers every call and Interlink's posting keys are raised out of the way;
``slack``: Slack's posting limits in the seed's ``[rate_limits]`` and kept by the
driver's own posts, Interlink's posting keys at their defaults; in both, every Web API
tier raised on both sides so conversation set-up is out of the way; see
:mod:`._e2e_seed`), and, at ``spread_conversations``, issue #22 item 4's **many
conversations**: ``slack`` pacing over ``spread_workspaces`` workspaces, each conversation
offered ``offered_per_conversation`` messages/s (open loop) instead of a closed-loop
maximum:

1. the **sandbox** starts (``interlink slack-sandbox``, ``--no-rate-limits`` for
   ``off``) from a generated seed (:mod:`._e2e_seed`): W workspaces, K users, each
   alone in a private channel with Interlink's bot and the bench's observer bot;
2. **raw sandbox baseline**, per direction, with nothing in between: Slack -> XMPP is a
   person posting (``chat.postMessage``, user token) and the event arriving on Interlink's
   app's Socket Mode connection, held by the bench; XMPP -> Slack is Interlink's bot
   posting (as the engine does, with a username) and the event arriving at the observer.
   The same events are emitted as in the engine's run (to both apps);
3. **Interlink** starts (``interlink run`` with a generated config, its directory
   pre-seeded with each pair's session and channel); a probe each way waits until it
   carries messages, then a **warm-up** sends one message in every conversation (first
   use: channel membership checks, caches), bounded by ``setup_timeout_s``;
4. per direction: a **closed-loop maximum** (a window of messages in flight, over
   ``lanes`` senders, each owning whole conversations so each conversation's messages
   leave in order; many conversations: open loop at the offered rate, what arrives is the
   maximum), then **open-loop** offered loads at 25/50/75 % of it (message ``g``
   scheduled at ``start + g / rate``, latency from that time: no coordinated omission).

Once per K, the **raw Prosody baseline**: ``y<i>`` -> ``x<i>`` (for Slack -> XMPP) and
``x<i>`` -> ``y<i>`` (for XMPP -> Slack) client to client, same K, same driver (and
offered the same open-loop rate for the many-conversations block).

Every message's body carries its run's tag, conversation and sequence number; every run
counts lost, duplicated and reordered messages (:mod:`._e2e_check`). All times are
``time.perf_counter`` in this process: sends, Socket Mode events and XMPP stanzas are
timestamped on one clock. CPU per message is read from ``/proc`` for each process
(engine, its LMDB writer processes, sandbox, Prosody, the driver) around the maximum's
trials. ``ratio_to_baseline`` is Interlink's maximum over the slower raw platform's, in
the same direction, K, pacing and workspaces: the most any relay between them could carry.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import msgspec
import trio

from adapters.slack import WebApiSettings
from adapters.xmpp import ProsodyInstance, ProsodySettings, run_prosody

from ._cpu import read_cpu
from ._e2e_check import Integrity, SequenceCheck, message_text, parse_text
from ._e2e_net import NetError, PostPacer, SlackPoster, SocketModeListener, XmppUser
from ._e2e_procs import ProcessError, Spawned, children_of, process_cpu_s, spawned
from ._e2e_seed import (
    COMPONENT_SECRET,
    INTERLINK_APP_TOKEN,
    OBSERVER_APP_TOKEN,
    SETUP_TIER_PER_MINUTE,
    SLACK_CHANNEL_BURST,
    SLACK_CHANNEL_PER_S,
    SLACK_DOMAIN,
    SLACK_WORKSPACE_BURST,
    SLACK_WORKSPACE_PER_MINUTE,
    XMPP_DOMAIN,
    Layout,
    Pair,
    engine_config,
    preseed_sessions,
    sandbox_seed,
    write_prosody_accounts,
    write_secrets,
)
from ._histogram import LatencyUs
from ._load import START_LEAD_S, Timeline, TrioLoadClock
from ._machine import package_versions
from ._progress import Progress
from ._report import Baseline, Report, make_report, ratio
from ._table import micros, rate, table, times
from ._trials import Run, summarize

SUITE = "e2e"
Direction = Literal["slack_to_xmpp", "xmpp_to_slack"]
Pacing = Literal["off", "slack"]
PathName = Literal["interlink", "raw_sandbox", "raw_prosody"]
Status = Literal["ok", "setup_incomplete", "failed"]
DIRECTIONS: tuple[Direction, ...] = ("slack_to_xmpp", "xmpp_to_slack")
PACINGS: tuple[Pacing, ...] = ("off", "slack")
SLACK_MODEL = (
    f"chat.postMessage {SLACK_CHANNEL_PER_S:g}/s per channel with a burst of "
    f"{SLACK_CHANNEL_BURST}, {SLACK_WORKSPACE_PER_MINUTE:g}/min per app (or person) per "
    f"workspace with a burst of {SLACK_WORKSPACE_BURST} (Slack: 'several hundred messages "
    "per minute'), in the sandbox (the seed's [rate_limits]) and kept by the driver's own "
    "posts; Interlink's posting keys at their defaults. Set-up out of the way in both "
    f"pacings: Web API tiers 1-4 at {SETUP_TIER_PER_MINUTE:,.0f}/min in the sandbox and in "
    "Interlink's [adapters.pacing] tier_per_minute (Slack: 1+/20+/50+/100+)")
#: the e2e suite's JSON: 3 added ``workspaces`` and ``offered_per_conversation_msgs_per_s``
#: to each scenario (a scenario is now one per direction, K, pacing and workspaces, and
#: its maximum may be an open-loop run)
E2E_SCHEMA_VERSION = 3
#: seconds to wait for the whole suite's processes to stop
STOP_TIMEOUT_S = 15.0
#: the driver's own posts keep this fraction of the modelled rates: requests reach the
#: sandbox with some jitter, and a 429 would cost a sender a whole second (Retry-After)
PACER_MARGIN = 0.98


class Block(msgspec.Struct, frozen=True):
    """What one sandbox and one ``interlink run`` measure for a K: a pacing, over
    ``workspaces``, and either closed-loop maxima (``offered_per_conversation`` None) or
    an open loop offering each conversation that many messages/s."""

    pacing: Pacing
    workspaces: int = 1
    offered_per_conversation: float | None = None


class E2eConfig(msgspec.Struct, frozen=True, kw_only=True):
    conversations: tuple[int, ...]
    pacings: tuple[Pacing, ...] = PACINGS
    directions: tuple[Direction, ...] = DIRECTIONS
    #: offered loads, as fractions of Interlink's measured maximum
    loads: tuple[float, ...] = (0.25, 0.5, 0.75)
    #: timed closed-loop runs at maximum (after one calibrating warm-up run)
    trials: int = 3
    #: target length of one run
    trial_seconds: float = 3.0
    min_events: int = 10
    max_events: int = 20_000
    #: closed loop: messages in flight at most, and in one conversation
    window: int = 64
    per_conversation: int = 8
    #: concurrent senders (each owns whole conversations)
    lanes: int = 8
    #: the engine's probe and warm-up (one message per conversation) must finish in this
    setup_timeout_s: float = 90.0
    #: after the last send of a run, wait at most this long for arrivals
    drain_timeout_s: float = 20.0
    start_timeout_s: float = 60.0
    #: issue #22 item 4, "many conversations": this K over ``spread_workspaces``
    #: workspaces, Slack pacing, each conversation offered ``offered_per_conversation``
    #: messages/s (open loop); 0: not run
    spread_conversations: int = 1000
    spread_workspaces: int = 10
    offered_per_conversation: float = 1.0
    #: Slack pacing: closed-loop trials of a path at the modelled limit hold at least this
    #: many of the limit's bursts (:func:`paced_trials`; 0: no such floor)
    paced_trial_bursts: int = 4
    quick: bool = False

    @classmethod
    def full(cls) -> E2eConfig:
        """K = 1, 100, 1,000, both pacings, 25/50/75 %, and K = 1,000 over 10 workspaces:
        about 18 minutes on 2 cores."""
        return cls(conversations=(1, 100, 1000), trials=2, trial_seconds=2.0,
                   setup_timeout_s=60.0)

    @classmethod
    def quick_run(cls) -> E2eConfig:
        """One small K, one offered load (50 %), one short trial, and the many-conversations
        block at K = 20 over the same 10 workspaces: under a minute (so paced trials are
        not held to several bursts: indicative numbers only)."""
        return cls(conversations=(4,), loads=(0.5,), trials=1, trial_seconds=0.8,
                   min_events=8, setup_timeout_s=20.0, drain_timeout_s=15.0,
                   spread_conversations=20, paced_trial_bursts=0, quick=True)

    def sizes(self) -> list[int]:
        """Every K, in order: ``conversations``, then ``spread_conversations`` if new."""
        sizes = list(self.conversations)
        if self.spread_conversations and self.spread_conversations not in sizes:
            sizes.append(self.spread_conversations)
        return sizes

    def blocks(self, k: int) -> list[Block]:
        """What is measured at ``k``: each pacing in one workspace, and the spread."""
        blocks = [Block(pacing) for pacing in self.pacings] if k in self.conversations else []
        if k == self.spread_conversations:
            blocks.append(Block("slack", self.spread_workspaces, self.offered_per_conversation))
        return blocks


class E2eParams(msgspec.Struct, frozen=True, kw_only=True):
    conversations: list[int]
    pacings: list[str]
    directions: list[str]
    loads: list[float]
    trials: int
    trial_seconds: float
    min_events: int
    max_events: int
    window: int
    per_conversation: int
    lanes: int
    setup_timeout_s: float
    drain_timeout_s: float
    #: what "slack" pacing means in the sandbox
    slack_pacing_model: str
    #: the many-conversations block: K (0: none), workspaces, messages/s offered each
    #: conversation (the defaults read schema 2 files, which had none)
    spread_conversations: int = 0
    spread_workspaces: int = 1
    offered_per_conversation_msgs_per_s: float = 0.0
    #: Web API tiers 1-4, calls per minute, in the sandbox and in Interlink (both pacings;
    #: 0: not raised, as in schema 2)
    setup_tier_per_minute: float = 0.0
    #: Slack pacing: paced closed-loop trials hold at least this many bursts (0: no floor)
    paced_trial_bursts: int = 0
    quick: bool
    versions: dict[str, str]


class ProcessCpu(msgspec.Struct, frozen=True, kw_only=True):
    """Microseconds of CPU per delivered message, by process (0: not in this path)."""

    engine: float
    engine_writers: float
    sandbox: float
    prosody: float
    #: this process: the load driver and every client
    driver: float
    total: float


class PathResult(msgspec.Struct, frozen=True, kw_only=True):
    """One path (Interlink, or a raw platform) in one direction: its runs."""

    path: str
    maximum: Run | None
    loads: list[Run]
    #: summed over every run of this path
    integrity: Integrity
    #: over the maximum's timed trials
    cpu_us_per_msg: ProcessCpu
    #: HTTP 429 answers the driver waited out (Slack -> XMPP posts, raw bot posts)
    ratelimited: int


class LatencyAtLoad(msgspec.Struct, frozen=True, kw_only=True):
    #: "max", or the offered load as a percentage ("25%")
    load: str
    offered_msgs_per_s: float | None
    throughput_msgs_per_s: float
    p50: float
    p99: float


class E2eScenario(msgspec.Struct, frozen=True, kw_only=True):
    direction: str
    conversations: int
    pacing: str
    #: Slack workspaces the conversations are spread over (an installation in each)
    workspaces: int = 1
    #: ``None``: the maxima are closed loop; else each conversation was offered this many
    #: messages/s (open loop) and the maxima are what arrived
    offered_per_conversation_msgs_per_s: float | None = None
    status: str
    detail: str
    #: Interlink's maximum (median of the trials)
    throughput_msgs_per_s: float
    ratio_to_baseline: float
    #: the slower raw platform's maximum, and which one it is
    baseline_throughput_msgs_per_s: float
    baseline_path: str
    engine_cpu_us_per_msg: float
    latency_us: list[LatencyAtLoad]
    lost: int
    duplicated: int
    reordered: int
    #: seconds for the probe and the warm-up message in every conversation
    setup_s: float
    interlink: PathResult | None
    raw_sandbox: PathResult | None
    raw_prosody: PathResult | None


class E2eHeadline(msgspec.Struct, frozen=True, kw_only=True):
    direction: str
    conversations: int
    pacing: str
    workspaces: int = 1


class E2eResults(msgspec.Struct, frozen=True, kw_only=True):
    throughput_msgs_per_s: float
    latency_us: LatencyUs
    headline: E2eHeadline
    scenarios: list[E2eScenario]


E2eReport = Report[E2eParams, E2eResults]

_ZERO_LATENCY = LatencyUs(p50=0.0, p99=0.0, p999=0.0, max=0.0, mean=0.0, samples=0)
_NO_CPU = ProcessCpu(engine=0.0, engine_writers=0.0, sandbox=0.0, prosody=0.0, driver=0.0,
                     total=0.0)


# -- where messages arrive ---------------------------------------------------------------
@dataclass
class Sink:
    """Routes arrivals to the current run's check: from XMPP clients, or from one Slack app."""

    channels: dict[str, int]
    check: SequenceCheck | None = None
    xmpp: bool = False
    #: "observer" or "interlink": whose Socket Mode events count
    slack_app: str = ""

    def from_xmpp(self, conversation: int, body: str) -> None:
        if self.check is not None and self.xmpp:
            self._arrived(conversation, body)

    def from_slack(self, app: str, channel: str, text: str) -> None:
        if self.check is not None and app == self.slack_app:
            self._arrived(self.channels.get(channel, -1), text)

    def _arrived(self, where: int, text: str) -> None:
        assert self.check is not None
        parsed = parse_text(text)
        if parsed is None or parsed[0] != self.check.tag:
            return
        if parsed[1] != where:  # delivered into another conversation
            self.check.unexpected += 1
            return
        self.check.arrived(parsed[1], parsed[2])


Send = Callable[[Pair, str, int], Awaitable[None]]


@dataclass
class Trial:
    timeline: Timeline
    integrity: Integrity
    cpu_s: dict[str, float]


@dataclass
class Processes:
    """Who to read CPU from (pids; 0 when not running)."""

    engine: int = 0
    sandbox: int = 0
    prosody: int = 0

    def read(self) -> dict[str, float]:
        driver = read_cpu()
        writers = sum(process_cpu_s(pid) for pid in children_of(self.engine)) \
            if self.engine else 0.0
        return {"engine": process_cpu_s(self.engine) if self.engine else 0.0,
                "engine_writers": writers,
                "sandbox": process_cpu_s(self.sandbox) if self.sandbox else 0.0,
                "prosody": process_cpu_s(self.prosody) if self.prosody else 0.0,
                "driver": driver.main_thread_s + driver.other_threads_s}


_tags = itertools.count(1)


def _new_tag() -> str:
    return f"r{next(_tags)}{secrets.token_hex(2)}"


async def drive(send: Send, pairs: Sequence[Pair], sink: Sink, count: int, *,
                rate: float | None, lanes: int, window: int, drain_timeout: float,
                send_for: float | None = None, per_conversation: int = 8,
                deadline: float | None = None, processes: Processes | None = None) -> Trial:
    """Send up to ``count`` messages round-robin over ``pairs`` and wait for them (bounded).

    ``rate=None``: closed loop (at most ``window`` messages in flight, and at most
    ``per_conversation`` in one conversation); else open loop at ``rate`` messages/s.
    Message ``g`` goes to conversation ``g % K`` as its number ``g // K``. Senders stop
    starting new messages ``send_for`` seconds after the start (a path slower than
    planned makes a shorter trial, not a longer one); a sender still blocked
    ``drain_timeout`` seconds later is cancelled; then arrivals are awaited at most
    ``drain_timeout`` seconds: what has not arrived by then counts as lost. ``deadline``
    (``time.perf_counter``) bounds the whole call, draining included.
    """
    k = len(pairs)
    clock = TrioLoadClock()
    timeline = Timeline(count)
    all_slots = trio.Semaphore(window) if rate is None else None
    slots = [trio.Semaphore(per_conversation) for _ in range(k)] if rate is None else []
    arrived = trio.Event()
    sending = True

    def on_first(conversation: int, seq: int) -> None:
        timeline.complete(str(seq * k + conversation))
        if all_slots is not None:
            all_slots.release()
            slots[conversation].release()
        if not sending and check.received == check.total_sent:
            arrived.set()

    check = SequenceCheck(_new_tag(), on_first)
    lane_count = max(1, min(lanes, k))
    before = processes.read() if processes is not None else {}
    sink.check = check
    start = clock.now() + START_LEAD_S
    stop_at = float("inf") if send_for is None else start + send_for
    scheduled = timeline.scheduled

    async def lane(number: int) -> None:
        for g in range(count):
            conversation = g % k
            if conversation % lane_count != number:
                continue
            seq = g // k
            if all_slots is not None:
                await slots[conversation].acquire()
                await all_slots.acquire()
                now = clock.now()
                if now >= stop_at:
                    return
                scheduled[g] = now
            else:
                assert rate is not None
                at = start + g / rate
                if at >= stop_at:
                    return
                scheduled[g] = at
                if clock.now() < at:
                    await clock.wait_until(at)
            check.sent(conversation, seq)
            await send(pairs[conversation], message_text(check.tag, conversation, seq), g)

    # a sender still waiting at stop_at + drain_timeout (a full window of messages that
    # never arrive, a 429 wait) is cancelled: a trial is bounded whatever the path does
    end = float("inf") if deadline is None else deadline
    hard_stop = trio.current_time() + (min(stop_at + drain_timeout, end) - clock.now())
    try:
        with trio.move_on_at(hard_stop):
            async with trio.open_nursery() as nursery:
                for number in range(lane_count):
                    nursery.start_soon(lane, number)
        sending = False
        if check.received < check.total_sent:
            with trio.move_on_after(max(0.0, min(drain_timeout, end - clock.now()))):
                await arrived.wait()
    finally:
        sink.check = None
    after = processes.read() if processes is not None else {}
    return Trial(timeline=_sent_only(timeline), integrity=check.result(),
                 cpu_s={name: after[name] - before[name] for name in after})


def _sent_only(timeline: Timeline) -> Timeline:
    """The timeline of the messages that were sent (a trial cut short sends fewer)."""
    sent = [g for g in range(timeline.count) if timeline.scheduled[g]]
    if len(sent) == timeline.count or not sent:
        return timeline
    compact = Timeline(len(sent))
    for i, g in enumerate(sent):
        compact.scheduled[i] = timeline.scheduled[g]
        compact.completed[i] = timeline.completed[g]
    return compact


def _add(total: Integrity, more: Integrity) -> Integrity:
    return Integrity(sent=total.sent + more.sent, received=total.received + more.received,
                     lost=total.lost + more.lost, duplicated=total.duplicated + more.duplicated,
                     reordered=total.reordered + more.reordered,
                     unexpected=total.unexpected + more.unexpected)


_NOTHING = Integrity(sent=0, received=0, lost=0, duplicated=0, reordered=0, unexpected=0)


def _cpu_per_msg(trials: Sequence[Trial]) -> ProcessCpu:
    delivered = sum(t.integrity.received for t in trials)
    if not delivered:
        return _NO_CPU
    totals = {name: sum(t.cpu_s.get(name, 0.0) for t in trials) for name in
              ("engine", "engine_writers", "sandbox", "prosody", "driver")}
    per = {name: round(seconds * 1e6 / delivered, 1) for name, seconds in totals.items()}
    return ProcessCpu(**per, total=round(sum(per.values()), 1))


@dataclass
class PathRunner:
    """Runs one path in one direction: calibrate, maximum, offered loads."""

    config: E2eConfig
    name: PathName
    send: Send
    pairs: Sequence[Pair]
    sink: Sink
    processes: Processes
    progress: Progress
    label: str
    ratelimited: Callable[[], int] = lambda: 0
    integrity: Integrity = field(default=_NOTHING)
    #: the maximum is an open loop offering each conversation this many messages/s
    offered_per_conversation: float | None = None
    #: senders (default ``config.lanes``), closed loop: messages in flight in one
    #: conversation (default ``config.per_conversation``), and the wait for arrivals
    #: (default ``config.drain_timeout_s``)
    lanes: int = 0
    per_conversation: int = 0
    drain_timeout: float = 0.0
    #: a paced path (its calibrated rate at least half ``paced_limit``, messages/s) has
    #: closed-loop trials of at least ``paced_floor`` messages (see :func:`paced_trials`)
    paced_limit: float = math.inf
    paced_floor: int = 0

    def _events(self, rate_per_s: float) -> int:
        wanted = round(rate_per_s * self.config.trial_seconds)
        return max(self.config.min_events, min(self.config.max_events, wanted))

    async def _trial(self, count: int, rate: float | None, send_for: float) -> Trial:
        trial = await drive(self.send, self.pairs, self.sink, count, rate=rate,
                            lanes=self.lanes or self.config.lanes, window=self.config.window,
                            per_conversation=self.per_conversation
                            or self.config.per_conversation,
                            drain_timeout=self.drain_timeout or self.config.drain_timeout_s,
                            send_for=send_for, processes=self.processes)
        self.integrity = _add(self.integrity, trial.integrity)
        return trial

    async def maximum(self) -> tuple[Run, list[Trial]]:
        config = self.config
        if self.offered_per_conversation is not None:
            return await self._offered_maximum(self.offered_per_conversation)
        calibration = await self._trial(config.max_events, None, config.trial_seconds)
        calibrated = calibration.timeline.throughput()
        count = self._events(calibrated)
        send_for = 2 * config.trial_seconds
        if calibrated >= 0.5 * self.paced_limit:
            count = max(count, min(config.max_events, self.paced_floor))
            send_for = max(send_for, 2 * count / min(calibrated, self.paced_limit))
        trials = [await self._trial(count, None, send_for) for _ in range(config.trials)]
        run = summarize([t.timeline for t in trials], mode="max")
        lost = sum(t.integrity.lost for t in trials)
        self.progress.say(f"{self.label} {self.name} max {rate(run.throughput_msgs_per_s)}/s "
                          f"p50 {micros(run.latency_us.p50)} p99 {micros(run.latency_us.p99)}"
                          f"{f' LOST {lost}' if lost else ''}")
        return run, trials

    async def _offered_maximum(self, per_conversation: float) -> tuple[Run, list[Trial]]:
        """Each conversation offered ``per_conversation`` messages/s for about a trial's
        length (open loop); what arrives, and how fast, is this path's maximum."""
        offered = per_conversation * len(self.pairs)
        count = self._events(offered)
        trials = [await self._trial(count, offered, 2 * count / offered)
                  for _ in range(self.config.trials)]
        run = summarize([t.timeline for t in trials], mode="open", offered=offered)
        lost = sum(t.integrity.lost for t in trials)
        self.progress.say(f"{self.label} {self.name} offered {rate(offered)}/s: carried "
                          f"{rate(run.throughput_msgs_per_s)}/s p50 {micros(run.latency_us.p50)} "
                          f"p99 {micros(run.latency_us.p99)}{f' LOST {lost}' if lost else ''}")
        return run, trials

    async def at_load(self, fraction: float, maximum: float) -> Run:
        offered = fraction * maximum
        trial = await self._trial(self._events(offered), offered, 2 * self.config.trial_seconds)
        run = summarize([trial.timeline], mode="open", load_fraction=fraction, offered=offered)
        self.progress.say(f"{self.label} {self.name} {fraction:.0%} of max "
                          f"({rate(offered)}/s): p50 {micros(run.latency_us.p50)} "
                          f"p99 {micros(run.latency_us.p99)}")
        return run

    async def measure(self, *, with_loads: bool) -> PathResult:
        before = self.ratelimited()
        run, trials = await self.maximum()
        loads = []
        if with_loads and run.throughput_msgs_per_s > 0:
            loads = [await self.at_load(fraction, run.throughput_msgs_per_s)
                     for fraction in self.config.loads]
        return PathResult(path=self.name, maximum=run, loads=loads, integrity=self.integrity,
                          cpu_us_per_msg=_cpu_per_msg(trials),
                          ratelimited=self.ratelimited() - before)


# -- the platforms' processes ----------------------------------------------------------
def _interlink_command() -> list[str]:
    found = shutil.which("interlink", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "supervisor.cli"]


@asynccontextmanager
async def run_sandbox(workdir: Path, seed: Path, pacing: Pacing,
                      config: E2eConfig) -> AsyncIterator[tuple[Spawned, str]]:
    """The sandbox on a free port; yields it and its Web API URL."""
    command = [*_interlink_command(), "slack-sandbox", "--port", "0", "--seed", str(seed),
               "--log-level", "warning"]
    if pacing == "off":
        command.append("--no-rate-limits")
    async with spawned("sandbox", command, ready="listening on", log_path=workdir / "sandbox.log",
                       start_timeout=config.start_timeout_s, stop_timeout=STOP_TIMEOUT_S,
                       env=_child_env()) as sandbox:
        url = sandbox.ready_line.split("listening on ", 1)[1].split()[0]
        yield sandbox, url + "/api/"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH", "")]))
    return env


@asynccontextmanager
async def run_engine(workdir: Path, layout: Layout, api_url: str, component_port: int,
                     pacing: Pacing, config: E2eConfig) -> AsyncIterator[Spawned]:
    """``interlink run`` with a generated config and a pre-seeded directory."""
    data_dir = workdir / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    secrets_dir = workdir / "secrets"
    write_secrets(secrets_dir, layout)
    (secrets_dir / "component_secret").write_text(COMPONENT_SECRET + "\n")
    await preseed_sessions(data_dir / "directory", layout)
    config_path = workdir / "interlink.toml"
    config_path.write_text(engine_config(layout, data_dir=data_dir, api_url=api_url,
                                         component_port=component_port,
                                         secrets_dir=secrets_dir,
                                         paced=pacing == "slack"),
                          encoding="utf-8")
    command = [*_interlink_command(), "run", "--config", str(config_path)]
    async with spawned("interlink run", command, ready='"msg": "ready"',
                       log_path=workdir / "engine.log", start_timeout=config.start_timeout_s,
                       stop_timeout=STOP_TIMEOUT_S, env=_child_env(), merge_stderr=True) as engine:
        yield engine


@dataclass
class Clients:
    """Every XMPP account logged in, and the Slack-side helpers."""

    xs: list[XmppUser]
    ys: list[XmppUser]


async def _login_all(instance: ProsodyInstance, pairs: Sequence[Pair], sink: Sink,
                     nursery: trio.Nursery, timeout: float) -> Clients:
    xs: list[XmppUser | None] = [None] * len(pairs)
    ys: list[XmppUser | None] = [None] * len(pairs)
    limit = trio.CapacityLimiter(50)

    async def login(pair: Pair, partner: bool) -> None:
        jid = pair.partner_jid if partner else pair.xmpp_jid
        async with limit:
            client = await XmppUser.login("127.0.0.1", instance.c2s_port, jid, pair.password)
        (ys if partner else xs)[pair.index] = client
        nursery.start_soon(client.pump, lambda body, i=pair.index: sink.from_xmpp(i, body))

    with trio.fail_after(timeout):
        async with trio.open_nursery() as logins:
            for pair in pairs:
                logins.start_soon(login, pair, False)
                logins.start_soon(login, pair, True)
    return Clients(xs=[c for c in xs if c is not None], ys=[c for c in ys if c is not None])


# -- one K -------------------------------------------------------------------------------
@dataclass
class _KState:
    layout: Layout
    pairs: list[Pair]
    sink: Sink
    clients: Clients
    prosody: ProsodyInstance
    http: httpx.AsyncClient
    workdir: Path
    #: closed-loop maxima, and runs at an offered rate per conversation, by direction
    raw_prosody: dict[str, PathResult] = field(default_factory=dict)
    raw_prosody_offered: dict[str, PathResult] = field(default_factory=dict)


def _stanza_id(text: str) -> str:
    """A stanza id unique to the message (run tag, conversation, number): Interlink drops
    a repeated id from the same sender as a redelivery."""
    return text.replace(" ", "-")


def _xmpp_send(clients: list[XmppUser], to: Callable[[Pair], str]) -> Send:
    async def send(pair: Pair, text: str, g: int) -> None:
        await clients[pair.index].send_message(to(pair), text, _stanza_id(text))
    return send


async def _raw_prosody(state: _KState, config: E2eConfig, progress: Progress, label: str,
                       offered_per_conversation: float | None = None,
                       ) -> dict[str, PathResult]:
    sink = state.sink
    sink.xmpp, sink.slack_app = True, ""
    processes = Processes(prosody=state.prosody.pid or 0)
    results: dict[str, PathResult] = {}
    for direction in config.directions:
        # Slack -> XMPP ends at x<i>: y<i> sends to it; XMPP -> Slack starts at x<i>
        send = _xmpp_send(state.clients.ys, lambda p: p.xmpp_jid) \
            if direction == "slack_to_xmpp" else _xmpp_send(state.clients.xs,
                                                            lambda p: p.partner_jid)
        runner = PathRunner(config, "raw_prosody", send, state.pairs, sink, processes, progress,
                            f"{label} {direction}",
                            offered_per_conversation=offered_per_conversation)
        results[direction] = await runner.measure(with_loads=False)
    sink.xmpp = False
    return results


async def _probe(send: Send, pair: Pair, sink: Sink, timeout: float) -> None:
    """Send one message every 0.5 s until one arrives (the path is up), within ``timeout``;
    a send still blocked after a second is given up and the next one tried."""
    with trio.fail_after(timeout):
        while True:
            trial = await drive(send, [pair], sink, 1, rate=None, lanes=1, window=1,
                                send_for=0.5, drain_timeout=0.5)
            if trial.integrity.received:
                return


def setup_timeout(config: E2eConfig, block: Block, k: int) -> float:
    """The bound on one direction's probe and warm-up: ``setup_timeout_s``, plus, when
    Slack's posting limits are modelled, 1.5x what one message into each conversation of
    a workspace takes at Interlink's default workspace budget (500 posts a minute after a
    burst of 50: about 2 minutes for K = 1,000 in one workspace, 11 s over ten)."""
    if block.pacing != "slack":
        return config.setup_timeout_s
    defaults = WebApiSettings()
    per_workspace = -(-k // block.workspaces)
    posts = max(0, per_workspace - defaults.post_message_workspace_burst)
    return config.setup_timeout_s + 1.5 * posts * 60 / defaults.post_message_workspace_per_minute


def offered_drain_timeout(config: E2eConfig, block: Block, k: int) -> float:
    """How long an open-loop maximum may wait for its arrivals: ``drain_timeout_s``, or
    1.5x what its messages take at the modelled workspace limit, if longer (XMPP -> Slack
    at 1 message/s in each of 1,000 conversations is 10x what ten workspaces carry)."""
    if block.offered_per_conversation is None or block.pacing != "slack":
        return config.drain_timeout_s
    offered = block.offered_per_conversation * k
    count = max(config.min_events, min(config.max_events, round(offered * config.trial_seconds)))
    capacity = block.workspaces * SLACK_WORKSPACE_PER_MINUTE / 60
    return max(config.drain_timeout_s, 1.5 * count / capacity)


def paced_trials(block: Block, k: int, direction: Direction,
                 bursts: int = 4) -> tuple[float, int]:
    """``(limit, floor)``: the modelled limit on a direction's total rate (messages/s) and
    ``bursts`` times the burst that goes with it, or ``(inf, 0)`` without Slack pacing. A
    closed-loop trial of a path running at that limit has at least ``floor`` messages, so
    a burst saved up before it (a 429's penalty elsewhere, a rest) can raise its rate by a
    third at most (4 bursts): XMPP -> Slack is the bot's posts (per channel, and per
    workspace), Slack -> XMPP each person's in their own channel (their workspace limit is
    never reached)."""
    if block.pacing != "slack":
        return math.inf, 0
    limit, burst = k * SLACK_CHANNEL_PER_S, k * SLACK_CHANNEL_BURST
    workspaces = block.workspaces * SLACK_WORKSPACE_PER_MINUTE / 60
    if direction == "xmpp_to_slack" and workspaces < limit:
        limit, burst = workspaces, block.workspaces * SLACK_WORKSPACE_BURST
    return limit, bursts * burst


def paced_rest(block: Block, k: int, direction: Direction) -> float:
    """Seconds to wait after the warm-up before Interlink is measured, with Slack pacing:
    until the budgets it spent are full again (Interlink's and the sandbox's), as the raw
    paths found them in a fresh sandbox. Each channel gave one post (1 s); XMPP -> Slack
    also took one post per conversation from its workspace's budget, which Interlink
    refills at its default 500 a minute (up to its burst of 50: 6 s)."""
    if block.pacing != "slack":
        return 0.0
    rest = 1 / SLACK_CHANNEL_PER_S
    if direction == "xmpp_to_slack":
        defaults = WebApiSettings()
        spent = min(-(-k // block.workspaces), defaults.post_message_workspace_burst)
        rest = max(rest, spent * 60 / defaults.post_message_workspace_per_minute)
    return rest


def block_in_flight(config: E2eConfig, block: Block) -> int:
    """Closed loop, messages in flight in one conversation: ``per_conversation``; with
    Slack's 1 message/s per channel, two keep a channel busy (one posting, one waiting its
    turn): more would only queue whole seconds per message, and make every trial drain
    that long."""
    if block.pacing != "slack":
        return config.per_conversation
    return min(config.per_conversation, 2)


def block_lanes(config: E2eConfig, block: Block) -> int:
    """Senders: ``lanes``, and at least two per workspace (a sender waiting for one
    workspace's budget holds up only its own conversations)."""
    return max(config.lanes, 2 * block.workspaces)


async def _pacing_block(state: _KState, block: Block, config: E2eConfig,
                        progress: Progress) -> list[E2eScenario]:
    k = state.layout.conversations
    pacing, spaces = block.pacing, block.workspaces
    layout = Layout(k, spaces)
    pairs = list(layout.pairs())
    label = f"K={k:,} pacing={pacing}" + (f" workspaces={spaces}:" if spaces > 1 else ":")
    workdir = state.workdir / (pacing if spaces == 1 else f"{pacing}-w{spaces}")
    workdir.mkdir()
    seed = workdir / "seed.toml"
    seed.write_text(sandbox_seed(layout, slack_limits=pacing == "slack"), encoding="utf-8")
    sink = state.sink
    raw_sandbox: dict[str, PathResult] = {}
    interlink: dict[str, PathResult] = {}
    setup: dict[str, tuple[float, str]] = {}
    bound = setup_timeout(config, block, k)
    lanes = block_lanes(config, block)

    def runner_for(name: PathName, send: Send, direction: Direction) -> PathRunner:
        limit, floor = paced_trials(block, k, direction, config.paced_trial_bursts)
        return PathRunner(config, name, send, pairs, sink, processes, progress,
                          f"{label} {direction}", ratelimited=lambda: poster.ratelimited,
                          offered_per_conversation=block.offered_per_conversation,
                          lanes=lanes, per_conversation=block_in_flight(config, block),
                          drain_timeout=offered_drain_timeout(config, block, k),
                          paced_limit=limit, paced_floor=floor)
    async with AsyncExitStack() as stack:
        sandbox, api_url = await stack.enter_async_context(
            run_sandbox(workdir, seed, pacing, config))
        progress.say(f"{label} sandbox at {api_url} (pid {sandbox.pid})")
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        pacer = PostPacer(channel_per_s=PACER_MARGIN * SLACK_CHANNEL_PER_S,
                          channel_burst=SLACK_CHANNEL_BURST,
                          workspace_per_s=PACER_MARGIN * SLACK_WORKSPACE_PER_MINUTE / 60,
                          workspace_burst=SLACK_WORKSPACE_BURST) if pacing == "slack" else None
        poster = SlackPoster(state.http, api_url, pacer)
        observer = SocketModeListener(state.http, api_url, OBSERVER_APP_TOKEN)
        await nursery.start(observer.run, lambda ch, text: sink.from_slack("observer", ch, text))
        processes = Processes(sandbox=sandbox.pid, prosody=state.prosody.pid or 0)

        async def person_posts(pair: Pair, text: str, g: int) -> None:
            await poster.post(pair.slack_token, pair.channel, text)

        async def bot_posts(pair: Pair, text: str, g: int) -> None:
            await poster.post(pair.workspace.bot_token, pair.channel, text,
                              username=pair.xmpp_jid)

        # raw sandbox: Interlink's app held by the bench, nothing in between
        raw_app = SocketModeListener(state.http, api_url, INTERLINK_APP_TOKEN)
        raw_scope = trio.CancelScope()
        await nursery.start(_run_listener, raw_app, sink, raw_scope)
        posts_before = observer.envelopes
        for direction in config.directions:
            sink.slack_app = "interlink" if direction == "slack_to_xmpp" else "observer"
            send = person_posts if direction == "slack_to_xmpp" else bot_posts
            raw_sandbox[direction] = await runner_for("raw_sandbox", send, direction).measure(
                with_loads=False)
        # every post's event reached the bench's stand-in for Interlink's app (so none
        # is left queued for the engine): the observer saw as many
        posts = observer.envelopes - posts_before
        with trio.move_on_after(config.drain_timeout_s):
            await raw_app.wait_envelopes(posts)
        raw_scope.cancel()
        sink.slack_app = ""

        engine = await stack.enter_async_context(
            run_engine(workdir, layout, api_url, state.prosody.component_port, pacing,
                       config))
        processes.engine = engine.pid
        progress.say(f"{label} interlink run up (pid {engine.pid})")

        async def xmpp_sends(pair: Pair, text: str, g: int) -> None:
            await state.clients.xs[pair.index].send_message(pair.slack_address, text,
                                                            _stanza_id(text))

        for direction in config.directions:
            if direction == "slack_to_xmpp":
                sink.xmpp, sink.slack_app, send = True, "", person_posts
            else:
                sink.xmpp, sink.slack_app, send = False, "observer", xmpp_sends
            started = time.perf_counter()
            try:
                await _probe(send, pairs[0], sink, bound)
                left = max(1.0, bound - (time.perf_counter() - started))
                warm = await drive(send, pairs, sink, k, rate=None, lanes=lanes,
                                   window=config.window, send_for=left, drain_timeout=left,
                                   deadline=started + bound)
            except trio.TooSlowError:
                setup[direction] = (time.perf_counter() - started,
                                    f"no message arrived within {bound:g} s of the engine's "
                                    f"start ({poster.ratelimited} posts answered 429 so far)")
                progress.say(f"{label} {direction}: {setup[direction][1]}")
                continue
            elapsed = time.perf_counter() - started
            if warm.integrity.received < k:
                setup[direction] = (elapsed, (
                    f"warm-up: {warm.integrity.received} of {k} conversations carried their "
                    f"first message within {bound:g} s"))
                progress.say(f"{label} {direction}: {setup[direction][1]}")
                continue
            setup[direction] = (elapsed, "")
            progress.say(f"{label} {direction}: warm in {elapsed:.1f}s")
            # the warm-up spent budgets the raw paths had full in a fresh sandbox
            await trio.sleep(paced_rest(block, k, direction))
            interlink[direction] = await runner_for("interlink", send, direction).measure(
                with_loads=True)
        sink.xmpp, sink.slack_app = False, ""
    prosody = state.raw_prosody if block.offered_per_conversation is None \
        else state.raw_prosody_offered
    return [make_scenario(direction, k, pacing, interlink.get(direction),
                          raw_sandbox.get(direction), prosody.get(direction),
                          setup.get(direction, (0.0, "not run")), workspaces=spaces,
                          offered=block.offered_per_conversation)
            for direction in config.directions]


async def _run_listener(listener: SocketModeListener, sink: Sink, scope: trio.CancelScope, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with scope:
        await listener.run(lambda ch, text: sink.from_slack("interlink", ch, text),
                           task_status=task_status)


def _latency_points(result: PathResult) -> list[LatencyAtLoad]:
    points = []
    if result.maximum is not None:
        points.append(LatencyAtLoad(load="max", offered_msgs_per_s=None,
                                    throughput_msgs_per_s=result.maximum.throughput_msgs_per_s,
                                    p50=result.maximum.latency_us.p50,
                                    p99=result.maximum.latency_us.p99))
    for run in result.loads:
        points.append(LatencyAtLoad(load=f"{(run.load_fraction or 0):.0%}",
                                    offered_msgs_per_s=run.offered_msgs_per_s,
                                    throughput_msgs_per_s=run.throughput_msgs_per_s,
                                    p50=run.latency_us.p50, p99=run.latency_us.p99))
    return points


def make_scenario(direction: Direction, k: int, pacing: Pacing, mine: PathResult | None,
                  sandbox: PathResult | None, prosody: PathResult | None,
                  setup: tuple[float, str], *, workspaces: int = 1,
                  offered: float | None = None) -> E2eScenario:
    baselines = [b for b in (sandbox, prosody) if b is not None and b.maximum is not None]
    limit = min(baselines, key=lambda b: b.maximum.throughput_msgs_per_s if b.maximum
                else 0.0, default=None)
    base = limit.maximum.throughput_msgs_per_s if limit is not None and limit.maximum else 0.0
    best = mine.maximum.throughput_msgs_per_s if mine is not None and mine.maximum else 0.0
    integrity = mine.integrity if mine is not None else _NOTHING
    status: Status = "ok" if mine is not None else (
        "setup_incomplete" if setup[1] and setup[1] != "not run" else "failed")
    return E2eScenario(
        direction=direction, conversations=k, pacing=pacing, workspaces=workspaces,
        offered_per_conversation_msgs_per_s=offered, status=status, detail=setup[1],
        throughput_msgs_per_s=best, ratio_to_baseline=ratio(best, base),
        baseline_throughput_msgs_per_s=base,
        baseline_path=limit.path if limit is not None else "",
        engine_cpu_us_per_msg=mine.cpu_us_per_msg.engine if mine is not None else 0.0,
        latency_us=_latency_points(mine) if mine is not None else [],
        lost=integrity.lost, duplicated=integrity.duplicated, reordered=integrity.reordered,
        setup_s=round(setup[0], 2), interlink=mine, raw_sandbox=sandbox, raw_prosody=prosody)


def _failed(config: E2eConfig, k: int, block: Block, detail: str,
            prosody: dict[str, PathResult]) -> list[E2eScenario]:
    scenarios = []
    for direction in config.directions:
        scenario = make_scenario(direction, k, block.pacing, None, None,
                                 prosody.get(direction), (0.0, ""),
                                 workspaces=block.workspaces,
                                 offered=block.offered_per_conversation)
        scenarios.append(msgspec.structs.replace(scenario, status="failed", detail=detail))
    return scenarios


async def _one_k(config: E2eConfig, k: int, root: Path,
                 progress: Progress) -> list[E2eScenario]:
    blocks = config.blocks(k)
    layout = Layout(k)
    workdir = root / f"k{k}"
    prosody_dir = workdir / "prosody"
    write_prosody_accounts(prosody_dir, layout)
    settings = ProsodySettings(state_dir=prosody_dir, host=XMPP_DOMAIN,
                               components={SLACK_DOMAIN: COMPONENT_SECRET}, muc=False,
                               tls=False, start_timeout=config.start_timeout_s,
                               stop_timeout=STOP_TIMEOUT_S, log_level="warn")
    pairs = list(layout.pairs())
    sink = Sink(channels=layout.channel_index())
    scenarios: list[E2eScenario] = []
    connections = max(block_lanes(config, block) for block in blocks) + 4
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with (httpx.AsyncClient(trust_env=False, timeout=30.0, limits=limits) as http,
                trio.open_nursery() as nursery):
        instance: ProsodyInstance = await nursery.start(run_prosody, settings)
        progress.say(f"K={k:,}: prosody up (pid {instance.pid}, c2s {instance.c2s_port})")
        clients_nursery = await _enter_nursery(nursery)
        try:
            started = time.perf_counter()
            clients = await _login_all(instance, pairs, sink, clients_nursery,
                                       config.start_timeout_s)
            progress.say(f"K={k:,}: {2 * k:,} XMPP accounts logged in in "
                         f"{time.perf_counter() - started:.1f}s")
            state = _KState(layout=layout, pairs=pairs, sink=sink, clients=clients,
                            prosody=instance, http=http, workdir=workdir)
            if any(block.offered_per_conversation is None for block in blocks):
                state.raw_prosody = await _raw_prosody(state, config, progress, f"K={k:,}:")
            for offered in sorted({block.offered_per_conversation for block in blocks
                                   if block.offered_per_conversation is not None}):
                state.raw_prosody_offered = await _raw_prosody(
                    state, config, progress, f"K={k:,} offered {offered:g}/s each:", offered)
            for block in blocks:
                try:
                    scenarios += await _pacing_block(state, block, config, progress)
                except* (ProcessError, NetError, OSError, httpx.HTTPError) as group:
                    exc = _first_leaf(group)
                    progress.say(f"K={k:,} pacing={block.pacing} workspaces="
                                 f"{block.workspaces}: FAILED: {exc}")
                    prosody = state.raw_prosody if block.offered_per_conversation is None \
                        else state.raw_prosody_offered
                    scenarios += _failed(config, k, block, f"{type(exc).__name__}: {exc}",
                                         prosody)
            with trio.CancelScope(shield=True):
                for client in (*clients.xs, *clients.ys):
                    await client.aclose()
        finally:
            nursery.cancel_scope.cancel()
    return scenarios


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _enter_nursery(parent: trio.Nursery) -> trio.Nursery:
    """A child nursery of ``parent`` (where the clients' readers live until ``parent`` ends)."""

    async def hold(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        async with trio.open_nursery() as inner:
            task_status.started(inner)
            await trio.sleep_forever()

    nursery: trio.Nursery = await parent.start(hold)
    return nursery


async def _suite(config: E2eConfig, progress: Progress) -> list[E2eScenario]:
    """Every K in turn. SIGINT or SIGTERM cancels the whole run (so every process is
    stopped and the temporary directory removed on the way out), then raises
    ``KeyboardInterrupt``."""
    scenarios: list[E2eScenario] = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="interlink-e2e-") as root:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                nonlocal interrupted
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        progress.say("interrupted: stopping every process")
                        nursery.cancel_scope.cancel()
                        return

            async def every_k() -> None:
                nonlocal scenarios
                for k in config.sizes():
                    scenarios += await _one_k(config, k, Path(root), progress)
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_signal)
            nursery.start_soon(every_k)
    if interrupted:
        raise KeyboardInterrupt
    return scenarios


def _headline(scenarios: Sequence[E2eScenario]) -> E2eScenario | None:
    ok = [s for s in scenarios if s.status == "ok"]
    for scenario in ok:
        if (scenario.direction, scenario.conversations, scenario.pacing,
                scenario.workspaces) == ("slack_to_xmpp", 1, "off", 1):
            return scenario
    return ok[0] if ok else (scenarios[0] if scenarios else None)


def run_e2e(config: E2eConfig, progress: Progress) -> E2eReport:
    """Run the suite (one ``trio.run``); every process it starts is stopped at the end."""
    started = time.perf_counter()
    scenarios = trio.run(_suite, config, progress)
    return build_report(config, scenarios, time.perf_counter() - started)


def build_report(config: E2eConfig, scenarios: list[E2eScenario],
                 duration_s: float) -> E2eReport:
    """The envelope around ``scenarios``; the headline is Slack -> XMPP, K = 1, no pacing."""
    head = _headline(scenarios)
    mine = head.interlink.maximum if head is not None and head.interlink else None
    limit = None
    if head is not None:
        limit = head.raw_sandbox if head.baseline_path == "raw_sandbox" else head.raw_prosody
    params = E2eParams(
        conversations=list(config.conversations), pacings=list(config.pacings),
        directions=list(config.directions), loads=list(config.loads), trials=config.trials,
        trial_seconds=config.trial_seconds, min_events=config.min_events,
        max_events=config.max_events, window=config.window,
        per_conversation=config.per_conversation, lanes=config.lanes,
        setup_timeout_s=config.setup_timeout_s, drain_timeout_s=config.drain_timeout_s,
        slack_pacing_model=SLACK_MODEL, spread_conversations=config.spread_conversations,
        spread_workspaces=config.spread_workspaces,
        offered_per_conversation_msgs_per_s=config.offered_per_conversation,
        setup_tier_per_minute=SETUP_TIER_PER_MINUTE,
        paced_trial_bursts=config.paced_trial_bursts, quick=config.quick,
        versions=package_versions())
    results = E2eResults(
        throughput_msgs_per_s=mine.throughput_msgs_per_s if mine else 0.0,
        latency_us=mine.latency_us if mine else _ZERO_LATENCY,
        headline=E2eHeadline(direction=head.direction if head else "",
                             conversations=head.conversations if head else 0,
                             pacing=head.pacing if head else "",
                             workspaces=head.workspaces if head else 1),
        scenarios=scenarios)
    base_run = limit.maximum if limit is not None else None
    baseline = Baseline(
        name=f"raw platforms ({head.baseline_path})" if head else "raw platforms",
        description="the slower of the raw sandbox (posts in, Socket Mode events out, nothing "
                    "in between) and raw Prosody (client to client), same K, messages and "
                    "driver, measured in the same run",
        throughput_msgs_per_s=base_run.throughput_msgs_per_s if base_run else 0.0,
        latency_us=base_run.latency_us if base_run else _ZERO_LATENCY)
    report = make_report(SUITE, params=params, results=results, baseline=baseline,
                         duration_s=duration_s)
    return msgspec.structs.replace(report, schema_version=E2E_SCHEMA_VERSION)


def e2e_table(report: E2eReport) -> str:
    rows = []
    for s in report.results.scenarios:
        def best(result: PathResult | None) -> str:
            return rate(result.maximum.throughput_msgs_per_s) \
                if result is not None and result.maximum is not None else "-"
        offered = s.offered_per_conversation_msgs_per_s
        loads = " ".join(
            f"{p.load if p.load != 'max' or offered is None else 'offered'}:"
            f"{micros(p.p50)}/{micros(p.p99)}" for p in s.latency_us)
        rows.append([
            s.direction, f"{s.conversations:,}", f"{s.workspaces}",
            s.pacing if offered is None else f"{s.pacing} {offered:g}/s each",
            s.status if s.status != "ok" else rate(s.throughput_msgs_per_s),
            best(s.raw_sandbox), best(s.raw_prosody), times(s.ratio_to_baseline),
            f"{s.engine_cpu_us_per_msg:,.0f}",
            f"{s.interlink.cpu_us_per_msg.total:,.0f}" if s.interlink else "-",
            f"{s.lost}/{s.duplicated}/{s.reordered}", loads or s.detail])
    head = report.results.headline
    return "\n".join([
        "e2e: Slack user <-> XMPP user through interlink run, the sandbox and Prosody "
        "(separate processes), against the raw platforms in the same run",
        table(["direction", "K", "ws", "pacing", "interlink/s", "sandbox/s", "prosody/s", "ratio",
               "engine us/msg", "all us/msg", "lost/dup/reord", "latency p50/p99 by load"],
              rows),
        "",
        f"headline ({head.direction}, K={head.conversations}, pacing {head.pacing}): "
        f"{rate(report.results.throughput_msgs_per_s)} msgs/s = "
        f"{times(report.ratio_to_baseline)} {report.baseline.name} "
        f"({rate(report.baseline.throughput_msgs_per_s)}/s)",
    ])
