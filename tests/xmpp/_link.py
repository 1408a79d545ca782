"""A TCP link between the XMPP component and Prosody that a test can stall and reset.

The component connects to :attr:`Link.port`; each connection is carried byte for byte
to Prosody's component port and back. What a network does to a long-lived connection:

- :meth:`Link.stall`: bytes stop arriving, both ways, and the connections stay open;
  writes into them still succeed. The link goes on reading what each side writes and
  holds it (up to ``HOLD_LIMIT`` bytes a way, then the kernel's buffers fill), so a
  test can see what is in flight (:meth:`Link.held_toward_server`). :meth:`Link.flow`
  passes it on.
- :meth:`Link.reset`: every open connection is closed with an RST (``SO_LINGER`` 0),
  each end separately, and what was held is thrown away: neither side learns what the
  other had read. The link flows again for the next connection.

Nothing here reads XMPP: bytes and connections only.
"""

from __future__ import annotations

import contextlib
import socket
import struct

import trio

_READ = 65536
#: bytes held a way during a stall before the link stops reading that way
HOLD_LIMIT = 1 << 20


def reset_stream(stream: trio.SocketStream) -> None:
    """Close with an RST (unread and unsent bytes are discarded)."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        stream.socket.close()


class _Way:
    """One direction of one connection: what was read and not yet passed on."""

    def __init__(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        self.source = source
        self.sink = sink
        self.held = bytearray()
        self.changed = trio.Event()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class _Carried:
    """One component connection: its two ways and the scope of their pumps."""

    def __init__(self, component: trio.SocketStream, server: trio.SocketStream) -> None:
        self.component = component
        self.server = server
        self.upstream = _Way(component, server)
        self.downstream = _Way(server, component)
        self.scope = trio.CancelScope()


class Link:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._open: set[_Carried] = set()
        self._moving = trio.Event()
        self._moving.set()
        self._changed = trio.Event()
        self.port = 0
        self.connections = 0  # connections carried so far (the first and each reconnect)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._carry, listeners, handler_nursery=nursery)

    async def wait_connections(self, count: int) -> None:
        """Until ``count`` connections have been carried in all (a reconnect counts)."""
        while self.connections < count:
            await self._changed.wait()

    def held_toward_server(self) -> bytes:
        """What the component wrote that the link holds (read during a stall)."""
        return b"".join(bytes(c.upstream.held) for c in self._open)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _carry(self, component: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*self._upstream)
        except OSError:
            reset_stream(component)
            return
        carried = _Carried(component, server)
        self._open.add(carried)
        self.connections += 1
        self._notify()
        try:
            with carried.scope:
                async with trio.open_nursery() as nursery:
                    for way in (carried.upstream, carried.downstream):
                        nursery.start_soon(self._read, way, nursery.cancel_scope)
                        nursery.start_soon(self._write, way, nursery.cancel_scope)
        finally:
            self._open.discard(carried)
            reset_stream(component)
            reset_stream(server)
            self._notify()

    async def _read(self, way: _Way, done: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while True:
                while len(way.held) >= HOLD_LIMIT:
                    await way.changed.wait()
                data = await way.source.receive_some(_READ)
                if not data:
                    break
                way.held += data
                way._notify()
        done.cancel()  # one side ended: so does the connection

    async def _write(self, way: _Way, done: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while True:
                while not way.held:
                    await way.changed.wait()
                await self._moving.wait()
                data = bytes(way.held)
                del way.held[:len(data)]
                way._notify()
                await way.sink.send_all(data)
        done.cancel()

    def stall(self) -> None:
        if self._moving.is_set():
            self._moving = trio.Event()

    def flow(self) -> None:
        self._moving.set()

    def reset(self) -> int:
        """RST every open connection, throwing away what was held; how many there were.
        The link flows again."""
        count = 0
        for carried in list(self._open):
            carried.upstream.held.clear()
            carried.downstream.held.clear()
            reset_stream(carried.component)
            reset_stream(carried.server)
            carried.scope.cancel()
            count += 1
        self._moving.set()
        return count
