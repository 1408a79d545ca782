"""The fault matrix: each fault, how it is injected, and how a row is run and settled.

A row (:func:`run_fault`) takes a fresh pair (John ``i`` and Peter ``i``: a conversation
of its own, so nothing late from one row is counted in the next), starts both senders
(``COUNT`` numbered messages each way, one every ``INTERVAL`` s), injects its fault once
each side has sent ``AT`` messages, and, once the senders and the fault are done:

1. sends one more message each way (the fence) and waits for it: a session keeps
   order, so all that was routed before it has been handled by then (delivered, or
   failed and its sender's notice sent);
2. after an engine restart, waits until the restarted engine has resolved the events
   its predecessor left open ("interrupted events resolved": their senders' notices
   are queued), and until the sandbox has no Slack event left to redeliver;
3. waits (at most ``settle`` s) until every message is accounted for: arrived, or its
   sender told (:meth:`._tally.Stream.accounted`): notices still on their way;
4. watches ``QUIET_S`` more for late copies (a duplicate has no event to wait for),
   then classifies every message (:mod:`._tally`).

The faults use what each component offers: Prosody's own stop and start, the link's
reset and stall (:mod:`._link`), the sandbox's ``inject_failures``,
``request_socket_refresh`` and ``close_socket_connections``, the loopback adapter's
``crash_deliveries`` (a config key of ``interlink run``: the crash loop runs in the same
subprocess deployment) with the control API's session restart, and SIGKILL (with, for
one row, SIGSTOP of the engine's LMDB writer processes: a disk that stops completing
writes). Two deployments (:data:`SOCKET`, :data:`HTTP`: Slack's events over Socket
Mode or over the Events API) run their rows one after the other; the rows that kill
the engine come last in each.

What is expected on XMPP, which has no acks on a component stream: while the engine
(or its component connection) is away, Prosody bounces Peter's messages to the
component's domain with an error stanza carrying his message's id (an explicit
failure); messages for Peter wait in the component's queue (``queue_deadline``) and go
once it is back, or fail to their sender. A stanza on the wire at the moment the
connection dies is gone, whoever wrote it: ``link-reset-in-flight`` shows what then
tells each sender (John: Interlink's delivery was never confirmed by the server, so he
gets an explicit "may have arrived" failure; Peter: his client gets no XEP-0184
receipt). So the other rows that cut an XMPP
stream keep stanzas off it at that moment: Peter's sender pauses across a Prosody
restart or an engine SIGKILL (until all he sent is accounted for), both senders across
the idle link reset, and a SIGKILL lands right after one of John's posts (that one is
not on the link yet: Slack has to redeliver it). Everything else goes on through the
fault: messages are sent while the component, the socket or the engine is away.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from ._exchange import SLACK_TO_CRASHING, SLACK_TO_XMPP, XMPP_TO_SLACK, Exchange
from ._tally import Tally
from ._world import (
    APP,
    POLL_S,
    Deployment,
    Pair,
    Setup,
    crash_session_id,
    deployment,
    poll_until,
)

#: numbered messages each way per row, one every INTERVAL s; the fault starts at AT
COUNT = 30
INTERVAL = 0.15
AT = 8
#: seconds for one row's traffic and fault
ROW_TIMEOUT = 120.0
#: seconds for the fence each way
FENCE_TIMEOUT = 60.0
#: seconds watched for late duplicates once everything is accounted for
QUIET_S = 1.0
#: seconds that let the engine's group commit put what it wrote on disk (milliseconds
#: when the disk is well; generous on a loaded machine)
COMMIT_S = 0.5

#: over Socket Mode Slack resends an envelope not acked within 3 s once a connection is
#: open, and again 60 s and 300 s later: scaled by 0.02, 1.2 s and 6 s
SOCKET = Setup(name="socket", mode="socket", pairs=12, retry_window=8.0, restart_grace=4.0,
               retry_scale=0.02, crash_deliveries=8)
#: over HTTP Slack retries 0 s, 60 s, 300 s after a failed delivery: scaled by 0.07 that
#: is 0, 4.2 and 21 s, and an engine restart (1-5 s here) falls well inside; the engine
#: waits restart_grace for those redeliveries before it tells a sender to resend
HTTP = Setup(name="http", mode="http", pairs=8, retry_window=4.0, restart_grace=25.0,
             retry_scale=0.07)
SETUPS = {setup.name: setup for setup in (SOCKET, HTTP)}

Inject = Callable[[Exchange], Awaitable[str]]


@dataclass(frozen=True)
class Fault:
    key: str
    title: str
    setup: str
    inject: Inject
    #: John also writes to crash@loop.localhost (the crash loop)
    crashing: bool = False
    #: direction -> why the row is a known bug (strict xfail)
    xfail: dict[str, str] = field(default_factory=dict)
    #: seconds to wait, after the fences, for every message to be accounted for
    settle: float = 5.0

    def directions(self) -> list[str]:
        return [SLACK_TO_XMPP, XMPP_TO_SLACK] + ([SLACK_TO_CRASHING] if self.crashing else [])


@dataclass
class RowResult:
    fault: str
    key: str
    direction: str
    tally: Tally | None
    note: str = ""
    xfail: str = ""
    error: str = ""
    seconds: float = 0.0
    #: Interlink's failure notices to Peter naming his message (XEP-0461), and not
    named_notices: int = 0
    unnamed_notices: int = 0

    @property
    def row_id(self) -> str:
        return row_id(self.key, self.direction)

    @property
    def passed(self) -> bool:
        return not self.error and self.tally is not None and self.tally.passed


def row_id(key: str, direction: str) -> str:
    short = {SLACK_TO_XMPP: "slack-to-xmpp", XMPP_TO_SLACK: "xmpp-to-slack",
             SLACK_TO_CRASHING: "slack-to-crashing"}[direction]
    return f"{key}:{short}"


# -- the faults -----------------------------------------------------------------------------

async def prosody_restart(ex: Exchange) -> str:
    """Prosody stops (SIGTERM) and starts again on its ports. Peter's own stream goes down
    with it: he pauses before the stop, so that none of his stanzas is inside Prosody
    when it stops (without stream management a client cannot know what its server took:
    that is Prosody's and the client's, not Interlink's), and writes again once his
    client is back. John goes on throughout."""
    await ex.pause(ex.xmpp_to_slack)
    started = time.monotonic()
    await ex.world.prosody.restart()
    ex.resume(ex.xmpp_to_slack)
    return f"Prosody down {time.monotonic() - started:.1f} s"


async def link_reset(ex: Exchange) -> str:
    """The component's TCP connection is reset at a moment when no stanza is on it (both
    senders pause until all they sent is accounted for), and refused for 2 s; both send
    on during the outage: John's messages wait in the component's queue, Peter's are
    bounced by Prosody (the component is away)."""
    await ex.pause(ex.slack_to_xmpp)
    await ex.pause(ex.xmpp_to_slack)
    reset = ex.world.link.reset(refuse_for=2.0)
    ex.resume(ex.slack_to_xmpp)
    ex.resume(ex.xmpp_to_slack)
    await trio.sleep(2.0)
    return f"{reset} connection reset, refused for 2 s"


async def link_reset_in_flight(ex: Exchange) -> str:
    """The link stalls (a peer that stops reading, a partition) for 1 s while both send,
    then is reset: the stanzas written into it in that second are gone."""
    world = ex.world
    world.link.stall()
    await trio.sleep(1.0)
    reset = world.link.reset(refuse_for=1.0)
    await trio.sleep(1.0)
    return f"stalled 1 s, then {reset} connection reset"


async def postmessage_5xx(ex: Exchange) -> str:
    """Every chat.postMessage answers HTTP 503 for 12 s: longer than the Web API client's
    retries (5 attempts in ~3.5 s) and the session's (a 4 s retry window) together, so
    Peter's first message in it fails explicitly (after ~7 s); the rest wait behind it in
    the session and go once it is over."""
    sandbox = ex.world.sandbox
    before = sandbox.failures_injected
    sandbox.inject_failures("chat.postMessage", count=100_000, status=503, error=None)
    await trio.sleep(12.0)
    sandbox.inject_failures("chat.postMessage", count=0)
    return f"{sandbox.failures_injected - before} calls answered 503"


async def postmessage_429(ex: Exchange) -> str:
    """Four chat.postMessage calls answer 429 with Retry-After: 1."""
    sandbox = ex.world.sandbox
    before = sandbox.failures_injected
    sandbox.inject_failures("chat.postMessage", count=4, status=429, error="ratelimited",
                            retry_after=1)
    await ex.world.changes.wait_for(lambda: sandbox.failures_injected - before >= 4)
    return "4 calls answered 429 (Retry-After: 1)"


async def postmessage_timeout(ex: Exchange) -> str:
    """Three chat.postMessage calls get no answer within the client's 5 s timeout (the
    sandbox answers after 6 s; nothing is posted)."""
    sandbox = ex.world.sandbox
    before = sandbox.failures_injected
    sandbox.inject_failures("chat.postMessage", count=3, delay=6.0)
    await _until_taken(ex, before, 3)
    return "3 calls timed out"


async def postmessage_after_commit(ex: Exchange) -> str:
    """chat.postMessage posts, then its answer is lost: twice the connection drops
    mid-answer, once the answer comes after the client's timeout. A retry that posts
    again is a duplicate."""
    sandbox = ex.world.sandbox
    before = sandbox.failures_injected
    sandbox.inject_failures("chat.postMessage", count=2, drop_connection=True,
                            after_commit=True)
    await _until_taken(ex, before, 2)
    sandbox.inject_failures("chat.postMessage", count=1, delay=6.0, after_commit=True)
    await _until_taken(ex, before, 3)
    return "3 calls committed, their answers lost"


async def _until_taken(ex: Exchange, before: int, count: int) -> None:
    sandbox = ex.world.sandbox
    await poll_until(lambda: sandbox.failures_injected - before >= count)


async def socket_refresh(ex: Exchange) -> str:
    """The sandbox asks for a Socket Mode refresh (``refresh_requested``); the old
    connection closes 2 s later."""
    told = ex.world.sandbox.request_socket_refresh(APP)
    await trio.sleep(2.5)
    return f"{told} connection told to refresh"


async def socket_drop(ex: Exchange) -> str:
    """The sandbox closes the Socket Mode connection (as Slack does at times)."""
    closed = ex.world.sandbox.close_socket_connections(APP)
    await ex.world.sandbox.wait_socket_connections(APP)
    return f"{closed} connection closed"


async def crash_loop(ex: Exchange) -> str:
    """Deliveries to crash@loop.localhost crash its session (the loopback adapter's
    ``crash_deliveries``: the first 8); with 3 attempts a message and 4 restarts a
    minute the session is soon failed; each time it is, the operator restarts it
    (``POST /v1/sessions/{id}/restart``), and once the crashes have run out it delivers
    again. The conversation with Peter goes on meanwhile."""
    world, session, crashing = ex.world, crash_session_id(ex.pair), ex.crashing
    assert crashing is not None
    restarts = 0
    while not (crashing.done.is_set() and crashing.stream.accounted()):
        if await _session_state(world, session) == "failed":
            await world.control("POST", f"/v1/sessions/{session}/restart")
            restarts += 1
            continue
        await trio.sleep(POLL_S)  # the control API has no wait: polled
    return f"session failed and restarted by the operator {restarts}x"


async def _session_state(world: Deployment, session: str) -> str | None:
    try:
        answer = await world.control("GET", f"/v1/sessions/{session}")
    except httpx.HTTPStatusError:
        return None  # not active
    state = answer.get("state")
    return state if isinstance(state, str) else None


async def engine_sigkill(ex: Exchange) -> str:
    """``interlink run`` is SIGKILLed mid-stream, right after one of John's posts (so that
    message is in flight: Slack must redeliver it), and started again on the same data
    directory 1 s later. Slack redelivers what was not acknowledged; what was acknowledged
    but not delivered is resolved by the ledger (a notice). Peter pauses across the kill
    (XMPP has no acks: a stanza on the component stream when the engine dies is gone,
    see link-reset-in-flight), then writes on: while the engine is down Prosody bounces
    his messages. The kill is not aimed at the milliseconds between a delivery and its
    commit to disk: those are sigkill-stalled-disk's."""
    world = ex.world
    await ex.pause(ex.xmpp_to_slack)
    await trio.sleep(COMMIT_S)
    await ex.wait_sent(ex.slack_to_xmpp, ex.sent(ex.slack_to_xmpp) + 1)
    await world.kill_engine()
    ex.resume(ex.xmpp_to_slack)
    await trio.sleep(1.0)
    started = time.monotonic()
    await world.start_engine()
    return f"killed after John's post; restarted in {time.monotonic() - started:.1f} s"


