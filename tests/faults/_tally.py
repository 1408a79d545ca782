"""Classifying every numbered message of one direction of one row. Pure.

Each row sends numbered messages (:func:`text_of`, sequence numbers 0, 1, 2, ... in
sending order) from a sender to a receiver across a fault. What the suite sees:

- on the far side, each arrival of a numbered message (:meth:`Stream.arrived`);
- on the sender's own side, each explicit failure: one that names its message
  (:meth:`Stream.failed_exactly`: an XMPP error stanza carrying the message's own id,
  which Prosody's bounces and Interlink's stanza refusals do, or a notice with an
  XEP-0461 reply to it) or a failure notice that names no message
  (:meth:`Stream.noticed`: Interlink's notices are content-free, so on Slack they carry
  no reference at all; the one after an engine restart says when its message was sent).

The matching rule (:meth:`Stream.tally`), in this order:

1. A message that arrived is **delivered**; each extra copy is **duplicated**.
2. A message that did not arrive and was failed by name is **explicitly failed**.
3. The notices that name no message go to the undelivered messages left, oldest
   first: a notice with a sending time ("engine restart; sent <UTC second>; not
   confirmed delivered, ...") only to a message sent within ``SENT_WINDOW`` of that
   second, any other notice to any message sent before the notice arrived. A message
   given a notice is **explicitly failed**.
4. Where the sender asked for delivery receipts (Peter on XMPP, XEP-0184, as XMPP
   clients do: they show a message as delivered only once its receipt comes), a
   message left with **no receipt** was not lost silently: the sender's client shows
   it undelivered. Counted apart; receipts are trusted because none came for a
   message that did not arrive, and every message that arrived got one where neither
   a crash nor a cut link could take the receipt with it (``test_faults.py`` checks).
5. What is left is **lost** (silently). Notices left over are **spurious**: a failure
   notice for a message that did arrive (its sender would resend it: a duplicate to
   be), shown in the table beside the counts. Except one that says so itself: after a
   crash the engine cannot always tell whether a message reached a platform that
   offers no way to look (XMPP: the component protocol has no acknowledgements), and
   its notice then says delivery is **unconfirmed** ("not confirmed delivered, please
   resend if it is missing"; "it may have arrived before"): honest, counted apart.

Pass: nothing lost, nothing duplicated, no spurious notice (a spurious notice could
also stand in for a lost message under rule 3, so it fails the row too).
"""

from __future__ import annotations

import calendar
import re
import time
from collections import Counter
from dataclasses import dataclass, field

_TEXT = re.compile(r"fault (\w+) n(\d+)")
#: "engine restart; sent 2025-01-31 12:00:00 UTC; not confirmed delivered, ..." (engine/_engine.py)
_SENT = re.compile(r"sent (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")
#: a message fits a restart notice's second S when it was sent within [S + low, S + high):
#: the engine stamps the time it took the message (after the send, within a second or
#: two on a loaded machine) and prints it truncated to the second (one clock: the host's)
SENT_WINDOW = (-3.0, 1.5)
#: what the engine's notices say when it cannot tell whether a message arrived
#: (engine/_engine.py after a restart; engine/_session.py for a redelivery)
UNCONFIRMED_WORDS = ("not confirmed delivered", "may have arrived")


def text_of(tag: str, seq: int) -> str:
    """The body of message ``seq`` of the stream tagged ``tag`` (tags are ``\\w+``)."""
    return f"fault {tag} n{seq}"


def parse_text(text: str) -> tuple[str, int] | None:
    found = _TEXT.search(text)
    return None if found is None else (found.group(1), int(found.group(2)))


