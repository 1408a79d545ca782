"""engine.Deduplicator: inbound idempotency bounded by age and by count (trio's clock,
autojumped)."""

from __future__ import annotations

import pytest
import trio

from engine import Claim, Deduplicator, UnavailableError


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
