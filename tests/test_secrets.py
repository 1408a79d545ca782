"""Secrets at rest: installation credentials are encrypted in LMDB, the key comes from the
environment or a file, rotation works, and a missing or wrong key is a clear error."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine import (
    Installation,
    LmdbDirectory,
    SecretBox,
    SecretKeyError,
    generate_secret_key,
    load_secret_box,
)

TOKENS = {"bot_token": "xoxb-1234-very-secret-bot-token",
          "refresh_token": "xoxe-1-very-secret-refresh-token"}
INSTALLATION = Installation(platform="slack", tenant="T1", credentials=TOKENS)


def _grep(directory: Path, needles: list[str]) -> list[str]:
    """The files under ``directory`` holding any needle, byte for byte."""
    return [str(path) for path in directory.rglob("*") if path.is_file()
            for needle in needles if needle.encode() in path.read_bytes()]


def test_the_box_encrypts_decrypts_and_rotates() -> None:
    old, new = generate_secret_key(), generate_secret_key()
    stored = SecretBox([old]).encrypt("s3cret")
    assert stored.startswith("enc:") and "s3cret" not in stored
    assert SecretBox([new, old]).decrypt(stored) == "s3cret"  # the old key still decrypts
    rotated = SecretBox([new, old]).rotate(stored)
    assert SecretBox([new]).decrypt(rotated) == "s3cret"
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        SecretBox([old]).decrypt(rotated)
    assert SecretBox([new]).decrypt("legacy-plain") == "legacy-plain"
    with pytest.raises(SecretKeyError, match="malformed"):
        SecretBox(["not-a-key"])


def test_keys_come_from_the_environment_else_the_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "secrets.key"
    with pytest.raises(SecretKeyError, match="INTERLINK_TEST_KEY"):
        load_secret_box(env="INTERLINK_TEST_KEY", file=file)
    created = load_secret_box(env="INTERLINK_TEST_KEY", file=file, create=True)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    sealed = created.encrypt("x")
    assert load_secret_box(env="INTERLINK_TEST_KEY", file=file).decrypt(sealed) == "x"
    other = generate_secret_key()
    monkeypatch.setenv("INTERLINK_TEST_KEY", other)
    with pytest.raises(SecretKeyError):  # the environment wins: a different key
        load_secret_box(env="INTERLINK_TEST_KEY", file=file).decrypt(sealed)


async def test_credentials_are_encrypted_in_lmdb_and_read_back(tmp_path: Path) -> None:
    box = SecretBox([generate_secret_key()])
    directory = await LmdbDirectory.open(tmp_path / "directory", secret_box=box)
    await directory.put_installation(INSTALLATION)
    assert directory.get_installation("slack", "T1") == INSTALLATION  # pending: decrypted
    await directory.aclose()
    assert _grep(tmp_path, list(TOKENS.values())) == []

    reopened = await LmdbDirectory.open(tmp_path / "directory", secret_box=box)
    try:
        assert reopened.get_installation("slack", "T1") == INSTALLATION
        assert reopened.list_installations("slack") == [INSTALLATION]
    finally:
        await reopened.aclose()


async def test_a_missing_or_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    directory = await LmdbDirectory.open(tmp_path / "directory",
                                         secret_box=SecretBox([generate_secret_key()]))
    await directory.put_installation(INSTALLATION)
    await directory.aclose()
    for box in (None, SecretBox([generate_secret_key()])):
        other = await LmdbDirectory.open(tmp_path / "directory", secret_box=box)
        try:
            with pytest.raises(SecretKeyError, match=r"encrypted|cannot be decrypted"):
                other.get_installation("slack", "T1")
        finally:
            await other.aclose()


def _interlink(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_rotation_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "interlink.toml"
    config.write_text('[engine]\ndata_dir = "data"\n[control]\nlisten = "127.0.0.1:1"\n',
                      encoding="utf-8")
    key_file = tmp_path / "secrets.key"
    old_key = generate_secret_key()
    key_file.write_text(old_key + "\n", encoding="utf-8")

    def seed() -> None:
        directory = LmdbDirectory.open_sync(tmp_path / "data" / "directory",
                                            secret_box=SecretBox([old_key]))
        try:
            import trio

            trio.run(directory.put_installation, INSTALLATION)
        finally:
            directory.close()

    seed()
    rotated = _interlink("secrets", "rotate", "--new-key", "--config", str(config))
    assert rotated.returncode == 0, rotated.stderr
    new_keys = key_file.read_text(encoding="utf-8").split()
    assert len(new_keys) == 1 and new_keys != [old_key]
    assert _grep(tmp_path / "data", list(TOKENS.values())) == []
    directory = LmdbDirectory.open_sync(tmp_path / "data" / "directory",
                                        secret_box=SecretBox(new_keys))
    try:
        assert directory.get_installation("slack", "T1") == INSTALLATION
    finally:
        directory.close()

    key_file.write_text(generate_secret_key() + "\n", encoding="utf-8")  # the wrong key
    wrong = _interlink("secrets", "rotate", "--config", str(config))
    assert wrong.returncode == 2
    assert "cannot be decrypted" in wrong.stderr and "Traceback" not in wrong.stderr
    assert new_keys[0] not in wrong.stderr + wrong.stdout  # no key in any message


async def test_no_secret_of_a_running_slack_deployment_is_in_its_data_dir(
        tmp_path: Path) -> None:
    """``interlink run`` with the Slack example: the sandbox hands over its app's tokens,
    the adapter stores its installations; every token is then absent from the data dir."""
    import signal

    import trio

    from tests.test_cli import ROOT, LiveEngine, _free_port, engine_process

    sandbox_port, control_port = _free_port(), _free_port()
    text = (ROOT / "examples" / "slack.toml").read_text()
    text = text.replace("127.0.0.1:3000", f"127.0.0.1:{sandbox_port}")
    text = text.replace('"../state/sandbox', f'"{tmp_path}/secrets')
    text = text.replace('data_dir = "../state/slack"', f'data_dir = "{tmp_path}/data"')
    text = text.replace('seed = "sandbox-seed.toml"',
                        f'seed = "{ROOT}/examples/sandbox-seed.toml"')
    text = text.replace('level = "info"\nformat = "text"', 'level = "info"\nformat = "json"')
    text += f'\n[control]\nlisten = "127.0.0.1:{control_port}"\n'
    config = tmp_path / "slack.toml"
    config.write_text(text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INTERLINK_CONTROL_TOKEN": "t0ken"}
    async with engine_process(config, env) as process:
        live = LiveEngine(process)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(live.collect)
                await live.wait_for(lambda r: r["msg"] == "ready")
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
                nursery.cancel_scope.cancel()
    secrets = [path.read_text().strip() for path in (tmp_path / "secrets").iterdir()]
    assert any(s.startswith("xoxb-") for s in secrets)  # the bot token was handed over
    assert (tmp_path / "data" / "directory").is_dir()
    assert _grep(tmp_path / "data", [*secrets, "t0ken"]) == []
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600
