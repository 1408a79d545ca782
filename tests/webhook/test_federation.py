"""End to end, in one engine: wendy@partner.localhost on a webhook partner system chats
both ways with John on Slack (the local sandbox, Socket Mode) and with Peter on XMPP (a
real Prosody, a real client).

The XMPP component serves the partner's domain (domain mode), so Peter's client sees
Wendy as the JID wendy@partner.localhost. The partner is played by code that speaks
only Standard Webhooks (``standardwebhooks`` signs and verifies).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from adapters.slack import (
    SlackAdapter,
    SlackInstallationConfig,
    SlackSecrets,
    SlackSettings,
    SlackWebClient,
    WebApiSettings,
)
from adapters.slack.sandbox import RateLimitSettings, Sandbox, SandboxSettings, parse_seed
from adapters.webhook import WebhookAdapter, WebhookSecrets, parse_secret
from adapters.xmpp import (
    AddressingSettings,
    ProsodySettings,
    Received,
    TestClient,
    XmppAdapter,
    XmppSettings,
    open_client,
)
from engine import (
    METADATA_DBS,
    Address,
    ContactRecord,
    DomainAgreement,
    DomainRoute,
    Engine,
    EngineSettings,
    MemoryKV,
    MetadataLog,
    PlatformIdentity,
    SystemClock,
)
from engine.asgi import serve_http
from engine.testing import MemoryDirectory

from .conftest import (
    PARTNER_DOMAIN,
    WENDY,
    FakePartner,
    PartnerClient,
    message,
    new_secret,
    running_prosody,
    webhook_config,
)

DEADLINE = 40.0
TEAM, JOHN_ID, APP = "T0ACME", "U0JOHN", "A0INTERLINK"
JOHN = Address.parse("john@acme.localhost")
PETER = Address.parse("peter@widget.localhost")
PETER_PASSWORD = "peter-password"
COMPONENT_SECRET = "component-secret"
WENDY_JID = str(WENDY)

SEED = """
[[workspace]]
id = "T0ACME"
name = "Acme"
domain = "acme"

[[workspace.user]]
id = "U0JOHN"
name = "john"
real_name = "John Smith"
email = "john@acme.localhost"
token = "xoxp-john"

[[workspace.channel]]
id = "C0GENERAL"
name = "general"
is_general = true
members = ["U0JOHN", "U0BOT"]

[[workspace.app]]
id = "A0INTERLINK"
name = "Interlink"
bot_user_id = "U0BOT"
bot_token = "xoxb-interlink"
app_token = "xapp-interlink"
signing_secret = "s3cret"
commands = ["/interlink"]
client_id = "111.222"
client_secret = "client-secret"
scopes = ["chat:write", "chat:write.customize", "im:history", "im:write", "im:read",
          "groups:history", "groups:read", "groups:write", "channels:history",
          "channels:read", "reactions:read", "reactions:write", "users:read",
          "users:read.email", "users.profile:read", "commands", "team:read"]
