"""The Slack adapter's plug into ``interlink run``: its config, check and factory,
and the embedded Slack sandbox (demos) as a service.

Rules:

- Secrets never live in the config: each names an environment variable or a
  file (:class:`engine.SecretRef`), read when the adapter starts.
- The sandbox, when enabled, writes its app's credentials as files (mode
  0600) under ``sandbox.secrets_dir``, where the adapter's ``SecretRef``
  entries of the demo config point.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import trio

from engine import (
    AdapterConfig,
    AdapterSpec,
    BuildContext,
    ConfigError,
    ConfigSection,
    SecretRef,
    ServiceSpec,
    ServiceStart,
    parse_host_port,
    write_private_file,
)

from ._adapter import SlackAdapter
from ._client import METHOD_TIERS, POST_MESSAGE, SlackWebClient, WebApiSettings
from ._installations import SlackInstallationConfig, SlackSecrets, SlackSettings
from .sandbox import (
    RateLimitSettings,
    RateLimitTable,
    Sandbox,
    SandboxSettings,
    Seed,
    load_seed,
)

log = logging.getLogger("interlink.run")


class SlackInstallationEntry(ConfigSection, frozen=True, kw_only=True):
    """A workspace installed by configuration (OAuth installs are stored at run time)."""

    team_id: str
    bot_token: SecretRef


Positive = Annotated[float, msgspec.Meta(gt=0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
#: ``[adapters.pacing] tier_per_minute``'s default (``WebApiSettings``' own)
DEFAULT_TIER_PER_MINUTE: tuple[float, float, float, float] = WebApiSettings().tier_per_minute


class SlackPacingConfig(ConfigSection, frozen=True, kw_only=True):
    """``[adapters.pacing]``: how fast the adapter posts (``chat.postMessage``) and calls
    every other Web API method (by Slack's tier).

    Defaults follow Slack's published limits ("Rate limits", docs.slack.dev/apis/
    web-api/rate-limits, and the chat.postMessage method page): about one message
    per second per channel with short bursts, and "several hundred messages per
    minute" per workspace, each starting there and adapting up after quiet periods;
    tiers 1-4 at 1+, 20+, 50+ and 100+ calls per minute per method and workspace.
    """

    #: per conversation (channel): messages per second to start at, and the burst
    channel_per_second: Positive = 1.0
    channel_burst: AtLeastOne = 3
    #: the most a channel's rate grows to while Slack answers no 429
    channel_max_per_second: Positive = 10.0
    #: per workspace, across its conversations: messages per minute to start at, burst
    workspace_per_minute: Positive = 500.0
    workspace_burst: AtLeastOne = 50
    #: the most the workspace's rate grows to while Slack answers no 429
    workspace_max_per_minute: Positive = 6000.0
    #: seconds of posts held back by a budget, with no 429, before it steps up
    raise_after: Positive = 10.0
    #: one step up, as a fraction of the rate (0.25: +25 %)
    raise_by: Positive = 0.25
    #: a 429 multiplies the rate by this (0 < x < 1)
    back_off_by: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    #: every other Web API method, per workspace and method: calls per minute for Slack's
    #: tiers 1-4 (Slack: 1+, 20+, 50+, 100+; a little under, so a 429 is rare), each with
    #: a burst of a minute's worth
    tier_per_minute: Annotated[list[Positive], msgspec.Meta(min_length=4, max_length=4)] = \
        msgspec.field(default_factory=lambda: list(DEFAULT_TIER_PER_MINUTE))
    #: method -> tier (1-4), over the adapter's table of Slack's tiers (``METHOD_TIERS``)
    method_tiers: dict[str, int] = {}


class SlackAdapterConfig(AdapterConfig, frozen=True, kw_only=True, tag="slack",
                         tag_field="type"):
    name: str = "slack"
    #: Slack's Web API, or the local sandbox's (``http://127.0.0.1:3000/api/``); empty:
    #: the embedded sandbox's (``[sandbox]``), found when the adapter starts
    api_url: str = "https://slack.com/api/"
    #: "socket": Socket Mode over a websocket; "http": Slack POSTs events to ``listen``
    mode: Literal["socket", "http"] = "socket"
    #: HOST:PORT for the events endpoint, slash commands and the OAuth install flow
    listen: str = ""
    signing_secret: SecretRef = SecretRef(env="SLACK_SIGNING_SECRET")
    app_token: SecretRef = SecretRef(env="SLACK_APP_TOKEN")
    client_id: str = ""
    client_secret: SecretRef = SecretRef(env="SLACK_CLIENT_SECRET")
    authorize_url: str = "https://slack.com/oauth/v2/authorize"
    redirect_uri: str = ""
    installations: list[SlackInstallationEntry] = []
    #: URL where contacts on other platforms reach ``listen`` (links to Slack files)
    public_url: str = ""
    file_link_key: SecretRef = SecretRef(env="SLACK_FILE_LINK_KEY")
    conversation_prefix: str = "ext-"
    presence_interval: float = 60.0
    #: chat.postMessage pacing: per channel and per workspace, adaptive
    pacing: SlackPacingConfig = SlackPacingConfig()
    #: the older spelling of ``pacing.channel_per_second`` (kept for existing configs)
    post_message_per_second: Positive | None = None


class SandboxSection(ConfigSection, frozen=True, kw_only=True):
    """A local Slack-compatible server started with the engine (demos, never production)."""

    enabled: bool = False
    seed: str = "sandbox-seed.toml"
    listen: str = "127.0.0.1:3000"
    #: where the sandbox writes its apps' credentials for the adapter to read
    secrets_dir: str = "state/sandbox"
    #: true: Slack's limits (or the seed's ``[rate_limits]``); false: none; a table
    #: (``[sandbox.rate_limits]``, :class:`RateLimitTable`): these limits
    rate_limits: bool | RateLimitTable = True


def check_slack_config(entry: SlackAdapterConfig, where: str, context: BuildContext) -> None:
    if entry.mode == "http" and not entry.listen:
        raise ConfigError(f"HTTP mode needs `listen` (HOST:PORT Slack posts events to) - at "
                          f"`{where}.listen`")
    if entry.listen:
        parse_host_port(entry.listen, f"{where}.listen")
    if entry.public_url and not entry.listen:
        raise ConfigError(f"`public_url` needs `listen` (the listener it points at) - at "
                          f"`{where}.public_url`")
    pacing = entry.pacing
    posting = msgspec.structs.replace(pacing, tier_per_minute=list(DEFAULT_TIER_PER_MINUTE),
                                      method_tiers={})
    if entry.post_message_per_second is not None and posting != SlackPacingConfig():
        raise ConfigError(f"`post_message_per_second` is the older spelling of "
                          f"`pacing.channel_per_second`: use one - at "
                          f"`{where}.post_message_per_second`")
    if pacing.channel_max_per_second < pacing.channel_per_second:
        raise ConfigError(f"the ceiling must be at least the start rate "
                          f"({pacing.channel_per_second}) - at "
                          f"`{where}.pacing.channel_max_per_second`")
    if pacing.workspace_max_per_minute < pacing.workspace_per_minute:
        raise ConfigError(f"the ceiling must be at least the start rate "
                          f"({pacing.workspace_per_minute}) - at "
                          f"`{where}.pacing.workspace_max_per_minute`")
    for method, tier in pacing.method_tiers.items():
        _check_method_tier(method, tier, f'{where}.pacing.method_tiers["{method}"]')
    if not entry.api_url:
        sandbox = context.sections.get("sandbox")
        if not isinstance(sandbox, SandboxSection) or not sandbox.enabled:
            raise ConfigError(f"an empty API URL means the embedded sandbox's, but "
                              f"`[sandbox]` is not enabled - at `{where}.api_url`")
    elif not entry.api_url.endswith("/"):
        raise ConfigError(f"the API URL must end with '/' - at `{where}.api_url`")
    for k, installation in enumerate(entry.installations):
        if not installation.bot_token.env and not installation.bot_token.file:
            raise ConfigError(f"name an `env` or `file` holding the bot token - at "
                              f"`{where}.installations[{k}].bot_token`")


def _check_method_tier(method: str, tier: int, where: str) -> None:
    if method == POST_MESSAGE:
        raise ConfigError(f"{POST_MESSAGE} has no tier: its budgets are the `channel_*` and "
                          f"`workspace_*` keys - at `{where}`")
    if method not in METHOD_TIERS:
        close = difflib.get_close_matches(method, METHOD_TIERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{method!r} is not a Web API method the adapter calls{hint} - at "
                          f"`{where}`")
    if not 1 <= tier <= 4:
        raise ConfigError(f"Slack's tiers are 1, 2, 3 and 4, got {tier} - at `{where}`")


def build_slack_adapter(entry: SlackAdapterConfig, context: BuildContext) -> SlackAdapter:
    """The Slack adapter for a config entry. Secrets are read when the adapter starts."""
    host, _, port = entry.listen.rpartition(":")
    settings = SlackSettings(
        name=entry.name, mode=entry.mode, listen_host=host.strip("[]") or "127.0.0.1",
        listen_port=int(port) if entry.listen else None, authorize_url=entry.authorize_url,
        redirect_uri=entry.redirect_uri, conversation_prefix=entry.conversation_prefix,
        presence_interval=entry.presence_interval, public_url=entry.public_url)
    web = SlackWebClient(settings=web_api_settings(entry, entry.api_url or _NO_URL_YET))

    def read_secrets() -> tuple[SlackSecrets, list[SlackInstallationConfig]]:
        if not entry.api_url:  # the embedded sandbox's, published once it serves
            handle = context.services.get("sandbox")
            if not isinstance(handle, SandboxHandle):
                raise ConfigError(f"adapter {entry.name!r}: the embedded Slack sandbox is "
                                  f"not serving (its URL is the adapter's API URL)")
            web.use_base_url(handle.api_url)
        found = SlackSecrets(
            signing_secret=context.secret(entry.signing_secret, "signing secret"),
            app_token=context.secret(entry.app_token, "app-level token"),
            client_id=entry.client_id,
            client_secret=context.secret(entry.client_secret, "client secret"),
            file_link_key=context.secret(entry.file_link_key, "file-link key"))
        if found.file_link_key and len(found.file_link_key.encode()) < 32:
            raise ConfigError(f"adapter {entry.name!r}: the file-link key needs at least 32 "
                              f"bytes")
        if entry.mode == "http" and not found.signing_secret:
            raise ConfigError(f"adapter {entry.name!r}: HTTP mode needs the signing secret "
                              f"({entry.signing_secret.where()})")
        if entry.mode == "socket" and not found.app_token:
            raise ConfigError(f"adapter {entry.name!r}: Socket Mode needs an app-level token "
                              f"({entry.app_token.where()})")
        installations = []
        for item in entry.installations:
            token = context.secret(item.bot_token, "bot token")
            if not token:
                raise ConfigError(f"adapter {entry.name!r}: no bot token for team "
                                  f"{item.team_id} ({item.bot_token.where()})")
            installations.append(SlackInstallationConfig(team_id=item.team_id, bot_token=token))
        return found, installations

    return SlackAdapter(settings=settings, web=web, secrets_source=read_secrets, owns_web=True)


def _channel_rate(entry: SlackAdapterConfig) -> float:
    if entry.post_message_per_second is not None:
        return entry.post_message_per_second
    return entry.pacing.channel_per_second


def web_api_settings(entry: SlackAdapterConfig, base_url: str) -> WebApiSettings:
    """The Web API client's settings for a config entry (its pacing keys)."""
    pacing = entry.pacing
    channel = _channel_rate(entry)
    t1, t2, t3, t4 = pacing.tier_per_minute
    return WebApiSettings(
        base_url=base_url, post_message_per_second=channel,
        post_message_burst=pacing.channel_burst,
        post_message_max_per_second=max(channel, pacing.channel_max_per_second),
        post_message_workspace_per_minute=pacing.workspace_per_minute,
        post_message_workspace_burst=pacing.workspace_burst,
        post_message_workspace_max_per_minute=pacing.workspace_max_per_minute,
        pacing_raise_after=pacing.raise_after, pacing_raise_by=pacing.raise_by,
        pacing_back_off_by=pacing.back_off_by,
        tier_per_minute=(t1, t2, t3, t4), method_tiers={**METHOD_TIERS, **pacing.method_tiers})


