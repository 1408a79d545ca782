"""Configuration: valid files load, bad ones say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Address, ConfigError, apply_to_directory
from engine.testing import MemoryDirectory
from supervisor import load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "interlink.toml"
    path.write_text(text)
    return path


def test_the_example_loads_and_resolves_paths_against_its_file() -> None:
    config = load_config(EXAMPLES / "loopback.toml")
    assert [a.name for a in config.adapters] == ["acme-loop", "widget-loop"]
    assert config.data_dir() == (EXAMPLES.parent / "state" / "loopback").resolve()


def test_defaults_for_an_empty_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.engine.mailbox_capacity == 1000
    assert config.directory.backend == "lmdb"
    assert config.policy.require_accepted_contact is True


@pytest.mark.parametrize(("text", "expected"), [
    ("[engine]\nshard_count = 'many'", r"Expected `int`, got `str` - at `\$.engine.shard_count`"),
    ("[engine]\nshards = 3", r"unknown field `shards` - at `\$.engine`"),
    ("[[adapters]]\ntype = 'teleport'", r"Invalid value 'teleport' - at `\$.adapters\[0\].type`"),
    ("[[users]]\naddress = 'not-an-address'", r"user@domain - at `\$.users\[0\].address`"),
    ("[[domains]]\ndomain = 'a.com'\nplatform = 'slack'",
     r"no adapter has that name .* at `\$.domains\[0\].platform`"),
    ("[engine\n", r"not valid TOML"),
    ("[engine]\nmailbox_capacity = 0", r"at least 1 - at `\$.engine.mailbox_capacity`"),
])
def test_bad_files_name_the_file_the_field_and_the_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


async def test_config_is_applied_to_the_directory() -> None:
    config = load_config(EXAMPLES / "loopback.toml")
    directory = MemoryDirectory()
    await apply_to_directory(config, directory, now=0.0)
    route = directory.get_domain_route("acme.localhost")
    assert route is not None and route.internal and route.platform == "acme-loop"
    alice = Address.parse("alice@acme.localhost")
    identity = directory.get_identity(alice)
    assert identity is not None and identity.user_id == "alice"
    agreement = directory.get_domain_agreement("widget.localhost", "acme.localhost")
    assert agreement is not None and agreement.decision == "allow"
