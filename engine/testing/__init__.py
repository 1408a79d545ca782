"""Test kit: fakes and checks that adapter and engine tests share."""

from .._clock import TrioWallClock as TrioWallClock
from ._conformance import AdapterHarness as AdapterHarness
from ._conformance import check_adapter_conformance as check_adapter_conformance
from ._loopback import LoopbackAdapter as LoopbackAdapter
from ._memory_directory import MemoryDirectory as MemoryDirectory
