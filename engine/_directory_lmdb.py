"""The embedded default directory: :class:`LmdbDirectory` on an :class:`LmdbStore`.

Every record is a msgspec msgpack value; every read is a point get or a prefix
scan. Key layout (one LMDB sub-database each):

==================  ==============================================  ===================
sub-database        key                                             value
==================  ==============================================  ===================
routes              pack(domain)                                    DomainRoute
identities          pack((user, domain))                            PlatformIdentity
identity_index      pack((platform, tenant, user_id))               pack(Address)
contacts            pack((owner...)) + pack((contact...))           ContactRecord
sessions            b"s" + session_id (UTF-8, so keys sort by id)   SessionRecord
session_pairs       pack((a.user, a.domain, b.user, b.domain))      session_id
message_ids         pack(canonical_id)                              MessageIdRecord
message_index       pack((platform, platform_message_id))           canonical_id
message_in_session  pack((platform, session_id, platform_msg_id))   canonical_id
message_age         time_key(created_at) + canonical_id             canonical_id
message_state       pack(canonical_id) + pack(platform)             MessageState
ledger              pack(event_id)                                  LedgerRecord
agreements          pack((domain_a, domain_b))                      DomainAgreement
policies            pack((user, domain))                            UserPolicy
installations       pack(platform) + pack(tenant)                   Installation
==================  ==============================================  ===================

``pack`` is msgpack: self-delimiting, so a composite key is injective and a
key starting with ``pack(owner)`` belongs to that owner whatever the strings
hold. Lists are re-sorted on the decoded records, so their order never
depends on the byte layout. LMDB keys are at most 511 bytes: a longer key
keeps its first 495 bytes and appends a 16-byte BLAKE2b digest of the whole
(:func:`_fit`), so no caller-supplied string can make a write fail. Prefix
scans use at most the first 495 bytes of the prefix and filter the decoded
records; :meth:`LmdbDirectory.list_sessions` handles the (pathological) ids
whose keys share those 495 bytes, so every answer equals
:class:`engine.testing.MemoryDirectory`'s.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import lmdb
import msgspec
import trio

from ._address import Address
from ._directory import (
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
from ._errors import DirectoryError
from ._lmdb_store import LmdbStore, MiB, Migration, Op, StoreHandles
from ._secrets import ENCRYPTED_PREFIX, SecretBox, SecretKeyError

__all__ = ["DIRECTORY_DBS", "LmdbDirectory"]

_T = TypeVar("_T")

ROUTES: Final = "routes"
IDENTITIES: Final = "identities"
IDENTITY_INDEX: Final = "identity_index"
CONTACTS: Final = "contacts"
SESSIONS: Final = "sessions"
SESSION_PAIRS: Final = "session_pairs"
CONVERSATIONS: Final = "conversations"
MESSAGE_IDS: Final = "message_ids"
MESSAGE_INDEX: Final = "message_index"
MESSAGE_IN_SESSION: Final = "message_in_session"
MESSAGE_AGE: Final = "message_age"
MESSAGE_STATE: Final = "message_state"
LEDGER: Final = "ledger"
AGREEMENTS: Final = "agreements"
POLICIES: Final = "policies"
INSTALLATIONS: Final = "installations"

#: The sub-databases of a directory store, for migration hooks and tools.
DIRECTORY_DBS: Final = (
    ROUTES, IDENTITIES, IDENTITY_INDEX, CONTACTS, SESSIONS, SESSION_PAIRS, CONVERSATIONS,
    MESSAGE_IDS, MESSAGE_INDEX, MESSAGE_AGE, MESSAGE_STATE, AGREEMENTS, POLICIES,
    INSTALLATIONS, LEDGER, MESSAGE_IN_SESSION,
)

_MAX_KEY: Final = 511  # LMDB's compiled-in limit (mdb_env_get_maxkeysize)
_DIGEST: Final = 16
_KEEP: Final = _MAX_KEY - _DIGEST  # bytes of an over-long key kept verbatim
_SESSION_TAG: Final = b"s"  # keeps the empty session id a legal (non-empty) key

_ENC: Final = msgspec.msgpack.Encoder()
_pack = _ENC.encode
_DEC_ROUTE: Final = msgspec.msgpack.Decoder(DomainRoute)
_DEC_IDENTITY: Final = msgspec.msgpack.Decoder(PlatformIdentity)
_DEC_ADDRESS: Final = msgspec.msgpack.Decoder(Address)
_DEC_CONTACT: Final = msgspec.msgpack.Decoder(ContactRecord)
_DEC_SESSION: Final = msgspec.msgpack.Decoder(SessionRecord)
_DEC_MESSAGE_IDS: Final = msgspec.msgpack.Decoder(MessageIdRecord)
_DEC_MESSAGE_STATE: Final = msgspec.msgpack.Decoder(MessageState)
_DEC_LEDGER: Final = msgspec.msgpack.Decoder(LedgerRecord)
_DEC_AGREEMENT: Final = msgspec.msgpack.Decoder(DomainAgreement)
_DEC_POLICY: Final = msgspec.msgpack.Decoder(UserPolicy)
_DEC_INSTALLATION: Final = msgspec.msgpack.Decoder(Installation)

_DOUBLE: Final = struct.Struct(">d")
_UINT64: Final = struct.Struct(">Q")
_SIGN: Final = 1 << 63
_ALL_BITS: Final = (1 << 64) - 1


def _fit(key: bytes) -> bytes:
    """``key`` if LMDB takes it, else its first 495 bytes plus a digest of the whole.

    Natural keys are at most 510 bytes and fitted ones exactly 511, so the two
    kinds never collide.
    """
    if len(key) < _MAX_KEY:
        return key
    return key[:_KEEP] + hashlib.blake2b(key, digest_size=_DIGEST).digest()


def _address_key(address: Address) -> bytes:
    return _fit(_pack((address.user, address.domain)))


def _owner_prefix(owner: Address) -> bytes:
    return _pack((owner.user, owner.domain))


def _contact_key(owner: Address, contact: Address) -> bytes:
    return _fit(_owner_prefix(owner) + _pack((contact.user, contact.domain)))


def _session_key(session_id: str) -> bytes:
    return _fit(_SESSION_TAG + session_id.encode())


def _pair_key(a: Address, b: Address) -> bytes:
    return _fit(_pack((a.user, a.domain, b.user, b.domain)))


def _conversation_key(platform: str, conversation_id: str) -> bytes:
    return _fit(_pack((platform, conversation_id)))


def _identity_index_key(platform: str, tenant: str, user_id: str) -> bytes:
    return _fit(_pack((platform, tenant, user_id)))


def _message_index_key(platform: str, platform_message_id: str) -> bytes:
    return _fit(_pack((platform, platform_message_id)))


def _in_session_key(platform: str, session_id: str, platform_message_id: str) -> bytes:
    return _fit(_pack((platform, session_id, platform_message_id)))


def _reverse_entries(record: MessageIdRecord) -> list[tuple[str, bytes]]:
    """Where ``record``'s platform ids are found again: platform-wide and in its session."""
    entries: list[tuple[str, bytes]] = []
    session_id = record.session_id
    for platform, platform_id in record.platform_ids.items():
        entries.append((MESSAGE_INDEX, _message_index_key(platform, platform_id)))
        entries.append((MESSAGE_IN_SESSION, _in_session_key(platform, session_id, platform_id)))
    return entries


