"""Counting what arrived: lost, duplicated and reordered messages, by sequence number. Pure.

Every message the e2e suite sends carries its run's tag, its conversation and its
sequence number in that conversation (0, 1, 2, ... in sending order): see
:func:`message_text` and :func:`parse_text`. The receiving side hands every message it
sees to a :class:`SequenceCheck`, in arrival order. Per conversation:

- **lost**: sent, never seen;
- **duplicated**: seen again after its first arrival (each extra copy counts once);
- **reordered**: arrived after a message with a higher number of the same
  conversation (each such arrival counts once; a duplicate is not also reordered);
- **unexpected**: carries the run's tag but a conversation or number never sent.

Messages of other runs (another tag) are ignored: a late message of an earlier trial
must not count against this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

_TEXT = re.compile(r"bench (\w+) c(\d+) n(\d+)")


def message_text(tag: str, conversation: int, seq: int) -> str:
    """The body of message ``seq`` of ``conversation`` in the run tagged ``tag``."""
    return f"bench {tag} c{conversation} n{seq}"


def parse_text(text: str) -> tuple[str, int, int] | None:
    """``(tag, conversation, seq)`` from a body that carries them (anywhere in it)."""
    found = _TEXT.search(text)
    if found is None:
        return None
    return found.group(1), int(found.group(2)), int(found.group(3))


class Integrity(msgspec.Struct, frozen=True, kw_only=True):
    """What :class:`SequenceCheck` counted over one run."""

    sent: int
    received: int
    lost: int
    duplicated: int
    reordered: int
    unexpected: int


class SequenceCheck:
    """Arrivals of one run, checked against what was sent.

    ``on_first`` is called with ``(conversation, seq)`` the first time a sent message
    arrives (the load driver times it there).
    """

    __slots__ = ("_highest", "_on_first", "_seen", "_sent", "duplicated", "received",
                 "reordered", "tag", "unexpected")

    def __init__(self, tag: str,
                 on_first: Callable[[int, int], None] | None = None) -> None:
        self.tag = tag
        self._on_first = on_first
        self._sent: dict[int, int] = {}  # conversation -> messages sent (0..n-1)
        self._seen: set[tuple[int, int]] = set()
        self._highest: dict[int, int] = {}
        self.received = 0
        self.duplicated = 0
        self.reordered = 0
        self.unexpected = 0

    def sent(self, conversation: int, seq: int) -> None:
        """Message ``seq`` of ``conversation`` went out (numbers go up from 0 in order)."""
        self._sent[conversation] = max(self._sent.get(conversation, 0), seq + 1)

    def arrived_text(self, text: str) -> bool:
        """A message body arrived; ``False`` if it is not one of this run's."""
        parsed = parse_text(text)
        if parsed is None or parsed[0] != self.tag:
            return False
        self.arrived(parsed[1], parsed[2])
        return True

    def arrived(self, conversation: int, seq: int) -> None:
        if not 0 <= seq < self._sent.get(conversation, 0):
            self.unexpected += 1
            return
        key = (conversation, seq)
        if key in self._seen:
            self.duplicated += 1
            return
        self._seen.add(key)
        self.received += 1
        highest = self._highest.get(conversation, -1)
        if seq < highest:
            self.reordered += 1
        else:
            self._highest[conversation] = seq
        if self._on_first is not None:
            self._on_first(conversation, seq)

    @property
    def total_sent(self) -> int:
        return sum(self._sent.values())

    @property
    def complete(self) -> bool:
        return self.received == self.total_sent

    def result(self) -> Integrity:
        sent = self.total_sent
        return Integrity(sent=sent, received=self.received, lost=sent - self.received,
                         duplicated=self.duplicated, reordered=self.reordered,
                         unexpected=self.unexpected)
