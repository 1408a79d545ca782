"""The fault suite's deployments (one session fixture each, run once in its own trio run:
the rows' tests only read the result) and its table, printed in the terminal summary so
that it shows in the CI log without ``-s``.

The runs need Prosody: without it the suite is skipped locally, with the reason shown,
and FAILS under ``CI=true``.
"""

from __future__ import annotations

import pytest
import trio

from tests._prosody import require_prosody

from ._rows import FAULTS, SetupResult, run_setup

RESULTS_KEY = pytest.StashKey[dict[str, SetupResult]]()


def _run(name: str, request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> SetupResult:
    require_prosody()
    result = trio.run(run_setup, name, tmp_path_factory.mktemp(f"faults-{name}"))
    request.config.stash.setdefault(RESULTS_KEY, {})[name] = result
    return result


@pytest.fixture(scope="session")
def faults_socket(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> SetupResult:
    """The Socket Mode deployment's rows."""
    return _run("socket", request, tmp_path_factory)


@pytest.fixture(scope="session")
def faults_http(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> SetupResult:
    """The Events API (HTTP) deployment's rows."""
    return _run("http", request, tmp_path_factory)


def _status(passed: bool, xfail: str) -> str:
    if xfail:
        return "XPASS" if passed else "xfail"
    return "pass" if passed else "FAIL"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    results = config.stash.get(RESULTS_KEY, None)
    if not results:
        return
    order = {fault.key: index for index, fault in enumerate(FAULTS)}
    rows = sorted((row for result in results.values() for row in result.rows),
                  key=lambda r: order[r.key])
    header = ("fault", "direction", "sent", "delivered", "explicitly failed", "lost",
              "duplicated", "spurious", "unconfirmed", "no receipt", "receipted", "pass")
    table: list[tuple[str, ...]] = []
    for row in rows:
        tally = row.tally
        counts = ("-",) * 9 if tally is None else tuple(str(n) for n in (
            tally.sent, tally.delivered, tally.explicitly_failed, tally.lost,
            tally.duplicated, tally.spurious, tally.unconfirmed, tally.no_receipt,
            tally.receipted))
        status = _status(row.passed, row.xfail) + (" (error)" if row.error else "")
        table.append((row.fault, row.direction, *counts, status))
    widths = [max(len(header[i]), *(len(line[i]) for line in table))
              for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    write = terminalreporter.write_line
    terminalreporter.section("fault matrix")
    write(line(header))
    for cells in table:
        write(line(cells))
    write("")
    write("what each fault did; explicit failures as their senders were told "
          "(reason: count):")
    noted: set[str] = set()
    for row in rows:
        if row.key not in noted:
            noted.add(row.key)
            write(f"  {row.fault}: {row.note or '-'}")
        reasons = ", ".join(f"{reason}: {count}" for reason, count in
                            sorted(row.tally.reasons.items())) if row.tally else ""
        write(f"    {row.direction}: {reasons or '-'}")
        if row.tally and row.tally.spurious_reasons:
            spurious = ", ".join(f"{reason}: {count}" for reason, count in
                                 sorted(row.tally.spurious_reasons.items()))
            write(f"      spurious notices (the message had arrived): {spurious}")
        if row.error:
            write(f"    error: {row.error}")
    named = sum(row.named_notices for row in rows)
    unnamed = sum(row.unnamed_notices for row in rows)
    write(f"Interlink's failure notices to Peter naming his message (XEP-0461 reply): "
          f"{named} of {named + unnamed}")
    known = [row for row in rows if row.xfail]
    for row in known:
        write(f"known bug: {row.fault} / {row.direction}: {row.xfail}")
    for result in results.values():
        errors = ", ".join(f"{msg} ({kind or '-'}): {n}" for (msg, kind), n in
                           sorted(result.errors.items()))
        write(f"deployment {result.name}: {result.seconds:.0f} s, engine exit "
              f"{result.exit_code}, {len(result.tracebacks)} tracebacks; error-level log "
              f"lines: {errors or 'none'}; logs in {result.directory}")

