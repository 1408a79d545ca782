"""An embedded LMDB key-value store with group-committed write-behind.

Why this shape:

- **Reads stay on the caller's thread.** LMDB reads are memory-mapped lookups
  costing well under a microsecond; handing them to a worker thread would cost
  far more than the read. ``get``/``scan`` therefore run synchronously.
- **Writes never block the event loop on ``fsync``.** A write lands in the
  *current generation*: one dict per sub-database, key -> value (``None`` for
  a delete), so the caller reads its own writes at once and each key's last
  value wins. Whole generations go to a writer process, one at a time, and
  are committed in one transaction each (group commit): while the writer
  commits one generation, the next one gathers every write made meanwhile.
  When a commit lands, the trio side drops that generation in O(1) (no
  per-write bookkeeping), wakes ``flush()`` waiters and hands over the next
  generation once the group-commit window closes (:meth:`LmdbStore._gather`).
  A write therefore costs a dict store per op and allocates nothing the
  collector tracks.
- **The puts run in a writer process, spoken to over non-blocking pipes.**
  py-lmdb releases the GIL around every put, so a writer *thread* starved
  while the event loop was busy (see ``_lmdb_writer``). The child process
  commits each generation with LMDB's own speed and durability (``sync``);
  reads stay in this process (LMDB is multi-process safe: after a commit the
  next read transaction sees it). The pipes are written and read by the trio
  thread itself (``wait_writable``/``wait_readable``), not by a thread: a
  thread needs the GIL back after every blocking call, and while the event
  loop is busy that takes a switch interval (5 ms) each time, so a 2 MB
  generation took ~180 ms to land at 10,000 sessions and the writes' backpressure
  capped the engine at ~31,000 events/s. Two trio *system* tasks do the
  waiting (one reads replies while frames are outstanding, one finishes a
  frame the pipe could not take at once); the supervised :meth:`watch`
  stands in for them in the supervision tree.
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
keeps reads and map-size adoption from overlapping (a store may be opened on a
worker thread and used on the trio thread).
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
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

    __slots__ = ("last_seq", "writes")

    def __init__(self, last_seq: int, writes: list[tuple[int, _Writes]]) -> None:
        self.last_seq = last_seq
        #: (space index, that space's writes), for the spaces written to
        self.writes = writes

    @property
    def ops(self) -> int:
        return sum(len(ops) for _, ops in self.writes)


#: stands for the writer process's first reply (store open) among the frames awaiting one
_OPENING: Final = _Generation(0, [])
#: Linux's F_SETPIPE_SZ: a 1 MiB pipe takes a typical generation in one write
_F_SETPIPE_SZ: Final = 1031
PIPE_SIZE: Final = 1 << 20
#: group commit: after a commit lands, writes still arriving gather for up to this long
#: (real seconds: the window is the disk's) or this many ops before the next hand-over
GROUP_WINDOW_S: Final = 0.002
GROUP_OPS: Final = 8192
#: bytes read from the reply pipe at a time (a reply is ~20 bytes)
_READ_CHUNK: Final = 65536


_request_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(_lmdb_writer.Reply)


def _start_writer(path: Path, map_size: int, sync: bool,
                  db_names: list[str]) -> subprocess.Popen[bytes]:
    """Start the store's writer process; its pipes are made non-blocking on this side.

    Does not wait for it: its first reply (store open, or why not) is read
    like any other, so opening a store costs no interpreter start-up.
    """
    config = _lmdb_writer.Config(path=str(path), map_size=map_size, sync=sync,
                                 db_names=db_names)
    try:
        child = subprocess.Popen(
            [sys.executable, _lmdb_writer.__file__, msgspec.json.encode(config).decode()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, bufsize=0,
            # Its own session: a terminal's Ctrl-C reaches the process
            # group, and only the store decides when its writer stops.
            start_new_session=True)
    except OSError as exc:
        raise DirectoryError(f"cannot start the LMDB writer process: {exc}") from exc
    assert child.stdin is not None and child.stdout is not None
    for pipe in (child.stdin, child.stdout):
        with contextlib.suppress(OSError):  # Linux only; elsewhere the default size
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(pipe.fileno(), False)
    return child


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
        child: subprocess.Popen[bytes],
        sync: bool = True,
    ) -> None:
        """Wrap an already opened environment and its writer process; use :meth:`open`."""
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
        self._closed = False
        self._closing = False
        self._error: BaseException | None = None
        self._writer_failed = trio.Event()
        #: generations handed to the writer process (one frame each); for tests
        self.writer_wakeups = 0

        # The writer process and its pipes (non-blocking on this side).
        self._child = child
        assert child.stdin is not None and child.stdout is not None
        self._request_fd = child.stdin.fileno()
        self._reply_fd = child.stdout.fileno()
        #: frames not yet taken by the request pipe
        self._outbox = bytearray()
        #: a partial reply frame
        self._inbox = bytearray()
        #: frames sent (or being sent), oldest first, each awaiting its reply
        self._awaiting: deque[_Generation] = deque([_OPENING])
        self._frames = 0
        #: a commit landed with writes gathering: the reader hands them over once the
        #: group-commit window closes (see _read_replies)
        self._hand_over_due = False
        #: the trio runs whose system tasks read replies / finish a frame (None: none runs)
        self._reader_run: object | None = None
        self._sender_run: object | None = None

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
                child = _start_writer(path, env.info()["map_size"], sync, names)
                return cls(
                    path=path,
                    env=env,
                    spaces=spaces,
                    schema_version=schema_version,
                    max_pending=max_pending,
                    child=child,
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

        Why it exists: py-lmdb releases the GIL around every read, and while any
        other thread of the process wants the GIL, getting it back costs the event
        loop up to a switch interval; a hot path that can do without the committed
        value avoids that.
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
            run = trio.lowlevel.current_root_task()
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
        if self._handed_over == self._committed and not self._hand_over_due:
            self._hand_over(run)
        return self._last_seq

    def _hand_over(self, run: object | None) -> None:
        """Send the current generation to the writer process and start a new one.

        ``run`` is the current trio run's root task (the system tasks that
        wait on the pipes are started in it), or ``None`` while closing, when
        :meth:`close` drives the pipes itself.
        """
        writes: list[tuple[int, _Writes]] = []
        for space in self._gathering:
            writes.append((space.index, space.current))
            space.in_flight = space.current
            space.current = {}
        self._gathering = []
        self._handed_over = self._last_seq
        self.writer_wakeups += 1
        generation = _Generation(self._last_seq, writes)
        self._frames += 1
        body = _request_encoder.encode(_lmdb_writer.Request(self._frames, writes))
        self._outbox += _lmdb_writer.frame_header(len(body))
        self._outbox += body
        self._awaiting.append(generation)
        if run is None:
            return
        self._send_some()
        self._serve_pipes(run)

    def _serve_pipes(self, run: object) -> None:
        """Have this trio run's system tasks finish the frames and take the replies.

        Called on every hand-over and before every wait for a commit: a store
        written in one ``trio.run`` and flushed in the next is served by the
        second (the first one's tasks ended with it).
        """
        if self._error is not None or self._closing:
            return
        if self._hand_over_due and self._reader_run is not run:
            self._hand_over_due = False  # its reader ended with an earlier trio run
            self._hand_over(run)
            return
        if self._outbox and self._sender_run is not run:
            self._sender_run = run
            trio.lowlevel.spawn_system_task(self._send_rest, run, name=f"{self!r} sender")
        if self._awaiting and self._reader_run is not run:
            self._reader_run = run
            trio.lowlevel.spawn_system_task(self._read_replies, run, name=f"{self!r} reader")

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
        if not self._closed:
            self._serve_pipes(trio.lowlevel.current_root_task())
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
        """Flush, stop the writer process and close the environment (idempotent).

        Raises the writer's failure, if any, after closing.
        """
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self.close()

    def close(self) -> None:
        """Commit what is queued, stop the writer process and close (idempotent, sync).

        Usable outside trio; inside trio it blocks until queued writes commit,
        so prefer :meth:`aclose` there.
        """
        if self._closed:
            return
        self._closing = True
        with contextlib.suppress(RuntimeError):  # outside trio there is nothing to tell
            trio.lowlevel.notify_closing(self._request_fd)
            trio.lowlevel.notify_closing(self._reply_fd)
        try:
            if self._error is None:
                if self._gathering:
                    self._hand_over(None)
                self._drain()
        finally:
            self._stop_child()
            if self._error is None:
                self._committed = self._handed_over
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
            with contextlib.suppress(RuntimeError):  # no waiters can exist outside trio
                self._wake_all()

    def _drain(self) -> None:
        """Close's blocking exchange: send every frame, take every reply."""
        os.set_blocking(self._request_fd, True)
        os.set_blocking(self._reply_fd, True)
        while self._error is None and (self._outbox or self._awaiting):
            if self._outbox:
                self._send_some()
            else:
                self._take_replies()

    # ------------------------------------------------- writer process side (trio thread)

    def _send_some(self) -> None:
        """Write what the request pipe takes now; a broken pipe fails the store."""
        outbox = self._outbox
        try:
            while outbox:
                written = os.write(self._request_fd, outbox)
                del outbox[:written]  # bytearray: O(1) from the front
        except BlockingIOError:
            pass
        except OSError:  # the process is gone; its exit status says why
            self._record_failure(self._child_gone())

    async def _send_rest(self, run: object) -> None:
        """System task: finish the frames the request pipe could not take at once."""
        try:
            while self._outbox and self._error is None and not self._closing:
                if not await self._wait_for_pipe(trio.lowlevel.wait_writable,
                                                 self._request_fd):
                    break
                self._send_some()
        finally:
            if self._sender_run is run:
                self._sender_run = None

    async def _read_replies(self, run: object) -> None:
        """System task: take the writer's replies while frames await one."""
        try:
            while (self._awaiting or self._hand_over_due) and self._error is None \
                    and not self._closing:
                if not self._awaiting:
                    await self._gather(run)
                    continue
                if not await self._wait_for_pipe(trio.lowlevel.wait_readable, self._reply_fd):
                    break
                self._take_replies()
        finally:
            if self._reader_run is run:
                self._reader_run = None

    async def _wait_for_pipe(self, wait: Callable[[int], Awaitable[None]], fd: int) -> bool:
        """Wait until ``fd`` is ready; ``False`` once close() has taken the pipes over
        (it drives them itself, and may have closed them)."""
        try:
            await wait(fd)
        except trio.ClosedResourceError:  # close() called notify_closing
            return False
        return not self._closing

    async def _gather(self, run: object) -> None:
        """Group commit: let writes that keep arriving join the next generation.

        One pass of the event loop at a time, for at most GROUP_WINDOW_S of real
        time or until GROUP_OPS ops are gathering; a pass that added nothing ends
        it, so a quiet store commits at once and only a busy one waits. Bigger
        generations cost the writer process less per op (fewer B-tree pages
        copied, fewer fsyncs) without a timer on the run's clock.
        """
        deadline = time.monotonic() + GROUP_WINDOW_S
        while True:
            seen = self._last_seq
            await trio.lowlevel.checkpoint()
            if not self._hand_over_due or self._closing or self._error is not None:
                return
            if self._last_seq == seen or self._last_seq - self._handed_over >= GROUP_OPS \
                    or time.monotonic() >= deadline:
                break
        self._hand_over_due = False
        self._hand_over(run)

    def _take_replies(self) -> None:
        """Read what the reply pipe holds and act on every whole reply in it."""
        try:
            chunk = os.read(self._reply_fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._record_failure(self._child_gone())
            return
        inbox = self._inbox
        inbox += chunk
        header = _lmdb_writer.HEADER_SIZE
        while len(inbox) >= header:
            try:
                length = _lmdb_writer.frame_length(inbox)
                if len(inbox) < header + length:
                    break
                reply = _reply_decoder.decode(bytes(inbox[header:header + length]))
            except (ValueError, msgspec.DecodeError) as exc:
                self._record_failure(DirectoryError(f"the LMDB writer process sent {exc}"))
                return
            del inbox[:header + length]
            if not self._awaiting:
                self._record_failure(DirectoryError(
                    "the LMDB writer process answered a frame it was not sent"))
                return
            self._on_reply(reply)
            if self._error is not None:
                return

    def _on_reply(self, reply: _lmdb_writer.Reply) -> None:
        if reply.error is not None:
            error_type, message = reply.error
            self._record_failure(
                DirectoryError(f"the LMDB writer process failed: {error_type}: {message}"),
                error_type=error_type)
            return
        if reply.map_size > self._map_size:
            self._map_size = reply.map_size
            logger.info("directory map grown", extra={
                "event": "directory.map_grown", "path": str(self._path),
                "map_size": reply.map_size})
        generation = self._awaiting.popleft()
        if generation is not _OPENING:
            self._on_committed(generation)

    def _child_gone(self) -> DirectoryError:
        child = self._child
        try:
            status = child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            status = child.wait()
        return DirectoryError(f"the LMDB writer process for {self._path} exited (status {status})")

    def _stop_child(self) -> None:
        """End of input tells the writer process to sync and exit; wait for it."""
        child = self._child
        assert child.stdin is not None and child.stdout is not None
        with contextlib.suppress(OSError):
            child.stdin.close()
        try:
            child.wait(timeout=WRITER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.error("LMDB writer process did not exit; killed", extra={
                "event": "directory.writer_killed", "path": str(self._path)})
            child.kill()
            child.wait()
        child.stdout.close()

    def _record_failure(self, exc: BaseException, *, error_type: str | None = None) -> None:
        """Fail the store: the frames awaiting a reply are lost; later writes are refused.

        ``error_type`` names the writer process's own error, when it reported one.
        """
        if self._error is not None:
            return
        self._error = exc
        self._outbox.clear()
        lost = sum(generation.ops for generation in self._awaiting)
        self._awaiting.clear()
        logger.error(
            "directory writer failed; later writes will be refused",
            extra={
                "event": "directory.writer_failed",
                "path": str(self._path),
                "error_type": error_type or type(exc).__name__,
                "lost_ops": lost,
            },
            exc_info=exc,
        )
        self._wake_all()

    def _on_committed(self, generation: _Generation) -> None:
        """The writer committed ``generation``: drop it, wake waiters, hand over the next."""
        seq = generation.last_seq
        if seq <= self._committed:
            return
        self._committed = seq
        with self._read_lock:
            self._drop_reader()  # later reads must see the commit, now that its writes go
        spaces = self._space_list
        for index, _ in generation.writes:
            spaces[index].in_flight = {}
        if self._gathering and not self._awaiting:
            if self._closing:
                self._hand_over(None)
            else:
                self._hand_over_due = True  # by the reader, once the window closes
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            heapq.heappop(waiters)[2].set()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run as the writer's supervised stand-in: raise once the writer process fails.

        The pipes are served by system tasks, which no supervisor owns; this
        task turns the writer's failure into an exception where the
        supervision tree sees it.
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
