"""The Slack adapter's own HTTP routes, in front of the events app:

- ``GET /slack/install`` -> Slack's authorize URL (OAuth v2, with a one-use ``state``);
- ``GET /slack/oauth_redirect`` -> exchange the code, store the installation;
- ``GET /slack/files/<ticket>`` -> stream a Slack file for a contact on another
  platform (see :mod:`._file_links`); nothing touches the disk.

Everything else goes to the wrapped app (events and slash commands).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from html import escape
from typing import Protocol
from urllib.parse import parse_qs, quote

import trio

from engine import Installation
from engine.asgi import Receive, Scope, Send

from ._errors import SlackApiError
from ._file_links import FileLinkError
from ._files import Download

#: seconds an install link (its ``state``) stays valid
STATE_LIFETIME = 600.0
MAX_STATES = 1000


class RouteOwner(Protocol):
    """What the routes need of the adapter."""

    def authorize_url(self, state: str) -> str | None:
        """Where to send a person to install the app; ``None``: OAuth not configured."""
        ...

    async def install(self, code: str) -> Installation:
        """Finish an install (exchange the code, store the installation)."""
        ...

    def open_file(self, ticket: str) -> AbstractAsyncContextManager[tuple[str, Download]]:
        """The file a ticket names (its name, and the open download from Slack)."""
        ...


class SlackRoutes:
    def __init__(self, owner: RouteOwner, inner: object) -> None:
        self._owner = owner
        self._inner = inner
        self._states: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD"):
            if path.startswith("/slack/files/"):
                await self._file(path[len("/slack/files/"):], send)
                return
            if path in ("/slack/install", "/slack/oauth_redirect"):
                status, headers, page = await self._oauth(scope)
                await _respond(send, status, page, headers)
                return
        await self._inner(scope, receive, send)  # type: ignore[operator]

    async def _oauth(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        now = trio.current_time()
        if scope["path"] == "/slack/install":
            state = secrets.token_urlsafe(16)
            location = self._owner.authorize_url(state)
            if location is None:
                return 404, [], _page("The install flow is not configured.")
            self._states = {s: t for s, t in self._states.items() if t > now}
            if len(self._states) >= MAX_STATES:
                return 503, [], _page("Too many installs in progress; try again shortly.")
            self._states[state] = now + STATE_LIFETIME
            return 302, [(b"location", location.encode())], _page("Redirecting to Slack…")
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        expires = self._states.pop(query.get("state", ""), None)
        if expires is None or expires < now:
            return 400, [], _page("This install link expired or was not started here. "
                                  "Start again from /slack/install.")
        if "code" not in query:
            return 400, [], _page(f"Slack did not grant access ({query.get('error', 'no code')}).")
        try:
            installation = await self._owner.install(query["code"])
        except SlackApiError as exc:
            return 502, [], _page(f"Slack refused the installation ({exc.error}).")
        return 200, [], _page(f"Interlink is installed in workspace {installation.tenant}.")

    async def _file(self, ticket: str, send: Send) -> None:
        started = False
        try:
            async with self._owner.open_file(ticket) as (name, download):
                headers = [(b"content-type", (download.content_type
                                              or "application/octet-stream").encode()),
                           (b"content-disposition",
                            f"attachment; filename*=UTF-8''{quote(name)}".encode()),
                           (b"cache-control", b"private, no-store")]
                if download.content_length is not None:
                    headers.append((b"content-length", str(download.content_length).encode()))
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                started = True
                async for chunk in _chunks(download):
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except FileLinkError as exc:
            await _respond(send, 410 if exc.expired else 404,
                           _page("This file link expired." if exc.expired
                                 else "No such file link."))
        except SlackApiError as exc:
            if started:  # the head is out: ending early is all that is left to say
                await send({"type": "http.response.body", "body": b""})
                return
            status = 404 if exc.error in ("file_not_found", "file_access_denied") else 502
            await _respond(send, status, _page(f"The file is not available ({exc.error})."))


async def _chunks(download: Download) -> AsyncIterator[bytes]:
    async for chunk in download:
        yield chunk


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _page(message: str) -> bytes:
    return (f"<!DOCTYPE html><html><head><title>Interlink</title></head><body><p>"
            f"{escape(message)}</p></body></html>").encode()

