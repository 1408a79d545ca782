"""The XMPP adapter's edges with the engine: what it announces, how it answers a busy
or refused stanza, and what it keeps in the directory (so a restart forgets nothing).

Against a real Prosody and the Slack sandbox (:mod:`._federation`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from adapters.xmpp._adapter import XmppAdapter, XmppSettings
from adapters.xmpp._client import TestClient, open_client
from adapters.xmpp._jid import AddressingSettings
from adapters.xmpp._prosody import ProsodyInstance
from engine import (
    ALL_CAPABILITIES,
    METADATA_DBS,
    Address,
    ContactRecord,
    DeliveryResult,
    DomainAgreement,
    DomainRoute,
    Engine,
    EnginePort,
    EngineSettings,
    Event,
    MemoryKV,
    Message,
    MetadataLog,
    PlatformIdentity,
    SessionRecord,
    SystemClock,
    UserPolicy,
)
from engine.testing import MemoryDirectory

from ._federation import child, xml_of, xmpp_federation
from .conftest import COMPONENT, FAST_RECONNECT, HOST, PETER, PETER_PASSWORD, SECRET

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


async def test_the_component_announces_the_platform_its_users_live_on(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        # acme.localhost (the component's domain) is routed to Slack in the directory:
        # the XMPP adapter learns "slack" there, it does not name the platform itself
        await fed.peter.send_raw(f"<iq type='get' to='acme.localhost' id='disco-1'>"
                                 f"<query xmlns='{NS_DISCO_INFO}'/></iq>")
        answer = await fed.peter.next_stanza("iq")
        assert (answer.id, answer.type) == ("disco-1", "result")
        query = child(xml_of(answer), NS_DISCO_INFO, "query")
        assert query is not None
        identity = query.find(f"{{{NS_DISCO_INFO}}}identity")
        assert identity is not None
        assert (identity.get("category"), identity.get("type")) == ("gateway", "slack")


# ------------------------------------------------ busy conversations (port.offer)

class StuckPlatform:
    """The platform the component's users live on: deliveries to ``stuck`` hang until
    the test opens the gate (a platform that stopped answering for one user)."""

    name = "acme"
    capabilities = ALL_CAPABILITIES

    def __init__(self, stuck: Address) -> None:
        self.stuck = stuck
        self.gate = trio.Event()
        self.holding = trio.Event()
        self.delivered: list[Message] = []
        self._arrived = trio.lowlevel.ParkingLot()
        self._ids = 0

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        if isinstance(event, Message):
            if event.destination == self.stuck:
                self.holding.set()
                await self.gate.wait()
            self.delivered.append(event)
            self._arrived.unpark_all()
        self._ids += 1
        return DeliveryResult(platform_message_id=f"acme-{self._ids}")

    async def wait_delivered(self, text: str) -> Message:
        while True:
            for message in self.delivered:
                if message.text == text:
                    return message
            await self._arrived.park()


JOHN = Address.parse(f"john@{COMPONENT}")
MARY = Address.parse(f"mary@{COMPONENT}")
PETER_ADDRESS = Address.parse(PETER)


@asynccontextmanager
async def stuck_federation(prosody: ProsodyInstance, platform: StuckPlatform,
                           ) -> AsyncIterator[tuple[Engine, XmppAdapter, TestClient]]:
    """Peter (Prosody) and John and Mary (``platform``), contacts, an engine whose
    session mailboxes hold one event."""
    directory = MemoryDirectory()
    await directory.put_domain_route(DomainRoute(domain=COMPONENT, platform=platform.name,
                                                 internal=True))
    await directory.put_domain_route(DomainRoute(domain=HOST, platform="xmpp"))
    await directory.put_domain_agreement(DomainAgreement(domain_a=COMPONENT, domain_b=HOST,
                                                         decision="allow"))
    for local in (JOHN, MARY):
        await directory.put_identity(PlatformIdentity(address=local, platform=platform.name,
                                                      user_id=local.user))
        for owner, other in ((local, PETER_ADDRESS), (PETER_ADDRESS, local)):
            await directory.put_contact(ContactRecord(owner=owner, contact=other,
                                                      state="accepted", requested_by=local))
    xmpp = XmppAdapter(
        settings=XmppSettings(addressing=AddressingSettings(component_domain=COMPONENT)),
        server=lambda: ("127.0.0.1", prosody.component_port, SECRET),
        connection_options={"reconnect": FAST_RECONNECT})
    clock = SystemClock()
    engine = Engine(directory=directory, adapters=[platform, xmpp], clock=clock,
                    metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock),
                    settings=EngineSettings(shard_count=2, mailbox_capacity=1))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            async with open_client(PETER, PETER_PASSWORD, "127.0.0.1",
                                   prosody.c2s_port) as peter:
                yield engine, xmpp, peter
            platform.gate.set()
            nursery.cancel_scope.cancel()


def chat(to: Address, message_id: str, body: str) -> str:
    return (f"<message to='{to}' type='chat' id='{message_id}'><body>{body}</body>"
            f"<origin-id xmlns='urn:xmpp:sid:0' id='{message_id}'/></message>")


async def test_a_busy_conversation_answers_wait_and_does_not_hold_up_another(
        prosody: ProsodyInstance) -> None:
    platform = StuckPlatform(stuck=JOHN)
    async with stuck_federation(prosody, platform) as (engine, xmpp, peter):
        # John's platform hangs on Peter's first message...
        await peter.send_raw(chat(JOHN, "m1", "one"))
        await platform.holding.wait()
        # ...the second fills the session's mailbox (one place), the third finds it full:
        # answered "wait, resource-constraint" (send it again later), nothing routed
        routed = engine.router.routed
        await peter.send_raw(chat(JOHN, "m2", "two") + chat(JOHN, "m3", "three"))
        busy = await peter.next_stanza("message")
        assert (busy.id, busy.type, busy.error_type, busy.error_condition) == (
            "m3", "error", "wait", "resource-constraint"), busy
        assert not busy.body  # the content is not echoed back
        assert engine.router.routed == routed + 1 and xmpp.stats.busy == 1

        # Peter's conversation with Mary is not held up by John's
        await peter.send_raw(chat(MARY, "m4", "to mary"))
        to_mary = await platform.wait_delivered("to mary")
        assert to_mary.destination == MARY
        assert [m.text for m in platform.delivered] == ["to mary"]

        # John's platform answers again: one and two arrive in order; three, sent again
        # as the error asked, arrives once
        platform.gate.set()
        await peter.send_raw(chat(JOHN, "m3", "three"))
        await platform.wait_delivered("three")
        await engine.actors.drain()
        assert [m.text for m in platform.delivered if m.destination == JOHN] == [
            "one", "two", "three"]
        await engine.metadata_log.write_buffered()
        assert not [e for e in engine.metadata_log.entries() if e.outcome != "delivered"]


async def test_refusals_are_the_routers_answered_as_stanza_errors(
        prosody: ProsodyInstance) -> None:
    platform = StuckPlatform(stuck=JOHN)
    async with stuck_federation(prosody, platform) as (engine, xmpp, peter):
        directory = engine.directory
        nobody = Address.parse(f"nobody@{COMPONENT}")
        await directory.put_user_policy(UserPolicy(address=MARY, decision="deny"))
        await directory.put_contact(ContactRecord(owner=PETER_ADDRESS, contact=JOHN,
                                                  state="removed", requested_by=JOHN))
        expected = [(nobody, "unknown-address", "cancel", "item-not-found"),
                    (JOHN, "not-a-contact", "auth", "subscription-required"),
                    (MARY, "user-denied:", "cancel", "not-allowed")]
        for to, reason, error_type, condition in expected:
            event = Message(source=PETER_ADDRESS, destination=to, text="x")
            assert (engine.refusal(event) or "").startswith(reason)
            await peter.send_raw(chat(to, f"to-{to.user}", "hello?"))
            error = await peter.next_stanza("message")
            assert (error.id, error.type, error.error_type, error.error_condition) == (
                f"to-{to.user}", "error", error_type, condition), error
        # an availability presence the router would refuse gets no error (RFC 6121)
        await peter.send_raw(f"<presence to='{nobody}'/>")
        await peter.send_raw(chat(nobody, "last", "hello?"))
        assert (await peter.next_stanza("any")).id == "last"
        assert engine.router.routed == 0 and xmpp.stats.rejected == 4
        assert platform.delivered == []


async def test_a_reused_message_id_is_answered_conflict_not_dropped(
        prosody: ProsodyInstance) -> None:
    """XMPP never redelivers: a second message with a delivered message's id is a client
    reusing ids. The engine would take it as a duplicate; the sender is told instead."""
    platform = StuckPlatform(stuck=JOHN)
    async with stuck_federation(prosody, platform) as (engine, xmpp, peter):
        await peter.send_raw(chat(MARY, "same-id", "first"))
        await platform.wait_delivered("first")
        await engine.actors.drain()
        await peter.send_raw(chat(MARY, "same-id", "second"))
        error = await peter.next_stanza("message")
        assert (error.id, error.type, error.error_type, error.error_condition) == (
            "same-id", "error", "modify", "conflict"), error
        assert [m.text for m in platform.delivered] == ["first"]
        assert engine.router.duplicates == 1 and xmpp.stats.rejected == 1


# --------------------------------------- protocol state in the directory, not RAM

NS_REACTIONS = "urn:xmpp:reactions:0"


async def test_a_restart_between_two_reactions_keeps_both_on_xmpp(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path, lmdb=True, deadline=30.0) as fed:
        await fed.befriend()
        posted = await fed.act("chat.postMessage", channel=fed.conversation(), text="root")
        root = await fed.peter_gets("message", skip_types=("error",))
        assert root.body == "root"

        await fed.act("reactions.add", channel=fed.conversation(), timestamp=posted["ts"],
                      name="tada")
        first = child(xml_of(await fed.peter_gets("message")), NS_REACTIONS, "reactions")
        assert first is not None and [r.text for r in first] == ["🎉"]

        # a new engine, new adapters, the same LMDB directory: John's reaction set on
        # the message is read from disk, so his next reaction adds to it (XEP-0444 sends
        # the whole set: a forgotten set would replace 🎉 by 👍 on Peter's side)
        old_xmpp = fed.xmpp
        await fed.restart_engine()
        assert fed.xmpp is not old_xmpp
        await fed.act("reactions.add", channel=fed.conversation(), timestamp=posted["ts"],
                      name="+1")
        second = child(xml_of(await fed.peter_gets("message")), NS_REACTIONS, "reactions")
        assert second is not None and second.get("id") == root.id
        assert sorted(r.text or "" for r in second) == sorted(["🎉", "👍"])
