"""The first federation end to end: john@acme.localhost on Slack (the sandbox) and
peter@widget.localhost on a real Prosody, through a real engine with both adapters.

The component serves acme.localhost itself (domain mode): John's JID is
john@acme.localhost. With ``link=True`` the component reaches Prosody through a
:class:`._link.Link` (``fed.link``) that tests stall and reset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, fromstring

import httpx
import msgspec
import trio

from adapters.slack import (
    SlackAdapter,
    SlackInstallationConfig,
    SlackSettings,
    SlackWebClient,
    WebApiSettings,
)
from adapters.slack.sandbox import RateLimitSettings, Sandbox
from adapters.xmpp._adapter import XmppAdapter, XmppSettings
from adapters.xmpp._client import Received, TestClient, open_client
from adapters.xmpp._jid import AddressingSettings
from adapters.xmpp._prosody import ProsodyInstance, ProsodySettings, run_prosody
from engine import (
    METADATA_DBS,
    Address,
    DeliveryOutcome,
    Directory,
    DomainAgreement,
    DomainRoute,
    Engine,
    EngineSettings,
    LmdbDirectory,
    MemoryKV,
    MetadataLog,
    PlatformIdentity,
    SystemClock,
)
from engine.testing import MemoryDirectory
from tests.slack_adapter._federation import SECRETS, TEAM, free_port
from tests.slack_sandbox._kit import APP, JOHN, fast_settings, make_seed, running

from ._link import Link
from .conftest import FAST_RECONNECT

JOHN_ADDRESS = Address.parse("john@acme.localhost")
PETER_ADDRESS = Address.parse("peter@widget.localhost")
PETER_JID = "peter@widget.localhost"
JOHN_JID = "john@acme.localhost"
COMPONENT_SECRET = "component-secret"
PETER_PASSWORD = "peter-password"


class XmppFederation:
    def __init__(self, sandbox: Sandbox, prosody: ProsodyInstance, directory: Directory,
                 http: httpx.AsyncClient, peter: TestClient,
                 directory_path: Path | None = None, link: Link | None = None) -> None:
        self.sandbox = sandbox
        self.prosody = prosody
        #: between the component and Prosody, when the federation has one
        self.link = link
        self.directory = directory
        self.http = http
        self.peter = peter
        self._directory_path = directory_path
        self._nursery: trio.Nursery | None = None
        self._xmpp_scope: trio.CancelScope | None = None
        self._xmpp_stopped = trio.Event()
        self._engine_scope: trio.CancelScope | None = None
        self._engine_stopped = trio.Event()
        #: where the engine runs (the federation's servers' nursery)
        self._servers: trio.Nursery | None = None
        self.engine, self.slack, self.xmpp = self._build()

    def _build(self) -> tuple[Engine, SlackAdapter, XmppAdapter]:
        """A new engine with new Slack and XMPP adapters, on ``self.directory``."""
        port = free_port()
        slack = SlackAdapter(
            settings=SlackSettings(listen_port=port, public_url=f"http://127.0.0.1:{port}",
                                   presence_interval=0.2),
            secrets=SECRETS, web=SlackWebClient(settings=WebApiSettings(
                base_url=self.sandbox.api_url, post_message_per_second=200.0),
                http=self.http),
            installations=[SlackInstallationConfig(team_id=TEAM, bot_token="xoxb-interlink")])
        prosody, link = self.prosody, self.link
        xmpp = XmppAdapter(
            settings=XmppSettings(addressing=AddressingSettings(
                component_domain="acme.localhost"), queue_deadline=20.0),
            server=lambda: ("127.0.0.1", prosody.component_port if link is None else link.port,
                            COMPONENT_SECRET),
            connection_options={"reconnect": FAST_RECONNECT})
        clock = SystemClock()
        engine = Engine(directory=self.directory, adapters=[slack, xmpp], clock=clock,
                        metadata_log=MetadataLog(MemoryKV(METADATA_DBS), self.directory,
                                                 clock),
                        settings=EngineSettings(shard_count=2))
        return engine, slack, xmpp

    # -- the engine (stopped and started again by tests on an LMDB directory) ----------
    async def run_engine(self, *, task_status: trio.TaskStatus[None]) -> None:
        """engine.run, with the XMPP adapter in a cancel scope of its own, so that tests
        can stop and restart it while everything else runs."""
        self._engine_stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._engine_scope = scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for service in self.engine.services():
                        if service.group == "adapters" and service.name == self.xmpp.name:
                            continue
                        await nursery.start(service.start)
                    await self.start_xmpp()
                    self.engine.open_for_events()
                    await self.sandbox.wait_socket_connections(APP)
                    task_status.started()
        finally:
            self._engine_stopped.set()

    async def restart_engine(self) -> None:
        """Stop the engine as an operator would (drain, flush), reopen its LMDB directory,
        and start a new engine with new adapters on it: all they know comes from disk."""
        assert self._directory_path is not None and self._engine_scope is not None
        assert self._servers is not None
        await self.quiesce()
        await self.engine.stop()
        self._engine_scope.cancel()
        await self._engine_stopped.wait()
        await self.directory.aclose()
        self.directory = await LmdbDirectory.open(self._directory_path)
        self.engine, self.slack, self.xmpp = self._build()
        await self._servers.start(self.run_engine)

    # -- the XMPP adapter in a scope of its own (stopped and started by tests) ---------
    async def start_xmpp(self) -> None:
        """Start (or restart) the engine's XMPP adapter; returns once its component is up."""
        assert self._nursery is not None
        await self._nursery.start(self._run_xmpp)

    async def stop_xmpp(self) -> None:
        """Stop the XMPP adapter (as a supervisor would); returns once its stream is closed."""
        assert self._xmpp_scope is not None
        self._xmpp_scope.cancel()
        await self._xmpp_stopped.wait()

    async def _run_xmpp(self, *, task_status: trio.TaskStatus[None]) -> None:
        self._xmpp_stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._xmpp_scope = scope
                await self.xmpp.run(self.engine, task_status=task_status)
        finally:
            self._xmpp_stopped.set()

    def open_peter(self) -> AbstractAsyncContextManager[TestClient]:
        """A new login as Peter (after Prosody restarted, say)."""
        return open_client(PETER_JID, PETER_PASSWORD, "127.0.0.1", self.prosody.c2s_port)

    async def peter_wants_the_roster(self) -> None:
        """Peter's client asks for its roster, as real clients do: Prosody then sends it
        subscription approvals and removals (it sends those to 'interested' resources only)."""
        await self.peter.send_raw("<iq type='get' id='roster-1'>"
                                  "<query xmlns='jabber:iq:roster'/></iq>")
        while (await self.peter.next_stanza("iq")).id != "roster-1":
            pass

    async def act(self, method: str, token: str = "xoxp-john", **args: Any) -> dict[str, Any]:
        """Call the sandbox's Web API as John (or another token)."""
        response = await self.http.post(self.sandbox.api_url + method, json=args,
                                        headers={"Authorization": f"Bearer {token}"})
        answer: dict[str, Any] = response.json()
        assert answer.get("ok"), f"{method} failed: {answer}"
        return answer

    async def command(self, text: str) -> str:
        reply = await self.sandbox.run_command("xoxp-john", "/interlink", text,
                                               channel="C0GENERAL")
        assert reply.ok, reply.error
        answer: str = reply.response["text"]
        return answer

    def conversation(self) -> str:
        session = self.directory.find_session(JOHN_ADDRESS, PETER_ADDRESS)
        assert session is not None and session.conversation_ids.get("slack")
        return session.conversation_ids["slack"]

    async def quiesce(self) -> None:
        """Every event Slack published is acked, and the engine is idle."""
        def all_acked(_: object) -> bool:
            acked = {r.id for r in self.sandbox.deliveries.records if r.kind == "event" and r.ok}
            return len(acked) >= self.sandbox.statistics().events_published

        while True:
            published = self.sandbox.statistics().events_published
            if published:
                await self.sandbox.wait_for_delivery(all_acked)
            await self.engine.actors.drain()
            if self.sandbox.statistics().events_published == published:
                return

    async def slack_gets(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first message in John's conversation matching ``predicate``, once there.

        XMPP traffic has no acknowledgement to wait on, so this watches Slack's state
        (bounded by the test's deadline)."""
        while True:
            for message in self._messages_so_far():
                if predicate(message):
                    return message
            await trio.sleep(0.02)

    def _messages_so_far(self) -> list[dict[str, Any]]:
        """John's conversation, oldest first (empty until the conversation exists)."""
        session = self.directory.find_session(JOHN_ADDRESS, PETER_ADDRESS)
        channel = None if session is None else session.conversation_ids.get("slack")
        if channel is None:
            return []
        return sorted(self.sandbox.messages(channel), key=lambda m: float(m["ts"]))

    async def slack_until(self, predicate: Callable[[list[dict[str, Any]]], bool],
                          ) -> list[dict[str, Any]]:
        """John's conversation (oldest first) once ``predicate`` holds for it."""
        while True:
            messages = self._messages_so_far()
            if predicate(messages):
                return messages
            await trio.sleep(0.02)

    async def slack_messages(self) -> list[dict[str, Any]]:
        await self.quiesce()
        return sorted(self.sandbox.messages(self.conversation()), key=lambda m: float(m["ts"]))

    async def peter_gets(self, kind: str = "message", *, skip_types: tuple[str, ...] = (),
                         ) -> Received:
        """Peter's next stanza of ``kind`` (chat states and ``skip_types`` left out)."""
        while True:
            stanza = await self.peter.next_stanza(kind)
            if stanza.type in skip_types or stanza.sender.startswith(PETER_JID):
                continue  # Prosody reflects Peter's own presence to him
            if kind == "message" and not stanza.body and "chatstates" in stanza.xml \
                    and "reactions" not in stanza.xml and "retract" not in stanza.xml:
                continue
            return stanza

    async def befriend(self) -> None:
        """John adds Peter from Slack, Peter accepts in his client."""
        assert "Asked peter@widget.localhost" in await self.command(
            "add peter@widget.localhost")
        request = await self.peter_gets("presence")
        assert (request.type, request.sender) == ("subscribe", JOHN_JID), request
        await self.peter.send_raw(f"<presence to='{JOHN_JID}' type='subscribed'/>")
        await self.engine.actors.drain()
        while True:
            contact = self.directory.get_contact(JOHN_ADDRESS, PETER_ADDRESS)
            if contact is not None and contact.state == "accepted":
                return
            await self.peter.next_stanza("presence")  # john subscribes back, etc.


@asynccontextmanager
async def xmpp_federation(tmp_path: Path, *, deadline: float = 20.0, lmdb: bool = False,
                          link: bool = False) -> AsyncIterator[XmppFederation]:
    """The whole federation for one test, which fails (never hangs) after ``deadline``.

    ``lmdb``: the directory is an LMDB store under ``tmp_path`` (so that
    :meth:`XmppFederation.restart_engine` can start a new engine on it), not memory.
    ``link``: the component connects through a :class:`._link.Link` (``fed.link``)."""
    async with _running_federation(tmp_path, deadline, lmdb, link) as fed:
        yield fed


@asynccontextmanager
async def _running_federation(tmp_path: Path, deadline: float, lmdb: bool,
                              with_link: bool) -> AsyncIterator[XmppFederation]:
    seed = make_seed()
    limits = RateLimitSettings(post_message_per_second=500.0, post_message_burst=50,
                               per_minute=(600.0, 6000.0, 6000.0, 6000.0, 6000.0))
    settings = msgspec.structs.replace(fast_settings(ack_timeout=3.0), rate_limits=limits)
    prosody_settings = ProsodySettings(state_dir=tmp_path / "prosody", host="widget.localhost",
                                       components={"acme.localhost": COMPONENT_SECRET},
                                       users={"peter": PETER_PASSWORD})
    async with running(seed, settings=settings, deadline=deadline) as sandbox, \
            httpx.AsyncClient(trust_env=False) as http, trio.open_nursery() as servers:
        prosody: ProsodyInstance = await servers.start(run_prosody, prosody_settings)
        link = Link(prosody.component_port) if with_link else None
        if link is not None:
            await servers.start(link.run)
        directory_path = tmp_path / "directory" if lmdb else None
        directory: Directory = MemoryDirectory() if directory_path is None else \
            await LmdbDirectory.open(directory_path, sync=False)
        await directory.put_domain_route(DomainRoute(domain="acme.localhost", platform="slack",
                                                     tenant=TEAM, internal=True))
        await directory.put_domain_route(DomainRoute(domain="widget.localhost",
                                                     platform="xmpp"))
        await directory.put_domain_agreement(DomainAgreement(
            domain_a="acme.localhost", domain_b="widget.localhost", decision="allow"))
        await directory.put_identity(PlatformIdentity(address=JOHN_ADDRESS, platform="slack",
                                                      tenant=TEAM, user_id=JOHN))
        async with open_client(PETER_JID, PETER_PASSWORD, "127.0.0.1",
                               prosody.c2s_port) as peter:
            fed = XmppFederation(sandbox, prosody, directory, http, peter, directory_path,
                                 link)
            fed._servers = servers
            await servers.start(fed.run_engine)
            yield fed
            if fed._engine_scope is not None:
                fed._engine_scope.cancel()
            await fed._engine_stopped.wait()
        await fed.directory.aclose()
        servers.cancel_scope.cancel()


def xml_of(received: Received) -> Element:
    """The stanza Peter's client received, as an element tree (``jabber:client``)."""
    return fromstring(received.xml)


def child(stanza: Element, ns: str, tag: str) -> Element | None:
    return stanza.find(f"{{{ns}}}{tag}")


def is_receipt(event: object) -> bool:
    return isinstance(event, DeliveryOutcome) and event.status == "delivered"

