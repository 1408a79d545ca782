"""The bad-input table: every case with the answer the code and the docs define.

Sources of the expected answers:

- Slack Events API over HTTP: the table at the top of ``adapters/slack/_inbound.py`` and
  "Delivery semantics" in ``docs/slack-adapter.md``; refusals carry
  ``{"ok": false, "error": code}``.
- Webhook endpoint: "Status codes" in ``docs/webhook-adapter.md`` (the table at the top
  of ``adapters/webhook/_inbound.py``); refusals carry ``{"error": code, ...}``.
- XMPP: "Bad input" in ``docs/xmpp-adapter.md`` (condition and type of the error stanza).
- Control API: ``supervisor/_control.py`` and "Control API" in ``docs/operations.md``:
  401 without a bearer token in the header, ``MAX_PAGE`` = 500, JSON errors.

An answer is written ``"<status> <error code>"`` for HTTP and ``"<condition> (<type>)"``
for XMPP, so a row's expected and actual answers compare as text and print as a table.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from ._world import (
    CONTROL_TOKEN,
    JOHN,
    MARY,
    PETER,
    WEBHOOK_MAX_BODY,
    WENDY,
    XMPP_MAX_BODY,
    World,
    slack_signature,
    unique,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One row: what is sent, where, and the defined answer."""

    name: str
    surface: str  # slack | webhook | xmpp | control
    expected: str
    act: Callable[[World], Awaitable[str]]
    #: a known bug: the row is expected to fail (strict), with this reason
    xfail: str = ""


# -- how answers are read ----------------------------------------------------------------------


def _http_answer(response: httpx.Response) -> str:
    """``"<status> <error code>"``; a body with a traceback never passes."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("error", "") if isinstance(body, dict) else ""
    if isinstance(body, dict) and "challenge" in body:
        code = f"challenge={body['challenge']}"
    answer = f"{response.status_code} {code}".strip()
    if "Traceback" in response.text or "File \"/" in response.text:
        answer += " +traceback in body"
    return answer


# -- Slack Events API over HTTP ----------------------------------------------------------------


def _url_verification(challenge: Any = "ch4llenge") -> bytes:
    return json.dumps({"token": "legacy", "type": "url_verification",
                       "challenge": challenge}).encode()


def _event_callback(*, event_id: Any = None, event: Any = None) -> bytes:
    body: dict[str, Any] = {
        "token": "legacy", "team_id": "T0ACME", "api_app_id": "A0INTERLINK",
        "type": "event_callback", "event_time": int(time.time()),
        "event": event if event is not None else {
            "type": "message", "channel": "C0GENERAL", "user": "U0JOHN", "text": "hello",
            "ts": f"{time.time():.6f}", "channel_type": "channel"}}
    if event_id is not None:
        body["event_id"] = event_id
    return json.dumps(body).encode()


async def slack_no_signature(world: World) -> str:
    body = _url_verification()
    return _http_answer(await world.post_slack(body, {"Content-Type": "application/json"}))


async def slack_forged_signature(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body)
    headers["X-Slack-Signature"] = "v0=" + secrets.token_hex(32)
    return _http_answer(await world.post_slack(body, headers))


async def slack_signed_with_another_secret(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body)
    when = int(headers["X-Slack-Request-Timestamp"])
    headers["X-Slack-Signature"] = slack_signature("not-the-secret", when, body)
    return _http_answer(await world.post_slack(body, headers))


async def slack_stale_timestamp(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body, timestamp=int(time.time()) - 6 * 60)
    return _http_answer(await world.post_slack(body, headers))


async def slack_future_timestamp(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body, timestamp=int(time.time()) + 6 * 60)
    return _http_answer(await world.post_slack(body, headers))


async def slack_no_timestamp_header(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body)
    del headers["X-Slack-Request-Timestamp"]
    return _http_answer(await world.post_slack(body, headers))


async def slack_timestamp_not_a_number(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body)
    headers["X-Slack-Request-Timestamp"] = "yesterday"
    return _http_answer(await world.post_slack(body, headers))


async def slack_no_content_type(world: World) -> str:
    """No Content-Type: a signed body is read as JSON (only a form type changes that)."""
    body = _url_verification("no-ctype")
    return _http_answer(await world.post_slack(body, world.slack_headers(body,
                                                                         content_type=None)))


async def slack_malformed_json(world: World) -> str:
    body = b'{"type": "event_callback", "event_id": '
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_not_utf8(world: World) -> str:
    body = b'{"type": "\xff\xfe"}'
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_json_not_an_object(world: World) -> str:
    body = b'["event_callback"]'
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_type_not_a_string(world: World) -> str:
    body = b'{"type": 7}'
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_event_id_wrong_type(world: World) -> str:
    body = _event_callback(event_id=12345)
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_event_wrong_type(world: World) -> str:
    body = _event_callback(event_id=unique("EvBad"), event="not an object")
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_event_ts_wrong_type(world: World) -> str:
    body = _event_callback(event_id=unique("EvBad"), event={
        "type": "message", "channel": "C0GENERAL", "user": "U0JOHN", "text": "x",
        "ts": 1234.5})
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_event_callback_without_event_id(world: World) -> str:
    body = _event_callback()
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_challenge_wrong_type(world: World) -> str:
    body = _url_verification(challenge=["a", "list"])
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_oversized_declared(world: World) -> str:
    body = b"{" + b" " * MIB + b"}"
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_oversized_chunked(world: World) -> str:
    """Over 1 MiB with no Content-Length (chunked): refused once the body grows past it."""
    chunk = b" " * (64 * 1024)

    async def stream() -> Any:
        yield b"{"
        for _ in range(17):
            yield chunk
        yield b"}"

    headers = {"Content-Type": "application/json",
               "X-Slack-Request-Timestamp": str(int(time.time())),
               "X-Slack-Signature": "v0=" + "0" * 64}
    response = await world.http.post(world.slack_events_url, content=stream(),
                                      headers=headers)
    return _http_answer(response)


async def slack_form_without_command(world: World) -> str:
    body = b"text=hello&user_id=U0JOHN"
    headers = world.slack_headers(body, content_type="application/x-www-form-urlencoded")
    return _http_answer(await world.post_slack(body, headers, path="/slack/commands"))


async def slack_unknown_path(world: World) -> str:
    body = _url_verification()
    return _http_answer(await world.post_slack(body, world.slack_headers(body),
                                               path="/slack/../../etc/passwd"))


async def slack_wrong_method(world: World) -> str:
    return _http_answer(await world.http.get(world.slack_events_url))


async def slack_unhandled_event_type(world: World) -> str:
    """A signed event_callback of a type the adapter does not handle: acked, ignored."""
    body = _event_callback(event_id=unique("EvIgnored"),
                           event={"type": "team_join", "user": {"id": "U0NEW"}})
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_message_outside_a_session(world: World) -> str:
    """A signed message in #general (not a federated conversation): acked, not routed."""
    body = _event_callback(event_id=unique("EvGeneral"))
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: deeper than the JSON decoder's recursion limit (about 1,000), still a small body (4 KB)
DEPTH = 2000

