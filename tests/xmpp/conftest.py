"""Fixtures for the XMPP adapter's I/O tests: a real Prosody on free loopback ports.

Prosody must be installed (``apt-get install -y prosody``). Without it the
tests that need it are skipped with that reason locally, and FAIL under
``CI=true``: CI must never pass by skipping the server tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from adapters.xmpp._component import ComponentConnection
from adapters.xmpp._prosody import ProsodyInstance, ProsodySettings, run_prosody
from engine import Backoff
from tests._prosody import require_prosody

HOST = "widget.localhost"
COMPONENT = "slack.widget.localhost"
SECRET = "component-secret-for-tests"
PETER = f"peter@{HOST}"
PETER_PASSWORD = "peter-password"
JOHN = f"john@{COMPONENT}"

#: fast reconnects for tests (production defaults back off up to 5 s)
FAST_RECONNECT = Backoff(initial=0.05, maximum=0.25, jitter=0.2)




def prosody_settings(state_dir: Path) -> ProsodySettings:
    return ProsodySettings(state_dir=state_dir, host=HOST, components={COMPONENT: SECRET},
                           users={"peter": PETER_PASSWORD})


@pytest.fixture
def prosody_installed() -> None:
    """Skip (locally) or fail (CI) unless prosody is installed; a sync fixture, so that
    the reason reaches the report as written."""
    require_prosody()


@pytest.fixture
async def prosody(tmp_path: Path, prosody_installed: None) -> AsyncIterator[ProsodyInstance]:
    """A running Prosody serving widget.localhost, with peter registered and the
    component slack.widget.localhost configured; stopped after the test."""
    async with trio.open_nursery() as nursery:
        instance: ProsodyInstance = await nursery.start(run_prosody,
                                                        prosody_settings(tmp_path / "prosody"))
        yield instance
        nursery.cancel_scope.cancel()


class ConnectedCalls:
    """Counts ``on_connected`` calls; tests wait for a given count."""

    def __init__(self) -> None:
        self.count = 0
        self._lot = trio.lowlevel.ParkingLot()

    async def __call__(self) -> None:
        self.count += 1
        self._lot.unpark_all()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            await self._lot.park()


def make_component(prosody: ProsodyInstance, *, secret: str = SECRET,
                   on_connected: Callable[[], Awaitable[None]] | None = None,
                   queue_limit: int = 100, queue_deadline: float = 10.0,
                   start_timeout: float = 10.0) -> ComponentConnection:
    return ComponentConnection(COMPONENT, secret, "127.0.0.1", prosody.component_port,
                               on_connected=on_connected, reconnect=FAST_RECONNECT,
                               connect_timeout=5.0, start_timeout=start_timeout,
                               queue_limit=queue_limit, queue_deadline=queue_deadline)
