"""The machine a benchmark ran on, recorded in every result."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import msgspec

#: libraries whose versions change the numbers
MEASURED_PACKAGES = ("trio", "msgspec", "lmdb", "pykka", "hdrhistogram")


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    cpu: str
    #: cores this process may run on
    cores: int
    python: str
    platform: str


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine() -> Machine:
    return Machine(
        cpu=cpu_model(),
        cores=usable_cores(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        platform=platform.platform(),
    )


def package_versions() -> dict[str, str]:
    """Versions of :data:`MEASURED_PACKAGES` (``"absent"`` when not installed)."""
    versions: dict[str, str] = {}
    for name in MEASURED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
