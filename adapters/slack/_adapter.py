"""The Slack adapter's I/O layer: installations, the private-conversation surface,
slash commands, presence polling, and the engine seam (``run`` / ``deliver``).

Translation lives in :mod:`._translate` (pure); the Web API client in
:mod:`._webapi`; HTTP and Socket Mode inbound in :mod:`._inbound` and
:mod:`._socket_mode`. This module wires them to the engine:

- **Inbound**: a verified, de-duplicated Events API body -> ``decode_event``
  -> ``port.offer``, which never waits for mailbox room. ``UnavailableError``
  from the engine (``MailboxFullError`` when the conversation is busy)
  propagates so the event is not acknowledged (HTTP 503, no Socket Mode ack)
  and Slack redelivers it; nothing is lost and no inbound task waits.
- **Outbound**: a canonical event for a Slack user -> the session's private
  conversation (created on first use: ``#ext-<contact>``, the bot and the
  user) -> ``encode_event`` -> Web API calls under the contact's name.
- **Installations**: one per workspace, stored in the directory with their
  tokens (never logged). A revoked installation is marked and its tokens are
  never used again; deliveries to it fail with ``installation-revoked``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import trio

from engine import (
    Address,
    Availability,
    Capability,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryError,
    DeliveryOutcome,
    DeliveryResult,
    EnginePort,
    Event,
    FileShare,
    Ignored,
    Installation,
    InvalidAddressError,
    MailboxFullError,
    Mention,
    PlatformIdentity,
    Presence,
    Profile,
    RichText,
    SessionRecord,
    UnavailableError,
    Untranslatable,
    session_id_for,
)
from engine.richtext import Block, ListBlock, Paragraph, Quote

from .._bounded import Bounded
from ._file_links import FileTicket, open_ticket, sign_ticket
from ._inbound import EventDeduplicator, SlackEventsApp, serve_http
from ._routes import SlackRoutes
from ._socket_mode import SocketModeClient
from ._translate import (
    PLATFORM,
    ApiCall,
    FileUpload,
    OutboundContext,
    Revoked,
    Sender,
    decode_event,
    encode_event,
    message_key,
    profile_event,
)
from ._webapi import Download, SlackApiError, SlackWebClient

log = logging.getLogger("interlink.slack")

CAPABILITIES: frozenset[Capability] = frozenset({
    "edits", "retractions", "reactions", "presence", "profiles", "files", "contacts",
    "outcomes", "threads",
})

_NAME_LIMIT = 80  # Slack's channel-name limit
_NAME_ATTEMPTS = 20


class SlackInstallationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A workspace installation given by configuration (the bot token already resolved)."""

    team_id: str
    bot_token: str


class SlackSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the adapter behaves; secrets come separately in :class:`SlackSecrets`."""

    name: str = PLATFORM
    #: "socket": Socket Mode (no public URL needed); "http": Slack POSTs to ``listen``
    mode: str = "socket"
    #: HTTP listener for events (http mode), slash commands and the OAuth install flow
    listen_host: str = "127.0.0.1"
    listen_port: int | None = None
    #: where users are sent to install the app (OAuth v2)
    authorize_url: str = "https://slack.com/oauth/v2/authorize"
    redirect_uri: str = ""
    bot_scopes: tuple[str, ...] = (
        "chat:write", "chat:write.customize", "groups:write", "groups:read", "groups:history",
        "im:write", "im:history", "reactions:read", "reactions:write", "users:read",
        "users:read.email", "files:read", "files:write", "commands")
    conversation_prefix: str = "ext-"
    #: seconds between presence polls of Slack users with active federations
    presence_interval: float = 60.0
    #: Slack users whose presence is followed (least recently active dropped first)
    max_followed_users: int = 10_000
    #: contacts' names and avatars remembered for ``username`` / ``icon_url``
    max_profiles: int = 50_000
    #: refresh rotating tokens this long before they expire
    token_refresh_margin: float = 3600.0
    #: where contacts on other platforms reach this adapter's listener (file links);
    #: empty: contacts get Slack's own file URL, which needs a Slack login
    public_url: str = ""
    #: seconds a file link stays valid
    file_link_lifetime: float = 3600.0


class SlackSecrets(msgspec.Struct, frozen=True, kw_only=True):
    signing_secret: str = ""
    app_token: str = ""
    client_id: str = ""
    client_secret: str = ""
    #: signs file links (>= 32 bytes); empty: a random key per process, so links
    #: handed out before a restart stop working after it
    file_link_key: str = ""

    def __repr__(self) -> str:
        return "SlackSecrets(<redacted>)"


#: reads the secrets and configured installations (see ``SlackAdapter.__init__``)
SecretsSource = Callable[[], tuple[SlackSecrets, Sequence[SlackInstallationConfig]]]


class SlackStats(msgspec.Struct, kw_only=True):
    events_submitted: int = 0
    ignored: dict[str, int] = msgspec.field(default_factory=dict)
    commands: int = 0
    deliveries: int = 0
    delivery_failures: int = 0
    conversations_created: int = 0
    presence_changes: int = 0
    profiles_skipped: int = 0




def conversation_name(prefix: str, contact: Address) -> str:
    """``ext-peter-widget-com``: Slack's rules (lowercase, a-z 0-9 - _, at most 80)."""
    slug = re.sub(r"[^a-z0-9_]+", "-", f"{contact.user}-{contact.domain}".lower()).strip("-")
    return (prefix + slug)[:_NAME_LIMIT - 4].rstrip("-")


class FollowedUsers:
    """Slack users whose presence is polled, each with the state last told to contacts.

    Bounded, least recently seen dropped first; a dropped user's presence state
    goes with them (one map, so the two can never drift apart).
    """

    def __init__(self, limit: int) -> None:
        self._users: Bounded = Bounded(limit)  # address -> [identity, told state or None]

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, address: object) -> bool:
        return address in self._users

    def follow(self, identity: PlatformIdentity) -> bool:
        """Follow (or refresh) ``identity``; True when it was not followed before."""
        entry = self._users.get(identity.address)
        self._users.remember(identity.address, [identity, None if entry is None else entry[1]])
        return entry is None

    def forget(self, address: Address) -> None:
        self._users.pop(address, None)

    def snapshot(self) -> list[tuple[Address, PlatformIdentity]]:
        return [(address, entry[0]) for address, entry in self._users.items()]

    def told(self, address: Address) -> Availability | None:
        """The presence last told for ``address`` (``None``: none, or not followed)."""
        entry = self._users.get(address)
        return None if entry is None else entry[1]

    def tell(self, address: Address, state: Availability) -> bool:
        """Record ``state`` for a followed user; False when it is what was told already
        (or the user is no longer followed: nothing to tell)."""
        entry = self._users.get(address)
        if entry is None or entry[1] == state:
            return False
        entry[1] = state
        return True

    def untell(self, address: Address) -> None:
        """The last state did not reach the engine: tell it again on the next poll."""
        entry = self._users.get(address)
        if entry is not None:
            entry[1] = None


