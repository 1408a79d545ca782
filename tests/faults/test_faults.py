"""Issue #13 item 3, the fault matrix: numbered messages both ways between John (Slack,
through the sandbox) and Peter (XMPP, on Prosody) through a real ``interlink run``, across
each fault; on the far side every message is delivered, or explicitly failed (its sender
told), never lost silently and never duplicated.

The faults and how each is injected: ``_rows.py``; the traffic and what each side
sees: ``_exchange.py``; how a message is classified and a notice matched to one:
``_tally.py``; the deployments: ``_world.py``. One test per row (fault x direction),
each asserting its own row; the table is printed in the terminal summary. A row that
shows a real bug can be marked ``xfail`` (strict) with the reason (``Fault.xfail``),
so that CI stays green and the bug stays visible in the table; none is today.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._exchange import XMPP_TO_SLACK
from ._rows import FAULTS, SETUPS, SetupResult, row_id


def _rows() -> Iterator[Any]:
    for fault in FAULTS:
        for direction in fault.directions():
            reason = fault.xfail.get(direction, "")
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(fault.setup, row_id(fault.key, direction),
                               id=row_id(fault.key, direction), marks=marks)


def _result(request: pytest.FixtureRequest, setup: str) -> SetupResult:
    result = request.getfixturevalue(f"faults_{setup}")
    assert isinstance(result, SetupResult)
    return result


@pytest.mark.parametrize(("setup", "row"), list(_rows()))
def test_nothing_is_lost_or_duplicated(request: pytest.FixtureRequest, setup: str,
                                       row: str) -> None:
    found = _result(request, setup).row(row)
    assert not found.error, f"{row}: the row did not run to its end: {found.error}"
    assert found.tally is not None
    tally = found.tally
    assert (tally.lost, tally.duplicated, tally.spurious, tally.unexpected,
            tally.false_receipts) == (0, 0, 0, 0, 0), (
        f"{row}: {tally.sent} sent, {tally.delivered} delivered, {tally.explicitly_failed} "
        f"explicitly failed, {tally.lost} lost, {tally.duplicated} duplicated, "
        f"{tally.spurious} spurious notices, {tally.unexpected} unexpected ({found.note})")


@pytest.mark.parametrize("setup", list(SETUPS))
def test_the_engine_logs_no_traceback(request: pytest.FixtureRequest, setup: str) -> None:
    assert _result(request, setup).tracebacks == []


@pytest.mark.parametrize("setup", list(SETUPS))
def test_the_engine_stops_cleanly_after_the_faults(request: pytest.FixtureRequest,
                                                    setup: str) -> None:
    assert _result(request, setup).exit_code == 0, "interlink run did not stop cleanly"


def test_interlinks_failure_notices_on_xmpp_name_the_message(
        faults_socket: SetupResult, faults_http: SetupResult) -> None:
    """Peter can tell which of his messages a failure notice is about: it replies to it
    (XEP-0461), and an error stanza with his message's id marks it failed in his client."""
    rows = faults_socket.rows + faults_http.rows
    named = sum(row.named_notices for row in rows)
    unnamed = sum(row.unnamed_notices for row in rows)
    assert named + unnamed > 0, "no row made Interlink send Peter a failure notice"
    assert unnamed == 0, f"{unnamed} of {named + unnamed} notices name no message"


#: rows whose engine is killed or whose component link is cut (a Prosody restart cuts
#: it too): a receipt may be lost with it (the message arrived, its receipt did not),
#: which the sender sees as "not delivered": conservative, never a loss
_RECEIPT_AT_RISK = ("sigkill", "link-reset", "prosody-restart")


def test_every_xmpp_message_that_arrived_was_receipted(
        faults_socket: SetupResult, faults_http: SetupResult) -> None:
    """What makes "no receipt" count as the sender knowing (rule 4 of ``_tally.py``):
    no receipt ever came for a message that did not arrive (every row's pass checks
    that), and where neither a crash nor a cut link intervened each of Peter's
    messages that reached John got its XEP-0184 receipt."""
    checked = 0
    for row in faults_socket.rows + faults_http.rows:
        tally = row.tally
        if tally is None or row.direction != XMPP_TO_SLACK or \
                row.key.startswith(_RECEIPT_AT_RISK):
            continue
        assert tally.receipted == tally.delivered, (
            f"{row.fault}: {tally.delivered} delivered, {tally.receipted} receipted")
        checked += tally.delivered
    assert checked > 0
