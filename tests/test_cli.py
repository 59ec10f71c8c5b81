"""The operator commands (`flask --app service dead-letters ...`, `events show`) on a real Redis, with a recording
publisher in place of the Celery queue."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, cast

import click
import pytest
import redis
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from service import create_app
from service.cli import PROGRESS_MIN_ITEMS, parse_duration, register_cli
from service.config import Secret, WebSettings
from service.domain import Card, Outcome, PaymentMethodEvent
from service.eventlog import DEAD_LETTERS_KEY, EventLog, event_fields, event_key
from tests.support import free_port


@dataclass
class RecordingPublish:
    """Stands in for the Celery queue: keeps every message; raises `error` from call number `fail_on` on."""

    messages: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    fail_on: int | None = None
    error: Exception = field(default_factory=lambda: ConnectionError("broker unreachable"))
    calls: int = 0

    def __call__(self, message: dict[str, Any], accepted_at: float) -> str:
        self.calls += 1
        if self.fail_on is not None and self.calls >= self.fail_on:
            raise self.error
        self.messages.append((message, accepted_at))
        return f"task-replay-{len(self.messages)}"


def build_app(redis_url: str, publish: RecordingPublish) -> Flask:
    settings = WebSettings(redis_url=redis_url, stripe_webhook_secrets=(Secret("whsec_test"),))
    app = create_app(settings, publish=publish, configure_logs=False)
    register_cli(app)
    return app


@pytest.fixture
def publish() -> RecordingPublish:
    return RecordingPublish()


@pytest.fixture
def runner(redis_url: str, publish: RecordingPublish) -> FlaskCliRunner:
    return build_app(redis_url, publish).test_cli_runner()


@pytest.fixture
def events(redis_client: redis.Redis) -> EventLog:
    return EventLog(redis_client)


def make_event(event_id: str) -> PaymentMethodEvent:
    return PaymentMethodEvent(
        provider="stripe",
        event_id=event_id,
        event_type="payment_method.updated",
        event_created=1_714_000_000,
        payment_source_token=f"pm_{event_id}",
        customer_token="cus_test",
        status="active",
        card=Card(brand="visa", last4="4242", exp_month=12, exp_year=2030),
    )


def queued(events: EventLog, event_id: str) -> PaymentMethodEvent:
    """An event recorded as the intake records it: `queued`, with its stored payload and 0 attempts."""
    event = make_event(event_id)
    fields = {**event_fields(event), "task_id": f"task-{event_id}", "attempts": 0}
    events.record("stripe", event_id, Outcome.QUEUED, fields=fields, note={"task_id": f"task-{event_id}"})
    return event


def dead(
    events: EventLog, event_id: str, reason: str = "permanent: 422 unprocessable", attempts: int = 3
) -> PaymentMethodEvent:
    """An event that went through the worker's path to the dead-letter store."""
    event = queued(events, event_id)
    for attempt in range(attempts):
        events.record_attempt(event, error=f"transient: 503 (attempt {attempt + 1})")
    events.dead_letter(event, reason=reason)
    return event


def age(redis_client: redis.Redis, event_id: str, seconds: float) -> None:
    redis_client.zadd(DEAD_LETTERS_KEY, {f"stripe:{event_id}": time.time() - seconds})


