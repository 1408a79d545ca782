"""The directory contract, on both implementations, plus what only LMDB has to prove.

Tests taking the ``directory`` fixture (tests/conftest.py) run once on
:class:`MemoryDirectory` and once on :class:`LmdbDirectory`.
"""

from __future__ import annotations

import io
import logging
import os
import random
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import lmdb
import msgspec
import pytest
import trio

from engine import _lmdb_writer
from engine._address import Address
from engine._directory import (
    SCHEMA_VERSION,
    ContactRecord,
    ContactState,
    Directory,
    DomainAgreement,
    DomainRoute,
    Installation,
    LedgerRecord,
    MessageIdRecord,
    PlatformIdentity,
    SessionRecord,
    UserPolicy,
    session_id_for,
)
from engine._directory_lmdb import (
    DIRECTORY_DBS,
    MESSAGE_IN_SESSION,
    MIGRATIONS,
    ROUTES,
    LmdbDirectory,
)
from engine._errors import DirectoryError
from engine._lmdb_store import META_DB, SCHEMA_KEY, LmdbStore, StoreHandles
from engine.testing._memory_directory import MemoryDirectory

JOHN = Address.parse("john@acme.com")
MARY = Address.parse("mary@acme.com")
PETER = Address.parse("peter@widget.org")
ANN = Address.parse("ann@widget.org")
# "a.b@x.org" < "a@x.org" as strings, but Address orders by (user, domain): a < a.b
A = Address.parse("a@x.org")
A_DOT_B = Address.parse("a.b@x.org")


def contact(owner: Address, other: Address, state: ContactState = "accepted") -> ContactRecord:
    return ContactRecord(owner=owner, contact=other, state=state, requested_by=owner)


def session(a: Address, b: Address, *, session_id: str | None = None,
            conversation_ids: dict[str, str] | None = None,
            created_at: float = 0.0) -> SessionRecord:
    return SessionRecord(session_id=session_id or session_id_for(a, b), a=a, b=b,
                         conversation_ids=conversation_ids or {}, created_at=created_at)


def identity(address: Address, user_id: str, *, platform: str = "slack",
             tenant: str = "T1") -> PlatformIdentity:
    return PlatformIdentity(address=address, platform=platform, tenant=tenant, user_id=user_id)


# ------------------------------------------------------------------ routes


async def test_domain_routes_fall_back_to_the_wildcard(directory: Directory) -> None:
    assert directory.get_domain_route("acme.com") is None
    acme = DomainRoute(domain="acme.com", platform="slack", tenant="T1", internal=True)
    await directory.put_domain_route(acme)
    assert directory.get_domain_route("acme.com") == acme
    assert directory.get_domain_route("widget.org") is None
    star = DomainRoute(domain="*", platform="xmpp")
    await directory.put_domain_route(star)
    assert directory.get_domain_route("widget.org") == star
    assert directory.get_domain_route("acme.com") == acme


async def test_domain_routes_are_listed_by_domain_and_replaced(directory: Directory) -> None:
    for domain in ["widget.org", "*", "acme.com", "b.org"]:
        await directory.put_domain_route(DomainRoute(domain=domain, platform="xmpp"))
    replaced = DomainRoute(domain="b.org", platform="slack", tenant="T9")
    await directory.put_domain_route(replaced)
    routes = directory.list_domain_routes()
    assert [r.domain for r in routes] == ["*", "acme.com", "b.org", "widget.org"]
    assert routes[2] == replaced


# -------------------------------------------------------------- identities


async def test_identity_and_reverse_lookup(directory: Directory) -> None:
    await directory.put_identity(identity(JOHN, "U1"))
    assert directory.get_identity(JOHN) == identity(JOHN, "U1")
    assert directory.find_address("slack", "T1", "U1") == JOHN
    assert directory.find_address("slack", "T2", "U1") is None
    assert directory.find_address("xmpp", "T1", "U1") is None
    assert directory.get_identity(MARY) is None


async def test_replacing_an_identity_drops_its_stale_reverse_entry(directory: Directory) -> None:
    await directory.put_identity(identity(JOHN, "U1"))
    await directory.put_identity(identity(JOHN, "U2"))
    assert directory.find_address("slack", "T1", "U1") is None
    assert directory.find_address("slack", "T1", "U2") == JOHN
    await directory.put_identity(identity(JOHN, "U2", tenant="T3"))
    assert directory.find_address("slack", "T1", "U2") is None
    assert directory.find_address("slack", "T3", "U2") == JOHN


async def test_reverse_entry_belongs_to_its_last_writer(directory: Directory) -> None:
    await directory.put_identity(identity(JOHN, "U1"))
    await directory.put_identity(identity(MARY, "U1"))  # MARY takes over U1
    assert directory.find_address("slack", "T1", "U1") == MARY
    await directory.put_identity(identity(JOHN, "U7"))  # must not remove MARY's entry
    assert directory.find_address("slack", "T1", "U1") == MARY
    await directory.delete_identity(JOHN)
    assert directory.find_address("slack", "T1", "U1") == MARY
    assert directory.find_address("slack", "T1", "U7") is None
    assert directory.get_identity(JOHN) is None


async def test_delete_identity(directory: Directory) -> None:
    await directory.delete_identity(JOHN)  # absent: a no-op
    await directory.put_identity(identity(JOHN, "U1"))
    await directory.delete_identity(JOHN)
    assert directory.get_identity(JOHN) is None
    assert directory.find_address("slack", "T1", "U1") is None


# ---------------------------------------------------------------- contacts


async def test_contacts_listed_by_contact_address(directory: Directory) -> None:
    for other in [PETER, A_DOT_B, MARY, A, ANN]:
        await directory.put_contact(contact(JOHN, other, "pending"))
    await directory.put_contact(contact(MARY, JOHN))
    await directory.put_contact(contact(JOHN, MARY, "accepted"))  # replaces
    listed = directory.list_contacts(JOHN)
    assert [c.contact for c in listed] == sorted([PETER, A_DOT_B, MARY, A, ANN])
    assert [c.contact for c in listed][:2] == [A, A_DOT_B]
    assert directory.get_contact(JOHN, MARY) == contact(JOHN, MARY, "accepted")
    assert directory.get_contact(MARY, JOHN) == contact(MARY, JOHN)
    assert directory.get_contact(PETER, JOHN) is None
    assert directory.list_contacts(MARY) == [contact(MARY, JOHN)]
    assert directory.list_contacts(PETER) == []


async def test_contacts_of_similar_owners_stay_apart(directory: Directory) -> None:
    owner = Address.parse("ann@x.org")
    lookalike = Address.parse("ann@x.org.uk")
    await directory.put_contact(contact(owner, JOHN))
    await directory.put_contact(contact(lookalike, MARY))
    assert directory.list_contacts(owner) == [contact(owner, JOHN)]
    assert directory.list_contacts(lookalike) == [contact(lookalike, MARY)]


