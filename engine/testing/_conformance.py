"""The adapter conformance suite every platform adapter must pass.

An adapter's test module provides a *harness*: an async context manager that
sets up the platform side (a real or local server) and says how to act as a
user there. :func:`check_adapter_conformance` then runs the same checks
against every adapter, through a real :class:`~engine.Engine` whose other end
is a loopback platform:

1. the adapter declares a name and only known capabilities;
2. it starts with ``task_status.started()`` and stops promptly when cancelled;
3. a message a platform user sends arrives at the engine as a canonical
   :class:`~engine.Message` with the right addresses, a timestamp and the
   adapter's own platform id;
4. a canonical message delivered to the adapter reaches the platform user,
   and the adapter returns the platform's message id;
5. delivery to an address the platform does not know raises
   :class:`~engine.DeliveryError` (not any other exception) and is not
   retryable.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import trio

from .._adapter import ALL_CAPABILITIES, Adapter, DeliveryError
from .._address import Address
from .._clock import TrioWallClock
from .._directory import (
    ContactRecord,
    Directory,
    DomainAgreement,
    DomainRoute,
    PlatformIdentity,
)
from .._engine import Engine
from .._events import Message
from .._kv import MemoryKV
from .._metadata_log import METADATA_DBS, MetadataLog
from ._loopback import LoopbackAdapter
from ._memory_directory import MemoryDirectory

PEER_PLATFORM = "conformance-peer"
PEER_ADDRESS = Address(user="peer", domain="conformance.test")


class AdapterHarness(Protocol):
    @property
    def adapter(self) -> Adapter: ...

    @property
    def user(self) -> Address:
        """A user of the adapter's platform who can send and receive."""
        ...

    @property
    def unknown_user(self) -> Address:
        """An address in the adapter's domain that its platform does not know."""
        ...

    async def prepare_directory(self, directory: Directory) -> None:
        """Store the routes, identities and installations the adapter needs."""
        ...

    async def send_as_user(self, to: Address, text: str) -> None:
        """Make :attr:`user` send ``text`` to ``to`` on the platform."""
        ...

    async def receive_as_user(self) -> str:
        """Wait for the next message :attr:`user` receives on the platform; its text."""
        ...


HarnessFactory = Callable[[], AbstractAsyncContextManager[AdapterHarness]]


async def check_adapter_conformance(make_harness: HarnessFactory, *,
                                    timeout: float = 30.0) -> None:
    """Run every check above; raises ``AssertionError`` naming the one that failed."""
    async with make_harness() as harness:
        adapter = harness.adapter
        assert adapter.name, "an adapter needs a non-empty name"
        unknown = adapter.capabilities - ALL_CAPABILITIES
        assert not unknown, f"unknown capabilities declared: {sorted(unknown)}"

        directory = MemoryDirectory()
        await harness.prepare_directory(directory)
        await directory.put_domain_route(DomainRoute(
            domain=PEER_ADDRESS.domain, platform=PEER_PLATFORM, internal=False))
        await directory.put_identity(PlatformIdentity(
            address=PEER_ADDRESS, platform=PEER_PLATFORM, user_id="peer"))
        await directory.put_domain_agreement(DomainAgreement(
            domain_a=harness.user.domain, domain_b=PEER_ADDRESS.domain, decision="allow"))
        for owner, contact in ((harness.user, PEER_ADDRESS), (PEER_ADDRESS, harness.user)):
            await directory.put_contact(ContactRecord(
                owner=owner, contact=contact, state="accepted", requested_by=harness.user))
        clock = TrioWallClock()
        peer = LoopbackAdapter(PEER_PLATFORM)
        engine = Engine(directory=directory, clock=clock, adapters=[adapter, peer],
                        metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock))
        try:
            with trio.fail_after(timeout):
                async with trio.open_nursery() as nursery:
                    await nursery.start(engine.run)

                    marker = f"inbound-{secrets.token_hex(4)}"
                    await harness.send_as_user(PEER_ADDRESS, marker)
                    inbound = await peer.next_delivered()
                    assert isinstance(inbound, Message), f"expected a Message, got {inbound!r}"
                    assert marker in inbound.text, "the inbound message lost its text"
                    assert inbound.source == harness.user, f"wrong source {inbound.source}"
                    assert inbound.destination == PEER_ADDRESS, "wrong destination"
                    assert inbound.timestamp > 0, "inbound events need a timestamp"
                    assert inbound.platform_ids.get(adapter.name), \
                        "inbound events must carry the adapter's platform message id"

                    marker = f"outbound-{secrets.token_hex(4)}"
                    outbound = Message.create(source=PEER_ADDRESS, destination=harness.user,
                                              body=marker, timestamp=clock.now())
                    await peer.send(outbound)
                    received = await harness.receive_as_user()
                    assert marker in received, "the platform user did not get the message text"
                    await engine.actors.drain()
                    ids = directory.get_message_ids(outbound.event_id)
                    assert ids is not None and ids.platform_ids.get(adapter.name), \
                        "deliver() must return the platform's message id"

                    stray = Message.create(source=PEER_ADDRESS, destination=harness.unknown_user,
                                           body="nobody is there", timestamp=clock.now())
                    refusal: DeliveryError | None = None
                    try:
                        await adapter.deliver(stray, None)
                    except DeliveryError as exc:
                        refusal = exc
                    assert refusal is not None, \
                        "delivery to an unknown user must raise DeliveryError"
                    assert not refusal.retryable, "an unknown user is a permanent failure"

                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Report the failed check itself, not the nursery's group around it.
            failed = group.subgroup(AssertionError)
            if failed is None:
                raise
            raise _first_leaf(failed) from None


def _first_leaf(group: BaseExceptionGroup[AssertionError]) -> AssertionError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
