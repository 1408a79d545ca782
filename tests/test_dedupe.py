"""engine.Deduplicator: inbound idempotency bounded by age and by count (trio's clock,
autojumped)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine import Claim, Deduplicator, LocalError, UnavailableError


async def test_accepted_ids_are_duplicates_until_they_expire(autojump_clock: object) -> None:
    dedupe = Deduplicator(ttl=600.0)
    assert dedupe.claim("msg_1") is Claim.NEW
    dedupe.done("msg_1")
    await trio.sleep(599.0)
    assert dedupe.claim("msg_1") is Claim.DONE
    await trio.sleep(2.0)
    assert dedupe.claim("msg_1") is Claim.NEW
    assert dedupe.stats.expired == 1


async def test_a_released_id_can_be_claimed_again() -> None:
    dedupe = Deduplicator()
    assert dedupe.claim("msg_1") is Claim.NEW
    dedupe.release("msg_1")
    assert dedupe.claim("msg_1") is Claim.NEW


async def test_a_second_request_waits_for_the_one_in_flight(autojump_clock: object) -> None:
    dedupe = Deduplicator()
    assert dedupe.claim("msg_1") is Claim.NEW
    assert dedupe.claim("msg_1") is Claim.IN_FLIGHT
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dedupe.wait_settled, "msg_1")
        await trio.sleep(1.0)
        dedupe.done("msg_1")
    assert dedupe.claim("msg_1") is Claim.DONE


async def test_the_table_is_bounded() -> None:
    dedupe = Deduplicator(max_entries=2)
    for name in ("a", "b"):
        assert dedupe.claim(name) is Claim.NEW
    with pytest.raises(UnavailableError):
        dedupe.claim("c")  # everything in flight: busy, nothing forgotten
    dedupe.done("a")
    assert dedupe.claim("c") is Claim.NEW  # the oldest accepted id makes room
    assert len(dedupe) == 2 and dedupe.stats.evicted == 1
    dedupe.done("b")
    assert dedupe.claim("a") is Claim.NEW  # forgotten: bounded memory, documented


# -- what the Slack edge relied on (moved here with the de-duplicator) --------------------

async def test_dedupe_claim_done_release(mock_clock: trio.testing.MockClock) -> None:
    dedupe = Deduplicator()
    assert dedupe.claim("Ev1") is Claim.NEW
    assert dedupe.claim("Ev1") is not Claim.NEW  # in flight
    assert dedupe.in_flight("Ev1") and not dedupe.is_done("Ev1")
    dedupe.release("Ev1")  # not acked: the redelivery is handled
    assert dedupe.claim("Ev1") is Claim.NEW
    dedupe.done("Ev1")
    assert dedupe.claim("Ev1") is not Claim.NEW and dedupe.is_done("Ev1")
    dedupe.release("Ev1")  # too late: done stays done
    assert dedupe.claim("Ev1") is not Claim.NEW
    assert (dedupe.stats.claimed, dedupe.stats.duplicates, dedupe.stats.released) == (2, 3, 1)


async def test_dedupe_forgets_after_the_ttl(mock_clock: trio.testing.MockClock) -> None:
    dedupe = Deduplicator(ttl=600.0)
    assert dedupe.claim("Ev1") is Claim.NEW
    mock_clock.jump(10.0)
    dedupe.done("Ev1")  # the age counts from done
    mock_clock.jump(599.0)
    assert dedupe.claim("Ev1") is not Claim.NEW
    mock_clock.jump(2.0)
    assert dedupe.claim("Ev1") is Claim.NEW and dedupe.stats.expired == 1


async def test_dedupe_is_bounded_by_count(mock_clock: trio.testing.MockClock) -> None:
    dedupe = Deduplicator(max_entries=3)
    for n in range(3):
        assert dedupe.claim(f"Ev{n}") is Claim.NEW
        dedupe.done(f"Ev{n}")
        mock_clock.jump(1.0)
    assert dedupe.claim("Ev3") is Claim.NEW  # the oldest done entry makes room
    assert len(dedupe) == 3 and dedupe.stats.evicted == 1
    assert not dedupe.is_done("Ev0") and dedupe.is_done("Ev1")
    assert dedupe.claim("Ev4") is Claim.NEW and dedupe.claim("Ev5")
    with pytest.raises(UnavailableError):  # all in flight: nothing may be forgotten
        dedupe.claim("Ev6")
    assert len(dedupe) == 3


async def test_dedupe_waiters_hear_the_outcome(mock_clock: trio.testing.MockClock) -> None:
    dedupe = Deduplicator()
    await dedupe.wait_settled("Ev1")  # nothing in flight: returns at once
    assert dedupe.claim("Ev1") is Claim.NEW
    outcomes: list[bool] = []

    async def waiter() -> None:
        await dedupe.wait_settled("Ev1")
        outcomes.append(dedupe.is_done("Ev1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == []
        dedupe.done("Ev1")
    assert outcomes == [True]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(LocalError, match="max_entries"):
        Deduplicator(max_entries=0)
    with pytest.raises(LocalError, match="ttl"):
        Deduplicator(ttl=0)
