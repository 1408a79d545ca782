"""Platform pieces ``interlink run`` builds from the config: adapters, and the
local platform servers a demo starts beside the engine (the Slack sandbox).

Secrets never pass through the config file: adapters read them from
environment variables or files (:func:`engine._config.read_secret`). The
embedded sandbox hands its app's credentials over the same way, by writing
them to files (mode 0600) under ``sandbox.secrets_dir``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings, Seed, load_seed
from engine import Adapter, Address, Config, ConfigError, DeliveryError
from engine._config import (
    LoopbackAdapterConfig,
    SlackAdapterConfig,
    XmppAdapterConfig,
    read_secret,
)
from engine.testing import LoopbackAdapter

from ._control import Sayer, SayError
from ._supervisor import ChildSpec

if TYPE_CHECKING:
    from adapters.slack._adapter import SlackAdapter
    from adapters.xmpp._adapter import XmppAdapter
    from adapters.xmpp._prosody import ProsodyInstance

log = logging.getLogger("interlink.run")


class Embedded:
    """The local platform servers ``interlink run`` started (filled in as they start)."""

    def __init__(self) -> None:
        self.prosody: ProsodyInstance | None = None
        self.prosody_passwords: dict[str, str] = {}
        self.sandbox_url = ""


def build_adapters(config: Config, embedded: Embedded | None = None) -> list[Adapter]:
    embedded = embedded or Embedded()
    adapters: list[Adapter] = []
    for entry in config.adapters:
        if isinstance(entry, XmppAdapterConfig):
            adapters.append(build_xmpp_adapter(entry, config, embedded))
        elif isinstance(entry, LoopbackAdapterConfig):
            adapters.append(LoopbackAdapter(
                entry.name, echo_users=[Address.parse(a) for a in entry.echo_users],
                known_users=None if entry.known_users is None
                else [Address.parse(a) for a in entry.known_users],
                crash_deliveries={Address.parse(a): n for a, n in entry.crash_deliveries.items()},
                keep_outbox=False))
        elif isinstance(entry, SlackAdapterConfig):
            adapters.append(build_slack_adapter(entry, config))
    return adapters


def build_slack_adapter(entry: SlackAdapterConfig, config: Config) -> SlackAdapter:
    """The Slack adapter for a config entry. Secrets are read when the adapter starts."""
    from adapters.slack._adapter import (
        SlackAdapter,
        SlackInstallationConfig,
        SlackSecrets,
        SlackSettings,
    )
    from adapters.slack._webapi import SlackWebClient, WebApiSettings

    host, _, port = entry.listen.rpartition(":")
    settings = SlackSettings(
        name=entry.name, mode=entry.mode, listen_host=host.strip("[]") or "127.0.0.1",
        listen_port=int(port) if entry.listen else None, authorize_url=entry.authorize_url,
        redirect_uri=entry.redirect_uri, conversation_prefix=entry.conversation_prefix,
        presence_interval=entry.presence_interval, public_url=entry.public_url)
    web = SlackWebClient(settings=WebApiSettings(
        base_url=entry.api_url, post_message_per_second=entry.post_message_per_second))

    def read_secrets() -> tuple[SlackSecrets, list[SlackInstallationConfig]]:
        found = SlackSecrets(
            signing_secret=read_secret(entry.signing_secret, config, "signing secret"),
            app_token=read_secret(entry.app_token, config, "app-level token"),
            client_id=entry.client_id,
            client_secret=read_secret(entry.client_secret, config, "client secret"),
            file_link_key=read_secret(entry.file_link_key, config, "file-link key"))
        if found.file_link_key and len(found.file_link_key.encode()) < 32:
            raise ConfigError(f"adapter {entry.name!r}: the file-link key needs at least 32 "
                              f"bytes")
        if entry.mode == "http" and not found.signing_secret:
            raise ConfigError(f"adapter {entry.name!r}: HTTP mode needs the signing secret "
                              f"({_where(entry.signing_secret.env, entry.signing_secret.file)})")
        if entry.mode == "socket" and not found.app_token:
            raise ConfigError(f"adapter {entry.name!r}: Socket Mode needs an app-level token "
                              f"({_where(entry.app_token.env, entry.app_token.file)})")
        installations = []
        for item in entry.installations:
            token = read_secret(item.bot_token, config, "bot token")
            if not token:
                where = _where(item.bot_token.env, item.bot_token.file)
                raise ConfigError(f"adapter {entry.name!r}: no bot token for team "
                                  f"{item.team_id} ({where})")
            installations.append(SlackInstallationConfig(team_id=item.team_id, bot_token=token))
        return found, installations

    return SlackAdapter(settings=settings, web=web, secrets_source=read_secrets, owns_web=True)


def build_xmpp_adapter(entry: XmppAdapterConfig, config: Config,
                       embedded: Embedded) -> XmppAdapter:
    """The XMPP component adapter; its server is named or is the embedded Prosody."""
    from adapters.xmpp._adapter import XmppAdapter, XmppSettings
    from adapters.xmpp._jid import AddressingSettings

    def server() -> tuple[str, int, str]:
        if entry.server:
            host, _, port = entry.server.rpartition(":")
            secret = read_secret(entry.secret, config, "component secret")
            if not secret:
                raise ConfigError(f"adapter {entry.name!r}: no component secret "
                                  f"({_where(entry.secret.env, entry.secret.file)})")
            return host.strip("[]"), int(port), secret
        instance = embedded.prosody
        if instance is None:
            raise ConfigError(f"adapter {entry.name!r}: the embedded Prosody is not running")
        return "127.0.0.1", instance.component_port, instance.components[
            entry.component_domain.lower()]

    settings = XmppSettings(
        name=entry.name, addressing=AddressingSettings(mode=entry.mode,
                                                       component_domain=entry.component_domain),
        max_body_bytes=entry.max_body_bytes, queue_limit=entry.queue_limit,
        queue_deadline=entry.queue_deadline)
    return XmppAdapter(settings=settings, server=server)


def prosody_child(config: Config, embedded: Embedded) -> ChildSpec | None:
    """The embedded Prosody (demos): one component per XMPP adapter without a server."""
    from adapters.xmpp._prosody import ProsodySettings, run_prosody

    section = config.prosody
    if not section.enabled:
        return None
    state_dir = config.path(section.state_dir)
    domains = [a.component_domain.lower() for a in config.adapters
               if isinstance(a, XmppAdapterConfig) and not a.server]

    async def start_prosody(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                            ) -> None:
        secrets_dir = state_dir / "secrets"
        components = {d: _kept_secret(secrets_dir / f"component.{d}") for d in domains}
        passwords = {u: _kept_secret(secrets_dir / f"password.{u}", length=12)
                     for u in section.users}
        settings = ProsodySettings(state_dir=state_dir, host=section.host,
                                   components=components, users=passwords,
                                   c2s_port=section.c2s_port,
                                   component_port=section.component_port)
        async with trio.open_nursery() as nursery:
            instance = await nursery.start(run_prosody, settings)
            embedded.prosody = instance
            embedded.prosody_passwords = passwords
            log.info("prosody started", extra={"host": section.host,
                                               "c2s_port": instance.c2s_port,
                                               "component_port": instance.component_port})
            task_status.started()

    return ChildSpec(id="prosody", start=start_prosody, shutdown=10.0)


def _kept_secret(path: Path, *, length: int = 32) -> str:
    """A random secret kept in ``path`` (mode 0600), created on first use."""
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(length)[:length]
    _write_private(path, value)
    return value


def _where(env: str, file: str) -> str:
    places = ([f"environment variable {env}"] if env else []) + ([f"file {file}"] if file
                                                                  else [])
    return " or ".join(places) or "nothing configured"


def sandbox_child(config: Config) -> ChildSpec | None:
    """The embedded Slack sandbox, when the config enables it (demos only)."""
    section = config.sandbox
    if not section.enabled:
        return None
    seed = load_seed(config.path(section.seed))
    host, _, port = section.listen.rpartition(":")
    secrets_dir = config.path(section.secrets_dir)

    async def run_sandbox(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
        sandbox = Sandbox(seed, settings=SandboxSettings(
            rate_limits=RateLimitSettings(enabled=section.rate_limits)))
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: sandbox.serve(
                host=host.strip("[]"), port=int(port), task_status=task_status))
            write_sandbox_secrets(seed, secrets_dir)
            log.info("slack sandbox started", extra={"url": url,
                                                     "secrets_dir": str(secrets_dir)})
            task_status.started()

    return ChildSpec(id="slack-sandbox", start=run_sandbox, shutdown=3.0)


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
                    _write_private(directory / name, value)


def _write_private(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")


def sandbox_sayers(config: Config, adapters: Sequence[Adapter]) -> dict[str, Sayer]:
    """``interlink say`` for Slack users of the embedded sandbox: post as them through
    the sandbox's Web API with their seeded user token, in their private conversation."""
    from adapters.slack._adapter import SlackAdapter

    section = config.sandbox
    if not section.enabled:
        return {}
    seed = load_seed(config.path(section.seed))
    tokens = {(w.id, u.id): u.token for w in seed.workspace for u in w.user if u.token}
    sayers: dict[str, Sayer] = {}
    for adapter in adapters:
        if not isinstance(adapter, SlackAdapter):
            continue

        async def say(source: Address, destination: Address, text: str,
                      slack: SlackAdapter = adapter) -> dict[str, Any]:
            identity = slack.port.directory.get_identity(source)
            if identity is None:
                raise SayError(f"{source} is not a known Slack user (run /interlink add "
                               f"as them first, or add an identity)")
            token = tokens.get((identity.tenant, identity.user_id))
            if token is None:
                raise SayError(f"the sandbox seed has no token for {source}")
            try:
                channel = await slack.open_conversation(source, destination)
            except DeliveryError as exc:
                raise SayError(f"no conversation with {destination}: {exc.reason}") from None
            answer = await slack.web.call("chat.postMessage", token=token,
                                          team_id=identity.tenant,
                                          args={"channel": channel, "text": text})
            return {"platform": "slack", "channel": channel, "ts": answer.get("ts", "")}

        sayers[adapter.name] = say
    return sayers


