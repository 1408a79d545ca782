"""Message ids are scoped by conversation: two XMPP users' equal stanza ids never meet.

XMPP clients choose their own message ids (counters, short random strings), so
peter@ and paul@ may both send a message "abc". A correction (XEP-0308),
reaction (XEP-0444), reply (XEP-0461) or retraction (XEP-0424) naming "abc"
must land on the sender's own conversation's message, and a resent "abc" is a
duplicate only in the conversation that had it. The end-to-end test runs
through a real Prosody and the Slack sandbox: John <-> Peter and Mary <-> Paul.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from adapters.slack.sandbox import RateLimitSettings
from adapters.xmpp._client import TestClient, open_client
from adapters.xmpp._prosody import ProsodyInstance, ProsodySettings, run_prosody
from adapters.xmpp._stanza import canonical_id_for
from engine import (
    Address,
    DomainAgreement,
    DomainRoute,
    MessageIdRecord,
    PlatformIdentity,
    session_id_for,
)
from engine.testing import MemoryDirectory
from tests.slack_adapter._federation import TEAM
from tests.slack_sandbox._kit import MARY, fast_settings, make_seed, running

from ._federation import (
    COMPONENT_SECRET,
    JOHN_ADDRESS,
    JOHN_JID,
    PETER_ADDRESS,
    PETER_JID,
    PETER_PASSWORD,
    XmppFederation,
)
from .test_adapter_edges import JOHN as JOHN_HERE
from .test_adapter_edges import MARY as MARY_HERE
from .test_adapter_edges import StuckPlatform, chat, stuck_federation

NS_CORRECT = "urn:xmpp:message-correct:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_REACTIONS = "urn:xmpp:reactions:0"
NS_REPLY = "urn:xmpp:reply:0"

MARY_ADDRESS = Address.parse("mary@acme.localhost")
MARY_JID = "mary@acme.localhost"
PAUL_ADDRESS = Address.parse("paul@widget.localhost")
PAUL_JID = "paul@widget.localhost"
PAUL_PASSWORD = "paul-password"


# ------------------------------------------------------------- pure: the ids

def test_canonical_ids_of_xmpp_messages_are_per_conversation() -> None:
    peter_to_john = canonical_id_for(PETER_ADDRESS, JOHN_ADDRESS, "abc")
    assert peter_to_john == canonical_id_for(PETER_ADDRESS, JOHN_ADDRESS, "abc")  # a resend
    assert len({peter_to_john,
                canonical_id_for(PAUL_ADDRESS, JOHN_ADDRESS, "abc"),
                canonical_id_for(PETER_ADDRESS, MARY_ADDRESS, "abc"),
                canonical_id_for(PAUL_ADDRESS, MARY_ADDRESS, "abc"),
                canonical_id_for(JOHN_ADDRESS, PETER_ADDRESS, "abc")}) == 5


async def test_the_directory_finds_an_xmpp_id_within_its_session_only() -> None:
    directory = MemoryDirectory()
    peters = session_id_for(PETER_ADDRESS, JOHN_ADDRESS)
    pauls = session_id_for(PAUL_ADDRESS, MARY_ADDRESS)
    for canonical_id, session_id in (("c-peter", peters), ("c-paul", pauls)):
        await directory.put_message_ids(MessageIdRecord(
            canonical_id=canonical_id, session_id=session_id, platform_ids={"xmpp": "abc"}))
    assert directory.find_canonical_id("xmpp", "abc", session_id=peters) == "c-peter"
    assert directory.find_canonical_id("xmpp", "abc", session_id=pauls) == "c-paul"


# ------------------------------------------- duplicates: per conversation

async def test_a_resent_id_is_a_duplicate_only_in_its_own_conversation(
        prosody: ProsodyInstance) -> None:
    """Peter gives a message to John and one to Mary the same id: two messages. The same
    stanza to Mary again is a resend (answered "conflict", not routed)."""
    platform = StuckPlatform(stuck=Address.parse("nobody@invalid"))
    async with stuck_federation(prosody, platform) as (engine, xmpp, peter):
        await peter.send_raw(chat(JOHN_HERE, "same-id", "to john"))
        await platform.wait_delivered("to john")
        await engine.actors.drain()
        await peter.send_raw(chat(MARY_HERE, "same-id", "to mary"))
        while not any(m.text == "to mary" for m in platform.delivered):
            with trio.move_on_after(0.02):
                answer = await peter.next_stanza("message")
                assert answer.type != "error", f"to mary: {answer.error_condition}"
        await engine.actors.drain()
        await peter.send_raw(chat(MARY_HERE, "same-id", "to mary"))
        error = await peter.next_stanza("message")
        assert (error.id, error.type, error.error_condition) == (
            "same-id", "error", "conflict"), error
        assert sorted(m.text for m in platform.delivered) == ["to john", "to mary"]
        assert engine.router.duplicates == 1 and xmpp.stats.rejected == 1


# ------------------------------------------------------ end to end, on Prosody

def says(message_id: str, payload: str, *, to: str) -> str:
    """A chat message with ``id`` = XEP-0359 origin-id = ``message_id``."""
    return (f"<message to='{to}' type='chat' id='{message_id}'>{payload}"
            f"<origin-id xmlns='urn:xmpp:sid:0' id='{message_id}'/></message>")


class TwoConversations:
    """John <-> Peter and Mary <-> Paul, in one federation."""

    def __init__(self, fed: XmppFederation, paul: TestClient) -> None:
        self.fed = fed
        self.paul = paul

    async def channel(self, local: Address, remote: Address) -> str:
        """The pair's Slack conversation, once Interlink has opened it."""
        while True:
            session = self.fed.directory.find_session(local, remote)
            if session is not None and session.conversation_ids.get("slack"):
                return session.conversation_ids["slack"]
            await trio.sleep(0.02)

    async def mary_befriends_paul(self) -> None:
        fed = self.fed
        reply = await fed.sandbox.run_command("xoxp-mary", "/interlink",
                                              f"add {PAUL_JID}", channel="C0GENERAL")
        assert reply.ok, reply.error
        while True:
            request = await self.paul.next_stanza("presence")
            if (request.type, request.sender) == ("subscribe", MARY_JID):
                break
        await self.paul.send_raw(f"<presence to='{MARY_JID}' type='subscribed'/>")
        while True:
            record = fed.directory.get_contact(MARY_ADDRESS, PAUL_ADDRESS)
            if record is not None and record.state == "accepted":
                return
            await trio.sleep(0.02)

    async def lands(self, client: TestClient, channel: str,
                    predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The message of ``channel`` matching ``predicate``, once there; fails at once
        when ``client`` is told instead that what it sent failed."""
        while True:
            for message in self.fed.sandbox.messages(channel):
                if predicate(message):
                    return message
            with trio.move_on_after(0.02):
                stanza = await client.next_stanza("message")
                failed = stanza.type == "error" or "could not be delivered" in stanza.body
                assert not failed, f"{what}: {stanza.error_condition or stanza.body}"


@asynccontextmanager
async def two_conversations(tmp_path: Path, *, deadline: float = 40.0,
                            ) -> AsyncIterator[TwoConversations]:
    """``tests/xmpp/_federation.py``'s federation, with Paul on Prosody and Mary on Slack."""
    limits = RateLimitSettings(post_message_per_second=500.0, post_message_burst=50,
                               per_minute=(600.0, 6000.0, 6000.0, 6000.0, 6000.0))
    settings = msgspec.structs.replace(fast_settings(ack_timeout=3.0), rate_limits=limits)
    prosody_settings = ProsodySettings(
        state_dir=tmp_path / "prosody", host="widget.localhost",
        components={"acme.localhost": COMPONENT_SECRET},
        users={"peter": PETER_PASSWORD, "paul": PAUL_PASSWORD})
    async with running(make_seed(), settings=settings, deadline=deadline) as sandbox, \
            httpx.AsyncClient(trust_env=False) as http, trio.open_nursery() as servers:
        prosody: ProsodyInstance = await servers.start(run_prosody, prosody_settings)
        directory = MemoryDirectory()
        await directory.put_domain_route(DomainRoute(domain="acme.localhost", platform="slack",
                                                     tenant=TEAM, internal=True))
        await directory.put_domain_route(DomainRoute(domain="widget.localhost",
                                                     platform="xmpp"))
        await directory.put_domain_agreement(DomainAgreement(
            domain_a="acme.localhost", domain_b="widget.localhost", decision="allow"))
        for address, user_id in ((JOHN_ADDRESS, "U0JOHN"), (MARY_ADDRESS, MARY)):
            await directory.put_identity(PlatformIdentity(
                address=address, platform="slack", tenant=TEAM, user_id=user_id))
        async with open_client(PETER_JID, PETER_PASSWORD, "127.0.0.1",
                               prosody.c2s_port) as peter, \
                open_client(PAUL_JID, PAUL_PASSWORD, "127.0.0.1", prosody.c2s_port) as paul:
            fed = XmppFederation(sandbox, prosody, directory, http, peter)
            fed._servers = servers
            await servers.start(fed.run_engine)
            yield TwoConversations(fed, paul)
            if fed._engine_scope is not None:
                fed._engine_scope.cancel()
            await fed._engine_stopped.wait()
        await directory.aclose()
        servers.cancel_scope.cancel()


def text_is(text: str, ts: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("text") == text and (ts is None or m["ts"] == ts)


def reactions_of(message: dict[str, Any]) -> list[str]:
    return [r["name"] for r in message.get("reactions", [])]


async def test_equal_stanza_ids_in_two_conversations_act_on_their_own_message(
        tmp_path: Path, prosody_installed: None) -> None:
    async with two_conversations(tmp_path) as both:
        fed, peter, paul = both.fed, both.fed.peter, both.paul
        await fed.befriend()
        await both.mary_befriends_paul()

        # both clients give their first message the same id
        await peter.send_raw(says("abc", "<body>from peter</body>", to=JOHN_JID))
        await paul.send_raw(says("abc", "<body>from paul</body>", to=MARY_JID))
        johns = await both.channel(JOHN_ADDRESS, PETER_ADDRESS)
        marys = await both.channel(MARY_ADDRESS, PAUL_ADDRESS)
        assert johns != marys
        peters = await both.lands(peter, johns, text_is("from peter"), "peter's abc")
        pauls = await both.lands(paul, marys, text_is("from paul"), "paul's abc")

        # the same stanza again is a resend in Peter's conversation only: "conflict"
        await peter.send_raw(says("abc", "<body>from peter</body>", to=JOHN_JID))
        resent = await peter.next_stanza("message")
        assert (resent.type, resent.id, resent.error_condition) == ("error", "abc", "conflict")

        # XEP-0308 corrections of "abc"
        await peter.send_raw(says("p-fix", f"<body>peter v2</body>"
                                           f"<replace xmlns='{NS_CORRECT}' id='abc'/>",
                                  to=JOHN_JID))
        await both.lands(peter, johns, text_is("peter v2", peters["ts"]), "peter's correction")
        await paul.send_raw(says("p-fix", f"<body>paul v2</body>"
                                          f"<replace xmlns='{NS_CORRECT}' id='abc'/>",
                                 to=MARY_JID))
        await both.lands(paul, marys, text_is("paul v2", pauls["ts"]), "paul's correction")

        # XEP-0444 reactions to "abc"
        await peter.send_raw(says("p-react", f"<reactions xmlns='{NS_REACTIONS}' id='abc'>"
                                             "<reaction>👍</reaction></reactions>", to=JOHN_JID))
        await both.lands(peter, johns, lambda m: m["ts"] == peters["ts"]
                         and bool(reactions_of(m)), "peter's reaction")
        await paul.send_raw(says("p-react", f"<reactions xmlns='{NS_REACTIONS}' id='abc'>"
                                            "<reaction>🎉</reaction></reactions>", to=MARY_JID))
        reacted = await both.lands(paul, marys, lambda m: m["ts"] == pauls["ts"]
                                   and bool(reactions_of(m)), "paul's reaction")
        assert reactions_of(reacted) == ["tada"]
        await fed.quiesce()
        (reacted,) = (m for m in fed.sandbox.messages(johns) if m["ts"] == peters["ts"])
        assert reactions_of(reacted) in (["+1"], ["thumbsup"])

        # XEP-0461 replies to "abc": each in its own conversation's thread
        for client, to, channel, root in ((peter, JOHN_JID, johns, peters),
                                          (paul, MARY_JID, marys, pauls)):
            await client.send_raw(says("p-reply", f"<body>answer</body>"
                                                  f"<reply xmlns='{NS_REPLY}' id='abc'/>", to=to))
            answer = await both.lands(client, channel, text_is("answer"), f"reply to {to}")
            assert answer.get("thread_ts") == root["ts"], answer

        # XEP-0424: Peter retracts "abc"; Paul's "abc" stays
        await peter.send_raw(says("p-retract", f"<retract xmlns='{NS_RETRACT}' id='abc'/>",
                                  to=JOHN_JID))
        await both.lands(peter, johns, lambda m: m["ts"] == peters["ts"]
                         and m.get("subtype") == "tombstone", "peter's retraction")
        await paul.send_raw(says("p-retract", f"<retract xmlns='{NS_RETRACT}' id='abc'/>",
                                 to=MARY_JID))
        await both.lands(paul, marys, lambda m: m["ts"] == pauls["ts"]
                         and m.get("subtype") == "tombstone", "paul's retraction")

        # and nothing failed on the way
        await fed.quiesce()
        for channel in (johns, marys):
            texts = [m.get("text", "") for m in fed.sandbox.messages(channel)]
            assert not any("Not delivered" in t for t in texts), texts
