"""Platform pieces ``interlink run`` starts beside the engine: the embedded
services of the adapter packages (the Slack sandbox, a Prosody) as supervised
children, and the demo's helpers (``interlink say``, ``demo_details``).

Secrets never pass through the config file: adapters read them from
environment variables or files (:meth:`engine.BuildContext.secret`). The
embedded sandbox hands its app's credentials over the same way, by writing
them to files (mode 0600) under ``sandbox.secrets_dir``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from adapters.slack import SandboxHandle, SlackAdapter, SlackAdapterConfig
from adapters.slack.sandbox import load_seed
from adapters.xmpp import ProsodyHandle
from engine import Adapter, Address, DeliveryError

from ._config import SERVICE_SPECS, Config
from ._control import Sayer, SayError
from ._supervisor import ChildSpec

log = logging.getLogger("interlink.run")


def service_children(config: Config, services: dict[str, Any]) -> list[ChildSpec]:
    """A supervised child per embedded service the config enables; each publishes its
    handle into ``services`` (which adapters built from the same dict read)."""
    context = config.build_context(services)
    children = []
    for spec in SERVICE_SPECS:
        start = spec.start(getattr(config, spec.section), context,
                           functools.partial(services.__setitem__, spec.section))
        if start is not None:
            children.append(ChildSpec(id=_CHILD_IDS.get(spec.section, spec.section),
                                      start=start, shutdown=spec.shutdown))
    return children


#: supervision-tree ids operators already know
_CHILD_IDS = {"sandbox": "slack-sandbox"}


def sandbox_sayers(config: Config, adapters: Sequence[Adapter]) -> dict[str, Sayer]:
    """``interlink say`` for Slack users of the embedded sandbox: post as them through
    the sandbox's Web API with their seeded user token, in their private conversation."""

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


def demo_details(config: Config, services: dict[str, Any]) -> dict[str, Any] | None:
    """What ``interlink demo --script`` and the banner need, when the config runs both
    embedded platforms (ports and file paths; the password stays in its file)."""
    prosody = services.get("prosody")
    sandbox = services.get("sandbox")
    if not isinstance(prosody, ProsodyHandle) or not isinstance(sandbox, SandboxHandle) \
            or not config.prosody.users:
        return None
    instance = prosody.instance
    slack = next((a for a in config.adapters if isinstance(a, SlackAdapterConfig)), None)
    person = next((i for i in config.identities if slack and i.platform == slack.name), None)
    if slack is None or person is None:
        return None
    user = config.prosody.users[0]
    api_url = slack.api_url or sandbox.api_url  # empty: the embedded sandbox's (port 0 too)
    return {
        "slack": {"api_url": api_url, "sandbox": api_url.removesuffix("/api/"),
                  "user": {"address": person.address, "team_id": person.tenant,
                           "user_id": person.user_id}},
        "xmpp": {"host": "127.0.0.1", "c2s_port": instance.c2s_port,
                 "domain": config.prosody.host, "user": f"{user}@{config.prosody.host}",
                 "password_file": str(config.path(config.prosody.state_dir) / "secrets"
                                      / f"password.{user}")},
    }
