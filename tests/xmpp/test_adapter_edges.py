"""The XMPP adapter's edges with the engine: what it announces, how it answers a busy
or refused stanza, and what it keeps in the directory (so a restart forgets nothing).

Against a real Prosody and the Slack sandbox (:mod:`._federation`).
"""

from __future__ import annotations

from pathlib import Path

from ._federation import child, xml_of, xmpp_federation

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
