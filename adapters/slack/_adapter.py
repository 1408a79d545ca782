"""The Slack adapter: the engine seam (``run`` / ``deliver``) and inbound events.

:class:`SlackAdapter` is built in layers, one concept a module:
:mod:`._installations` (workspaces, tokens, the shared state) <-
:mod:`._presence` (following users: presence, profiles) <- :mod:`._delivery`
(outbound, private conversations) <- :mod:`._commands` (slash commands) <-
this module. Translation lives in :mod:`._translate` (pure); the Web API
client in :mod:`._client`; HTTP and Socket Mode inbound in :mod:`._inbound`
and :mod:`._socket_mode`. The rules here:

- **Inbound**: a verified, de-duplicated Events API body, decoded once into its
  view (:mod:`._views`) by the transport -> ``decode_event``
  -> ``port.offer``, which never waits for mailbox room. ``UnavailableError``
  from the engine (``MailboxFullError`` when the conversation is busy)
  propagates so the event is not acknowledged (HTTP 503, no Socket Mode ack)
  and Slack redelivers it; nothing is lost and no inbound task waits. Events
  of one Slack event routed before a busy answer are not routed again.
- Events from an uninstalled or revoked workspace are ignored; a revocation
  event revokes the installation.
- Files shared on Slack reach contacts as signed, expiring links to this
  adapter's listener (``public_url``), which streams them from Slack.
"""
from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio

from engine import (
    Address,
    Bounded,
    Capability,
    Deduplicator,
    DeliveryError,
    EnginePort,
    Event,
    FileShare,
    Ignored,
    PlatformIdentity,
    SessionRecord,
    UnavailableError,
)
from engine.asgi import serve_http

from ._client import SlackWebClient
from ._commands import CommandsPart
from ._delivery import conversation_name as conversation_name
from ._errors import SlackApiError
from ._file_links import FileTicket, open_ticket, sign_ticket
from ._files import Download
from ._inbound import SlackEventsApp
from ._installations import SecretsSource
from ._installations import SlackInstallationConfig as SlackInstallationConfig
from ._installations import SlackSecrets as SlackSecrets
from ._installations import SlackSettings as SlackSettings
from ._installations import SlackStats as SlackStats
from ._presence import FollowedUsers as FollowedUsers
from ._routes import SlackRoutes
from ._socket_mode import SocketModeClient
from ._translate import Revoked, decode_event, message_key
from ._views import ConnectionsOpen, EventsBody

log = logging.getLogger("interlink.slack")

#: how long an Events API event id is remembered: Slack retries a delivery for
#: up to about an hour
DEDUPE_TTL = 3600.0

CAPABILITIES: frozenset[Capability] = frozenset({
    "edits", "retractions", "reactions", "presence", "profiles", "files", "contacts",
    "outcomes", "threads",
})


