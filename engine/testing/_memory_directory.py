"""An in-memory :class:`~engine.Directory` that answers exactly like ``LmdbDirectory``.

For tests and for running without a data directory. Writes apply at once
and, like LMDB's, do not yield (they only honour a pending cancellation,
before writing anything); ``flush`` is only a checkpoint, and ``aclose``
makes every later call raise :class:`~engine.DirectoryError`, as with the
LMDB implementation. A property test (``tests/test_directory_equivalence.py``)
holds the two to identical answers, including sort orders, pair
normalisation and reverse-index rules (a reverse entry belongs to its last
writer; removing or replacing a record drops only the entries that still
name it).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import msgspec
import trio

from .._address import Address
from .._directory import (
    SCHEMA_VERSION,
    WILDCARD_DOMAIN,
    ContactRecord,
    DomainAgreement,
    DomainRoute,
    Installation,
    LedgerRecord,
    MessageIdRecord,
    MessageState,
    PlatformIdentity,
    SessionRecord,
    UserPolicy,
)
from .._errors import DirectoryError

__all__ = ["MemoryDirectory"]


def _copy_session(record: SessionRecord) -> SessionRecord:
    return msgspec.structs.replace(record, conversation_ids=dict(record.conversation_ids))


def _copy_message_ids(record: MessageIdRecord) -> MessageIdRecord:
    return msgspec.structs.replace(record, platform_ids=dict(record.platform_ids))


def _copy_installation(installation: Installation) -> Installation:
    return msgspec.structs.replace(installation, credentials=dict(installation.credentials))


class MemoryDirectory:
    """The directory in plain dicts.

    Records holding a dict (sessions, message ids, installations) are copied
    on the way in and out, so, as with LMDB, mutating a record you passed or
    got never changes what is stored.
    """

    def __init__(self) -> None:
        self._closed = False
        self._routes: dict[str, DomainRoute] = {}
        self._identities: dict[Address, PlatformIdentity] = {}
        self._identity_index: dict[tuple[str, str, str], Address] = {}
        self._contacts: dict[Address, dict[Address, ContactRecord]] = {}
        self._sessions: dict[str, SessionRecord] = {}
        #: every session id, for pagination; sorted lazily (see list_sessions)
        self._session_ids: list[str] = []
        self._session_ids_sorted = True
        self._session_pairs: dict[tuple[Address, Address], str] = {}
        self._conversations: dict[tuple[str, str], str] = {}
        self._message_ids: dict[str, MessageIdRecord] = {}
        #: (platform, platform id) and (platform, session id, platform id) -> canonical id
        self._message_index: dict[tuple[str, str], str] = {}
        self._message_in_session: dict[tuple[str, str, str], str] = {}
        #: canonical id -> platform -> that platform's state for the message
        self._message_states: dict[str, dict[str, MessageState]] = {}
        self._ledger: dict[str, LedgerRecord] = {}
        self._agreements: dict[tuple[str, str], DomainAgreement] = {}
        self._policies: dict[Address, UserPolicy] = {}
        self._installations: dict[tuple[str, str], Installation] = {}
        self._policy_version = 0

    def _check(self) -> None:
        if self._closed:
            raise DirectoryError("memory directory is closed")

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    @property
    def policy_version(self) -> int:
        """Changes whenever a domain route, an agreement or a user policy is written."""
        return self._policy_version

    # ---------------------------------------------------------------- routes

    def get_domain_route(self, domain: str) -> DomainRoute | None:
        """The route for ``domain``, else the ``"*"`` route, else ``None``."""
        self._check()
        route = self._routes.get(domain)
        return route if route is not None else self._routes.get(WILDCARD_DOMAIN)

    def list_domain_routes(self) -> list[DomainRoute]:
        self._check()
        return [self._routes[domain] for domain in sorted(self._routes)]

    async def put_domain_route(self, route: DomainRoute) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._routes[route.domain] = route
        self._policy_version += 1

    # ------------------------------------------------------------ identities

    def get_identity(self, address: Address) -> PlatformIdentity | None:
        self._check()
        return self._identities.get(address)

    def find_address(self, platform: str, tenant: str, user_id: str) -> Address | None:
        self._check()
        return self._identity_index.get((platform, tenant, user_id))

    async def put_identity(self, identity: PlatformIdentity) -> None:
        """Store (or replace) an identity; a replaced one's reverse entry is removed."""
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        index_key = (identity.platform, identity.tenant, identity.user_id)
        old = self._identities.get(identity.address)
        if old is not None:
            old_key = (old.platform, old.tenant, old.user_id)
            if old_key != index_key and self._identity_index.get(old_key) == identity.address:
                del self._identity_index[old_key]
        self._identities[identity.address] = identity
        self._identity_index[index_key] = identity.address

    async def delete_identity(self, address: Address) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        old = self._identities.pop(address, None)
        if old is not None:
            old_key = (old.platform, old.tenant, old.user_id)
            if self._identity_index.get(old_key) == address:
                del self._identity_index[old_key]

    # -------------------------------------------------------------- contacts

    def get_contact(self, owner: Address, contact: Address) -> ContactRecord | None:
        self._check()
        return self._contacts.get(owner, {}).get(contact)

    def list_contacts(self, owner: Address) -> list[ContactRecord]:
        """Every contact of ``owner`` (any state), sorted by contact address."""
        self._check()
        mine = self._contacts.get(owner, {})
        return [mine[contact] for contact in sorted(mine)]

    async def put_contact(self, record: ContactRecord) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._contacts.setdefault(record.owner, {})[record.contact] = record

    # -------------------------------------------------------------- sessions

    def get_session(self, session_id: str) -> SessionRecord | None:
        self._check()
        record = self._sessions.get(session_id)
        return None if record is None else _copy_session(record)

    def find_session(self, a: Address, b: Address) -> SessionRecord | None:
        """The session of the pair, in either order."""
        self._check()
        pair = (a, b) if a <= b else (b, a)
        session_id = self._session_pairs.get(pair)
        return None if session_id is None else self.get_session(session_id)

    def find_session_id(self, a: Address, b: Address) -> str | None:
        """The id of the pair's session (either order), without copying the record."""
        self._check()
        return self._session_pairs.get((a, b) if a <= b else (b, a))

    def find_session_by_conversation(self, platform: str,
                                     conversation_id: str) -> SessionRecord | None:
        self._check()
        session_id = self._conversations.get((platform, conversation_id))
        return None if session_id is None else self.get_session(session_id)

    def list_sessions(self, *, after: str = "", limit: int = 100) -> list[SessionRecord]:
        """Sessions sorted by id, starting after ``after`` (pagination)."""
        self._check()
        if limit <= 0:
            return []
        ids = self._session_ids
        if not self._session_ids_sorted:
            ids.sort()  # timsort: linear on the sorted run plus the ids appended since
            self._session_ids_sorted = True
        start = bisect.bisect_right(ids, after)
        return [_copy_session(self._sessions[session_id])
                for session_id in ids[start:start + limit]]

    def count_sessions(self) -> int:
        self._check()
        return len(self._sessions)

    async def put_session(self, record: SessionRecord) -> None:
        """Store a session; ``a``/``b`` are normalised so that ``a <= b``."""
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        if record.b < record.a:
            record = msgspec.structs.replace(record, a=record.b, b=record.a)
        pair = (record.a, record.b)
        old = self._sessions.get(record.session_id)
        if old is None:
            # O(1): appended, sorted on the next list_sessions (an insort
            # here was O(n), i.e. quadratic when registering many sessions).
            ids = self._session_ids
            if ids and record.session_id < ids[-1]:
                self._session_ids_sorted = False
            ids.append(record.session_id)
        else:
            old_pair = (old.a, old.b)
            if old_pair != pair and self._session_pairs.get(old_pair) == record.session_id:
                del self._session_pairs[old_pair]
            for platform, conversation_id in old.conversation_ids.items():
                key = (platform, conversation_id)
                if (record.conversation_ids.get(platform) != conversation_id
                        and self._conversations.get(key) == record.session_id):
                    del self._conversations[key]
        self._sessions[record.session_id] = _copy_session(record)
        self._session_pairs[pair] = record.session_id
        for platform, conversation_id in record.conversation_ids.items():
            self._conversations[platform, conversation_id] = record.session_id

    # ----------------------------------------------------------- message ids

    def get_message_ids(self, canonical_id: str) -> MessageIdRecord | None:
        self._check()
        record = self._message_ids.get(canonical_id)
        return None if record is None else _copy_message_ids(record)

    def find_canonical_id(self, platform: str, platform_message_id: str, *,
                          session_id: str | None = None) -> str | None:
        self._check()
        if session_id is None:
            return self._message_index.get((platform, platform_message_id))
        return self._message_in_session.get((platform, session_id, platform_message_id))

    async def put_message_ids(self, record: MessageIdRecord) -> None:
        """Store or replace; reverse entries (platform-wide and within the record's
        session) follow ``platform_ids``."""
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        canonical_id = record.canonical_id
        old = self._message_ids.get(canonical_id)
        if old is not None:
            for platform, platform_id in old.platform_ids.items():
                if record.platform_ids.get(platform) != platform_id:
                    self._unindex_message((platform, platform_id), canonical_id)
                if record.platform_ids.get(platform) != platform_id or \
                        record.session_id != old.session_id:
                    self._unindex_in_session((platform, old.session_id, platform_id),
                                             canonical_id)
        self._message_ids[canonical_id] = _copy_message_ids(record)
        for platform, platform_id in record.platform_ids.items():
            self._message_index[(platform, platform_id)] = canonical_id
            self._message_in_session[(platform, record.session_id, platform_id)] = canonical_id

    async def prune_message_ids(self, older_than: float) -> int:
        """Delete records with ``created_at < older_than`` and their messages' state; also
        the state of messages without a record, first written before ``older_than``.
        Return how many records were deleted."""
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        doomed = [record for record in self._message_ids.values()
                  if record.created_at < older_than]
        for record in doomed:
            del self._message_ids[record.canonical_id]
            self._message_states.pop(record.canonical_id, None)
            for platform, platform_id in record.platform_ids.items():
                self._unindex_message((platform, platform_id), record.canonical_id)
                self._unindex_in_session((platform, record.session_id, platform_id),
                                         record.canonical_id)
        for canonical_id, states in list(self._message_states.items()):
            if canonical_id in self._message_ids:
                continue
            for platform, state in list(states.items()):
                if state.created_at < older_than:
                    del states[platform]
            if not states:
                del self._message_states[canonical_id]
        return len(doomed)

    async def put_ledger(self, record: LedgerRecord) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._ledger[record.event_id] = record

    async def resolve_ledger(self, event_id: str) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._ledger.pop(event_id, None)

    def open_ledger(self) -> list[LedgerRecord]:
        return sorted(self._ledger.values(), key=lambda r: (r.accepted_at, r.event_id))

    def get_message_state(self, canonical_id: str, platform: str) -> dict[str, str]:
        self._check()
        state = self._message_states.get(canonical_id, {}).get(platform)
        return {} if state is None else dict(state.values)

    async def put_message_state(self, canonical_id: str, platform: str,
                                changes: Mapping[str, str | None], *, now: float) -> None:
        """Merge ``changes`` (``None`` deletes a key; a state left empty is deleted)."""
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        states = self._message_states.setdefault(canonical_id, {})
        old = states.get(platform)
        values = {} if old is None else dict(old.values)
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        if values:
            states[platform] = MessageState(
                canonical_id=canonical_id, platform=platform, values=values,
                created_at=now if old is None else old.created_at)
        else:
            states.pop(platform, None)
            if not states:
                del self._message_states[canonical_id]

    def _unindex_message(self, key: tuple[str, str], canonical_id: str) -> None:
        if self._message_index.get(key) == canonical_id:
            del self._message_index[key]

    def _unindex_in_session(self, key: tuple[str, str, str], canonical_id: str) -> None:
        if self._message_in_session.get(key) == canonical_id:
            del self._message_in_session[key]

    # -------------------------------------------------------------- policies

    def get_domain_agreement(self, domain_a: str, domain_b: str) -> DomainAgreement | None:
        """The agreement of the pair, in either order."""
        self._check()
        pair = (domain_a, domain_b) if domain_a <= domain_b else (domain_b, domain_a)
        return self._agreements.get(pair)

    def list_domain_agreements(self) -> list[DomainAgreement]:
        self._check()
        return [self._agreements[pair] for pair in sorted(self._agreements)]

    async def put_domain_agreement(self, agreement: DomainAgreement) -> None:
        """Store an agreement, normalised so that ``domain_a <= domain_b``."""
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        if agreement.domain_b < agreement.domain_a:
            agreement = msgspec.structs.replace(
                agreement, domain_a=agreement.domain_b, domain_b=agreement.domain_a
            )
        self._agreements[(agreement.domain_a, agreement.domain_b)] = agreement
        self._policy_version += 1

    def get_user_policy(self, address: Address) -> UserPolicy | None:
        self._check()
        return self._policies.get(address)

    async def put_user_policy(self, policy: UserPolicy) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        self._policies[policy.address] = policy
        self._policy_version += 1

    # --------------------------------------------------------- installations

    def get_installation(self, platform: str, tenant: str) -> Installation | None:
        self._check()
        installation = self._installations.get((platform, tenant))
        return None if installation is None else _copy_installation(installation)

    def list_installations(self, platform: str | None = None) -> list[Installation]:
        """Installations (of ``platform``, if given), sorted by platform then tenant."""
        self._check()
        return [_copy_installation(self._installations[key])
                for key in sorted(self._installations)
                if platform is None or key[0] == platform]

    async def put_installation(self, installation: Installation) -> None:
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        key = (installation.platform, installation.tenant)
        self._installations[key] = _copy_installation(installation)

    # ------------------------------------------------------------- lifecycle

    def durable_mark(self) -> int:
        return 0

    async def wait_durable(self, mark: int) -> None:
        """Nothing to make durable: returns at once."""

    async def flush(self) -> None:
        """Nothing to make durable; a checkpoint, so callers still yield."""
        self._check()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Mark the directory closed; later calls raise ``DirectoryError`` (idempotent)."""
        self._closed = True
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"sessions={len(self._sessions)}"
        return f"<MemoryDirectory {state}>"
