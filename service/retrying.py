"""The one retry decision: given a classified failure and the event's budget, retry later or give up.

Backoff is exponential with full jitter (a uniform draw between 0 and the exponential ceiling), never below a
rate limit's `Retry-After` / `X-Ratelimit-Interval`, never above the cap, which is far below the broker's
visibility timeout. The budget is counted twice: by attempts and by age since the event was accepted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from service.config import RetryPolicy
from service.errors import CommerceLayerError, ErrorKind


@dataclass(frozen=True)
class RetryLater:
    countdown: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


def next_step(
    error: CommerceLayerError,
    *,
    attempts: int,
    age_seconds: float,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> RetryLater | GiveUp:
    """`attempts` counts the failed attempts so far, this one included."""
    if error.kind is not ErrorKind.TRANSIENT:
        return GiveUp(f"permanent: {error.reason}")
    if attempts >= policy.max_attempts:
        return GiveUp(f"retry budget exhausted after {attempts} attempts: {error.reason}")
    if age_seconds >= policy.max_age_seconds:
        return GiveUp(f"retry budget exhausted after {int(age_seconds)} s: {error.reason}")
    return RetryLater(backoff(attempts, policy=policy, floor=error.retry_after, rng=rng))


def backoff(
    attempts: int, *, policy: RetryPolicy, floor: float | None = None, rng: random.Random | None = None
) -> float:
    ceiling = min(policy.backoff_cap_seconds, policy.backoff_base_seconds * 2 ** max(attempts - 1, 0))
    delay = (rng or random).uniform(0, ceiling)
    if floor is not None:
        delay = max(delay, min(floor, policy.backoff_cap_seconds))
    return round(delay, 3)