async def engine_sigkill_held(ex: Exchange) -> str:
    """As engine-sigkill, with messages held inside the engine when it dies: every
    chat.postMessage answers 503, so Peter's newest message is in the session's
    delivery retries and John's newest wait behind it in the session's mailbox (one
    session, in order), all accepted and undelivered. Neither platform sends them again
    (Slack had its ack; XMPP has none), so after the restart their senders must be told
    (the ledger's notice)."""
    world = ex.world
    sandbox = world.sandbox
    before = sandbox.failures_injected
    sandbox.inject_failures("chat.postMessage", count=100_000, status=503, error=None)
    await ex.wait_sent(ex.xmpp_to_slack, len(ex.xmpp_to_slack.stream.sent) + 1)
    ex.xmpp_to_slack.gate.close()  # Peter stops: nothing of his left on the wire
    # the engine is trying to post Peter's message: it is in the session ...
    await poll_until(lambda: sandbox.failures_injected > before)
    # ... and John's next ones queue behind it
    await ex.wait_sent(ex.slack_to_xmpp, len(ex.slack_to_xmpp.stream.sent) + 3)
    while True:  # /metrics has no wait: polled
        if await world.metric("interlink_ledger_open") >= 4:
            break
        await trio.sleep(POLL_S)
    await trio.sleep(1.0)  # ... and its group commit has made the records durable
    open_records = await world.metric("interlink_ledger_open")
    await world.kill_engine()
    sandbox.inject_failures("chat.postMessage", count=0)
    ex.resume(ex.xmpp_to_slack)
    await trio.sleep(1.0)
    await world.start_engine()
    return f"killed with {open_records:.0f} messages accepted and undelivered; restarted"