# ---------------------------------------------------------------- sessions


async def test_sessions_are_normalised_and_found_in_either_order(directory: Directory) -> None:
    record = session(PETER, JOHN, conversation_ids={"slack": "C1"}, created_at=5.0)
    await directory.put_session(record)
    stored = directory.get_session(record.session_id)
    assert stored is not None
    assert (stored.a, stored.b) == (JOHN, PETER)
    assert stored.conversation_ids == {"slack": "C1"}
    assert directory.find_session(JOHN, PETER) == stored
    assert directory.find_session(PETER, JOHN) == stored
    assert directory.find_session(JOHN, MARY) is None
    assert directory.get_session("s-missing") is None


async def test_sessions_are_found_by_platform_conversation(directory: Directory) -> None:
    await directory.put_session(session(JOHN, PETER, session_id="s1",
                                        conversation_ids={"slack": "C1", "xmpp": "x1"}))
    found = directory.find_session_by_conversation("slack", "C1")
    assert found is not None
    assert found.session_id == "s1"
    assert directory.find_session_by_conversation("xmpp", "C1") is None
    # the conversation moves: the old id is forgotten, the new one found
    await directory.put_session(session(JOHN, PETER, session_id="s1",
                                        conversation_ids={"slack": "C2"}))
    assert directory.find_session_by_conversation("slack", "C1") is None
    assert directory.find_session_by_conversation("xmpp", "x1") is None
    # another session takes C2 over; s1 changing again must not drop s2's entry
    await directory.put_session(session(JOHN, MARY, session_id="s2",
                                        conversation_ids={"slack": "C2"}))
    await directory.put_session(session(JOHN, PETER, session_id="s1"))
    found = directory.find_session_by_conversation("slack", "C2")
    assert found is not None
    assert found.session_id == "s2"


async def test_count_sessions_is_exact(directory: Directory) -> None:
    assert directory.count_sessions() == 0
    await directory.put_session(session(JOHN, PETER))
    await directory.put_session(session(JOHN, PETER, conversation_ids={"slack": "C2"}))
    await directory.put_session(session(MARY, PETER))
    assert directory.count_sessions() == 2
    await directory.flush()
    assert directory.count_sessions() == 2
    await directory.put_session(session(MARY, ANN))
    assert directory.count_sessions() == 3


async def test_session_pair_index_follows_replacements(directory: Directory) -> None:
    await directory.put_session(session(JOHN, PETER, session_id="s1"))
    await directory.put_session(session(JOHN, MARY, session_id="s1"))  # s1 moves to a new pair
    assert directory.find_session(JOHN, PETER) is None
    found = directory.find_session(MARY, JOHN)
    assert found is not None
    assert found.session_id == "s1"
    await directory.put_session(session(JOHN, MARY, session_id="s2"))  # s2 takes the pair over
    await directory.put_session(session(ANN, PETER, session_id="s1"))  # must not drop s2's entry
    found = directory.find_session(JOHN, MARY)
    assert found is not None
    assert found.session_id == "s2"
    assert directory.count_sessions() == 2


async def test_list_sessions_paginates_by_id(directory: Directory) -> None:
    people = [Address.parse(f"user{i}@acme.com") for i in range(25)]
    for person in people:
        await directory.put_session(session(JOHN, person))
    expected = sorted(session_id_for(JOHN, person) for person in people)
    pages: list[list[str]] = []
    after = ""
    while True:
        page = directory.list_sessions(after=after, limit=7)
        if not page:
            break
        pages.append([record.session_id for record in page])
        after = page[-1].session_id
    assert [len(page) for page in pages] == [7, 7, 7, 4]
    assert [session_id for page in pages for session_id in page] == expected
    assert directory.list_sessions(limit=0) == []
    assert [r.session_id for r in directory.list_sessions(after=expected[3], limit=2)] == \
        expected[4:6]
    assert [r.session_id for r in directory.list_sessions()] == expected


async def test_sessions_registered_between_listings_are_listed_in_order(
    directory: Directory,
) -> None:
    """Registering is O(1) in the memory directory (sorted on the next listing)."""
    people = [Address.parse(f"user{i}@acme.com") for i in range(30)]
    listed: list[str] = []
    for i, person in enumerate(people):
        await directory.put_session(session(JOHN, person))
        if i % 7 == 0:
            listed = [r.session_id for r in directory.list_sessions(limit=100)]
            assert listed == sorted(listed)
    expected = sorted(session_id_for(JOHN, person) for person in people)
    assert [r.session_id for r in directory.list_sessions(limit=100)] == expected
    await directory.put_session(session(JOHN, people[0]))  # a replacement adds no id
    assert [r.session_id for r in directory.list_sessions(limit=100)] == expected
    assert directory.count_sessions() == len(people)


async def test_list_sessions_is_exact_for_ids_beyond_the_key_limit(directory: Directory) -> None:
    """Ids longer than an LMDB key share a truncated key prefix; order must not suffer."""
    stem = "s" * 600
    ids = [stem + suffix for suffix in ["b", "a", "c", "ab", ""]] + ["t", "r"]
    for number, session_id in enumerate(ids):
        await directory.put_session(session(JOHN, Address.parse(f"u{number}@x.org"),
                                            session_id=session_id))
    expected = sorted(ids)
    for limit in [1, 2, 3, 100]:
        collected: list[str] = []
        after = ""
        while page := directory.list_sessions(after=after, limit=limit):
            collected.extend(record.session_id for record in page)
            after = page[-1].session_id
        assert collected == expected
    assert directory.count_sessions() == len(ids)
    for session_id in ids:
        record = directory.get_session(session_id)
        assert record is not None
        assert record.session_id == session_id


# ------------------------------------------------------------- message ids


async def test_message_ids_and_reverse_lookup(directory: Directory) -> None:
    record = MessageIdRecord(canonical_id="c1", session_id="s1",
                             platform_ids={"slack": "1700.01", "xmpp": "x-1"}, created_at=10.0)
    await directory.put_message_ids(record)
    assert directory.get_message_ids("c1") == record
    assert directory.find_canonical_id("slack", "1700.01") == "c1"
    assert directory.find_canonical_id("xmpp", "x-1") == "c1"
    assert directory.find_canonical_id("xmpp", "1700.01") is None
    assert directory.get_message_ids("c2") is None


