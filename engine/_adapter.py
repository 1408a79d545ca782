"""The seam between the core and each platform.

An adapter is a pure translation layer plus a thin I/O layer. The core sees
only this interface:

- ``name``: the platform key used in domain routes (``chat``, ``mail``...).
- ``capabilities``: what the platform can express, declared up front. The
  core degrades events a destination cannot express (a reaction becomes a
  short text note); it never probes by catching ``NotImplementedError``.
- ``run(port)``: the adapter's I/O loops. It feeds inbound canonical events
  to ``port.offer`` (or ``port.submit``) and calls ``task_status.started()``
  once it can deliver; it reports its own measurements (connections,
  rate limits) to ``port.adapter_stats(name)``.
- ``deliver(event, session)``: send one canonical event to the platform.
  Returns the platform's ids; raises :class:`DeliveryError` (``retryable``
  or not) and nothing else on failure.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import msgspec
import trio

from ._address import Address
from ._clock import Clock
from ._directory import Directory, SessionRecord
from ._errors import RemoteError
from ._events import (
    BaseEvent,
    ChannelInvite,
    ContactAccept,
    ContactRemove,
    ContactRequest,
    DeliveryOutcome,
    Edit,
    Event,
    FileShare,
    Presence,
    Profile,
    ReactionAdd,
    ReactionRemove,
    Retract,
    Typing,
)
from ._stats import AdapterStats

Capability = Literal[
    "edits", "retractions", "reactions", "typing", "presence", "profiles", "files",
    "channels", "contacts", "outcomes", "delivery_receipts", "threads",
]
ALL_CAPABILITIES: frozenset[Capability] = frozenset(Capability.__args__)  # type: ignore[attr-defined]

#: which capability a destination needs to receive each event kind as itself
REQUIRED_CAPABILITY: dict[type[BaseEvent], Capability] = {
    Edit: "edits",
    Retract: "retractions",
    ReactionAdd: "reactions",
    ReactionRemove: "reactions",
    Typing: "typing",
    Presence: "presence",
    Profile: "profiles",
    FileShare: "files",
    ChannelInvite: "channels",
    ContactRequest: "contacts",
    ContactAccept: "contacts",
    ContactRemove: "contacts",
    DeliveryOutcome: "outcomes",
}


class DeliveryResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the platform said: its id for the delivered message and conversation."""

    platform_message_id: str = ""
    conversation_id: str = ""


class DeliveryError(RemoteError):
    """The platform did not take the event. ``reason`` is short and content-free."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class EnginePort(Protocol):
    """What an adapter may use of the engine."""

    @property
    def clock(self) -> Clock: ...

    @property
    def directory(self) -> Directory: ...

    async def submit(self, event: Event) -> bool:
        """Route an inbound event. Raises ``UnavailableError`` while the engine stops:
        the adapter must then not acknowledge the event to its platform. While the
        engine starts, the event waits for it to open (``EngineSettings.start_wait``)."""
        ...

    async def offer(self, event: Event) -> bool:
        """Route an inbound event without waiting for mailbox room: what inbound
        edges use. Raises ``MailboxFullError`` (a retryable ``UnavailableError``)
        with nothing routed when the conversation is busy; the adapter then gives
        its platform's "busy" answer (an HTTP 503, an unacknowledged envelope, a
        stanza error of type ``wait``) so the platform sends it again.

        Returns ``False`` when the event is a duplicate of one taken before (in
        flight, or a message already delivered): not routed again. For a
        platform that redelivers, that is its retry: acknowledge it as taken.
        For one that never redelivers, a repeated id is the sender's mistake:
        tell the sender, never drop it silently."""
        ...

    def refusal(self, event: Event) -> str | None:
        """Why the router would refuse ``event`` now (e.g. ``unknown-address``,
        ``not-a-contact``), or ``None``: for adapters that must answer their
        platform before routing, instead of copying the router's rules."""
        ...

    async def record_rejected(self, *, sender: Address, receiver: Address, reason: str,
                              event_id: str = "") -> None:
        """Log a platform event rejected before it became a canonical event (malformed,
        unknown user, not federated, too big): an ``error`` entry, outcome ``refused``."""
        ...

    def may_have_delivered(self, event_id: str) -> float | None:
        """For an adapter that ``delivers_idempotently``: when the first copy of the
        event it is delivering was accepted (a Unix time), if a crash interrupted that
        copy and its platform delivered it again, so it may already be on the
        destination platform; the adapter looks there before sending. ``None``
        otherwise (the usual case: a dictionary lookup)."""
        ...

    def adapter_stats(self, adapter: str) -> AdapterStats:
        """The measurements of the adapter named ``adapter`` (``/metrics`` exports them).

        The engine counts inbound events offered through the port itself; the
        adapter reports what only it sees there: its connections' states
        (reconnects follow from them), rate-limit answers and waits,
        de-duplication hits, malformed input. Ask once per run and hand it to
        the parts that measure."""
        ...


class Adapter(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    async def run(self, port: EnginePort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult: ...


@runtime_checkable
class FindsDeliveries(Protocol):
    """An adapter that can tell whether an event reached its platform (optional)."""

    async def find_delivered(self, event_id: str, session: SessionRecord,
                             since: float) -> str | None:
        """The platform message id of the event ``event_id`` of ``session`` if it is on
        this adapter's platform, delivered from ``since`` (a Unix time) on (``""`` for
        one with no id); ``None`` when it is not there or that cannot be told: the
        engine then tells its sender delivery is unconfirmed. Asked at start-up for
        events a crash interrupted; may raise ``RemoteError``."""
        ...


def platform_message_id(directory: Directory, canonical_id: str | None, platform: str) -> str:
    """``platform``'s id for a canonical message id, or ``""`` when unknown."""
    if not canonical_id:
        return ""
    record = directory.get_message_ids(canonical_id)
    return "" if record is None else record.platform_ids.get(platform, "")