class SlackAdapter:
    """Interlink on Slack: one adapter serves every installed workspace."""

    def __init__(self, *, settings: SlackSettings | None = None,
                 secrets: SlackSecrets | None = None, web: SlackWebClient,
                 installations: Iterable[SlackInstallationConfig] = (),
                 secrets_source: SecretsSource | None = None,
                 dedupe: EventDeduplicator | None = None,
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
        self.dedupe = dedupe or EventDeduplicator()
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
        self.ready = trio.Event()
        self._run_files: httpx.AsyncClient | None = None
        self._profile_requests, self._profile_requests_out = \
            trio.open_memory_channel[PlatformIdentity](1000)

    # -- Adapter protocol -------------------------------------------------------
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    @property
    def port(self) -> EnginePort:
        if self._port is None:
            raise UnavailableError("the Slack adapter is not running")
        return self._port

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
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
                                              dedupe=self.dedupe)
                    await nursery.start(client.run)
                if self.settings.mode == "http" or self.settings.listen_port is not None:
                    events: object = _no_events
                    if self._secrets.signing_secret:
                        events = SlackEventsApp(
                            signing_secret=self._secrets.signing_secret, handler=self,
                            dedupe=self.dedupe, clock=port.clock.now)
                    elif self.settings.mode == "http":
                        raise UnavailableError("HTTP mode needs the app's signing secret")
                    app = SlackRoutes(self, events)
                    self.listen_port = await nursery.start(
                        lambda task_status: serve_http(app, host=self.settings.listen_host,
                                                       port=self.settings.listen_port or 0,
                                                       task_status=task_status))
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

    def _fetcher(self) -> httpx.AsyncClient:
        """The client that fetches files contacts share (any URL; no Slack token sent)."""
        client = self._files or self._run_files
        if client is None:
            raise DeliveryError("not-running", retryable=True)
        return client

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        try:
            return await self._deliver(event, session)
        except SlackApiError as exc:
            self.stats.delivery_failures += 1
            if exc.auth_failed:
                identity = self.port.directory.get_identity(event.destination)
                if identity is not None:
                    await self._revoke(identity.tenant, f"{exc.method}:{exc.error}")
            raise DeliveryError(exc.error, retryable=exc.retryable) from None
        except Untranslatable as exc:
            self.stats.delivery_failures += 1
            raise DeliveryError(exc.reason) from None

    # -- outbound -------------------------------------------------------------
    async def _deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        directory = self.port.directory
        if isinstance(event, Profile):
            self._profiles.remember(event.source, event)
            return DeliveryResult()
        if isinstance(event, DeliveryOutcome) and event.status == "delivered":
            # Slack has no delivery or read receipts: a contact's receipt (XEP-0184)
            # has no Slack form, and a bot notice per message would be noise
            return DeliveryResult()
        identity = directory.get_identity(event.destination)
        if identity is None or identity.platform != self.name:
            raise DeliveryError("unknown-address")
        token = self._bot_token(identity.tenant)
        self._follow(identity)
        known = session or directory.find_session(event.source, event.destination)
        if session is not None:
            channel = await self._conversation(session, identity, event.source, token)
        elif known is not None and known.conversation_ids.get(self.name):
            channel = known.conversation_ids[self.name]  # e.g. a refusal of a message there
        else:
            channel = await self._direct_channel(identity, token)
        if isinstance(event, Presence):
            return await self._show_presence(event, identity, channel, token)
        context = OutboundContext(
            channel=channel, sender=self._sender(event.source),
            message_keys=self._message_keys(event), user_ids=self._mentioned_ids(event))
        message_ts = ""
        for call in encode_event(event, context):
            if isinstance(call, FileUpload):
                message_ts = await self._upload(call, identity.tenant, token)
                continue
            answer = await self._call(call, identity.tenant, token)
            if call.result == "message":
                message_ts = str(answer.get("ts", ""))
        self.stats.deliveries += 1
        log.debug("slack delivered", extra={
            "kind": event.log_type, "event_id": event.event_id, "team_id": identity.tenant,
            "channel": channel, "destination": str(event.destination)})
        return DeliveryResult(
            platform_message_id=message_key(channel, message_ts) if message_ts else "",
            conversation_id=channel if session is not None else "")

    async def _call(self, call: ApiCall, team_id: str, token: str) -> dict[str, Any]:
        try:
            return await self.web.call(call.method, token=token, team_id=team_id,
                                       args=call.args)
        except SlackApiError as exc:
            if exc.error in call.harmless:
                return {}
            raise

    async def _upload(self, upload: FileUpload, team_id: str, token: str) -> str:
        """Stream the file at ``upload.url`` into Slack's upload flow (nothing on disk)."""
        limit = self.web.settings.max_upload_bytes
        try:
            async with self._fetcher().stream("GET", upload.url, timeout=30.0) as response:
                if response.status_code != 200:
                    raise DeliveryError(f"file-fetch:http_{response.status_code}",
                                        retryable=response.status_code >= 500)
                declared = response.headers.get("content-length", "")
                content: AsyncIterable[bytes] | bytes
                if declared.isdigit():
                    length, content = int(declared), response.aiter_bytes()
                else:  # no length: Slack needs one up front, so read it (bounded)
                    content = await _read_bounded(response, limit)
                    length = len(content)
                if length > limit:
                    raise DeliveryError("file-too-large")
                file = await self.web.upload_file(
                    token=token, team_id=team_id, channel_id=upload.channel,
                    filename=upload.filename, content=content, length=length,
                    title=upload.title, initial_comment=upload.initial_comment,
                    thread_ts=upload.thread_ts)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"file-fetch:{type(exc).__name__}", retryable=True) from None
        shares = file.get("shares") if isinstance(file, dict) else None
        for kind in ("private", "public"):
            posts = (shares or {}).get(kind, {}).get(upload.channel) if shares else None
            if posts:
                return str(posts[0].get("ts", ""))
        return ""

    async def _show_presence(self, event: Presence, identity: PlatformIdentity, channel: str,
                             token: str) -> DeliveryResult:
        context = OutboundContext(channel=channel, sender=self._sender(event.source))
        (call,) = encode_event(event, context)
        assert isinstance(call, ApiCall)
        if self._topics.get(channel) != call.args["topic"]:
            await self._call(call, identity.tenant, token)
            self._topics.remember(channel, call.args["topic"])
        return DeliveryResult(conversation_id=channel)

    def _sender(self, address: Address) -> Sender:
        profile = self._profiles.get(address)
        if isinstance(profile, Profile) and profile.name:
            return Sender(name=profile.name, icon_url=profile.avatar_url)
        return Sender(name=str(address))

    def _message_keys(self, event: Event) -> dict[str, str]:
        directory = self.port.directory
        wanted = [getattr(event, field, None)
                  for field in ("target_id", "thread_id", "reply_to")]
        keys: dict[str, str] = {}
        for canonical_id in wanted:
            if isinstance(canonical_id, str) and canonical_id:
                record = directory.get_message_ids(canonical_id)
                if record is not None and self.name in record.platform_ids:
                    keys[canonical_id] = record.platform_ids[self.name]
        return keys

    def _mentioned_ids(self, event: Event) -> dict[str, str]:
        body = getattr(event, "body", None)
        if not isinstance(body, RichText):
            return {}
        found: dict[str, str] = {}
        for mention in _mentions(body.blocks):
            try:
                identity = self.port.directory.get_identity(Address.parse(mention.address))
            except InvalidAddressError:
                continue
            if identity is not None and identity.platform == self.name:
                found[mention.address] = identity.user_id
        return found

    async def _conversation(self, session: SessionRecord, identity: PlatformIdentity,
                            contact: Address, token: str) -> str:
        """The session's private conversation, created (bot + user) on first use."""
        directory = self.port.directory
        lock = self._conversation_locks.setdefault(session.session_id, trio.Lock())
        try:
            async with lock:
                current = directory.get_session(session.session_id) or session
                channel = current.conversation_ids.get(self.name)
                if not channel:
                    channel = await self._create_conversation(identity, contact, token)
                    # stored at once: a failure below must not create a second channel
                    await directory.put_session(msgspec.structs.replace(
                        current, conversation_ids={**current.conversation_ids,
                                                   self.name: channel}))
                if channel not in self._invited:
                    await self._invite(channel, identity, contact, token)
                return channel
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._conversation_locks.pop(session.session_id, None)

    async def _create_conversation(self, identity: PlatformIdentity, contact: Address,
                                   token: str) -> str:
        base = conversation_name(self.settings.conversation_prefix, contact)
        team_id = identity.tenant
        for attempt in range(_NAME_ATTEMPTS):
            name = base if attempt == 0 else f"{base}-{attempt + 1}"
            try:
                answer = await self.web.call("conversations.create", token=token,
                                             team_id=team_id,
                                             args={"name": name, "is_private": True})
            except SlackApiError as exc:
                if exc.error == "name_taken":
                    continue
                raise
            channel = str(answer["channel"]["id"])
            self.stats.conversations_created += 1
            log.info("slack conversation created", extra={
                "team_id": team_id, "channel": channel, "user_id": identity.user_id})
            return channel
        raise DeliveryError("conversation-name-exhausted")

    async def open_conversation(self, local: Address, contact: Address) -> str:
        """The private conversation of a Slack user with a contact, created if needed."""
        directory = self.port.directory
        identity = directory.get_identity(local)
        if identity is None or identity.platform != self.name:
            raise DeliveryError("unknown-address")
        session = directory.find_session(local, contact)
        if session is None:
            a, b = sorted((local, contact))
            session = SessionRecord(session_id=session_id_for(a, b), a=a, b=b,
                                    created_at=self.port.clock.now())
            await directory.put_session(session)
        return await self._conversation(session, identity, contact,
                                        self._bot_token(identity.tenant))

    async def _invite(self, channel: str, identity: PlatformIdentity, contact: Address,
                      token: str) -> None:
        """Make sure the Slack user is in the conversation (once per channel and process)."""
        team_id = identity.tenant
        try:
            await self.web.call("conversations.invite", token=token, team_id=team_id,
                                args={"channel": channel, "users": identity.user_id})
            await self.web.call("conversations.setTopic", token=token, team_id=team_id,
                                args={"channel": channel,
                                      "topic": f"Chat with {contact} through Interlink"})
        except SlackApiError as exc:
            if exc.error != "already_in_channel":
                raise
        self._invited.remember(channel, True)

    async def _direct_channel(self, identity: PlatformIdentity, token: str) -> str:
        """The bot's DM with the user: where notices without a session go."""
        answer = await self.web.call("conversations.open", token=token, team_id=identity.tenant,
                                     args={"users": identity.user_id})
        return str(answer["channel"]["id"])

    # -- installations ------------------------------------------------------------
    def _installation(self, team_id: str) -> Installation:
        installation = self.port.directory.get_installation(self.name, team_id)
        if installation is None:
            raise DeliveryError("not-installed")
        if installation.status != "active":
            raise DeliveryError("installation-revoked")
        return installation

    def _bot_token(self, team_id: str) -> str:
        token = self._installation(team_id).credentials.get("bot_token", "")
        if not token:
            raise DeliveryError("not-installed")
        return token

    async def _install_configured(self) -> None:
        directory = self.port.directory
        for configured in self._configured:
            current = directory.get_installation(self.name, configured.team_id)
            if current is not None and current.credentials.get("bot_token") == \
                    configured.bot_token and current.status == "active":
                continue
            await directory.put_installation(Installation(
                platform=self.name, tenant=configured.team_id,
                credentials={"bot_token": configured.bot_token},
                installed_at=self.port.clock.now()))

    async def _learn_identity(self, installation: Installation) -> None:
        """Ask auth.test who the bot is (for loop prevention); keep it with the installation."""
        token = installation.credentials.get("bot_token", "")
        try:
            answer = await self.web.call("auth.test", token=token, team_id=installation.tenant)
        except SlackApiError as exc:
            if exc.auth_failed:  # the token is dead: say so once, stop using it
                await self._revoke(installation.tenant, f"auth.test:{exc.error}")
                return
            raise
        own = {str(answer.get(k, "")) for k in ("user_id", "bot_id", "app_id")} - {""}
        self._own[installation.tenant] = frozenset(own)
        credentials = {**installation.credentials,
                       "bot_user_id": str(answer.get("user_id", "")),
                       "bot_id": str(answer.get("bot_id", ""))}
        if credentials != installation.credentials:
            await self.port.directory.put_installation(
                msgspec.structs.replace(installation, credentials=credentials))

    async def _revoke(self, team_id: str, reason: str) -> None:
        directory = self.port.directory
        installation = directory.get_installation(self.name, team_id)
        if installation is None or installation.status == "revoked":
            return
        await directory.put_installation(msgspec.structs.replace(
            installation, status="revoked", credentials={}))
        self._own.pop(team_id, None)
        # The operator's signal: a warning with the team; deliveries now fail clearly.
        log.warning("slack installation revoked; its tokens are no longer used", extra={
            "team_id": team_id, "reason": reason})

    async def install(self, code: str) -> Installation:
        """Finish the OAuth v2 install flow: exchange ``code`` and store the installation."""
        answer = await self.web.call("oauth.v2.access", token="", team_id="", args={
            "code": code, "redirect_uri": self.settings.redirect_uri,
            "client_id": self._secrets.client_id,
            "client_secret": self._secrets.client_secret})
        team = answer.get("team") or {}
        credentials = {"bot_token": str(answer.get("access_token", "")),
                       "bot_user_id": str(answer.get("bot_user_id", ""))}
        if answer.get("refresh_token"):
            credentials["refresh_token"] = str(answer["refresh_token"])
            credentials["expires_at"] = str(self.port.clock.now()
                                            + float(answer.get("expires_in", 43_200)))
        installation = Installation(platform=self.name, tenant=str(team.get("id", "")),
                                    credentials=credentials, installed_at=self.port.clock.now())
        if not installation.tenant or not credentials["bot_token"]:
            raise UnavailableError("oauth.v2.access answered without a team or a bot token")
        await self.port.directory.put_installation(installation)
        await self._learn_identity(installation)
        log.info("slack workspace installed", extra={"team_id": installation.tenant})
        return installation

    def authorize_url(self, state: str) -> str | None:
        """Slack's page where a person installs the app (``None``: OAuth not configured)."""
        if not self._secrets.client_id or not self._secrets.client_secret:
            return None
        return self.settings.authorize_url + "?" + urlencode({
            "client_id": self._secrets.client_id, "scope": ",".join(self.settings.bot_scopes),
            "state": state, "redirect_uri": self.settings.redirect_uri})

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
        if not isinstance(event, FileShare) or not self.settings.public_url:
            return event
        ticket = FileTicket(url=event.url, team_id=team_id, name=event.name,
                            expires=self.port.clock.now() + self.settings.file_link_lifetime)
        link = (self.settings.public_url.rstrip("/") + "/slack/files/"
                + sign_ticket(ticket, self._file_key))
        return msgspec.structs.replace(event, url=link)

    async def _refresh_tokens(self) -> None:
        """Rotate expiring tokens (``grant_type=refresh_token``) well before they expire."""
        while True:
            now = self.port.clock.now()
            for installation in self.port.directory.list_installations(self.name):
                credentials = installation.credentials
                expires_at = float(credentials.get("expires_at", "inf"))
                if (installation.status != "active" or "refresh_token" not in credentials
                        or expires_at - self.settings.token_refresh_margin > now):
                    continue
                try:
                    answer = await self.web.call("oauth.v2.access", token="", team_id="", args={
                        "grant_type": "refresh_token",
                        "refresh_token": credentials["refresh_token"],
                        "client_id": self._secrets.client_id,
                        "client_secret": self._secrets.client_secret})
                except SlackApiError as exc:
                    log.warning("slack token refresh failed", extra={
                        "team_id": installation.tenant, "error": exc.error})
                    if not exc.retryable:
                        await self._revoke(installation.tenant, f"refresh:{exc.error}")
                    continue
                await self.port.directory.put_installation(msgspec.structs.replace(
                    installation, credentials={
                        **credentials, "bot_token": str(answer.get("access_token", "")),
                        "refresh_token": str(answer.get("refresh_token")
                                             or credentials["refresh_token"]),
                        "expires_at": str(now + float(answer.get("expires_in", 43_200)))}))
                log.info("slack token rotated", extra={"team_id": installation.tenant})
            await trio.sleep(60)

    # -- inbound (InboundHandler) -----------------------------------------------
    async def on_event(self, body: dict[str, Any]) -> None:
        team_id = str(body.get("team_id", ""))
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
        event_id = str(body.get("event_id", ""))
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

    def _ignore(self, reason: str) -> None:
        counts = self.stats.ignored
        if reason in counts or len(counts) < 100:
            counts[reason] = counts.get(reason, 0) + 1
        log.debug("slack event ignored", extra={"reason": reason})

    async def on_command(self, form: Mapping[str, str]) -> dict[str, Any]:
        self.stats.commands += 1
        text = " ".join(form.get("text", "").split())
        verb, _, argument = text.partition(" ")
        verb = verb.lower()
        if verb in ("", "help"):
            return _ephemeral(HELP)
        if verb not in ("add", "remove", "accept", "list"):
            return _ephemeral(f"Unknown command `{verb}`.\n{HELP}")
        team_id, user_id = form.get("team_id", ""), form.get("user_id", "")
        try:
            self._installation(team_id)
            me = await self.ensure_identity(team_id, user_id)
        except DeliveryError as exc:
            return _ephemeral(f"Interlink cannot act for you here: {exc.reason}.")
        if verb == "list":
            return _ephemeral(self._contact_list(me))
        if not argument:
            return _ephemeral(f"Usage: `/interlink {verb} name@example.com`")
        try:
            contact = Address.parse(argument.strip("<>").removeprefix("mailto:").split("|")[0])
        except InvalidAddressError as exc:
            return _ephemeral(f"`{argument}` is not an address: {exc}. "
                              "Write it as name@domain, e.g. `peter@widget.com`.")
        if contact == me:
            return _ephemeral("That is your own address.")
        now = self.port.clock.now()
        event: Event = (ContactRequest(source=me, destination=contact, timestamp=now)
                        if verb == "add" else
                        ContactRemove(source=me, destination=contact, timestamp=now)
                        if verb == "remove" else
                        ContactAccept(source=me, destination=contact, timestamp=now))
        try:
            await self.port.offer(event)  # never waits for mailbox room
        except MailboxFullError:
            return _ephemeral("Interlink is busy with your conversations; please try again "
                              "in a moment.")
        except UnavailableError:
            return _ephemeral("Interlink is restarting; please try again in a moment.")
        return _ephemeral({
            "add": f"Asked {contact} to connect. Once they accept, a private conversation "
                   f"with them appears in your sidebar.",
            "remove": f"Removed {contact}.",
            "accept": f"Accepted {contact}; chat with them in your private conversation.",
        }[verb])

    def _contact_list(self, me: Address) -> str:
        contacts = [c for c in self.port.directory.list_contacts(me) if c.state != "removed"]
        if not contacts:
            return "You have no external contacts yet. Add one with `/interlink add name@domain`."
        lines = []
        for record in contacts[:100]:
            if record.state == "accepted":
                state = "connected"
            else:
                state = "waiting for them" if record.requested_by == me else \
                    f"waiting for you (`/interlink accept {record.contact}`)"
            lines.append(f"• {record.contact} — {state}")
        more = len(contacts) - 100
        return "Your external contacts:\n" + "\n".join(lines) + (
            f"\n…and {more} more" if more > 0 else "")

    async def ensure_identity(self, team_id: str, user_id: str) -> Address:
        """The address of a Slack user, registered from their profile email on first use."""
        directory = self.port.directory
        known = directory.find_address(self.name, team_id, user_id)
        if known is not None:
            return known
        token = self._bot_token(team_id)
        try:
            answer = await self.web.call("users.info", token=token, team_id=team_id,
                                         args={"user": user_id})
        except SlackApiError as exc:
            raise DeliveryError(f"users.info:{exc.error}") from None
        user = answer.get("user") or {}
        email = str((user.get("profile") or {}).get("email", ""))
        try:
            address = Address.parse(email)
        except InvalidAddressError:
            raise DeliveryError("your Slack profile has no usable email address") from None
        route = directory.get_domain_route(address.domain)
        if route is None or route.platform != self.name or route.tenant not in ("", team_id):
            raise DeliveryError(f"the domain {address.domain} is not set up for federation "
                                f"from this workspace")
        identity = PlatformIdentity(address=address, platform=self.name, tenant=team_id,
                                    user_id=user_id)
        await directory.put_identity(identity)
        log.info("slack user registered", extra={"team_id": team_id, "user_id": user_id})
        self._follow(identity)
        return address

    async def _open_socket_url(self) -> str:
        answer = await self.web.call("apps.connections.open", token=self._secrets.app_token,
                                     team_id="")
        return str(answer["url"])

    # -- presence ---------------------------------------------------------------
    def _follow(self, identity: PlatformIdentity) -> None:
        """Follow a Slack user who federates: presence polls, and their profile once."""
        if self._followed.follow(identity):
            try:
                self._profile_requests.send_nowait(identity)
            except trio.WouldBlock:
                self.stats.profiles_skipped += 1  # bounded: a later sighting asks again

    async def _publish_profiles(self) -> None:
        """Read followed users' profiles (users.info) and broadcast them to their contacts."""
        async for identity in self._profile_requests_out:
            try:
                answer = await self.web.call("users.info", token=self._bot_token(identity.tenant),
                                             team_id=identity.tenant,
                                             args={"user": identity.user_id})
                await self.port.submit(profile_event(identity.address, answer.get("user") or {},
                                                     timestamp=self.port.clock.now()))
            except (DeliveryError, SlackApiError, UnavailableError) as exc:
                self._followed.forget(identity.address)  # ask again next time
                log.info("slack profile not read", extra={
                    "team_id": identity.tenant, "user_id": identity.user_id,
                    "error": type(exc).__name__})

    async def _poll_presence(self) -> None:
        """Slack has no presence events for apps: poll the users who federate."""
        while True:
            await trio.sleep(self.settings.presence_interval)
            for address, identity in self._followed.snapshot():
                if not any(c.state == "accepted"
                           for c in self.port.directory.list_contacts(address)):
                    continue
                try:
                    token = self._bot_token(identity.tenant)
                    answer = await self.web.call("users.getPresence", token=token,
                                                 team_id=identity.tenant,
                                                 args={"user": identity.user_id})
                except (DeliveryError, SlackApiError):
                    continue
                state: Availability = "available" if answer.get("presence") == "active" \
                    else "away"
                if not self._followed.tell(address, state):
                    continue
                self.stats.presence_changes += 1
                try:
                    await self.port.submit(Presence(
                        source=address, destination=address, availability=state,
                        timestamp=self.port.clock.now()))
                except UnavailableError:
                    self._followed.untell(address)  # not told: tell again next poll


HELP = ("*Interlink* connects you with people on other chat platforms.\n"
        "• `/interlink add name@domain` — ask an external contact to connect\n"
        "• `/interlink accept name@domain` — accept a contact's request\n"
        "• `/interlink remove name@domain` — remove a contact\n"
        "• `/interlink list` — your external contacts\n"
        "Each contact gets a private conversation: what you write there goes to them.")


async def _no_events(scope: Any, receive: Any, send: Any) -> None:
    """Events over HTTP are off (Socket Mode without a signing secret)."""
    if scope.get("type") != "http":
        return
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"events arrive over Socket Mode"})


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise DeliveryError("file-too-large")
    return bytes(data)


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def _mentions(blocks: Iterable[Block]) -> Iterable[Mention]:
    for block in blocks:
        if isinstance(block, Paragraph):
            yield from (i for i in block.inlines if isinstance(i, Mention))
        elif isinstance(block, Quote):
            yield from _mentions(block.blocks)
        elif isinstance(block, ListBlock):
            for item in block.items:
                yield from _mentions(item)


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
