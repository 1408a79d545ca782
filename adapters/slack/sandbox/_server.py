"""The sandbox server: one ASGI app on one port, served by hypercorn on trio.

Routes (Slack's, at the sandbox's own URL)::

    GET|POST /api/<method>                   the Web API (form, JSON or multipart bodies)
    POST     /upload/v1/<ticket>             file bytes for files.getUploadURLExternal
    GET      /files-pri/<team>-<file>/[download/]<name>   url_private (Bearer token)
    GET      /oauth/v2/authorize?...&user=U…  the install page (approves at once)
    POST     /commands/<team>/<key>          a slash command's response_url
    WS       /link/?ticket=…                 Socket Mode (from apps.connections.open)
    GET      /avatars/<user>-<size>.png      default avatars

and the sandbox-only extras, which Slack does not have (they stand in for what
a person does in the Slack client)::

    POST /sandbox/command            a person runs a slash command (user token)
    POST /sandbox/app_home_opened    a person opens an app's Home or Messages tab
    POST /sandbox/socket_refresh     Socket Mode connections get refresh_requested
    GET  /sandbox/ephemeral          the ephemeral messages a person has been shown

:class:`Sandbox` holds the state and offers the same extras as Python methods
for tests; :func:`serve_sandbox` runs one until cancelled.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from engine import Clock, SystemClock
from engine.asgi import Receive, Scope, Send, answer_lifespan, listening_socket

from ._call import Args, Call
from ._commands import apply_response, open_app_home, prepare_command, use_response_url
from ._delivery import (
    CommandReply,
    DeliveryLog,
    DeliveryRecord,
    DeliveryTiming,
    Dispatcher,
    SocketConnection,
    SocketHub,
)
from ._events import events_for
from ._files import can_see_file
from ._methods import METHODS, auth_revoke, call_method
from ._oauth import oauth_authorize
from ._ratelimit import RateLimiter, RateLimitSettings
from ._render import message_json
from ._seed import Seed, load_seed
from ._state import Change, Ephemeral, SlackError, Token, World

log = logging.getLogger("interlink.slack.sandbox")



class SandboxSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the sandbox behaves beyond its seed."""

    rate_limits: RateLimitSettings = RateLimitSettings()
    timing: DeliveryTiming = DeliveryTiming()
    #: Web API request bodies above this are refused (HTTP 413)
    max_request_bytes: int = 2 * 1024 * 1024
    max_upload_bytes: int = 50 * 1024 * 1024
    #: events waiting per app before new ones are dropped (and logged)
    outbox_capacity: int = 10_000
    #: send url_verification to every HTTP app at start (results in the delivery log)
    verify_request_urls: bool = False
    max_socket_connections: int = 10
    #: the first event id's number (``Ev`` + 8 characters). Slack never sends an event id
    #: twice, so a sandbox started again for the same app (fresh state, same receiver,
    #: which deduplicates by event id) must start past the ids it sent before
    first_event_id: int = 1


class SandboxStatistics(msgspec.Struct, frozen=True, kw_only=True):
    api_calls: int
    ratelimited: int
    events_published: int
    events_dropped: int
    socket_connections: int
    #: Web API calls answered by :meth:`Sandbox.inject_failures` instead of the method
    failures_injected: int = 0


class _Fault:
    """The next ``remaining`` calls of one method fail this way (sandbox-only, for tests):
    instead of running, or, ``after_commit``, once they have run (their answer is lost)."""

    __slots__ = ("after_commit", "delay", "drop_connection", "error", "remaining",
                 "retry_after", "status")

    def __init__(self, *, remaining: int, status: int, error: str | None,
                 drop_connection: bool, retry_after: int | None, delay: float,
                 after_commit: bool) -> None:
        self.remaining = remaining
        self.status = status
        self.error = error
        self.drop_connection = drop_connection
        self.retry_after = retry_after
        self.delay = delay
        self.after_commit = after_commit


class _HttpError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body


# a 1x1 transparent PNG for default avatars
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5"
    "ErkJggg==")
_SIGN_IN = (b"<!DOCTYPE html><html><head><title>Sign in | Slack</title></head><body>"
            b"<h1>Sign in to Slack</h1><p>This file needs a token: send "
            b"<code>Authorization: Bearer xox...</code>.</p></body></html>")


