"""The LMDB writer process: commits an :class:`~engine.LmdbStore`'s generations.

Why a process: py-lmdb releases the GIL around every single put, even inside
``putmulti``. A writer *thread* therefore needs the GIL back after each op,
and while the event loop keeps the GIL busy it gets it only when the loop
happens to release it: measured at 10,000 sessions, the thread spent 12 % of
its wall time on CPU and committed 41,000 ops/s, the metadata store's 11,000
ops/s, so commits of 25,000 ops took most of a second and backpressure sat
close to its limit. A process has its own GIL: the parent's event loop
hands it a whole generation as one msgpack frame over a non-blocking pipe
and the puts run at LMDB's speed.

Protocol, over the child's stdin/stdout, each frame a 4-byte big-endian
length and a msgpack body:

- child -> parent, once at start: ``[0, error, map_size]``;
- parent -> child: ``[seq, [[db index, {key: value or nil}], ...]]``, one
  generation, committed in one transaction;
- child -> parent: ``[seq, error, map_size]`` once that transaction is
  committed (``error`` is nil, or ``[type name, message]`` and the child
  exits).

End of input means "stop": the child has committed every frame it
answered, syncs and exits. It runs in its own session and ignores SIGINT
and SIGTERM, so that a Ctrl-C or a service manager's signal to every
process cannot cut a commit short: the parent decides when it stops by
closing the pipe, and a dead parent closes it too.

This file runs as a script (``python _lmdb_writer.py CONFIG``), so it imports
nothing from the engine: only the standard library, lmdb and msgspec.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from typing import BinaryIO

import lmdb
import msgspec

_LENGTH = struct.Struct(">I")
#: the largest frame either side accepts (a generation is bounded by max_pending ops)
MAX_FRAME = 1 << 31

Writes = list[tuple[int, dict[bytes, bytes | None]]]


class Config(msgspec.Struct, frozen=True):
    """What the child needs to open the store the parent opened (argv[1], JSON)."""

    path: str
    map_size: int
    sync: bool
    db_names: list[str]


class Request(msgspec.Struct, array_like=True, frozen=True):
    seq: int
    writes: Writes


class Reply(msgspec.Struct, array_like=True, frozen=True):
    seq: int
    error: tuple[str, str] | None
    map_size: int


#: bytes of a frame's length header
HEADER_SIZE = _LENGTH.size


def frame_header(length: int) -> bytes:
    """The header of a frame whose body is ``length`` bytes."""
    return _LENGTH.pack(length)


def frame_length(buffer: bytes | bytearray) -> int:
    """The body length named by the header at the start of ``buffer``."""
    (length,) = _LENGTH.unpack_from(buffer)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(length)


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's body, or ``None`` at a clean end of input."""
    header = _read_exactly(stream, _LENGTH.size)
    if header is None:
        return None
    length = frame_length(header)
    body = _read_exactly(stream, length)
    if body is None:
        raise EOFError("input ended inside a frame")
    return body


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = stream.read(missing)
        if not chunk:
            if missing == size:
                return None
            raise EOFError("input ended inside a frame")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def write_frame(stream: BinaryIO, body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def commit(env: lmdb.Environment, handles: list[lmdb._Database], writes: Writes) -> None:
    """Apply one generation in one write transaction, doubling the map until it fits.

    Each sub-database gets its deletes and one ``putmulti`` of its puts in key
    order (sequential B-tree inserts).
    """
    work = []
    for index, ops in writes:
        puts = sorted((key, value) for key, value in ops.items() if value is not None)
        deletes = [key for key, value in ops.items() if value is None]
        work.append((handles[index], deletes, puts))
    while True:
        txn = env.begin(write=True)
        try:
            for handle, deletes, puts in work:
                for key in deletes:
                    txn.delete(key, db=handle)
                if puts:
                    txn.cursor(db=handle).putmulti(puts)
            txn.commit()
            return
        except lmdb.MapFullError:
            txn.abort()
            env.set_mapsize(env.info()["map_size"] * 2)
        except BaseException:
            txn.abort()
            raise


def serve(config: Config, requests: BinaryIO, replies: BinaryIO) -> int:
    """Commit every request until end of input; 0 when stopped cleanly, 1 after a failure."""
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(Request)
    try:
        env = lmdb.open(config.path, map_size=config.map_size, max_dbs=len(config.db_names) + 1,
                        sync=config.sync, subdir=True)
        handles = [env.open_db(name.encode(), create=False) for name in config.db_names]
    except Exception as exc:
        write_frame(replies, encoder.encode(Reply(0, (type(exc).__name__, str(exc)), 0)))
        return 1
    try:
        write_frame(replies, encoder.encode(Reply(0, None, env.info()["map_size"])))
        while (body := read_frame(requests)) is not None:
            request = decoder.decode(body)
            try:
                commit(env, handles, request.writes)
            except Exception as exc:
                error = (type(exc).__name__, str(exc))
                write_frame(replies, encoder.encode(Reply(request.seq, error, 0)))
                return 1
            write_frame(replies, encoder.encode(Reply(request.seq, None, env.info()["map_size"])))
        if config.sync:
            env.sync(True)
        return 0
    finally:
        env.close()


def main(argv: list[str]) -> int:
    # The parent stops this process by closing its input, after its last write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) != 2:
        print("usage: _lmdb_writer.py CONFIG_JSON (started by LmdbStore)", file=sys.stderr)
        return 2
    config = msgspec.json.decode(argv[1], type=Config)
    with os.fdopen(0, "rb") as requests, os.fdopen(1, "wb") as replies:
        return serve(config, requests, replies)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