async def test_replacing_message_ids_drops_stale_reverse_entries(directory: Directory) -> None:
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c1", session_id="s1", platform_ids={"slack": "a", "xmpp": "x"}))
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c1", session_id="s1", platform_ids={"slack": "b", "xmpp": "x"}))
    assert directory.find_canonical_id("slack", "a") is None
    assert directory.find_canonical_id("slack", "b") == "c1"
    assert directory.find_canonical_id("xmpp", "x") == "c1"
    # c2 takes over slack:b; replacing c1 again must leave c2's entry alone
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c2", session_id="s1", platform_ids={"slack": "b"}))
    await directory.put_message_ids(MessageIdRecord(canonical_id="c1", session_id="s1"))
    assert directory.find_canonical_id("slack", "b") == "c2"
    assert directory.find_canonical_id("xmpp", "x") is None


async def test_equal_platform_ids_in_two_sessions_are_found_within_each(
        directory: Directory) -> None:
    """XMPP clients choose their own ids: two conversations may both have an "abc"."""
    peters = MessageIdRecord(canonical_id="c-peter", session_id="s-peter",
                             platform_ids={"xmpp": "abc", "slack": "C1/1.0"}, created_at=1.0)
    pauls = MessageIdRecord(canonical_id="c-paul", session_id="s-paul",
                            platform_ids={"xmpp": "abc", "slack": "C2/1.0"}, created_at=2.0)
    await directory.put_message_ids(peters)
    await directory.put_message_ids(pauls)
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-peter") == "c-peter"
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-paul") == "c-paul"
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-other") is None
    assert directory.find_canonical_id("slack", "C1/1.0", session_id="s-peter") == "c-peter"
    assert directory.find_canonical_id("slack", "C1/1.0", session_id="s-paul") is None
    # platform-wide (ids unique on their platform): the last one recorded
    assert directory.find_canonical_id("xmpp", "abc") == "c-paul"
    assert directory.find_canonical_id("slack", "C1/1.0") == "c-peter"
    await directory.flush()  # LMDB: from committed data too
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-peter") == "c-peter"
    # a record replaced under another session is found there only
    await directory.put_message_ids(msgspec.structs.replace(peters, session_id="s-moved"))
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-peter") is None
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-moved") == "c-peter"
    # pruning Paul's message leaves Peter's entry alone
    assert await directory.prune_message_ids(1.5) == 1  # c-peter (1.0)
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-moved") is None
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-paul") == "c-paul"
    assert await directory.prune_message_ids(3.0) == 1
    assert directory.find_canonical_id("xmpp", "abc", session_id="s-paul") is None
    assert directory.find_canonical_id("xmpp", "abc") is None


async def test_prune_message_ids_by_age(directory: Directory) -> None:
    for number, created_at in enumerate([-5.0, 1.0, 2.0, 2.0, 3.0, 1e9]):
        await directory.put_message_ids(MessageIdRecord(
            canonical_id=f"c{number}", session_id="s1",
            platform_ids={"slack": f"m{number}"}, created_at=created_at))
    # c4 is re-stamped from 3.0 to 0.5: its old age entry must not keep it alive
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c4", session_id="s1", platform_ids={"slack": "m4"}, created_at=0.5))
    assert await directory.prune_message_ids(2.0) == 3  # c0, c1, c4; 2.0 is not < 2.0
    assert [directory.get_message_ids(f"c{n}") is not None for n in range(6)] == \
        [False, False, True, True, False, True]
    assert directory.find_canonical_id("slack", "m1") is None
    assert directory.find_canonical_id("slack", "m4") is None
    assert directory.find_canonical_id("slack", "m2") == "c2"
    assert await directory.prune_message_ids(2.0) == 0
    await directory.flush()
    assert await directory.prune_message_ids(float("inf")) == 3
    assert directory.get_message_ids("c5") is None


async def test_message_state_merges_and_empties(directory: Directory) -> None:
    assert directory.get_message_state("c1", "xmpp") == {}
    await directory.put_message_state("c1", "xmpp", {"receipt": "1", "reactions/a": "x"},
                                      now=5.0)
    await directory.put_message_state("c1", "xmpp", {"reactions/a": "y", "gone": None},
                                      now=6.0)
    await directory.put_message_state("c1", "slack", {"k": "v"}, now=6.0)
    state = directory.get_message_state("c1", "xmpp")
    assert state == {"receipt": "1", "reactions/a": "y"}
    state["receipt"] = "changed"  # a copy: the stored state is unchanged
    assert directory.get_message_state("c1", "xmpp")["receipt"] == "1"
    assert directory.get_message_state("c1", "slack") == {"k": "v"}
    await directory.put_message_state("c1", "xmpp", {"receipt": None, "reactions/a": None},
                                      now=7.0)
    assert directory.get_message_state("c1", "xmpp") == {}
    assert directory.get_message_state("c2", "xmpp") == {}


async def test_message_state_is_pruned_with_its_record_or_by_its_age(
    directory: Directory,
) -> None:
    # "kept": state older than the horizon, record newer: kept with its record
    # "pruned": record older than the horizon: its state goes with it (whatever its age)
    # "orphan"/"young": no record: state goes by the time of its first write
    for canonical_id, created_at in (("kept", 9.0), ("pruned", 1.0)):
        await directory.put_message_ids(MessageIdRecord(
            canonical_id=canonical_id, session_id="s1", platform_ids={"xmpp": canonical_id},
            created_at=created_at))
    for canonical_id, now in (("kept", 1.0), ("pruned", 9.0), ("orphan", 1.0),
                              ("young", 9.0)):
        await directory.put_message_state(canonical_id, "xmpp", {"receipt": "1"}, now=now)
    await directory.put_message_state("orphan", "xmpp", {"more": "1"}, now=8.0)  # stays 1.0
    await directory.flush()
    assert await directory.prune_message_ids(5.0) == 1
    assert {c: directory.get_message_state(c, "xmpp") != {}
            for c in ("kept", "pruned", "orphan", "young")} == {
        "kept": True, "pruned": False, "orphan": False, "young": True}
    assert await directory.prune_message_ids(float("inf")) == 1
    assert directory.get_message_state("kept", "xmpp") == {}
    assert directory.get_message_state("young", "xmpp") == {}


async def test_message_state_survives_a_restart(tmp_path: Path) -> None:
    first = await LmdbDirectory.open(tmp_path / "d")
    await first.put_message_state("c1", "xmpp", {"reactions/a@x.org": "👍"}, now=1.0)
    await first.aclose()
    second = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert second.get_message_state("c1", "xmpp") == {"reactions/a@x.org": "👍"}
    finally:
        await second.aclose()