class Sandbox:
    """A local Slack: state, Web API, event delivery. Serve it with :meth:`serve`."""

    def __init__(self, seed: Seed | str | Path, *, settings: SandboxSettings | None = None,
                 clock: Clock | None = None, http: httpx.AsyncClient | None = None) -> None:
        if not isinstance(seed, Seed):
            seed = load_seed(seed)
        if settings is None:  # the seed's [rate_limits], else Slack's
            settings = SandboxSettings() if seed.rate_limits is None else SandboxSettings(
                rate_limits=seed.rate_limits.settings())
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.world = World(seed, now=self.clock.now(),
                           first_event_id=self.settings.first_event_id)
        self.world.max_upload_bytes = self.settings.max_upload_bytes
        self.limiter = RateLimiter(self.settings.rate_limits, self.clock.now)
        self.deliveries = DeliveryLog()
        self.hub = SocketHub(max_connections=self.settings.max_socket_connections)
        self._http = http
        self._dispatcher: Dispatcher | None = None
        self._stopping = trio.Event()
        self._url = ""
        self.api_calls = 0
        self._faults: dict[str, _Fault] = {}
        self.failures_injected = 0

    # -- serving ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once serving."""
        if not self._url:
            raise RuntimeError("the sandbox is not serving yet")
        return self._url

    @property
    def api_url(self) -> str:
        """The Web API base URL for ``WebClient(base_url=...)``."""
        return self.url + "/api/"

    async def serve(self, *, host: str = "127.0.0.1", port: int = 0,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or :meth:`stop`; ``task_status.started(url)``.

        ``port=0`` picks a free port. A port in use raises ``OSError``.
        """
        config = HypercornConfig()
        # bind here, so that a port in use fails without leaking hypercorn's socket
        config.bind = [f"fd://{listening_socket(host, port).detach()}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("interlink.slack.sandbox.server")
        config.graceful_timeout = 1.0
        owns_http = self._http is None
        http = self._http or httpx.AsyncClient(trust_env=False, follow_redirects=False)
        served = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._dispatcher = Dispatcher(
                    self.world.apps, http=http, hub=self.hub, timing=self.settings.timing,
                    clock=self.clock, records=self.deliveries,
                    capacity=self.settings.outbox_capacity)
                await nursery.start(self._dispatcher.run)
                binds: list[str] = await nursery.start(
                    _serve, SandboxApp(self), config, self._stopping, served)
                self._url = binds[0]
                self.world.base_url = self._url
                log.info("slack sandbox listening", extra={
                    "url": self._url, "workspaces": len(self.world.workspaces),
                    "apps": len(self.world.apps)})
                if self.settings.verify_request_urls:
                    for slack_app in self.world.apps.values():
                        if not slack_app.socket_mode:
                            nursery.start_soon(self._dispatcher.verify_url, slack_app)
                task_status.started(self._url)
                await self._stopping.wait()
                self.hub.close_all()
                await served.wait()
                nursery.cancel_scope.cancel()
        finally:
            if owns_http:
                with trio.CancelScope(shield=True):
                    await http.aclose()
        log.info("slack sandbox stopped", extra={"url": self._url})

    def stop(self) -> None:
        """Stop serving: close Socket Mode connections, finish requests, return from serve."""
        self._stopping.set()

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("the sandbox is not serving yet")
        return self._dispatcher

    # -- what the server calls ------------------------------------------------------------------
    def publish(self, changes: list[Change]) -> None:
        """Turn state changes into events for every app that can see them."""
        now = self.clock.now()
        for change in changes:
            for delivery in events_for(self.world, change, now=now):
                self.dispatcher.publish(delivery)

    # -- for tests and demos (sandbox-only, like the /sandbox/ routes) --------------------------
    def token_for(self, user: str) -> str:
        """The seeded user token of a person, by id or name."""
        for token in self.world.tokens.values():
            person = self.world.users.get(token.user_id)
            if token.kind == "user" and person is not None and user in (person.id, person.name) \
                    and not token.revoked:
                return token.value
        raise KeyError(f"no user token for {user!r}")

    def channel_id(self, name: str, team_id: str = "") -> str:
        """A channel's id by name (in ``team_id``, or in any workspace)."""
        for conv in self.world.conversations.values():
            if conv.name == name.lstrip("#") and (not team_id or conv.team_id == team_id):
                return conv.id
        raise KeyError(f"no channel named {name!r}")

    def dm_id(self, user_a: str, user_b: str) -> str | None:
        """The DM between two user ids, if one is open."""
        person = self.world.users[user_a]
        conv = self.world.find_dm(person.team_id, [user_a, user_b])
        return conv.id if conv is not None else None

    def messages(self, channel: str, *, as_user: str | None = None) -> list[dict[str, Any]]:
        """Every message of a conversation, replies included, oldest first (API shape).

        With ``as_user``, what that person sees: ``LookupError`` if they cannot see
        the conversation (Slack would say ``channel_not_found``).
        """
        conv = self.world.conversations.get(channel)
        if conv is None or (as_user is not None and not self.world.can_see(as_user, conv)):
            raise LookupError(f"{as_user or 'nobody'} sees no conversation {channel}")
        return [message_json(self.world, m, with_channel=True)
                for m in self.world.messages.get(channel, {}).values()]

    def conversations_of(self, user_id: str) -> list[str]:
        """The ids of the conversations a person or bot user is a member of."""
        return [c.id for c in self.world.conversations.values() if user_id in c.members]

    def ephemeral_messages(self, user_id: str) -> list[dict[str, Any]]:
        """The ephemeral messages shown to a person, oldest first."""
        return [_ephemeral_json(e) for e in self.world.ephemerals if e.user == user_id]

    async def run_command(self, token: str, command: str, text: str = "", *,
                          channel: str) -> CommandReply:
        """A person runs ``command text`` in ``channel``; the app's answer (3 s at most)."""
        person = self.world.authenticate(token, self.clock.now())
        return await self._run_command(person, command, text, channel)

    async def _run_command(self, person: Token, command: str, text: str,
                           channel: str) -> CommandReply:
        prepared = prepare_command(self.world, person, command, text, channel,
                                   self.clock.now())
        reply = await self.dispatcher.run_command(prepared.app, prepared.payload)
        if reply.ok:
            try:
                changes = apply_response(self.world, prepared.app.id, person.team_id,
                                         prepared.channel.id, prepared.user, reply.response,
                                         self.clock.now())
            except SlackError as exc:
                return CommandReply(False, reply.response, exc.error)
            self.publish(changes)
        return reply

    def open_app_home(self, token: str, app_id: str, tab: str = "home") -> str:
        """A person opens the app's Home (or Messages) tab; the DM's id."""
        person = self.world.authenticate(token, self.clock.now())
        conv, changes = open_app_home(self.world, person, app_id, tab, self.clock.now())
        self.publish(changes)
        return conv.id

    def request_socket_refresh(self, app_id: str) -> int:
        """Send ``refresh_requested`` to the app's Socket Mode connections; how many."""
        return self.hub.request_refresh(app_id, self.dispatcher.nursery,
                                        self.settings.timing.refresh_grace)

    def close_socket_connections(self, app_id: str) -> int:
        """Close the app's Socket Mode connections (as Slack does at times); how many."""
        return self.hub.close_all(app_id)

    def socket_connections(self, app_id: str) -> int:
        return len(self.hub.connections(app_id))

    async def wait_socket_connections(self, app_id: str, count: int = 1) -> None:
        await self.hub.wait_connections(app_id, count)

    async def wait_for_delivery(self, predicate: Callable[[DeliveryRecord], bool]
                                ) -> DeliveryRecord:
        """The oldest delivery outcome matching ``predicate``, waiting for one."""
        return await self.deliveries.wait_for(predicate)

    async def verify_request_url(self, app_id: str) -> bool:
        """Slack's url_verification handshake against an HTTP app's Request URL."""
        return await self.dispatcher.verify_url(self.world.apps[app_id])

    def revoke_token(self, token: str) -> None:
        """Revoke a token as an admin would; the app gets ``tokens_revoked``."""
        found = self.world.tokens.get(token)
        if found is None or found.revoked:
            raise KeyError("no such live token")
        call = Call(self.world, found, Args({}), self.clock.now())
        auth_revoke(call)
        self.publish(call.changes)

    def inject_failures(self, method: str, *, count: int = 1, status: int = 500,
                        error: str | None = "internal_error", drop_connection: bool = False,
                        retry_after: int | None = None, delay: float = 0.0,
                        after_commit: bool = False) -> None:
        """The next ``count`` calls of Web API ``method`` fail instead of running (tests only).

        Each answers HTTP ``status`` with ``{"ok": false, "error": error}`` (a plain-text
        body when ``error`` is ``None``; ``Retry-After`` when ``retry_after`` is set), or,
        with ``drop_connection``, sends the response head and closes the connection
        mid-response. ``delay`` seconds pass first (for client timeouts). A new call
        replaces the method's earlier faults; ``count=0`` clears them.

        ``after_commit``: the call runs first, as usual — what it does is done (a message
        posted, its events published) — and then its answer is lost as above: after
        ``delay`` (longer than the client's timeout: the client times out), the
        connection drops, or the error is answered. That is a Slack that committed a
        call whose answer never arrived.
        """
        if count < 0 or not 100 <= status <= 599 or delay < 0:
            raise ValueError("count >= 0, a valid HTTP status and delay >= 0")
        if count == 0:
            self._faults.pop(method, None)
            return
        self._faults[method] = _Fault(remaining=count, status=status, error=error,
                                      drop_connection=drop_connection,
                                      retry_after=retry_after, delay=delay,
                                      after_commit=after_commit)

    def _take_fault(self, method: str) -> _Fault | None:
        fault = self._faults.get(method)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self._faults[method]
        self.failures_injected += 1
        return fault

    def statistics(self) -> SandboxStatistics:
        dispatcher = self._dispatcher
        return SandboxStatistics(
            api_calls=self.api_calls, ratelimited=self.limiter.limited,
            events_published=dispatcher.published if dispatcher else 0,
            events_dropped=dispatcher.dropped if dispatcher else 0,
            socket_connections=sum(len(self.hub.connections(a)) for a in self.world.apps),
            failures_injected=self.failures_injected)




async def _serve(app: SandboxApp, config: HypercornConfig, stopping: trio.Event,
                 served: trio.Event, *,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        await serve(app, config, shutdown_trigger=stopping.wait,  # type: ignore[arg-type]
                    task_status=task_status)
    finally:
        served.set()


async def serve_sandbox(seed: Seed | str | Path, *, host: str = "127.0.0.1", port: int = 0,
                        settings: SandboxSettings | None = None, clock: Clock | None = None,
                        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a sandbox from ``seed`` until cancelled; ``task_status.started(url)``."""
    sandbox = Sandbox(seed, settings=settings, clock=clock)
    await sandbox.serve(host=host, port=port, task_status=task_status)


def _ephemeral_json(ephemeral: Ephemeral) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "message", "channel": ephemeral.channel,
                            "user": ephemeral.author, "text": ephemeral.text, "ts": ephemeral.ts,
                            "is_ephemeral": True}
    if ephemeral.blocks is not None:
        data["blocks"] = ephemeral.blocks
    if ephemeral.bot_id is not None:
        data["bot_id"] = ephemeral.bot_id
        data["app_id"] = ephemeral.app_id
    return data


# -- the ASGI application ------------------------------------------------------------------------

class SandboxApp:
    """Routes requests to the Web API, files, OAuth, Socket Mode and the sandbox extras."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.world = sandbox.world

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path.startswith("/api/"):
                await self._api(scope, receive, send, path[len("/api/"):])
            elif path.startswith("/upload/v1/") and method == "POST":
                await self._upload(scope, receive, send, path[len("/upload/v1/"):])
            elif path.startswith("/files-pri/") and method == "GET":
                await self._download(scope, send, path)
            elif path == "/oauth/v2/authorize" and method == "GET":
                await self._authorize(scope, send)
            elif path.startswith("/commands/") and method == "POST":
                await self._response_url(scope, receive, send, path)
            elif path.startswith("/sandbox/"):
                await self._extra(scope, receive, send, path[len("/sandbox/"):])
            elif path.startswith("/avatars/") and method == "GET":
                await _respond(send, 200, _PNG, "image/png")
            elif path == "/" and method == "GET":
                await _respond(send, 200, _SIGN_IN, "text/html; charset=utf-8")
            else:
                raise _HttpError(404, {"ok": False, "error": "not_found"})
        except _HttpError as exc:
            await _respond_json(send, exc.status, exc.body)
        except SlackError as exc:
            await _respond_json(send, exc.status, exc.body(), exc.headers)
        except Exception:
            # a bug in the sandbox: the client gets Slack's answer for it, the log the trace
            log.exception("internal error", extra={"path": path, "method": method})
            await _respond_json(send, 500, {"ok": False, "error": "internal_error"})

    # -- Web API ------------------------------------------------------------------------------
    async def _api(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        sandbox = self.sandbox
        if name not in METHODS and name != "oauth.v2.access":
            await _drain(receive)
            await _respond_json(send, 404, {"ok": False, "error": "unknown_method"})
            return
        body = await _read_body(scope, receive, sandbox.settings.max_request_bytes)
        fault = sandbox._take_fault(name)
        if fault is not None and not fault.after_commit:
            await _fail(send, fault)
            return
        args = _request_args(scope, body)
        token, basic = _credentials(scope, args)
        now = sandbox.clock.now()
        outcome = call_method(self.world, sandbox.limiter, name, token, args, now,
                              basic_auth=basic)
        sandbox.api_calls += 1
        if outcome.changes:
            sandbox.publish(outcome.changes)
        if fault is not None:  # after_commit: done and published; the answer is lost
            await _fail(send, fault)
            return
        if not outcome.body.get("ok"):
            log.debug("api error", extra={"method": name, "error": outcome.body.get("error"),
                                          "status": outcome.status})
        await _respond_json(send, outcome.status, outcome.body, outcome.headers)

    # -- files --------------------------------------------------------------------------------
    async def _upload(self, scope: Scope, receive: Receive, send: Send, ticket: str) -> None:
        file_id = self.world.upload_tickets.get(ticket)
        if file_id is None:
            await _drain(receive)
            await _respond(send, 404, b"upload URL not found or already used", "text/plain")
            return
        body = await _read_body(scope, receive, self.world.max_upload_bytes)
        content_type = _header(scope, b"content-type")
        if content_type.startswith("multipart/form-data"):
            parts = _multipart(content_type, body)
            files = [value for _, value, filename in parts if filename is not None]
            if not files:
                raise _HttpError(400, {"ok": False, "error": "no_file_data"})
            body = files[0]
        file = self.world.files[file_id]
        file.content = body
        del self.world.upload_tickets[ticket]
        await _respond(send, 200, f"OK - {len(body)}".encode(), "text/plain; charset=utf-8")

    async def _download(self, scope: Scope, send: Send, path: str) -> None:
        parts = path[len("/files-pri/"):].split("/")
        team_id, _, file_id = parts[0].partition("-")
        file = self.world.files.get(file_id)
        token = _bearer(scope)
        now = self.sandbox.clock.now()
        try:
            person = self.world.authenticate(token, now) if token else None
        except SlackError:
            person = None
        if person is None or person.kind == "app" or person.team_id != team_id:
            location = f"{self.sandbox.url}/?redir={quote(path)}"
            await _respond(send, 302, b"", "text/plain", {"Location": location})
            return
        scopes = person.scopes
        installation = self.world.installation(person.app_id, person.team_id) \
            if person.kind == "bot" else None
        if installation is not None:
            scopes = installation.scopes
        if file is None or file.content is None or file.team_id != team_id or \
                not can_see_file(self.world, person.user_id, file):
            raise _HttpError(404, {"ok": False, "error": "file_not_found"})
        if "files:read" not in scopes:
            raise _HttpError(403, {"ok": False, "error": "missing_scope",
                                   "needed": "files:read"})
        headers = {}
        if len(parts) > 2 and parts[1] == "download":
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(file.name)}"
        await _respond(send, 200, file.content, file.mimetype, headers)

    # -- OAuth --------------------------------------------------------------------------------
    async def _authorize(self, scope: Scope, send: Send) -> None:
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        answer = oauth_authorize(self.world, query, self.sandbox.clock.now())
        if answer.location is not None:
            await _respond(send, answer.status, b"", "text/plain", {"Location": answer.location})
        else:
            await _respond_json(send, answer.status, answer.body)

    async def _response_url(self, scope: Scope, receive: Receive, send: Send,
                            path: str) -> None:
        body = await _read_body(scope, receive, self.sandbox.settings.max_request_bytes)
        parts = path.strip("/").split("/")
        if len(parts) != 3:
            raise _HttpError(404, {"ok": False, "error": "not_found"})
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            raise _HttpError(400, {"ok": False, "error": "invalid_payload"}) from None
        now = self.sandbox.clock.now()
        found = use_response_url(self.world, parts[2], now)
        if found.team_id != parts[1]:
            raise _HttpError(404, {"ok": False, "error": "expired_url"})
        changes = apply_response(self.world, found.app_id, found.team_id, found.channel,
                                 found.user, payload, now)
        self.sandbox.publish(changes)
        await _respond_json(send, 200, {"ok": True})

    # -- sandbox extras -------------------------------------------------------------------------
    async def _extra(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        sandbox = self.sandbox
        body = await _read_body(scope, receive, sandbox.settings.max_request_bytes)
        args = _request_args(scope, body)
        token_value, _ = _credentials(scope, args)
        now = sandbox.clock.now()
        token = self.world.authenticate(token_value, now)
        if name == "command" and scope["method"] == "POST":
            reply = await sandbox._run_command(
                token, str(args.get("command") or ""), str(args.get("text") or ""),
                str(args.get("channel") or args.get("channel_id") or ""))
            body_out: dict[str, Any] = {"ok": reply.ok, "response": reply.response}
            if not reply.ok:
                body_out["error"] = reply.error
            await _respond_json(send, 200, body_out)
        elif name == "app_home_opened" and scope["method"] == "POST":
            conv, changes = open_app_home(self.world, token, str(args.get("app_id") or ""),
                                          str(args.get("tab") or "home"), now)
            sandbox.publish(changes)
            await _respond_json(send, 200, {"ok": True, "channel": conv.id})
        elif name == "socket_refresh" and scope["method"] == "POST":
            if token.kind != "app":
                raise SlackError("not_allowed_token_type")
            told = sandbox.request_socket_refresh(token.app_id)
            await _respond_json(send, 200, {"ok": True, "connections": told})
        elif name == "ephemeral" and scope["method"] == "GET":
            await _respond_json(send, 200, {"ok": True, "messages":
                                            sandbox.ephemeral_messages(token.user_id)})
        else:
            raise _HttpError(404, {"ok": False, "error": "unknown_method"})

    # -- Socket Mode ----------------------------------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        ticket = self.world.socket_tickets.pop(query.get("ticket", ""), None)
        now = self.sandbox.clock.now()
        if scope["path"].rstrip("/") != "/link" or ticket is None or now >= ticket.expires_at:
            log.info("socket mode connection refused: unknown or used ticket")
            await send({"type": "websocket.close", "code": 1008})
            return
        hub = self.sandbox.hub
        await send({"type": "websocket.accept"})
        if len(hub.connections(ticket.app_id)) >= hub.max_connections:
            await _send_text(send, {"type": "disconnect", "reason": "too_many_websockets",
                                    "debug_info": {"host": "sandbox"}})
            await send({"type": "websocket.close", "code": 1000})
            return
        connection = hub.open(ticket.app_id)
        log.info("socket mode connected", extra={"app_id": ticket.app_id,
                                                 "connection": connection.id})
        try:
            await _send_text(send, {
                "type": "hello", "num_connections": len(hub.connections(ticket.app_id)),
                "debug_info": {"host": "sandbox", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": ticket.app_id}})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, connection, send, nursery.cancel_scope)
                while True:
                    event = await receive()
                    if event["type"] == "websocket.receive":
                        text = event.get("text")
                        if text is None and event.get("bytes") is not None:
                            text = bytes(event["bytes"]).decode("utf-8", "replace")
                        hub.receive_frame(connection, text or "")
                    elif event["type"] == "websocket.disconnect":
                        nursery.cancel_scope.cancel()
                        break
        finally:
            hub.close(connection)
            log.info("socket mode disconnected", extra={"app_id": ticket.app_id,
                                                        "connection": connection.id})


async def _fail(send: Send, fault: _Fault) -> None:
    """Answer an injected failure (see :meth:`Sandbox.inject_failures`)."""
    if fault.delay:
        await trio.sleep(fault.delay)
    if fault.drop_connection:
        # the head promises a body that never comes: the server closes the connection
        await send({"type": "http.response.start", "status": fault.status,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", b"64")]})
        return
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.error is None:
        await _respond(send, fault.status, b"injected failure", "text/plain; charset=utf-8",
                       headers)
    else:
        await _respond_json(send, fault.status, {"ok": False, "error": fault.error}, headers)


async def _pump(connection: SocketConnection, send: Send, scope: trio.CancelScope) -> None:
    async for frame in connection.frames:
        if frame is None:
            await send({"type": "websocket.close", "code": 1000})
            scope.cancel()
            return
        await send({"type": "websocket.send", "text": frame})


async def _send_text(send: Send, data: dict[str, Any]) -> None:
    await send({"type": "websocket.send", "text": json.dumps(data, separators=(",", ":"))})


# -- request parsing ----------------------------------------------------------------------------

def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _bearer(scope: Scope) -> str:
    value = _header(scope, b"authorization")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return ""


def _credentials(scope: Scope, args: dict[str, Any]) -> tuple[str, tuple[str, str] | None]:
    """(token, HTTP Basic client credentials): header first, then the ``token`` argument."""
    value = _header(scope, b"authorization")
    basic: tuple[str, str] | None = None
    if value[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        client_id, _, secret = decoded.partition(":")
        basic = (client_id, secret)
    token = _bearer(scope)
    form_token = args.pop("token", None)
    if not token and isinstance(form_token, str):
        token = form_token
    return token, basic


def _request_args(scope: Scope, body: bytes) -> dict[str, Any]:
    """Arguments from the query string and the body (form, JSON or multipart)."""
    query = scope.get("query_string", b"")
    try:
        args: dict[str, Any] = dict(parse_qsl(bytes(query).decode("utf-8"),
                                              keep_blank_values=True))
    except UnicodeDecodeError:
        raise SlackError("invalid_form_data") from None
    content_type = _header(scope, b"content-type").lower()
    if not body.strip():
        return args
    if content_type.startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(decoded, dict):
            raise SlackError("invalid_json")
        args.update(decoded)
    elif content_type.startswith("multipart/form-data"):
        for name, value, filename in _multipart(_header(scope, b"content-type"), body):
            if filename is None:
                args[name] = value.decode("utf-8", "replace")
    else:
        try:
            args.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                  strict_parsing=False))
        except UnicodeDecodeError:
            raise SlackError("invalid_form_data") from None
    return args


def _multipart(content_type: str, body: bytes) -> list[tuple[str, bytes, str | None]]:
    """(name, value, filename) of each part of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise SlackError("invalid_form_data")
    parts: list[tuple[str, bytes, str | None]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        filename = part.get_filename()
        parts.append((name, payload if isinstance(payload, bytes) else b"", filename))
    return parts


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    length = _header(scope, b"content-length")
    if length.isdigit() and int(length) > limit:
        await _drain(receive)
        raise _HttpError(413, {"ok": False, "error": "request_too_large"})
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HttpError(400, {"ok": False, "error": "client_disconnected"})
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _drain(receive, more=message.get("more_body", False))
            raise _HttpError(413, {"ok": False, "error": "request_too_large"})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Receive, *, more: bool = True) -> None:
    """Read and drop the rest of a request body (so the connection stays usable)."""
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        more = message.get("more_body", False)


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   headers: Mapping[str, str] | None = None) -> None:
    raw = [(b"content-type", content_type.encode()),
           (b"content-length", str(len(body)).encode())]
    raw.extend((k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, body: dict[str, Any],
                        headers: Mapping[str, str] | None = None) -> None:
    await _respond(send, status, json.dumps(body, separators=(",", ":")).encode(),
                   "application/json; charset=utf-8", headers)
