"""Address parsing: what is valid, how it is normalised, and that it round-trips."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine._address import MAX_ADDRESS_LENGTH, Address
from engine._errors import InvalidAddressError

LOCAL_CHARS = string.ascii_lowercase + string.digits + "!#$%&'*+/=?^_`{|}~-"
LABEL_CHARS = string.ascii_lowercase + string.digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("john@acme.com", "john@acme.com"),
        ("John@ACME.com", "john@acme.com"),
        ("  mary@widget.org\n", "mary@widget.org"),
        ("john@acme.com.", "john@acme.com"),
        ("first.last+tag@sub.acme.co.uk", "first.last+tag@sub.acme.co.uk"),
        ("o'brien@acme.com", "o'brien@acme.com"),
        ("x@localhost", "x@localhost"),
        ("a-b_c@x-y.org", "a-b_c@x-y.org"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("user@BÜCHER.DE", "user@xn--bcher-kva.de"),
        ("123@456.789", "123@456.789"),
        ("u" * 64 + "@" + "d" * 63 + ".com", "u" * 64 + "@" + "d" * 63 + ".com"),
    ],
)
def test_valid_addresses_are_normalised(text: str, expected: str) -> None:
    address = Address.parse(text)
    assert str(address) == expected
    assert Address.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "john",
        "@acme.com",
        "john@",
        "john@@acme.com",
        "jo hn@acme.com",
        "john@ac me.com",
        'j"ohn@acme.com',
        "j(ohn)@acme.com",
        "jöhn@acme.com",
        ".john@acme.com",
        "john.@acme.com",
        "jo..hn@acme.com",
        "john@-acme.com",
        "john@acme-.com",
        "john@acme..com",
        "john@.acme.com",
        "john@.",
        "john@acme_corp.com",
        "u" * 65 + "@acme.com",
        "john@" + "d" * 64 + ".com",
        "john@" + ".".join(["d" * 63] * 5),
        "u" * 64 + "@" + ".".join(["d" * 60] * 5),
        "j@" + ".".join(["d" * 63] * 4) + ".dd",  # domain of 258 characters
        "a@b@acme.com",
    ],
)
def test_invalid_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidAddressError):
        Address.parse(text)


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidAddressError, match="must be a string"):
        Address.parse(42)  # type: ignore[arg-type]


def test_invalid_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="user@domain"):
        Address.parse("nobody")


@st.composite
def local_parts(draw: st.DrawFn) -> str:
    """Dot-separated runs of allowed characters: no leading, trailing or double dots."""
    runs = draw(st.lists(st.text(LOCAL_CHARS, min_size=1, max_size=12), min_size=1, max_size=4))
    return ".".join(runs)[:64].rstrip(".")


@st.composite
def labels(draw: st.DrawFn) -> str:
    size = draw(st.integers(min_value=1, max_value=63))
    if size == 1:
        return draw(st.sampled_from(LABEL_CHARS))
    middle = draw(st.text(LABEL_CHARS + "-", min_size=size - 2, max_size=size - 2))
    edges = draw(st.text(LABEL_CHARS, min_size=2, max_size=2))
    return edges[0] + middle + edges[1]


@st.composite
def domains(draw: st.DrawFn) -> str:
    parts = draw(st.lists(labels(), min_size=1, max_size=4))
    domain = ".".join(parts)
    while len(domain) > 255:
        parts.pop()
        domain = ".".join(parts)
    return domain


valid_texts = st.builds(lambda user, domain: f"{user}@{domain}", local_parts(), domains()).filter(
    lambda text: len(text) <= MAX_ADDRESS_LENGTH)


@given(valid_texts)
def test_valid_addresses_round_trip(text: str) -> None:
    address = Address.parse(text)
    assert str(address) == text
    assert Address.parse(str(address)) == address
    assert Address.parse(text.upper()) == address
    assert Address.parse(f"  {text}.\t") == address


@given(local_parts(), domains(), st.data())
def test_corrupted_addresses_raise(user: str, domain: str, data: st.DataObject) -> None:
    bad_in_user = data.draw(st.sampled_from(' ,;:<>()[]\\"@'))
    bad_in_domain = data.draw(st.sampled_from(" ,;:<>()[]_!@"))
    corruptions = [
        f"{user}{domain}",  # no @
        f"@{domain}",
        f"{user}@",
        f".{user}@{domain}",
        f"{user}.@{domain}",
        f"{user}..x@{domain}",
        f"{user}@-{domain}",
        f"{user}@{domain}-",
        f"{user}@{domain}..x",
        f"{user}@.{domain}",
        f"{'u' * 65}@{domain}",
        f"{user}@{'d' * 64}.{domain}",
        f"{user}{bad_in_user}x@{domain}",
        f"{user}@{domain}{bad_in_domain}x",
        f"{user}@{'.'.join(['d' * 60] * 5)}.{domain}",  # domain over 255 characters
    ]
    with pytest.raises(InvalidAddressError):
        Address.parse(data.draw(st.sampled_from(corruptions)))
