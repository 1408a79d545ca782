"""Router, policy and session: every outcome, with its metadata entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio.testing

from engine import (
    Address,
    ContactAccept,
    ContactRequest,
    DeliveryOutcome,
    DeliveryResult,
    Directory,
    DomainAgreement,
    DomainRoute,
    Edit,
    Engine,
    EngineSettings,
    Event,
    LmdbDirectory,
    Message,
    MetadataEntry,
    Presence,
    ReactionAdd,
    Retract,
    SessionRecord,
    Typing,
    UserPolicy,
    session_id_for,
)
from engine._router import RoutingSettings
from engine._session import DeliverySettings
from engine.testing import LoopbackAdapter, MemoryDirectory

from ._harness import EVE, JOHN, MARY, PETER, Federation, federation, next_event


def message(source: Address, destination: Address, text: str = "hi", **kw: object) -> Message:
    return Message.create(source=source, destination=destination, body=text, **kw)


def only_entry(fed: Federation, event_id: str) -> MetadataEntry:
    entries = [e for e in fed.log.entries() if e.event_id == event_id]
    assert len(entries) == 1, entries
    return entries[0]


async def refused_with(fed: Federation, event: Message, reason: str) -> None:
    """Assert ``event`` was refused: a failed outcome to its sender and a log entry."""
    await fed.settle()
    entry = only_entry(fed, event.event_id)
    assert (entry.outcome, entry.reason) == ("refused", reason)
    sender, receiver = (fed.acme, fed.widget) if event.source.domain == "acme.test" \
        else (fed.widget, fed.acme)
    received = receiver.delivered_nowait()
    assert received == [], "a refused event reaches nobody"
    outcomes = [e for e in sender.delivered_nowait() if isinstance(e, DeliveryOutcome)]
    assert len(outcomes) == 1
    assert outcomes[0].target_event_id == event.event_id
    assert (outcomes[0].status, outcomes[0].reason) == ("failed", reason)
    assert outcomes[0].destination == event.source


async def test_allowed_message_is_delivered_and_logged() -> None:
    async with federation() as fed:
        sent = message(JOHN, PETER, platform_ids={"acme": "a-1"})
        await fed.acme.send(sent)
        got = await next_event(fed.widget)
        assert isinstance(got, Message)
        assert (got.event_id, got.text, got.source, got.destination) == \
            (sent.event_id, "hi", JOHN, PETER)
        assert got.session_id == session_id_for(JOHN, PETER)
        await fed.settle()
        entry = only_entry(fed, sent.event_id)
        assert (entry.outcome, entry.type, entry.sender, entry.receiver) == \
            ("delivered", "im", JOHN, PETER)
        ids = fed.directory.get_message_ids(sent.event_id)
        assert ids is not None and ids.platform_ids == {"acme": "a-1", "widget": "widget-1"}
        session = fed.directory.find_session(PETER, JOHN)
        assert session is not None and session.session_id == got.session_id


async def test_denied_by_domain_agreement() -> None:
    async with federation() as fed:
        await fed.directory.put_domain_agreement(DomainAgreement(
            domain_a="widget.test", domain_b="acme.test", decision="deny"))
        sent = message(JOHN, PETER)
        await fed.acme.send(sent)
        await refused_with(fed, sent, "agreement-denies")


async def test_unknown_external_domain_is_denied_by_default() -> None:
    async with federation() as fed:
        sent = message(JOHN, EVE)
        await fed.acme.send(sent)
        await refused_with(fed, sent, "no-agreement")


async def test_denied_by_user_policy() -> None:
    async with federation() as fed:
        await fed.directory.put_user_policy(UserPolicy(address=JOHN, decision="deny"))
        sent = message(JOHN, PETER)
        await fed.acme.send(sent)
        await refused_with(fed, sent, f"user-denied:{JOHN}")


async def test_opt_in_agreement_needs_the_internal_user_to_opt_in() -> None:
    async with federation() as fed:
        await fed.directory.put_domain_agreement(DomainAgreement(
            domain_a="acme.test", domain_b="widget.test", decision="allow",
            opt_in_required=True))
        first = message(PETER, JOHN)
        await fed.widget.send(first)
        await refused_with(fed, first, f"not-opted-in:{JOHN}")
        await fed.directory.put_user_policy(UserPolicy(address=JOHN, opted_in=True))
        second = message(PETER, JOHN)
        await fed.widget.send(second)
        assert (await next_event(fed.acme)).event_id == second.event_id


async def test_unknown_internal_address() -> None:
    async with federation() as fed:
        sent = message(PETER, Address.parse("nobody@acme.test"))
        await fed.widget.send(sent)
        await refused_with(fed, sent, "unknown-address")


async def test_domain_without_route() -> None:
    async with federation() as fed:
        sent = message(JOHN, Address.parse("someone@nowhere.test"))
        await fed.acme.send(sent)
        await refused_with(fed, sent, "no-route:nowhere.test")


async def test_messages_need_an_accepted_contact() -> None:
    async with federation() as fed:
        other = Address.parse("anna@widget.test")
        sent = message(JOHN, other)
        await fed.acme.send(sent)
        await refused_with(fed, sent, "not-a-contact")


async def test_contact_flow_request_then_accept_then_chat() -> None:
    async with federation() as fed:
        anna = Address.parse("anna@widget.test")
        await fed.acme.send(ContactRequest(source=MARY, destination=anna))
        assert isinstance(await next_event(fed.widget), ContactRequest)
        await fed.settle()
        pending = fed.directory.get_contact(MARY, anna)
        assert pending is not None and pending.state == "pending"
        # The requester cannot accept her own request.
        self_accept = ContactAccept(source=MARY, destination=anna)
        await fed.acme.send(self_accept)
        await fed.settle()
        assert only_entry(fed, self_accept.event_id).reason == "no-pending-request"
        await fed.widget.send(ContactAccept(source=anna, destination=MARY))
        assert isinstance(await next_event(fed.acme), DeliveryOutcome)  # the refusal
        assert isinstance(await next_event(fed.acme), ContactAccept)
        for owner, contact in ((MARY, anna), (anna, MARY)):
            record = fed.directory.get_contact(owner, contact)
            assert record is not None and record.state == "accepted"
        hello = message(anna, MARY, "hello")
        await fed.widget.send(hello)
        assert (await next_event(fed.acme)).event_id == hello.event_id


async def test_edit_retract_and_reaction_name_known_messages() -> None:
    async with federation() as fed:
        original = message(JOHN, PETER)
        await fed.acme.send(original)
        await next_event(fed.widget)
        await fed.acme.send(Edit(source=JOHN, destination=PETER, target_id=original.event_id))
        await fed.widget.send(ReactionAdd(source=PETER, destination=JOHN,
                                          target_id=original.event_id, emoji="👍"))
        await fed.acme.send(Retract(source=JOHN, destination=PETER, target_id=original.event_id))
        assert isinstance(await next_event(fed.widget), Edit)
        assert isinstance(await next_event(fed.acme), ReactionAdd)
        assert isinstance(await next_event(fed.widget), Retract)
        stray = Edit(source=JOHN, destination=PETER, target_id="no-such-message")
        await fed.acme.send(stray)
        await fed.settle()
        assert only_entry(fed, stray.event_id).reason == "unknown-message"


async def test_destination_without_a_capability_gets_a_note() -> None:
    plain_widget = LoopbackAdapter("widget", capabilities=())
    async with federation(widget=plain_widget) as fed:
        original = message(JOHN, PETER)
        await fed.acme.send(original)
        await next_event(fed.widget)
        reaction = ReactionAdd(source=JOHN, destination=PETER, target_id=original.event_id,
                               emoji="🎉")
        await fed.acme.send(reaction)
        note = await next_event(fed.widget)
        assert isinstance(note, Message) and "reacted 🎉" in note.text
        typing = Typing(source=JOHN, destination=PETER)
        await fed.acme.send(typing)
        await fed.settle()
        assert only_entry(fed, typing.event_id).reason == "unsupported-by-destination"
        assert fed.widget.delivered_nowait() == []


async def test_permanent_delivery_failure_tells_the_sender() -> None:
    async with federation() as fed:
        fed.widget.fail_next("recipient-gone")
        sent = message(JOHN, PETER)
        await fed.acme.send(sent)
        outcome = await next_event(fed.acme)
        assert isinstance(outcome, DeliveryOutcome)
        assert (outcome.status, outcome.reason, outcome.target_event_id) == \
            ("failed", "recipient-gone", sent.event_id)
        await fed.settle()
        assert only_entry(fed, sent.event_id).outcome == "failed"
        assert only_entry(fed, outcome.event_id).type == "error"


async def test_transient_failures_are_retried_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with federation() as fed:
        fed.widget.fail_next("busy", retryable=True, times=3)
        first, second = message(JOHN, PETER, "1"), message(JOHN, PETER, "2")
        await fed.acme.send(first)
        await fed.acme.send(second)
        assert (await next_event(fed.widget)).event_id == first.event_id
        assert (await next_event(fed.widget)).event_id == second.event_id
        await fed.settle()
        assert only_entry(fed, first.event_id).outcome == "delivered"


async def test_transient_failures_give_up_after_the_retry_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = EngineSettings(shard_count=2, delivery=DeliverySettings(retry_window=5.0))
    async with federation(settings=settings) as fed:
        fed.widget.fail_next("busy", retryable=True, times=1000)
        sent = message(JOHN, PETER)
        start = trio.current_time()
        await fed.acme.send(sent)
        outcome = await next_event(fed.acme)
        assert isinstance(outcome, DeliveryOutcome) and outcome.reason == "busy"
        # Retries wait 0.2, 0.4, 0.8, 1.6 s (each +-20 %); the next, 3.2 s, would
        # end past the 5 s window, so the sender hears after 2.4-3.6 s: not at
        # once (no retry at all), not after the window.
        assert 2.4 - 1e-6 <= trio.current_time() - start <= 3.6 + 1e-6


async def test_delivered_outcome_when_the_source_supports_receipts() -> None:
    async with federation() as fed:  # loopback declares delivery_receipts
        sent = message(JOHN, PETER)
        await fed.acme.send(sent)
        outcome = await fed.acme.next_delivered()
        assert isinstance(outcome, DeliveryOutcome)
        assert (outcome.status, outcome.target_event_id) == ("delivered", sent.event_id)


async def test_presence_broadcast_reaches_accepted_contacts_only() -> None:
    async with federation() as fed:
        await fed.widget.send(Presence(source=PETER, destination=PETER, availability="away"))
        got = await next_event(fed.acme)
        assert isinstance(got, Presence)
        assert (got.destination, got.availability) == (JOHN, "away")
        await fed.settle()
        assert fed.acme.delivered_nowait() == []  # mary is not peter's contact


async def test_contact_checks_can_be_turned_off() -> None:
    settings = EngineSettings(shard_count=2,
                              routing=RoutingSettings(require_accepted_contact=False))
    async with federation(settings=settings) as fed:
        anna = Address.parse("anna@widget.test")
        sent = message(JOHN, anna)
        await fed.acme.send(sent)
        assert (await next_event(fed.widget)).event_id == sent.event_id


class BuggyAdapter(LoopbackAdapter):
    """A platform adapter with a bug: every delivery raises an unexpected error."""

    async def deliver(self, event: Event, session: SessionRecord | None) -> DeliveryResult:
        raise RuntimeError("bug")


async def test_a_crashing_session_answers_with_a_failure() -> None:
    async with federation(widget=BuggyAdapter("widget")) as fed:
        engine: Engine = fed.engine
        sent = message(JOHN, PETER)
        await fed.acme.send(sent)
        outcome = await next_event(fed.acme)
        assert isinstance(outcome, DeliveryOutcome)
        assert (outcome.status, outcome.reason) == ("failed", "internal-error:RuntimeError")
        await engine.actors.drain()
        stats = engine.actors.stats(f"session/{session_id_for(JOHN, PETER)}")
        assert stats is not None and stats.crashes == engine.settings.max_attempts


async def test_message_id_map_is_bounded_by_age(autojump_clock: trio.testing.MockClock) -> None:
    settings = EngineSettings(shard_count=2, message_id_retention_days=1,
                              housekeeping_interval=3600)
    async with federation(settings=settings) as fed:
        old = message(JOHN, PETER, timestamp=fed.clock.now())
        await fed.acme.send(old)
        await next_event(fed.widget)
        await fed.settle()
        assert fed.directory.get_message_ids(old.event_id) is not None
        await trio.sleep(2 * 86_400)
        assert fed.directory.get_message_ids(old.event_id) is None
        late_edit = Edit(source=JOHN, destination=PETER, target_id=old.event_id)
        await fed.acme.send(late_edit)
        await fed.settle()
        assert only_entry(fed, late_edit.event_id).reason == "unknown-message"


@pytest.fixture(params=["memory", "lmdb"])
async def any_directory(request: pytest.FixtureRequest,
                        tmp_path: Path) -> AsyncIterator[Directory]:
    if request.param == "memory":
        yield MemoryDirectory()
        return
    directory = await LmdbDirectory.open(tmp_path / "directory")
    yield directory
    await directory.aclose()


async def test_cached_policy_decisions_follow_every_policy_write(
    any_directory: Directory,
) -> None:
    """The router caches decisions per pair; each kind of policy write invalidates them."""
    async with federation(directory=any_directory) as fed:
        router = fed.engine.router

        async def allowed() -> bool:
            return router.check_policy(JOHN, PETER).allowed

        assert await allowed()
        assert router.check_policy(JOHN, PETER) is router.check_policy(JOHN, PETER)
        await fed.directory.put_user_policy(UserPolicy(address=PETER, decision="deny"))
        assert not await allowed(), "a user policy write invalidates the cache"
        await fed.directory.put_user_policy(UserPolicy(address=PETER))
        assert await allowed()
        await fed.directory.put_domain_agreement(DomainAgreement(
            domain_a="widget.test", domain_b="acme.test", decision="deny"))
        assert not await allowed(), "an agreement write invalidates the cache"
        await fed.directory.put_domain_agreement(DomainAgreement(
            domain_a="widget.test", domain_b="acme.test", decision="allow"))
        assert await allowed()
        await fed.directory.put_domain_route(DomainRoute(domain="widget.test",
                                                         platform="widget", internal=True))
        assert router.check_policy(JOHN, PETER).reason == "internal-domains", \
            "a route write invalidates the cache"
        # And through the whole path: a denial written between two messages applies.
        await fed.directory.put_user_policy(UserPolicy(address=JOHN, decision="deny"))
        sent = message(JOHN, PETER)
        await fed.acme.send(sent)
        await refused_with(fed, sent, f"user-denied:{JOHN}")


async def test_find_session_id_matches_find_session(any_directory: Directory) -> None:
    record = SessionRecord(session_id=session_id_for(JOHN, PETER), a=PETER, b=JOHN)
    await any_directory.put_session(record)
    for a, b in ((JOHN, PETER), (PETER, JOHN)):
        found = any_directory.find_session(a, b)
        assert found is not None
        assert any_directory.find_session_id(a, b) == found.session_id
    assert any_directory.find_session_id(JOHN, MARY) is None
