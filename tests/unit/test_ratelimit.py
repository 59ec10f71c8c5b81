"""The Commerce Layer rate limiter: windows, live/test defaults, settling, 429s, one budget across processes."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
import textwrap

import pytest
import redis

from service.ratelimit import RateLimited, RateLimiter, Window, parse_windows, token_is_test
from tests.support import ROOT


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS512'})}.{part(claims)}.c2lnbmF0dXJl"


LIVE, TEST = jwt({"test": False}), jwt({"test": True})


def test_windows_parse_from_the_setting() -> None:
    assert parse_windows("50/10s, 200/60s") == (Window(50, 10), Window(200, 60))


@pytest.mark.parametrize("text", ["50", "50/10", "50/10m", "0/10s", "a/bs", ""])
def test_malformed_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="LIMIT/SECONDS"):
        parse_windows(text)


def test_the_mode_is_read_from_the_token() -> None:
    assert token_is_test(TEST) is True
    assert token_is_test(LIVE) is False
    assert token_is_test("not-a-jwt") is None


def take(limiter: RateLimiter, token: str, attempts: int) -> int:
    granted = 0
    for _ in range(attempts):
        try:
            limiter.acquire(access_token=token)
            granted += 1
        except RateLimited:
            pass
    return granted


def test_configured_windows_cap_the_calls(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_client, windows=(Window(5, 60), Window(100, 60)))
    assert take(limiter, LIVE, 20) == 5


def test_without_configuration_test_tokens_get_the_test_limits(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_client, windows=None)
    assert take(limiter, TEST, 40) == 25


def test_without_configuration_live_tokens_get_the_live_limits(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_client, windows=None)
    assert take(limiter, LIVE, 80) == 50


def test_no_budget_says_when_it_frees(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_client, windows=(Window(1, 10),))
    limiter.acquire(access_token=LIVE)
    with pytest.raises(RateLimited) as raised:
        limiter.acquire(access_token=LIVE)
    assert 0 < raised.value.retry_after <= 10


def test_refused_callers_get_consecutive_turns_from_when_budget_frees(redis_client: redis.Redis) -> None:
    """A backlog refused together must not come back together: each is told a later moment than the one before,
    spaced at a quarter of the strictest window's pace per call (a backlog that settles without calls leaves
    budget for the next), starting when budget frees."""
    limiter = RateLimiter(redis_client, windows=(Window(10, 10), Window(30, 60)))  # strictest pace: 2 s per call
    limiter.acquire(access_token=LIVE, calls=10)
    waits = []
    for _ in range(5):
        with pytest.raises(RateLimited) as raised:
            limiter.acquire(access_token=LIVE, calls=2)
        waits.append(raised.value.retry_after)
    assert 9 < waits[0] <= 10  # the first turn: when the 10 s window frees
    gaps = [later - earlier for earlier, later in itertools.pairwise(waits)]
    assert all(0.95 < gap < 1.05 for gap in gaps), gaps  # 2 s per call x 2 calls / 4


def test_a_caller_that_finds_budget_takes_it_whatever_turns_were_given(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, windows=(Window(1, 1),))
    limiter.acquire(access_token=LIVE)
    for _ in range(20):  # turns handed out far beyond the next second
        with pytest.raises(RateLimited):
            limiter.acquire(access_token=LIVE)
    redis_client.delete("walletsync:ratelimit:window:1")  # the window has moved on
    assert limiter.acquire(access_token=LIVE)


def test_a_reservation_takes_several_calls_at_once(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_client, windows=(Window(5, 60),))
    limiter.acquire(access_token=LIVE, calls=4)
    with pytest.raises(RateLimited):
        limiter.acquire(access_token=LIVE, calls=2)
    limiter.acquire(access_token=LIVE)


def test_a_429_pauses_every_process_and_adopts_a_stricter_limit(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_client, windows=(Window(50, 10),))
    limiter.observe_429({"X-Ratelimit-Limit": "3", "X-Ratelimit-Interval": "10", "X-Ratelimit-Remaining": "0"})
    other_process = RateLimiter(redis.Redis.from_url(redis_url), windows=(Window(50, 10),))
    with pytest.raises(RateLimited) as raised:
        other_process.acquire(access_token=LIVE)
    assert 9 < raised.value.retry_after <= 10
    redis_client.delete("walletsync:ratelimit:pause")
    assert take(other_process, LIVE, 10) == 3


def test_two_processes_share_one_limit(redis_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import redis, sys
        from service.ratelimit import RateLimited, RateLimiter, Window
        limiter = RateLimiter(redis.Redis.from_url({redis_url!r}), windows=(Window(30, 60),))
        granted = 0
        for _ in range(40):
            try:
                limiter.acquire(access_token="x.e30.y")
                granted += 1
            except RateLimited:
                pass
        print(granted)
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    granted = [int(process.communicate(timeout=60)[0]) for process in processes]
    assert sum(granted) == 30  # separate budgets would have granted 60


def test_a_call_counts_from_its_answer_so_our_window_never_ends_before_commerce_layers(
    redis_client: redis.Redis, redis_url: str
) -> None:
    import time

    limiter = RateLimiter(redis_client, windows=(Window(1, 1),))
    [call] = limiter.acquire(access_token=LIVE)
    time.sleep(0.6)  # a slow answer: Commerce Layer may have counted the call at any moment until now
    limiter.settle(call, access_token=LIVE)
    time.sleep(0.6)  # 1.2 s after taking the budget, but only 0.6 s after the answer
    with pytest.raises(RateLimited) as raised:
        limiter.acquire(access_token=LIVE)
    assert 0.2 < raised.value.retry_after <= 0.5
