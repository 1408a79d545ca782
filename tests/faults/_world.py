"""One deployment for the fault suite, every piece a real one, each where a fault can
reach it:

- **Prosody** in its own process (:func:`adapters.xmpp.run_prosody`), restarted by rows;
  the XMPP accounts ``peter<i>@widget.localhost`` written into its data directory;
- the **link** between the engine's component and Prosody: a TCP proxy in this process
  (:class:`._link.LinkProxy`) that rows reset or stall;
- the **Slack sandbox** in this process (:class:`adapters.slack.sandbox.Sandbox`), so it
  outlives the engine (it redelivers unacknowledged events after a SIGKILL) and rows
  reach its fault injection (``inject_failures``, ``request_socket_refresh``,
  ``close_socket_connections``) directly: the ``interlink slack-sandbox`` process has no
  HTTP way to those. Workspace Acme: people ``john<i>`` (user tokens ``xoxp-john<i>``),
  each alone with Interlink's bot in the private channels ``G0P<i>`` (his conversation
  with ``peter<i>``) and ``G0C<i>`` (with ``crash@loop.localhost``);
- **the engine**: ``interlink run`` as a subprocess with a generated config (Slack in
  Socket Mode or over HTTP, the XMPP component through the link, a loopback adapter
  whose ``crash@loop.localhost`` crashes its first deliveries, the control API), its
  LMDB directory pre-seeded with every pair's session and Slack channel; started,
  SIGKILLed and started again on the same data directory by rows.

People: John posts through the sandbox's Web API with his user token (in process: the
``chat.postMessage`` faults a row injects are meant for Interlink's calls, not John's);
Peter is an :class:`._xmpp.XmppPeer` logged in to Prosody.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import trio

from adapters.slack.sandbox import (
    DeliveryTiming,
    RateLimitSettings,
    Sandbox,
    SandboxSettings,
    parse_seed,
)
from adapters.slack.sandbox._methods import call_method
from adapters.slack.sandbox._state import Message as SlackMessage
from adapters.xmpp import ProsodyInstance, ProsodySettings, run_prosody
from engine import Address, LmdbDirectory, SessionRecord, session_id_for
from tests.bad_input._world import EngineLog
from tests.test_cli import ROOT, _free_port

from ._link import LinkProxy

TEAM = "T0ACME"
APP = "A0INTERLINK"
BOT = "U0BOT"
BOT_TOKEN = "xoxb-interlink"
APP_TOKEN = "xapp-interlink"
SIGNING_SECRET = "faults-signing-secret"
COMPONENT_SECRET = "faults-component-secret"
CONTROL_TOKEN = "faults-control-t0ken"
SLACK_DOMAIN = "acme.localhost"
XMPP_DOMAIN = "widget.localhost"
LOOP_DOMAIN = "loop.localhost"
CRASH = f"crash@{LOOP_DOMAIN}"
SCOPES = (
    "chat:write", "chat:write.customize", "im:history", "im:read", "im:write",
    "groups:history", "groups:read", "groups:write", "channels:history", "channels:read",
    "reactions:read", "reactions:write", "users:read", "users:read.email",
    "users.profile:read", "files:read", "files:write", "team:read",
)
#: seconds for ``interlink run`` to say "ready" (a loaded 2-core machine)
START_TIMEOUT = 60.0
#: seconds between two looks at the sandbox's channels
SLACK_POLL_S = 0.05
#: seconds between two looks at a state that has no event to wait on
POLL_S = 0.05
#: seconds for Prosody to take in that its component's connection closed
PROSODY_NOTICES_S = 0.3

Mode = Literal["socket", "http"]


@dataclass(frozen=True)
class Pair:
    """John ``i`` on Slack and Peter ``i`` on XMPP, contacts: one row's conversation."""

    index: int

    @property
    def john_user(self) -> str:
        return f"U0J{self.index:03d}"

    @property
    def john_token(self) -> str:
        return f"xoxp-john{self.index}"

    @property
    def john(self) -> str:
        return f"john{self.index}@{SLACK_DOMAIN}"

    @property
    def channel(self) -> str:
        """John's private conversation with Peter."""
        return f"G0P{self.index:03d}"

    @property
    def crash_channel(self) -> str:
        """John's private conversation with ``crash@loop.localhost``."""
        return f"G0C{self.index:03d}"

    @property
    def peter(self) -> str:
        return f"peter{self.index}@{XMPP_DOMAIN}"

    @property
    def password(self) -> str:
        return f"pw-{self.index}-faults"


