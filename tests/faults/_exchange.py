"""One row's traffic: John and Peter each send numbered messages to the other, at a
steady pace, while the row's fault runs; then the suite waits until every message is
accounted for and classifies it (:mod:`._tally`).

What each side sees and how it is read:

- **Slack** (John's conversation with Peter, ``G0P<i>``): a message Interlink's bot
  posts is Peter's (its text carries his number) or a failure notice about one of
  John's (":warning: Not delivered to ... (reason)"); John's own posts are ignored.
- **XMPP** (Peter's stream): a chat message from John's JID is John's message, or, when
  its body starts with "⚠", Interlink's failure notice about one of Peter's (matched by
  its XEP-0461 reply when it has one); an error stanza names Peter's message by its id
  (Prosody bounces a message while the component is away; Interlink refuses one it
  cannot take).
- **The crashing session** (``G0C<i>``, John and ``crash@loop.localhost``, which echoes
  what it gets): an echo is the delivery of John's message; a notice is its failure.

Each direction can be paused (:meth:`Exchange.pause`): the sender stops before its next
message, and the pause returns once all it sent is accounted for. Rows pause a sender
around a fault that would cut an XMPP stream while one of its stanzas is on the wire
(see :mod:`._rows`).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from adapters.slack.sandbox._state import Message as SlackMessage

from ._tally import Notice, Stream, parse_text, sent_time_of, text_of
from ._world import BOT, Deployment, Pair
from ._xmpp import NotConnected, Stanza, XmppPeer

_REASON = re.compile(r"could not be delivered \(([^)]*)\)")
_SENT_AT = re.compile(r"sent \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
SLACK_TO_XMPP = "slack → xmpp"
XMPP_TO_SLACK = "xmpp → slack"
SLACK_TO_CRASHING = "slack → crashing session"


def reason_of(text: str) -> str:
    """The reason a failure notice gives (its sending time left out: one row per reason)."""
    found = _REASON.search(text)
    return _SENT_AT.sub("sent <time>", found.group(1)) if found else "unstated"


#: seconds for each fence to arrive
FENCE_TIMEOUT = 60.0
#: seconds after which Peter's bounced fence is sent again
FENCE_RESEND_S = 0.5


class FenceMissing(Exception):
    """A direction's fence did not arrive in time."""


class Gate:
    """Open: the sender goes on; closed: it waits before its next message."""

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()

    def close(self) -> None:
        if self._open.is_set():
            self._open = trio.Event()

    def open(self) -> None:
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()


@dataclass
class Direction:
    name: str
    stream: Stream
    gate: Gate = field(default_factory=Gate)
    #: the fence (sent after the row) arrived
    fenced: trio.Event = field(default_factory=trio.Event)
    #: the sender sent its last message
    done: trio.Event = field(default_factory=trio.Event)
    #: Interlink's failure notices on XMPP with an XEP-0461 reply to the failed message,
    #: and without one
    named_notices: int = 0
    unnamed_notices: int = 0


