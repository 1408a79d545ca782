"""JIDs <-> federated addresses, and XEP-0106 JID escaping. Pure: no I/O.

Two deployment modes (configuration, not code; see ``BRIEF.md``):

``domain``
    The component serves the organisation's own domain: Slack's
    ``john@acme.com`` *is* the JID ``john@acme.com`` (the component domain
    equals the internal domain). One mapper serves one domain; an
    organisation with several internal domains runs one component (and one
    mapper) per domain.
``hub``
    One component domain serves every organisation, with the whole address
    escaped into the localpart: ``john@acme.com`` <->
    ``john\\40acme.com@hub.example.net``.

Real XMPP users (the remote side) keep their own JIDs in both modes:
``peter@widget.com/phone`` is the address ``peter@widget.com``.

Escaping (XEP-0106 §3): the ten characters below become ``\\xx``; a backslash
is escaped only where it would otherwise start one of those ten sequences;
a localpart never starts or ends with an escaped space (``\\20``).
Unescaping decodes exactly the ten sequences and leaves any other backslash
as it is.

Errors are :class:`JidError`, carrying the XMPP stanza error condition the
I/O layer should answer with (``jid-malformed`` for bad syntax or escaping,
``item-not-found`` for a JID this component does not serve).
"""

from __future__ import annotations

import unicodedata
from typing import Literal

import msgspec

from engine import Address, ConfigError, InvalidAddressError, RemoteError

#: RFC 6120 §8.3.3 defined stanza error conditions
StanzaCondition = Literal[
    "bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
    "internal-server-error", "item-not-found", "jid-malformed", "not-acceptable",
    "not-allowed", "not-authorized", "policy-violation", "recipient-unavailable", "redirect",
    "registration-required", "remote-server-not-found", "remote-server-timeout",
    "resource-constraint", "service-unavailable", "subscription-required",
    "undefined-condition", "unexpected-request",
]
#: RFC 6120 §8.3.2 error types
ErrorType = Literal["auth", "cancel", "continue", "modify", "wait"]

#: XEP-0106 §3.2: character -> escape sequence
ESCAPES: dict[str, str] = {
    " ": "\\20", '"': "\\22", "&": "\\26", "'": "\\27", "/": "\\2f",
    ":": "\\3a", "<": "\\3c", ">": "\\3e", "@": "\\40", "\\": "\\5c",
}
_UNESCAPES: dict[str, str] = {seq[1:]: char for char, seq in ESCAPES.items()}
#: characters RFC 7622 forbids in a localpart (the backslash is allowed)
_FORBIDDEN_IN_LOCALPART = frozenset(' "&\'/:<>@')
MAX_PART_BYTES = 1023  # RFC 7622 §3.1: each part is 1..1023 octets


