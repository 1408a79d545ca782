"""Issue #13 item 4, the bad-input suite: every bad input to a running ``interlink run``
(Slack Events API over HTTP, the webhook endpoint, XMPP stanzas from a real client, the
control API) gets its defined answer, the engine logs no traceback, and it still routes a
normal message each way afterwards.

The table of cases and their defined answers is ``_cases.py``; the run is ``_suite.py``;
the deployment is ``_world.py``. A row that shows a real bug is marked ``xfail`` (strict)
with the reason, so that CI stays green and the bug stays visible in the printed table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._cases import CASES
from ._suite import AFTER_ROWS, SuiteResult

#: error-level log lines a known bug (an xfailed row, by its reason) may cause: (msg, error_type)
KNOWN_BUG_LOG_LINES: dict[str, tuple[str, str]] = {}


def _rows() -> Iterator[Any]:
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(case.name, id=case.name, marks=marks)
    for row in AFTER_ROWS:
        yield pytest.param(row.case, id=row.case)


@pytest.mark.parametrize("case", list(_rows()))
def test_the_answer_is_the_defined_one(bad_input_run: SuiteResult, case: str) -> None:
    row = bad_input_run.row(case)
    assert row.passed, f"{row.case}: expected {row.expected!r}, got {row.actual!r}"


def test_every_case_has_a_row() -> None:
    names = [case.name for case in CASES] + [row.case for row in AFTER_ROWS]
    assert len(names) == len(set(names)), "case names must be unique"


def test_the_engine_log_has_no_traceback(bad_input_run: SuiteResult) -> None:
    assert bad_input_run.tracebacks == []


def test_no_error_is_logged_but_by_the_known_bugs(bad_input_run: SuiteResult) -> None:
    allowed = {KNOWN_BUG_LOG_LINES[case.xfail] for case in CASES
               if case.xfail in KNOWN_BUG_LOG_LINES}
    unexplained = [record for record in bad_input_run.errors
                   if (record.get("msg"), record.get("error_type")) not in allowed]
    assert unexplained == []


def test_the_engine_still_routes_and_stops_cleanly(bad_input_run: SuiteResult) -> None:
    for row in AFTER_ROWS:
        found = bad_input_run.row(row.case)
        assert found.passed, f"{found.case}: expected {found.expected!r}, got {found.actual!r}"
    assert bad_input_run.exit_code == 0, "interlink run did not stop cleanly on SIGINT"