async def slack_deeply_nested(world: World) -> str:
    body = (b'{"type": "event_callback", "event_id": "EvDeep", "team_id": "T0ACME", '
            b'"event": {"type": "message", "x": ' + _deep_json(DEPTH) + b"}}")
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_unknown_signature_version(world: World) -> str:
    body = _url_verification()
    headers = world.slack_headers(body)
    headers["X-Slack-Signature"] = headers["X-Slack-Signature"].replace("v0=", "v1=")
    return _http_answer(await world.post_slack(body, headers))


async def slack_form_too_many_fields(world: World) -> str:
    body = b"&".join(b"f%d=1" % i for i in range(300)) + b"&command=/interlink"
    headers = world.slack_headers(body, content_type="application/x-www-form-urlencoded")
    return _http_answer(await world.post_slack(body, headers, path="/slack/commands"))


async def slack_command_bad_address(world: World) -> str:
    body = (b"command=/interlink&text=add%20not-an-address&user_id=U0JOHN&team_id=T0ACME"
            b"&channel_id=C0GENERAL")
    headers = world.slack_headers(body, content_type="application/x-www-form-urlencoded")
    response = await world.post_slack(body, headers, path="/slack/commands")
    answer = _http_answer(response)
    ephemeral = response.json().get("response_type") == "ephemeral"
    return f"{answer} {'ephemeral' if ephemeral else 'not ephemeral'}"


async def slack_app_rate_limited(world: World) -> str:
    body = json.dumps({"type": "app_rate_limited", "team_id": "T0ACME",
                       "minute_rate_limited": int(time.time()) // 60 * 60,
                       "api_app_id": "A0INTERLINK"}).encode()
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