"""


class Federation:
    def __init__(self, engine: Engine, directory: MemoryDirectory, sandbox: Sandbox,
                 http: httpx.AsyncClient, partner: FakePartner, client: PartnerClient,
                 peter: TestClient) -> None:
        self.engine = engine
        self.directory = directory
        self.sandbox = sandbox
        self.http = http
        self.partner = partner
        self.client = client
        self.peter = peter

    async def john(self, method: str, **args: Any) -> dict[str, Any]:
        """Call the sandbox's Web API as John."""
        response = await self.http.post(self.sandbox.api_url + method, json=args,
                                        headers={"Authorization": "Bearer xoxp-john"})
        answer: dict[str, Any] = response.json()
        assert answer.get("ok"), f"{method} failed: {answer}"
        return answer

    def johns_conversation(self) -> str:
        session = self.directory.find_session(JOHN, WENDY)
        assert session is not None and session.conversation_ids.get("slack")
        return session.conversation_ids["slack"]

    async def slack_gets(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first post in John's conversation with Wendy matching ``predicate``, once
        there (Slack has no push to the person to wait on; bounded by the deadline)."""
        while True:
            session = self.directory.find_session(JOHN, WENDY)
            channel = None if session is None else session.conversation_ids.get("slack")
            for post in self.sandbox.messages(channel) if channel else []:
                if predicate(post):
                    return post
            await trio.sleep(0.02)

    async def partner_gets(self, kind: str) -> dict[str, Any]:
        """The data of the next payload of ``kind`` the partner receives (others skipped)."""
        while True:
            received = await self.partner.next_received()
            if received.payload["type"] == kind:
                data: dict[str, Any] = received.payload["data"]
                return data

    async def peter_gets(self, kind: str = "message") -> Received:
        """Peter's next stanza of ``kind`` with something in it (chat states skipped)."""
        while True:
            stanza = await self.peter.next_stanza(kind)
            if stanza.sender.startswith(str(PETER)):
                continue  # Prosody reflects Peter's own presence to him
            if kind == "message" and (not stanza.body or stanza.type == "error"):
                continue
            return stanza


@asynccontextmanager
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    seed = parse_seed(SEED, source="webhook-federation-seed.toml")
    base = SandboxSettings()
    settings = msgspec.structs.replace(
        base, timing=msgspec.structs.replace(base.timing, ack_timeout=3.0, retry_scale=0.001,
                                             refresh_grace=0.5),
        rate_limits=RateLimitSettings(post_message_per_second=500.0, post_message_burst=50,
                                      per_minute=(600.0, 6000.0, 6000.0, 6000.0, 6000.0)))
    sandbox = Sandbox(seed, settings=settings)
    inbound, outbound = new_secret(), new_secret()
    partner = FakePartner(outbound)
    prosody_settings = ProsodySettings(
        state_dir=tmp_path / "prosody", host="widget.localhost",
        components={PARTNER_DOMAIN: COMPONENT_SECRET}, users={"peter": PETER_PASSWORD})
    with trio.fail_after(DEADLINE):
        async with httpx.AsyncClient(trust_env=False) as http, \
                running_prosody(prosody_settings) as prosody, \
                trio.open_nursery() as servers:
            await servers.start(sandbox.serve)
            partner_port = await servers.start(lambda task_status: serve_http(
                partner, host="127.0.0.1", port=0, task_status=task_status))

            directory = MemoryDirectory()
            for route in (
                DomainRoute(domain="acme.localhost", platform="slack", tenant=TEAM,
                            internal=True),
                DomainRoute(domain="widget.localhost", platform="xmpp"),
                DomainRoute(domain=PARTNER_DOMAIN, platform="webhook"),
            ):
                await directory.put_domain_route(route)
            for other in ("acme.localhost", "widget.localhost"):
                await directory.put_domain_agreement(DomainAgreement(
                    domain_a=PARTNER_DOMAIN, domain_b=other, decision="allow"))
            await directory.put_identity(PlatformIdentity(address=JOHN, platform="slack",
                                                          tenant=TEAM, user_id=JOHN_ID))
            for owner, contact in ((JOHN, WENDY), (WENDY, JOHN)):
                await directory.put_contact(ContactRecord(owner=owner, contact=contact,
                                                          state="accepted", requested_by=JOHN))

            slack = SlackAdapter(
                settings=SlackSettings(presence_interval=3600.0),
                secrets=SlackSecrets(signing_secret="s3cret", app_token="xapp-interlink",
                                     client_id="111.222", client_secret="client-secret"),
                web=SlackWebClient(settings=WebApiSettings(base_url=sandbox.api_url,
                                                           post_message_per_second=200.0),
                                   http=http),
                installations=[SlackInstallationConfig(team_id=TEAM,
                                                       bot_token="xoxb-interlink")])
            xmpp = XmppAdapter(
                settings=XmppSettings(addressing=AddressingSettings(
                    component_domain=PARTNER_DOMAIN), queue_deadline=20.0),
                server=lambda: ("127.0.0.1", prosody.component_port, COMPONENT_SECRET))
            webhook = WebhookAdapter(
                webhook_config(f"http://127.0.0.1:{partner_port}/events"),
                secrets=WebhookSecrets(inbound_keys=(parse_secret(inbound),),
                                       outbound_key=parse_secret(outbound)), http=http)
            clock = SystemClock()  # signatures are checked against real time
            engine = Engine(directory=directory, adapters=[slack, xmpp, webhook], clock=clock,
                            metadata_log=MetadataLog(MemoryKV(METADATA_DBS), directory, clock),
                            settings=EngineSettings(shard_count=2))
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.run)
                await sandbox.wait_socket_connections(APP)
                async with open_client(str(PETER), PETER_PASSWORD, "127.0.0.1",
                                       prosody.c2s_port) as peter:
                    yield Federation(engine, directory, sandbox, http, partner,
                                     PartnerClient(http, webhook.url, inbound), peter)
                nursery.cancel_scope.cancel()
            servers.cancel_scope.cancel()