async def test_schema_2_stores_gain_message_state(tmp_path: Path) -> None:
    v2 = await LmdbDirectory.open(tmp_path / "d", schema_version=2)
    await v2.put_message_ids(MessageIdRecord(canonical_id="c1", session_id="s1",
                                             platform_ids={"xmpp": "x1"}, created_at=1.0))
    await v2.aclose()
    current = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert current.schema_version == SCHEMA_VERSION  # 2 -> 3 -> ... migrated
        assert current.find_canonical_id("xmpp", "x1") == "c1"
        await current.put_message_state("c1", "xmpp", {"receipt": "1"}, now=2.0)
        assert current.get_message_state("c1", "xmpp") == {"receipt": "1"}
    finally:
        await current.aclose()


async def test_schema_4_stores_get_message_ids_indexed_within_sessions(tmp_path: Path) -> None:
    v4 = await LmdbDirectory.open(tmp_path / "d", schema_version=4,
                                  migrations={v: MIGRATIONS[v] for v in (2, 3, 4)})
    await v4.put_message_ids(MessageIdRecord(canonical_id="c-peter", session_id="s-peter",
                                             platform_ids={"xmpp": "abc"}, created_at=1.0))
    await v4.put_message_ids(MessageIdRecord(canonical_id="c-paul", session_id="s-paul",
                                             platform_ids={"xmpp": "abc"}, created_at=2.0))
    # what schema-4 code wrote: the platform-wide entries only
    store = v4.store
    await store.write([(MESSAGE_IN_SESSION, key, None)
                       for key, _ in store.scan(MESSAGE_IN_SESSION)])
    assert v4.find_canonical_id("xmpp", "abc", session_id="s-peter") is None
    await v4.aclose()
    current = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert current.schema_version == SCHEMA_VERSION == 5
        assert current.find_canonical_id("xmpp", "abc", session_id="s-peter") == "c-peter"
        assert current.find_canonical_id("xmpp", "abc", session_id="s-paul") == "c-paul"
        assert current.find_canonical_id("xmpp", "abc") == "c-paul"
        assert await current.prune_message_ids(3.0) == 2
        assert current.store.scan(MESSAGE_IN_SESSION) == []
    finally:
        await current.aclose()


async def test_schema_3_stores_gain_the_ledger(tmp_path: Path) -> None:
    v3 = await LmdbDirectory.open(tmp_path / "d", schema_version=3,
                                  migrations={2: MIGRATIONS[2], 3: MIGRATIONS[3]})
    await v3.put_message_state("c1", "xmpp", {"receipt": "1"}, now=2.0)
    await v3.aclose()
    current = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert current.schema_version == SCHEMA_VERSION
        assert current.get_message_state("c1", "xmpp") == {"receipt": "1"}
        assert current.open_ledger() == []
        record = LedgerRecord(event_id="e1", sender=Address.parse("a@x.test"),
                              receiver=Address.parse("b@y.test"), type="im", accepted_at=3.0)
        await current.put_ledger(record)
        assert current.open_ledger() == [record]
    finally:
        await current.aclose()


async def test_prune_leaves_reverse_entries_taken_over_by_newer_records(
    directory: Directory,
) -> None:
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="old", session_id="s1", platform_ids={"slack": "m"}, created_at=1.0))
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="new", session_id="s1", platform_ids={"slack": "m"}, created_at=9.0))
    assert await directory.prune_message_ids(5.0) == 1
    assert directory.find_canonical_id("slack", "m") == "new"


# ---------------------------------------------------------------- policies


async def test_domain_agreements_are_normalised(directory: Directory) -> None:
    agreement = DomainAgreement(domain_a="widget.org", domain_b="acme.com", decision="allow",
                                opt_in_required=True)
    await directory.put_domain_agreement(agreement)
    stored = directory.get_domain_agreement("acme.com", "widget.org")
    assert stored == DomainAgreement(domain_a="acme.com", domain_b="widget.org",
                                     decision="allow", opt_in_required=True)
    assert directory.get_domain_agreement("widget.org", "acme.com") == stored
    assert directory.get_domain_agreement("acme.com", "evil.org") is None
    await directory.put_domain_agreement(DomainAgreement(domain_a="acme.com",
                                                         domain_b="evil.org", decision="deny"))
    await directory.put_domain_agreement(DomainAgreement(domain_a="acme.com",
                                                         domain_b="widget.org", decision="deny"))
    assert [(a.domain_a, a.domain_b, a.decision) for a in directory.list_domain_agreements()] == [
        ("acme.com", "evil.org", "deny"), ("acme.com", "widget.org", "deny")]


async def test_user_policies(directory: Directory) -> None:
    assert directory.get_user_policy(JOHN) is None
    await directory.put_user_policy(UserPolicy(address=JOHN, opted_in=True))
    await directory.put_user_policy(UserPolicy(address=MARY, decision="deny"))
    assert directory.get_user_policy(JOHN) == UserPolicy(address=JOHN, opted_in=True)
    await directory.put_user_policy(UserPolicy(address=JOHN, decision="allow"))
    assert directory.get_user_policy(JOHN) == UserPolicy(address=JOHN, decision="allow")
    assert directory.get_user_policy(MARY) == UserPolicy(address=MARY, decision="deny")


# ----------------------------------------------------------- installations


async def test_installations(directory: Directory) -> None:
    installs = [
        Installation(platform="xmpp", tenant="chat.widget.org", credentials={"secret": "s1"}),
        Installation(platform="slack", tenant="T2", credentials={"bot_token": "xoxb-2"}),
        Installation(platform="slack", tenant="T1", credentials={"bot_token": "xoxb-1"},
                     installed_at=3.0),
        Installation(platform="slackware", tenant="T0"),
    ]
    for install in installs:
        await directory.put_installation(install)
    assert directory.get_installation("slack", "T1") == installs[2]
    assert directory.get_installation("slack", "T3") is None
    assert [(i.platform, i.tenant) for i in directory.list_installations()] == [
        ("slack", "T1"), ("slack", "T2"), ("slackware", "T0"), ("xmpp", "chat.widget.org")]
    assert [i.tenant for i in directory.list_installations("slack")] == ["T1", "T2"]
    assert directory.list_installations("matrix") == []
    revoked = Installation(platform="slack", tenant="T1", status="revoked")
    await directory.put_installation(revoked)
    assert directory.get_installation("slack", "T1") == revoked


def test_installation_repr_hides_credentials() -> None:
    install = Installation(platform="slack", tenant="T1",
                           credentials={"bot_token": "xoxb-very-secret", "signing": "shh-123"})
    for text in [repr(install), str(install), repr([install])]:
        assert "xoxb-very-secret" not in text
        assert "shh-123" not in text
        assert "2 redacted" in text