class SlackAdapter(CommandsPart):
    """Interlink on Slack: one adapter serves every installed workspace."""

    def __init__(self, *, settings: SlackSettings | None = None,
                 secrets: SlackSecrets | None = None, web: SlackWebClient,
                 installations: Iterable[SlackInstallationConfig] = (),
                 secrets_source: SecretsSource | None = None,
                 dedupe: Deduplicator | None = None,
                 files: httpx.AsyncClient | None = None, owns_web: bool = False) -> None:
        """``secrets_source``, when given, is called at each start instead of using
        ``secrets`` / ``installations`` (files may appear or rotate between starts).
        ``files`` fetches files contacts share (default: a client per run);
        ``owns_web``: :meth:`aclose` closes ``web`` too."""
        self.settings = settings or SlackSettings()
        self._secrets = secrets or SlackSecrets()
        self.web = web
        self._configured = tuple(installations)
        self._secrets_source = secrets_source
        self._file_key = self._secrets.file_link_key.encode() or os.urandom(32)
        #: fetches files that contacts share (any URL; no Slack token is ever sent)
        self._files = files
        self._owns_web = owns_web
        self.dedupe = dedupe or Deduplicator(ttl=DEDUPE_TTL)
        self.stats = SlackStats()
        self._port: EnginePort | None = None
        #: per team: ids that are Interlink's own (bot user, bot, app)
        self._own: dict[str, frozenset[str]] = {}
        self._profiles: Bounded = Bounded(self.settings.max_profiles)
        self._followed = FollowedUsers(self.settings.max_followed_users)
        self._topics: Bounded = Bounded(self.settings.max_profiles)
        self._invited: Bounded = Bounded(self.settings.max_profiles)
        self._conversation_locks: dict[str, trio.Lock] = {}
        #: Slack event id -> how many of its canonical events were routed before a busy
        #: answer (bounded: Slack's redeliveries come within minutes)
        self._partly_routed: Bounded = Bounded(10_000)
        self.listen_port: int | None = None
        #: where contacts reach the listener (file links): ``public_url``, or, when
        #: ``listen`` picks a free port and no public URL is set, that port on its host
        self.public_url = self.settings.public_url
        self.ready = trio.Event()
        self._run_files: httpx.AsyncClient | None = None
        self._profile_requests, self._profile_requests_out = \
            trio.open_memory_channel[PlatformIdentity](1000)

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
        measured = port.adapter_stats(self.name)
        self.web.pacer.adapter_stats = measured  # 429s and rate-limit waits
        if self._secrets_source is not None:
            self._secrets, configured = self._secrets_source()
            self._configured = tuple(configured)
            if self._secrets.file_link_key:
                self._file_key = self._secrets.file_link_key.encode()
        await self._install_configured()
        for installation in port.directory.list_installations(self.name):
            if installation.status == "active":
                await self._learn_identity(installation)
        try:
            async with self._files_client() as files, trio.open_nursery() as nursery:
                self._run_files = files
                if self.settings.mode == "socket":
                    if not self._secrets.app_token:
                        raise UnavailableError("Socket Mode needs an app-level token (xapp-…)")
                    client = SocketModeClient(open_url=self._open_socket_url, handler=self,
                                              dedupe=self.dedupe, adapter_stats=measured)
                    await nursery.start(client.run)
                if self.settings.mode == "http" or self.settings.listen_port is not None:
                    events: object = _no_events
                    if self._secrets.signing_secret:
                        events = SlackEventsApp(
                            signing_secret=self._secrets.signing_secret, handler=self,
                            dedupe=self.dedupe, clock=port.clock.now,
                            adapter_stats=measured)
                    elif self.settings.mode == "http":
                        raise UnavailableError("HTTP mode needs the app's signing secret")
                    app = SlackRoutes(self, events)
                    self.listen_port = await nursery.start(
                        lambda task_status: serve_http(app, name="slack-events",
                                                       host=self.settings.listen_host,
                                                       port=self.settings.listen_port or 0,
                                                       task_status=task_status))
                    if self.settings.listen_port == 0 and not self.settings.public_url:
                        host = self.settings.listen_host
                        host = f"[{host}]" if ":" in host else host
                        self.public_url = f"http://{host}:{self.listen_port}"
                nursery.start_soon(self._poll_presence)
                nursery.start_soon(self._publish_profiles)
                nursery.start_soon(self._refresh_tokens)
                self.ready.set()
                log.info("slack adapter started", extra={
                    "mode": self.settings.mode, "listen_port": self.listen_port,
                    "workspaces": len(self._own)})
                task_status.started()
        finally:
            self._run_files = None

    async def aclose(self) -> None:
        """Release what the adapter owns (the Web API client when ``owns_web``)."""
        if self._owns_web:
            await self.web.aclose()

    @asynccontextmanager
    async def _files_client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._files is not None:
            yield self._files
            return
        async with httpx.AsyncClient(trust_env=False, follow_redirects=True) as client:
            yield client

    @asynccontextmanager
    async def open_file(self, ticket: str) -> AsyncIterator[tuple[str, Download]]:
        """The Slack file a signed link names, opened with its workspace's bot token."""
        opened = open_ticket(ticket, self._file_key, now=self.port.clock.now())
        try:
            token = self._bot_token(opened.team_id)
        except DeliveryError as exc:
            raise SlackApiError(exc.reason, method="files.download", retryable=False) from None
        async with self.web.download(opened.url, token=token) as download:
            yield opened.name, download

    def _link_file(self, event: Event, team_id: str) -> Event:
        """A Slack file as a signed link to this adapter (Slack's URL needs a login)."""
        if not isinstance(event, FileShare) or not self.public_url:
            return event
        ticket = FileTicket(url=event.url, team_id=team_id, name=event.name,
                            expires=self.port.clock.now() + self.settings.file_link_lifetime)
        link = (self.public_url.rstrip("/") + "/slack/files/"
                + sign_ticket(ticket, self._file_key))
        return msgspec.structs.replace(event, url=link)

    async def on_event(self, body: EventsBody) -> None:
        team_id = body.team_id
        installation = self.port.directory.get_installation(self.name, team_id)
        if installation is None or installation.status != "active":
            self._ignore("not-installed")
            return
        decoded = decode_event(body, _Lookup(self))
        if isinstance(decoded, Revoked):
            await self._revoke(decoded.team_id, decoded.reason)
            return
        if isinstance(decoded, Ignored):
            self._ignore(decoded.reason)
            return
        # One Slack event may give several (a message with files); those routed before a
        # busy answer are not routed again when Slack sends the event again.
        event_id = body.event_id
        routed = self._partly_routed.pop(event_id, 0)
        for index, decoded_event in enumerate(decoded):
            if index < routed:
                continue
            event = self._link_file(decoded_event, team_id)
            identity = self.port.directory.get_identity(event.source)
            if identity is not None:
                self._follow(identity)
            try:
                await self.port.offer(event)  # never waits for mailbox room
            except UnavailableError:
                if index and event_id:
                    self._partly_routed.remember(event_id, index)
                raise  # not acked: Slack sends it again (HTTP 503, no Socket Mode ack)
            self.stats.events_submitted += 1
        # The ledger's records are durable before Slack hears the ack: a crash after it
        # is resolved at restart (the sender is told), never lost silently.
        await self.port.directory.flush()

    def _ignore(self, reason: str) -> None:
        counts = self.stats.ignored
        if reason in counts or len(counts) < 100:
            counts[reason] = counts.get(reason, 0) + 1
        log.debug("slack event ignored", extra={"reason": reason})

    async def _open_socket_url(self) -> str:
        answer = await self.web.call("apps.connections.open", token=self._secrets.app_token,
                                     team_id="", into=ConnectionsOpen)
        return answer.url


