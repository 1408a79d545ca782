"""Federated addresses: ``user@domain``, validated and normalised."""

from __future__ import annotations

import re

import msgspec

from ._errors import InvalidAddressError

MAX_ADDRESS_LENGTH = 320  # RFC 5321: 64 for the local part, 255 for the domain
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _normalise_domain(domain: str, text: str) -> str:
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidAddressError(f"invalid domain in address {text!r}: {exc}") from None
    if not ascii_domain or len(ascii_domain) > 255:
        raise InvalidAddressError(f"invalid domain in address {text!r}: empty or too long")
    labels = ascii_domain.split(".")
    for label in labels:
        if not _DOMAIN_LABEL.match(label):
            raise InvalidAddressError(
                f"invalid domain in address {text!r}: label {label!r} must be 1-63 letters, "
                "digits or hyphens, not starting or ending with a hyphen"
            )
    return ascii_domain


class Address(msgspec.Struct, frozen=True, order=True):
    """A federated identity ``user@domain``; build it with :meth:`parse`.

    The user part is lower-cased (every platform we bridge treats it
    case-insensitively); the domain is lower-cased and IDNA-encoded.
    """

    user: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """Validate and normalise ``text``; raise :class:`InvalidAddressError` with the reason."""
        if not isinstance(text, str):
            raise InvalidAddressError(f"an address must be a string, not {type(text).__name__}")
        stripped = text.strip()
        if len(stripped) > MAX_ADDRESS_LENGTH:
            raise InvalidAddressError(
                f"address is {len(stripped)} characters long; the maximum is {MAX_ADDRESS_LENGTH}"
            )
        user, sep, domain = stripped.rpartition("@")
        if not sep or not user or not domain:
            raise InvalidAddressError(f"address {text!r} must have the form user@domain")
        user = user.lower()
        dots_ok = not (user.startswith(".") or user.endswith(".") or ".." in user)
        if not _LOCAL_PART.match(user) or not dots_ok:
            raise InvalidAddressError(
                f"invalid user part {user!r} in address {text!r}: use letters, digits and "
                "!#$%&'*+/=?^_`{|}~.- (no leading, trailing or double dots)"
            )
        return cls(user=user, domain=_normalise_domain(domain, text))

    def __str__(self) -> str:
        return f"{self.user}@{self.domain}"
