"""``interlink secrets``: the key that encrypts installation credentials at rest.

``new-key`` prints a fresh key. ``rotate`` re-encrypts every stored
credential with the first configured key; ``rotate --new-key`` (key file
only) does the whole rotation: a new key first in the file, everything
re-encrypted, then the old keys dropped. Rotation needs the engine stopped
(it writes the directory the engine holds open): a reachable control API is
refused with a clear message.
"""

from __future__ import annotations

import argparse
import os

import httpx
import trio

from engine import LmdbDirectory, SecretBox, SecretKeyError, generate_secret_key

from ._config import Config, load_config
from ._runner import secret_box


class SecretsError(Exception):
    """A rotation that must not go ahead (exit status 1), with what to do."""


def run_new_key(args: argparse.Namespace) -> int:
    print(generate_secret_key())
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.directory.backend != "lmdb":
        raise SecretsError("the directory is in memory ([directory] backend): nothing is stored")
    _refuse_while_running(config)
    key_file = config.secrets_key_file()
    if args.new_key:
        if os.environ.get(config.secrets.key_env, "").strip():
            raise SecretsError(
                f"the key comes from ${config.secrets.key_env}: put a new key (`interlink "
                f"secrets new-key`) first in it, keep the old one after it, run `interlink "
                f"secrets rotate`, then drop the old key")
        old = key_file.read_text(encoding="utf-8").split() if key_file.exists() else []
        if not old:
            raise SecretKeyError(f"no key in {key_file} to rotate from")
        new = generate_secret_key()
        _write_keys(key_file, [new, *old])  # both decrypt while the rotation runs
        count = trio.run(_rotate, config, SecretBox([new, *old]))
        _write_keys(key_file, [new])
        print(f"rotated {count} installation(s) to a new key; {key_file} holds only it now")
        return 0
    count = trio.run(_rotate, config, secret_box(config))
    print(f"re-encrypted {count} installation(s) with the first configured key")
    return 0


async def _rotate(config: Config, box: SecretBox) -> int:
    directory = await LmdbDirectory.open(config.data_dir() / "directory", secret_box=box)
    try:
        return await directory.rotate_secrets()
    finally:
        await directory.aclose()


def _refuse_while_running(config: Config) -> None:
    host, port = config.control.host_port()
    try:
        httpx.get(f"http://{host}:{port}/healthz", timeout=1.0)
    except httpx.HTTPError:
        return  # nobody listening: the engine is stopped
    raise SecretsError(f"an engine answers on {host}:{port}: stop it before rotating")


def _write_keys(path: os.PathLike[str], keys: list[str]) -> None:
    temporary = f"{os.fspath(path)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(keys) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
