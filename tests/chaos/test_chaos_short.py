"""The chaos scenarios, scaled down (`tests.chaos.scenarios.SHORT`), one test each, on real processes.

Each test builds its own deployment (redis-server with AOF, the simulator, gunicorn, a Celery worker), runs the
scenario and asserts: no acknowledged event lost, no wrong final Commerce Layer state, no wallet entry written
twice with the same event without a lost answer to explain it, and the scenario's own expectations. The table
of the scenarios run is printed in pytest's summary (see conftest.py; the full version: `python -m tests.chaos`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import kill_leftovers
from tests.chaos.scenarios import SHORT, ScenarioResult, format_notes, format_table, run_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(295)]


@pytest.fixture
def chaos(tmp_path: Path, chaos_results: list[ScenarioResult]) -> Iterator[Callable[[int], ScenarioResult]]:
    def run(number: int) -> ScenarioResult:
        result = run_scenario(number, SHORT, tmp_path)
        chaos_results.append(result)
        print(format_table([result]))
        print(format_notes([result]))
        return result

    yield run
    assert kill_leftovers() == 0, "a scenario left processes running"


def assert_sound(result: ScenarioResult) -> None:
    problems = result.problems()
    assert result.error is None, problems
    assert result.events == SHORT.events
    assert result.acked == result.events, problems  # every event got its 2xx in the end
    assert result.lost == 0, problems
    assert result.wrong == 0, problems
    assert result.double_unexplained == 0, problems
    assert not result.failures, problems


def test_shuffled_duplicated_events_end_in_the_newest_state(chaos: Callable[[int], ScenarioResult]) -> None:
    result = chaos(1)
    assert_sound(result)
    assert result.dup_web > 0  # a quarter of the events were delivered more than once
    assert result.non_2xx == 0
    assert result.dead == 0


def test_a_failing_commerce_layer_changes_nothing_in_the_end(chaos: Callable[[int], ScenarioResult]) -> None:
    result = chaos(2)
    assert_sound(result)
    assert result.evidence["simulator"]["faults_injected"] > 0
    assert result.dead == 0


def test_killing_the_worker_with_sigkill_loses_nothing(chaos: Callable[[int], ScenarioResult]) -> None:
    result = chaos(3)
    assert_sound(result)
    kills = result.evidence["kills"]
    assert kills.get("whole worker", 0) >= 1, kills
    assert sum(kills.values()) >= 3, kills
    assert result.dead == 0


def test_a_redis_restart_loses_no_acknowledged_event(chaos: Callable[[int], ScenarioResult]) -> None:
    result = chaos(4)
    assert_sound(result)
    assert result.evidence["redis_outage_seconds"] >= SHORT.redis_down
    assert result.dead == 0


def test_after_a_commerce_layer_outage_everything_is_applied(chaos: Callable[[int], ScenarioResult]) -> None:
    result = chaos(5)
    assert_sound(result)
    assert result.dead == 0
    assert result.evidence["breaker_opened"] >= 1, "the circuit breaker never opened during the outage"
    assert result.evidence["breaker_open_at_end"] is False


def test_permanent_422s_are_dead_letters_until_replayed(chaos: Callable[[int], ScenarioResult]) -> None:
    result = chaos(6)
    assert_sound(result)
    assert result.dead > 0
    assert all("422" in reason for reason in result.evidence["dead_reasons"])
    assert result.evidence["dead_after_replay"] == 0
    assert "dead" not in result.evidence["replayed_statuses"]