def sent_time_of(notice: str) -> float | None:
    """The UTC second an engine-restart notice says its message was sent, if it says."""
    found = _SENT.search(notice)
    if found is None:
        return None
    return float(calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")))


@dataclass(frozen=True)
class Notice:
    """A failure notice that names no message."""

    at: float
    reason: str
    sent_at: float | None = None


@dataclass(frozen=True)
class Tally:
    sent: int
    delivered: int
    explicitly_failed: int
    lost: int
    duplicated: int
    spurious: int
    #: arrivals carrying the stream's tag but a number never sent
    unexpected: int
    #: why messages failed, as their senders were told (reason -> count)
    reasons: dict[str, int]
    #: what the spurious notices said (reason -> count)
    spurious_reasons: dict[str, int] = field(default_factory=dict)
    #: left-over notices that said delivery was unconfirmed (rule 5: not spurious)
    unconfirmed: int = 0
    #: messages not delivered whose sender's client shows no receipt (rule 4)
    no_receipt: int = 0
    #: messages delivered whose sender got a receipt (receipts asked for only)
    receipted: int = 0
    #: receipts for messages that never arrived (a receipt that lies: must be 0)
    false_receipts: int = 0

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.spurious == 0 \
            and self.unexpected == 0 and self.false_receipts == 0


@dataclass
class Stream:
    """One direction of one row."""

    tag: str
    #: seq -> wall-clock time its sender's platform took it
    sent: dict[int, float] = field(default_factory=dict)
    arrivals: Counter[int] = field(default_factory=Counter)
    unexpected: int = 0
    exact: dict[int, str] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    #: the sender asks for delivery receipts (XEP-0184); the ones that came
    receipts: bool = False
    receipted: set[int] = field(default_factory=set)

    def was_sent(self, seq: int, at: float) -> None:
        self.sent[seq] = at

    def arrived_text(self, text: str) -> bool:
        """Count an arrival; False if the text is not one of this stream's messages."""
        parsed = parse_text(text)
        if parsed is None or parsed[0] != self.tag:
            return False
        seq = parsed[1]
        if seq in self.sent:
            self.arrivals[seq] += 1
        else:
            self.unexpected += 1
        return True

    def failed_exactly(self, seq: int, reason: str) -> None:
        self.exact.setdefault(seq, reason)

    def noticed(self, notice: Notice) -> None:
        self.notices.append(notice)

    # -- progress (what the row waits for) -------------------------------------------
    def undelivered(self) -> list[int]:
        return [seq for seq in sorted(self.sent) if not self.arrivals[seq]]

    def accounted(self) -> bool:
        """Every message sent so far arrived (and, where receipts are asked for, was
        receipted) or has an explicit failure (rules 1-3; one with no receipt may still
        arrive: not accounted for yet)."""
        tally = self.tally()
        return tally.lost == 0 and tally.no_receipt == 0 and (
            not self.receipts or tally.receipted == tally.delivered)

    def tally(self) -> Tally:
        reasons: Counter[str] = Counter()
        left = []
        for seq in self.undelivered():
            if seq in self.exact:
                reasons[self.exact[seq]] += 1
            else:
                left.append(seq)
        notices = sorted(self.notices, key=lambda n: (n.sent_at is None, n.at))
        spurious: Counter[str] = Counter()
        unconfirmed = 0
        for notice in notices:
            match = next((seq for seq in left if self._fits(notice, seq)), None)
            if match is None:
                if any(words in notice.reason for words in UNCONFIRMED_WORDS):
                    unconfirmed += 1
                else:
                    spurious[notice.reason] += 1
                continue
            left.remove(match)
            reasons[notice.reason] += 1
        delivered = sum(1 for seq in self.sent if self.arrivals[seq])
        duplicated = sum(count - 1 for count in self.arrivals.values() if count > 1)
        no_receipt = [seq for seq in left if self.receipts and seq not in self.receipted]
        left = [seq for seq in left if seq not in no_receipt]
        return Tally(sent=len(self.sent), delivered=delivered,
                     explicitly_failed=len(self.sent) - delivered - len(left) - len(no_receipt),
                     lost=len(left), no_receipt=len(no_receipt),
                     receipted=sum(1 for seq in self.sent
                                   if self.arrivals[seq] and seq in self.receipted),
                     false_receipts=sum(1 for seq in self.receipted if not self.arrivals[seq]),
                     duplicated=duplicated, spurious=sum(spurious.values()),
                     unexpected=self.unexpected, reasons=dict(reasons),
                     spurious_reasons=dict(spurious), unconfirmed=unconfirmed)

    def _fits(self, notice: Notice, seq: int) -> bool:
        sent = self.sent[seq]
        if notice.sent_at is None:
            return sent <= notice.at
        low, high = SENT_WINDOW
        return notice.sent_at + low <= sent < notice.sent_at + high
