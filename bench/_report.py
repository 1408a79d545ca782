"""The result envelope every suite returns, and its JSON form.

The shape is documented in ``bench/README.md`` and pinned by a golden test::

    {"suite", "schema_version", "generated_at", "duration_s",
     "machine": {"cpu", "cores", "python", "platform"},
     "params": {...},
     "results": {"throughput_msgs_per_s", "latency_us": {"p50", "p99", "p999", ...}, ...},
     "baseline": {"name", "description", "throughput_msgs_per_s", "latency_us"},
     "ratio_to_baseline"}

``ratio_to_baseline`` is always ``results.throughput_msgs_per_s /
baseline.throughput_msgs_per_s``: the headline measured against a baseline
taken in the same run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import msgspec

from ._histogram import LatencyUs
from ._machine import Machine, describe_machine

#: 2: the core suite's baseline does the engine's work (see bench/README.md)
SCHEMA_VERSION = 2


class Headline(Protocol):
    """What every suite's results carry at the top."""

    @property
    def throughput_msgs_per_s(self) -> float: ...

    @property
    def latency_us(self) -> LatencyUs: ...


P = TypeVar("P")
R = TypeVar("R", bound=Headline)


class Baseline(msgspec.Struct, frozen=True, kw_only=True):
    """The reference measured in the same run as the headline."""

    name: str
    description: str
    throughput_msgs_per_s: float
    latency_us: LatencyUs


class Report(msgspec.Struct, Generic[P, R], frozen=True, kw_only=True):
    suite: str
    schema_version: int
    #: when the run finished (ISO 8601, UTC)
    generated_at: str
    duration_s: float
    machine: Machine
    params: P
    results: R
    baseline: Baseline
    ratio_to_baseline: float


def ratio(value: float, reference: float) -> float:
    """``value / reference``, or 0 when there is no reference."""
    return value / reference if reference > 0 else 0.0


def make_report(suite: str, *, params: P, results: R, baseline: Baseline,
                duration_s: float) -> Report[P, R]:
    return Report(
        suite=suite, schema_version=SCHEMA_VERSION,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        duration_s=round(duration_s, 1), machine=describe_machine(), params=params,
        results=results, baseline=baseline,
        ratio_to_baseline=ratio(results.throughput_msgs_per_s,
                                baseline.throughput_msgs_per_s),
    )


def encode_json(report: Report[P, R]) -> bytes:
    """The report as indented JSON (stable key order: the structs' field order)."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"


def write_json(report: Report[P, R], path: Path) -> None:
    path.write_bytes(encode_json(report))