def invoke(runner: FlaskCliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(args=list(args), input=input)


def listed(redis_client: redis.Redis) -> set[str]:
    members = cast(list[bytes], redis_client.zrange(DEAD_LETTERS_KEY, 0, -1))
    return {member.decode() for member in members}


# --- durations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604_800)])
def test_durations_are_read_in_seconds_minutes_hours_and_days(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1w", "1.5h", "h", "-2h", "0s", "2 h", "2H", "2hours"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_a_bad_duration_on_the_command_line_is_a_usage_error_with_exit_1(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "dead-letters", "list", "--older-than", "3w")
    assert result.exit_code == 1
    assert "not a duration" in result.stderr
    assert result.stdout == ""


# --- dead-letters list -------------------------------------------------------------------------------------------


def test_list_shows_a_table_with_the_dead_letters_oldest_first(
    runner: FlaskCliRunner, events: EventLog, redis_client: redis.Redis
) -> None:
    dead(events, "evt_new", reason="permanent: 422 card declined")
    dead(events, "evt_old", reason="retry budget exhausted after 12 attempts: 503")
    age(redis_client, "evt_old", 3600)
    result = invoke(runner, "dead-letters", "list")
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split() == ["EVENT", "ID", "PROVIDER", "TYPE", "REASON", "ATTEMPTS", "DIED", "AT"]
    assert first.startswith("evt_old")
    assert "retry budget exhausted" in first
    assert second.startswith("evt_new")
    assert "stripe" in second
    assert "payment_method.updated" in second
    assert "2 dead letters" in result.stderr


def test_list_filters_by_reason_substring_in_any_case(runner: FlaskCliRunner, events: EventLog) -> None:
    dead(events, "evt_422", reason="permanent: 422 unprocessable")
    dead(events, "evt_budget", reason="retry budget exhausted after 12 attempts: timeout")
    result = invoke(runner, "dead-letters", "list", "--reason", "BUDGET", "--json")
    assert result.exit_code == 0
    assert [letter["event_id"] for letter in json.loads(result.stdout)] == ["evt_budget"]


def test_list_filters_by_age(runner: FlaskCliRunner, events: EventLog, redis_client: redis.Redis) -> None:
    dead(events, "evt_recent")
    dead(events, "evt_three_hours")
    dead(events, "evt_two_days")
    age(redis_client, "evt_three_hours", 3 * 3600)
    age(redis_client, "evt_two_days", 2 * 86400)
    two_hours = json.loads(invoke(runner, "dead-letters", "list", "--older-than", "2h", "--json").stdout)
    one_day = json.loads(invoke(runner, "dead-letters", "list", "--older-than", "1d", "--json").stdout)
    assert [letter["event_id"] for letter in two_hours] == ["evt_two_days", "evt_three_hours"]
    assert [letter["event_id"] for letter in one_day] == ["evt_two_days"]


def test_list_json_parses_and_has_every_dead_letter_field(runner: FlaskCliRunner, events: EventLog) -> None:
    dead(events, "evt_json", reason="permanent: 422 unprocessable", attempts=2)
    result = invoke(runner, "dead-letters", "list", "--json")
    assert result.exit_code == 0
    [letter] = json.loads(result.stdout)
    assert set(letter) == {
        "provider",
        "event_id",
        "event_type",
        "reason",
        "attempts",
        "first_error",
        "last_error",
        "received_at",
        "died_at",
        "payload_key",
    }
    assert letter["event_id"] == "evt_json"
    assert letter["reason"] == "permanent: 422 unprocessable"
    assert letter["attempts"] == 2
    assert letter["first_error"] == "transient: 503 (attempt 1)"
    assert letter["last_error"] == "transient: 503 (attempt 2)"
    assert letter["payload_key"] == event_key("stripe", "evt_json")


def test_list_with_no_dead_letters_exits_0_with_an_empty_result(runner: FlaskCliRunner) -> None:
    as_json = invoke(runner, "dead-letters", "list", "--json")
    for_humans = invoke(runner, "dead-letters", "list")
    assert (as_json.exit_code, json.loads(as_json.stdout)) == (0, [])
    assert (for_humans.exit_code, for_humans.stdout) == (0, "")
    assert "no dead letters" in for_humans.stderr


# --- events show -------------------------------------------------------------------------------------------------


def test_show_prints_the_status_record_and_the_history_in_order(runner: FlaskCliRunner, events: EventLog) -> None:
    dead(events, "evt_story", reason="permanent: 422 unprocessable", attempts=1)
    result = invoke(runner, "events", "show", "evt_story")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "stripe:evt_story"
    assert any(line.split() == ["status", "dead"] for line in lines)
    assert any(line.split()[:2] == ["dead_reason", "permanent:"] for line in lines)
    history = lines[lines.index("history (2 entries, oldest first):") + 1 :]
    assert [line.split()[1] for line in history] == ["queued", "dead"]
    assert "task_id=task-evt_story" in history[0]
    assert "reason=permanent: 422 unprocessable" in history[1]


def test_show_json_has_the_record_and_the_history(runner: FlaskCliRunner, events: EventLog) -> None:
    dead(events, "evt_story")
    result = invoke(runner, "events", "show", "evt_story", "--json")
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["record"]["status"] == "dead"
    assert shown["record"]["attempts"] == "3"
    assert [entry["status"] for entry in shown["history"]] == ["queued", "dead"]


def test_show_of_an_unknown_event_exits_1_with_a_message_on_stderr(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "events", "show", "evt_nobody")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "unknown event stripe:evt_nobody" in result.stderr


# --- dead-letters replay -----------------------------------------------------------------------------------------


def test_replaying_one_dead_letter_publishes_exactly_its_stored_event_with_a_fresh_budget(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog, redis_client: redis.Redis
) -> None:
    event = dead(events, "evt_replay", attempts=4)
    dead(events, "evt_other")
    before = time.time()
    result = invoke(runner, "dead-letters", "replay", "evt_replay", "--json")
    assert result.exit_code == 0, result.output
    [(message, accepted_at)] = publish.messages
    assert message == event.to_message()
    assert before <= accepted_at <= time.time()
    record = events.status("stripe", "evt_replay")
    assert record["status"] == "queued"
    assert record["attempts"] == "0"
    assert record["task_id"] == "task-replay-1"
    last = events.history("stripe", "evt_replay")[-1]
    assert (last["status"], last["replayed"], last["task_id"]) == ("queued", True, "task-replay-1")
    assert listed(redis_client) == {"stripe:evt_other"}
    report = json.loads(result.stdout)
    assert report["replayed"] == [
        {"provider": "stripe", "event_id": "evt_replay", "previous_status": "dead", "task_id": "task-replay-1"}
    ]
    assert (report["skipped"], report["failed"], report["not_attempted"]) == ([], [], [])


def test_replay_all_replays_every_dead_letter_with_a_progress_bar_on_stderr(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog, redis_client: redis.Redis
) -> None:
    ids = [f"evt_all{n}" for n in range(PROGRESS_MIN_ITEMS + 1)]
    for event_id in ids:
        dead(events, event_id)
    result = invoke(runner, "dead-letters", "replay", "--all")
    assert result.exit_code == 0, result.output
    assert sorted(message["event_id"] for message, _ in publish.messages) == sorted(ids)
    assert listed(redis_client) == set()
    assert all(events.status("stripe", event_id)["status"] == "queued" for event_id in ids)
    assert "Replaying" in result.stderr
    assert "Replaying" not in result.stdout
    assert len([line for line in result.stdout.splitlines() if line.startswith("replayed  stripe:")]) == len(ids)


def test_replay_by_reason_replays_only_the_matching_dead_letters(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog, redis_client: redis.Redis
) -> None:
    dead(events, "evt_422", reason="permanent: 422 unprocessable")
    dead(events, "evt_budget", reason="retry budget exhausted after 12 attempts: timeout")
    result = invoke(runner, "dead-letters", "replay", "--reason", "422", "--json")
    assert result.exit_code == 0
    assert [message["event_id"] for message, _ in publish.messages] == ["evt_422"]
    assert listed(redis_client) == {"stripe:evt_budget"}


def test_replay_with_nothing_selected_exits_1_and_publishes_nothing(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog
) -> None:
    dead(events, "evt_waiting")
    result = invoke(runner, "dead-letters", "replay")
    assert result.exit_code == 1
    assert "nothing selected" in result.stderr
    assert publish.messages == []


def test_replay_of_event_ids_together_with_all_is_a_usage_error(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog
) -> None:
    dead(events, "evt_waiting")
    result = invoke(runner, "dead-letters", "replay", "evt_waiting", "--all")
    assert result.exit_code == 1
    assert publish.messages == []


def test_replay_when_no_dead_letter_matches_the_filter_exits_0(
    runner: FlaskCliRunner, publish: RecordingPublish
) -> None:
    result = invoke(runner, "dead-letters", "replay", "--all", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["replayed"] == []
    assert publish.messages == []


def test_replay_of_an_event_that_is_not_a_dead_letter_needs_force(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog
) -> None:
    event = queued(events, "evt_applied")
    events.record_outcome(event, Outcome.APPLIED, note={"sources": {"src_1": "applied"}})
    refused = invoke(runner, "dead-letters", "replay", "evt_applied", "--json")
    assert refused.exit_code == 1
    assert publish.messages == []
    [skipped] = json.loads(refused.stdout)["skipped"]
    assert "not a dead letter (status applied)" in skipped["reason"]
    assert events.status("stripe", "evt_applied")["status"] == "applied"

    forced = invoke(runner, "dead-letters", "replay", "evt_applied", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert [message for message, _ in publish.messages] == [event.to_message()]
    assert json.loads(forced.stdout)["replayed"][0]["previous_status"] == "applied"
    assert events.status("stripe", "evt_applied")["status"] == "queued"


def test_replay_of_an_unknown_event_id_is_skipped_with_exit_1(
    runner: FlaskCliRunner, publish: RecordingPublish
) -> None:
    result = invoke(runner, "dead-letters", "replay", "evt_nobody", "--force")
    assert result.exit_code == 1
    assert "skipped  stripe:evt_nobody  unknown event" in result.stdout
    assert publish.messages == []


def test_a_dry_run_publishes_and_changes_nothing(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog, redis_client: redis.Redis
) -> None:
    dead(events, "evt_dry")
    result = invoke(runner, "dead-letters", "replay", "--all", "--dry-run", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    assert [entry["event_id"] for entry in report["replayed"]] == ["evt_dry"]
    assert publish.messages == []
    assert events.status("stripe", "evt_dry")["status"] == "dead"
    assert listed(redis_client) == {"stripe:evt_dry"}


def test_replay_stops_at_a_failed_publish_reports_what_was_done_and_exits_2(
    runner: FlaskCliRunner, publish: RecordingPublish, events: EventLog, redis_client: redis.Redis
) -> None:
    for event_id in ("evt_first", "evt_second", "evt_third"):
        dead(events, event_id)
    publish.fail_on = 2
    result = invoke(runner, "dead-letters", "replay", "evt_first", "evt_second", "evt_third", "--json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert [entry["event_id"] for entry in report["replayed"]] == ["evt_first"]
    assert [entry["event_id"] for entry in report["failed"]] == ["evt_second"]
    assert "could not publish: ConnectionError: broker unreachable" in report["failed"][0]["error"]
    assert [entry["event_id"] for entry in report["not_attempted"]] == ["evt_third"]
    assert listed(redis_client) == {"stripe:evt_second", "stripe:evt_third"}
    assert events.status("stripe", "evt_second")["status"] == "dead"
    assert events.status("stripe", "evt_second")["attempts"] == "3"
    assert len(result.stderr.strip().splitlines()) == 1
    assert "replayed 1" in result.stderr


def test_a_replay_whose_task_finished_first_keeps_the_workers_outcome(
    redis_url: str, events: EventLog, redis_client: redis.Redis
) -> None:
    event = dead(events, "evt_fast")

    def fast_worker(message: dict[str, Any], accepted_at: float) -> str:
        # The worker runs the replayed task before the command records it: an already-applied event.
        events.record_outcome(PaymentMethodEvent.from_message(message), Outcome.DUPLICATE, note={"sources": {}})
        return "task-fast"

    publish = RecordingPublish()
    app = build_app(redis_url, publish)
    app.extensions["walletsync"] = replace(app.extensions["walletsync"], publish=fast_worker)
    result = app.test_cli_runner().invoke(args=["dead-letters", "replay", event.event_id, "--json"])
    assert result.exit_code == 0, result.output
    assert events.status("stripe", "evt_fast")["status"] == "duplicate"
    last = events.history("stripe", "evt_fast")[-1]
    assert (last["status"], last["replayed"], last["task_id"]) == ("duplicate", True, "task-fast")
    assert listed(redis_client) == set()
    assert json.loads(result.stdout)["replayed"][0]["status_kept"] == "duplicate"


# --- dead-letters purge ------------------------------------------------------------------------------------------


def test_purge_asks_for_confirmation_and_no_deletes_nothing(runner: FlaskCliRunner, events: EventLog) -> None:
    dead(events, "evt_keep")
    result = invoke(runner, "dead-letters", "purge", "--all", input="n\n")
    assert result.exit_code == 1
    assert "Purge them?" in result.stderr
    assert "aborted" in result.stderr
    assert result.stdout == ""
    assert [letter.event_id for letter in events.dead_letters()] == ["evt_keep"]


def test_purge_with_yes_removes_the_dead_letters_and_keeps_their_records(
    runner: FlaskCliRunner, events: EventLog, redis_client: redis.Redis
) -> None:
    dead(events, "evt_gone")
    dead(events, "evt_also_gone")
    result = invoke(runner, "dead-letters", "purge", "--all", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(entry["event_id"] for entry in json.loads(result.stdout)["purged"]) == ["evt_also_gone", "evt_gone"]
    assert listed(redis_client) == set()
    assert events.status("stripe", "evt_gone")["status"] == "dead"
    assert events.history("stripe", "evt_gone")[-1]["purged"] is True
    assert "Purge them?" not in result.stderr


def test_purge_confirmed_at_the_prompt_removes_only_the_selected_ones(
    runner: FlaskCliRunner, events: EventLog, redis_client: redis.Redis
) -> None:
    dead(events, "evt_422", reason="permanent: 422 unprocessable")
    dead(events, "evt_budget", reason="retry budget exhausted after 12 attempts: timeout")
    result = invoke(runner, "dead-letters", "purge", "--reason", "422", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "purged  stripe:evt_422\n"
    assert listed(redis_client) == {"stripe:evt_budget"}


def test_purge_of_an_id_that_is_not_a_dead_letter_is_skipped_with_exit_1(
    runner: FlaskCliRunner, events: EventLog
) -> None:
    queued(events, "evt_busy")
    result = invoke(runner, "dead-letters", "purge", "evt_busy", "--yes")
    assert result.exit_code == 1
    assert "skipped  stripe:evt_busy  not a dead letter" in result.stdout
    assert events.status("stripe", "evt_busy")["status"] == "queued"


def test_purge_with_nothing_selected_exits_1(runner: FlaskCliRunner, events: EventLog) -> None:
    dead(events, "evt_keep")
    result = invoke(runner, "dead-letters", "purge", "--yes")
    assert result.exit_code == 1
    assert [letter.event_id for letter in events.dead_letters()] == ["evt_keep"]


# --- Redis down --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["dead-letters", "list"],
        ["dead-letters", "list", "--json"],
        ["events", "show", "evt_any"],
        ["dead-letters", "replay", "--all"],
        ["dead-letters", "replay", "evt_any", "--json"],
        ["dead-letters", "purge", "--all", "--yes"],
    ],
)
def test_redis_down_exits_2_with_one_line_on_stderr(args: list[str]) -> None:
    publish = RecordingPublish()
    runner = build_app(f"redis://127.0.0.1:{free_port()}/0", publish).test_cli_runner()
    result = runner.invoke(args=args)
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "Redis is unavailable" in line
    assert "Traceback" not in result.output
    assert publish.messages == []


def test_a_dead_letter_written_meanwhile_by_another_replay_counts_as_resolved(
    redis_url: str, events: EventLog, redis_client: redis.Redis
) -> None:
    first, second = dead(events, "evt_resolvedA"), dead(events, "evt_resolvedB")
    age(redis_client, "evt_resolvedA", 60)  # replayed first (oldest first)

    class WorkerWritesTheNewerEvent(RecordingPublish):
        def __call__(self, message: dict[str, Any], accepted_at: float) -> str:
            # The worker running the first replay writes the card's newest state: the second dead letter's event.
            events.record_outcome(second, Outcome.APPLIED, note={"written_by_task_of": first.event_id})
            return super().__call__(message, accepted_at)

    runner = build_app(redis_url, WorkerWritesTheNewerEvent()).test_cli_runner()
    result = invoke(runner, "dead-letters", "replay", "--all", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [entry["event_id"] for entry in report["replayed"]] == ["evt_resolvedA"]
    assert [entry["event_id"] for entry in report["resolved"]] == ["evt_resolvedB"]
    assert report["skipped"] == []