#: event ids a sandbox run may use before a restart's take over
_EVENT_IDS_PER_START = 10**9


#: the client's base URL until the embedded sandbox's is known (never called)
_NO_URL_YET = "http://127.0.0.1:0/api/"


class SandboxHandle:
    """What a started sandbox publishes: its base URL (``http://HOST:PORT``) and seed."""

    def __init__(self, url: str, seed: Seed) -> None:
        self.url = url
        self.seed = seed

    @property
    def api_url(self) -> str:
        return self.url + "/api/"


def start_sandbox(section: SandboxSection, context: BuildContext,
                  publish: Callable[[Any], None]) -> ServiceStart | None:
    """The embedded Slack sandbox, when the config enables it (demos only)."""
    if not section.enabled:
        return None
    seed = load_seed(context.path(section.seed))
    host, port = parse_host_port(section.listen, "$.sandbox.listen")
    secrets_dir = context.path(section.secrets_dir)
    starts = 0  # port 0: a free one, then the same one after a restart

    async def run_sandbox(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
        nonlocal starts, port
        starts += 1  # a restart forgets everything but must not reuse event ids
        sandbox = Sandbox(seed, settings=SandboxSettings(
            rate_limits=sandbox_rate_limits(section.rate_limits, seed),
            first_event_id=1 + (starts - 1) * _EVENT_IDS_PER_START))
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: sandbox.serve(
                host=host, port=port, task_status=task_status))
            port = urlsplit(url).port or port
            write_sandbox_secrets(seed, secrets_dir)
            publish(SandboxHandle(url, seed))
            log.info("slack sandbox started", extra={"url": url,
                                                     "secrets_dir": str(secrets_dir)})
            task_status.started()

    return run_sandbox


