"""The key-value seam under the metadata log (and anything else that wants one).

:class:`engine.LmdbStore` is the durable implementation (group-committed
write-behind in a writer process); :class:`MemoryKV` answers identically from
dicts, for tests and for running without a data directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio

from ._errors import DirectoryError

WriteOp = tuple[str, bytes, bytes | None]  # (db, key, value); None deletes


class KeyValueStore(Protocol):
    def get(self, db: str, key: bytes) -> bytes | None: ...

    def scan(self, db: str, prefix: bytes = b"", *, start_after: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, sorted by key."""
        ...

    async def write(self, ops: Sequence[WriteOp]) -> None:
        """Apply ``ops`` together; visible to reads at once, durable after ``flush``."""
        ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryKV:
    """A :class:`KeyValueStore` in dicts."""

    def __init__(self, db_names: Sequence[str]) -> None:
        self._dbs: dict[str, dict[bytes, bytes]] = {name: {} for name in db_names}
        self._closed = False

    def _db(self, db: str) -> dict[bytes, bytes]:
        if self._closed:
            raise DirectoryError("store is closed")
        try:
            return self._dbs[db]
        except KeyError:
            raise DirectoryError(f"no database {db!r} in this store") from None

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._db(db).get(key)

    def scan(self, db: str, prefix: bytes = b"", *, start_after: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        items = sorted(
            (k, v) for k, v in self._db(db).items()
            if k.startswith(prefix) and (start_after is None or k > start_after)
        )
        return items if limit is None else items[:limit]

    async def write(self, ops: Sequence[WriteOp]) -> None:
        for db, key, value in ops:
            table = self._db(db)
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        await trio.lowlevel.checkpoint()

    async def flush(self) -> None:
        if self._closed:
            raise DirectoryError("store is closed")
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()
