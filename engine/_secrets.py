"""Secrets at rest: installation credentials encrypted before they reach LMDB.

Rules:

- A :class:`SecretBox` holds one or more Fernet keys (AES-128-CBC with
  HMAC-SHA256, from ``cryptography``): the first encrypts, every key
  decrypts. Rotating is: put a new key first, re-encrypt everything
  (:meth:`SecretBox.rotate`, ``interlink secrets rotate``), drop the old key.
- Keys come from an environment variable (space- or comma-separated), else
  from a file (one key per line); never from the config file. A missing,
  malformed or wrong key is a clear :class:`SecretKeyError`, never a
  traceback and never the key itself in a message.
- A stored secret is ``enc:`` + the Fernet token; a value without that prefix
  was written before encryption and is read as it is (and encrypted on its
  next write or by the rotation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ._errors import ConfigError

__all__ = ["ENCRYPTED_PREFIX", "SecretBox", "SecretKeyError", "generate_secret_key",
           "load_secret_box"]

ENCRYPTED_PREFIX = "enc:"


class SecretKeyError(ConfigError):
    """The secrets key is missing, malformed, or not the one the data was written with."""


def generate_secret_key() -> str:
    """A fresh key (url-safe base64 of 32 random bytes), for the key file or variable."""
    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError("no secrets key given")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except (ValueError, TypeError):
            raise SecretKeyError("a secrets key is malformed (expected url-safe base64 of 32 "
                                 "bytes, as `interlink secrets new-key` prints)") from None
        self.key_count = len(keys)

    def encrypt(self, value: str) -> str:
        return ENCRYPTED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The plain value of a stored secret (an unencrypted legacy value as it is)."""
        if not stored.startswith(ENCRYPTED_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(ENCRYPTED_PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretKeyError("stored secrets cannot be decrypted with the configured key(s): "
                                 "the key is wrong, or was dropped before a rotation finished"
                                 ) from None

    def rotate(self, stored: str) -> str:
        """``stored`` encrypted with the first key (legacy plain values get encrypted)."""
        if not stored.startswith(ENCRYPTED_PREFIX):
            return self.encrypt(stored)
        try:
            token = self._fernet.rotate(stored[len(ENCRYPTED_PREFIX):].encode())
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with any configured key; "
                                 "nothing was rotated") from None
        return ENCRYPTED_PREFIX + token.decode()


def _split(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def load_secret_box(*, env: str, file: Path, create: bool = False) -> SecretBox:
    """The box of the keys in ``$env``, else in ``file``.

    ``create``: write a fresh key to ``file`` (mode 0600) when neither exists
    (the zero-set-up default for a single machine; production names its key).
    """
    from_env = os.environ.get(env, "").strip() if env else ""
    if from_env:
        return SecretBox(_split(from_env))
    try:
        keys = _split(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        keys = []
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read the secrets key file {file}: "
                             f"{type(exc).__name__}") from None
    if keys:
        return SecretBox(keys)
    if not create:
        raise SecretKeyError(f"no secrets key: set the environment variable {env} or write a "
                             f"key to {file} (`interlink secrets new-key` prints one)")
    file.parent.mkdir(parents=True, exist_ok=True)
    key = generate_secret_key()
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return SecretBox([key])
