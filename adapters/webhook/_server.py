"""Serving an ASGI app with hypercorn on trio, and the few ASGI pieces the endpoint needs.

:func:`serve_http` binds first (a port in use fails before the server
starts), reports the bound port with ``task_status.started(port)`` and on
cancellation stops accepting, lets requests in flight finish for a bounded
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

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "answer_lifespan", "serve_http"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("interlink.webhook.server")


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge the server's lifespan start-up and shutdown (nothing to set up)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_http(app: ASGIApp, *, host: str, port: int, graceful_timeout: float = 3.0,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until cancelled; ``task_status.started(port)`` once listening."""
    listening = _listening_socket(host, port)
    config = HypercornConfig()
    config.bind = [f"fd://{listening.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("interlink.webhook.server.errors")
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
        log.info("webhook endpoint listening", extra={"host": host, "port": bound})
        try:
            task_status.started(bound)
            await finished.wait()
        finally:
            stopping.set()
            with trio.move_on_after(graceful_timeout + 1.0) as grace:
                grace.shield = True
                await finished.wait()
            server_scope.cancel()
            log.info("webhook endpoint stopped", extra={"port": bound})
