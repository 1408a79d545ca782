"""The run: every case of the table against one engine, then the replays and the
after-check (the engine still routes both ways), then a graceful stop.

Rows that need the conversation the after-check opens (the replays) are written by
:func:`after_check` itself; their expected answers are below with the reasons.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ._cases import CASES, Case
from ._world import JOHN, PETER, WENDY, EngineLog, World, running_world, unique

#: seconds for one row's answer
ROW_TIMEOUT = 15.0
#: seconds for the whole after-check (contact, replays, a message each way)
AFTER_TIMEOUT = 40.0


@dataclass
class Row:
    case: str
    surface: str
    expected: str
    actual: str
    xfail: str = ""

    @property
    def passed(self) -> bool:
        """The actual answer is the expected one (``"400 *"``: any answer with status 400)."""
        if self.expected.endswith(" *"):
            return self.actual.split(" ")[0] == self.expected.split(" ")[0]
        return self.actual == self.expected


#: rows the after-check writes, with their defined answers
REPLAY_SLACK = Row(
    "slack: replayed signed event_callback", "slack",
    # both deliveries answered 200 (the second as a duplicate), routed once
    "200 then 200; delivered 1x", "")
REPLAY_WEBHOOK = Row(
    "webhook: replayed webhook-id", "webhook",
    "202 accepted then 200 duplicate; accepted 1x, delivered 1x", "")
AFTER_SLACK_TO_XMPP = Row("after-check: John (Slack) -> Peter (XMPP)", "routing",
                          "delivered", "")
AFTER_XMPP_TO_SLACK = Row("after-check: Peter (XMPP) -> John (Slack)", "routing",
                          "delivered", "")
AFTER_ROWS = [REPLAY_SLACK, REPLAY_WEBHOOK, AFTER_SLACK_TO_XMPP, AFTER_XMPP_TO_SLACK]


@dataclass
class SuiteResult:
    rows: list[Row] = field(default_factory=list)
    exit_code: int | None = None
    tracebacks: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    log_lines: int = 0

    def row(self, case: str) -> Row:
        (found,) = [r for r in self.rows if r.case == case]
        return found


async def run_case(world: World, case: Case) -> Row:
    try:
        with trio.fail_after(ROW_TIMEOUT):
            actual = await case.act(world)
    except trio.TooSlowError:
        actual = "no answer in time"
    except Exception as exc:  # a dropped connection is an answer too: record it
        actual = f"error: {type(exc).__name__}"
    return Row(case.name, case.surface, case.expected, actual, case.xfail)


async def run_suite(tmp: Path) -> SuiteResult:
    result = SuiteResult()
    log: EngineLog | None = None
    async with running_world(tmp) as world:
        log = world.log
        for case in CASES:
            result.rows.append(await run_case(world, case))
        after = [Row(r.case, r.surface, r.expected, "not run") for r in AFTER_ROWS]
        result.rows.extend(after)
        facts: dict[str, str] = {}
        try:
            with trio.fail_after(AFTER_TIMEOUT):
                await after_check(world, {r.case: r for r in after}, facts)
        except trio.TooSlowError:
            pass  # the rows not reached say "not run" or what they saw so far
    assert log is not None
    if "webhook_answers" in facts:
        # counted again once the engine has stopped: a graceful stop drains every mailbox,
        # so a replay that had been routed would have been delivered by now
        webhook_id, event_id = facts["webhook_id"], facts["event_id"]
        accepted = len(log.find(lambda r: r.get("msg") == "webhook accepted"
                                and r.get("webhook_id") == webhook_id))
        delivered = len(log.find(lambda r: r.get("msg") == "slack delivered"
                                 and r.get("event_id") == event_id))
        result.row(REPLAY_WEBHOOK.case).actual = (
            f"{facts['webhook_answers']}; accepted {accepted}x, delivered {delivered}x")
    result.exit_code = log.process.returncode
    result.tracebacks = log.tracebacks()
    result.errors = log.errors()
    result.log_lines = len(log.raw)
    return result


async def after_check(world: World, rows: dict[str, Row], facts: dict[str, str]) -> None:
    """Connect John and Peter, replay a Slack event and a webhook, and route a normal
    message each way; each step writes its row's actual answer."""
    peter = world.peter
    assert peter is not None
    log = world.log

    # John adds Peter; Peter accepts: the Slack side opens John's private conversation
    asked = await world.john_command(f"add {PETER}")
    assert asked.get("ok"), asked
    while True:
        stanza = await peter.next_stanza("presence", timeout=AFTER_TIMEOUT)
        if stanza.type == "subscribe" and stanza.sender.startswith(JOHN):
            break
    mark = len(log.records)
    await peter.send_raw(f"<presence to='{JOHN}' type='subscribed'/>")
    await log.wait_for(lambda r: r.get("msg") == "slack delivered"
                       and r.get("kind") == "contact" and r.get("destination") == JOHN,
                       start=mark)
    channel = await _johns_channel(world)

    # Slack: one validly signed event_callback posted twice (a retry of Slack's)
    marker = unique("replayed")
    body = json.dumps({
        "token": "legacy", "team_id": "T0ACME", "api_app_id": "A0INTERLINK",
        "type": "event_callback", "event_id": unique("EvReplay"),
        "event_time": int(time.time()),
        "event": {"type": "message", "channel": channel, "user": "U0JOHN", "text": marker,
                  "ts": f"{time.time():.6f}", "channel_type": "group"}}).encode()
    first = await world.post_slack(body, world.slack_headers(body))
    again = await world.post_slack(body, world.slack_headers(body))
    statuses = f"{first.status_code} then {again.status_code}"
    rows[REPLAY_SLACK.case].actual = f"{statuses}; delivered ?"

    # a normal message from John through the sandbox is the barrier: the session keeps
    # order, so every copy of the replayed event reaches Peter before it
    barrier = unique("john-says")
    await world.as_john("chat.postMessage", channel=channel, text=barrier)
    copies = 0
    while True:
        stanza = await peter.next_stanza("message", timeout=AFTER_TIMEOUT)
        if not stanza.sender.startswith(JOHN) or stanza.type == "error":
            continue
        if stanza.body == marker:
            copies += 1
        if stanza.body == barrier:
            break
    rows[REPLAY_SLACK.case].actual = f"{statuses}; delivered {copies}x"
    rows[AFTER_SLACK_TO_XMPP.case].actual = "delivered"

    # XMPP -> Slack: Peter answers, John's conversation shows it
    answer = unique("peter-says")
    stanza_id = unique("p")
    mark = len(log.records)
    await peter.send_raw(f"<message type='chat' to='{JOHN}' id='{stanza_id}'>"
                         f"<body>{answer}</body></message>")
    await log.wait_for(lambda r: r.get("msg") == "slack delivered" and r.get("kind") == "im"
                       and r.get("destination") == JOHN, start=mark)
    history = await world.as_john("conversations.history", channel=channel)
    texts = [m.get("text") for m in history["messages"]]
    rows[AFTER_XMPP_TO_SLACK.case].actual = "delivered" if answer in texts else \
        "not in John's conversation"

    # webhook: a contact request from Wendy, then the same webhook-id again
    payload = {"type": "contact.requested", "data": {"from": WENDY, "to": JOHN}}
    webhook_id = f"msg_{secrets.token_hex(8)}"
    accepted = await world.wendy.post(payload, webhook_id=webhook_id)
    replayed = await world.wendy.post(payload, webhook_id=webhook_id)
    event_id = accepted.json().get("id", "") if accepted.status_code == 202 else ""
    answers = (f"{accepted.status_code} {accepted.json().get('status', '')} then "
               f"{replayed.status_code} {replayed.json().get('status', '')}")
    facts.update(webhook_id=webhook_id, event_id=event_id, webhook_answers=answers)
    rows[REPLAY_WEBHOOK.case].actual = f"{answers}; counted after the stop"
    await log.wait_for(lambda r: r.get("msg") == "slack delivered"
                       and r.get("event_id") == event_id)


async def _johns_channel(world: World) -> str:
    listed = await world.as_john("conversations.list", types="private_channel")
    name = "ext-" + PETER.replace("@", "-").replace(".", "-")
    (channel,) = [str(c["id"]) for c in listed["channels"] if c["name"] == name]
    return channel
