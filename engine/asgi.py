"""The few ASGI pieces Interlink's HTTP servers share (control API, adapters' HTTP edges).

:func:`serve_http` binds first (a port in use fails before the server
starts), reports the bound port with ``task_status.started(port)`` and, on
cancellation, stops accepting, lets requests in flight finish for a bounded
grace period, and returns.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

__all__ = ["ASGIApp", "BodyTimeout", "BodyTooLarge", "ClientGone", "Receive", "Scope", "Send",
           "answer_lifespan", "header_map", "listening_socket", "read_body", "respond",
           "serve_http"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("interlink.http")


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge the server's lifespan start-up and shutdown (nothing to set up)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: a free one), for ``fd://`` binds: binding first
    means a port in use fails here, before the server starts, with nothing leaked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_http(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, name: str = "http",
                     graceful_timeout: float = 3.0,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` with hypercorn on trio; ``task_status.started(port)`` once listening.

    ``port=0`` picks a free port; ``name`` says which endpoint in the logs. On
    cancellation the server stops accepting, lets requests in flight finish for
    up to ``graceful_timeout`` seconds and returns (re-raising the
    cancellation). A port in use raises ``OSError``.
    """
    listening = listening_socket(host, port)
    config = HypercornConfig()
    config.bind = [f"fd://{listening.detach()}"]
    config.accesslog = None  # an access log would carry URLs: ids, file names
    config.errorlog = logging.getLogger(f"interlink.http.{name}")
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    stopping = trio.Event()
    finished = trio.Event()
    server_scope = trio.CancelScope(shield=True)  # shielded: cancelling us stops it gently

    async def run_server(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        try:
            with server_scope:
                await serve(app, config, shutdown_trigger=stopping.wait,  # type: ignore[arg-type]
                            task_status=task_status)
        finally:
            finished.set()

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run_server)
        bound = urlsplit(binds[0]).port
        assert bound is not None
        log.info("http endpoint listening", extra={"endpoint": name, "host": host,
                                                   "port": bound})
        try:
            task_status.started(bound)
            await finished.wait()
        finally:
            stopping.set()
            with trio.move_on_after(graceful_timeout + 1.0) as grace:
                grace.shield = True
                await finished.wait()
            server_scope.cancel()
            log.info("http endpoint stopped", extra={"endpoint": name, "port": bound})


class BodyTooLarge(Exception):
    """The request body exceeds the edge's limit (answer 413)."""


class BodyTimeout(Exception):
    """The request body did not arrive in time (answer 408)."""


class ClientGone(Exception):
    """The client disconnected before its body arrived (answer nothing)."""


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers, names lower-cased (the last value of a repeated name wins)."""
    return {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
            for k, v in scope.get("headers", [])}


async def read_body(receive: Receive, headers: dict[str, str], *, limit: int,
                    deadline: float) -> bytes:
    """The body, at most ``limit`` bytes, by trio time ``deadline``.

    Past the limit, up to another ``limit`` bytes are read and dropped, so the
    client finishes sending and can read the 413; a longer body (or a declared
    ``content-length`` above twice the limit) is refused at once. Raises
    :class:`BodyTooLarge`, :class:`BodyTimeout` or :class:`ClientGone`.
    """
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > 2 * limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_at(deadline):
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > 2 * limit:
                break
            if not message.get("more_body", False):
                break
        if size > limit:
            raise BodyTooLarge
        return b"".join(chunks)
    raise BodyTimeout


async def respond(send: Send, status: int, body: bytes, *,
                  content_type: bytes = b"application/json",
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a whole response: ``body`` with its type and length, never cached."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
