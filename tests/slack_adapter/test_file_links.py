"""Signed file links: only Interlink can write them, and they expire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.slack._file_links import FileLinkError, FileTicket, open_ticket, sign_ticket

KEY = b"k" * 32


@given(st.text(max_size=200), st.text(max_size=20), st.text(max_size=50))
def test_a_signed_ticket_opens_to_itself(url: str, team: str, name: str) -> None:
    ticket = FileTicket(url=url, team_id=team, name=name, expires=100.0)
    assert open_ticket(sign_ticket(ticket, KEY), KEY, now=99.0) == ticket


def test_forged_tampered_expired_and_malformed_tickets_are_refused() -> None:
    token = sign_ticket(FileTicket(url="https://files/a", team_id="T", name="a", expires=10.0),
                        KEY)
    with pytest.raises(FileLinkError, match="signature"):
        open_ticket(token, b"x" * 32, now=0.0)
    _, mac = token.split(".")
    other = sign_ticket(FileTicket(url="https://files/b", team_id="T", name="b",
                                   expires=10.0), KEY).split(".")[0]
    with pytest.raises(FileLinkError, match="signature"):
        open_ticket(f"{other}.{mac}", KEY, now=0.0)
    with pytest.raises(FileLinkError) as expired:
        open_ticket(token, KEY, now=11.0)
    assert expired.value.expired
    for bad in ("", "no-dot", "a.b.c", "!!!.???", "x" * 5000):
        with pytest.raises(FileLinkError, match=r"malformed|signature"):
            open_ticket(bad, KEY, now=0.0)
    with pytest.raises(ValueError, match="32 bytes"):
        sign_ticket(FileTicket(url="u", team_id="T", name="n", expires=1.0), b"short")
