"""XEP-0106 escaping and the two address modes (pure, table-driven, plus round-trip properties)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapters.xmpp._jid import (
    ESCAPES,
    AddressingSettings,
    AddressMapper,
    JidError,
    bare_jid,
    escape_node,
    split_jid,
    unescape_node,
)
from engine import Address, ConfigError

# XEP-0106 §5 (examples table), the rows our character set can express.
XEP_EXAMPLES = [
    ("space cadet", "space\\20cadet"),
    ('call me "ishmael"', "call\\20me\\20\\22ishmael\\22"),
    ("at&t guy", "at\\26t\\20guy"),
    ("d'artagnan", "d\\27artagnan"),
    ("/.fanboy", "\\2f.fanboy"),
    ("::foo::", "\\3a\\3afoo\\3a\\3a"),
    ("<foo>", "\\3cfoo\\3e"),
    ("user@host", "user\\40host"),
    ("c:net", "c\\3anet"),
    ("c:\\\\net", "c\\3a\\\\net"),
    ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
    ("c:\\5commas", "c\\3a\\5c5commas"),
]


@pytest.mark.parametrize(("node", "escaped"), XEP_EXAMPLES)
def test_xep_examples_escape_and_unescape(node: str, escaped: str) -> None:
    assert escape_node(node) == escaped
    assert unescape_node(escaped) == node


def test_backslash_is_escaped_only_before_an_escape_code() -> None:
    assert escape_node("a\\b") == "a\\b"
    assert escape_node("a\\20b") == "a\\5c20b"
    assert escape_node("a\\2") == "a\\2"
    assert escape_node("a\\5C") == "a\\5C"  # codes are lower-case hex
    assert escape_node("\\\\40") == "\\\\5c40"
    assert unescape_node("a\\b") == "a\\b"
    assert unescape_node("a\\5cb") == "a\\b"  # a non-canonical but valid escaping


@pytest.mark.parametrize("node", ["", " lead", "trail ", " ", "tab\there", "nul\x00", "nl\n"])
def test_unescapable_nodes_are_refused(node: str) -> None:
    with pytest.raises(JidError) as info:
        escape_node(node)
    assert info.value.condition == "jid-malformed"


@pytest.mark.parametrize("node", ["", "\\20lead", "trail\\20", "raw space", "a@b", "a/b",
                                  'q"', "a&b", "it's", "a:b", "<a", "a>"])
def test_invalid_escaped_nodes_are_refused(node: str) -> None:
    with pytest.raises(JidError) as info:
        unescape_node(node)
    assert info.value.condition == "jid-malformed"


_node_chars = st.sampled_from([*ESCAPES, "a", "b", "2", "0", "5", "c", "f", "é", "ß", "😀"])
_nodes = st.text(_node_chars, min_size=1, max_size=20).filter(
    lambda s: not s.startswith(" ") and not s.endswith(" "))


@given(_nodes)
def test_escape_then_unescape_is_identity(node: str) -> None:
    escaped = escape_node(node)
    assert not set(escaped) & set(' "&\'/:<>@')
    assert not escaped.startswith("\\20")
    assert not escaped.endswith("\\20")
    assert unescape_node(escaped) == node


@given(_nodes)
def test_escaping_is_canonical(node: str) -> None:
    escaped = escape_node(node)
    assert escape_node(unescape_node(escaped)) == escaped


@given(st.text(st.sampled_from(["a", "\\", "2", "0", "5", "c", "4"]), min_size=1, max_size=12))
def test_unescape_then_escape_recovers_any_valid_escaped_node(escaped: str) -> None:
    # Any valid escaped node unescapes to a node whose canonical escaping unescapes the same.
    assume(not escaped.startswith("\\20") and not escaped.endswith("\\20"))
    node = unescape_node(escaped)
    assert unescape_node(escape_node(node)) == node


@pytest.mark.parametrize(("jid", "parts"), [
    ("peter@widget.com/phone", ("peter", "widget.com", "phone")),
    ("peter@Widget.COM", ("peter", "widget.com", "")),
    ("widget.com", ("", "widget.com", "")),
    ("widget.com/res/with@at", ("", "widget.com", "res/with@at")),
    ("a@b.c/r@x/y", ("a", "b.c", "r@x/y")),
])
def test_split_jid(jid: str, parts: tuple[str, str, str]) -> None:
    assert split_jid(jid) == parts


@pytest.mark.parametrize("jid", ["", "@widget.com", "peter@", "peter@widget.com/", "/res"])
def test_split_jid_refuses_malformed(jid: str) -> None:
    with pytest.raises(JidError):
        split_jid(jid)


def test_bare_jid() -> None:
    assert bare_jid("peter@widget.com/phone") == "peter@widget.com"
    assert bare_jid("widget.com/x") == "widget.com"


# -------------------------------------------------------------------- modes

DOMAIN = AddressMapper(AddressingSettings(mode="domain", component_domain="acme.localhost"))
HUB = AddressMapper(AddressingSettings(mode="hub", component_domain="hub.example.net"))
JOHN = Address.parse("john@acme.localhost")


def test_domain_mode_uses_the_address_as_the_jid() -> None:
    assert DOMAIN.local_jid(JOHN) == "john@acme.localhost"
    assert DOMAIN.address_of_local("john@acme.localhost/slack") == JOHN
    assert DOMAIN.address_of_local("John@ACME.localhost") == JOHN
    odd = Address.parse("o'brien@acme.localhost")
    assert DOMAIN.local_jid(odd) == "o\\27brien@acme.localhost"
    assert DOMAIN.address_of_local("o\\27brien@acme.localhost") == odd


def test_hub_mode_escapes_the_whole_address() -> None:
    john = Address.parse("john@acme.com")
    assert HUB.local_jid(john) == "john\\40acme.com@hub.example.net"
    assert HUB.address_of_local("john\\40acme.com@hub.example.net/x") == john
    odd = Address.parse("a/b&c'd@acme.com")
    jid = HUB.local_jid(odd)
    assert jid == "a\\2fb\\26c\\27d\\40acme.com@hub.example.net"
    assert HUB.address_of_local(jid) == odd


@pytest.mark.parametrize(("mapper", "jid", "condition"), [
    (DOMAIN, "john@other.localhost", "item-not-found"),
    (DOMAIN, "acme.localhost", "item-not-found"),
    (DOMAIN, "jo hn@acme.localhost", "jid-malformed"),
    (DOMAIN, "\\20john@acme.localhost", "jid-malformed"),
    (DOMAIN, "jöhn@acme.localhost", "jid-malformed"),
    (DOMAIN, "@acme.localhost", "jid-malformed"),
    (HUB, "john@hub.example.net", "jid-malformed"),
    (HUB, "john\\40acme.com@elsewhere.net", "item-not-found"),
    (HUB, "john\\40\\40acme.com@hub.example.net", "jid-malformed"),
    (HUB, "john\\40hub.example.net@hub.example.net", "item-not-found"),
    (HUB, "hub.example.net", "item-not-found"),
])
def test_address_of_local_refuses(mapper: AddressMapper, jid: str, condition: str) -> None:
    with pytest.raises(JidError) as info:
        mapper.address_of_local(jid)
    assert info.value.condition == condition


def test_domain_mode_refuses_addresses_it_does_not_serve() -> None:
    with pytest.raises(JidError) as info:
        DOMAIN.local_jid(Address.parse("john@other.com"))
    assert info.value.condition == "item-not-found"


@pytest.mark.parametrize("mapper", [DOMAIN, HUB])
def test_remote_users_keep_their_jids(mapper: AddressMapper) -> None:
    peter = Address.parse("peter@widget.localhost")
    assert mapper.address_of_remote("Peter@widget.localhost/phone") == peter
    assert mapper.remote_jid(peter) == "peter@widget.localhost"
    odd = Address.parse("d'artagnan@widget.localhost")
    assert mapper.remote_jid(odd) == "d\\27artagnan@widget.localhost"
    assert mapper.address_of_remote("d\\27artagnan@widget.localhost") == odd


@pytest.mark.parametrize(("jid", "condition"), [
    ("widget.localhost", "jid-malformed"),
    ("peter@acme.localhost", "not-allowed"),
    ("pe ter@widget.localhost", "jid-malformed"),
    ("jürgen@widget.localhost", "not-acceptable"),
    ("peter@widget..localhost", "jid-malformed"),
])
def test_address_of_remote_refuses(jid: str, condition: str) -> None:
    with pytest.raises(JidError) as info:
        DOMAIN.address_of_remote(jid)
    assert info.value.condition == condition


def test_is_local() -> None:
    assert DOMAIN.is_local("john@acme.localhost/x")
    assert DOMAIN.is_local("acme.localhost")
    assert not DOMAIN.is_local("peter@widget.localhost")
    assert not DOMAIN.is_local("@@")


def test_settings_decode_and_validate() -> None:
    import msgspec

    settings = msgspec.convert({"mode": "hub", "component_domain": "Hub.Example.NET"},
                               AddressingSettings)
    assert AddressMapper(settings).component_domain == "hub.example.net"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"mode": "mesh", "component_domain": "x"}, AddressingSettings)
    with pytest.raises(ConfigError):
        AddressMapper(AddressingSettings(component_domain="-bad-"))


_users = st.text(st.sampled_from("abcz09!#$%&'*+/=?^_`{|}~-"), min_size=1, max_size=12)


@given(_users)
def test_addresses_round_trip_in_both_modes(user: str) -> None:
    hub_address = Address.parse(f"{user}@acme.com")
    assert HUB.address_of_local(HUB.local_jid(hub_address)) == hub_address
    local = Address.parse(f"{user}@acme.localhost")
    assert DOMAIN.address_of_local(DOMAIN.local_jid(local)) == local
    remote = Address.parse(f"{user}@widget.localhost")
    assert DOMAIN.address_of_remote(DOMAIN.remote_jid(remote)) == remote