class JidError(RemoteError, ValueError):
    """A JID that is malformed, badly escaped, or not one this component serves.

    ``condition`` is the stanza error condition to answer with; the message
    names the JID (routing data, never message content).
    """

    def __init__(self, reason: str, *, condition: StanzaCondition = "jid-malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.condition: StanzaCondition = condition


# ------------------------------------------------------------------ escaping

def _starts_sequence(value: str, index: int) -> bool:
    """Whether ``value[index:index + 2]`` is one of the ten escape codes (``20``…``5c``)."""
    return value[index:index + 2] in _UNESCAPES


def _check_escapable(node: str) -> None:
    if not node:
        raise JidError("an empty localpart cannot be escaped")
    if node[0] == " " or node[-1] == " ":
        raise JidError("a localpart may not start or end with a space (XEP-0106: no leading "
                       "or trailing \\20)")
    for char in node:
        if char != " " and (char.isspace() or unicodedata.category(char).startswith("C")):
            raise JidError(f"character U+{ord(char):04X} cannot appear in a localpart, "
                           "escaped or not")


def escape_node(node: str) -> str:
    """The XEP-0106 escaped form of ``node`` (a localpart as people see it).

    Raises :class:`JidError` (``jid-malformed``) for an empty node, a leading
    or trailing space, or characters no escaping can carry (controls, other
    whitespace).
    """
    _check_escapable(node)
    out: list[str] = []
    for index, char in enumerate(node):
        if char == "\\":
            out.append("\\5c" if _starts_sequence(node, index + 1) else "\\")
        else:
            out.append(ESCAPES.get(char, char))
    escaped = "".join(out)
    if len(escaped.encode()) > MAX_PART_BYTES:
        raise JidError(f"escaped localpart is longer than {MAX_PART_BYTES} bytes")
    return escaped


def unescape_node(node: str) -> str:
    """The localpart ``node`` as people see it (XEP-0106 §3.3).

    Raises :class:`JidError` (``jid-malformed``) when ``node`` is not a valid
    escaped localpart: empty, holding a character RFC 7622 forbids, or
    starting or ending with ``\\20``.
    """
    if not node:
        raise JidError("empty localpart")
    bad = next((c for c in node if c in _FORBIDDEN_IN_LOCALPART), None)
    if bad is not None:
        raise JidError(f"localpart {node!r} holds {bad!r}, which must be escaped (XEP-0106)")
    if node.startswith("\\20") or node.endswith("\\20"):
        raise JidError(f"localpart {node!r} starts or ends with an escaped space")
    out: list[str] = []
    index = 0
    while index < len(node):
        char = node[index]
        if char == "\\" and _starts_sequence(node, index + 1):
            out.append(_UNESCAPES[node[index + 1:index + 3]])
            index += 3
        else:
            out.append(char)
            index += 1
    return "".join(out)


# ---------------------------------------------------------------------- JIDs

def split_jid(jid: str) -> tuple[str, str, str]:
    """``(localpart, domainpart, resourcepart)`` of ``jid`` (RFC 7622 §3.1); parts may be empty.

    The domain is lower-cased. Raises :class:`JidError` for empty parts
    around a separator or an empty domain.
    """
    bare, slash, resource = jid.partition("/")
    local, at, domain = bare.partition("@")
    if not at:
        local, domain = "", bare
    if (at and not local) or (slash and not resource) or not domain:
        raise JidError(f"malformed JID {jid!r}")
    for part in (local, domain, resource):
        if len(part.encode()) > MAX_PART_BYTES:
            raise JidError(f"a part of JID {jid[:64]!r}… is longer than {MAX_PART_BYTES} bytes")
    return local, domain.rstrip(".").lower(), resource


def bare_jid(jid: str) -> str:
    """``jid`` without its resource."""
    local, domain, _ = split_jid(jid)
    return f"{local}@{domain}" if local else domain


def _normalise_domain(domain: str) -> str:
    """The domain as :class:`Address` normalises it (IDNA, lower case)."""
    return Address.parse(f"x@{domain}").domain


# -------------------------------------------------------------------- mapper

AddressingMode = Literal["domain", "hub"]


class AddressingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How addresses appear as JIDs; the ``[xmpp]`` section of the config holds these."""

    #: ``domain``: the component serves the organisation's own domain;
    #: ``hub``: one component domain serves everyone with XEP-0106 escaped JIDs
    mode: AddressingMode = "domain"
    #: the component's JID domain (``acme.com`` in domain mode, ``hub.example.net`` in hub mode)
    component_domain: str


class AddressMapper:
    """Federated addresses <-> JIDs for one component (see the module docstring)."""

    def __init__(self, settings: AddressingSettings) -> None:
        try:
            self._domain = _normalise_domain(settings.component_domain)
        except InvalidAddressError as exc:
            raise ConfigError(f"xmpp component_domain: {exc}") from None
        self._mode: AddressingMode = settings.mode

    @property
    def component_domain(self) -> str:
        return self._domain

    @property
    def mode(self) -> AddressingMode:
        return self._mode

    def __repr__(self) -> str:
        return f"<AddressMapper {self._mode} {self._domain}>"

    def is_local(self, jid: str) -> bool:
        """Whether ``jid`` is under the component's domain (the component itself included)."""
        try:
            _, domain, _ = split_jid(jid)
            return _normalise_domain(domain) == self._domain
        except (JidError, InvalidAddressError):
            return False

    def local_jid(self, address: Address) -> str:
        """The bare JID XMPP users see for an address on the platform side."""
        if self._mode == "hub":
            return f"{escape_node(str(address))}@{self._domain}"
        if address.domain != self._domain:
            raise JidError(f"address {address} is not served by component {self._domain}",
                           condition="item-not-found")
        return f"{escape_node(address.user)}@{self._domain}"

    def address_of_local(self, jid: str) -> Address:
        """The platform-side address behind a JID under the component (resource ignored)."""
        local, domain, _ = split_jid(jid)
        if _normalise_domain_or_error(domain, jid) != self._domain:
            raise JidError(f"JID {jid!r} is not under component {self._domain}",
                           condition="item-not-found")
        if not local:
            raise JidError(f"JID {jid!r} is the component itself, not a user",
                           condition="item-not-found")
        node = unescape_node(local)
        text = node if self._mode == "hub" else f"{node}@{self._domain}"
        if self._mode == "hub" and "@" not in node:
            raise JidError(f"hub JID {jid!r} does not hold an escaped address "
                           "(user\\40domain)")
        try:
            address = Address.parse(text)
        except InvalidAddressError:
            raise JidError(f"JID {jid!r} does not name a valid address") from None
        if self._mode == "hub" and address.domain == self._domain:
            raise JidError(f"hub JID {jid!r} names an address on the hub domain itself",
                           condition="item-not-found")
        return address

    def address_of_remote(self, jid: str) -> Address:
        """The address of a real XMPP user from their (bare or full) JID."""
        local, domain, _ = split_jid(jid)
        if not local:
            raise JidError(f"JID {jid!r} has no localpart, so it is not a user")
        if _normalise_domain_or_error(domain, jid) == self._domain:
            raise JidError(f"JID {jid!r} is under this component, not a remote user",
                           condition="not-allowed")
        node = unescape_node(local)
        try:
            return Address.parse(f"{node}@{domain}")
        except InvalidAddressError:
            raise JidError(f"JID {jid!r} cannot be represented as a federated address",
                           condition="not-acceptable") from None

    def remote_jid(self, address: Address) -> str:
        """The bare JID of a real XMPP user from their address."""
        if self._mode == "domain" and address.domain == self._domain:
            raise JidError(f"address {address} is served by this component, not a remote "
                           "XMPP user", condition="not-allowed")
        return f"{escape_node(address.user)}@{address.domain}"


def _normalise_domain_or_error(domain: str, jid: str) -> str:
    try:
        return _normalise_domain(domain)
    except InvalidAddressError:
        raise JidError(f"JID {jid!r} has an invalid domain") from None
