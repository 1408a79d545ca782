"""The XMPP adapter's plug into ``interlink run``: its config, check and factory,
and the embedded Prosody (demos and tests) as a service.

Rules:

- An XMPP adapter names its server's component listener (``server``) and
  the secret's environment variable or file; with an empty ``server`` it
  becomes a component of the embedded Prosody, which must be enabled.
- The embedded Prosody generates each component secret and demo password
  once and keeps it under ``prosody.state_dir/secrets`` (mode 0600).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

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
    kept_secret,
    parse_host_port,
)

from ._adapter import XmppAdapter, XmppSettings
from ._jid import AddressingSettings
from ._prosody import ProsodyInstance, ProsodySettings, run_prosody

log = logging.getLogger("interlink.run")


class XmppAdapterConfig(AdapterConfig, frozen=True, kw_only=True, tag="xmpp",
                        tag_field="type"):
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


class ProsodySection(ConfigSection, frozen=True, kw_only=True):
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


class ProsodyHandle:
    """What a started embedded Prosody publishes: the instance and demo passwords."""

    def __init__(self, instance: ProsodyInstance, passwords: dict[str, str]) -> None:
        self.instance = instance
        self.passwords = passwords


def _embedded_domains(context: BuildContext) -> list[str]:
    return [a.component_domain.lower() for a in context.adapters
            if isinstance(a, XmppAdapterConfig) and not a.server]


def check_xmpp_config(entry: XmppAdapterConfig, where: str, context: BuildContext) -> None:
    if entry.server:
        parse_host_port(entry.server, f"{where}.server")
        return
    prosody = context.sections.get("prosody")
    if not (isinstance(prosody, ProsodySection) and prosody.enabled):
        raise ConfigError(f"name the XMPP server's component listener (HOST:PORT), or enable "
                          f"[prosody] - at `{where}.server`")


def build_xmpp_adapter(entry: XmppAdapterConfig, context: BuildContext) -> XmppAdapter:
    """The XMPP component adapter; its server is named or is the embedded Prosody."""

    def server() -> tuple[str, int, str]:
        if entry.server:
            host, port = parse_host_port(entry.server, "server")
            secret = context.secret(entry.secret, "component secret")
            if not secret:
                raise ConfigError(f"adapter {entry.name!r}: no component secret "
                                  f"({entry.secret.where()})")
            return host, port, secret
        handle = context.services.get("prosody")
        if not isinstance(handle, ProsodyHandle):
            raise ConfigError(f"adapter {entry.name!r}: the embedded Prosody is not running "
                              f"(enable [prosody] or name the server's component listener)")
        return "127.0.0.1", handle.instance.component_port, handle.instance.components[
            entry.component_domain.lower()]

    settings = XmppSettings(
        name=entry.name, addressing=AddressingSettings(mode=entry.mode,
                                                       component_domain=entry.component_domain),
        max_body_bytes=entry.max_body_bytes, queue_limit=entry.queue_limit,
        queue_deadline=entry.queue_deadline)
    return XmppAdapter(settings=settings, server=server)


def start_prosody(section: ProsodySection, context: BuildContext,
                  publish: Callable[[Any], None]) -> ServiceStart | None:
    """The embedded Prosody (demos): one component per XMPP adapter without a server."""
    if not section.enabled:
        return None
    state_dir = context.path(section.state_dir)
    domains = _embedded_domains(context)

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        secrets_dir = state_dir / "secrets"
        components = {d: kept_secret(secrets_dir / f"component.{d}") for d in domains}
        passwords = {u: kept_secret(secrets_dir / f"password.{u}", length=12)
                     for u in section.users}
        settings = ProsodySettings(state_dir=state_dir, host=section.host,
                                   components=components, users=passwords,
                                   c2s_port=section.c2s_port,
                                   component_port=section.component_port)
        async with trio.open_nursery() as nursery:
            instance = await nursery.start(run_prosody, settings)
            publish(ProsodyHandle(instance, passwords))
            log.info("prosody started", extra={"host": section.host,
                                               "c2s_port": instance.c2s_port,
                                               "component_port": instance.component_port})
            task_status.started()

    return run


SPEC = AdapterSpec(config_type=XmppAdapterConfig, build=build_xmpp_adapter,
                   check=check_xmpp_config,
                   # slixmpp prints stanzas (content), even raw data in errors: never shown
                   quiet_loggers={"slixmpp": logging.CRITICAL + 1})
PROSODY = ServiceSpec(section="prosody", config_type=ProsodySection, start=start_prosody,
                      shutdown=10.0)
