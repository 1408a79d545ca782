"""Slack workspaces: the adapter's configuration, its installations and their tokens.

The rules:

- One installation per workspace (team), stored in the directory with its
  tokens; tokens are never logged. Configured installations
  (:class:`SlackInstallationConfig`) are written at start; OAuth v2 installs
  (``/slack/install`` -> Slack -> ``/slack/oauth_redirect`` -> :meth:`install`)
  add more at run time.
- At start, and after each install, ``auth.test`` tells which user, bot and
  app ids are Interlink's own (loop prevention: their events are ignored).
- An installation whose token Slack refuses (``invalid_auth``, ``token_revoked``,
  an ``app_uninstalled`` / ``tokens_revoked`` event, a failed refresh) is marked
  revoked, its tokens dropped and never used again; deliveries to it fail with
  ``installation-revoked``. The operator hears it once, as a warning.
- Rotating tokens are refreshed ``token_refresh_margin`` seconds before they expire.

:class:`InstallationsPart` is the bottom layer of :class:`SlackAdapter`: the
state every other part shares (settings, Web API client, counters, the engine
port) is declared here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import msgspec
import trio

from engine import (
    DeliveryError,
    EnginePort,
    Installation,
    UnavailableError,
)

from ._client import SlackWebClient
from ._errors import SlackApiError
from ._translate import PLATFORM
from ._views import AuthTest, OAuthAccess

log = logging.getLogger("interlink.slack")


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
    #: conversations found gone (channel_not_found, archived, app removed) and reopened
    conversations_reopened: int = 0
    presence_changes: int = 0
    profiles_skipped: int = 0


class InstallationsPart:
    """Workspaces and their tokens; the state the adapter's other parts share."""

    settings: SlackSettings
    web: SlackWebClient
    stats: SlackStats
    _secrets: SlackSecrets
    _configured: tuple[SlackInstallationConfig, ...]
    _port: EnginePort | None
    #: per team: ids that are Interlink's own (bot user, bot, app)
    _own: dict[str, frozenset[str]]

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def port(self) -> EnginePort:
        if self._port is None:
            raise UnavailableError("the Slack adapter is not running")
        return self._port

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
            answer = await self.web.call("auth.test", token=token, team_id=installation.tenant,
                                         into=AuthTest)
        except SlackApiError as exc:
            if exc.auth_failed:  # the token is dead: say so once, stop using it
                await self._revoke(installation.tenant, f"auth.test:{exc.error}")
                return
            raise
        own = {answer.user_id, answer.bot_id, answer.app_id} - {""}
        self._own[installation.tenant] = frozenset(own)
        credentials = {**installation.credentials, "bot_user_id": answer.user_id,
                       "bot_id": answer.bot_id}
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
            "client_secret": self._secrets.client_secret}, into=OAuthAccess)
        credentials = {"bot_token": answer.access_token, "bot_user_id": answer.bot_user_id}
        if answer.refresh_token:
            credentials["refresh_token"] = answer.refresh_token
            credentials["expires_at"] = str(self.port.clock.now() + _lifetime(answer))
        installation = Installation(platform=self.name,
                                    tenant=answer.team.id if answer.team is not None else "",
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
                        "client_secret": self._secrets.client_secret}, into=OAuthAccess)
                except SlackApiError as exc:
                    log.warning("slack token refresh failed", extra={
                        "team_id": installation.tenant, "error": exc.error})
                    if not exc.retryable:
                        await self._revoke(installation.tenant, f"refresh:{exc.error}")
                    continue
                await self.port.directory.put_installation(msgspec.structs.replace(
                    installation, credentials={
                        **credentials, "bot_token": answer.access_token,
                        "refresh_token": answer.refresh_token or credentials["refresh_token"],
                        "expires_at": str(now + _lifetime(answer))}))
                log.info("slack token rotated", extra={"team_id": installation.tenant})
            await trio.sleep(60)


def _lifetime(answer: OAuthAccess) -> float:
    """Seconds a rotated token lives (Slack's default, 12 hours, when it says nothing)."""
    return answer.expires_in if answer.expires_in is not None else 43_200.0
