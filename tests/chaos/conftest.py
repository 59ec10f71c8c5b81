"""Collects the results of the chaos scenarios run by pytest and prints their table in the terminal summary."""

from __future__ import annotations

import pytest

from tests.chaos.harness import kill_leftovers
from tests.chaos.scenarios import LEGEND, ScenarioResult, format_notes, format_table

_RESULTS = pytest.StashKey[list[ScenarioResult]]()


@pytest.fixture(scope="session")
def chaos_results(pytestconfig: pytest.Config) -> list[ScenarioResult]:
    return pytestconfig.stash.setdefault(_RESULTS, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    terminalreporter.write_sep("-", "chaos scenarios (short; full version: python -m tests.chaos)")
    terminalreporter.write_line(format_table(results))
    terminalreporter.write_line(LEGEND)
    terminalreporter.write_line(format_notes(results))


def pytest_unconfigure(config: pytest.Config) -> None:
    kill_leftovers()  # whatever an interrupted run left behind
