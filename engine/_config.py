"""Configuration: one TOML file decoded into msgspec Structs.

Unknown keys are errors (a typo must not silently fall back to a default).
Every error names the file, the field path and what was expected. Relative
paths are resolved against the directory holding the config file. Secrets
never live here: adapters name environment variables or files to read them
from.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from ._address import Address
from ._directory import (
    ContactRecord,
    Directory,
    DomainAgreement,
    DomainRoute,
    PlatformIdentity,
    UserPolicy,
)
from ._engine import EngineSettings
from ._errors import ConfigError, InvalidAddressError
from ._router import RoutingSettings
from ._session import DeliverySettings


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class EngineSection(_Section, frozen=True, kw_only=True):
    data_dir: str = "state/data"
    shard_count: int = 16
    mailbox_capacity: int = 1000
    session_idle_timeout: float = 300.0
    contact_idle_timeout: float = 900.0
    max_attempts: int = 3
    max_restarts: int = 10
    restart_window: float = 60.0
    drain_timeout: float = 10.0
    message_id_retention_days: float = 30.0


class StorageSection(_Section, frozen=True, kw_only=True):
    backend: Literal["lmdb", "memory"] = "lmdb"
    map_size_mb: int = 64
    max_pending_writes: int = 50_000


class MetadataSection(_Section, frozen=True, kw_only=True):
    backend: Literal["lmdb", "memory"] = "lmdb"
    retention_days: float = 90
    rollup_retention_days: float = 400


class PolicySection(_Section, frozen=True, kw_only=True):
    require_accepted_contact: bool = True


class DeliverySection(_Section, frozen=True, kw_only=True):
    retry_window: float = 30.0


class LoggingSection(_Section, frozen=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class DomainEntry(_Section, frozen=True, kw_only=True):
    domain: str
    platform: str
    tenant: str = ""
    internal: bool = False


class AgreementEntry(_Section, frozen=True, kw_only=True):
    domain_a: str
    domain_b: str
    decision: Literal["allow", "deny"]
    opt_in_required: bool = False


class UserEntry(_Section, frozen=True, kw_only=True):
    address: str
    decision: Literal["allow", "deny"] | None = None
    opted_in: bool = False


class IdentityEntry(_Section, frozen=True, kw_only=True):
    address: str
    platform: str
    tenant: str = ""
    user_id: str


class ContactEntry(_Section, frozen=True, kw_only=True):
    """A contact both ways, as if one side had requested and the other accepted."""

    a: str
    b: str
    state: Literal["pending", "accepted"] = "accepted"


class SeedEvent(_Section, frozen=True, kw_only=True):
    """An event a loopback adapter submits once the engine has started (demos)."""

    kind: Literal["message", "contact_request"] = "message"
    source: str
    destination: str
    text: str = ""


class LoopbackAdapterConfig(_Section, frozen=True, kw_only=True, tag="loopback", tag_field="type"):
    name: str = "loopback"
    echo_users: list[str] = []
    known_users: list[str] | None = None
    send_on_start: list[SeedEvent] = []
    #: fault injection: the first N deliveries to each address crash the session
    crash_deliveries: dict[str, int] = {}


class SecretRef(_Section, frozen=True, kw_only=True):
    """Where a secret is read from: an environment variable, else a file (first line)."""

    env: str = ""
    file: str = ""


class SlackInstallationEntry(_Section, frozen=True, kw_only=True):
    """A workspace installed by configuration (OAuth installs are stored at run time)."""

    team_id: str
    bot_token: SecretRef


class SlackAdapterConfig(_Section, frozen=True, kw_only=True, tag="slack", tag_field="type"):
    name: str = "slack"
    #: Slack's Web API, or the local sandbox's (``http://127.0.0.1:3000/api/``)
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
    #: chat.postMessage pacing per conversation (Slack allows about 1 per second)
    post_message_per_second: float = 1.0


class XmppAdapterConfig(_Section, frozen=True, kw_only=True, tag="xmpp", tag_field="type"):
    """An XMPP server component (XEP-0114) on any XMPP server."""

    name: str = "xmpp"
    #: "domain": the component serves the organisation's own domain (john@acme.com);
    #: "hub": one domain serves everyone with escaped JIDs (john\\40acme.com@hub.example.net)
    mode: Literal["domain", "hub"] = "domain"
    component_domain: str
    #: HOST:PORT of the server's component listener; empty: the embedded Prosody
    server: str = ""
    secret: SecretRef = SecretRef(env="XMPP_COMPONENT_SECRET")
    #: message bodies above this many bytes are refused (not-acceptable)
    max_body_bytes: int = 64 * 1024
    #: stanzas waiting while disconnected, and how long they may wait
    queue_limit: int = 10_000
    queue_deadline: float = 30.0


AdapterConfig = LoopbackAdapterConfig | SlackAdapterConfig | XmppAdapterConfig


class ProsodySection(_Section, frozen=True, kw_only=True):
    """A local Prosody started with the engine (demos and tests, never production).

    Every XMPP adapter with an empty ``server`` becomes one of its components.
    """

    enabled: bool = False
    state_dir: str = "state/prosody"
    host: str = "widget.localhost"
    #: 0: a free port, picked at start and printed
    c2s_port: int = 0
    component_port: int = 0
    #: demo accounts on ``host``; passwords are generated once, kept in ``state_dir``
    users: list[str] = []


class SandboxSection(_Section, frozen=True, kw_only=True):
    """A local Slack-compatible server started with the engine (demos, never production)."""

    enabled: bool = False
    seed: str = "sandbox-seed.toml"
    listen: str = "127.0.0.1:3000"
    #: where the sandbox writes its apps' credentials for the adapter to read
    secrets_dir: str = "state/sandbox"
    rate_limits: bool = True


class ControlSection(_Section, frozen=True, kw_only=True):
    """The operator control API (HTTP + JSON, loopback only)."""

    enabled: bool = True
    listen: str = "127.0.0.1:8700"
    #: environment variable holding the bearer token (takes precedence)
    token_env: str = "INTERLINK_CONTROL_TOKEN"
    #: file holding the token; default ``<data_dir>/control.token``, created when missing
    token_file: str = ""

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class Config(_Section, frozen=True, kw_only=True):
    engine: EngineSection = EngineSection()
    directory: StorageSection = StorageSection()
    metadata: MetadataSection = MetadataSection()
    policy: PolicySection = PolicySection()
    delivery: DeliverySection = DeliverySection()
    logging: LoggingSection = LoggingSection()
    control: ControlSection = ControlSection()
    domains: list[DomainEntry] = []
    agreements: list[AgreementEntry] = []
    users: list[UserEntry] = []
    identities: list[IdentityEntry] = []
    contacts: list[ContactEntry] = []
    adapters: list[AdapterConfig] = []
    sandbox: SandboxSection = SandboxSection()
    prosody: ProsodySection = ProsodySection()
    #: where the file was read from; relative paths are resolved against it
    base_dir: str = "."

    def data_dir(self) -> Path:
        return (Path(self.base_dir) / self.engine.data_dir).resolve()

    def path(self, relative: str) -> Path:
        """A path from the config, resolved against the config file's directory."""
        return (Path(self.base_dir) / relative).resolve()

    def control_token_file(self) -> Path:
        if self.control.token_file:
            return (Path(self.base_dir) / self.control.token_file).resolve()
        return self.data_dir() / "control.token"

    def engine_settings(self) -> EngineSettings:
        e = self.engine
        return EngineSettings(
            shard_count=e.shard_count, mailbox_capacity=e.mailbox_capacity,
            session_idle_timeout=e.session_idle_timeout,
            contact_idle_timeout=e.contact_idle_timeout, max_attempts=e.max_attempts,
            max_restarts=e.max_restarts, restart_window=e.restart_window,
            drain_timeout=e.drain_timeout, message_id_retention_days=e.message_id_retention_days,
            routing=RoutingSettings(require_accepted_contact=self.policy.require_accepted_contact),
            delivery=DeliverySettings(retry_window=self.delivery.retry_window),
        )


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise :class:`ConfigError` saying what is wrong."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if "base_dir" in raw:
        raise ConfigError(f"{path}: `base_dir` is set by Interlink, not in the file")
    raw["base_dir"] = str(path.resolve().parent)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check(config, path)
    return config


