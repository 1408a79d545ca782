"""Standard Webhooks signatures against the independent ``standardwebhooks`` library,
both ways, table-driven (no I/O)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from adapters.webhook import SignatureError, parse_secret, sign, signature_headers, verify

from .conftest import new_secret

BODY = b'{"type":"message.created","data":{"text":"h\xc3\xa9"}}'


def test_our_signature_verifies_with_the_library() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signature_headers(parse_secret(secret), "msg_1", now, BODY)
    assert Webhook(secret).verify(BODY, headers) == {"type": "message.created",
                                                     "data": {"text": "hé"}}


def test_the_librarys_signature_verifies_with_ours() -> None:
    secret = new_secret()
    moment = datetime.now(UTC)
    signature = Webhook(secret).sign("msg_2", moment, BODY.decode())
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(int(moment.timestamp())),
               "webhook-signature": signature}
    assert verify((parse_secret(secret),), headers, BODY, now=time.time()) == "msg_2"


def test_a_rotated_secret_and_unknown_versions_are_tolerated() -> None:
    old, new = parse_secret(new_secret()), parse_secret(new_secret())
    now = int(time.time())
    header = " ".join(["v1a,c29tZXRoaW5nIGVsc2U=", sign(old, "msg_3", now, BODY),
                       sign(new, "msg_3", now, BODY)])
    headers = {"webhook-id": "msg_3", "webhook-timestamp": str(now),
               "webhook-signature": header}
    assert verify((new,), headers, BODY, now=now) == "msg_3"
    assert verify((parse_secret(new_secret()), old), headers, BODY, now=now) == "msg_3"


KEY = parse_secret(new_secret())
NOW = 1_767_225_600


def _headers(**changes: str) -> dict[str, str]:
    headers = signature_headers(KEY, "msg_x", NOW, BODY)
    headers.update(changes)
    return {k: v for k, v in headers.items() if v != "-"}


@pytest.mark.parametrize(("headers", "now", "code"), [
    (_headers(**{"webhook-id": "-"}), NOW, "missing-headers"),
    (_headers(**{"webhook-timestamp": "-"}), NOW, "missing-headers"),
    (_headers(**{"webhook-signature": "-"}), NOW, "missing-headers"),
    (_headers(**{"webhook-id": "msg_\u00e9"}), NOW, "invalid-id"),
    (_headers(**{"webhook-timestamp": "1767225600.5"}), NOW, "invalid-timestamp"),
    (_headers(), NOW + 301, "stale-timestamp"),
    (_headers(), NOW - 301, "stale-timestamp"),
    (_headers(**{"webhook-id": "msg_y"}), NOW, "invalid-signature"),
    (_headers(**{"webhook-signature": "v1,bm90IGl0"}), NOW, "invalid-signature"),
    (_headers(**{"webhook-signature": "v2," + _headers()["webhook-signature"][3:]}), NOW,
     "invalid-signature"),
    (_headers(**{"webhook-signature": "garbage"}), NOW, "invalid-signature"),
], ids=["no-id", "no-timestamp", "no-signature", "non-ascii-id", "fractional-timestamp",
        "too-old", "too-new", "other-id", "wrong-signature", "other-version", "garbage"])
def test_what_does_not_authenticate(headers: dict[str, str], now: int, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify((KEY,), headers, BODY, now=now)
    assert caught.value.code == code
    assert base64.b64encode(KEY).decode() not in str(caught.value)


def test_the_window_edges_are_inside() -> None:
    for now in (NOW - 300, NOW + 300):
        assert verify((KEY,), _headers(), BODY, now=now) == "msg_x"


def test_the_library_refuses_a_tampered_body_we_signed() -> None:
    secret = new_secret()
    headers = signature_headers(parse_secret(secret), "msg_4", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


@pytest.mark.parametrize("secret", [
    "c2VjcmV0", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode(),
])
def test_malformed_secrets(secret: str) -> None:
    with pytest.raises(ValueError, match=r"whsec_|base64|bytes") as caught:
        parse_secret(secret)
    assert secret[6:] not in str(caught.value) or not secret[6:]  # never echoes the value


def test_unpadded_secrets_are_accepted() -> None:
    key = bytes(range(32))
    assert parse_secret("whsec_" + base64.b64encode(key).decode().rstrip("=")) == key
