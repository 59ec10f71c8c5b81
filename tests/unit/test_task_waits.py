"""Waits that are not failures (rate limit, circuit breaker, burst settling) reschedule the task by a countdown,
never longer than the backoff cap: a task held for its countdown past the broker's visibility timeout would be
delivered a second time."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import tasks.sync as task_module
from service.breaker import BreakerOpen
from service.config import RetryPolicy
from service.domain import PaymentMethodEvent
from service.ratelimit import RateLimited
from service.snapshots import Settling

EVENT = PaymentMethodEvent(
    provider="stripe",
    event_id="evt_wait",
    event_type="payment_method.updated",
    event_created=1000,
    payment_source_token="pm_wait",
    customer_token=None,
    status="active",
)


class Rescheduled(Exception):
    pass


class RecordingTask:
    def __init__(self) -> None:
        self.countdowns: list[float] = []

    def retry(self, *, countdown: float) -> Exception:
        self.countdowns.append(countdown)
        return Rescheduled()


@pytest.mark.parametrize("wait", [RateLimited(10_000.0), BreakerOpen(10_000.0), Settling(10_000.0)])
def test_a_long_wait_is_capped_at_the_backoff_cap(monkeypatch: pytest.MonkeyPatch, wait: Exception) -> None:
    def waiting(*_: Any, **__: Any) -> None:
        raise wait

    monkeypatch.setattr(task_module, "sync", waiting)
    runtime = SimpleNamespace(
        settings=SimpleNamespace(retry=RetryPolicy(backoff_cap_seconds=30.0)),
        commercelayer=None,
        ordering=None,
        snapshots=None,
    )
    task = RecordingTask()
    with pytest.raises(Rescheduled):
        task_module._run(task, EVENT, runtime, accepted_at=0.0)  # type: ignore[arg-type]
    [countdown] = task.countdowns
    assert 30.0 <= countdown <= 33.0  # the cap, plus at most the jitter


def test_a_short_rate_limit_wait_is_kept_with_little_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    def limited(*_: Any, **__: Any) -> None:
        raise RateLimited(1.5)

    monkeypatch.setattr(task_module, "sync", limited)
    runtime = SimpleNamespace(
        settings=SimpleNamespace(retry=RetryPolicy()), commercelayer=None, ordering=None, snapshots=None
    )
    task = RecordingTask()
    with pytest.raises(Rescheduled):
        task_module._run(task, EVENT, runtime, accepted_at=0.0)  # type: ignore[arg-type]
    assert 1.5 <= task.countdowns[0] <= 1.6  # its turn, kept