def _time_key(t: float) -> bytes:
    """8 bytes that sort like the float ``t`` (IEEE 754 bits, sign-adjusted)."""
    (bits,) = _UINT64.unpack(_DOUBLE.pack(t))
    return _UINT64.pack(bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN)


def _age_key(record: MessageIdRecord | MessageState) -> bytes:
    """The age index entry of a record or of a message's state (the same index: pruning
    walks one index for both)."""
    return _fit(_time_key(record.created_at) + record.canonical_id.encode())


def _state_key(canonical_id: str, platform: str) -> bytes:
    return _fit(_pack(canonical_id) + _pack(platform))


def _agreement_key(domain_a: str, domain_b: str) -> bytes:
    return _fit(_pack((domain_a, domain_b)))


def _installation_key(platform: str, tenant: str) -> bytes:
    return _fit(_pack(platform) + _pack(tenant))


def _same_group(key: bytes, other: bytes) -> bool:
    """Whether two keys share their first 495 bytes (only then can key and id order differ)."""
    return len(key) >= _KEEP and len(other) >= _KEEP and key[:_KEEP] == other[:_KEEP]


def _load(decoder: msgspec.msgpack.Decoder[_T], raw: bytes) -> _T:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise DirectoryError(f"undecodable directory record: {exc}") from exc


