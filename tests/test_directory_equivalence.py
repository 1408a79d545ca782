"""LmdbDirectory and MemoryDirectory must give identical answers, always.

Hypothesis draws sequences of writes over small alphabets (so records collide,
get replaced and steal each other's reverse entries), with flushes and bare
checkpoints mixed in so LMDB answers sometimes from its overlay and sometimes
from committed data. After every step every read is compared; at the end the
LMDB directory is reopened from disk and compared once more.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine._address import Address
from engine._directory import (
    ContactRecord,
    Directory,
    DomainAgreement,
    DomainRoute,
    Installation,
    LedgerRecord,
    MessageIdRecord,
    PlatformIdentity,
    SessionRecord,
    UserPolicy,
)
from engine._directory_lmdb import LmdbDirectory
from engine.testing._memory_directory import MemoryDirectory

# An unvalidated over-long address pushes composite keys past LMDB's 511 bytes.
ADDRESSES = [Address.parse(text) for text in ["a@x.org", "a.b@x.org", "b@y.org"]] + [
    Address(user="l" * 300, domain="x.org")
]
DOMAINS = ["x.org", "y.org", "*", "d" * 300]
PLATFORMS = ["slack", "xmpp", "slackware"]
TENANTS = ["", "T1", "t" * 600]
USER_IDS = ["U1", "U2", "U" * 600]
SESSION_IDS = ["", "s1", "s2", "s" * 600 + "a", "s" * 600 + "b", "s" * 600]
CANONICAL_IDS = ["c1", "c2", "c3", "c" * 600]
MESSAGE_IDS = ["m1", "m2", "m" * 600]
TIMES = [-1.0, 1.0, 2.0]
STATE_KEYS = ["receipt", "reactions/a@x.org"]


@dataclass(frozen=True)
class Step:
    """One directory call; ``flush`` and ``checkpoint`` steer LMDB's commit timing."""

    method: str
    args: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"{self.method}{self.args!r}"


addresses = st.sampled_from(ADDRESSES)
domains = st.sampled_from(DOMAINS)
platforms = st.sampled_from(PLATFORMS)
tenants = st.sampled_from(TENANTS)
times = st.sampled_from(TIMES)

routes = st.builds(DomainRoute, domain=domains, platform=platforms, tenant=tenants,
                   internal=st.booleans())
identities = st.builds(PlatformIdentity, address=addresses, platform=platforms,
                       tenant=tenants, user_id=st.sampled_from(USER_IDS))
contacts = st.builds(ContactRecord, owner=addresses, contact=addresses,
                     state=st.sampled_from(["pending", "accepted", "removed"]),
                     requested_by=addresses, updated_at=times)
sessions = st.builds(SessionRecord, session_id=st.sampled_from(SESSION_IDS), a=addresses,
                     b=addresses,
                     conversation_ids=st.dictionaries(platforms, st.sampled_from(["C1", "C2"]),
                                                      max_size=2),
                     created_at=times)
message_ids = st.builds(MessageIdRecord, canonical_id=st.sampled_from(CANONICAL_IDS),
                        session_id=st.sampled_from(SESSION_IDS),
                        platform_ids=st.dictionaries(platforms, st.sampled_from(MESSAGE_IDS),
                                                     max_size=3),
                        created_at=times)
agreements = st.builds(DomainAgreement, domain_a=domains, domain_b=domains,
                       decision=st.sampled_from(["allow", "deny"]),
                       opt_in_required=st.booleans())
policies = st.builds(UserPolicy, address=addresses,
                     decision=st.sampled_from([None, "allow", "deny"]), opted_in=st.booleans())
installations = st.builds(Installation, platform=platforms, tenant=tenants,
                          credentials=st.dictionaries(st.sampled_from(["token", "secret"]),
                                                      st.sampled_from(["x", "y"]), max_size=2),
                          status=st.sampled_from(["active", "revoked"]), installed_at=times)


def call(method: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Step]:
    return values.map(lambda value: Step(method, (value,)))


steps = st.one_of(
    call("put_domain_route", routes),
    call("put_identity", identities),
    call("delete_identity", addresses),
    call("put_contact", contacts),
    call("put_session", sessions),
    call("put_message_ids", message_ids),
    call("prune_message_ids", st.sampled_from([*TIMES, 3.0])),
    st.builds(lambda canonical_id, platform, changes, now: Step(
        "put_message_state", (canonical_id, platform, changes, now)),
        st.sampled_from(CANONICAL_IDS), platforms,
        st.dictionaries(st.sampled_from(STATE_KEYS), st.sampled_from([None, "1", "2"]),
                        max_size=2), times),
    call("put_domain_agreement", agreements),
    call("put_user_policy", policies),
    call("put_installation", installations),
    call("put_ledger", st.builds(LedgerRecord, event_id=st.sampled_from(CANONICAL_IDS),
                                 sender=addresses, receiver=addresses,
                                 type=st.sampled_from(["im", "edit"]), accepted_at=times)),
    call("resolve_ledger", st.sampled_from(CANONICAL_IDS)),
    st.just(Step("flush")),
    st.just(Step("checkpoint")),
)


