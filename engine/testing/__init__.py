"""Test kit: fakes and checks that adapter and engine tests share."""

from .._clock import TrioWallClock as TrioWallClock
from ._conformance import AdapterHarness as AdapterHarness
from ._conformance import check_adapter_conformance as check_adapter_conformance
from ._loopback import LoopbackAdapter as LoopbackAdapter
from ._loopback_spec import LOOPBACK_SPEC as LOOPBACK_SPEC
from ._loopback_spec import LoopbackAdapterConfig as LoopbackAdapterConfig
from ._loopback_spec import SeedEvent as SeedEvent
from ._memory_directory import MemoryDirectory as MemoryDirectory