async def engine_sigkill_stalled_disk(ex: Exchange) -> str:
    """The disk stalls (the engine's LMDB writer processes are SIGSTOPped: commits stop
    landing, reads go on), then the machine dies (SIGKILL, the writers with it) and the
    engine starts again. Peter's newest message was accepted (its ledger record on disk)
    and held by chat.postMessage 503s before the stall; once they clear it is delivered
    while its record's resolution cannot reach disk: after the restart the Slack adapter
    finds it by its metadata, so Peter is not told to resend what arrived. John's posts
    after the stall are taken but neither delivered (a delivery waits for its ledger
    record to be durable) nor acknowledged (the ack waits too): Slack redelivers them
    after the restart and each arrives once."""
    world = ex.world
    sandbox = world.sandbox
    before = sandbox.failures_injected
    sandbox.inject_failures("chat.postMessage", count=100_000, status=503, error=None)
    await ex.wait_sent(ex.xmpp_to_slack, ex.sent(ex.xmpp_to_slack) + 1)
    ex.xmpp_to_slack.gate.close()  # Peter stops: nothing of his left on the wire
    held = max(ex.xmpp_to_slack.stream.sent)
    await poll_until(lambda: sandbox.failures_injected > before)
    await trio.sleep(COMMIT_S)  # the held message's ledger record is on disk
    writers = children_of(world.engine.process.pid)
    for pid in writers:
        os.kill(pid, signal.SIGSTOP)
    john = ex.slack_to_xmpp.stream
    stalled_at = len(john.sent)  # John's next posts are taken while nothing reaches disk
    sandbox.inject_failures("chat.postMessage", count=0)
    xmpp = ex.xmpp_to_slack.stream
    await world.changes.wait_for(lambda: xmpp.arrivals[held] > 0)
    await ex.wait_sent(ex.slack_to_xmpp, stalled_at + 3)
    await trio.sleep(STALL_HOLD_S)  # time they would have taken to arrive, had they gone
    early = [seq for seq in john.sent if seq >= stalled_at and john.arrivals[seq]]
    await world.kill_engine(also=writers)  # a stalled process dies with the machine
    ex.resume(ex.xmpp_to_slack)
    await trio.sleep(1.0)
    await world.start_engine()
    return (f"{len(writers)} writer processes stalled; {len(early)} of John's posts "
            f"delivered before their records were durable; killed; restarted")


