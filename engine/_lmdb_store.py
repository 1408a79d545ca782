"""An embedded LMDB key-value store with group-committed write-behind.

Why this shape:

- **Reads stay on the caller's thread.** LMDB reads are memory-mapped lookups
  costing well under a microsecond; handing them to a worker thread would cost
  far more than the read. ``get``/``scan`` therefore run synchronously.
- **Writes never block the event loop on ``fsync``.** A write lands in the
  *current generation*: one dict per sub-database, key -> value (``None`` for
  a delete), so the caller reads its own writes at once and each key's last
  value wins. Whole generations are handed to a single writer thread, one at a
  time, and committed in one transaction each (group commit): while the writer
  commits one generation (and then sleeps the group-commit window), the next
  one gathers every write made meanwhile. When a commit lands, the trio side
  drops that generation in O(1) (no per-write bookkeeping), wakes ``flush()``
  waiters and hands over the next generation. A write therefore costs a dict
  store per op and allocates nothing the collector tracks; the event loop
  pays one thread wake-up per generation.
- **The puts run in a writer process.** py-lmdb releases the GIL around
  every put, so a writer *thread* starved while the event loop was busy
  (see ``_lmdb_writer``). The writer thread ships each generation to a child
  process as one frame and waits for its reply; the child commits it with
  LMDB's own speed and durability (``sync``), and the trio side learns of
  the commit as before. Reads stay in this process (LMDB is multi-process
  safe: after a commit the next read transaction sees it).
- **Backpressure instead of unbounded memory.** Writes return immediately
  unless ``max_pending`` operations are still uncommitted; then they wait for
  room *before* applying, so a cancelled write has written nothing.
- **The map grows itself.** ``MapFullError`` never reaches a caller: the writer
  process doubles the map and retries the generation; this process adopts
  the new size at its next read transaction.
- **Writer failures are loud.** Any other error in the writer (a failed
  commit, a writer process that could not start or died) is kept, logged
  once and raised (chained) from every later write and ``flush()``.

Reads use one cached read-only transaction with one cursor per sub-database
(``Cursor.get`` avoids the keyword parsing of ``Transaction.get(db=...)``,
roughly halving the cost of a point read). The cached transaction is dropped
after every commit the trio side learns about (so the next read sees it and
old pages can be reused) and before every map resize (LMDB forbids resizing
while this process has an active read transaction); a ``threading.Lock``
keeps reads and map-size adoption from overlapping.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, TypeAlias

import lmdb
import msgspec
import trio

from . import _lmdb_writer
from ._errors import DirectoryError

__all__ = ["LmdbStore", "MiB", "Migration", "Op", "StoreHandles"]

logger = logging.getLogger("interlink.directory")

# Resolved paths of the stores open in this process (see LmdbStore.open).
_open_paths: set[Path] = set()
_open_paths_lock = threading.Lock()

MiB: Final = 1024 * 1024
META_DB: Final = "meta"
SCHEMA_KEY: Final = b"schema_version"

#: Sub-database handles by name, as handed to migration hooks.
StoreHandles: TypeAlias = Mapping[str, lmdb._Database]
#: ``migrations[v]`` upgrades a store from schema ``v - 1`` to ``v`` inside the given write txn.
Migration: TypeAlias = "Callable[[lmdb.Transaction[bytes], StoreHandles], None]"
#: ``(db, key, value)``; a ``None`` value deletes the key.
Op: TypeAlias = tuple[str, bytes, bytes | None]

#: the writer commits at most this often (seconds): the group-commit window
COMMIT_INTERVAL = 0.002
#: how long a stopping writer process may take to commit, sync and exit (seconds)
WRITER_EXIT_TIMEOUT = 60.0


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


#: key -> value, or None for a delete: one generation's writes to one sub-database
_Writes: TypeAlias = dict[bytes, "bytes | None"]


class _Space:
    """One named sub-database: its handle, its uncommitted writes and its read cursor."""

    __slots__ = ("current", "cursor", "handle", "in_flight", "index", "name", "version")

    def __init__(self, name: str, handle: lmdb._Database) -> None:
        self.name = name
        self.handle = handle
        #: position in the store's list of spaces (and in a generation's writes)
        self.index = 0
        #: bumped by every write to this sub-database (read caches compare it)
        self.version = 0
        #: writes of the generation still gathering; read first
        self.current: _Writes = {}
        #: writes of the generation handed to the writer, until it is committed
        self.in_flight: _Writes = {}
        #: cursor in the store's cached read txn; None when that txn was dropped
        self.cursor: lmdb.Cursor[bytes] | None = None


class _Generation:
    """The writes handed to the writer in one go; committed together or not at all."""

    __slots__ = ("last_seq", "token", "writes")

    def __init__(
        self, last_seq: int, token: trio.lowlevel.TrioToken, writes: list[tuple[int, _Writes]]
    ) -> None:
        self.last_seq = last_seq
        self.token = token
        #: (space index, that space's writes), for the spaces written to
        self.writes = writes


_request_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(_lmdb_writer.Reply)


def _encode_version(version: int) -> bytes:
    return str(version).encode("ascii")


def _decode_version(raw: bytes, path: Path) -> int:
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise DirectoryError(
            f"LMDB store at {path} has an unreadable schema version record"
        ) from None


class LmdbStore:
    """Named LMDB sub-databases with read-your-writes and group-committed writes.

    Open it with :meth:`open`. Reads (:meth:`get`, :meth:`scan`, :meth:`count`)
    are synchronous and must run on one thread (the trio thread while writes
    happen). Writes are async and must run inside ``trio.run``.
    """

    def __init__(
        self,
        *,
        path: Path,
        env: lmdb.Environment,
        spaces: dict[str, _Space],
        schema_version: int,
        max_pending: int,
        sync: bool = True,
    ) -> None:
        """Wrap an already opened environment; use :meth:`open` instead."""
        self._path = path
        self._sync = sync
        self._real_path = path.resolve()
        self._env = env
        self._spaces = spaces
        self._space_list = list(spaces.values())
        for index, space in enumerate(self._space_list):
            space.index = index
        self._schema_version = schema_version
        self._max_pending = max_pending
        self._max_key_size = env.max_key_size()
        #: the map size the writer process last reported (it grows the map)
        self._map_size: int = env.info()["map_size"]

        # Read side (trio thread), guarded against map resizes by _read_lock.
        self._read_lock = threading.Lock()
        self._read_txn: lmdb.Transaction[bytes] | None = None

        # Write side, trio thread.
        self._last_seq = 0  # sequence number of the newest op written
        self._committed = 0  # newest sequence number known to be committed
        self._handed_over = 0  # newest sequence number handed to the writer
        self._gathering: list[_Space] = []  # spaces whose current generation has writes
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self._tiebreak = itertools.count()
        self._token: trio.lowlevel.TrioToken | None = None
        self._closed = False

        # Shared with the writer thread, under the condition's lock: the
        # generations handed over and not yet taken (one, except at close).
        self._queue_cond = threading.Condition(threading.Lock())
        self._queue: deque[_Generation] = deque()
        self._stopping = False
        #: generations handed to the writer thread (each one wake-up); for tests
        self.writer_wakeups = 0
        # Written by the writer thread only.
        self._child: subprocess.Popen[bytes] | None = None
        self._frames = 0
        self._thread_committed = 0
        self._error: BaseException | None = None
        self._writer_failed = trio.Event()

        try:
            self._token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            self._token = None
        self._writer = threading.Thread(
            target=self._run_writer, name=f"interlink-lmdb-writer[{path.name}]", daemon=True
        )
        self._writer.start()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        db_names: Sequence[str],
        map_size: int = 64 * MiB,
        max_pending: int = 50_000,
        sync: bool = True,
        migrations: Mapping[int, Migration] | None = None,
        schema_version: int,
    ) -> LmdbStore:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        Runs the hooks ``migrations[v]`` for every ``v`` from the stored
        version + 1 to ``schema_version`` in one write transaction, so a
        failed migration leaves the store untouched. Refuses a store written
        by a newer schema. Callable inside or outside ``trio.run``.
        """
        names = list(db_names)
        if META_DB in names:
            raise DirectoryError(f"sub-database name {META_DB!r} is reserved for the store")
        if len(set(names)) != len(names) or not all(names):
            raise DirectoryError("sub-database names must be unique and non-empty")
        if schema_version < 1:
            raise DirectoryError(f"schema version must be >= 1, not {schema_version}")
        if max_pending < 1:
            raise DirectoryError(f"max_pending must be >= 1, not {max_pending}")
        if map_size < 1:
            raise DirectoryError(f"map_size must be positive, not {map_size}")
        try:
            path.mkdir(parents=True, exist_ok=True)
            real_path = path.resolve()
        except OSError as exc:
            raise DirectoryError(f"cannot open LMDB store at {path}: {exc}") from exc
        with _open_paths_lock:
            # LMDB forbids opening one environment twice in a process: closing
            # either copy would drop the other's file locks.
            if real_path in _open_paths:
                raise DirectoryError(f"LMDB store at {path} is already open in this process")
            _open_paths.add(real_path)
        try:
            try:
                env = lmdb.open(
                    str(path), map_size=map_size, max_dbs=len(names) + 1, sync=sync, subdir=True
                )
            except lmdb.Error as exc:
                raise DirectoryError(f"cannot open LMDB store at {path}: {exc}") from exc
            try:
                handles = cls._prepare(env, path, names, schema_version, migrations or {})
                spaces = {name: _Space(name, handles[name]) for name in names}
                return cls(
                    path=path,
                    env=env,
                    spaces=spaces,
                    schema_version=schema_version,
                    max_pending=max_pending,
                    sync=sync,
                )
            except BaseException:
                env.close()
                raise
        except BaseException:
            with _open_paths_lock:
                _open_paths.discard(real_path)
            raise

    @staticmethod
    def _prepare(
        env: lmdb.Environment,
        path: Path,
        names: list[str],
        schema_version: int,
        migrations: Mapping[int, Migration],
    ) -> dict[str, lmdb._Database]:
        """Open the sub-databases and check/migrate the schema in one write txn."""
        while True:
            txn = env.begin(write=True)
            try:
                meta = env.open_db(META_DB.encode(), txn=txn)
                handles = {name: env.open_db(name.encode(), txn=txn) for name in names}
                raw = txn.get(SCHEMA_KEY, db=meta)
                if raw is None:
                    txn.put(SCHEMA_KEY, _encode_version(schema_version), db=meta)
                else:
                    stored = _decode_version(raw, path)
                    if stored > schema_version:
                        raise DirectoryError(
                            f"LMDB store at {path} has schema version {stored}, newer than "
                            f"this code's version {schema_version}; refusing to open it"
                        )
                    if stored < schema_version:
                        _migrate(txn, handles, path, stored, schema_version, migrations)
                        txn.put(SCHEMA_KEY, _encode_version(schema_version), db=meta)
                txn.commit()
                return handles
            except lmdb.MapFullError:
                txn.abort()
                env.set_mapsize(env.info()["map_size"] * 2)
            except lmdb.Error as exc:
                txn.abort()
                raise DirectoryError(f"cannot prepare LMDB store at {path}: {exc}") from exc
            except BaseException:
                txn.abort()
                raise

    # -------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def schema_version(self) -> int:
        """The schema version the store holds (the code's version, after migrations)."""
        return self._schema_version

    @property
    def db_names(self) -> tuple[str, ...]:
        """The sub-databases callers may use (``meta`` is the store's own)."""
        return tuple(self._spaces)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_key_size(self) -> int:
        """The longest key LMDB accepts (511 bytes in the bundled build)."""
        return self._max_key_size

    @property
    def map_size(self) -> int:
        """The current size of the memory map in bytes (the writer grows it on demand)."""
        return self._map_size

    @property
    def pending(self) -> int:
        """Operations queued but not yet known (to the trio side) to be committed."""
        return self._last_seq - self._committed

    def ensure_open(self) -> None:
        """Raise :class:`DirectoryError` if the store is closed."""
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> DirectoryError:
        return DirectoryError(f"LMDB store at {self._path} is closed")

    def versioned(self, db: str) -> Versioned:
        """An object whose ``version`` changes whenever ``db`` is written (for read caches)."""
        return self._space(db)

    def _space(self, db: str) -> _Space:
        try:
            return self._spaces[db]
        except KeyError:
            raise DirectoryError(f"unknown sub-database {db!r}") from None

    # -------------------------------------------------------------------- reads

    def get(self, db: str, key: bytes) -> bytes | None:
        """The value under ``key`` (pending writes first), or ``None``."""
        pending, value = self.get_pending(db, key)
        if pending:
            return value
        space = self._spaces[db]
        # acquire/release rather than ``with``: measurably cheaper on this hot path
        lock = self._read_lock
        lock.acquire()
        try:
            cursor = space.cursor
            if cursor is None:
                cursor = self._open_cursor(space)
            return cursor.get(key)
        except lmdb.Error as exc:
            raise DirectoryError(f"LMDB read from {db!r} failed: {exc}") from exc
        finally:
            lock.release()

    def get_pending(self, db: str, key: bytes) -> tuple[bool, bytes | None]:
        """``(True, value)`` if ``key`` has an uncommitted write (``None``: a delete), else
        ``(False, None)``. Never reads LMDB: for callers that only need recent writes.

        Why it exists: py-lmdb releases the GIL around every read, and while the
        writer thread is about, getting it back costs the event loop tens of
        microseconds; a hot path that can do without the committed value avoids that.
        """
        space = self._spaces.get(db)
        if space is None:
            raise DirectoryError(f"unknown sub-database {db!r}")
        # `in` before indexing: a pending delete is a present key whose value is None
        current = space.current
        if current and key in current:
            return True, current[key]
        in_flight = space.in_flight
        if in_flight and key in in_flight:
            return True, in_flight[key]
        return False, None

    def scan(
        self,
        db: str,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        limit: int | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix`` (and is > ``start_after``), sorted by key.

        Pending writes are merged in: a pending put shows its value, a pending
        delete hides the committed item.
        """
        space = self._space(db)
        if limit is not None and limit <= 0:
            self.ensure_open()
            return []
        pending: list[tuple[bytes, bytes | None]] = []
        uncommitted = self._uncommitted(space)
        if uncommitted:
            pending = sorted(
                (key, value)
                for key, value in uncommitted.items()
                if key.startswith(prefix) and (start_after is None or key > start_after)
            )
        seek = prefix if start_after is None or start_after < prefix else start_after
        out: list[tuple[bytes, bytes]] = []
        cap = -1 if limit is None else limit
        i = 0
        n = len(pending)
        try:
            with self._read_lock:
                cursor = space.cursor
                if cursor is None:
                    cursor = self._open_cursor(space)
                found = cursor.set_range(seek) if seek else cursor.first()
                while found:
                    key = cursor.key()
                    if not key.startswith(prefix):
                        break
                    if start_after is not None and key <= start_after:
                        found = cursor.next()
                        continue
                    while i < n and pending[i][0] < key:
                        pkey, pvalue = pending[i]
                        i += 1
                        if pvalue is not None:
                            out.append((pkey, pvalue))
                            if len(out) == cap:
                                return out
                    if i < n and pending[i][0] == key:
                        pvalue = pending[i][1]
                        i += 1
                        if pvalue is not None:
                            out.append((key, pvalue))
                    else:
                        out.append((key, cursor.value()))
                    if len(out) == cap:
                        return out
                    found = cursor.next()
        except lmdb.Error as exc:
            raise DirectoryError(f"LMDB scan of {db!r} failed: {exc}") from exc
        for pkey, pvalue in pending[i:]:
            if pvalue is not None:
                out.append((pkey, pvalue))
                if len(out) == cap:
                    break
        return out

    def count(self, db: str) -> int:
        """The exact number of keys in ``db``, pending writes included.

        O(1) in the committed data plus O(pending writes to ``db``).
        """
        space = self._space(db)
        try:
            with self._read_lock:
                cursor = space.cursor
                if cursor is None:
                    cursor = self._open_cursor(space)
                txn = self._read_txn
                assert txn is not None  # _open_cursor began it and the lock keeps it alive
                total = txn.stat(space.handle)["entries"]
                for key, value in self._uncommitted(space).items():
                    committed = cursor.get(key) is not None
                    if value is None and committed:
                        total -= 1
                    elif value is not None and not committed:
                        total += 1
                return total
        except lmdb.Error as exc:
            raise DirectoryError(f"LMDB count of {db!r} failed: {exc}") from exc

    @staticmethod
    def _uncommitted(space: _Space) -> _Writes:
        """``space``'s writes not yet committed, the newest value per key."""
        if not space.in_flight:
            return space.current
        if not space.current:
            return space.in_flight
        return space.in_flight | space.current

    def _open_cursor(self, space: _Space) -> lmdb.Cursor[bytes]:
        """Create ``space``'s cursor, beginning the shared read txn if needed (lock held)."""
        txn = self._read_txn
        if txn is None:
            if self._closed:
                raise self._closed_error()
            try:
                txn = self._env.begin(buffers=False)
            except lmdb.MapResizedError:
                # The writer process grew the map: adopt its size (allowed
                # now, with no read txn of ours active) and read again.
                self._env.set_mapsize(0)
                txn = self._env.begin(buffers=False)
            self._read_txn = txn
        cursor = space.cursor = txn.cursor(db=space.handle)
        return cursor

    def _drop_reader(self) -> None:
        """End the cached read txn so later reads see new commits (lock held)."""
        txn = self._read_txn
        if txn is not None:
            self._read_txn = None
            for space in self._spaces.values():
                space.cursor = None
            txn.abort()

    # ------------------------------------------------------------------- writes

    async def put(self, db: str, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``; visible to reads at once, durable after :meth:`flush`."""
        await self.write([(db, key, value)])

    async def delete(self, db: str, key: bytes) -> None:
        """Remove ``key`` (a no-op if absent); visible at once, durable after :meth:`flush`."""
        await self.write([(db, key, None)])

    async def write(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` atomically: visible together on return, committed together later.

        Waits first if the queue is full (backpressure). Cancellation can only
        strike during that wait, before anything is written; once the ops are
        applied the call returns without another checkpoint.
        """
        await self.throttle()
        self.submit(ops)

    def submit(self, ops: Sequence[Op]) -> int:
        """Make ``ops`` visible and queue them for commit; never waits.

        For read-modify-write callers: ``await throttle()``, then read, then
        ``submit``, with no checkpoint between the read and the write.
        Returns the sequence number of the last op (the newest one if ``ops``
        is empty). Must run inside ``trio.run``.
        """
        if self._closed:
            raise self._closed_error()
        if self._error is not None:
            raise self._failed_error()
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            raise DirectoryError("LMDB store writes must run inside trio.run") from None
        spaces = self._spaces
        max_key = self._max_key_size
        for db, key, _ in ops:  # check everything first: all ops are written or none
            if db not in spaces:
                raise DirectoryError(f"unknown sub-database {db!r}")
            if not 0 < len(key) <= max_key:
                raise DirectoryError(
                    f"key for {db!r} is {len(key)} bytes; LMDB keys must be 1-{max_key} bytes"
                )
        if not ops:
            return self._last_seq
        self._token = token
        gathering = self._gathering
        for db, key, value in ops:
            space = spaces[db]
            space.version += 1
            current = space.current
            if not current:
                gathering.append(space)
            current[key] = value
        self._last_seq += len(ops)
        # Nothing in flight: the writer idles, so this generation goes at once.
        # Otherwise it gathers until the commit in flight lands (_on_committed).
        if self._handed_over == self._committed:
            self._hand_over()
        return self._last_seq

    def _hand_over(self) -> None:
        """Give the current generation to the writer thread and start a new one."""
        token = self._token
        assert token is not None  # set by the submit that started the generation
        writes: list[tuple[int, _Writes]] = []
        for space in self._gathering:
            writes.append((space.index, space.current))
            space.in_flight = space.current
            space.current = {}
        self._gathering = []
        self._handed_over = self._last_seq
        self.writer_wakeups += 1
        with self._queue_cond:
            self._queue.append(_Generation(self._last_seq, token, writes))
            self._queue_cond.notify()

    async def throttle(self) -> None:
        """Wait until fewer than ``max_pending`` ops are uncommitted (backpressure).

        Always honours a pending cancellation, but yields only when it has to wait.
        """
        if self._last_seq - self._committed < self._max_pending:
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        while self._last_seq - self._committed >= self._max_pending:
            await self._wait_committed(self._last_seq - self._max_pending + 1)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest write (see :meth:`wait_committed`)."""
        return self._last_seq

    async def wait_committed(self, seq: int) -> None:
        """Wait until the writes up to sequence number ``seq`` are committed; returns at
        once (no checkpoint) when they are."""
        if self._committed < seq:
            await self._wait_committed(seq)

    async def flush(self) -> None:
        """Wait until every write made before this call is committed (durable with sync=True)."""
        if self._closed:
            raise self._closed_error()
        if self._committed >= self._last_seq:
            await trio.lowlevel.checkpoint()
            return
        await self._wait_committed(self._last_seq)

    async def _wait_committed(self, target: int) -> None:
        if self._committed >= target:
            return
        if self._error is not None:
            raise self._failed_error()
        event = trio.Event()
        heapq.heappush(self._waiters, (target, next(self._tiebreak), event))
        await event.wait()
        if self._committed < target:
            if self._error is not None:
                raise self._failed_error()
            raise self._closed_error()

    def _failed_error(self) -> DirectoryError:
        error = DirectoryError(
            f"the LMDB writer for {self._path} failed; writes are no longer accepted"
        )
        error.__cause__ = self._error
        return error

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Flush, stop the writer thread and close the environment (idempotent).

        Raises the writer's failure, if any, after closing.
        """
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and close (idempotent, sync).

        Usable outside trio; inside trio it blocks until queued writes commit,
        so prefer :meth:`aclose` there.
        """
        if self._closed:
            return
        if self._gathering and self._error is None:
            self._hand_over()  # queued behind the one in flight, if any
        with self._queue_cond:
            self._stopping = True
            self._queue_cond.notify()
        self._writer.join()
        if self._error is None:
            self._committed = max(self._committed, self._thread_committed)
        self._closed = True
        with self._read_lock:
            self._drop_reader()
            for space in self._spaces.values():
                space.current = {}
                space.in_flight = {}
            self._gathering = []
            try:
                self._env.close()  # the writer process committed and synced before it exited
            finally:
                with _open_paths_lock:
                    _open_paths.discard(self._real_path)
        self._notify(self._token, self._wake_all)

    # ------------------------------------------------------- writer thread side

    def _run_writer(self) -> None:
        """The writer thread: have each generation committed, in order, until stopped."""
        try:
            self._child = self._start_child()
        except BaseException as exc:
            self._record_failure(exc, None)
            return
        try:
            self._serve_queue()
        finally:
            self._stop_child(self._child)

    def _serve_queue(self) -> None:
        queue = self._queue
        while True:
            with self._queue_cond:
                while not queue and not self._stopping:
                    self._queue_cond.wait()
                if not queue:
                    return
                generation = queue.popleft()
            try:
                self._commit(generation.writes)
            except BaseException as exc:
                self._record_failure(exc, generation)
                return
            if not self._stopping:
                # Group commit: the trio side hands over the next generation
                # when it hears of this commit, so this window lets writes
                # gather instead of one txn (and fsync, and wake-up of the
                # trio thread) per write.
                time.sleep(COMMIT_INTERVAL)
            self._thread_committed = generation.last_seq
            self._notify(generation.token, self._on_committed, generation)

    def _start_child(self) -> subprocess.Popen[bytes]:
        """Start the writer process and wait for it to report the store open."""
        config = _lmdb_writer.Config(
            path=str(self._path), map_size=self._map_size, sync=self._sync,
            db_names=[space.name for space in self._space_list])
        try:
            child = subprocess.Popen(
                [sys.executable, _lmdb_writer.__file__, msgspec.json.encode(config).decode()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                # Its own session: a terminal's Ctrl-C reaches the process
                # group, and only this process decides when its writer stops.
                start_new_session=True)
        except OSError as exc:
            raise DirectoryError(f"cannot start the LMDB writer process: {exc}") from exc
        try:
            self._take_reply(child)
        except BaseException:
            self._stop_child(child)
            raise
        return child

    def _commit(self, writes: list[tuple[int, _Writes]]) -> None:
        """Have the writer process commit one generation's ``writes`` in one write txn."""
        child = self._child
        assert child is not None and child.stdin is not None
        self._frames += 1
        body = _request_encoder.encode(_lmdb_writer.Request(self._frames, writes))
        try:
            _lmdb_writer.write_frame(child.stdin, body)  # type: ignore[arg-type]
        except OSError:  # a broken pipe: the process is gone; its status says why
            raise self._child_gone(child) from None
        self._take_reply(child)

    def _take_reply(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        try:
            body = _lmdb_writer.read_frame(child.stdout)  # type: ignore[arg-type]
        except (OSError, EOFError, ValueError):
            body = None
        if body is None:
            raise self._child_gone(child)
        reply = _reply_decoder.decode(body)
        if reply.error is not None:
            error_type, message = reply.error
            raise DirectoryError(f"the LMDB writer process failed: {error_type}: {message}")
        if reply.map_size > self._map_size:
            self._map_size = reply.map_size
            logger.info("directory map grown", extra={
                "event": "directory.map_grown", "path": str(self._path),
                "map_size": reply.map_size})

    def _child_gone(self, child: subprocess.Popen[bytes]) -> DirectoryError:
        try:
            status = child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            status = child.wait()
        return DirectoryError(f"the LMDB writer process for {self._path} exited (status {status})")

    def _stop_child(self, child: subprocess.Popen[bytes]) -> None:
        """End of input tells the writer process to sync and exit; wait for it."""
        with contextlib.suppress(OSError):
            if child.stdin is not None:
                child.stdin.close()
        try:
            child.wait(timeout=WRITER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.error("LMDB writer process did not exit; killed", extra={
                "event": "directory.writer_killed", "path": str(self._path)})
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    def _record_failure(self, exc: BaseException, generation: _Generation | None) -> None:
        self._error = exc
        logger.error(
            "directory writer failed; later writes will be refused",
            extra={
                "event": "directory.writer_failed",
                "path": str(self._path),
                "error_type": type(exc).__name__,
                "lost_ops": 0 if generation is None else sum(
                    len(ops) for _, ops in generation.writes),
            },
            exc_info=exc,
        )
        self._notify(self._token if generation is None else generation.token, self._wake_all)

    @staticmethod
    def _notify(
        token: trio.lowlevel.TrioToken | None, fn: Callable[..., object], *args: object
    ) -> None:
        """Run ``fn`` on the trio thread; a finished run has nobody left to tell."""
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(fn, *args)

    # ----------------------------------------------- trio side, called by writer

    def _on_committed(self, generation: _Generation) -> None:
        """The writer committed ``generation``: drop it, wake waiters, hand over the next."""
        seq = generation.last_seq
        if seq <= self._committed or self._closed:
            return
        self._committed = seq
        with self._read_lock:
            self._drop_reader()  # later reads must see the commit, now that its writes go
        spaces = self._space_list
        for index, _ in generation.writes:
            spaces[index].in_flight = {}
        if self._gathering and self._error is None:
            self._hand_over()
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            heapq.heappop(waiters)[2].set()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run as the writer's supervised stand-in: raise once the writer thread fails.

        The writer is a thread, which no trio supervisor can own; this task
        turns its failure into an exception where the supervision tree sees it.
        """
        task_status.started()
        if self._error is None:
            await self._writer_failed.wait()
        raise self._failed_error()

    def _wake_all(self) -> None:
        """Wake every waiter; each re-checks and raises if its writes did not land."""
        if self._error is not None:
            self._writer_failed.set()
        waiters, self._waiters = self._waiters, []
        for _, _, event in waiters:
            event.set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pending={self.pending}"
        return f"<LmdbStore {str(self._path)!r} schema={self._schema_version} {state}>"


def _migrate(
    txn: lmdb.Transaction[bytes],
    handles: StoreHandles,
    path: Path,
    stored: int,
    current: int,
    migrations: Mapping[int, Migration],
) -> None:
    """Run the hooks stored+1..current in ``txn``; any failure aborts the whole upgrade."""
    missing = [v for v in range(stored + 1, current + 1) if v not in migrations]
    if missing:
        raise DirectoryError(
            f"LMDB store at {path} has schema version {stored} but this code needs {current}, "
            f"and there is no migration to version(s) {', '.join(map(str, missing))}"
        )
    for version in range(stored + 1, current + 1):
        try:
            migrations[version](txn, handles)
        except (DirectoryError, lmdb.MapFullError):
            raise
        except Exception as exc:
            raise DirectoryError(
                f"migration of LMDB store at {path} to schema version {version} failed: {exc}"
            ) from exc
