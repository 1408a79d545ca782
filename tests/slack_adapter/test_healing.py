"""Conversations that heal: a private conversation that no longer exists for the bot
(Slack forgot it, it was archived, the app was removed from it) is reopened and the
event tried once more there, before the sender is told.

The sandbox is restarted with fresh state under the running engine: it forgets every
conversation it made, while the directory keeps the session's old channel id.
"""

from __future__ import annotations

from engine import DeliveryOutcome, Message, to_plain_text

from ._federation import (
    JOHN_ADDRESS,
    PETER_ADDRESS,
    SlackFederation,
    slack_federation,
)
from .test_adapter import command


async def john_says(fed: SlackFederation, channel: str, text: str) -> Message:
    """John posts in a conversation; the message the contact receives."""
    await fed.act("xoxp-john", "chat.postMessage", channel=channel, text=text)
    event = await fed.next_event()
    assert isinstance(event, Message), event
    return event


async def peter_says(fed: SlackFederation, text: str) -> str:
    """Peter writes to John; the conversation it shows in (nothing bounced)."""
    await fed.widget.send(Message.create(source=PETER_ADDRESS, destination=JOHN_ADDRESS,
                                         body=text))
    await fed.settle()
    bounced = [e for e in fed.pending_events() if isinstance(e, DeliveryOutcome)]
    assert not bounced, bounced
    channel = fed.conversation()
    assert text in [m["text"] for m in fed.sandbox.messages(channel)]
    return channel


async def talking(fed: SlackFederation) -> str:
    channel = await peter_says(fed, "before")
    said = await john_says(fed, channel, "hello peter")
    assert to_plain_text(said.body) == "hello peter"
    return channel


async def test_a_contacts_message_reopens_a_conversation_slack_forgot() -> None:
    async with slack_federation() as fed:
        old = await talking(fed)
        await fed.restart_sandbox()
        assert old not in fed.sandbox.world.conversations or \
            fed.sandbox.messages(old) == []  # forgotten: a fresh Slack
        # Peter's next message is not bounced with channel_not_found: a new conversation
        # is opened, John is in it, and the message is there
        channel = await peter_says(fed, "after the restart")
        members = fed.sandbox.world.conversations[channel].members
        assert {"U0JOHN", "U0BOT"} <= set(members)
        assert fed.slack.stats.conversations_reopened == 1
        # and John's answer there reaches Peter
        said = await john_says(fed, channel, "still here")
        assert to_plain_text(said.body) == "still here"


async def test_interlink_add_of_a_connected_contact_reopens_the_conversation() -> None:
    async with slack_federation() as fed:
        await talking(fed)
        await fed.restart_sandbox()
        # John's conversation has vanished from his sidebar: he adds Peter again
        reply = await command(fed, "add peter@widget.test")
        session = fed.directory.find_session(JOHN_ADDRESS, PETER_ADDRESS)
        assert session is not None
        channel = session.conversation_ids["slack"]
        assert reply == (f"You are already connected with peter@widget.test: chat with them "
                         f"in <#{channel}>.")
        assert "U0JOHN" in fed.sandbox.world.conversations[channel].members
        assert fed.pending_events() == []  # no second contact request went to Peter
        said = await john_says(fed, channel, "are you there?")
        assert to_plain_text(said.body) == "are you there?"
        assert await peter_says(fed, "yes") == channel
        assert fed.slack.stats.conversations_reopened == 1


async def test_an_archived_conversation_is_replaced_and_the_message_retried_once() -> None:
    async with slack_federation() as fed:
        old = await talking(fed)
        fed.sandbox.world.conversations[old].is_archived = True
        channel = await peter_says(fed, "after archiving")
        assert channel != old
        assert fed.sandbox.world.conversations[channel].name == "ext-peter-widget-test-2"
        assert fed.slack.stats.conversations_reopened == 1


async def test_a_conversation_the_app_was_removed_from_is_replaced() -> None:
    async with slack_federation() as fed:
        old = await talking(fed)
        await fed.act("xoxp-john", "conversations.kick", channel=old, user="U0BOT")
        channel = await peter_says(fed, "after the kick")
        assert channel != old
        assert fed.slack.stats.conversations_reopened == 1