async def test_mutating_records_does_not_change_what_is_stored(directory: Directory) -> None:
    conversation_ids = {"slack": "C1"}
    await directory.put_session(session(JOHN, PETER, conversation_ids=conversation_ids))
    conversation_ids["slack"] = "CHANGED"
    stored = directory.find_session(JOHN, PETER)
    assert stored is not None
    assert stored.conversation_ids == {"slack": "C1"}


async def test_values_longer_than_an_lmdb_key_are_fine(directory: Directory) -> None:
    long_user_id = "U" * 2000
    long_message_id = "m" * 3000
    long_tenant = "t" * 700
    await directory.put_identity(identity(JOHN, long_user_id, tenant=long_tenant))
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c" * 900, session_id="s1", platform_ids={"slack": long_message_id}))
    await directory.put_installation(Installation(platform="slack", tenant=long_tenant))
    await directory.put_domain_agreement(DomainAgreement(
        domain_a="a" * 400, domain_b="b" * 400, decision="allow"))
    await directory.flush()
    assert directory.find_address("slack", long_tenant, long_user_id) == JOHN
    assert directory.find_canonical_id("slack", long_message_id) == "c" * 900
    assert [i.tenant for i in directory.list_installations("slack")] == [long_tenant]
    assert directory.get_domain_agreement("b" * 400, "a" * 400) is not None
    assert await directory.prune_message_ids(1.0) == 1
    assert directory.find_canonical_id("slack", long_message_id) is None


# --------------------------------------------------------------- lifecycle


async def test_closed_directory_refuses_every_call(directory: Directory) -> None:
    await directory.put_session(session(JOHN, PETER))
    await directory.aclose()
    await directory.aclose()  # idempotent
    reads: list[Callable[[], object]] = [
        lambda: directory.get_domain_route("acme.com"),
        directory.list_domain_routes,
        lambda: directory.get_identity(JOHN),
        lambda: directory.find_address("slack", "T1", "U1"),
        lambda: directory.get_contact(JOHN, PETER),
        lambda: directory.list_contacts(JOHN),
        lambda: directory.get_session("s1"),
        lambda: directory.find_session(JOHN, PETER),
        directory.list_sessions,
        lambda: directory.list_sessions(limit=0),
        directory.count_sessions,
        lambda: directory.get_message_ids("c1"),
        lambda: directory.find_canonical_id("slack", "m"),
        lambda: directory.get_domain_agreement("a", "b"),
        directory.list_domain_agreements,
        lambda: directory.get_user_policy(JOHN),
        lambda: directory.get_installation("slack", "T1"),
        directory.list_installations,
    ]
    for read in reads:
        with pytest.raises(DirectoryError, match="closed"):
            read()
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: directory.put_domain_route(DomainRoute(domain="a", platform="p")),
        lambda: directory.put_identity(identity(JOHN, "U1")),
        lambda: directory.delete_identity(JOHN),
        lambda: directory.put_contact(contact(JOHN, PETER)),
        lambda: directory.put_session(session(JOHN, MARY)),
        lambda: directory.put_message_ids(MessageIdRecord(canonical_id="c", session_id="s")),
        lambda: directory.prune_message_ids(1.0),
        lambda: directory.put_domain_agreement(DomainAgreement(domain_a="a", domain_b="b",
                                                               decision="allow")),
        lambda: directory.put_user_policy(UserPolicy(address=JOHN)),
        lambda: directory.put_installation(Installation(platform="p", tenant="t")),
        directory.flush,
    ]
    for write in writes:
        with pytest.raises(DirectoryError, match="closed"):
            await write()


async def test_both_implementations_satisfy_the_protocol(tmp_path: Path) -> None:
    lmdb_directory = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert isinstance(lmdb_directory, Directory)
        assert isinstance(MemoryDirectory(), Directory)
        assert lmdb_directory.schema_version == MemoryDirectory().schema_version == SCHEMA_VERSION
    finally:
        await lmdb_directory.aclose()


# ------------------------------------------------------- LMDB: durability


def stored_schema_version(path: Path) -> int:
    env = lmdb.open(str(path), max_dbs=len(DIRECTORY_DBS) + 1, readonly=True)
    try:
        with env.begin() as txn:
            raw = txn.get(SCHEMA_KEY, db=env.open_db(META_DB.encode(), txn=txn, create=False))
        assert raw is not None
        return int(raw)
    finally:
        env.close()


async def populate(directory: Directory) -> None:
    await directory.put_domain_route(DomainRoute(domain="acme.com", platform="slack",
                                                 tenant="T1", internal=True))
    await directory.put_identity(identity(JOHN, "U1"))
    await directory.put_contact(contact(JOHN, PETER))
    await directory.put_session(session(PETER, JOHN, conversation_ids={"slack": "C1"}))
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c1", session_id=session_id_for(JOHN, PETER),
        platform_ids={"slack": "1700.1"}, created_at=7.0))
    await directory.put_domain_agreement(DomainAgreement(domain_a="widget.org",
                                                         domain_b="acme.com", decision="allow"))
    await directory.put_user_policy(UserPolicy(address=JOHN, opted_in=True))
    await directory.put_installation(Installation(platform="slack", tenant="T1",
                                                  credentials={"bot_token": "xoxb-1"}))


def assert_populated(directory: Directory) -> None:
    route = directory.get_domain_route("acme.com")
    assert route is not None
    assert route.tenant == "T1"
    assert directory.find_address("slack", "T1", "U1") == JOHN
    assert directory.get_identity(JOHN) == identity(JOHN, "U1")
    assert directory.list_contacts(JOHN) == [contact(JOHN, PETER)]
    found = directory.find_session(JOHN, PETER)
    assert found is not None
    assert found.conversation_ids == {"slack": "C1"}
    assert directory.count_sessions() == 1
    assert directory.find_canonical_id("slack", "1700.1") == "c1"
    agreement = directory.get_domain_agreement("acme.com", "widget.org")
    assert agreement is not None
    assert agreement.decision == "allow"
    assert directory.get_user_policy(JOHN) == UserPolicy(address=JOHN, opted_in=True)
    installation = directory.get_installation("slack", "T1")
    assert installation is not None
    assert installation.credentials == {"bot_token": "xoxb-1"}


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    first = await LmdbDirectory.open(tmp_path / "d")
    await populate(first)
    assert_populated(first)
    await first.aclose()
    second = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert_populated(second)
        assert await second.prune_message_ids(10.0) == 1
    finally:
        await second.aclose()
    third = LmdbDirectory.open_sync(tmp_path / "d")  # outside-trio style open, reads only
    try:
        assert third.find_canonical_id("slack", "1700.1") is None
        assert third.count_sessions() == 1
    finally:
        third.close()