async def _no_events(scope: Any, receive: Any, send: Any) -> None:
    """Events over HTTP are off (Socket Mode without a signing secret)."""
    if scope.get("type") != "http":
        return
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"events arrive over Socket Mode"})


class _Lookup:
    """The translation layer's view of the directory (synchronous reads only)."""

    def __init__(self, adapter: SlackAdapter) -> None:
        self._adapter = adapter
        self._directory = adapter.port.directory

    def address_of(self, team_id: str, user_id: str) -> Address | None:
        return self._directory.find_address(self._adapter.name, team_id, user_id)

    def user_id_of(self, address: Address) -> str | None:
        identity = self._directory.get_identity(address)
        return identity.user_id if identity and identity.platform == self._adapter.name else None

    def session_of(self, channel_id: str) -> SessionRecord | None:
        return self._directory.find_session_by_conversation(self._adapter.name, channel_id)

    def canonical_id(self, channel_id: str, ts: str) -> str | None:
        return self._directory.find_canonical_id(self._adapter.name, message_key(channel_id, ts))

    def is_own_bot(self, team_id: str, *, user_id: str = "", bot_id: str = "",
                   app_id: str = "") -> bool:
        own = self._adapter._own.get(team_id, frozenset())
        return bool({user_id, bot_id, app_id} & own)
