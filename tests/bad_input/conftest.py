"""The bad-input suite's one engine run (a session fixture) and its table, printed in the
terminal summary so that it shows in the CI log without ``-s``.

The run needs Prosody (the embedded XMPP server): without it the suite is skipped
locally and FAILS under ``CI=true``, as the XMPP tests do.
"""

from __future__ import annotations

import pytest
import trio

from tests._prosody import require_prosody

from ._suite import Row, SuiteResult, run_suite

RESULT_KEY = pytest.StashKey[SuiteResult]()




@pytest.fixture(scope="session")
def bad_input_run(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> SuiteResult:
    """Every bad input against one ``interlink run``, then the after-check and a graceful
    stop (run once, in its own trio run: the rows' tests only read the result)."""
    require_prosody()
    result = trio.run(run_suite, tmp_path_factory.mktemp("bad-input"))
    request.config.stash[RESULT_KEY] = result
    return result


def _status(row: Row) -> str:
    if row.xfail:
        return "xfail" if not row.passed else "XPASS"
    return "pass" if row.passed else "FAIL"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    result = config.stash.get(RESULT_KEY, None)
    if result is None:
        return
    width = [max(len(h), *(len(getattr(r, a)) for r in result.rows))
             for h, a in (("case", "case"), ("expected", "expected"), ("actual", "actual"))]
    write = terminalreporter.write_line
    terminalreporter.section("bad-input table")
    write(f"{'case':<{width[0]}}  {'expected':<{width[1]}}  {'actual':<{width[2]}}  pass")
    for row in result.rows:
        write(f"{row.case:<{width[0]}}  {row.expected:<{width[1]}}  "
              f"{row.actual:<{width[2]}}  {_status(row)}")
    failed = [r for r in result.rows if not r.passed and not r.xfail]
    known = [r for r in result.rows if not r.passed and r.xfail]
    write(f"{len(result.rows)} rows: {len(result.rows) - len(failed) - len(known)} as "
          f"defined, {len(known)} known bugs (xfail), {len(failed)} failed; engine exit "
          f"{result.exit_code}, {len(result.tracebacks)} tracebacks in "
          f"{result.log_lines} log lines")
    for row in known:
        write(f"known bug: {row.case}: {row.xfail}")