@dataclass(frozen=True)
class Setup:
    """What differs between the suite's deployments."""

    name: str
    mode: Mode
    pairs: int
    #: [delivery] retry_window and restart_grace
    retry_window: float
    restart_grace: float
    #: the sandbox's Slack retry delays (0 s, 60 s, 300 s) times this
    retry_scale: float
    #: deliveries to crash@loop.localhost that crash its session
    crash_deliveries: int = 0
    #: [engine] max_restarts per restart_window (the crash loop's budget)
    max_restarts: int = 4
    #: the XMPP component's queue_deadline
    queue_deadline: float = 20.0
    #: the sandbox's Socket Mode refresh_requested grace
    refresh_grace: float = 2.0

    def all_pairs(self) -> list[Pair]:
        return [Pair(i) for i in range(1, self.pairs + 1)]


def seed_text(setup: Setup, request_url: str) -> str:
    def items(values: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"

    lines = ["[[workspace]]", f'id = "{TEAM}"', 'name = "Acme"', 'domain = "acme"',
             f'email_domain = "{SLACK_DOMAIN}"', ""]
    for pair in setup.all_pairs():
        lines += ["[[workspace.user]]", f'id = "{pair.john_user}"',
                  f'name = "john{pair.index}"', f'real_name = "John {pair.index}"',
                  f'email = "{pair.john}"', f'token = "{pair.john_token}"', ""]
    for pair in setup.all_pairs():
        for channel, name in ((pair.channel, f"peter-{pair.index}"),
                              (pair.crash_channel, f"crash-{pair.index}")):
            lines += ["[[workspace.channel]]", f'id = "{channel}"', f'name = "{name}"',
                      "is_private = true", f"members = {items([pair.john_user, BOT])}", ""]
    lines += ["[[workspace.app]]", f'id = "{APP}"', 'name = "Interlink"',
              f'bot_user_id = "{BOT}"', f'bot_token = "{BOT_TOKEN}"',
              f'app_token = "{APP_TOKEN}"', f'signing_secret = "{SIGNING_SECRET}"',
              f"scopes = {items(SCOPES)}"]
    if request_url:
        lines.append(f'request_url = "{request_url}"')
    return "\n".join(lines) + "\n"


def engine_config(setup: Setup, tmp: Path, *, api_url: str, slack_port: int,
                  link_port: int, control_port: int, crash_pairs: frozenset[int]) -> str:
    secrets = tmp / "secrets"
    lines = [
        "[engine]", f'data_dir = "{tmp / "data"}"', "shard_count = 2",
        f"max_restarts = {setup.max_restarts}", "restart_window = 60", "",
        "[logging]", 'level = "info"', 'format = "json"', "",
        "[control]", f'listen = "127.0.0.1:{control_port}"', "",
        "[delivery]", f"retry_window = {setup.retry_window}",
        f"restart_grace = {setup.restart_grace}", "",
        "[[adapters]]", 'type = "slack"', 'name = "slack"', f'api_url = "{api_url}"',
        f'mode = "{setup.mode}"', f'listen = "127.0.0.1:{slack_port}"',
        f'app_token = {{ file = "{secrets / "app_token"}" }}',
        f'signing_secret = {{ file = "{secrets / "signing_secret"}" }}',
        "presence_interval = 600", "",
        # the sandbox's limits are off: Interlink's pacing out of the way too
        "[adapters.pacing]", "channel_per_second = 1000", "channel_max_per_second = 1000",
        "channel_burst = 1000", "workspace_per_minute = 60000",
        "workspace_max_per_minute = 60000", "workspace_burst = 1000", "",
        "[[adapters.installations]]", f'team_id = "{TEAM}"',
        f'bot_token = {{ file = "{secrets / "bot_token"}" }}', "",
        "[[adapters]]", 'type = "xmpp"', f'component_domain = "{SLACK_DOMAIN}"',
        'mode = "domain"', f'server = "127.0.0.1:{link_port}"',
        f'secret = {{ file = "{secrets / "component_secret"}" }}',
        f"queue_deadline = {setup.queue_deadline}", "",
        "[[adapters]]", 'type = "loopback"', 'name = "loop"', f'echo_users = ["{CRASH}"]',
        f'crash_deliveries = {{ "{CRASH}" = {setup.crash_deliveries} }}', "",
        "[[domains]]", f'domain = "{SLACK_DOMAIN}"', 'platform = "slack"',
        f'tenant = "{TEAM}"', "internal = true", "",
        "[[domains]]", f'domain = "{XMPP_DOMAIN}"', 'platform = "xmpp"', "",
        "[[domains]]", f'domain = "{LOOP_DOMAIN}"', 'platform = "loop"', "",
    ]
    for other in (XMPP_DOMAIN, LOOP_DOMAIN):
        lines += ["[[agreements]]", f'domain_a = "{SLACK_DOMAIN}"', f'domain_b = "{other}"',
                  'decision = "allow"', ""]
    for pair in setup.all_pairs():
        lines += ["[[identities]]", f'address = "{pair.john}"', 'platform = "slack"',
                  f'tenant = "{TEAM}"', f'user_id = "{pair.john_user}"', ""]
        # crash@ only for the crash loop's John: every contact gets John's presence at
        # start, and each delivery to crash@ would spend one of its crashes
        contacts = (pair.peter, CRASH) if pair.index in crash_pairs else (pair.peter,)
        for contact in contacts:
            lines += ["[[contacts]]", f'a = "{pair.john}"', f'b = "{contact}"', ""]
    return "\n".join(lines)


def write_secrets(secrets: Path) -> None:
    secrets.mkdir(parents=True, exist_ok=True)
    for name, value in (("app_token", APP_TOKEN), ("signing_secret", SIGNING_SECRET),
                        ("bot_token", BOT_TOKEN), ("component_secret", COMPONENT_SECRET)):
        path = secrets / name
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)


