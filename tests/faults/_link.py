"""The TCP link between the engine's XMPP component and Prosody, with faults.

The engine's XMPP adapter connects here (its ``server``); every connection is pumped
byte for byte to Prosody's component port and back. The faults are what a network
does to a long-lived TCP connection:

- :meth:`LinkProxy.reset`: every live connection is reset (``SO_LINGER`` 0, so both
  ends get an RST and whatever sits unread in a socket buffer is gone), and, for
  ``refuse_for`` seconds, new connections are accepted and reset at once (the engine
  reconnects with its backoff until the link is back).
- :meth:`LinkProxy.stall`: the link stops carrying bytes, both ways, without closing:
  writes still succeed (into the kernel's buffers) until they fill. :meth:`flow` lets
  them through again; :meth:`reset` while stalled throws them away.

Nothing here parses XMPP.
"""

from __future__ import annotations

import trio

from tests.xmpp._link import reset_stream

_CHUNK = 65536


class _Connection:
    def __init__(self, down: trio.SocketStream, up: trio.SocketStream) -> None:
        self.down = down
        self.up = up
        self.scope = trio.CancelScope()


class LinkProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._connections: set[_Connection] = set()
        self._refusing_until = 0.0
        self._flowing = trio.Event()
        self._flowing.set()
        self.port = 0
        #: connections accepted and pumped (reconnects show here)
        self.accepted = 0
        self.resets = 0
        self._changed = trio.Event()

    @property
    def live(self) -> int:
        return len(self._connections)

    async def wait_idle(self) -> None:
        """Until no connection is open (both of its ends closed)."""
        while self._connections:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, down: trio.SocketStream) -> None:
        if trio.current_time() < self._refusing_until:
            reset_stream(down)
            return
        try:
            up = await trio.open_tcp_stream(*self._upstream)
        except OSError:  # Prosody is away: the engine sees the connection drop
            reset_stream(down)
            return
        connection = _Connection(down, up)
        self._connections.add(connection)
        self.accepted += 1
        self._notify()
        try:
            with connection.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, down, up, nursery.cancel_scope)
                    nursery.start_soon(self._pump, up, down, nursery.cancel_scope)
        finally:
            self._connections.discard(connection)
            reset_stream(down)
            reset_stream(up)
            self._notify()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream,
                    done: trio.CancelScope) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await source.receive_some(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()  # one side ended: so does the connection

    def reset(self, *, refuse_for: float = 0.0) -> int:
        """Reset every live connection (and refuse new ones for ``refuse_for`` s); how many."""
        self._refusing_until = trio.current_time() + refuse_for
        count = 0
        for connection in list(self._connections):
            reset_stream(connection.down)
            reset_stream(connection.up)
            connection.scope.cancel()
            count += 1
        self.resets += count
        self._flowing.set()
        return count

    def stall(self) -> None:
        """Stop carrying bytes (connections stay open)."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def flow(self) -> None:
        self._flowing.set()