def _address(text: str, where: str, path: Path) -> Address:
    try:
        return Address.parse(text)
    except InvalidAddressError as exc:
        raise ConfigError(f"{path}: {exc} - at `{where}`") from None


def _check(config: Config, path: Path) -> None:
    for i, user in enumerate(config.users):
        _address(user.address, f"$.users[{i}].address", path)
    for i, identity in enumerate(config.identities):
        _address(identity.address, f"$.identities[{i}].address", path)
    for i, contact in enumerate(config.contacts):
        _address(contact.a, f"$.contacts[{i}].a", path)
        _address(contact.b, f"$.contacts[{i}].b", path)
    names = [a.name for a in config.adapters]
    for i, adapter in enumerate(config.adapters):
        if names.count(adapter.name) > 1:
            raise ConfigError(f"{path}: adapter name {adapter.name!r} is used twice - at "
                              f"`$.adapters[{i}].name`")
        if isinstance(adapter, SlackAdapterConfig):
            _check_slack(adapter, f"$.adapters[{i}]", path)
            continue
        if isinstance(adapter, XmppAdapterConfig):
            where = f"$.adapters[{i}]"
            if adapter.server:
                _host_port(adapter.server, f"{where}.server", path)
            elif not config.prosody.enabled:
                raise ConfigError(f"{path}: name the XMPP server's component listener "
                                  f"(HOST:PORT), or enable [prosody] - at `{where}.server`")
            continue
        for j, text in enumerate(adapter.echo_users):
            _address(text, f"$.adapters[{i}].echo_users[{j}]", path)
        for text in adapter.crash_deliveries:
            _address(text, f"$.adapters[{i}].crash_deliveries", path)
        for j, seed in enumerate(adapter.send_on_start):
            _address(seed.source, f"$.adapters[{i}].send_on_start[{j}].source", path)
            _address(seed.destination, f"$.adapters[{i}].send_on_start[{j}].destination", path)
    try:
        host, port = config.control.host_port()
    except ValueError:
        raise ConfigError(f"{path}: expected HOST:PORT - at `$.control.listen`") from None
    if host not in ("localhost", "::1") and not host.startswith("127."):
        raise ConfigError(f"{path}: the control API listens on loopback only (127.0.0.1, ::1 "
                          f"or localhost), not {host!r} - at `$.control.listen`")
    if not 0 <= port <= 65535:
        raise ConfigError(f"{path}: port out of range - at `$.control.listen`")
    for i, domain in enumerate(config.domains):
        if domain.platform not in names:
            raise ConfigError(f"{path}: domain {domain.domain!r} names platform "
                              f"{domain.platform!r}, but no adapter has that name (adapters: "
                              f"{names}) - at `$.domains[{i}].platform`")
    for i, engine_value in enumerate((config.engine.shard_count, config.engine.mailbox_capacity,
                                      config.engine.max_attempts)):
        if engine_value < 1:
            field = ("shard_count", "mailbox_capacity", "max_attempts")[i]
            raise ConfigError(f"{path}: must be at least 1 - at `$.engine.{field}`")


