"""The loopback adapter's spec: its ``[[adapters]]`` entry (``type = "loopback"``)."""

from __future__ import annotations

from typing import Literal

from .._adapter_spec import AdapterConfig, AdapterSpec, BuildContext, ConfigSection
from .._address import Address
from .._errors import ConfigError, InvalidAddressError
from ._loopback import LoopbackAdapter


class SeedEvent(ConfigSection, frozen=True, kw_only=True):
    """An event a loopback adapter submits once the engine has started (demos)."""

    kind: Literal["message", "contact_request"] = "message"
    source: str
    destination: str
    text: str = ""


class LoopbackAdapterConfig(AdapterConfig, frozen=True, kw_only=True, tag="loopback",
                            tag_field="type"):
    name: str = "loopback"
    echo_users: list[str] = []
    known_users: list[str] | None = None
    send_on_start: list[SeedEvent] = []
    #: fault injection: the first N deliveries to each address crash the session
    crash_deliveries: dict[str, int] = {}


def _address(text: str, where: str) -> Address:
    try:
        return Address.parse(text)
    except InvalidAddressError as exc:
        raise ConfigError(f"{exc} - at `{where}`") from None


def check_loopback_config(entry: LoopbackAdapterConfig, where: str,
                          context: BuildContext) -> None:
    for j, text in enumerate(entry.echo_users):
        _address(text, f"{where}.echo_users[{j}]")
    for text in entry.crash_deliveries:
        _address(text, f"{where}.crash_deliveries")
    for j, seed in enumerate(entry.send_on_start):
        _address(seed.source, f"{where}.send_on_start[{j}].source")
        _address(seed.destination, f"{where}.send_on_start[{j}].destination")


def build_loopback_adapter(entry: LoopbackAdapterConfig,
                           context: BuildContext) -> LoopbackAdapter:
    return LoopbackAdapter(
        entry.name, echo_users=[Address.parse(a) for a in entry.echo_users],
        known_users=None if entry.known_users is None
        else [Address.parse(a) for a in entry.known_users],
        crash_deliveries={Address.parse(a): n for a, n in entry.crash_deliveries.items()},
        keep_outbox=False)


LOOPBACK_SPEC = AdapterSpec(config_type=LoopbackAdapterConfig, build=build_loopback_adapter,
                            check=check_loopback_config)