async def test_a_store_is_opened_at_most_once_per_process(tmp_path: Path) -> None:
    first = await LmdbDirectory.open(tmp_path / "d")
    try:
        with pytest.raises(DirectoryError, match="already open"):
            await LmdbDirectory.open(tmp_path / "." / "d")
    finally:
        await first.aclose()
    again = await LmdbDirectory.open(tmp_path / "d")
    await again.aclose()


async def test_schema_version_is_stored(tmp_path: Path) -> None:
    directory = await LmdbDirectory.open(tmp_path / "d")
    assert directory.schema_version == SCHEMA_VERSION
    await directory.aclose()
    assert stored_schema_version(tmp_path / "d") == SCHEMA_VERSION


async def test_schema_1_stores_get_their_conversations_indexed(tmp_path: Path) -> None:
    v1 = await LmdbDirectory.open(tmp_path / "d", schema_version=1)
    await v1.put_session(session(JOHN, PETER, session_id="s1", conversation_ids={"slack": "C9"}))
    await v1.aclose()
    current = await LmdbDirectory.open(tmp_path / "d")
    try:
        found = current.find_session_by_conversation("slack", "C9")
        assert found is not None
        assert found.session_id == "s1"
    finally:
        await current.aclose()


def retenant_routes(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
    """A v1 -> v2 migration for the test: every route moves to tenant ``migrated``."""
    decoder = msgspec.msgpack.Decoder(DomainRoute)
    encoder = msgspec.msgpack.Encoder()
    with txn.cursor(db=handles[ROUTES]) as cursor:
        items = list(cursor)
    for key, raw in items:
        route = msgspec.structs.replace(decoder.decode(raw), tenant="migrated")
        txn.put(key, encoder.encode(route), db=handles[ROUTES])


async def test_migration_hook_upgrades_an_older_store(tmp_path: Path) -> None:
    v1 = await LmdbDirectory.open(tmp_path / "d", schema_version=1)
    await v1.put_domain_route(DomainRoute(domain="acme.com", platform="slack", tenant="T1"))
    await v1.put_domain_route(DomainRoute(domain="*", platform="xmpp"))
    await v1.aclose()

    v2 = await LmdbDirectory.open(tmp_path / "d", schema_version=2,
                                  migrations={2: retenant_routes})
    try:
        assert v2.schema_version == 2
        assert [r.tenant for r in v2.list_domain_routes()] == ["migrated", "migrated"]
        await v2.put_domain_route(DomainRoute(domain="b.org", platform="slack", tenant="T2"))
    finally:
        await v2.aclose()
    assert stored_schema_version(tmp_path / "d") == 2

    again = await LmdbDirectory.open(tmp_path / "d", schema_version=2)  # nothing left to run
    try:
        assert [r.tenant for r in again.list_domain_routes()] == ["migrated", "migrated", "T2"]
    finally:
        await again.aclose()


async def test_missing_or_failing_migration_leaves_the_store_untouched(tmp_path: Path) -> None:
    v1 = await LmdbDirectory.open(tmp_path / "d", schema_version=1)
    await v1.put_domain_route(DomainRoute(domain="acme.com", platform="slack", tenant="T1"))
    await v1.aclose()

    with pytest.raises(DirectoryError, match=r"no migration to version\(s\) 3"):
        await LmdbDirectory.open(tmp_path / "d", schema_version=3,
                                 migrations={2: retenant_routes})

    def broken(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
        retenant_routes(txn, handles)
        raise ValueError("boom")

    with pytest.raises(DirectoryError, match="schema version 2 failed") as caught:
        await LmdbDirectory.open(tmp_path / "d", schema_version=2, migrations={2: broken})
    assert isinstance(caught.value.__cause__, ValueError)

    assert stored_schema_version(tmp_path / "d") == 1
    v1 = await LmdbDirectory.open(tmp_path / "d", schema_version=1)
    try:
        route = v1.get_domain_route("acme.com")
        assert route is not None
        assert route.tenant == "T1"
    finally:
        await v1.aclose()


async def test_newer_stored_schema_is_refused(tmp_path: Path) -> None:
    v2 = await LmdbDirectory.open(tmp_path / "d", schema_version=2, migrations={})
    await v2.aclose()
    with pytest.raises(DirectoryError, match=r"schema version 2.*version 1") as caught:
        await LmdbDirectory.open(tmp_path / "d", schema_version=1)
    assert "refusing" in str(caught.value)


async def test_map_grows_instead_of_failing(tmp_path: Path) -> None:
    tiny = 64 * 1024
    directory = await LmdbDirectory.open(tmp_path / "d", map_size=tiny, sync=False)
    blob = "x" * 1000
    count = 4000  # ~4 MB of credentials
    for number in range(count):
        await directory.put_installation(Installation(
            platform="slack", tenant=f"T{number:05d}", credentials={"blob": blob}))
    await directory.flush()
    assert directory.store.map_size > tiny
    await directory.aclose()

    reopened = await LmdbDirectory.open(tmp_path / "d", map_size=tiny)
    try:
        listed = reopened.list_installations("slack")
        assert len(listed) == count
        assert all(i.credentials == {"blob": blob} for i in listed)
        await reopened.put_installation(Installation(platform="xmpp", tenant="more"))
        await reopened.flush()
    finally:
        await reopened.aclose()


async def test_backpressure_bounds_pending_writes_and_loses_nothing(tmp_path: Path) -> None:
    directory = await LmdbDirectory.open(tmp_path / "d", max_pending=8, sync=False)
    highest = 0

    async def writer(task: int) -> None:
        nonlocal highest
        for number in range(150):
            await directory.put_contact(contact(JOHN, Address.parse(f"u{task}-{number}@x.org")))
            highest = max(highest, directory.store.pending)

    async with trio.open_nursery() as nursery:
        for task in range(4):
            nursery.start_soon(writer, task)
    # each writer waits for room before adding its (at most 1-op) write
    assert highest <= 8 + 4
    await directory.flush()
    assert directory.store.pending == 0
    assert len(directory.list_contacts(JOHN)) == 600
    await directory.aclose()
    reopened = await LmdbDirectory.open(tmp_path / "d")
    try:
        assert len(reopened.list_contacts(JOHN)) == 600
    finally:
        await reopened.aclose()


# ------------------------------------------------------------ LMDB store


DBS = ("a", "b")


async def test_a_burst_of_writes_wakes_the_writer_once_and_commits_the_last_values(
    tmp_path: Path,
) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1, sync=False)
    try:
        await store.flush()
        await store.flush()  # the writer has gone idle
        for i in range(500):  # no checkpoint: one group
            store.submit([("a", b"k%03d" % (i % 50), b"v%d" % i), ("b", b"x", b"%d" % i)])
        store.submit([("a", b"k007", None)])
        assert store.writer_wakeups < 10, "a thread wake-up per group, not per write"
        await store.flush()
        expected = [(b"k%03d" % k, b"v%d" % (450 + k)) for k in range(50) if k != 7]
        assert store.scan("a") == expected
        assert store.get("b", b"x") == b"499"
    finally:
        await store.aclose()
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        assert reopened.scan("a") == expected, "the committed state, not the overlay"
        assert reopened.get("b", b"x") == b"499"
    finally:
        reopened.close()


def test_a_store_written_in_one_trio_run_is_flushed_by_the_next(tmp_path: Path) -> None:
    """The pipes are served by the current run's system tasks: writes handed over in a run
    that ended before their commit landed are committed when a later run waits for them."""
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1, sync=False)

    async def write_without_waiting() -> None:
        for i in range(200):
            store.submit([("a", b"k%03d" % i, b"v")])

    async def flush_and_close() -> None:
        with trio.fail_after(10):
            await store.flush()
        assert store.pending == 0
        await store.aclose()

    trio.run(write_without_waiting)
    trio.run(flush_and_close)
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        assert len(reopened.scan("a")) == 200
    finally:
        reopened.close()


