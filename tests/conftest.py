"""Shared fixtures: each directory implementation, so one test covers both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine._directory import Directory
from engine._directory_lmdb import LmdbDirectory
from engine.testing._memory_directory import MemoryDirectory


@pytest.fixture(params=["memory", "lmdb"])
async def directory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Directory]:
    """A fresh, empty directory of each implementation; closed afterwards."""
    opened: Directory
    if request.param == "memory":
        opened = MemoryDirectory()
    else:
        opened = await LmdbDirectory.open(tmp_path / "directory")
    try:
        yield opened
    finally:
        await opened.aclose()