async def slack_uninstalled_team(world: World) -> str:
    body = _event_callback(event_id=unique("EvOther")).replace(b"T0ACME", b"T0OTHER")
    return _http_answer(await world.post_slack(body, world.slack_headers(body)))


SLACK_CASES = [
    Case("slack: no signature headers", "slack", "401 invalid_signature", slack_no_signature),
    Case("slack: forged signature", "slack", "401 invalid_signature", slack_forged_signature),
    Case("slack: signed with another secret", "slack", "401 invalid_signature",
         slack_signed_with_another_secret),
    Case("slack: stale timestamp (6 min old)", "slack", "401 invalid_signature",
         slack_stale_timestamp),
    Case("slack: timestamp 6 min in the future", "slack", "401 invalid_signature",
         slack_future_timestamp),
    Case("slack: no timestamp header", "slack", "401 invalid_signature",
         slack_no_timestamp_header),
    Case("slack: timestamp not a number", "slack", "401 invalid_signature",
         slack_timestamp_not_a_number),
    Case("slack: no Content-Type (signed JSON)", "slack", "200 challenge=no-ctype",
         slack_no_content_type),
    Case("slack: malformed JSON", "slack", "400 invalid_json", slack_malformed_json),
    Case("slack: body not UTF-8", "slack", "401 invalid_signature", slack_not_utf8),
    Case("slack: JSON array, not an object", "slack", "400 invalid_body",
         slack_json_not_an_object),
    Case("slack: type not a string", "slack", "400 invalid_body", slack_type_not_a_string),
    Case("slack: event_id a number", "slack", "400 invalid_event", slack_event_id_wrong_type),
    Case("slack: event a string", "slack", "400 invalid_event", slack_event_wrong_type),
    Case("slack: event.ts a number", "slack", "400 invalid_event", slack_event_ts_wrong_type),
    Case("slack: event_callback without event_id", "slack", "400 invalid_event",
         slack_event_callback_without_event_id),
    Case("slack: url_verification challenge a list", "slack", "400 invalid_challenge",
         slack_challenge_wrong_type),
    Case("slack: body > 1 MiB (Content-Length)", "slack", "413 request_too_large",
         slack_oversized_declared),
    Case("slack: body > 1 MiB (chunked)", "slack", "413 request_too_large",
         slack_oversized_chunked),
    Case("slack: form without command", "slack", "400 invalid_command",
         slack_form_without_command),
    Case("slack: unknown path", "slack", "404 not_found", slack_unknown_path),
    Case("slack: GET /slack/events", "slack", "405 method_not_allowed", slack_wrong_method),
    Case("slack: unhandled event type (signed)", "slack", "200", slack_unhandled_event_type),
    Case("slack: message outside any session (signed)", "slack", "200",
         slack_message_outside_a_session),
    Case("slack: event from a team not installed (signed)", "slack", "200",
         slack_uninstalled_team),
    Case("slack: app_rate_limited (signed)", "slack", "200", slack_app_rate_limited),
    Case("slack: signature version v1=", "slack", "401 invalid_signature",
         slack_unknown_signature_version),
    Case("slack: form with 300 fields", "slack", "400 invalid_form_data",
         slack_form_too_many_fields),
    Case("slack: /interlink add not-an-address", "slack", "200 ephemeral",
         slack_command_bad_address),
    Case(f"slack: signed JSON nested {DEPTH} deep", "slack", "400 *", slack_deeply_nested),
]


# -- webhook endpoint --------------------------------------------------------------------------


def _message(to: str, *, sender: str = WENDY, text: str = "hello") -> dict[str, Any]:
    return {"type": "message.created",
            "data": {"id": unique("p"), "from": sender, "to": to, "text": text}}