async def test_store_reads_its_own_writes_before_the_commit(tmp_path: Path) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        await store.write([("a", b"k1", b"v1"), ("a", b"k2", b"v2"), ("a", b"k3", b"v3"),
                           ("b", b"k1", b"other")])
        await store.flush()
        # no checkpoint between these writes and the reads: they sit in the overlay
        store.submit([("a", b"k2", None), ("a", b"k0", b"v0"), ("a", b"k4", b"v4"),
                      ("a", b"k3", b"v3'")])
        assert store.pending == 4
        assert store.get("a", b"k2") is None
        assert store.get("a", b"k3") == b"v3'"
        assert store.get("b", b"k1") == b"other"
        assert store.scan("a") == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k3", b"v3'"),
                                   (b"k4", b"v4")]
        assert store.scan("a", start_after=b"k1", limit=2) == [(b"k3", b"v3'"), (b"k4", b"v4")]
        assert store.scan("a", b"k1") == [(b"k1", b"v1")]
        assert store.scan("a", limit=0) == []
        assert store.count("a") == 4
        await store.flush()
        assert store.pending == 0
        assert store.scan("a") == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k3", b"v3'"),
                                   (b"k4", b"v4")]
        assert store.count("a") == 4
    finally:
        await store.aclose()


@pytest.mark.parametrize("seed", range(4))
async def test_store_matches_a_dict_model(tmp_path: Path, seed: int) -> None:
    """Random writes, flushes and yields; every read must match a plain dict."""
    rng = random.Random(seed)
    model: dict[str, dict[bytes, bytes]] = {db: {} for db in DBS}
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1, sync=False,
                           max_pending=rng.choice([1, 5, 1000]))
    keys = [bytes([first, second]) for first in b"abc" for second in b"xyz"]
    try:
        for _ in range(400):
            choice = rng.random()
            if choice < 0.6:
                ops = []
                for _ in range(rng.randint(1, 4)):
                    db, key = rng.choice(DBS), rng.choice(keys)
                    value = None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 8))
                    ops.append((db, key, value))
                    if value is None:
                        model[db].pop(key, None)
                    else:
                        model[db][key] = value
                await store.write(ops)
            elif choice < 0.7:
                await store.flush()
            elif choice < 0.8:
                await trio.lowlevel.checkpoint()
            for db in DBS:
                key = rng.choice(keys)
                assert store.get(db, key) == model[db].get(key)
                prefix = rng.choice([b"", b"a", b"b", b"c", b"bz"])
                start_after = rng.choice([None, b"a", b"by", b"c"])
                limit = rng.choice([None, 1, 3])
                expected = sorted((k, v) for k, v in model[db].items()
                                  if k.startswith(prefix) and (start_after is None
                                                               or k > start_after))
                if limit is not None:
                    expected = expected[:limit]
                assert store.scan(db, prefix, start_after=start_after, limit=limit) == expected
                assert store.count(db) == len(model[db])
    finally:
        await store.aclose()
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        for db in DBS:
            assert reopened.scan(db) == sorted(model[db].items())
    finally:
        reopened.close()


async def test_reads_stay_correct_while_the_map_grows(tmp_path: Path) -> None:
    """Reads on the trio thread interleave with the writer process's commits and resizes."""
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1, sync=False,
                           map_size=64 * 1024, max_pending=100)
    value = b"x" * 1000
    try:
        for number in range(2000):
            await store.put("a", b"k%05d" % number, value)
            if number % 10 == 0:
                for earlier in range(0, number + 1, 97):
                    assert store.get("a", b"k%05d" % earlier) == value
                assert len(store.scan("a", b"k00", limit=20)) == min(20, number + 1)
                await trio.lowlevel.checkpoint()  # let commit notifications in
        await store.flush()
        assert store.map_size > 64 * 1024
        assert store.count("a") == 2000
    finally:
        await store.aclose()


def test_a_migration_that_outgrows_the_map_is_retried_on_a_bigger_one(tmp_path: Path) -> None:
    LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1, map_size=64 * 1024).close()
    runs = 0

    def fill(txn: lmdb.Transaction[bytes], handles: StoreHandles) -> None:
        nonlocal runs
        runs += 1
        for number in range(3000):
            txn.put(b"k%05d" % number, b"x" * 1000, db=handles["b"])

    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=2,
                           map_size=64 * 1024, migrations={2: fill})
    try:
        assert runs > 1
        assert store.count("b") == 3000
        assert store.schema_version == 2
    finally:
        store.close()


async def test_store_rejects_bad_keys_and_unknown_dbs(tmp_path: Path) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        with pytest.raises(DirectoryError, match="1-511 bytes"):
            await store.put("a", b"", b"v")
        with pytest.raises(DirectoryError, match="1-511 bytes"):
            await store.put("a", b"k" * 512, b"v")
        with pytest.raises(DirectoryError, match="unknown sub-database"):
            await store.put("nope", b"k", b"v")
        with pytest.raises(DirectoryError, match="unknown sub-database"):
            store.get("nope", b"k")
        assert store.pending == 0
        await store.put("a", b"k" * 511, b"v")
        assert store.get("a", b"k" * 511) == b"v"
    finally:
        await store.aclose()
    with pytest.raises(DirectoryError, match="reserved"):
        LmdbStore.open(tmp_path / "t", db_names=["meta"], schema_version=1)


