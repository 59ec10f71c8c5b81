"""The one retry decision and its backoff."""

from __future__ import annotations

import random

import pytest

from service.config import RetryPolicy
from service.errors import CommerceLayerError, ErrorKind, classify_status
from service.retrying import GiveUp, RetryLater, backoff, next_step

POLICY = RetryPolicy(max_attempts=5, max_age_seconds=3600, backoff_base_seconds=2, backoff_cap_seconds=300)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ErrorKind.TRANSIENT),
        (500, ErrorKind.TRANSIENT),
        (502, ErrorKind.TRANSIENT),
        (503, ErrorKind.TRANSIENT),
        (504, ErrorKind.TRANSIENT),
        (401, ErrorKind.UNAUTHORIZED),
        (404, ErrorKind.NOT_FOUND),
        (409, ErrorKind.CONFLICT),
        (400, ErrorKind.PERMANENT),
        (403, ErrorKind.PERMANENT),
        (406, ErrorKind.PERMANENT),
        (415, ErrorKind.PERMANENT),
        (422, ErrorKind.PERMANENT),
        (418, ErrorKind.PERMANENT),
    ],
)
def test_statuses_are_classified_closed_by_default(status: int, kind: ErrorKind) -> None:
    assert classify_status(status) is kind


def transient(retry_after: float | None = None) -> CommerceLayerError:
    return CommerceLayerError(ErrorKind.TRANSIENT, status=503, retry_after=retry_after)


def test_a_transient_failure_is_retried_within_the_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempts in range(1, 5):
        step = next_step(transient(), attempts=attempts, age_seconds=10, policy=POLICY, rng=rng)
        assert isinstance(step, RetryLater)
        assert 0 <= step.countdown <= 2 * 2 ** (attempts - 1)


def test_the_backoff_is_jittered_over_the_whole_range() -> None:
    rng = random.Random(1)
    draws = [backoff(4, policy=POLICY, rng=rng) for _ in range(500)]
    assert min(draws) < 2
    assert max(draws) > 14


def test_the_backoff_never_exceeds_the_cap() -> None:
    assert max(backoff(40, policy=POLICY, rng=random.Random(s)) for s in range(200)) <= 300


def test_a_rate_limit_interval_is_the_floor() -> None:
    rng = random.Random(3)
    assert all(
        next_step(transient(10), attempts=1, age_seconds=0, policy=POLICY, rng=rng).countdown >= 10 for _ in range(50)
    )  # type: ignore[union-attr]


def test_permanent_failures_give_up_at_once_with_the_reason() -> None:
    error = CommerceLayerError(ErrorKind.PERMANENT, status=422, code="VALIDATION_ERROR", detail="metadata is invalid")
    step = next_step(error, attempts=1, age_seconds=0, policy=POLICY)
    assert step == GiveUp("permanent: http 422 VALIDATION_ERROR: metadata is invalid")


def test_an_exhausted_attempt_budget_gives_up() -> None:
    step = next_step(transient(), attempts=5, age_seconds=0, policy=POLICY)
    assert isinstance(step, GiveUp)
    assert "after 5 attempts" in step.reason


def test_an_exhausted_age_budget_gives_up() -> None:
    step = next_step(transient(), attempts=1, age_seconds=3600, policy=POLICY)
    assert isinstance(step, GiveUp)
    assert "3600 s" in step.reason