#: seconds the stalled-disk row watches John's posts not arriving before the crash
STALL_HOLD_S = 1.5


def children_of(pid: int) -> list[int]:
    """The direct children of process ``pid`` (the engine's LMDB writers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


FAULTS: list[Fault] = [
    Fault("prosody-restart", "Prosody restart", "socket", prosody_restart),
    Fault("link-reset", "component connection reset (idle)", "socket", link_reset),
    Fault("link-reset-in-flight", "component connection reset (stanzas in flight)",
          "socket", link_reset_in_flight),
    Fault("socket-refresh", "Socket Mode refresh", "socket", socket_refresh),
    Fault("socket-drop", "Socket Mode socket dropped", "socket", socket_drop),
    Fault("crash-loop", "actor crash loop", "socket", crash_loop, crashing=True),
    Fault("sigkill", "engine SIGKILL (Socket Mode)", "socket", engine_sigkill),
    Fault("sigkill-held", "engine SIGKILL holding undelivered messages", "socket",
          engine_sigkill_held),
    Fault("sigkill-stalled-disk", "engine SIGKILL after deliveries, disk stalled", "socket",
          engine_sigkill_stalled_disk),
    Fault("postmessage-5xx", "chat.postMessage 5xx", "http", postmessage_5xx),
    Fault("postmessage-429", "chat.postMessage 429 + Retry-After", "http", postmessage_429),
    Fault("postmessage-timeout", "chat.postMessage timeouts", "http", postmessage_timeout),
    Fault("postmessage-after-commit", "chat.postMessage answer lost after commit", "http",
          postmessage_after_commit),
    Fault("sigkill-http", "engine SIGKILL (Events API over HTTP)", "http", engine_sigkill),
]


# -- running a row ----------------------------------------------------------------------------

async def run_fault(world: Deployment, pair: Pair, fault: Fault) -> list[RowResult]:
    started = time.monotonic()
    ex = Exchange(world, pair, f"r{pair.index}{world.setup.name[0]}", count=COUNT,
                  interval=INTERVAL, crashing=fault.crashing)
    note, error = "", ""
    runs_before = len(world.runs)
    try:
        async with ex.connected():
            with trio.fail_after(ROW_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ex.run_senders)
                    await ex.wait_sent(ex.slack_to_xmpp, AT)
                    await ex.wait_sent(ex.xmpp_to_slack, AT)
                    note = await fault.inject(ex)
            await ex.fence()
            with trio.fail_after(FENCE_TIMEOUT):
                if len(world.runs) > runs_before:
                    await _restart_resolved(world)
                await poll_until(world.sandbox_settled)
            with trio.move_on_after(fault.settle):
                await ex.wait_accounted(*ex.directions)
            await trio.sleep(QUIET_S)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    seconds = time.monotonic() - started
    return [RowResult(fault.title, fault.key, d.name, d.stream.tally(), note,
                      fault.xfail.get(d.name, ""), error, seconds, d.named_notices,
                      d.unnamed_notices) for d in ex.directions]


async def _restart_resolved(world: Deployment) -> None:
    """The restarted engine resolved what its predecessor left open (if it left any)."""
    log = world.engine.log
    interrupted = log.find(lambda r: r.get("msg") == "events interrupted by a restart")
    if interrupted:
        await log.wait_for(lambda r: r.get("msg") == "interrupted events resolved")


def plan(name: str, keys: Collection[str] = ()) -> list[tuple[Pair, Fault]]:
    """The faults of deployment ``name`` (those in ``keys``, if given), in order, each
    with its own pair."""
    setup = SETUPS[name]
    faults = [f for f in FAULTS if f.setup == name and (not keys or f.key in keys)]
    assert len(faults) <= setup.pairs
    return list(zip(setup.all_pairs(), faults, strict=False))


@dataclass
class SetupResult:
    """One deployment's rows, and what its engine logged."""

    name: str
    rows: list[RowResult]
    seconds: float
    #: log lines (any run of the engine) that carry a traceback
    tracebacks: list[str]
    #: error-level records: (msg, error_type) -> count
    errors: dict[tuple[str, str], int]
    #: the exit code of the graceful stop at the end
    exit_code: int | None
    #: where the deployment's files are (the engine's logs: engine-<n>.log)
    directory: Path

    def row(self, row_id: str) -> RowResult:
        (found,) = [r for r in self.rows if r.row_id == row_id]
        return found


async def run_setup(name: str, tmp: Path, keys: Collection[str] = ()) -> SetupResult:
    """Every fault of deployment ``name``, one after the other on one deployment (the
    faults that restart the engine last)."""
    started = time.monotonic()
    planned = plan(name, keys)
    crash_pairs = frozenset(pair.index for pair, fault in planned if fault.crashing)
    rows: list[RowResult] = []
    async with deployment(SETUPS[name], tmp, crash_pairs=crash_pairs) as world:
        for pair, fault in planned:
            rows += await run_fault(world, pair, fault)
    errors: dict[tuple[str, str], int] = {}
    for run in world.runs:
        for record in run.log.errors():
            key = (str(record.get("msg", "")), str(record.get("error_type", "")))
            errors[key] = errors.get(key, 0) + 1
    return SetupResult(
        name=name, rows=rows, seconds=time.monotonic() - started,
        tracebacks=[line for run in world.runs for line in run.log.tracebacks()],
        errors=errors, exit_code=world.engine.process.returncode, directory=tmp)
