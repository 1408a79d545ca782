"""One real deployment for the bad-input suite: ``interlink run`` as a subprocess with a
generated config (the embedded Slack sandbox, the Slack adapter in HTTP mode, the embedded
Prosody with an XMPP component, a webhook adapter, the control API), the people who talk
to it (John through the sandbox, Peter through an XMPP client, Wendy through a partner
system that speaks Standard Webhooks), and the engine's log as it is written.

Nothing here is mocked: every answer in the suite's table comes from the running engine
over its real sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from adapters.xmpp import TestClient, open_client
from engine.asgi import serve_http
from tests.test_cli import ROOT, _free_port
from tests.webhook.conftest import FakePartner, PartnerClient, new_secret

CONTROL_TOKEN = "bad-input-control-t0ken"
JOHN = "john@acme.localhost"
MARY = "mary@acme.localhost"  # a Slack user the policy denies
PETER = "peter@widget.localhost"
WENDY = "wendy@partner.localhost"
#: the XMPP adapter's max_body_bytes in this deployment (small, so the test stays cheap)
XMPP_MAX_BODY = 2048
WEBHOOK_MAX_BODY = 65536
#: seconds for the engine to come up (Prosody, the sandbox, three adapters)
START_TIMEOUT = 45.0

_SEED_APP_URL = '# request_url = "http://127.0.0.1:8080/slack/events"'

CONFIG = """
[engine]
data_dir = "{tmp}/data"
shard_count = 2

[logging]
level = "debug"
format = "json"

[control]
listen = "127.0.0.1:{control_port}"

[sandbox]
enabled = true
seed = "{tmp}/seed.toml"
listen = "127.0.0.1:{sandbox_port}"
secrets_dir = "{tmp}/sandbox"
rate_limits = false

[prosody]
enabled = true
state_dir = "{tmp}/prosody"
host = "widget.localhost"
users = ["peter"]
c2s_port = {c2s_port}
component_port = {component_port}

[[adapters]]
type = "slack"
api_url = "http://127.0.0.1:{sandbox_port}/api/"
mode = "http"
listen = "127.0.0.1:{slack_port}"
signing_secret = {{ file = "{tmp}/sandbox/signing_secret" }}
presence_interval = 600

[[adapters.installations]]
team_id = "T0ACME"
bot_token = {{ file = "{tmp}/sandbox/bot_token.T0ACME" }}

[[adapters]]
type = "xmpp"
component_domain = "acme.localhost"
mode = "domain"
max_body_bytes = {xmpp_max_body}

[[adapters]]
type = "webhook"
name = "webhook"
listen = "127.0.0.1:{webhook_port}"
path = "/webhook"
partner_url = "http://127.0.0.1:{partner_port}/events"
inbound_secret = {{ env = "BAD_INPUT_WEBHOOK_INBOUND" }}
outbound_secret = {{ env = "BAD_INPUT_WEBHOOK_OUTBOUND", file = "{tmp}/webhook-outbound" }}
max_body_bytes = {webhook_max_body}

[[domains]]
domain = "acme.localhost"
platform = "slack"
tenant = "T0ACME"
internal = true

[[domains]]
domain = "widget.localhost"
platform = "xmpp"

[[domains]]
domain = "partner.localhost"
platform = "webhook"

[[agreements]]
domain_a = "acme.localhost"
domain_b = "widget.localhost"
decision = "allow"

[[agreements]]
domain_a = "acme.localhost"
domain_b = "partner.localhost"
decision = "allow"

[[identities]]
address = "{john}"
platform = "slack"
tenant = "T0ACME"
user_id = "U0JOHN"

[[identities]]
address = "{mary}"
platform = "slack"
tenant = "T0ACME"
user_id = "U0MARY"

[[users]]
address = "{mary}"
decision = "deny"
"""


@dataclass(frozen=True)
class Ports:
    control: int
    sandbox: int
    slack: int
    webhook: int
    c2s: int
    component: int
    partner: int


def write_config(tmp: Path, ports: Ports, outbound_secret: str) -> Path:
    """The deployment's config, its sandbox seed (the app delivers events over HTTP to
    the Slack adapter's listener) and the outbound webhook secret's file."""
    seed = (ROOT / "examples" / "sandbox-seed.toml").read_text(encoding="utf-8")
    assert _SEED_APP_URL in seed, "the example seed changed: set request_url another way"
    seed = seed.replace(_SEED_APP_URL,
                        f'request_url = "http://127.0.0.1:{ports.slack}/slack/events"')
    (tmp / "seed.toml").write_text(seed, encoding="utf-8")
    secret_file = tmp / "webhook-outbound"
    secret_file.write_text(outbound_secret + "\n", encoding="utf-8")
    secret_file.chmod(0o600)
    config = tmp / "interlink.toml"
    config.write_text(CONFIG.format(
        tmp=tmp, control_port=ports.control, sandbox_port=ports.sandbox,
        slack_port=ports.slack, webhook_port=ports.webhook, c2s_port=ports.c2s,
        component_port=ports.component, partner_port=ports.partner,
        xmpp_max_body=XMPP_MAX_BODY, webhook_max_body=WEBHOOK_MAX_BODY,
        john=JOHN, mary=MARY), encoding="utf-8")
    return config


class EngineLog:
    """The engine's stderr, line by line: JSON records, and any line that is not JSON
    (a traceback printed by something that bypassed the logger) kept as raw text."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.records: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = trio.Event()
        #: set when stderr is closed (the process is gone and every line is read)
        self.closed = trio.Event()

    async def collect(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                self._take(line.decode("utf-8", "replace"))
        if buffer:
            self._take(buffer.decode("utf-8", "replace"))
        self.closed.set()

    def _take(self, line: str) -> None:
        self.raw.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [r for r in self.records if predicate(r)]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *,
                       start: int = 0) -> dict[str, Any]:
        """The first record from index ``start`` on matching ``predicate``, once written."""
        while True:
            for record in self.records[start:]:
                if predicate(record):
                    return record
            await self._changed.wait()

    def tracebacks(self) -> list[str]:
        """Log lines that carry a traceback: raw text, or a record's exc_info/stack."""
        found = [line for line in self.raw if "Traceback (most recent call last)" in line]
        for record in self.records:
            for key in ("exc_info", "exc_text", "stack_info", "traceback"):
                if record.get(key):
                    found.append(json.dumps(record)[:400])
        return found

    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.records if str(r.get("level", "")).lower() in
                ("error", "critical")]