async def webhook_missing_headers(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    return _http_answer(await world.wendy.post(body, headers={
        "content-type": "application/json"}))


async def webhook_missing_signature(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    headers = world.wendy.signed(body)
    del headers["webhook-signature"]
    return _http_answer(await world.wendy.post(body, headers=headers))


async def webhook_forged_signature(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    headers = world.wendy.signed(body)
    headers["webhook-signature"] = "v1," + "A" * 43 + "="
    return _http_answer(await world.wendy.post(body, headers=headers))


async def webhook_body_changed_after_signing(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    headers = world.wendy.signed(body)
    return _http_answer(await world.wendy.post(body.replace(b"hello", b"HELLO"),
                                               headers=headers))


async def webhook_stale_timestamp(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    headers = world.wendy.signed(body, when=datetime.now(UTC) - timedelta(minutes=6))
    return _http_answer(await world.wendy.post(body, headers=headers))


async def webhook_timestamp_not_a_number(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    headers = world.wendy.signed(body)
    headers["webhook-timestamp"] = "soon"
    return _http_answer(await world.wendy.post(body, headers=headers))


async def webhook_malformed_json(world: World) -> str:
    return _http_answer(await world.wendy.post(b'{"type": "message.created", "data": '))


async def webhook_unknown_field(world: World) -> str:
    payload = _message(JOHN)
    payload["data"]["colour"] = "blue"
    return _http_answer(await world.wendy.post(payload))


async def webhook_unknown_type(world: World) -> str:
    return _http_answer(await world.wendy.post({"type": "message.exploded",
                                                "data": {"from": WENDY, "to": JOHN}}))


async def webhook_field_wrong_type(world: World) -> str:
    payload = _message(JOHN)
    payload["data"]["text"] = 42
    return _http_answer(await world.wendy.post(payload))


async def webhook_bad_address(world: World) -> str:
    return _http_answer(await world.wendy.post(_message("not an address")))


async def webhook_empty_message(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(JOHN, text="   ")))


async def webhook_oversized(world: World) -> str:
    payload = _message(JOHN, text="x" * (WEBHOOK_MAX_BODY + 1))
    return _http_answer(await world.wendy.post(payload))


async def webhook_sender_not_served(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(JOHN, sender=PETER)))


async def webhook_unknown_user(world: World) -> str:
    return _http_answer(await world.wendy.post(_message("nobody@acme.localhost")))


async def webhook_no_route(world: World) -> str:
    return _http_answer(await world.wendy.post(_message("someone@nowhere.example")))


async def webhook_no_agreement(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(PETER)))


async def webhook_not_a_contact(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(JOHN)))


async def webhook_user_denied(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(MARY)))


async def webhook_wrong_path(world: World) -> str:
    url = world.wendy.url.replace("/webhook", "/webhook/../admin")
    return _http_answer(await world.http.post(url, content=b"{}"))


async def webhook_long_id(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(JOHN), webhook_id="msg_" + "a" * 300))


