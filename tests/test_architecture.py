"""The seams, checked: the core names no platform, and ``interlink run``'s explicit
lists of adapter specs and embedded services agree with its configuration.

The import contracts themselves (who may import whom) run in ``make lint``
(``lint-imports``, contracts in ``pyproject.toml``).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import msgspec

from supervisor import ADAPTER_SPECS, SERVICE_SPECS, Config
from supervisor._config import AdapterEntry

ENGINE = Path(__file__).resolve().parent.parent / "engine"
#: platforms, their libraries and their embedded servers: none belongs in the core
PLATFORM_WORDS = re.compile(
    r"slack|xmpp|jabber|prosody|slixmpp|sandbox|webhook|teams|kamailio|baresip|\bsip\b|httpx",
    re.IGNORECASE)


def test_the_engine_names_no_platform_library_or_adapter() -> None:
    offenders = [
        f"{path.relative_to(ENGINE.parent)}:{number}: {line.strip()}"
        for path in sorted(ENGINE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PLATFORM_WORDS.search(line)
    ]
    assert offenders == []


def test_every_adapter_entry_type_has_exactly_one_spec() -> None:
    spec_types = [spec.config_type for spec in ADAPTER_SPECS]
    assert len(spec_types) == len(set(spec_types))
    assert set(spec_types) == set(typing.get_args(AdapterEntry))
    tags = [msgspec.inspect.type_info(t).tag for t in spec_types]  # type: ignore[attr-defined]
    assert len(tags) == len(set(tags)), "two adapters share a `type` tag"


def test_every_embedded_service_has_its_config_section() -> None:
    fields = {f.name: f.type for f in msgspec.structs.fields(Config)}
    for spec in SERVICE_SPECS:
        assert fields.get(spec.section) is spec.config_type, spec.section
        assert getattr(spec.config_type(), "enabled", False) is False, \
            f"{spec.section} must default to off"


async def test_interlink_runs_tree_supervises_every_engine_service() -> None:
    """A new actor kind or engine service cannot be forgotten by ``interlink run``."""
    from engine import METADATA_DBS, Engine, MemoryKV, MetadataLog, SystemClock
    from engine.testing import LoopbackAdapter, MemoryDirectory
    from supervisor._runner import build_tree
    from supervisor._supervisor import ChildSpec, Supervisor

    directory, store, clock = MemoryDirectory(), MemoryKV(METADATA_DBS), SystemClock()
    engine = Engine(directory=directory, metadata_log=MetadataLog(store, directory, clock),
                    adapters=[LoopbackAdapter("a")], clock=clock)
    supervised: set[str] = set()  # every child's id, subtrees' included

    def walk(specs: tuple[ChildSpec, ...]) -> None:
        for spec in specs:
            supervised.add(spec.id)
            owner = getattr(spec.start, "__self__", None)
            if isinstance(owner, Supervisor):
                walk(owner._specs)

    walk(build_tree(engine, directory, store, control=None)._specs)
    missing = [s.name for s in engine.services() if s.name not in supervised]
    assert missing == []
