"""The XMPP adapter passes the engine's adapter conformance suite, against a real Prosody.

On XMPP the platform's users are the *remote* XMPP users: the suite's platform user
is ``peter@widget.localhost``, a real client logged in to Prosody, and the suite's
peer (``peer@conformance.test``, on the loopback platform) is what the component
serves, in domain mode: the peer's JID is ``peer@conformance.test``.

The suite's "unknown user" check wants a synchronous refusal. XMPP cannot give one
for a remote JID (whether ``nobody@widget.localhost`` exists is only known when
their server bounces the stanza, which the adapter turns into a failed delivery
outcome later). What the adapter does know at once is an address no remote XMPP
user can have: one under the component's own domain. That is the harness's
unknown user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from adapters.xmpp._adapter import XmppAdapter, XmppSettings
from adapters.xmpp._client import TestClient, open_client
from adapters.xmpp._jid import AddressingSettings
from adapters.xmpp._prosody import ProsodyInstance, ProsodySettings, run_prosody
from engine import Address, Directory, DomainRoute
from engine.testing import check_adapter_conformance
from engine.testing._conformance import PEER_ADDRESS

from .conftest import FAST_RECONNECT

PETER = Address.parse("peter@widget.localhost")
PETER_PASSWORD = "peter-password"
SECRET = "conformance-secret"
#: domain mode: the component serves the peer's organisation domain
COMPONENT = PEER_ADDRESS.domain


class XmppConformanceHarness:
    """Peter on Prosody; the adapter under test is a component for ``conformance.test``."""

    def __init__(self, adapter: XmppAdapter, peter: TestClient) -> None:
        self.adapter = adapter
        self.peter = peter
        self.user = PETER
        self.unknown_user = Address.parse(f"nobody@{COMPONENT}")

    async def prepare_directory(self, directory: Directory) -> None:
        await directory.put_domain_route(DomainRoute(domain=PETER.domain, platform="xmpp"))

    async def send_as_user(self, to: Address, text: str) -> None:
        await self.peter.send_message(str(to), text)

    async def receive_as_user(self) -> str:
        while True:  # presence and chat states come and go; the next message with a body
            message = await self.peter.next_message()
            if message.body and message.type != "error":
                return message.body


@asynccontextmanager
async def conformance_harness(tmp_path: Path) -> AsyncIterator[XmppConformanceHarness]:
    settings = ProsodySettings(state_dir=tmp_path / "prosody", host=PETER.domain,
                               components={COMPONENT: SECRET},
                               users={PETER.user: PETER_PASSWORD}, muc=False)
    async with trio.open_nursery() as nursery:
        prosody: ProsodyInstance = await nursery.start(run_prosody, settings)
        adapter = XmppAdapter(
            settings=XmppSettings(addressing=AddressingSettings(component_domain=COMPONENT)),
            server=lambda: ("127.0.0.1", prosody.component_port, SECRET),
            connection_options={"reconnect": FAST_RECONNECT})
        async with open_client(str(PETER), PETER_PASSWORD, "127.0.0.1",
                               prosody.c2s_port) as peter:
            yield XmppConformanceHarness(adapter, peter)
        nursery.cancel_scope.cancel()


async def test_the_xmpp_adapter_passes_the_conformance_suite(
        tmp_path: Path, prosody_installed: None) -> None:
    await check_adapter_conformance(partial(conformance_harness, tmp_path), timeout=20.0)