class Exchange:
    """John and Peter of one pair, both directions of one row (and the crashing one)."""

    def __init__(self, world: Deployment, pair: Pair, row: str, *, count: int,
                 interval: float, crashing: bool = False) -> None:
        self.world = world
        self.pair = pair
        self.row = row
        self.count = count
        self.interval = interval
        self.slack_to_xmpp = Direction(SLACK_TO_XMPP, Stream(f"{row}s"))
        self.xmpp_to_slack = Direction(XMPP_TO_SLACK, Stream(f"{row}x", receipts=True))
        self.crashing: Direction | None = Direction(SLACK_TO_CRASHING, Stream(f"{row}c")) \
            if crashing else None
        self.peter: XmppPeer | None = None
        #: Peter's stanza ids -> his message numbers
        self._ids: dict[str, int] = {}
        self._fence_bounced = trio.Event()

    @property
    def directions(self) -> list[Direction]:
        found = [self.slack_to_xmpp, self.xmpp_to_slack]
        return found + ([self.crashing] if self.crashing is not None else [])

    def fence_tag(self, direction: Direction) -> str:
        return direction.stream.tag + "f"

    # -- observations ---------------------------------------------------------------------
    def _on_slack(self, message: SlackMessage) -> None:
        if message.user != BOT:
            return  # John's own posts
        text = message.text
        if text.startswith(":warning: Not delivered"):
            self.slack_to_xmpp.stream.noticed(Notice(
                at=time.time(), reason=reason_of(text), sent_at=sent_time_of(text)))
            return
        self._arrival(self.xmpp_to_slack, text)

    def _on_crash_channel(self, message: SlackMessage) -> None:
        crashing = self.crashing
        if crashing is None or message.user != BOT:
            return
        text = message.text
        if text.startswith(":warning: Not delivered"):
            crashing.stream.noticed(Notice(at=time.time(), reason=reason_of(text),
                                           sent_at=sent_time_of(text)))
            return
        self._arrival(crashing, text)

    def _on_xmpp(self, stanza: Stanza) -> None:
        if stanza.name != "message" or stanza.sender != self.pair.john:
            return
        stream = self.xmpp_to_slack.stream
        if stanza.receipt_for:
            seq = self._ids.get(stanza.receipt_for)
            if seq is not None:
                stream.receipted.add(seq)
                self.world.changes.notify()
            return
        if stanza.type == "error":
            seq = self._ids.get(stanza.id)
            if seq is None:
                if stanza.id.startswith(self.fence_tag(self.xmpp_to_slack)):
                    self._fence_bounced.set()
                return
            stream.failed_exactly(seq, f"xmpp error {stanza.condition or 'unstated'}")
            self.world.changes.notify()
            return
        if stanza.body.startswith("⚠"):
            seq = self._ids.get(stanza.reply_to) if stanza.reply_to else None
            if seq is not None:
                self.xmpp_to_slack.named_notices += 1
                stream.failed_exactly(seq, reason_of(stanza.body))
            else:
                self.xmpp_to_slack.unnamed_notices += 1
                stream.noticed(Notice(at=stanza.at, reason=reason_of(stanza.body),
                                      sent_at=sent_time_of(stanza.body)))
            self.world.changes.notify()
            return
        self._arrival(self.slack_to_xmpp, stanza.body)
        self.world.changes.notify()

    def _arrival(self, direction: Direction, text: str) -> None:
        if direction.stream.arrived_text(text):
            return
        parsed = parse_text(text)
        if parsed is not None and parsed[0] == self.fence_tag(direction):
            direction.fenced.set()

    # -- running ----------------------------------------------------------------------
    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Peter logged in and both of John's channels watched, for the row's duration."""
        world, pair = self.world, self.pair
        world.watchers[pair.channel] = self._on_slack
        world.watchers[pair.crash_channel] = self._on_crash_channel
        peter = XmppPeer(pair.peter, pair.password, "127.0.0.1", world.prosody.c2s_port,
                         self._on_xmpp)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(peter.run)
                self.peter = peter
                yield
                await peter.close()
                nursery.cancel_scope.cancel()
        finally:
            self.peter = None
            world.watchers.pop(pair.channel, None)
            world.watchers.pop(pair.crash_channel, None)

    async def run_senders(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._john_sends, self.slack_to_xmpp, self.pair.channel)
            nursery.start_soon(self._peter_sends)
            if self.crashing is not None:
                nursery.start_soon(self._john_sends, self.crashing, self.pair.crash_channel)

    async def _john_sends(self, direction: Direction, channel: str) -> None:
        for seq in range(self.count):
            await direction.gate.wait()
            self.world.post_as_john(self.pair, channel, text_of(direction.stream.tag, seq))
            direction.stream.was_sent(seq, time.time())
            self.world.changes.notify()
            await trio.sleep(self.interval)
        direction.done.set()

    async def _peter_sends(self) -> None:
        direction = self.xmpp_to_slack
        for seq in range(self.count):
            await direction.gate.wait()
            await self.peter_send(direction, seq)
            await trio.sleep(self.interval)
        direction.done.set()

    async def peter_send(self, direction: Direction, seq: int, *, tag: str = "") -> None:
        """One of Peter's messages; while his stream is down he waits and sends it then
        (nothing was written: his client's outbox keeps it)."""
        assert self.peter is not None
        tag = tag or direction.stream.tag
        stanza_id = f"{tag}-{seq}"
        if not tag.endswith("f"):
            self._ids[stanza_id] = seq
        while True:
            await self.peter.wait_connected()
            try:
                await self.peter.send_message(self.pair.john, text_of(tag, seq), stanza_id)
            except NotConnected:
                continue
            break
        if not tag.endswith("f"):
            direction.stream.was_sent(seq, time.time())
        self.world.changes.notify()

    # -- what rows wait for ---------------------------------------------------------------
    def sent(self, direction: Direction) -> int:
        return len(direction.stream.sent)

    async def wait_sent(self, direction: Direction, count: int) -> None:
        await self.world.changes.wait_for(lambda: self.sent(direction) >= count)

    async def wait_accounted(self, *directions: Direction) -> None:
        """Until every message sent so far in ``directions`` arrived or was failed."""
        await self.world.changes.wait_for(
            lambda: all(d.stream.accounted() for d in directions))

    async def pause(self, direction: Direction) -> None:
        """Stop ``direction``'s sender and wait until all it sent is accounted for."""
        direction.gate.close()
        await self.wait_accounted(direction)

    def resume(self, direction: Direction) -> None:
        direction.gate.open()

    async def fence(self) -> None:
        """One more message each way, outside the count, and wait for each: a session
        keeps order, so whatever was routed before it has been handled by then. Peter
        sends his again while Prosody bounces it (the component is not back yet)."""
        tag = self.fence_tag(self.slack_to_xmpp)
        self.world.post_as_john(self.pair, self.pair.channel, text_of(tag, 0))
        if self.crashing is not None:
            self.world.post_as_john(self.pair, self.pair.crash_channel,
                                    text_of(self.fence_tag(self.crashing), 0))
        peter = self.xmpp_to_slack
        with trio.fail_after(FENCE_TIMEOUT):
            try:
                for attempt in itertools.count():
                    bounced = self._fence_bounced = trio.Event()
                    await self.peter_send(peter, attempt, tag=self.fence_tag(peter))
                    with trio.move_on_after(FENCE_RESEND_S):
                        await bounced.wait()
                    if not bounced.is_set():
                        break
                    await trio.sleep(FENCE_RESEND_S)
            except trio.TooSlowError:
                raise FenceMissing(peter.name) from None
        for direction in self.directions:
            with trio.fail_after(FENCE_TIMEOUT):
                try:
                    await direction.fenced.wait()
                except trio.TooSlowError:
                    raise FenceMissing(direction.name) from None