def write_prosody_accounts(state_dir: Path, pairs: list[Pair]) -> None:
    """Peter ``i``'s account in Prosody's store (``prosodyctl register`` costs a process
    per account); Prosody's internal_hashed store takes a plain password and hashes it."""
    host_dir = "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in XMPP_DOMAIN)
    accounts = state_dir / "data" / host_dir / "accounts"
    accounts.mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        (accounts / f"peter{pair.index}.dat").write_text(
            f'return {{\n\t["password"] = "{pair.password}";\n}};\n', encoding="utf-8")


async def preseed_sessions(directory_path: Path, pairs: list[Pair]) -> None:
    """Each pair's two sessions, with their Slack channels, in the engine's directory."""
    directory = await LmdbDirectory.open(directory_path)
    try:
        for pair in pairs:
            for other, channel in ((pair.peter, pair.channel), (CRASH, pair.crash_channel)):
                a, b = sorted((Address.parse(pair.john), Address.parse(other)))
                await directory.put_session(SessionRecord(
                    session_id=session_id_for(a, b), a=a, b=b,
                    conversation_ids={"slack": channel}))
        await directory.flush()
    finally:
        await directory.aclose()


def crash_session_id(pair: Pair) -> str:
    a, b = sorted((Address.parse(pair.john), Address.parse(CRASH)))
    return session_id_for(a, b)


async def poll_until(predicate: Callable[[], bool]) -> None:
    """Until ``predicate()`` holds, looked at every ``POLL_S``: for state that offers no
    event to wait on (the sandbox's counters and delivery log, another process)."""
    while not predicate():  # noqa: ASYNC110 -- nothing to wait on but time
        await trio.sleep(POLL_S)