def _index_conversations(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
    """Schema 1 -> 2: index every session by its platform conversation ids."""
    for _key, raw in txn.cursor(db=handles[SESSIONS]):
        record = _load(_DEC_SESSION, raw)
        for platform, conversation_id in record.conversation_ids.items():
            txn.put(_conversation_key(platform, conversation_id), record.session_id.encode(),
                    db=handles[CONVERSATIONS])


def _add_message_state(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
    """Schema 2 -> 3: the ``message_state`` sub-database, opened (empty) with the store:
    nothing to move, but a store holding state is one older code must not open."""


def _add_ledger(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
    """Schema 3 -> 4: the ``ledger`` sub-database, opened (empty) with the store."""


def _index_messages_by_session(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
    """Schema 4 -> 5: index every message's platform ids within its session (the
    ``message_in_session`` sub-database, opened empty with the store). Built from the
    records, which are authoritative (a platform-wide entry may name a later record)."""
    for _key, raw in txn.cursor(db=handles[MESSAGE_IDS]):
        record = _load(_DEC_MESSAGE_IDS, raw)
        for platform, platform_id in record.platform_ids.items():
            txn.put(_in_session_key(platform, record.session_id, platform_id),
                    record.canonical_id.encode(), db=handles[MESSAGE_IN_SESSION])


#: the upgrades from each older schema version (see :class:`LmdbStore`)
MIGRATIONS: Final[Mapping[int, Migration]] = {2: _index_conversations,
                                              3: _add_message_state,
                                              4: _add_ledger,
                                              5: _index_messages_by_session}

_CACHE_LIMIT = 65_536
#: a sub-database with at most this many keys may be cached whole (see _ReadCache)
_COMPLETE_LIMIT = 4_096


class _ReadCache:
    """Decoded answers of read methods, keyed by the caller's arguments.

    Emptied whenever its sub-database is written: every write goes through
    the same store, so the cache is never stale. Routing reads the same few
    routes, agreements and policies for every event; this turns their LMDB
    lookup and msgpack decode into one dict hit.

    With a ``loader``, a sub-database small enough (at most
    :data:`_COMPLETE_LIMIT` keys) is loaded whole after each write and the
    cache is *complete*: a key it lacks is absent from LMDB too, so a miss
    costs no read. Why: user policies are sparse, and every first event of a
    new pair of users looked both up in LMDB (two GIL-releasing reads).
    """

    __slots__ = ("complete", "db", "entries", "loader", "space", "store", "version")

    def __init__(self, store: LmdbStore, db: str,
                 loader: Callable[[], dict[object, Any]] | None = None) -> None:
        self.store = store
        self.db = db
        self.space = store.versioned(db)
        self.version = -1
        self.entries: dict[object, Any] = {}
        self.loader = loader
        self.complete = False

    def current(self) -> dict[object, Any]:
        version = self.space.version
        if version != self.version or len(self.entries) >= _CACHE_LIMIT:
            self.version = version
            loader = self.loader
            if loader is not None and self.store.count(self.db) <= _COMPLETE_LIMIT:
                self.entries = loader()
                self.complete = True
            else:
                self.entries.clear()
                self.complete = False
        return self.entries


_MISSING = object()


class LmdbDirectory:
    """The :class:`~engine.Directory` on an embedded LMDB store (the default).

    Open it with ``await LmdbDirectory.open(path)`` (or :meth:`open_sync`
    outside trio, e.g. for read-only tools). Reads are synchronous, writes
    are group-committed by the store's writer process; see
    :mod:`engine._directory` for the contract.

    Writes that read first (to clean up reverse entries or count sessions)
    wait for queue room *before* reading, then queue their ops with no
    checkpoint in between: concurrent tasks never interleave inside one
    write, and a cancelled write has written nothing.
    """

    def __init__(self, store: LmdbStore, *, secret_box: SecretBox | None = None) -> None:
        """Wrap an open store holding :data:`DIRECTORY_DBS`; prefer :meth:`open`.

        ``secret_box`` encrypts installation credentials before they are stored
        (see :mod:`engine._secrets`); without one they are stored as given."""
        missing = [name for name in DIRECTORY_DBS if name not in store.db_names]
        if missing:
            raise DirectoryError(f"store lacks directory sub-databases {missing}")
        if store.max_key_size < _MAX_KEY:
            raise DirectoryError(
                f"LMDB build takes keys of at most {store.max_key_size} bytes; "
                f"the directory needs {_MAX_KEY}"
            )
        self._store = store
        self._secret_box = secret_box
        self._session_count = store.count(SESSIONS)
        self._wildcard_key = _fit(_pack(WILDCARD_DOMAIN))
        self._routes = _ReadCache(store, ROUTES)
        self._identities = _ReadCache(store, IDENTITIES)
        self._contacts = _ReadCache(store, CONTACTS)
        self._sessions = _ReadCache(store, SESSIONS)
        self._pairs = _ReadCache(store, SESSION_PAIRS)
        self._agreements = _ReadCache(store, AGREEMENTS)
        self._policies = _ReadCache(store, POLICIES, self._all_policies)

    @classmethod
    def open_sync(
        cls,
        path: Path | str,
        *,
        map_size: int = 64 * MiB,
        max_pending: int = 50_000,
        sync: bool = True,
        migrations: Mapping[int, Migration] | None = None,
        schema_version: int = SCHEMA_VERSION,
        secret_box: SecretBox | None = None,
    ) -> LmdbDirectory:
        """Open (creating, migrating) the directory at ``path``; blocks while it does."""
        store = LmdbStore.open(
            Path(path),
            db_names=DIRECTORY_DBS,
            map_size=map_size,
            max_pending=max_pending,
            sync=sync,
            migrations=MIGRATIONS if migrations is None else migrations,
            schema_version=schema_version,
        )
        try:
            return cls(store, secret_box=secret_box)
        except BaseException:
            store.close()
            raise

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        map_size: int = 64 * MiB,
        max_pending: int = 50_000,
        sync: bool = True,
        migrations: Mapping[int, Migration] | None = None,
        schema_version: int = SCHEMA_VERSION,
        secret_box: SecretBox | None = None,
    ) -> LmdbDirectory:
        """Like :meth:`open_sync`, on a worker thread so migrations and fsync don't stall trio."""
        return await trio.to_thread.run_sync(
            lambda: cls.open_sync(
                path,
                map_size=map_size,
                max_pending=max_pending,
                sync=sync,
                migrations=migrations,
                schema_version=schema_version,
                secret_box=secret_box,
            )
        )

    @property
    def schema_version(self) -> int:
        return self._store.schema_version

    @property
    def store(self) -> LmdbStore:
        """The underlying store (for tools and tests; the engine needs only the Protocol)."""
        return self._store

    # ---------------------------------------------------------------- routes

    def get_domain_route(self, domain: str) -> DomainRoute | None:
        """The route for ``domain``, else the ``"*"`` route, else ``None``."""
        cache = self._routes.current()
        found = cache.get(domain, _MISSING)
        if found is not _MISSING:
            return cast(DomainRoute | None, found)
        get = self._store.get
        raw = get(ROUTES, _fit(_pack(domain)))
        if raw is None:
            raw = get(ROUTES, self._wildcard_key)
        route = None if raw is None else _load(_DEC_ROUTE, raw)
        cache[domain] = route
        return route

    def list_domain_routes(self) -> list[DomainRoute]:
        routes = [_load(_DEC_ROUTE, raw) for _, raw in self._store.scan(ROUTES)]
        routes.sort(key=lambda route: route.domain)
        return routes

    async def put_domain_route(self, route: DomainRoute) -> None:
        await self._store.put(ROUTES, _fit(_pack(route.domain)), _pack(route))

    # ------------------------------------------------------------ identities

    def get_identity(self, address: Address) -> PlatformIdentity | None:
        cache = self._identities.current()
        found = cache.get(address, _MISSING)
        if found is not _MISSING:
            return cast(PlatformIdentity | None, found)
        raw = self._store.get(IDENTITIES, _address_key(address))
        identity = None if raw is None else _load(_DEC_IDENTITY, raw)
        cache[address] = identity
        return identity

    def find_address(self, platform: str, tenant: str, user_id: str) -> Address | None:
        raw = self._store.get(IDENTITY_INDEX, _identity_index_key(platform, tenant, user_id))
        return None if raw is None else _load(_DEC_ADDRESS, raw)

    async def put_identity(self, identity: PlatformIdentity) -> None:
        """Store (or replace) an identity; a replaced one's reverse entry is removed."""
        await self._store.throttle()
        key = _address_key(identity.address)
        packed_address = _pack(identity.address)
        index_key = _identity_index_key(identity.platform, identity.tenant, identity.user_id)
        ops: list[Op] = []
        old_raw = self._store.get(IDENTITIES, key)
        if old_raw is not None:
            old = _load(_DEC_IDENTITY, old_raw)
            old_index_key = _identity_index_key(old.platform, old.tenant, old.user_id)
            if old_index_key != index_key:
                ops.extend(self._unindex(IDENTITY_INDEX, old_index_key, packed_address))
        ops.append((IDENTITIES, key, _pack(identity)))
        ops.append((IDENTITY_INDEX, index_key, packed_address))
        self._store.submit(ops)

    async def delete_identity(self, address: Address) -> None:
        await self._store.throttle()
        key = _address_key(address)
        old_raw = self._store.get(IDENTITIES, key)
        if old_raw is None:
            return
        old = _load(_DEC_IDENTITY, old_raw)
        ops: list[Op] = [(IDENTITIES, key, None)]
        ops.extend(self._unindex(
            IDENTITY_INDEX, _identity_index_key(old.platform, old.tenant, old.user_id),
            _pack(address),
        ))
        self._store.submit(ops)

    def _unindex(self, db: str, key: bytes, owner: bytes) -> list[Op]:
        """Delete a reverse entry only if it still names ``owner`` (last writer owns it)."""
        return [(db, key, None)] if self._store.get(db, key) == owner else []

    # -------------------------------------------------------------- contacts

    def get_contact(self, owner: Address, contact: Address) -> ContactRecord | None:
        cache = self._contacts.current()
        found = cache.get((owner, contact), _MISSING)
        if found is not _MISSING:
            return cast(ContactRecord | None, found)
        raw = self._store.get(CONTACTS, _contact_key(owner, contact))
        record = None if raw is None else _load(_DEC_CONTACT, raw)
        cache[owner, contact] = record
        return record

    def list_contacts(self, owner: Address) -> list[ContactRecord]:
        """Every contact of ``owner`` (any state), sorted by contact address."""
        prefix = _owner_prefix(owner)[:_KEEP]
        records = [_load(_DEC_CONTACT, raw) for _, raw in self._store.scan(CONTACTS, prefix)]
        mine = [record for record in records if record.owner == owner]
        mine.sort(key=lambda record: record.contact)
        return mine

    async def put_contact(self, record: ContactRecord) -> None:
        await self._store.put(CONTACTS, _contact_key(record.owner, record.contact), _pack(record))

    # -------------------------------------------------------------- sessions

    def get_session(self, session_id: str) -> SessionRecord | None:
        cache = self._sessions.current()
        found = cache.get(session_id, _MISSING)
        if found is not _MISSING:
            return cast(SessionRecord | None, found)
        raw = self._store.get(SESSIONS, _session_key(session_id))
        record = None if raw is None else _load(_DEC_SESSION, raw)
        cache[session_id] = record
        return record

    def find_session(self, a: Address, b: Address) -> SessionRecord | None:
        """The session of the pair, in either order."""
        session_id = self.find_session_id(a, b)
        return None if session_id is None else self.get_session(session_id)

    def find_session_id(self, a: Address, b: Address) -> str | None:
        """The id of the pair's session (either order), without decoding the record."""
        x, y = (a, b) if a <= b else (b, a)
        cache = self._pairs.current()
        session_id = cache.get((x, y), _MISSING)
        if session_id is _MISSING:
            raw = self._store.get(SESSION_PAIRS, _pair_key(x, y))
            session_id = cache[x, y] = None if raw is None else raw.decode()
        return cast(str | None, session_id)

    @property
    def policy_version(self) -> int:
        """Changes whenever a domain route, an agreement or a user policy is written
        (what :class:`~engine.FederationPolicy` reads), so callers can cache decisions."""
        return (self._routes.space.version + self._agreements.space.version
                + self._policies.space.version)

    def find_session_by_conversation(self, platform: str,
                                     conversation_id: str) -> SessionRecord | None:
        raw = self._store.get(CONVERSATIONS, _conversation_key(platform, conversation_id))
        return None if raw is None else self.get_session(raw.decode())

    def list_sessions(self, *, after: str = "", limit: int = 100) -> list[SessionRecord]:
        """Sessions sorted by id, starting after ``after`` (pagination).

        Keys sort like ids except among ids whose keys share their first 495
        bytes (see :func:`_fit`); such a run is read whole before cutting the
        page, so the answer is exact for any id.
        """
        if limit <= 0:
            self._store.ensure_open()
            return []
        start = (_SESSION_TAG + after.encode())[:_KEEP]
        found: list[SessionRecord] = []
        previous = b""
        while True:
            page = self._store.scan(SESSIONS, _SESSION_TAG, start_after=start, limit=limit + 1)
            for key, raw in page:
                if len(found) >= limit and not _same_group(key, previous):
                    return self._first_sessions(found, limit)
                record = _load(_DEC_SESSION, raw)
                if record.session_id > after:
                    found.append(record)
                previous = key
            if len(page) <= limit:
                return self._first_sessions(found, limit)
            start = page[-1][0]

    @staticmethod
    def _first_sessions(found: list[SessionRecord], limit: int) -> list[SessionRecord]:
        found.sort(key=lambda record: record.session_id)
        return found[:limit]

    def count_sessions(self) -> int:
        self._store.ensure_open()
        return self._session_count

    async def put_session(self, record: SessionRecord) -> None:
        """Store a session; ``a``/``b`` are normalised so that ``a <= b``."""
        if record.b < record.a:
            record = msgspec.structs.replace(record, a=record.b, b=record.a)
        store = self._store
        await store.throttle()
        key = _session_key(record.session_id)
        session_id = record.session_id.encode()
        pair_key = _pair_key(record.a, record.b)
        ops: list[Op] = []
        # The cache holds the stored record when a reader just loaded it (the
        # session actor did, to activate): no second LMDB read for the update.
        old = self._sessions.current().get(record.session_id, _MISSING)
        if old is _MISSING:
            old_raw = store.get(SESSIONS, key)
            old = None if old_raw is None else _load(_DEC_SESSION, old_raw)
        if old is not None:
            old_pair_key = _pair_key(old.a, old.b)
            if old_pair_key != pair_key:
                ops.extend(self._unindex(SESSION_PAIRS, old_pair_key, session_id))
            for platform, conversation_id in old.conversation_ids.items():
                if record.conversation_ids.get(platform) != conversation_id:
                    ops.extend(self._unindex(
                        CONVERSATIONS, _conversation_key(platform, conversation_id), session_id))
        ops.append((SESSIONS, key, _pack(record)))
        ops.append((SESSION_PAIRS, pair_key, session_id))
        for platform, conversation_id in record.conversation_ids.items():
            ops.append((CONVERSATIONS, _conversation_key(platform, conversation_id), session_id))
        store.submit(ops)
        if old is None:
            self._session_count += 1

    # ----------------------------------------------------------- message ids

    def get_message_ids(self, canonical_id: str) -> MessageIdRecord | None:
        raw = self._store.get(MESSAGE_IDS, _fit(_pack(canonical_id)))
        return None if raw is None else _load(_DEC_MESSAGE_IDS, raw)

    def find_canonical_id(self, platform: str, platform_message_id: str, *,
                          session_id: str | None = None) -> str | None:
        if session_id is None:
            raw = self._store.get(MESSAGE_INDEX,
                                  _message_index_key(platform, platform_message_id))
        else:
            raw = self._store.get(MESSAGE_IN_SESSION,
                                  _in_session_key(platform, session_id, platform_message_id))
        if raw is None:
            return None
        # A reverse entry is trusted only while its record still names it: a
        # record replaced after its commit may leave one behind (see put_message_ids).
        canonical_id = raw.decode()
        record = self.get_message_ids(canonical_id)
        if record is None or record.platform_ids.get(platform) != platform_message_id or (
                session_id is not None and record.session_id != session_id):
            return None
        return canonical_id

    async def put_message_ids(self, record: MessageIdRecord) -> None:
        """Store or replace; reverse entries follow ``platform_ids``: each platform id
        platform-wide (``message_index``) and within the record's session
        (``message_in_session``), so that either lookup is one read.

        Written blind unless the id has an uncommitted write: the hot path
        (one record per delivered message, under a new canonical id) then
        never reads LMDB. A record replaced after its commit (a retried
        delivery) may leave its old reverse and age entries behind:
        :meth:`find_canonical_id` ignores a reverse entry its record no longer
        names, and pruning tidies age entries whose record is gone.
        """
        store = self._store
        await store.throttle()
        key = _fit(_pack(record.canonical_id))
        canonical_id = record.canonical_id.encode()
        age_key = _age_key(record)
        ops: list[Op] = []
        pending, old_raw = store.get_pending(MESSAGE_IDS, key)
        entries = _reverse_entries(record)
        if pending and old_raw is not None:
            old = _load(_DEC_MESSAGE_IDS, old_raw)
            old_age_key = _age_key(old)
            if old_age_key != age_key:
                ops.append((MESSAGE_AGE, old_age_key, None))
            kept = set(entries)
            for db, entry_key in _reverse_entries(old):
                if (db, entry_key) not in kept:
                    ops.extend(self._unindex(db, entry_key, canonical_id))
        ops.append((MESSAGE_IDS, key, _pack(record)))
        ops.append((MESSAGE_AGE, age_key, canonical_id))
        for db, entry_key in entries:
            ops.append((db, entry_key, canonical_id))
        store.submit(ops)

    async def prune_message_ids(self, older_than: float) -> int:
        """Delete records with ``created_at < older_than`` and their messages' state; also
        the state of messages without a record, first written before ``older_than``.
        Return how many records were deleted.

        Walks the age index (records' and states' entries) only up to
        ``older_than``; each candidate is checked against its record's exact
        ``created_at``, or its states' when it has no record.
        """
        store = self._store
        await store.throttle()
        bound = _time_key(older_than)
        ops: list[Op] = []
        pruned_ids: set[bytes] = set()  # a replaced record may have several age entries
        start: bytes | None = None
        page_size = 1024
        more = True
        while more:
            page = store.scan(MESSAGE_AGE, start_after=start, limit=page_size)
            more = len(page) == page_size
            for age_key, canonical_id in page:
                if age_key[:8] >= bound:
                    more = False
                    break
                record_key = _fit(_pack(canonical_id.decode()))
                raw = None if canonical_id in pruned_ids else store.get(MESSAGE_IDS, record_key)
                if raw is None:  # no record: old states go by their own age
                    ops.extend(self._prune_states(canonical_id.decode(), older_than))
                    ops.append((MESSAGE_AGE, age_key, None))
                    continue
                record = _load(_DEC_MESSAGE_IDS, raw)
                if not record.created_at < older_than:
                    continue
                pruned_ids.add(canonical_id)
                ops.append((MESSAGE_IDS, record_key, None))
                ops.append((MESSAGE_AGE, age_key, None))
                ops.extend(self._prune_states(canonical_id.decode(), None))
                for db, entry_key in _reverse_entries(record):
                    ops.extend(self._unindex(db, entry_key, canonical_id))
            start = page[-1][0] if page else None
        store.submit(ops)
        return len(pruned_ids)

    def _states(self, canonical_id: str) -> list[MessageState]:
        prefix = _pack(canonical_id)[:_KEEP]
        found = [_load(_DEC_MESSAGE_STATE, raw)
                 for _, raw in self._store.scan(MESSAGE_STATE, prefix)]
        return [state for state in found if state.canonical_id == canonical_id]

    def _prune_states(self, canonical_id: str, older_than: float | None) -> list[Op]:
        """Ops deleting a message's states (only those first written before ``older_than``,
        unless ``None``) with their age entries (a state may share its record's entry)."""
        ops: list[Op] = []
        for state in self._states(canonical_id):
            if older_than is None or state.created_at < older_than:
                ops.append((MESSAGE_STATE, _state_key(canonical_id, state.platform), None))
                ops.append((MESSAGE_AGE, _age_key(state), None))
        return ops

    # ------------------------------------------------------ message state

    def get_message_state(self, canonical_id: str, platform: str) -> dict[str, str]:
        raw = self._store.get(MESSAGE_STATE, _state_key(canonical_id, platform))
        return {} if raw is None else _load(_DEC_MESSAGE_STATE, raw).values

    async def put_message_state(self, canonical_id: str, platform: str,
                                changes: Mapping[str, str | None], *, now: float) -> None:
        """Merge ``changes`` (``None`` deletes a key; a state left empty is deleted).

        Reads the current state after waiting for queue room and queues the new
        one with no checkpoint in between, so concurrent merges never lose a key.
        """
        store = self._store
        await store.throttle()
        key = _state_key(canonical_id, platform)
        raw = store.get(MESSAGE_STATE, key)
        old = None if raw is None else _load(_DEC_MESSAGE_STATE, raw)
        values = {} if old is None else dict(old.values)
        for name, value in changes.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        if not values:
            if old is not None:
                ops: list[Op] = [(MESSAGE_STATE, key, None)]
                record_raw = store.get(MESSAGE_IDS, _fit(_pack(canonical_id)))
                record = None if record_raw is None else _load(_DEC_MESSAGE_IDS, record_raw)
                if record is None or _age_key(record) != _age_key(old):
                    ops.append((MESSAGE_AGE, _age_key(old), None))  # not the record's too
                store.submit(ops)
            return
        state = MessageState(canonical_id=canonical_id, platform=platform, values=values,
                             created_at=now if old is None else old.created_at)
        ops = [(MESSAGE_STATE, key, _pack(state))]
        if old is None:
            ops.append((MESSAGE_AGE, _age_key(state), canonical_id.encode()))
        store.submit(ops)

    # -------------------------------------------------------------- policies

    def get_domain_agreement(self, domain_a: str, domain_b: str) -> DomainAgreement | None:
        """The agreement of the pair, in either order."""
        if domain_b < domain_a:
            domain_a, domain_b = domain_b, domain_a
        cache = self._agreements.current()
        found = cache.get((domain_a, domain_b), _MISSING)
        if found is not _MISSING:
            return cast(DomainAgreement | None, found)
        raw = self._store.get(AGREEMENTS, _agreement_key(domain_a, domain_b))
        agreement = None if raw is None else _load(_DEC_AGREEMENT, raw)
        cache[domain_a, domain_b] = agreement
        return agreement

    def list_domain_agreements(self) -> list[DomainAgreement]:
        agreements = [_load(_DEC_AGREEMENT, raw) for _, raw in self._store.scan(AGREEMENTS)]
        agreements.sort(key=lambda agreement: (agreement.domain_a, agreement.domain_b))
        return agreements

    async def put_domain_agreement(self, agreement: DomainAgreement) -> None:
        """Store an agreement, normalised so that ``domain_a <= domain_b``."""
        if agreement.domain_b < agreement.domain_a:
            agreement = msgspec.structs.replace(
                agreement, domain_a=agreement.domain_b, domain_b=agreement.domain_a
            )
        key = _agreement_key(agreement.domain_a, agreement.domain_b)
        await self._store.put(AGREEMENTS, key, _pack(agreement))

    def get_user_policy(self, address: Address) -> UserPolicy | None:
        policies = self._policies
        cache = policies.current()
        found = cache.get(address, _MISSING)
        if found is not _MISSING:
            return cast(UserPolicy | None, found)
        if policies.complete:
            return None
        raw = self._store.get(POLICIES, _address_key(address))
        policy = None if raw is None else _load(_DEC_POLICY, raw)
        cache[address] = policy
        return policy

    def _all_policies(self) -> dict[object, Any]:
        policies = (_load(_DEC_POLICY, raw) for _, raw in self._store.scan(POLICIES))
        return {policy.address: policy for policy in policies}

    async def put_user_policy(self, policy: UserPolicy) -> None:
        await self._store.put(POLICIES, _address_key(policy.address), _pack(policy))

    # ----------------------------------------------------------------- ledger

    async def put_ledger(self, record: LedgerRecord) -> None:
        await self._store.put(LEDGER, _fit(_pack(record.event_id)), _pack(record))

    async def resolve_ledger(self, event_id: str) -> None:
        await self._store.delete(LEDGER, _fit(_pack(event_id)))

    def open_ledger(self) -> list[LedgerRecord]:
        found = [_load(_DEC_LEDGER, raw) for _, raw in self._store.scan(LEDGER)]
        found.sort(key=lambda record: (record.accepted_at, record.event_id))
        return found

    # --------------------------------------------------------- installations

    def get_installation(self, platform: str, tenant: str) -> Installation | None:
        raw = self._store.get(INSTALLATIONS, _installation_key(platform, tenant))
        return None if raw is None else self._opened(_load(_DEC_INSTALLATION, raw))

    def list_installations(self, platform: str | None = None) -> list[Installation]:
        """Installations (of ``platform``, if given), sorted by platform then tenant."""
        prefix = b"" if platform is None else _pack(platform)[:_KEEP]
        found = [_load(_DEC_INSTALLATION, raw)
                 for _, raw in self._store.scan(INSTALLATIONS, prefix)]
        if platform is not None:
            found = [installation for installation in found if installation.platform == platform]
        found.sort(key=lambda installation: (installation.platform, installation.tenant))
        return [self._opened(installation) for installation in found]

    async def put_installation(self, installation: Installation) -> None:
        key = _installation_key(installation.platform, installation.tenant)
        box = self._secret_box
        if box is not None:
            installation = msgspec.structs.replace(installation, credentials={
                name: box.encrypt(value) for name, value in installation.credentials.items()})
        await self._store.put(INSTALLATIONS, key, _pack(installation))

    def _opened(self, stored: Installation) -> Installation:
        """``stored`` with its credentials decrypted."""
        box = self._secret_box
        if box is None:
            if any(v.startswith(ENCRYPTED_PREFIX) for v in stored.credentials.values()):
                raise SecretKeyError("installation credentials are encrypted; configure the "
                                     "secrets key to read them")
            return stored
        return msgspec.structs.replace(stored, credentials={
            name: box.decrypt(value) for name, value in stored.credentials.items()})

    async def rotate_secrets(self) -> int:
        """Re-encrypt every installation's credentials with the box's first key (and
        encrypt any stored before encryption); return how many installations."""
        box = self._secret_box
        if box is None:
            raise SecretKeyError("rotating needs the secrets key(s)")
        rotated = [(key, _load(_DEC_INSTALLATION, raw))
                   for key, raw in self._store.scan(INSTALLATIONS)]
        ops: list[Op] = [
            (INSTALLATIONS, key, _pack(msgspec.structs.replace(installation, credentials={
                name: box.rotate(value) for name, value in installation.credentials.items()})))
            for key, installation in rotated]
        await self._store.write(ops)
        return len(ops)

    # ------------------------------------------------------------- lifecycle

    def durable_mark(self) -> int:
        return self._store.last_seq

    async def wait_durable(self, mark: int) -> None:
        await self._store.wait_committed(mark)

    async def flush(self) -> None:
        """Wait until every write made so far is durable."""
        await self._store.flush()

    async def aclose(self) -> None:
        """Flush and release resources; later calls raise ``DirectoryError``."""
        await self._store.aclose()

    def close(self) -> None:
        """Synchronous :meth:`aclose`, for use outside trio."""
        self._store.close()

    def __repr__(self) -> str:
        return f"<LmdbDirectory {self._store!r}>"
