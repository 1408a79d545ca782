"""Peter's message that fails on the far side comes back to him naming it, end to end:
John on Slack (the sandbox), Peter on a real Prosody.

The error stanza carries his message's own id (clients mark it failed) and goes to the
resource that sent it (a server drops a message error sent to a bare JID); the notice
replies to it (XEP-0461). Both come from the message state written before routing, so
they name a message that never reached Slack (the id map is written only on delivery).
A receipt he asked for (XEP-0184) is sent only for a message that was delivered.
"""

from __future__ import annotations

from pathlib import Path

from ._federation import JOHN_JID, PETER_ADDRESS, XmppFederation, child, xml_of, xmpp_federation
from .test_federation import peter_says

NS_RECEIPTS = "urn:xmpp:receipts"
NS_REPLY = "urn:xmpp:reply:0"


async def im_entries(fed: XmppFederation) -> list[tuple[str, str, str]]:
    """(sender's user, outcome, reason) of each message's metadata entry, in order."""
    await fed.engine.metadata_log.write_buffered()
    return [(e.sender.user, e.outcome, e.reason)
            for e in fed.engine.metadata_log.entries() if e.type == "im"]


async def test_a_message_failing_on_slack_comes_back_to_peter_naming_it(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        # Slack refuses the post for good (a 4xx-class answer: not retried)
        fed.sandbox.inject_failures("chat.postMessage", count=1, status=400,
                                    error="msg_too_long")
        await fed.peter.send_raw(peter_says("p-doomed", "<body>doomed</body>"
                                                        f"<request xmlns='{NS_RECEIPTS}'/>"))
        bounce = await fed.peter_gets("message")
        # the XMPP-native failure: an error stanza with Peter's own id, from John's JID
        assert (bounce.type, bounce.id, bounce.sender) == ("error", "p-doomed", JOHN_JID)
        assert bounce.error_condition == "undefined-condition"
        notice = await fed.peter_gets("message")
        assert notice.type == "chat" and "could not be delivered (msg_too_long)" in notice.body
        reply = child(xml_of(notice), NS_REPLY, "reply")
        assert reply is not None and reply.get("id") == "p-doomed"

        # no receipt for it (XEP-0184: only once delivered): the next stanza Peter gets
        # is the receipt of his next message, which Slack takes
        await fed.peter.send_raw(peter_says("p-fine", "<body>fine</body>"
                                                      f"<request xmlns='{NS_RECEIPTS}'/>"))
        await fed.slack_gets(lambda m: m.get("text") == "fine")
        receipt = await fed.peter_gets("message")
        received = child(xml_of(receipt), NS_RECEIPTS, "received")
        assert received is not None and received.get("id") == "p-fine"
        assert [(outcome, reason) for user, outcome, reason in await im_entries(fed)
                if user == PETER_ADDRESS.user] == [("failed", "msg_too_long"),
                                                   ("delivered", "")]
