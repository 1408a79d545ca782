"""Configuration: one TOML file decoded into msgspec Structs.

Unknown keys are errors (a typo must not silently fall back to a default).
Every error names the file, the field path and what was expected. Relative
paths are resolved against the directory holding the config file. Secrets
never live here: adapters name environment variables or files to read them
from.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

from ._adapter_spec import BuildContext, ConfigSection
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

_Section = ConfigSection


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


class SecretsSection(_Section, frozen=True, kw_only=True):
    """Where the key that encrypts installation credentials at rest comes from."""

    #: environment variable holding the key(s), space-separated, first one encrypts
    key_env: str = "INTERLINK_SECRETS_KEY"
    #: file holding the key(s), one per line; default ``secrets.key`` beside the data
    #: dir (not in it), created with a fresh key when neither exists
    key_file: str = ""


class PolicySection(_Section, frozen=True, kw_only=True):
    require_accepted_contact: bool = True


class DeliverySection(_Section, frozen=True, kw_only=True):
    retry_window: float = 30.0
    restart_grace: float = 60.0


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


class EngineConfig(_Section, frozen=True, kw_only=True):
    """The engine's own sections. ``interlink run`` extends it with ``adapters``
    (the union of the adapter packages' config Structs) and their embedded
    services' sections; the engine itself names no platform."""

    engine: EngineSection = EngineSection()
    directory: StorageSection = StorageSection()
    metadata: MetadataSection = MetadataSection()
    policy: PolicySection = PolicySection()
    delivery: DeliverySection = DeliverySection()
    logging: LoggingSection = LoggingSection()
    control: ControlSection = ControlSection()
    secrets: SecretsSection = SecretsSection()
    domains: list[DomainEntry] = []
    agreements: list[AgreementEntry] = []
    users: list[UserEntry] = []
    identities: list[IdentityEntry] = []
    contacts: list[ContactEntry] = []
    #: where the file was read from; relative paths are resolved against it
    base_dir: str = "."

    def data_dir(self) -> Path:
        return (Path(self.base_dir) / self.engine.data_dir).resolve()

    def path(self, relative: str) -> Path:
        """A path from the config, resolved against the config file's directory."""
        return (Path(self.base_dir) / relative).resolve()

    def context(self) -> BuildContext:
        """What adapter factories and checks get: paths and secrets relative to this file."""
        return BuildContext(base_dir=Path(self.base_dir).resolve(),
                            adapters=tuple(getattr(self, "adapters", ())))

    def secrets_key_file(self) -> Path:
        if self.secrets.key_file:
            return (Path(self.base_dir) / self.secrets.key_file).resolve()
        return self.data_dir().parent / "secrets.key"

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
            delivery=DeliverySettings(retry_window=self.delivery.retry_window,
                                      restart_grace=self.delivery.restart_grace),
        )


ConfigT = TypeVar("ConfigT", bound="EngineConfig")


def load_config_file(path: str | Path, config_type: type[ConfigT]) -> ConfigT:
    """Read and validate a config file into ``config_type`` (:class:`EngineConfig` or
    a subclass adding adapters); raise :class:`ConfigError` saying what is wrong, where."""
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
        config = msgspec.convert(raw, config_type)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check(config, path)
    return config


def _address(text: str, where: str, path: Path) -> Address:
    try:
        return Address.parse(text)
    except InvalidAddressError as exc:
        raise ConfigError(f"{path}: {exc} - at `{where}`") from None


def _check(config: EngineConfig, path: Path) -> None:
    for i, user in enumerate(config.users):
        _address(user.address, f"$.users[{i}].address", path)
    for i, identity in enumerate(config.identities):
        _address(identity.address, f"$.identities[{i}].address", path)
    for i, contact in enumerate(config.contacts):
        _address(contact.a, f"$.contacts[{i}].a", path)
        _address(contact.b, f"$.contacts[{i}].b", path)
    names = [a.name for a in getattr(config, "adapters", ())]
    for i, adapter in enumerate(getattr(config, "adapters", ())):
        if names.count(adapter.name) > 1:
            raise ConfigError(f"{path}: adapter name {adapter.name!r} is used twice - at "
                              f"`$.adapters[{i}].name`")
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
        if hasattr(config, "adapters") and domain.platform not in names:
            raise ConfigError(f"{path}: domain {domain.domain!r} names platform "
                              f"{domain.platform!r}, but no adapter has that name (adapters: "
                              f"{names}) - at `$.domains[{i}].platform`")
    for i, engine_value in enumerate((config.engine.shard_count, config.engine.mailbox_capacity,
                                      config.engine.max_attempts)):
        if engine_value < 1:
            field = ("shard_count", "mailbox_capacity", "max_attempts")[i]
            raise ConfigError(f"{path}: must be at least 1 - at `$.engine.{field}`")


async def apply_to_directory(config: EngineConfig, directory: Directory, *, now: float) -> None:
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
