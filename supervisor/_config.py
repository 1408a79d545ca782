"""``interlink run``'s configuration: the engine's sections plus the adapters
and embedded services of the platforms this build ships, from an explicit list.

Adding a platform: add its package's ``SPEC`` to :data:`ADAPTER_SPECS`, its
config Struct to :data:`AdapterEntry`, and any embedded service's
``ServiceSpec`` to :data:`SERVICE_SPECS` with a field on :class:`Config` named
after its section. Nothing registers itself at import time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.slack import SANDBOX, SandboxSection, SlackAdapterConfig
from adapters.slack import SPEC as SLACK_SPEC
from adapters.webhook import SPEC as WEBHOOK_SPEC
from adapters.webhook import WebhookAdapterConfig
from adapters.xmpp import PROSODY, ProsodySection, XmppAdapterConfig
from adapters.xmpp import SPEC as XMPP_SPEC
from engine import (
    Adapter,
    AdapterSpec,
    BuildContext,
    ConfigError,
    EngineConfig,
    ServiceSpec,
    load_config_file,
)
from engine.testing import LOOPBACK_SPEC, LoopbackAdapterConfig

#: every adapter ``interlink run`` can build, by config Struct
ADAPTER_SPECS: tuple[AdapterSpec[Any], ...] = (LOOPBACK_SPEC, SLACK_SPEC, XMPP_SPEC,
                                               WEBHOOK_SPEC)
#: every embedded platform server it can start (demos), in start order
SERVICE_SPECS: tuple[ServiceSpec[Any], ...] = (SANDBOX, PROSODY)

AdapterEntry = (LoopbackAdapterConfig | SlackAdapterConfig | XmppAdapterConfig
                | WebhookAdapterConfig)


class Config(EngineConfig, frozen=True, kw_only=True):
    adapters: list[AdapterEntry] = []
    sandbox: SandboxSection = SandboxSection()
    prosody: ProsodySection = ProsodySection()

    def sections(self) -> dict[str, Any]:
        """The embedded services' sections, by name."""
        return {spec.section: getattr(self, spec.section) for spec in SERVICE_SPECS}

    def build_context(self, services: Mapping[str, Any] | None = None) -> BuildContext:
        """What factories get; ``services`` fills as embedded services start."""
        return BuildContext(base_dir=Path(self.base_dir).resolve(), adapters=tuple(self.adapters),
                            sections=self.sections(),
                            services=services if services is not None else {})


def spec_for(entry: object) -> AdapterSpec[Any]:
    for spec in ADAPTER_SPECS:
        if type(entry) is spec.config_type:
            return spec
    raise ConfigError(f"no adapter spec for {type(entry).__name__}")


def load_config(path: str | Path) -> Config:
    """Read and validate ``interlink run``'s config; :class:`ConfigError` says what and where."""
    config = load_config_file(path, Config)
    context = config.build_context()
    for i, entry in enumerate(config.adapters):
        try:
            spec_for(entry).check(entry, f"$.adapters[{i}]", context)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return config


def build_adapters(config: Config, services: Mapping[str, Any] | None = None) -> list[Adapter]:
    """One adapter per ``[[adapters]]`` entry, built by its package's spec."""
    context = config.build_context(services)
    return [spec_for(entry).build(entry, context) for entry in config.adapters]


def quiet_loggers() -> dict[str, int]:
    """Library loggers every adapter this build ships asks to keep quiet (whatever
    the config: a library quoting content must never reach the output)."""
    quiet: dict[str, int] = {}
    for spec in ADAPTER_SPECS:
        quiet.update(spec.quiet_loggers)
    return quiet


__all__: Sequence[str] = ["ADAPTER_SPECS", "SERVICE_SPECS", "AdapterEntry", "Config",
                          "build_adapters", "load_config", "quiet_loggers", "spec_for"]
