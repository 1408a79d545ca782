"""Slack (the sandbox) <-> XMPP (a real Prosody) through Interlink, both directions."""

from __future__ import annotations

from pathlib import Path

from ._federation import JOHN_ADDRESS, JOHN_JID, PETER_ADDRESS, PETER_JID, xmpp_federation


async def test_contacts_and_messages_both_ways(tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        notices = [m["text"] for m in await fed.slack_messages()]
        assert any("accepted" in n for n in notices), notices
        channel = fed.conversation()

        # Slack -> XMPP, with formatting as XEP-0393 styling
        await fed.act("chat.postMessage", channel=channel, text="Hi *Peter*, see ~old~ _new_")
        message = await fed.peter_gets("message", skip_types=("error",))
        assert (message.sender.partition("/")[0], message.body) == (
            JOHN_JID, "Hi *Peter*, see ~old~ _new_")

        # XMPP -> Slack, styled, under Peter's name
        await fed.peter.send_message(JOHN_JID, "Hello *John*")
        post = await fed.slack_gets(lambda m: m.get("username") is not None)
        assert (post["text"], post["username"]) == ("Hello *John*", str(PETER_ADDRESS))


async def test_messages_to_strangers_and_unknown_users_get_xmpp_errors(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.peter.send_message(JOHN_JID, "not a contact yet")
        error = await fed.peter_gets("message")
        assert (error.type, error.error_condition) == ("error", "subscription-required")
        await fed.peter.send_message("nobody@acme.localhost", "hello?")
        error = await fed.peter_gets("message")
        assert (error.type, error.error_condition) == ("error", "item-not-found")
        await fed.engine.metadata_log.write_buffered()
        assert fed.xmpp.stats.rejected == 2
        assert fed.directory.find_session(JOHN_ADDRESS, PETER_ADDRESS) is None
        assert PETER_JID  # the XMPP user is real: Prosody authenticated him