async def apply(directory: Directory, step: Step) -> object:
    if step.method == "checkpoint":
        await trio.lowlevel.checkpoint()
        return None
    method: Any = getattr(directory, step.method)
    if step.method == "put_message_state":
        *args, now = step.args
        return await method(*args, now=now)
    return await method(*step.args)


def snapshot(directory: Directory) -> dict[str, object]:
    """Every read the Protocol offers, over the whole alphabet."""
    reads: dict[str, object] = {
        "list_domain_routes": directory.list_domain_routes(),
        "list_domain_agreements": directory.list_domain_agreements(),
        "count_sessions": directory.count_sessions(),
        "open_ledger": directory.open_ledger(),
    }
    for domain in [*DOMAINS, "unknown.org"]:
        reads[f"get_domain_route({domain!r})"] = directory.get_domain_route(domain)
        for second in DOMAINS:
            reads[f"get_domain_agreement({domain!r}, {second!r})"] = (
                directory.get_domain_agreement(domain, second))
    for address in ADDRESSES:
        reads[f"get_identity({address})"] = directory.get_identity(address)
        reads[f"get_user_policy({address})"] = directory.get_user_policy(address)
        reads[f"list_contacts({address})"] = directory.list_contacts(address)
        for other in ADDRESSES:
            reads[f"get_contact({address}, {other})"] = directory.get_contact(address, other)
            reads[f"find_session({address}, {other})"] = directory.find_session(address, other)
    for platform in PLATFORMS:
        for tenant in TENANTS:
            reads[f"get_installation({platform!r}, {tenant!r})"] = (
                directory.get_installation(platform, tenant))
            for user_id in USER_IDS:
                reads[f"find_address({platform!r}, {tenant!r}, {user_id!r})"] = (
                    directory.find_address(platform, tenant, user_id))
        for conversation_id in ("C1", "C2"):
            reads[f"find_session_by_conversation({platform!r}, {conversation_id!r})"] = (
                directory.find_session_by_conversation(platform, conversation_id))
        for message_id in MESSAGE_IDS:
            reads[f"find_canonical_id({platform!r}, {message_id!r})"] = (
                directory.find_canonical_id(platform, message_id))
            for session_id in SESSION_IDS:
                reads[f"find_canonical_id({platform!r}, {message_id!r}, "
                      f"session_id={session_id!r})"] = directory.find_canonical_id(
                    platform, message_id, session_id=session_id)
    for platform_filter in [None, *PLATFORMS, "slac"]:
        reads[f"list_installations({platform_filter!r})"] = (
            directory.list_installations(platform_filter))
    for session_id in SESSION_IDS:
        reads[f"get_session({session_id!r})"] = directory.get_session(session_id)
    for after in [*SESSION_IDS, "s", "s" * 601, "zzz"]:
        for limit in [0, 1, 2, 100]:
            reads[f"list_sessions(after={after!r}, limit={limit})"] = (
                directory.list_sessions(after=after, limit=limit))
    for canonical_id in CANONICAL_IDS:
        reads[f"get_message_ids({canonical_id!r})"] = directory.get_message_ids(canonical_id)
        for platform in PLATFORMS:
            reads[f"get_message_state({canonical_id!r}, {platform!r})"] = (
                directory.get_message_state(canonical_id, platform))
    return reads


def assert_same(lmdb_reads: dict[str, object], memory_reads: dict[str, object],
                when: str) -> None:
    differing = [name for name in memory_reads if lmdb_reads[name] != memory_reads[name]]
    assert not differing, (
        f"{when}: LMDB and memory differ on {differing[:5]}: "
        + "; ".join(f"lmdb={lmdb_reads[n]!r} memory={memory_reads[n]!r}" for n in differing[:2])
    )


async def compare(path: Path, plan: list[Step], max_pending: int) -> None:
    memory = MemoryDirectory()
    lmdb_directory = await LmdbDirectory.open(path, sync=False, max_pending=max_pending)
    try:
        assert_same(snapshot(lmdb_directory), snapshot(memory), "empty")
        for number, step in enumerate(plan):
            lmdb_result = await apply(lmdb_directory, step)
            memory_result = await apply(memory, step)
            assert lmdb_result == memory_result, f"step {number} {step!r} returned differently"
            assert_same(snapshot(lmdb_directory), snapshot(memory), f"after step {number} {step!r}")
    finally:
        await lmdb_directory.aclose()
    reopened = await LmdbDirectory.open(path)
    try:
        assert_same(snapshot(reopened), snapshot(memory), "after reopening")
    finally:
        await reopened.aclose()
        await memory.aclose()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(steps, min_size=10, max_size=40), max_pending=st.sampled_from([1, 4, 50_000]))
def test_lmdb_and_memory_directories_answer_identically(
    plan: list[Step], max_pending: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(compare, Path(tmp) / "directory", plan, max_pending)
