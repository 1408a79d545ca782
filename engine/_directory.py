"""The address directory: the engine's only durable state, behind one interface.

Two implementations answer identically (a property test holds them to it):
:class:`engine.LmdbDirectory`, the embedded default, and
:class:`engine.testing.MemoryDirectory` for tests.

Contract shared by both:
- **Reads are synchronous** and cheap (inline on the trio thread, no await).
- **Writes are async** and visible to reads as soon as the call returns
  (read-your-writes). They become durable at the next group commit;
  ``await flush()`` waits for that. A write only blocks when the bounded
  queue of pending writes is full (backpressure).
- Records are frozen; the ones a read returns may be shared with later
  reads (the LMDB directory caches hot records), so never mutate their dict
  fields: build a new record with ``msgspec.structs.replace``.
- Nothing in the directory is message content: only routing data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal, Protocol, runtime_checkable

import msgspec

from ._address import Address

SCHEMA_VERSION = 5  # 2: sessions by platform conversation id; 3: message state; 4: ledger;
#                      5: platform message ids by session (find_canonical_id(session_id=))

#: The domain route used when a domain has none of its own (e.g. any server of an open federation).
WILDCARD_DOMAIN = "*"


# gc=False on every record: they hold strings, addresses and dicts of strings, never a
# cycle, and the read caches keep many of them alive (the collector need not walk them).
class DomainRoute(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Which platform (and tenant on it) serves a domain.

    ``internal`` marks the deploying organisation's own domains; the others
    are external (federated) domains.
    """

    domain: str
    platform: str
    tenant: str = ""
    internal: bool = False


class PlatformIdentity(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An address's identity on its platform (workspace and user id, a protocol address, ...)."""

    address: Address
    platform: str
    tenant: str = ""
    user_id: str


ContactState = Literal["pending", "accepted", "removed"]


class ContactRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """``owner`` has ``contact`` in their contact list (one direction)."""

    owner: Address
    contact: Address
    state: ContactState
    requested_by: Address
    updated_at: float = 0.0


class SessionRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A chat session between two addresses (stored with ``a`` <= ``b``).

    ``conversation_ids`` holds each platform's conversation for it, e.g. a
    private channel's id under the chat platform's adapter name.
    """

    session_id: str
    a: Address
    b: Address
    conversation_ids: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: float = 0.0


class MessageIdRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A canonical message id and each platform's id for the same message.

    Each platform id is found again (:meth:`Directory.find_canonical_id`) within the
    record's session, and platform-wide: a platform whose clients choose their own
    ids has ids unique only within a conversation, so it looks them up by session;
    one whose ids are unique on the platform (keys that already name the
    conversation, a partner system's own ids) may look them up platform-wide.
    """

    canonical_id: str
    session_id: str
    platform_ids: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: float = 0.0


class MessageState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One adapter's protocol state for one message, beside the message-id map.

    Short strings the adapter's protocol needs after a restart (e.g. each
    reactor's whole reaction set where the protocol sends sets, whether the
    sender asked for a receipt);
    never message content. ``created_at`` is the time of the first write: the
    state goes with its message's record when that is pruned, or by this time
    when the message has no record.
    """

    canonical_id: str
    platform: str
    values: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: float = 0.0


class LedgerRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An inbound event the engine accepted and has not resolved yet: metadata only.

    Written when a platform's event is taken (before the platform is answered,
    where it waits for an answer) and removed once the event is delivered or
    its failure reached the sender; the outcome itself is the metadata log's
    entry. A record still here at start-up is an event a crash interrupted.
    """

    event_id: str
    sender: Address
    receiver: Address
    type: str
    session_id: str = ""
    accepted_at: float


Decision = Literal["allow", "deny"]


