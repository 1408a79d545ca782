"""Slack (the sandbox) <-> XMPP (a real Prosody) through Interlink, both directions.

John acts through the sandbox's Web API (``xoxp-john``) and slash commands; Peter
is a real XMPP client logged in to Prosody, sending raw stanzas where slixmpp has
no helper. Waits are on observable state (a stanza Peter receives, a message in
Slack), each test bounded by the federation's deadline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from ._federation import (
    JOHN_ADDRESS,
    JOHN_JID,
    PETER_ADDRESS,
    PETER_JID,
    XmppFederation,
    child,
    xml_of,
    xmpp_federation,
)

NS_CORRECT = "urn:xmpp:message-correct:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
NS_REACTIONS = "urn:xmpp:reactions:0"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_OOB = "jabber:x:oob"
NS_VCARD = "vcard-temp"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def peter_says(message_id: str, payload: str, *, to: str = JOHN_JID) -> str:
    """A chat message from Peter with an origin-id (XEP-0359) and ``payload`` inside."""
    return (f"<message to='{to}' type='chat' id='{message_id}'>{payload}"
            f"<origin-id xmlns='urn:xmpp:sid:0' id='{message_id}'/></message>")


def posts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The contact's posts (under Peter's name), not Interlink's own notices."""
    return [m for m in messages if m.get("username")]


def notices(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages if not m.get("username") and m.get("bot_id")]


async def john_says(fed: XmppFederation, text: str, **args: Any) -> tuple[str, str]:
    """John posts in his conversation with Peter; (Slack ts, the XMPP id Peter sees)."""
    posted = await fed.act("chat.postMessage", channel=fed.conversation(), text=text, **args)
    seen = await fed.peter_gets("message", skip_types=("error",))
    assert seen.body == text, seen
    return posted["ts"], seen.id


