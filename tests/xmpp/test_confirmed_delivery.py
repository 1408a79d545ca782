"""Slack -> XMPP deliveries confirmed by the XMPP server, end to end: John on Slack (the
sandbox), Peter on a real Prosody, the component linked to Prosody through a
:class:`._link.Link` that stalls and resets.

John's message written into a component link that dies before Prosody confirmed it
fails to John (``xmpp:unconfirmed``: it may have arrived), explicitly, and is never sent
again: no silent loss, no duplicate. What was confirmed is never reported failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from adapters.xmpp._adapter import UNCONFIRMED

from ._federation import XmppFederation, xmpp_federation
from .test_federation import john_says, notices

#: polling step for state without an event of its own (the link, Slack's history)
POLL_S = 0.02


async def until(predicate: Callable[[], bool]) -> None:
    while True:  # the state has no event of its own: polled
        if predicate():
            return
        await trio.sleep(POLL_S)


async def im_entries(fed: XmppFederation) -> list[tuple[str, str, str]]:
    """(sender's user, outcome, reason) of each message's metadata entry, in order."""
    await fed.engine.metadata_log.write_buffered()
    return [(e.sender.user, e.outcome, e.reason)
            for e in fed.engine.metadata_log.entries() if e.type == "im"]


async def test_a_message_lost_with_the_component_link_fails_to_its_sender_once(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path, link=True, deadline=30.0) as fed:
        link = fed.link
        assert link is not None
        await fed.befriend()
        await john_says(fed, "before")
        connection = fed.xmpp.connection
        confirmed = connection.statistics().confirmed

        link.stall()
        await fed.act("chat.postMessage", channel=fed.conversation(), text="into the stall")
        # the component wrote it: the link holds it, Prosody never gets it
        await until(lambda: b"into the stall" in link.held_toward_server())
        assert connection.statistics().awaiting_confirmation >= 1
        link.reset()

        # John is told, explicitly; the message is not sent again on the next connection
        notice = await fed.slack_gets(lambda m: UNCONFIRMED in m.get("text", ""))
        assert "could not be delivered" in notice["text"]
        await john_says(fed, "after")  # Peter's next message: nothing came in between
        assert sum(UNCONFIRMED in n for n in notices(await fed.slack_messages())) == 1
        stats = connection.statistics()
        assert stats.unconfirmed >= 1 and stats.confirmed > confirmed
        assert [(user, outcome, reason) for user, outcome, reason in await im_entries(fed)
                if user == "john"] == [
            ("john", "delivered", ""), ("john", "failed", UNCONFIRMED),
            ("john", "delivered", "")]