class Changes:
    """A broadcast: whoever waits on :meth:`wait_for` looks again after each change."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._event.wait()


@dataclass
class EngineRun:
    """One ``interlink run`` process and its log."""

    process: trio.Process
    log: EngineLog


@dataclass
class Deployment:
    setup: Setup
    tmp: Path
    sandbox: Sandbox
    prosody: ProsodyInstance
    link: LinkProxy
    http: httpx.AsyncClient
    nursery: trio.Nursery
    config: Path
    control_port: int
    changes: Changes = field(default_factory=Changes)
    runs: list[EngineRun] = field(default_factory=list)
    #: channel -> called with each new message in it
    watchers: dict[str, Callable[[SlackMessage], None]] = field(default_factory=dict)

    # -- the engine -------------------------------------------------------------------
    @property
    def engine(self) -> EngineRun:
        return self.runs[-1]

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON log record of every run of the engine, oldest first."""
        return [record for run in self.runs for record in run.log.records]

    async def start_engine(self) -> EngineRun:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "INTERLINK_CONTROL_TOKEN": CONTROL_TOKEN}
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "supervisor.cli", "run", "--config", str(self.config)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env=env)
        run = EngineRun(process, EngineLog(process))
        self.runs.append(run)
        self.nursery.start_soon(self._collect, run)
        with trio.fail_after(START_TIMEOUT):
            await run.log.wait_for(lambda r: r.get("msg") == "ready")
        if self.setup.mode == "socket":
            with trio.fail_after(START_TIMEOUT):
                await self.sandbox.wait_socket_connections(APP)
        return run

    async def _collect(self, run: EngineRun) -> None:
        try:
            await run.log.collect()
        finally:
            self.changes.notify()
            # kept beside the run's other files, for whoever reads a failed row
            path = self.tmp / f"engine-{self.runs.index(run) + 1}.log"
            path.write_text("\n".join(run.log.raw) + "\n", encoding="utf-8")

    async def kill_engine(self, *, also: list[int] | None = None) -> None:
        """SIGKILL, as the OOM killer would (its LMDB writer processes end by themselves
        once their pipes close), and ``also`` these processes with it (a power cut)."""
        run = self.engine
        run.process.send_signal(signal.SIGKILL)
        for pid in also or []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await run.process.wait()
        with trio.move_on_after(10):
            await run.log.closed.wait()
        # the component's connection is closed on both sides of the link, and Prosody has
        # had a moment to see it: a stanza it routes to the component before then is on a
        # dead connection (XEP-0114 has no acks: link-reset-in-flight's case, not this one's)
        with trio.fail_after(10):
            await self.link.wait_idle()
        await trio.sleep(PROSODY_NOTICES_S)

    async def stop_engine(self) -> int | None:
        """SIGINT (a graceful stop), then SIGKILL if it does not end within 30 s."""
        if not self.runs:
            return None
        run = self.engine
        if run.process.returncode is None:
            run.process.send_signal(signal.SIGINT)
            with trio.move_on_after(30):
                await run.process.wait()
        if run.process.returncode is None:
            run.process.kill()
            await run.process.wait()
        with trio.move_on_after(10):
            await run.log.closed.wait()
        return run.process.returncode

    # -- the operator -------------------------------------------------------------------
    async def control(self, method: str, path: str) -> dict[str, Any]:
        response = await self.http.request(
            method, f"http://127.0.0.1:{self.control_port}{path}",
            headers={"Authorization": f"Bearer {CONTROL_TOKEN}"})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    async def metric(self, name: str) -> float:
        """One unlabelled metric from ``/metrics``."""
        response = await self.http.get(f"http://127.0.0.1:{self.control_port}/metrics",
                                       headers={"Authorization": f"Bearer {CONTROL_TOKEN}"})
        response.raise_for_status()
        for line in response.text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    # -- John -----------------------------------------------------------------------------
    def post_as_john(self, pair: Pair, channel: str, text: str) -> None:
        """``chat.postMessage`` with John's user token (the Web API method itself, in this
        process: a fault injected for Interlink's calls never meets John's)."""
        sandbox = self.sandbox
        outcome = call_method(sandbox.world, sandbox.limiter, "chat.postMessage",
                              pair.john_token, {"channel": channel, "text": text},
                              sandbox.clock.now())
        if not outcome.body.get("ok"):
            raise AssertionError(f"John's post failed: {outcome.body}")
        sandbox.publish(outcome.changes)

    # -- what Slack shows ---------------------------------------------------------------
    async def watch_slack(self) -> None:
        """Hand every new message of a watched channel to its watcher."""
        seen: dict[str, int] = {}
        while True:
            changed = False
            for channel, watcher in list(self.watchers.items()):
                messages = self.sandbox.world.messages.get(channel, {})
                start = seen.get(channel, 0)
                if len(messages) > start:
                    for message in list(messages.values())[start:]:
                        watcher(message)
                    seen[channel] = len(messages)
                    changed = True
            if changed:
                self.changes.notify()
            await trio.sleep(SLACK_POLL_S)

    def sandbox_settled(self) -> bool:
        """Every event the sandbox published has been acked, or given up on."""
        records = self.sandbox.deliveries.records
        final: dict[str, bool] = {}
        for record in records:
            if record.kind != "event":
                continue
            done = record.ok or record.attempt >= self.sandbox.settings.timing.max_retries
            final[record.id] = final.get(record.id, False) or done
        published = self.sandbox.statistics().events_published
        return len(final) >= published and all(final.values())