def demo_details(config: Config, embedded: Embedded) -> dict[str, Any] | None:
    """What ``interlink demo --script`` and the banner need, when the config runs both
    embedded platforms (ports and file paths; the password stays in its file)."""
    instance = embedded.prosody
    if not config.sandbox.enabled or instance is None or not config.prosody.users:
        return None
    slack = next((a for a in config.adapters if isinstance(a, SlackAdapterConfig)), None)
    person = next((i for i in config.identities if slack and i.platform == slack.name), None)
    if slack is None or person is None:
        return None
    user = config.prosody.users[0]
    return {
        "slack": {"api_url": slack.api_url, "sandbox": slack.api_url.removesuffix("/api/"),
                  "user": {"address": person.address, "team_id": person.tenant,
                           "user_id": person.user_id}},
        "xmpp": {"host": "127.0.0.1", "c2s_port": instance.c2s_port,
                 "domain": config.prosody.host, "user": f"{user}@{config.prosody.host}",
                 "password_file": str(config.path(config.prosody.state_dir) / "secrets"
                                      / f"password.{user}")},
    }


def demo_banner(details: dict[str, Any], config_path: str) -> str:
    """How to talk as each side, printed when the demo is up."""
    slack, xmpp = details["slack"], details["xmpp"]
    john, peter = slack["user"]["address"], xmpp["user"]
    password = Path(xmpp["password_file"]).read_text(encoding="utf-8").strip()
    config = f" --config {config_path}" if config_path else ""
    return f"""
Interlink demo is up: {john} on Slack <-> {peter} on XMPP.

  Slack side (the local sandbox at {slack["sandbox"]}, workspace Acme, user John):
    interlink say --as {john} --to {peter} "hi *Peter*"{config}
    slash commands:  curl -H 'Authorization: Bearer xoxp-john' \\
      -H 'Content-Type: application/json' {slack["sandbox"]}/sandbox/command \\
      -d '{{"command": "/interlink", "channel": "C0GENERAL", "text": "add {peter}"}}'

  XMPP side (Prosody at {xmpp["host"]}:{xmpp["c2s_port"]}; plaintext login allowed, STARTTLS
  with a self-signed certificate) - any XMPP client:
    JID {peter}   password {password}

  The whole tour, every feature, checked on the other side:
    interlink demo --script{config}
"""
