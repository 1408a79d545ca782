"""Shared pieces for the sandbox tests: seeds, a running sandbox, an app's HTTP endpoint."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from adapters.slack.sandbox import Sandbox, SandboxSettings, Seed, parse_seed

T = TypeVar("T")

#: seconds any one test may spend with a sandbox running
TEST_DEADLINE = 30

APP = "A0INTERLINK"
BOT = "U0BOT"
JOHN, MARY, PETER = "U0JOHN", "U0MARY", "U0PETER"
GENERAL, PARTNERS, SECRET = "C0GENERAL", "C0PARTNERS", "C0SECRET"

ALL_BOT_SCOPES = (
    '"chat:write", "chat:write.customize", "chat:write.public", "im:history", "im:write", '
    '"im:read", "mpim:history", "mpim:read", "mpim:write", "groups:history", "groups:read", '
    '"groups:write", "channels:history", "channels:read", "channels:manage", "channels:join", '
    '"reactions:read", "reactions:write", "users:read", "users:read.email", '
    '"users.profile:read", "users:write", "files:read", "files:write", "commands", '
    '"team:read"')


def seed_text(*, request_url: str = "", scopes: str = ALL_BOT_SCOPES, extra: str = "",
              app_extra: str = "") -> str:
    """The tests' workspace: Acme with john (admin), mary, peter and the Interlink app.

    Without ``request_url`` the app uses Socket Mode.
    """
    url_line = f'request_url = "{request_url}"' if request_url else ""
    return f"""
[[workspace]]
id = "T0ACME"
name = "Acme"
domain = "acme"

[[workspace.user]]
id = "U0JOHN"
name = "john"
real_name = "John Smith"
email = "john@acme.localhost"
title = "Head of Sales"
token = "xoxp-john"
is_admin = true

[[workspace.user]]
id = "U0MARY"
name = "mary"
real_name = "Mary Jones"
email = "mary@acme.localhost"
token = "xoxp-mary"

[[workspace.user]]
id = "U0PETER"
name = "peter"
real_name = "Peter Pan"
email = "peter@acme.localhost"
token = "xoxp-peter"
avatar_url = "https://avatars.example/peter.png"

[[workspace.channel]]
id = "C0GENERAL"
name = "general"
is_general = true
members = ["U0JOHN", "U0MARY", "U0PETER", "U0BOT"]

[[workspace.channel]]
id = "C0PARTNERS"
name = "partners"
members = ["U0JOHN", "U0MARY"]

[[workspace.channel]]
id = "C0SECRET"
name = "secret"
is_private = true
members = ["U0JOHN", "U0BOT"]

[[workspace.app]]
id = "A0INTERLINK"
name = "Interlink"
bot_user_id = "U0BOT"
bot_token = "xoxb-interlink"
app_token = "xapp-interlink"
signing_secret = "s3cret"
{url_line}
commands = ["/interlink"]
client_id = "111.222"
client_secret = "client-secret"
scopes = [{scopes}]
{app_extra}
{extra}
"""


def make_seed(**options: Any) -> Seed:
    return parse_seed(seed_text(**options), source="test-seed.toml")


def fast_settings(**timing: Any) -> SandboxSettings:
    """Slack's delivery clock, shrunk: 0.5 s ack deadline, retries within milliseconds."""
    values: dict[str, Any] = {"ack_timeout": 0.5, "retry_scale": 0.001, "refresh_grace": 0.5}
    values.update(timing)
    base = SandboxSettings()
    return msgspec.structs.replace(base, timing=msgspec.structs.replace(base.timing, **values))


@asynccontextmanager
async def running(seed: Seed, *, deadline: float = TEST_DEADLINE,
                  **options: Any) -> AsyncIterator[Sandbox]:
    """A sandbox served on a free loopback port for the duration of the block."""
    sandbox = Sandbox(seed, **options)
    with trio.fail_after(deadline):  # a broken test fails, it does not hang
        async with trio.open_nursery() as nursery:
            await nursery.start(sandbox.serve)
            yield sandbox
            nursery.cancel_scope.cancel()


class FakeClock:
    """Wall time that moves only when told: token expiry without waiting."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking SDK call off the trio thread."""
    return await trio.to_thread.run_sync(fn)


class Received(msgspec.Struct, frozen=True, kw_only=True):
    """One request an app endpoint received."""

    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]
Responder = Callable[[Received], Awaitable[Answer]]


async def answer_ok(request: Received) -> Answer:
    return 200, {}, b""


class Endpoint:
    """An app's Request URL: records what arrives and answers with ``responder``."""

    def __init__(self, responder: Responder = answer_ok) -> None:
        self.responder = responder
        self.send, self.receive = trio.open_memory_channel[Received](1000)
        self.url = ""

    async def __call__(self, scope: MutableMapping[str, Any],
                       receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(headers=headers, body=body)
        self.send.send_nowait(request)
        status, extra, content = await self.responder(request)
        raw = [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.graceful_timeout = 0.5

        async def bound(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                        ) -> None:
            await serve(self, config, task_status=task_status)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(bound)
            self.url = binds[0] + "/slack/events"
            task_status.started(self.url)

    async def next(self, where: Callable[[Received], bool] = lambda r: True) -> Received:
        """The next request matching ``where`` (others are skipped)."""
        async for request in self.receive:
            if where(request):
                return request
        raise AssertionError("endpoint closed")


def event_of(request: Received) -> Mapping[str, Any]:
    body: dict[str, Any] = request.json()
    event: dict[str, Any] = body["event"]
    return event
