"""A Slack federation for adapter tests: the sandbox, a real engine, the Slack
adapter, and a loopback platform for ``widget.test`` on the other side.

john@acme.localhost (Slack user U0JOHN in workspace T0ACME) and
peter@widget.test (loopback) are accepted contacts unless told otherwise.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from adapters.slack._adapter import SlackAdapter
from adapters.slack._client import SlackWebClient, WebApiSettings
from adapters.slack._installations import SlackInstallationConfig, SlackSecrets, SlackSettings
from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings, Seed
from engine import (
    METADATA_DBS,
    Address,
    ContactRecord,
    DeliveryOutcome,
    DeliveryResult,
    DomainAgreement,
    DomainRoute,
    Engine,
    EngineSettings,
    Event,
    MemoryKV,
    Message,
    MetadataLog,
    PlatformIdentity,
    Profile,
    SessionRecord,
    SystemClock,
)
from engine.testing import LoopbackAdapter, MemoryDirectory
from tests.slack_sandbox._kit import APP, JOHN, TEST_DEADLINE, fast_settings, make_seed

TEAM = "T0ACME"
JOHN_ADDRESS = Address.parse("john@acme.localhost")
MARY_ADDRESS = Address.parse("mary@acme.localhost")
PETER_ADDRESS = Address.parse("peter@widget.test")
PAUL_ADDRESS = Address.parse("paul@widget.test")
SECRETS = SlackSecrets(signing_secret="s3cret", app_token="xapp-interlink",
                       client_id="111.222", client_secret="client-secret")


def free_port() -> int:
    """A loopback port free right now (for a Request URL the sandbox must know up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class GatedLoopback(LoopbackAdapter):
    """The loopback platform, whose deliveries of messages to chosen addresses can be
    held: the session delivering one is stuck, and its mailbox fills up behind it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._gates: dict[Address, trio.Event] = {}
        self.held = 0
        self._changed = trio.Event()

    def hold(self, address: Address) -> None:
        self._gates[address] = trio.Event()

    def release(self, address: Address) -> None:
        self._gates.pop(address).set()

    async def wait_held(self, count: int = 1) -> None:
        """Until ``count`` deliveries in all have been held."""
        while self.held < count:
            await self._changed.wait()

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        gate = self._gates.get(event.destination)
        if gate is not None and isinstance(event, Message):
            self.held += 1
            self._changed.set()
            self._changed = trio.Event()
            await gate.wait()
        return await super().deliver(event, session)


class SandboxRunner:
    """Serves sandboxes from one seed in a nursery; can restart one with fresh state on
    its port (as a Slack that forgot everything, under a running engine)."""

    def __init__(self, seed: Seed, settings: SandboxSettings,
                 nursery: trio.Nursery) -> None:
        self.seed = seed
        self.settings = settings
        self.nursery = nursery
        self.starts = 0
        self._stopped = trio.Event()

    async def start(self, port: int = 0) -> Sandbox:
        self.starts += 1
        sandbox = Sandbox(self.seed, settings=msgspec.structs.replace(
            self.settings, first_event_id=1 + (self.starts - 1) * 10**6))
        stopped = self._stopped = trio.Event()

        async def serve(*, task_status: trio.TaskStatus[str]) -> None:
            try:
                await sandbox.serve(port=port, task_status=task_status)
            finally:
                stopped.set()

        await self.nursery.start(serve)
        return sandbox

    async def restart(self, sandbox: Sandbox) -> Sandbox:
        port = urlsplit(sandbox.url).port
        assert port is not None
        sandbox.stop()
        await self._stopped.wait()
        return await self.start(port)


class SlackFederation:
    def __init__(self, sandbox: Sandbox, engine: Engine, slack: SlackAdapter,
                 widget: GatedLoopback, directory: MemoryDirectory,
                 http: httpx.AsyncClient, runner: SandboxRunner | None = None) -> None:
        self.sandbox = sandbox
        self.engine = engine
        self.slack = slack
        self.widget = widget
        self.directory = directory
        self.http = http
        self._runner = runner

    async def restart_sandbox(self) -> Sandbox:
        """Stop the sandbox and start a fresh one (the seed only) on its port; wait until
        the adapter's Socket Mode connection is back."""
        assert self._runner is not None
        self.sandbox = await self._runner.restart(self.sandbox)
        await self.sandbox.wait_socket_connections(APP)
        return self.sandbox

    async def act(self, token: str, method: str, **args: Any) -> dict[str, Any]:
        """Call the sandbox's Web API as a person (``xoxp-john``) and return Slack's answer."""
        response = await self.http.post(
            self.sandbox.api_url + method, headers={"Authorization": f"Bearer {token}"},
            json=args, timeout=10)
        answer: dict[str, Any] = response.json()
        assert answer.get("ok"), f"{method} failed: {answer}"
        return answer

    async def next_event(self, *, profiles: bool = False) -> Event:
        """The next event the loopback side receives; delivery receipts are skipped, and
        so are Slack users' profile broadcasts unless ``profiles``."""
        while True:
            event = await self.widget.next_delivered()
            if not self._noise(event, profiles=profiles):
                return event

    @staticmethod
    def _noise(event: Event, *, profiles: bool = False) -> bool:
        return ((isinstance(event, DeliveryOutcome) and event.status == "delivered")
                or (isinstance(event, Profile) and not profiles))

    def pending_events(self) -> list[Event]:
        """Events the loopback side received and nobody read (receipts left out)."""
        return [e for e in self.widget.delivered_nowait() if not self._noise(e)]

    def conversation(self, other: Address = PETER_ADDRESS) -> str:
        session = self.directory.find_session(JOHN_ADDRESS, other)
        assert session is not None, "no session yet"
        channel = session.conversation_ids.get("slack")
        assert channel, "the session has no Slack conversation yet"
        return channel

    async def wait_for_messages(self, channel: str, count: int) -> list[dict[str, Any]]:
        """The channel's messages (oldest first) once there are ``count`` of them."""
        while True:
            found = self.sandbox.messages(channel)
            if len(found) >= count:
                return sorted(found, key=lambda m: float(m["ts"]))
            await trio.sleep(0.01)

    async def settle(self) -> None:
        await self.engine.actors.drain()

    async def quiesce(self) -> None:
        """Wait until Slack has delivered (and Interlink acked) every event it published,
        and the engine is idle; again, while handling them publishes more."""
        def all_acked(_: object) -> bool:
            acked = {r.id for r in self.sandbox.deliveries.records if r.kind == "event" and r.ok}
            return len(acked) >= self.sandbox.statistics().events_published

        while True:
            published = self.sandbox.statistics().events_published
            if published:
                await self.sandbox.wait_for_delivery(all_acked)
            await self.settle()
            if self.sandbox.statistics().events_published == published:
                return


@asynccontextmanager
async def slack_federation(
    *, mode: str = "socket", contacts: bool = True, register_john: bool = True,
    rate_limits: RateLimitSettings | None = None, pacing: float = 200.0,
    presence_interval: float = 3600.0, seed_extra: str = "", deadline: float = TEST_DEADLINE,
    installations: tuple[SlackInstallationConfig, ...] = (), listen: bool = False,
    pacing_burst: int = 3, mailbox_capacity: int = 1000, ack_timeout: float = 3.0,
    retry_scale: float = 0.001,
) -> AsyncIterator[SlackFederation]:
    """Everything running; ``mode`` is ``socket`` or ``http`` (events to the adapter).
    ``listen``: serve the adapter's HTTP routes in Socket Mode too (file links)."""
    port = free_port() if mode == "http" or listen else None
    seed = make_seed(request_url=f"http://127.0.0.1:{port}/slack/events" if mode == "http"
                     else "",
                     extra=seed_extra)
    limits = rate_limits or RateLimitSettings(post_message_per_second=500.0,
                                              post_message_burst=50,
                                              per_minute=(600.0, 6000.0, 6000.0, 6000.0, 6000.0))
    settings = msgspec.structs.replace(
        fast_settings(ack_timeout=ack_timeout, retry_scale=retry_scale), rate_limits=limits)
    with trio.fail_after(deadline):
        async with trio.open_nursery() as sandboxes, \
                httpx.AsyncClient(trust_env=False) as http:
            runner = SandboxRunner(seed, settings, sandboxes)
            sandbox = await runner.start()
            async with _federation(sandbox, runner, http, mode=mode, port=port,
                                   contacts=contacts, register_john=register_john,
                                   pacing=pacing, pacing_burst=pacing_burst,
                                   presence_interval=presence_interval,
                                   installations=installations,
                                   mailbox_capacity=mailbox_capacity) as federation:
                yield federation
            sandboxes.cancel_scope.cancel()


@asynccontextmanager
async def _federation(sandbox: Sandbox, runner: SandboxRunner, http: httpx.AsyncClient, *,
                      mode: str, port: int | None, contacts: bool, register_john: bool,
                      pacing: float, pacing_burst: int, presence_interval: float,
                      installations: tuple[SlackInstallationConfig, ...],
                      mailbox_capacity: int) -> AsyncIterator[SlackFederation]:
    directory = MemoryDirectory()
    await directory.put_domain_route(DomainRoute(domain="acme.localhost", platform="slack",
                                                 tenant=TEAM, internal=True))
    await directory.put_domain_route(DomainRoute(domain="widget.test", platform="widget"))
    await directory.put_domain_agreement(DomainAgreement(
        domain_a="acme.localhost", domain_b="widget.test", decision="allow"))
    if register_john:
        await directory.put_identity(PlatformIdentity(
            address=JOHN_ADDRESS, platform="slack", tenant=TEAM, user_id=JOHN))
    for other in (PETER_ADDRESS, PAUL_ADDRESS):
        await directory.put_identity(PlatformIdentity(address=other, platform="widget",
                                                      user_id=other.user))
        if contacts:
            for owner, contact in ((JOHN_ADDRESS, other), (other, JOHN_ADDRESS)):
                await directory.put_contact(ContactRecord(
                    owner=owner, contact=contact, state="accepted",
                    requested_by=JOHN_ADDRESS))
    web = SlackWebClient(settings=WebApiSettings(
        base_url=sandbox.api_url, post_message_per_second=pacing,
        post_message_burst=pacing_burst), http=http)
    slack = SlackAdapter(
        settings=SlackSettings(mode=mode, listen_port=port,
                               presence_interval=presence_interval,
                               authorize_url=sandbox.url + "/oauth/v2/authorize",
                               redirect_uri=f"http://127.0.0.1:{port}/slack/oauth_redirect"
                               if port else "",
                               public_url=f"http://127.0.0.1:{port}" if port else ""),
        secrets=SECRETS, web=web,
        installations=[SlackInstallationConfig(team_id=TEAM, bot_token="xoxb-interlink"),
                       *installations])
    widget = GatedLoopback("widget")
    clock = SystemClock()  # signatures are checked against real time
    engine = Engine(directory=directory, adapters=[slack, widget], clock=clock,
                    metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock),
                    settings=EngineSettings(shard_count=2,
                                            mailbox_capacity=mailbox_capacity))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        if mode == "socket":
            await sandbox.wait_socket_connections(APP)
        yield SlackFederation(sandbox, engine, slack, widget, directory, http, runner)
        nursery.cancel_scope.cancel()
