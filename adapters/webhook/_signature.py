"""Standard Webhooks signatures (https://www.standardwebhooks.com), both directions. Pure.

Rules (the specification's symmetric scheme, ``v1``):

- A secret is ``whsec_`` followed by base64 of the key bytes; the key signs.
- Every request carries ``webhook-id`` (unique per message, the same on every
  retry of it: the receiver's idempotency key), ``webhook-timestamp`` (integer
  seconds since the epoch of *this attempt*) and ``webhook-signature``: one or
  more space-separated ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
  (several while a secret is rotated; other versions such as ``v1a`` are skipped).
- A receiver refuses a timestamp more than :data:`TOLERANCE` seconds away from
  its own clock, in either direction (replay protection), and compares
  signatures in constant time.

Errors name what is wrong, never a secret, a signature or the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from engine import RemoteError

__all__ = ["SECRET_PREFIX", "TOLERANCE", "SignatureError", "parse_secret", "sign",
           "signature_headers", "verify"]

SECRET_PREFIX = "whsec_"
#: seconds a timestamp may differ from the receiver's clock (the specification's 5 minutes)
TOLERANCE = 300.0
#: shortest key accepted (the specification recommends 24 to 64 random bytes)
MIN_KEY_BYTES = 16
#: longest ``webhook-id`` accepted
MAX_ID_LENGTH = 256
#: most signatures one header may carry
MAX_SIGNATURES = 8


class SignatureError(RemoteError):
    """A request whose Standard Webhooks headers do not authenticate it.

    ``code`` is one of ``missing-headers``, ``invalid-id``, ``invalid-timestamp``,
    ``stale-timestamp``, ``invalid-signature``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_secret(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret; ``ValueError`` (naming no value) if malformed."""
    text = secret.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a Standard Webhooks secret starts with {SECRET_PREFIX!r}")
    encoded = text[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX!r} is not base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
                         "(24 to 64 random bytes are recommended)")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one attempt."""
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(key: bytes, webhook_id: str, timestamp: int,
                      body: bytes) -> dict[str, str]:
    """The three headers of one attempt."""
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, webhook_id, timestamp, body)}


def verify(keys: tuple[bytes, ...], headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance: float = TOLERANCE) -> str:
    """The request's ``webhook-id`` once one of ``keys`` signed it within the window.

    ``headers`` has lower-case names. Raises :class:`SignatureError`.
    """
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    header = headers.get("webhook-signature", "")
    if not (webhook_id and stamp and header):
        raise SignatureError("missing-headers", "webhook-id, webhook-timestamp and "
                             "webhook-signature are all required")
    if len(webhook_id) > MAX_ID_LENGTH or not webhook_id.isascii() or \
            not webhook_id.isprintable():
        raise SignatureError("invalid-id", f"webhook-id must be printable ASCII of at most "
                             f"{MAX_ID_LENGTH} characters")
    if not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("invalid-timestamp", "webhook-timestamp must be integer seconds "
                             "since the Unix epoch")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise SignatureError("stale-timestamp", f"webhook-timestamp is more than "
                             f"{int(tolerance)} s away from this server's clock")
    offered = [part.partition(",") for part in header.split(" ")[:MAX_SIGNATURES]]
    candidates = [value for version, comma, value in offered if comma and version == "v1"]
    for key in keys:
        expected = sign(key, webhook_id, timestamp, body)[3:].encode()
        for candidate in candidates:
            if hmac.compare_digest(expected, candidate.encode()):
                return webhook_id
    raise SignatureError("invalid-signature", "no v1 signature in webhook-signature matches")