async def webhook_only_unknown_versions(world: World) -> str:
    body = msgspec.json.encode(_message(JOHN))
    headers = world.wendy.signed(body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    return _http_answer(await world.wendy.post(body, headers=headers))


async def webhook_rich_too_deep(world: World) -> str:
    blocks: list[Any] = [{"type": "paragraph", "inlines": [{"type": "text", "text": "x"}]}]
    for _ in range(20):
        blocks = [{"type": "quote", "blocks": blocks}]
    payload = _message(JOHN)
    payload["data"]["rich"] = {"blocks": blocks}
    return _http_answer(await world.wendy.post(payload))


async def webhook_long_emoji(world: World) -> str:
    return _http_answer(await world.wendy.post({
        "type": "reaction.added",
        "data": {"from": WENDY, "to": JOHN, "target": "p-1", "emoji": "x" * 10_000}}))


async def webhook_nul_in_address(world: World) -> str:
    return _http_answer(await world.wendy.post(_message(JOHN + "\u0000")))


async def webhook_deeply_nested(world: World) -> str:
    body = (b'{"x": ' + _deep_json(DEPTH) + b', "type": "message.created", "data": {}}')
    return _http_answer(await world.wendy.post(body))


WEBHOOK_CASES = [
    Case("webhook: no signature headers", "webhook", "401 missing-headers",
         webhook_missing_headers),
    Case("webhook: no webhook-signature", "webhook", "401 missing-headers",
         webhook_missing_signature),
    Case("webhook: forged signature", "webhook", "401 invalid-signature",
         webhook_forged_signature),
    Case("webhook: body changed after signing", "webhook", "401 invalid-signature",
         webhook_body_changed_after_signing),
    Case("webhook: stale timestamp (6 min old)", "webhook", "401 stale-timestamp",
         webhook_stale_timestamp),
    Case("webhook: timestamp not a number", "webhook", "401 invalid-timestamp",
         webhook_timestamp_not_a_number),
    Case("webhook: malformed JSON", "webhook", "400 invalid-json", webhook_malformed_json),
    Case("webhook: unknown field", "webhook", "400 invalid-payload", webhook_unknown_field),
    Case("webhook: unknown type", "webhook", "400 invalid-payload", webhook_unknown_type),
    Case("webhook: text a number", "webhook", "400 invalid-payload", webhook_field_wrong_type),
    Case("webhook: bad address", "webhook", "400 invalid-address", webhook_bad_address),
    Case("webhook: empty message", "webhook", "400 invalid-payload", webhook_empty_message),
    Case("webhook: body > max_body_bytes", "webhook", "413 request-too-large",
         webhook_oversized),
    Case("webhook: sender not served", "webhook", "403 sender-not-served",
         webhook_sender_not_served),
    Case("webhook: unknown user", "webhook", "404 unknown-address", webhook_unknown_user),
    Case("webhook: no route for the domain", "webhook", "404 no-route:nowhere.example",
         webhook_no_route),
    Case("webhook: no agreement (not federated)", "webhook", "403 no-agreement",
         webhook_no_agreement),
    Case("webhook: not a contact", "webhook", "403 not-a-contact", webhook_not_a_contact),
    Case("webhook: receiver denied by policy", "webhook", f"403 user-denied:{MARY}",
         webhook_user_denied),
    Case("webhook: another path", "webhook", "404 not-found", webhook_wrong_path),
    Case("webhook: webhook-id of 304 chars", "webhook", "401 invalid-id", webhook_long_id),
    Case("webhook: only v1a signatures", "webhook", "401 invalid-signature",
         webhook_only_unknown_versions),
    Case("webhook: rich text nested 20 deep", "webhook", "400 invalid-payload",
         webhook_rich_too_deep),
    Case("webhook: emoji of 10,000 chars", "webhook", "400 invalid-payload",
         webhook_long_emoji),
    Case("webhook: NUL in an address", "webhook", "400 invalid-address",
         webhook_nul_in_address),
    Case(f"webhook: signed JSON nested {DEPTH} deep", "webhook", "400 *",
         webhook_deeply_nested),
]


# -- XMPP, as Peter with a real client ---------------------------------------------------------


async def _xmpp_error(world: World, xml: str, stanza_id: str, kind: str = "message") -> str:
    """Send ``xml`` as Peter; the answer to ``stanza_id``: ``"<condition> (<type>)"``."""
    peter = world.peter
    assert peter is not None
    await peter.send_raw(xml)
    while True:
        stanza = await peter.next_stanza(kind, timeout=10.0)
        if stanza.id != stanza_id:
            continue
        if stanza.type != "error":
            return f"no error: type={stanza.type or 'normal'}"
        return f"{stanza.error_condition} ({stanza.error_type})"


def _chat(to: str, body: str = "hello", *, extra: str = "") -> tuple[str, str]:
    stanza_id = unique("x")
    return (f"<message type='chat' to='{to}' id='{stanza_id}'><body>{body}</body>{extra}"
            f"</message>", stanza_id)


async def xmpp_escaping_leading_space(world: World) -> str:
    return await _xmpp_error(world, *_chat("\\20john@acme.localhost"))


async def xmpp_escaping_trailing_space(world: World) -> str:
    return await _xmpp_error(world, *_chat("john\\20@acme.localhost"))


async def xmpp_unknown_user(world: World) -> str:
    return await _xmpp_error(world, *_chat("nobody@acme.localhost"))


async def xmpp_component_domain_itself(world: World) -> str:
    return await _xmpp_error(world, *_chat("acme.localhost"))


async def xmpp_not_a_contact(world: World) -> str:
    return await _xmpp_error(world, *_chat(JOHN))


async def xmpp_policy_denied(world: World) -> str:
    return await _xmpp_error(world, *_chat(MARY))


async def xmpp_oversized_body(world: World) -> str:
    return await _xmpp_error(world, *_chat(JOHN, "x" * (XMPP_MAX_BODY + 1)))


async def xmpp_unknown_payload(world: World) -> str:
    stanza_id = unique("x")
    xml = (f"<message type='chat' to='{JOHN}' id='{stanza_id}'>"
           f"<frobnicate xmlns='urn:example:unknown'><deep/></frobnicate></message>")
    return await _xmpp_error(world, xml, stanza_id)


async def xmpp_correction_without_target(world: World) -> str:
    return await _xmpp_error(world, *_chat(
        JOHN, extra="<replace xmlns='urn:xmpp:message-correct:0'/>"))


async def xmpp_iq_set(world: World) -> str:
    stanza_id = unique("iq")
    xml = (f"<iq type='set' to='{JOHN}' id='{stanza_id}'>"
           f"<query xmlns='jabber:iq:private'/></iq>")
    return await _xmpp_error(world, xml, stanza_id, kind="iq")


async def xmpp_iq_two_children(world: World) -> str:
    stanza_id = unique("iq")
    xml = (f"<iq type='get' to='{JOHN}' id='{stanza_id}'>"
           f"<ping xmlns='urn:xmpp:ping'/><vCard xmlns='vcard-temp'/></iq>")
    return await _xmpp_error(world, xml, stanza_id, kind="iq")


async def _xmpp_before_ping(world: World, xml: str) -> str:
    """Send ``xml`` then a ping to the component as Peter; the errors that came back
    before the ping's answer (``"no answer"``: ignored, as defined)."""
    peter = world.peter
    assert peter is not None
    ping_id = unique("ping")
    await peter.send_raw(xml + f"<iq type='get' to='acme.localhost' id='{ping_id}'>"
                               f"<ping xmlns='urn:xmpp:ping'/></iq>")
    errors: list[str] = []
    while True:
        stanza = await peter.next_stanza("any", timeout=10.0)
        if stanza.kind == "iq" and stanza.id == ping_id:
            return ", ".join(errors) or "no answer"
        if stanza.type == "error":
            errors.append(f"{stanza.error_condition} ({stanza.error_type})")


async def xmpp_message_without_id(world: World) -> str:
    return await _xmpp_before_ping(
        world, f"<message type='chat' to='{JOHN}'><body>no id</body></message>")


async def xmpp_groupchat(world: World) -> str:
    return await _xmpp_before_ping(
        world, f"<message type='groupchat' to='{JOHN}' id='{unique('g')}'><body>hi</body>"
               f"</message>")


async def xmpp_error_is_never_answered(world: World) -> str:
    return await _xmpp_before_ping(
        world, f"<message type='error' to='{JOHN}' id='{unique('e')}'><error type='cancel'>"
               f"<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
               f"</message>")


async def xmpp_unknown_message_type(world: World) -> str:
    stanza_id = unique("x")
    return await _xmpp_error(world, f"<message type='bogus' to='{JOHN}' id='{stanza_id}'>"
                                    f"<body>hi</body></message>", stanza_id)


async def xmpp_unknown_presence_type(world: World) -> str:
    stanza_id = unique("x")
    return await _xmpp_error(world, f"<presence type='bogus' to='{JOHN}' id='{stanza_id}'/>",
                             stanza_id, kind="presence")


async def xmpp_oob_without_url(world: World) -> str:
    stanza_id = unique("x")
    return await _xmpp_error(world, f"<message type='chat' to='{JOHN}' id='{stanza_id}'>"
                                    f"<x xmlns='jabber:x:oob'/></message>", stanza_id)


async def xmpp_reactions_without_target(world: World) -> str:
    stanza_id = unique("x")
    return await _xmpp_error(world, f"<message type='chat' to='{JOHN}' id='{stanza_id}'>"
                                    f"<reactions xmlns='urn:xmpp:reactions:0'>"
                                    f"<reaction>x</reaction></reactions></message>", stanza_id)


async def xmpp_subscribe_unknown_user(world: World) -> str:
    stanza_id = unique("x")
    return await _xmpp_error(world, f"<presence type='subscribe' to='nobody@acme.localhost' "
                                    f"id='{stanza_id}'/>", stanza_id, kind="presence")


async def xmpp_long_localpart(world: World) -> str:
    return await _xmpp_error(world, *_chat("a" * 1000 + "@acme.localhost"))


async def xmpp_escaped_address_in_domain_mode(world: World) -> str:
    return await _xmpp_error(world, *_chat("john\\40acme.localhost@acme.localhost"))


async def xmpp_iq_without_child(world: World) -> str:
    stanza_id = unique("iq")
    return await _xmpp_error(world, f"<iq type='get' to='{JOHN}' id='{stanza_id}'/>",
                             stanza_id, kind="iq")


XMPP_CASES = [
    Case("xmpp: XEP-0106 localpart starting with \\20", "xmpp", "jid-malformed (modify)",
         xmpp_escaping_leading_space),
    Case("xmpp: XEP-0106 localpart ending with \\20", "xmpp", "jid-malformed (modify)",
         xmpp_escaping_trailing_space),
    Case("xmpp: unknown user of the component's domain", "xmpp", "item-not-found (cancel)",
         xmpp_unknown_user),
    Case("xmpp: message to the component itself", "xmpp", "service-unavailable (cancel)",
         xmpp_component_domain_itself),
    Case("xmpp: not a contact", "xmpp", "subscription-required (auth)", xmpp_not_a_contact),
    Case("xmpp: receiver denied by policy", "xmpp", "not-allowed (cancel)",
         xmpp_policy_denied),
    Case("xmpp: body > max_body_bytes", "xmpp", "not-acceptable (modify)",
         xmpp_oversized_body),
    Case("xmpp: unknown payload, no body", "xmpp", "bad-request (modify)",
         xmpp_unknown_payload),
    Case("xmpp: correction without target id", "xmpp", "bad-request (modify)",
         xmpp_correction_without_target),
    Case("xmpp: iq set to a user", "xmpp", "service-unavailable (cancel)", xmpp_iq_set),
    Case("xmpp: iq get with two children", "xmpp", "bad-request (modify)",
         xmpp_iq_two_children),
    Case("xmpp: iq get without a child", "xmpp", "bad-request (modify)",
         xmpp_iq_without_child),
    Case("xmpp: message without id", "xmpp", "bad-request (modify)", xmpp_message_without_id),
    Case("xmpp: unknown message type", "xmpp", "bad-request (modify)",
         xmpp_unknown_message_type),
    Case("xmpp: unknown presence type", "xmpp", "bad-request (modify)",
         xmpp_unknown_presence_type),
    Case("xmpp: OOB without URL", "xmpp", "bad-request (modify)", xmpp_oob_without_url),
    Case("xmpp: reactions without target id", "xmpp", "bad-request (modify)",
         xmpp_reactions_without_target),
    Case("xmpp: subscribe to an unknown user", "xmpp", "item-not-found (cancel)",
         xmpp_subscribe_unknown_user),
    Case("xmpp: 1000-char localpart", "xmpp", "jid-malformed (modify)", xmpp_long_localpart),
    Case("xmpp: escaped address (hub JID) in domain mode", "xmpp", "jid-malformed (modify)",
         xmpp_escaped_address_in_domain_mode),
    Case("xmpp: groupchat message (ignored)", "xmpp", "no answer", xmpp_groupchat),
    Case("xmpp: error stanza (never answered)", "xmpp", "no answer",
         xmpp_error_is_never_answered),
]


# -- control API -------------------------------------------------------------------------------


async def _control(world: World, method: str, path: str, *, token: str | None = CONTROL_TOKEN,
                   headers: dict[str, str] | None = None, content: bytes | None = None) -> str:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    response = await world.http.request(method, world.control_url + path, headers=sent,
                                        content=content)
    return _http_answer(response)


async def control_no_token(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions", token=None)


async def control_wrong_token(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions", token="not-the-token")


async def control_token_prefix(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions", token=CONTROL_TOKEN[:-1])


async def control_basic_auth(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions", token=None,
                          headers={"Authorization": f"Basic {CONTROL_TOKEN}"})


async def control_token_in_query(world: World) -> str:
    return await _control(world, "GET", f"/v1/sessions?token={CONTROL_TOKEN}"
                          f"&access_token={CONTROL_TOKEN}", token=None)


async def control_huge_limit(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?limit=1000000000")


async def control_limit_above_cap(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?limit=501")


async def control_limit_zero(world: World) -> str:
    return await _control(world, "GET", "/v1/contacts?limit=0")


async def control_limit_not_a_number(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?limit=1e9")


async def control_limit_at_cap(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?limit=500")


async def control_bad_state(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?state=../../etc")


async def control_path_traversal(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions/..%2f..%2fetc%2fpasswd")


async def control_double_encoded(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions/..%252f..%252fetc")


async def control_nul_id(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions/%00")


async def control_long_id(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions/" + "s" * 4000)


async def control_long_id_operation(world: World) -> str:
    return await _control(world, "POST", "/v1/sessions/" + "s" * 4000 + "/restart")


async def control_contact_nul(world: World) -> str:
    return await _control(world, "GET", "/v1/contacts/%00")


async def control_contact_long(world: World) -> str:
    return await _control(world, "GET", "/v1/contacts/" + "a" * 4000 + "@acme.localhost")


async def control_unknown_operation(world: World) -> str:
    return await _control(world, "POST", f"/v1/contacts/{PETER}/explode")


async def control_say_malformed(world: World) -> str:
    return await _control(world, "POST", "/v1/say", content=b'{"source": ')


async def control_say_oversized(world: World) -> str:
    return await _control(world, "POST", "/v1/say", content=b"x" * (64 * 1024 + 1))


async def control_unknown_route(world: World) -> str:
    return await _control(world, "GET", "/v2/../v1/../../etc/passwd")


async def control_negative_limit(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?limit=-1")


async def control_nul_user(world: World) -> str:
    return await _control(world, "GET", "/v1/sessions?user=%00")


async def control_dot_dot_contact(world: World) -> str:
    return await _control(world, "GET", "/v1/contacts/%2e%2e")


async def control_say_unknown_field(world: World) -> str:
    return await _control(world, "POST", "/v1/say", content=json.dumps({
        "source": JOHN, "destination": PETER, "text": "x", "as_admin": True}).encode())


async def control_say_deeply_nested(world: World) -> str:
    return await _control(world, "POST", "/v1/say",
                          content=b'{"x": ' + _deep_json(DEPTH) + b"}")


async def control_say_as_webhook_user(world: World) -> str:
    return await _control(world, "POST", "/v1/say", content=json.dumps({
        "source": WENDY, "destination": JOHN, "text": "x"}).encode())


CONTROL_CASES = [
    Case("control: no token", "control", "401 unauthorized", control_no_token),
    Case("control: wrong token", "control", "401 unauthorized", control_wrong_token),
    Case("control: token minus its last character", "control", "401 unauthorized",
         control_token_prefix),
    Case("control: token as Basic auth", "control", "401 unauthorized", control_basic_auth),
    Case("control: token in the query string", "control", "401 unauthorized",
         control_token_in_query),
    Case("control: ?limit=1000000000", "control", "400 bad_request", control_huge_limit),
    Case("control: ?limit=501 (cap 500)", "control", "400 bad_request",
         control_limit_above_cap),
    Case("control: ?limit=0", "control", "400 bad_request", control_limit_zero),
    Case("control: ?limit=1e9", "control", "400 bad_request", control_limit_not_a_number),
    Case("control: ?limit=500 (the cap)", "control", "200", control_limit_at_cap),
    Case("control: ?state=../../etc", "control", "400 bad_request", control_bad_state),
    Case("control: /sessions/..%2f..%2fetc%2fpasswd", "control", "404 not_found",
         control_path_traversal),
    Case("control: /sessions/..%252f..%252fetc", "control", "404 not_found",
         control_double_encoded),
    Case("control: /sessions/%00", "control", "404 not_found", control_nul_id),
    Case("control: /sessions/<4000 chars>", "control", "404 not_found", control_long_id),
    Case("control: POST /sessions/<4000 chars>/restart", "control", "404 not_found",
         control_long_id_operation),
    Case("control: /contacts/%00", "control", "400 bad_request", control_contact_nul),
    Case("control: /contacts/<4000-char address>", "control", "400 bad_request",
         control_contact_long),
    Case("control: unknown operation", "control", "404 not_found",
         control_unknown_operation),
    Case("control: say with malformed JSON", "control", "400 bad_request",
         control_say_malformed),
    Case("control: say body > 64 KiB", "control", "413 payload_too_large",
         control_say_oversized),
    Case("control: /v2/../v1/../../etc/passwd", "control", "404 not_found",
         control_unknown_route),
    Case("control: ?limit=-1", "control", "400 bad_request", control_negative_limit),
    Case("control: ?user=%00", "control", "400 bad_request", control_nul_user),
    Case("control: /contacts/%2e%2e", "control", "400 bad_request", control_dot_dot_contact),
    Case("control: say with an unknown field", "control", "400 bad_request",
         control_say_unknown_field),
    Case(f"control: say with JSON nested {DEPTH} deep", "control", "400 bad_request",
         control_say_deeply_nested),
    Case("control: say as a webhook user", "control", "409 not_loopback",
         control_say_as_webhook_user),
]

#: the rows answered before the after-check, in the order they run
CASES: list[Case] = [*SLACK_CASES, *WEBHOOK_CASES, *XMPP_CASES, *CONTROL_CASES]