def sandbox_rate_limits(value: bool | RateLimitTable, seed: Seed) -> RateLimitSettings:
    """``[sandbox] rate_limits`` as the sandbox's settings: a table wins, ``true`` takes
    the seed's ``[rate_limits]`` (or Slack's), ``false`` switches every limit off."""
    if isinstance(value, RateLimitTable):
        return value.settings()
    if not value:
        return RateLimitSettings(enabled=False)
    return seed.rate_limits.settings() if seed.rate_limits is not None \
        else RateLimitSettings()


def write_sandbox_secrets(seed: Seed, directory: Path) -> None:
    """Each app's credentials as files: ``app_token``, ``signing_secret``,
    ``client_secret`` and ``bot_token.<TEAM>`` (one app per sandbox here)."""
    directory.mkdir(parents=True, exist_ok=True)
    for workspace in seed.workspace:
        for app in workspace.app:
            values = {"app_token": app.app_token, "signing_secret": app.signing_secret,
                      "client_secret": app.client_secret,
                      f"bot_token.{workspace.id}": app.bot_token}
            for name, value in values.items():
                if value:
                    write_private_file(directory / name, value)


SPEC = AdapterSpec(config_type=SlackAdapterConfig, build=build_slack_adapter,
                   check=check_slack_config,
                   # httpx logs request URLs (file names, channel ids): warnings only
                   quiet_loggers={"httpx": logging.WARNING, "httpcore": logging.WARNING})
SANDBOX = ServiceSpec(section="sandbox", config_type=SandboxSection, start=start_sandbox,
                      shutdown=3.0)