async def test_contacts_and_messages_both_ways(tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        assert sum("accepted" in n for n in notices(await fed.slack_messages())) == 1
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


async def test_threads_edits_reactions_and_deletes_from_slack(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        channel = fed.conversation()
        root_ts, root_id = await john_says(fed, "root")

        # a Slack thread reply names its root in <thread> (the root's XMPP id)
        await fed.act("chat.postMessage", channel=channel, text="in thread", thread_ts=root_ts)
        reply = await fed.peter_gets("message", skip_types=("error",))
        assert reply.body == "in thread"
        assert xml_of(reply).findtext("thread") == root_id

        # an edit is a XEP-0308 correction of the root
        await fed.act("chat.update", channel=channel, ts=root_ts, text="root v2")
        edit = await fed.peter_gets("message", skip_types=("error",))
        replace = child(xml_of(edit), NS_CORRECT, "replace")
        assert edit.body == "root v2" and replace is not None
        assert replace.get("id") == root_id

        # reactions are XEP-0444 sets: added, then emptied
        await fed.act("reactions.add", channel=channel, timestamp=root_ts, name="tada")
        added = child(xml_of(await fed.peter_gets("message")), NS_REACTIONS, "reactions")
        assert added is not None and added.get("id") == root_id
        assert [r.text for r in added] == ["🎉"]
        await fed.act("reactions.remove", channel=channel, timestamp=root_ts, name="tada")
        emptied = child(xml_of(await fed.peter_gets("message")), NS_REACTIONS, "reactions")
        assert emptied is not None and emptied.get("id") == root_id and len(emptied) == 0

        # a delete is a XEP-0424 retraction
        await fed.act("chat.delete", channel=channel, ts=root_ts)
        retraction = child(xml_of(await fed.peter_gets("message")), NS_RETRACT, "retract")
        assert retraction is not None and retraction.get("id") == root_id


async def test_replies_edits_reactions_and_retractions_from_xmpp(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        _, johns_id = await john_says(fed, "John's question")
        # a quick correction, right behind its message (before Interlink has delivered
        # it), edits it: no second post
        await fed.peter.send_raw(
            peter_says("p-root", "<body>rooot</body>")
            + peter_says("p-typo", f"<body>root</body><replace xmlns='{NS_CORRECT}' "
                                   "id='p-root'/>"))
        root = await fed.slack_gets(lambda m: m.get("text") == "root" and "edited" in m)

        # XEP-0461 reply (its XEP-0428 fallback quote stripped) -> a Slack thread reply
        await fed.peter.send_raw(peter_says(
            "p-reply", "<body>&gt; root\nanswer</body>"
                       f"<reply xmlns='urn:xmpp:reply:0' id='p-root' to='{JOHN_JID}'/>"
                       "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>"
                       "<body start='0' end='7'/></fallback>"))
        answer = await fed.slack_gets(lambda m: m.get("text") == "answer")
        assert answer["thread_ts"] == root["ts"]
        # <thread> naming John's message -> a reply in John's thread
        await fed.peter.send_raw(peter_says("p-thread", f"<body>on yours</body>"
                                                        f"<thread>{johns_id}</thread>"))
        on_yours = await fed.slack_gets(lambda m: m.get("text") == "on yours")
        johns = await fed.slack_gets(lambda m: m.get("text") == "John's question")
        assert on_yours["thread_ts"] == johns["ts"]

        # XEP-0308 correction -> chat.update
        await fed.peter.send_raw(peter_says(
            "p-fix", f"<body>root v2</body><replace xmlns='{NS_CORRECT}' id='p-root'/>"))
        await fed.slack_gets(lambda m: m["ts"] == root["ts"] and m["text"] == "root v2")

        # XEP-0444 reactions, on Peter's own message and on John's
        await fed.peter.send_raw(peter_says(
            "p-react", f"<reactions xmlns='{NS_REACTIONS}' id='p-root'>"
                       "<reaction>👍</reaction></reactions>"))
        await fed.peter.send_raw(peter_says(
            "p-react-2", f"<reactions xmlns='{NS_REACTIONS}' id='{johns_id}'>"
                         "<reaction>🎉</reaction></reactions>"))
        await fed.slack_gets(lambda m: m["ts"] == johns["ts"] and bool(m.get("reactions")))
        reacted = await fed.slack_gets(lambda m: m["ts"] == root["ts"]
                                       and bool(m.get("reactions")))
        assert [r["name"] for r in reacted["reactions"]] in (["+1"], ["thumbsup"])
        await fed.peter.send_raw(peter_says(
            "p-unreact", f"<reactions xmlns='{NS_REACTIONS}' id='p-root'/>"))
        await fed.slack_gets(lambda m: m["ts"] == root["ts"] and not m.get("reactions"))

        # XEP-0424 retraction -> chat.delete (a root with replies stays as a tombstone)
        await fed.peter.send_raw(peter_says(
            "p-retract", f"<retract xmlns='{NS_RETRACT}' id='p-root'/>"))
        await fed.slack_gets(lambda m: m["ts"] == root["ts"] and m.get("subtype") == "tombstone")
        messages = await fed.slack_messages()
        assert [m["text"] for m in posts(messages)] == ["This message was deleted.", "answer",
                                                        "on yours"]
        assert not any("Not delivered" in n for n in notices(messages))


async def test_files_both_ways(tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        channel = fed.conversation()

        # XMPP -> Slack: a XEP-0066 link is streamed into Slack's upload flow
        url = fed.sandbox.url + "/avatars/peter.png"
        source = await fed.http.get(url)
        await fed.peter.send_raw(peter_says(
            "p-file", f"<body>{url}</body><x xmlns='{NS_OOB}'><url>{url}</url></x>"))
        shared = await fed.slack_gets(lambda m: bool(m.get("files")))
        (file,) = shared["files"]
        assert (file["name"], file["size"]) == ("peter.png", len(source.content))

        # Slack -> XMPP: John uploads; Peter gets a link to Interlink's signed URL (no
        # Slack login) that streams the bytes from Slack
        upload = await fed.act("files.getUploadURLExternal", filename="notes.txt", length=5)
        await fed.http.post(upload["upload_url"], content=b"notes",
                            headers={"Authorization": "Bearer xoxp-john"})
        await fed.act("files.completeUploadExternal", channel_id=channel,
                      files=json.dumps([{"id": upload["file_id"], "title": "notes.txt"}]),
                      initial_comment="my notes")
        caption = await fed.peter_gets("message", skip_types=("error",))
        assert caption.body == "my notes"
        link = await fed.peter_gets("message", skip_types=("error",))
        oob = child(xml_of(link), NS_OOB, "x")
        assert oob is not None
        href = oob.findtext(f"{{{NS_OOB}}}url")
        assert href == link.body
        assert href.startswith(f"http://127.0.0.1:{fed.slack.listen_port}/slack/files/")
        fetched = await fed.http.get(href)
        assert (fetched.status_code, fetched.content) == (200, b"notes")


async def test_presence_both_ways(tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        channel = fed.conversation()

        # Peter goes away: the conversation's topic says so
        await fed.peter.send_raw("<presence><show>away</show><status>at lunch</status>"
                                 "</presence>")
        while True:
            info = await fed.act("conversations.info", channel=channel)
            if info["channel"]["topic"]["value"].endswith("is away: at lunch"):
                break
            await trio.sleep(0.02)
        assert info["channel"]["topic"]["value"] == \
            f"{PETER_ADDRESS} ({PETER_ADDRESS}) is away: at lunch"

        # John goes away in Slack (polled): Peter sees john@acme.localhost away
        await fed.act("users.setPresence", presence="away")
        while True:
            presence = await fed.peter_gets("presence")
            if presence.sender == JOHN_JID and presence.type == "away":
                break
            assert presence.type in ("available", "subscribed", "subscribe"), presence
        await fed.act("users.setPresence", presence="auto")
        back = await fed.peter_gets("presence")
        assert (back.sender, back.type) == (JOHN_JID, "available")


async def test_profiles_both_ways(tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        # Peter's vCard on his server (vcard-temp, as many clients still write it)
        await fed.peter.send_raw(f"<iq type='set' id='vcard-set'><vCard xmlns='{NS_VCARD}'>"
                                 "<FN>Peter Parker</FN><NICKNAME>pete</NICKNAME></vCard></iq>")
        assert (await fed.peter.next_stanza("iq")).type == "result"
        await fed.befriend()

        # Peter asks John's vCard: Slack's profile (users.info), once Interlink has it
        while True:
            await fed.peter.send_raw(f"<iq type='get' to='{JOHN_JID}' id='vcard-john'>"
                                     f"<vCard xmlns='{NS_VCARD}'/></iq>")
            answer = await fed.peter.next_stanza("iq")
            assert (answer.sender, answer.type, answer.id) == (JOHN_JID, "result", "vcard-john")
            vcard = child(xml_of(answer), NS_VCARD, "vCard")
            assert vcard is not None
            if vcard.findtext(f"{{{NS_VCARD}}}FN"):
                break
            await trio.sleep(0.02)  # John's profile is still on its way from Slack
        assert vcard.findtext(f"{{{NS_VCARD}}}FN") == "John Smith"
        assert vcard.findtext(f"{{{NS_VCARD}}}TITLE") == "Head of Sales"
        assert vcard.findtext(f"{{{NS_VCARD}}}EMAIL/{{{NS_VCARD}}}USERID") == str(JOHN_ADDRESS)

        # Peter shows up online as a contact: Interlink reads his vCard, and his posts in
        # Slack carry his name
        await fed.peter.send_raw("<presence/>")
        while True:
            await fed.engine.metadata_log.write_buffered()
            if any(e.type == "profile" and e.sender == PETER_ADDRESS and
                   e.outcome == "delivered" for e in fed.engine.metadata_log.entries()):
                break
            await trio.sleep(0.02)
        await fed.peter.send_message(JOHN_JID, "it's me")
        post = await fed.slack_gets(lambda m: m.get("text") == "it's me")
        assert post["username"] == "Peter Parker"


async def test_receipts_and_typing_change_nothing_in_slack(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        before = await fed.slack_messages()
        posted = await fed.act("chat.postMessage", channel=fed.conversation(), text="ping")
        seen = await fed.peter_gets("message", skip_types=("error",))
        # John's message asks for a XEP-0184 receipt; Peter's client sends one
        assert child(xml_of(seen), NS_RECEIPTS, "request") is not None
        await fed.peter.send_raw(
            f"<message to='{JOHN_JID}' id='rcpt-1'><received xmlns='{NS_RECEIPTS}' "
            f"id='{seen.id}'/></message>")
        # Peter types (XEP-0085): Slack apps cannot show it
        await fed.peter.send_raw(
            f"<message to='{JOHN_JID}' type='chat' id='typing-1'>"
            "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        # ...and the conversation goes on: the next message arrives, nothing in between;
        # Peter asked for a receipt, which comes from John's JID once Slack has it
        await fed.peter.send_raw(peter_says("p-pong", f"<body>pong</body>"
                                                      f"<request xmlns='{NS_RECEIPTS}'/>"))
        messages = await fed.slack_until(lambda ms: any(m["text"] == "pong" for m in ms))
        assert [(m["text"], m["ts"] == posted["ts"]) for m in messages[len(before):]] == [
            ("ping", True), ("pong", False)]
        receipt = await fed.peter_gets("message")
        received = child(xml_of(receipt), NS_RECEIPTS, "received")
        assert receipt.sender == JOHN_JID and received is not None
        assert received.get("id") == "p-pong"
        await fed.engine.metadata_log.write_buffered()
        entries = fed.engine.metadata_log.entries()
        logged = {(e.type, e.outcome, e.reason) for e in entries if e.sender == PETER_ADDRESS}
        assert ("typing", "delivered", "unsupported-by-destination") in logged
        assert ("outcome", "delivered", "") in logged
        assert not [e for e in entries if e.outcome != "delivered" and e.type != "presence"]


async def test_a_contact_request_from_xmpp_is_accepted_in_slack(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.peter_wants_the_roster()
        await fed.peter.send_raw(f"<presence to='{JOHN_JID}' type='subscribe'/>")
        request = await fed.slack_gets(lambda m: "would like to chat" in m["text"])
        assert "`/interlink accept peter@widget.localhost`" in request["text"]
        assert "Accepted" in await fed.command("accept peter@widget.localhost")
        approval = await fed.peter_gets("presence")
        assert (approval.sender, approval.type) == (JOHN_JID, "subscribed")
        contact = fed.directory.get_contact(JOHN_ADDRESS, PETER_ADDRESS)
        assert contact is not None and contact.state == "accepted"
        # Interlink subscribes back (Peter's client approves): messages flow
        await fed.peter.send_message(JOHN_JID, "thanks")
        await fed.slack_gets(lambda m: m.get("text") == "thanks")
        messages = await fed.slack_messages()
        assert sum("would like to chat" in n for n in notices(messages)) == 1


async def test_removal_both_ways(tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.peter_wants_the_roster()
        await fed.befriend()

        # John removes Peter in Slack: Peter's client hears unsubscribe / unsubscribed
        assert "Removed" in await fed.command("remove peter@widget.localhost")
        seen: set[str] = set()
        while not {"unsubscribe", "unsubscribed"} <= seen:
            presence = await fed.peter_gets("presence")
            assert presence.sender == JOHN_JID, presence
            seen.add(presence.type)
        assert seen <= {"unavailable", "unsubscribe", "unsubscribed", "available"}, seen
        contact = fed.directory.get_contact(JOHN_ADDRESS, PETER_ADDRESS)
        assert contact is not None and contact.state == "removed"
        await fed.peter.send_message(JOHN_JID, "still there?")
        refused = await fed.peter_gets("message")
        assert (refused.type, refused.error_condition) == ("error", "subscription-required")

        # friends again, then Peter removes John in his client: Slack says so
        await fed.befriend()
        await fed.peter.send_raw(f"<presence to='{JOHN_JID}' type='unsubscribe'/>")
        await fed.slack_gets(lambda m: "removed the contact" in m["text"])
        contact = fed.directory.get_contact(JOHN_ADDRESS, PETER_ADDRESS)
        assert contact is not None and contact.state == "removed"
        messages = await fed.slack_messages()
        assert sum("removed the contact" in n for n in notices(messages)) == 1
        assert not any("would like to chat" in n for n in notices(messages))


async def wait_queued(fed: XmppFederation, count: int) -> None:
    """Until ``count`` stanzas wait in the component's outbound queue."""
    while True:  # the queue has no wait of its own; it is polled like Slack's state
        if fed.xmpp.connection.statistics().queued >= count:
            return
        await trio.sleep(0.02)


async def test_prosody_restarted_mid_conversation_loses_and_duplicates_nothing(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        await john_says(fed, "before")
        await fed.peter.send_message(JOHN_JID, "hello before")
        await fed.slack_gets(lambda m: m.get("text") == "hello before")
        connection = fed.xmpp.connection
        connects = connection.statistics().connects

        await fed.prosody.stop()
        await connection.wait_disconnected()
        written = connection.statistics().sent
        for text in ("while down 1", "while down 2", "while down 3"):
            await fed.act("chat.postMessage", channel=fed.conversation(), text=text)
        await wait_queued(fed, 1)  # the first waits in the queue; the others in the session
        probes = fed.xmpp.stats.probes_sent
        await fed.prosody.start()
        await connection.wait_connected()
        assert connection.statistics().connects == connects + 1

        async with fed.open_peter() as peter:  # Peter's client reconnects too
            fed.peter = peter
            got = [(await fed.peter_gets("message", skip_types=("error",))).body
                   for _ in range(3)]
            assert got == ["while down 1", "while down 2", "while down 3"]
            # nothing repeated: the next message Peter gets is the next one John sends
            await john_says(fed, "after")
            await fed.peter.send_message(JOHN_JID, "hello after")
            await fed.slack_gets(lambda m: m.get("text") == "hello after")
            messages = await fed.slack_messages()
        assert [m["text"] for m in posts(messages)] == ["hello before", "hello after"]
        johns = [m["text"] for m in messages if m.get("user") == "U0JOHN"]
        assert johns == ["before", "while down 1", "while down 2", "while down 3", "after"]
        assert connection.statistics().sent > written
        # the handshake was followed by a presence resync: Peter was probed again
        assert fed.xmpp.stats.probes_sent > probes
        await fed.engine.metadata_log.write_buffered()
        ims = [e for e in fed.engine.metadata_log.entries() if e.type == "im"]
        assert [e.outcome for e in ims] == ["delivered"] * 7


async def test_a_stopped_component_gets_prosodys_bounce_and_traffic_resumes_when_back(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        await fed.stop_xmpp()

        # Prosody answers for the missing component
        await fed.peter.send_message(JOHN_JID, "anyone?")
        bounce = await fed.peter_gets("message")
        assert (bounce.type, bounce.error_type, bounce.error_condition) == (
            "error", "wait", "remote-server-timeout"), bounce
        # John writes meanwhile: it waits in the component's queue
        await fed.act("chat.postMessage", channel=fed.conversation(), text="are you there?")
        await wait_queued(fed, 1)

        await fed.start_xmpp()
        waiting = await fed.peter_gets("message", skip_types=("error",))
        assert waiting.body == "are you there?"
        await fed.peter.send_message(JOHN_JID, "yes, now")
        await fed.slack_gets(lambda m: m.get("text") == "yes, now")
        await john_says(fed, "good")
        assert [m["text"] for m in posts(await fed.slack_messages())] == ["yes, now"]


async def test_bad_input_is_refused_with_an_xmpp_error_and_nothing_is_routed(
        tmp_path: Path, prosody_installed: None) -> None:
    async with xmpp_federation(tmp_path) as fed:
        await fed.befriend()
        await fed.engine.actors.drain()
        routed = fed.engine.router.routed
        before = len(await fed.slack_messages())
        bad = [
            # a body over the adapter's limit (64 KiB)
            (peter_says("big", "<body>" + "x" * (64 * 1024 + 1) + "</body>"),
             "not-acceptable", "modify"),
            # XEP-0106: a localpart may not start with an escaped space
            (peter_says("esc", "<body>hi</body>", to="\\20john@acme.localhost"),
             "jid-malformed", "modify"),
            # a correction that does not say what it corrects
            (peter_says("fix", f"<body>fixed</body><replace xmlns='{NS_CORRECT}'/>"),
             "bad-request", "modify"),
        ]
        for stanza, condition, error_type in bad:
            await fed.peter.send_raw(stanza)
            error = await fed.peter_gets("message")
            assert (error.type, error.error_condition, error.error_type) == (
                "error", condition, error_type), error
            assert not error.body  # the offending content is not echoed back
        # the adapter handles stanzas in order: once this one is in Slack, those were done
        await fed.peter.send_message(JOHN_JID, "and a good one")
        messages = await fed.slack_until(
            lambda ms: any(m.get("text") == "and a good one" for m in ms))
        assert [m["text"] for m in messages[before:]] == ["and a good one"]
        await fed.engine.actors.drain()
        assert fed.engine.router.routed == routed + 1  # only the good one
        assert fed.xmpp.stats.rejected == 3
        await fed.engine.metadata_log.write_buffered()
        errors = [e for e in fed.engine.metadata_log.entries() if e.type == "error"]
        assert [(e.reason, e.outcome) for e in errors] == [
            ("xmpp:not-acceptable", "refused"), ("xmpp:jid-malformed", "refused"),
            ("xmpp:bad-request", "refused")]
        assert all(e.sender == PETER_ADDRESS for e in errors)
        # a malformed JID names nobody: logged against a placeholder, never guessed
        assert [str(e.receiver) for e in errors] == [
            str(JOHN_ADDRESS), "unknown@invalid", str(JOHN_ADDRESS)]