class DomainAgreement(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Federation agreement between two domains (stored with ``domain_a`` <= ``domain_b``).

    ``opt_in_required``: users of internal domains must opt in individually.
    """

    domain_a: str
    domain_b: str
    decision: Decision
    opt_in_required: bool = False


class UserPolicy(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Per-user rule: ``deny`` blocks the user; ``opted_in`` satisfies opt-in agreements."""

    address: Address
    decision: Decision | None = None
    opted_in: bool = False


class Installation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A platform installation (a workspace, a server component) and its credentials.

    ``credentials`` are secrets: the repr hides them and they are never logged.
    """

    platform: str
    tenant: str
    credentials: dict[str, str] = msgspec.field(default_factory=dict)
    status: Literal["active", "revoked"] = "active"
    installed_at: float = 0.0

    def __repr__(self) -> str:
        return (f"Installation(platform={self.platform!r}, tenant={self.tenant!r}, "
                f"credentials=<{len(self.credentials)} redacted>, status={self.status!r})")


def ordered_pair(a: Address, b: Address) -> tuple[Address, Address]:
    return (a, b) if a <= b else (b, a)


def session_id_for(a: Address, b: Address) -> str:
    """The deterministic session id of the pair (order-independent).

    Deterministic so that concurrent first contacts, restarts and (later)
    several nodes all agree without coordination.
    """
    x, y = ordered_pair(a, b)
    digest = hashlib.blake2b(f"{x}\n{y}".encode(), digest_size=12).hexdigest()
    return f"s-{digest}"


@runtime_checkable
class Directory(Protocol):
    """What the engine needs from its directory. See the module docstring for the contract."""

    @property
    def schema_version(self) -> int: ...

    # domain -> platform/tenant
    def get_domain_route(self, domain: str) -> DomainRoute | None:
        """The route for ``domain``, else the ``"*"`` route, else ``None``."""
    def list_domain_routes(self) -> list[DomainRoute]: ...
    async def put_domain_route(self, route: DomainRoute) -> None: ...

    # address <-> platform identity
    def get_identity(self, address: Address) -> PlatformIdentity | None: ...
    def find_address(self, platform: str, tenant: str, user_id: str) -> Address | None: ...
    async def put_identity(self, identity: PlatformIdentity) -> None:
        """Store (or replace) an identity; a replaced one's reverse entry is removed."""
    async def delete_identity(self, address: Address) -> None: ...

    # contacts
    def get_contact(self, owner: Address, contact: Address) -> ContactRecord | None: ...
    def list_contacts(self, owner: Address) -> list[ContactRecord]:
        """Every contact of ``owner`` (any state), sorted by contact address."""
    async def put_contact(self, record: ContactRecord) -> None: ...

    # sessions
    def get_session(self, session_id: str) -> SessionRecord | None: ...
    def find_session(self, a: Address, b: Address) -> SessionRecord | None:
        """The session of the pair, in either order."""
    def find_session_id(self, a: Address, b: Address) -> str | None:
        """The id of the pair's session (either order), without decoding the record."""
    def find_session_by_conversation(self, platform: str,
                                     conversation_id: str) -> SessionRecord | None:
        """The session whose ``conversation_ids[platform]`` is ``conversation_id``
        (the last one stored with it, should two claim the same conversation)."""
    def list_sessions(self, *, after: str = "", limit: int = 100) -> list[SessionRecord]:
        """Sessions sorted by id, starting after ``after`` (pagination)."""
    def count_sessions(self) -> int: ...
    async def put_session(self, record: SessionRecord) -> None:
        """Store a session; ``a``/``b`` are normalised so that ``a <= b``."""

    # message-id map (bounded by age)
    def get_message_ids(self, canonical_id: str) -> MessageIdRecord | None: ...
    def find_canonical_id(self, platform: str, platform_message_id: str, *,
                          session_id: str | None = None) -> str | None:
        """The canonical id of the message ``platform`` knows as ``platform_message_id``.

        With ``session_id``: only a message of that session (the 1:1 conversation),
        the key is ``(platform, session_id, platform_message_id)``; what a platform
        whose clients choose their own ids must use, so that two conversations'
        equal ids never meet. Without: the key is ``(platform, platform_message_id)``,
        for ids unique on the platform; if two sessions recorded the same id there,
        the last one recorded. Either is one point read."""
    async def put_message_ids(self, record: MessageIdRecord) -> None:
        """Store or replace; reverse entries (within ``session_id`` and platform-wide)
        follow ``platform_ids``."""
    async def prune_message_ids(self, older_than: float) -> int:
        """Delete records with ``created_at < older_than`` and their messages' state; also
        the state of messages without a record, first written before ``older_than``.
        Return how many records were deleted."""

    # the delivery ledger (accepted inbound events not resolved yet)
    async def put_ledger(self, record: LedgerRecord) -> None:
        """Record an accepted inbound event (durable after :meth:`flush`)."""

    async def resolve_ledger(self, event_id: str) -> None:
        """The event was delivered or its sender told: forget it (a no-op if absent)."""

    def open_ledger(self) -> list[LedgerRecord]:
        """Every accepted event not resolved yet, oldest first."""

    # per-message adapter state (beside the message-id map, pruned with it)
    def get_message_state(self, canonical_id: str, platform: str) -> dict[str, str]:
        """``platform``'s state for a message: a new dict, empty when there is none."""
    async def put_message_state(self, canonical_id: str, platform: str,
                                changes: Mapping[str, str | None], *, now: float) -> None:
        """Merge ``changes`` into ``platform``'s state for a message (``None`` deletes a
        key; a state left empty is deleted). ``now`` dates a state written first."""

    # policies
    def get_domain_agreement(self, domain_a: str, domain_b: str) -> DomainAgreement | None:
        """The agreement of the pair, in either order."""
    def list_domain_agreements(self) -> list[DomainAgreement]: ...
    async def put_domain_agreement(self, agreement: DomainAgreement) -> None: ...
    def get_user_policy(self, address: Address) -> UserPolicy | None: ...
    async def put_user_policy(self, policy: UserPolicy) -> None: ...

    @property
    def policy_version(self) -> int:
        """Changes whenever a route, agreement or user policy is written (decision caches)."""
        ...

    # installations (credentials never logged)
    def get_installation(self, platform: str, tenant: str) -> Installation | None: ...
    def list_installations(self, platform: str | None = None) -> list[Installation]: ...
    async def put_installation(self, installation: Installation) -> None: ...

    # lifecycle
    def durable_mark(self) -> int:
        """A mark for every write made so far: :meth:`wait_durable` with it returns once
        they are durable (0 where nothing is ever written to disk)."""
    async def wait_durable(self, mark: int) -> None:
        """Wait until the writes up to ``mark`` (from :meth:`durable_mark`) are durable;
        no checkpoint when they already are."""
    async def flush(self) -> None:
        """Wait until every write made so far is durable."""
    async def aclose(self) -> None:
        """Flush and release resources; later calls raise ``DirectoryError``."""