def slack_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Slack's ``X-Slack-Signature``: v0= HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class World:
    """The running deployment and everyone who talks to it."""

    tmp: Path
    config: Path
    ports: Ports
    log: EngineLog
    http: httpx.AsyncClient
    partner: FakePartner
    wendy: PartnerClient
    signing_secret: str
    peter_password: str
    #: Peter's XMPP client, logged in for the whole run (set once logged in)
    peter: TestClient | None = None

    @property
    def slack_events_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.slack}/slack/events"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.control}"

    def slack_headers(self, body: bytes, *, timestamp: int | None = None,
                      content_type: str | None = "application/json") -> dict[str, str]:
        """Headers of a request Slack would sign (``timestamp`` defaults to now)."""
        when = int(time.time()) if timestamp is None else timestamp
        headers = {"X-Slack-Request-Timestamp": str(when),
                   "X-Slack-Signature": slack_signature(self.signing_secret, when, body)}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def post_slack(self, body: bytes, headers: dict[str, str], *,
                         path: str = "/slack/events") -> httpx.Response:
        url = f"http://127.0.0.1:{self.ports.slack}{path}"
        return await self.http.post(url, content=body, headers=headers)

    async def as_john(self, method: str, **args: Any) -> dict[str, Any]:
        """Call the sandbox's Web API as John (token from the seed)."""
        response = await self.http.post(f"{self.sandbox_url}/api/{method}", json=args,
                                        headers={"Authorization": "Bearer xoxp-john"})
        answer: dict[str, Any] = response.json()
        assert answer.get("ok"), f"{method} failed: {answer}"
        return answer

    async def john_command(self, text: str) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.sandbox_url}/sandbox/command",
            json={"command": "/interlink", "text": text, "channel": "C0GENERAL"},
            headers={"Authorization": "Bearer xoxp-john"})
        answer: dict[str, Any] = response.json()
        return answer


@asynccontextmanager
async def running_world(tmp: Path) -> AsyncIterator[World]:
    """``interlink run`` on ``tmp``, up and ready, with Peter logged in; stopped with
    SIGINT afterwards (its exit code is asserted by the caller through ``log``)."""
    inbound, outbound = new_secret(), new_secret()
    partner = FakePartner(outbound)
    async with httpx.AsyncClient(trust_env=False, timeout=15.0) as http, \
            trio.open_nursery() as nursery:
        partner_port: int = await nursery.start(lambda task_status: serve_http(
            partner, host="127.0.0.1", port=0, name="partner", task_status=task_status))
        ports = Ports(control=_free_port(), sandbox=_free_port(), slack=_free_port(),
                      webhook=_free_port(), c2s=_free_port(), component=_free_port(),
                      partner=partner_port)
        config = write_config(tmp, ports, outbound)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "INTERLINK_CONTROL_TOKEN": CONTROL_TOKEN,
               "BAD_INPUT_WEBHOOK_INBOUND": inbound}
        env.pop("BAD_INPUT_WEBHOOK_OUTBOUND", None)  # read from its file
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "supervisor.cli", "run", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        log = EngineLog(process)
        try:
            nursery.start_soon(log.collect)
            with trio.fail_after(START_TIMEOUT):
                await log.wait_for(lambda r: r.get("msg") == "ready")
            signing_secret = (tmp / "sandbox" / "signing_secret").read_text().strip()
            password = (tmp / "prosody" / "secrets" / "password.peter").read_text().strip()
            world = World(tmp=tmp, config=config, ports=ports, log=log, http=http,
                          partner=partner,
                          wendy=PartnerClient(http, f"http://127.0.0.1:{ports.webhook}/webhook",
                                              inbound),
                          signing_secret=signing_secret, peter_password=password)
            async with open_client(PETER, password, "127.0.0.1", ports.c2s) as peter:
                world.peter = peter
                yield world
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                with trio.CancelScope(shield=True), trio.move_on_after(20):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await log.closed.wait()  # every line of the stopped engine is read
            nursery.cancel_scope.cancel()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"
