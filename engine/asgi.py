"""The few ASGI pieces Interlink's HTTP servers share (control API, adapters' HTTP edges)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


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