def test_store_opens_reads_and_closes_outside_trio(tmp_path: Path) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)

    async def write_without_flushing() -> None:
        await store.put("a", b"k", b"v")
        await store.delete("a", b"gone")

    with pytest.raises(DirectoryError, match=r"inside trio\.run"):
        store.submit([("a", b"k", b"v")])
    trio.run(write_without_flushing)
    assert store.get("a", b"k") == b"v"
    store.close()  # commits what is queued by joining the writer
    store.close()
    with pytest.raises(DirectoryError, match="closed"):
        store.get("a", b"k")
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        assert reopened.get("a", b"k") == b"v"
    finally:
        reopened.close()


async def test_writer_failure_is_logged_once_and_fails_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    await store.put("a", b"kept", b"v")
    await store.flush()

    # The writer process's answer when its commit raises (see _lmdb_writer.serve),
    # in place of the next commit's real answer.
    real_on_reply = store._on_reply

    def failed_commit(reply: _lmdb_writer.Reply) -> None:
        real_on_reply(_lmdb_writer.Reply(reply.seq, ("DiskError", "mdb_txn_commit: simulated"),
                                         0))

    monkeypatch.setattr(store, "_on_reply", failed_commit)
    caplog.set_level(logging.INFO, logger="interlink.directory")
    await store.put("a", b"secret-key", b"secret-value")
    with pytest.raises(DirectoryError, match="writer") as caught:
        await store.flush()
    assert "DiskError: mdb_txn_commit: simulated" in str(caught.value.__cause__)
    with pytest.raises(DirectoryError, match="writer"):
        await store.put("a", b"k2", b"v2")
    with pytest.raises(DirectoryError, match="writer"):
        await store.flush()
    assert store.get("a", b"kept") == b"v"
    failures = [r for r in caplog.records if r.getMessage().startswith("directory writer failed")]
    assert len(failures) == 1
    assert failures[0].__dict__["event"] == "directory.writer_failed"
    assert failures[0].__dict__["error_type"] == "DiskError"
    assert failures[0].__dict__["lost_ops"] == 1
    for record in caplog.records:
        rendered = record.getMessage() + repr(record.__dict__)
        assert "secret-key" not in rendered
        assert "secret-value" not in rendered
    with pytest.raises(DirectoryError, match="writer"):
        await store.aclose()
    assert store.closed


def _writer_process(store: LmdbStore) -> int:
    child = store._child
    assert child is not None, "a commit went through the writer process"
    return child.pid


async def test_a_killed_writer_process_fails_the_store_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    await store.put("a", b"kept", b"v")
    await store.flush()
    caplog.set_level(logging.INFO, logger="interlink.directory")
    os.kill(_writer_process(store), signal.SIGKILL)
    await store.put("a", b"lost", b"v")
    with pytest.raises(DirectoryError, match="writer") as caught:
        await store.flush()
    assert "exited (status -9)" in str(caught.value.__cause__)
    with pytest.raises(DirectoryError, match="writer"):
        await store.put("a", b"k2", b"v2")
    with trio.fail_after(5), pytest.raises(DirectoryError, match="writer"):
        await store.watch()  # the supervision tree hears of it
    failures = [r for r in caplog.records if r.getMessage().startswith("directory writer failed")]
    assert [f.__dict__["lost_ops"] for f in failures] == [1]
    with pytest.raises(DirectoryError, match="writer"):
        await store.aclose()
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        assert reopened.get("a", b"kept") == b"v", "what was committed before stays"
        assert reopened.get("a", b"lost") is None
    finally:
        reopened.close()


async def test_the_writer_process_ignores_ctrl_c_and_stops_when_the_store_closes(
    tmp_path: Path,
) -> None:
    store = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    await store.put("a", b"first", b"v")
    await store.flush()
    pid = _writer_process(store)
    os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the whole process group
    os.kill(pid, signal.SIGTERM)
    await store.put("a", b"k", b"v")
    await store.flush()
    child = store._child
    assert child is not None
    await store.aclose()
    assert child.returncode == 0, "stopped by the closed pipe, after its last commit"
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        assert reopened.get("a", b"k") == b"v"
    finally:
        reopened.close()


def test_the_writer_process_reports_a_store_it_cannot_open(tmp_path: Path) -> None:
    LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1).close()
    replies = io.BytesIO()
    config = _lmdb_writer.Config(path=str(tmp_path / "s"), map_size=1 << 20, sync=False,
                                 db_names=["a", "not-there"])
    assert _lmdb_writer.serve(config, io.BytesIO(), replies) == 1
    replies.seek(0)
    body = _lmdb_writer.read_frame(replies)
    assert body is not None
    reply = msgspec.msgpack.decode(body, type=_lmdb_writer.Reply)
    assert reply.error is not None and reply.error[0] == "NotFoundError"


def test_the_writer_process_commits_each_frame_and_refuses_a_cut_frame(tmp_path: Path) -> None:
    LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1).close()
    requests = io.BytesIO()
    request = _lmdb_writer.Request(1, [(1, {b"x": b"1", b"gone": None})])
    _lmdb_writer.write_frame(requests, msgspec.msgpack.encode(request))
    whole = requests.getvalue()
    config = _lmdb_writer.Config(path=str(tmp_path / "s"), map_size=1 << 20, sync=True,
                                 db_names=list(DBS))
    replies = io.BytesIO()
    assert _lmdb_writer.serve(config, io.BytesIO(whole), replies) == 0
    replies.seek(0)
    first, second = (_lmdb_writer.read_frame(replies) for _ in range(2))
    assert first is not None and second is not None
    assert msgspec.msgpack.decode(second, type=_lmdb_writer.Reply).seq == 1
    reopened = LmdbStore.open(tmp_path / "s", db_names=DBS, schema_version=1)
    try:
        assert reopened.get("b", b"x") == b"1"
    finally:
        reopened.close()
    with pytest.raises(EOFError):
        _lmdb_writer.serve(config, io.BytesIO(whole[:-1]), io.BytesIO())


async def test_a_record_replaced_after_its_commit_is_pruned_and_counted_once(
    directory: Directory,
) -> None:
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c1", session_id="s1", platform_ids={"slack": "a"}, created_at=1.0))
    await directory.flush()  # committed: the replacement below is written blind on LMDB
    await directory.put_message_ids(MessageIdRecord(
        canonical_id="c1", session_id="s1", platform_ids={"slack": "b"}, created_at=5.0))
    assert directory.find_canonical_id("slack", "a") is None
    assert directory.find_canonical_id("slack", "b") == "c1"
    assert await directory.prune_message_ids(3.0) == 0, "c1 is now 5.0 old, not 1.0"
    assert await directory.prune_message_ids(10.0) == 1
    assert directory.get_message_ids("c1") is None
    assert directory.find_canonical_id("slack", "b") is None
    assert await directory.prune_message_ids(10.0) == 0