@asynccontextmanager
async def deployment(setup: Setup, tmp: Path, *,
                     crash_pairs: frozenset[int] = frozenset()) -> AsyncIterator[Deployment]:
    """Prosody, the link, the sandbox and the engine, up; everything stopped afterwards.
    ``crash_pairs``: the pairs whose John has crash@loop.localhost as a contact."""
    pairs = setup.all_pairs()
    prosody_dir = tmp / "prosody"
    write_prosody_accounts(prosody_dir, pairs)
    write_secrets(tmp / "secrets")
    await preseed_sessions(tmp / "data" / "directory", pairs)
    slack_port, control_port = _free_port(), _free_port()
    request_url = f"http://127.0.0.1:{slack_port}/slack/events" if setup.mode == "http" else ""
    timing = DeliveryTiming(retry_scale=setup.retry_scale, refresh_grace=setup.refresh_grace)
    sandbox = Sandbox(parse_seed(seed_text(setup, request_url), source="faults-seed.toml"),
                      settings=SandboxSettings(rate_limits=RateLimitSettings(enabled=False),
                                               timing=timing))
    settings = ProsodySettings(state_dir=prosody_dir, host=XMPP_DOMAIN,
                               components={SLACK_DOMAIN: COMPONENT_SECRET}, muc=False,
                               tls=False, log_level="info")
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http, \
            trio.open_nursery() as nursery:
        prosody: ProsodyInstance = await nursery.start(run_prosody, settings)
        link = LinkProxy("127.0.0.1", prosody.component_port)
        link_port: int = await nursery.start(link.run)
        await nursery.start(sandbox.serve)
        config = tmp / "interlink.toml"
        config.write_text(engine_config(setup, tmp, api_url=sandbox.api_url,
                                        slack_port=slack_port, link_port=link_port,
                                        control_port=control_port,
                                        crash_pairs=crash_pairs), encoding="utf-8")
        world = Deployment(setup=setup, tmp=tmp, sandbox=sandbox, prosody=prosody, link=link,
                           http=http, nursery=nursery, config=config,
                           control_port=control_port)
        nursery.start_soon(world.watch_slack)
        try:
            await world.start_engine()
            yield world
        finally:
            with trio.CancelScope(shield=True):
                await world.stop_engine()
                sandbox.stop()
            nursery.cancel_scope.cancel()

