"""How an adapter package plugs into ``interlink run``: its spec.

Each adapter package exports one :class:`AdapterSpec`: the config Struct of
its ``[[adapters]]`` entries (tagged by ``type``), a check for what the
Struct's types cannot say, and a factory from that config to an adapter.
A package may also export :class:`ServiceSpec` values: local platform
servers ``interlink run`` can start beside the engine for demos (a local
chat server to talk to). ``supervisor`` assembles the configuration union and
the factories from an explicit list of specs: no registry, nothing happens
at import time, and the engine names no platform.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import trio

from ._adapter import Adapter
from ._errors import ConfigError

__all__ = [
    "AdapterConfig", "AdapterSpec", "BuildContext", "ConfigSection", "SecretRef", "ServiceSpec",
    "ServiceStart", "kept_secret", "parse_host_port", "write_private_file",
]


class ConfigSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config Struct: unknown keys are errors (a typo must not fall back)."""


class AdapterConfig(ConfigSection, frozen=True, kw_only=True, tag_field="type"):
    """Base of an ``[[adapters]]`` entry; each adapter's subclass sets ``tag``."""

    #: the platform key domain routes name; unique per config
    name: str


class SecretRef(ConfigSection, frozen=True, kw_only=True):
    """Where a secret is read from: an environment variable, else a file (first line)."""

    env: str = ""
    file: str = ""

    def where(self) -> str:
        """Where it was looked for, for an error message (never the value)."""
        places = ([f"environment variable {self.env}"] if self.env else []) + (
            [f"file {self.file}"] if self.file else [])
        return " or ".join(places) or "nothing configured"


def parse_host_port(value: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) or a :class:`ConfigError` naming ``where``."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {value!r} - at `{where}`")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class BuildContext:
    """What a factory or check may use: paths and secrets relative to the config
    file, the other adapters' entries, and handles of embedded services started."""

    base_dir: Path
    adapters: Sequence[AdapterConfig] = ()
    #: the embedded services' config sections, by section name
    sections: Mapping[str, Any] = field(default_factory=dict)
    #: handles published by started embedded services, by their section name
    services: Mapping[str, Any] = field(default_factory=dict)

    def path(self, relative: str) -> Path:
        return (self.base_dir / relative).resolve()

    def secret(self, ref: SecretRef, what: str) -> str:
        """The secret ``ref`` names ("" when it names nothing that exists).

        The environment wins over the file, so operators can override a file.
        """
        if ref.env and os.environ.get(ref.env, "").strip():
            return os.environ[ref.env].strip()
        if ref.file:
            file = self.path(ref.file)
            try:
                return file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
            except FileNotFoundError:
                return ""
            except (OSError, UnicodeDecodeError, IndexError) as exc:
                raise ConfigError(f"cannot read the {what} from {file}: "
                                  f"{type(exc).__name__}") from None
        return ""


def write_private_file(path: Path, value: str) -> None:
    """Write ``value`` (a secret) to ``path`` readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")


def kept_secret(path: Path, *, length: int = 32) -> str:
    """A random secret kept in ``path`` (mode 0600), created on first use (demo services)."""
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = secrets.token_urlsafe(length)[:length]
    write_private_file(path, value)
    return value


C = TypeVar("C", bound=AdapterConfig)
S = TypeVar("S", bound=ConfigSection)


def _no_check(config: Any, where: str, context: BuildContext) -> None:
    return None


@dataclass(frozen=True)
class AdapterSpec(Generic[C]):
    """An adapter package's plug: its config type, check and factory."""

    #: the ``[[adapters]]`` Struct (a subclass of :class:`AdapterConfig` with a ``tag``)
    config_type: type[C]
    #: the adapter for one entry; secrets are read here or when it starts, never stored
    build: Callable[[C, BuildContext], Adapter]
    #: raise :class:`ConfigError` naming ``where`` (``$.adapters[i]...``) for what types
    #: cannot say; runs when the config is loaded
    check: Callable[[C, str, BuildContext], None] = _no_check
    #: library loggers that may quote content or secrets, with the level below which
    #: ``interlink run`` drops them (e.g. an HTTP client logging URLs)
    quiet_loggers: Mapping[str, int] = field(default_factory=dict)


class ServiceStart(Protocol):
    """A supervised task: calls ``task_status.started()`` once the service serves."""

    def __call__(self, *, task_status: trio.TaskStatus[None] = ...) -> Awaitable[None]: ...


@dataclass(frozen=True)
class ServiceSpec(Generic[S]):
    """A local platform server ``interlink run`` may start beside the engine (demos)."""

    #: its top-level config section, e.g. ``chat_server``
    section: str
    #: the section's Struct; its defaults must leave the service off
    config_type: type[S]
    #: the task running it, or ``None`` when the section leaves it off; the task
    #: publishes its handle with ``publish(handle)`` once serving
    start: Callable[[S, BuildContext, Callable[[Any], None]], ServiceStart | None]
    #: seconds it may take to stop
    shutdown: float = 5.0