def _host_port(value: str, where: str, path: Path) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{path}: expected HOST:PORT, got {value!r} - at `{where}`")
    return host.strip("[]"), int(port)


def _check_slack(adapter: SlackAdapterConfig, where: str, path: Path) -> None:
    if adapter.mode == "http" and not adapter.listen:
        raise ConfigError(f"{path}: HTTP mode needs `listen` (HOST:PORT Slack posts events "
                          f"to) - at `{where}.listen`")
    if adapter.listen:
        _host_port(adapter.listen, f"{where}.listen", path)
    if adapter.public_url and not adapter.listen:
        raise ConfigError(f"{path}: `public_url` needs `listen` (the listener it points at) - "
                          f"at `{where}.public_url`")
    if not adapter.api_url.endswith("/"):
        raise ConfigError(f"{path}: the API URL must end with '/' - at `{where}.api_url`")
    for k, installation in enumerate(adapter.installations):
        if not installation.bot_token.env and not installation.bot_token.file:
            raise ConfigError(f"{path}: name an `env` or `file` holding the bot token - at "
                              f"`{where}.installations[{k}].bot_token`")


def read_secret(ref: SecretRef, config: Config, what: str) -> str:
    """The secret ``ref`` names ("" when it names nothing that exists).

    The environment wins over the file, so operators can override a file.
    """
    if ref.env and os.environ.get(ref.env, "").strip():
        return os.environ[ref.env].strip()
    if ref.file:
        file = config.path(ref.file)
        try:
            return file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise ConfigError(f"cannot read the {what} from {file}: "
                              f"{type(exc).__name__}") from None
    return ""


async def apply_to_directory(config: Config, directory: Directory, *, now: float) -> None:
    """Store the configured routes, agreements, users, identities and contacts.

    Configuration is the source of truth for what it names; records it does
    not name (created at run time) are left alone.
    """
    for d in config.domains:
        await directory.put_domain_route(DomainRoute(
            domain=d.domain.lower(), platform=d.platform, tenant=d.tenant, internal=d.internal))
    for agreement in config.agreements:
        x, y = sorted((agreement.domain_a.lower(), agreement.domain_b.lower()))
        await directory.put_domain_agreement(DomainAgreement(
            domain_a=x, domain_b=y, decision=agreement.decision,
            opt_in_required=agreement.opt_in_required))
    for u in config.users:
        await directory.put_user_policy(UserPolicy(
            address=Address.parse(u.address), decision=u.decision, opted_in=u.opted_in))
    for i in config.identities:
        await directory.put_identity(PlatformIdentity(
            address=Address.parse(i.address), platform=i.platform, tenant=i.tenant,
            user_id=i.user_id))
    for c in config.contacts:
        a, b = Address.parse(c.a), Address.parse(c.b)
        for owner, other in ((a, b), (b, a)):
            current = directory.get_contact(owner, other)
            if current is None or current.state != c.state:
                await directory.put_contact(ContactRecord(
                    owner=owner, contact=other, state=c.state, requested_by=a, updated_at=now))