async def test_wendy_chats_with_john_on_slack_and_peter_on_xmpp(tmp_path: Path,
                                                                prosody_installed: None
                                                                ) -> None:
    async with federation(tmp_path) as fed:
        # Wendy -> John (Slack): a post under Wendy's name in John's conversation
        response = await fed.client.post(message(
            "w-1", "", to=JOHN, rich={"blocks": [{"type": "paragraph", "inlines": [
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "John", "styles": ["bold"]}]}]}))
        assert response.status_code == 202, response.text
        post = await fed.slack_gets(lambda m: m.get("username") == str(WENDY))
        assert post["text"] == "Hello *John*"

        # John -> Wendy: the partner receives it, signed, with Interlink's id
        sent = await fed.john("chat.postMessage", channel=fed.johns_conversation(),
                              text="Hi _Wendy_")
        data = await fed.partner_gets("message.created")
        assert (data["from"], data["to"]) == (str(JOHN), str(WENDY))
        assert data["text"] == "Hi Wendy"
        assert data["rich"]["blocks"][0]["inlines"][1] == {
            "type": "text", "text": "Wendy", "styles": ["italic"]}
        johns_id = data["id"]

        # Wendy reacts to John's message by Interlink's id: the reaction shows in Slack
        response = await fed.client.post({"type": "reaction.added", "data": {
            "from": str(WENDY), "to": str(JOHN), "target": johns_id, "emoji": "thumbsup"}})
        assert response.status_code == 202, response.text
        reacted = await fed.slack_gets(lambda m: m["ts"] == sent["ts"] and
                                       bool(m.get("reactions")))
        assert reacted["reactions"][0]["name"] in ("+1", "thumbsup")

        # Wendy -> Peter (XMPP): a contact request Peter approves, then messages both ways
        response = await fed.client.post({"type": "contact.requested", "data": {
            "from": str(WENDY), "to": str(PETER)}})
        assert response.status_code == 202, response.text
        request = await fed.peter_gets("presence")
        while request.type != "subscribe":
            request = await fed.peter_gets("presence")
        assert request.sender.partition("/")[0] == WENDY_JID
        await fed.peter.send_raw(f"<presence to='{WENDY_JID}' type='subscribed'/>")
        accepted = await fed.partner_gets("contact.accepted")
        assert (accepted["from"], accepted["to"]) == (str(PETER), str(WENDY))

        response = await fed.client.post(message("w-2", "Hi Peter", to=PETER))
        assert response.status_code == 202, response.text
        stanza = await fed.peter_gets("message")
        assert (stanza.sender.partition("/")[0], stanza.body) == (WENDY_JID, "Hi Peter")

        await fed.peter.send_message(WENDY_JID, "Hello *Wendy*")
        data = await fed.partner_gets("message.created")
        assert (data["from"], data["to"]) == (str(PETER), str(WENDY))
        assert data["text"] == "Hello Wendy"
        assert data["rich"]["blocks"][0]["inlines"][1]["styles"] == ["bold"]
