"""The shared circuit breaker on a real Redis: opens on hard failures, lets one probe through, closes again."""

from __future__ import annotations

import pytest
import redis

from service.breaker import BreakerOpen, CircuitBreaker
from service.config import BreakerPolicy

POLICY = BreakerPolicy(window=10, min_calls=5, failure_ratio=0.5, open_seconds=1)


def closed_breaker(client: redis.Redis) -> CircuitBreaker:
    return CircuitBreaker(client, POLICY)


def test_a_healthy_commerce_layer_keeps_the_breaker_closed(redis_client: redis.Redis) -> None:
    breaker = closed_breaker(redis_client)
    for ok in [True, False, True, False, True, True, False, True]:
        breaker.before_call()
        breaker.record(ok=ok)
    assert breaker.state() == "closed"


def test_mostly_failing_calls_open_the_breaker_for_every_worker(redis_client: redis.Redis) -> None:
    breaker = closed_breaker(redis_client)
    for _ in range(5):
        breaker.before_call()
        breaker.record(ok=False)
    assert breaker.state() == "open"
    with pytest.raises(BreakerOpen):
        breaker.before_call()
    other_worker = CircuitBreaker(redis_client, POLICY)
    with pytest.raises(BreakerOpen) as raised:
        other_worker.before_call()
    assert 0 < raised.value.retry_after <= 1


def test_too_few_calls_never_open_it(redis_client: redis.Redis) -> None:
    breaker = CircuitBreaker(redis_client, POLICY)
    for _ in range(4):
        breaker.before_call()
        breaker.record(ok=False)
    assert breaker.state() == "closed"


def open_then_wait(redis_client: redis.Redis) -> None:
    breaker = closed_breaker(redis_client)
    for _ in range(5):
        breaker.record(ok=False)
    redis_client.delete("walletsync:breaker:open")  # the open period is over


def test_after_the_open_period_only_one_probe_goes_through(redis_client: redis.Redis) -> None:
    open_then_wait(redis_client)
    first, second = CircuitBreaker(redis_client, POLICY), CircuitBreaker(redis_client, POLICY)
    first.before_call()
    with pytest.raises(BreakerOpen):
        second.before_call()


def test_a_successful_probe_closes_the_breaker(redis_client: redis.Redis) -> None:
    open_then_wait(redis_client)
    probe = CircuitBreaker(redis_client, POLICY)
    probe.before_call()
    probe.record(ok=True)
    assert probe.state() == "closed"
    CircuitBreaker(redis_client, POLICY).before_call()


def test_a_failed_probe_opens_it_again(redis_client: redis.Redis) -> None:
    open_then_wait(redis_client)
    probe = CircuitBreaker(redis_client, POLICY)
    probe.before_call()
    probe.record(ok=False)
    assert probe.state() == "open"
