"""What every adapter's translator shares: its outcomes and its stable ids.

Rules:

- Decoding a platform event yields a canonical event, or :class:`Ignored`
  (nothing to route: a bot's own echo, an unsupported subtype), with a short
  content-free reason the adapter logs.
- Encoding a canonical event the platform cannot show raises
  :class:`Untranslatable` (content-free reason); the session reports it as a
  failed delivery.
- A message that starts on a platform gets a canonical id derived from the
  platform's own coordinates (:func:`derive_canonical_id`), so a redelivered
  event maps to the same id and is recognised as a duplicate.
"""

from __future__ import annotations

import hashlib

import msgspec

from ._errors import LocalError

__all__ = ["Ignored", "Untranslatable", "derive_canonical_id"]


class Ignored(msgspec.Struct, frozen=True):
    """A platform event Interlink does not translate; ``reason`` is short and content-free."""

    reason: str


class Untranslatable(LocalError):
    """A canonical event the destination platform cannot show; ``reason`` is content-free."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def derive_canonical_id(prefix: str, *coordinates: str) -> str:
    """A stable canonical id: ``prefix-`` and a 128-bit digest of the platform's
    coordinates for the message (e.g. workspace, channel and timestamp)."""
    if not prefix or not coordinates:
        raise LocalError("a canonical id needs a prefix and at least one coordinate")
    digest = hashlib.blake2b("\n".join(coordinates).encode(), digest_size=16)
    return f"{prefix}-{digest.hexdigest()}"
