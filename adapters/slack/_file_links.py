"""Short-lived signed links to Slack files. Pure: no I/O.

A Slack file (``url_private``) needs the bot token to download, so it cannot
be handed to a contact on another platform. Instead the contact gets a link
to Interlink's own HTTP listener carrying a signed, expiring ticket; when the
link is fetched, Interlink streams the file from Slack. Nothing is stored:
the ticket itself says where the file is, and the signature proves Interlink
wrote it.

Ticket: ``base64url(msgpack([url, team_id, name, expires])) "." base64url(hmac)``
with HMAC-SHA256 under a key of at least 32 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

from engine import RemoteError


class FileLinkError(RemoteError):
    """A ticket that is malformed, forged or expired (``expired`` tells which)."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


class FileTicket(msgspec.Struct, frozen=True, array_like=True):
    url: str
    team_id: str
    name: str
    expires: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(FileTicket).decode
MAX_TICKET = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_ticket(ticket: FileTicket, key: bytes) -> str:
    if len(key) < 32:
        raise ValueError("a file-link key needs at least 32 bytes")
    payload = _encode(ticket)
    return _b64(payload) + "." + _b64(hmac.new(key, payload, hashlib.sha256).digest())


def open_ticket(token: str, key: bytes, *, now: float) -> FileTicket:
    """The ticket in ``token`` if Interlink signed it and it has not expired."""
    if len(token) > MAX_TICKET or token.count(".") != 1:
        raise FileLinkError("malformed file link")
    body, mac = token.split(".")
    try:
        payload, signature = _unb64(body), _unb64(mac)
    except ValueError:
        raise FileLinkError("malformed file link") from None
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise FileLinkError("file link signature does not match")
    try:
        ticket = _decode(payload)
    except msgspec.DecodeError:
        raise FileLinkError("malformed file link") from None
    if ticket.expires < now:
        raise FileLinkError("file link expired", expired=True)
    return ticket
