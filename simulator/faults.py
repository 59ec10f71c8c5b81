"""Fault injection: outages, dropped connections, latency, injected 429s and errors, per-source failures.

`FaultInjector.decide()` is called once per Commerce Layer request, before anything else happens to it, and
returns every decision for that request. With a `seed` the decisions are reproducible: each request draws the
same six numbers from `random.Random(seed)` in the same order, whatever the configured rates.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

RATE_KEYS = ("latency_rate", "error_rate", "rate_429", "drop_rate", "drop_after_rate")


@dataclass(frozen=True)
class FaultConfig:
    """The fault settings, as shown and changed through `/_sim/faults`."""

    seed: int | None = None
    latency_ms: float = 0
    latency_rate: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    rate_429: float = 0.0
    retry_after: float = 1  # the Retry-After of injected 429s, in seconds (an extension of the brief)
    drop_rate: float = 0.0
    drop_after_rate: float = 0.0  # process the request, then drop the connection (an extension)
    down: bool = False
    include_auth: bool = False
    source_statuses: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "latency_ms": self.latency_ms,
            "latency_rate": self.latency_rate,
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "rate_429": self.rate_429,
            "retry_after": self.retry_after,
            "drop_rate": self.drop_rate,
            "drop_after_rate": self.drop_after_rate,
            "down": self.down,
            "include_auth": self.include_auth,
            "source_statuses": dict(self.source_statuses),
        }

    def merged(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with the given keys replaced; raises ValueError naming the first bad key."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
        updates: dict[str, Any] = {}
        for key, value in changes.items():
            updates[key] = _validated(key, value)
        return replace(self, **updates)

    @property
    def active(self) -> bool:
        return self.down or any(getattr(self, key) > 0 for key in RATE_KEYS) or bool(self.source_statuses)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)


def _validated(key: str, value: Any) -> Any:
    if key in RATE_KEYS:
        rate = _number(key, value)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{key} must be between 0 and 1")
        return rate
    if key in ("latency_ms", "retry_after"):
        amount = _number(key, value)
        if not 0 <= amount <= 600_000:
            raise ValueError(f"{key} must be between 0 and 600000")
        return int(amount) if amount.is_integer() else amount
    if key in ("down", "include_auth"):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if key == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("seed must be an integer or null")
        return value
    if key == "error_statuses":
        if not isinstance(value, list) or not value or not all(_is_status(v, 400) for v in value):
            raise ValueError("error_statuses must be a non-empty list of HTTP statuses 400-599")
        return tuple(value)
    if key == "source_statuses":
        if not isinstance(value, dict) or not all(isinstance(k, str) and _is_status(v, 400) for k, v in value.items()):
            raise ValueError("source_statuses must map source ids to HTTP statuses 400-599")
        return dict(value)
    raise ValueError(f"unknown fault setting: {key}")  # pragma: no cover - merged() checks names first


def _is_status(value: Any, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= 599


@dataclass(frozen=True)
class FaultDecision:
    """Everything fault injection decided for one request (in the order it is applied)."""

    down: bool = False
    drop: bool = False
    latency_seconds: float = 0.0
    inject_429: bool = False
    retry_after: float = 1
    error_status: int | None = None
    drop_after: bool = False
    source_statuses: Mapping[str, int] = field(default_factory=dict)

    @property
    def rejects(self) -> bool:
        """True when the request must not reach the endpoint (no state may change)."""
        return self.down or self.drop or self.inject_429 or self.error_status is not None


NO_FAULTS = FaultDecision()


class FaultInjector:
    """Holds the fault settings and makes the per-request decisions, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._random = random.Random()
        self._injected = 0

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def configure(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Merge settings (`{"reset": true}` first restores the defaults); a given `seed` restarts the sequence."""
        changes = dict(changes)
        reset = changes.pop("reset", False)
        if not isinstance(reset, bool):
            raise ValueError("reset must be true or false")
        with self._lock:
            base = FaultConfig() if reset else self._config
            config = base.merged(changes)
            self._config = config
            if reset or "seed" in changes:
                self._random = random.Random(config.seed)
            return config

    def reset(self) -> None:
        self.configure({"reset": True})
        with self._lock:
            self._injected = 0

    def decide(self, *, auth_endpoint: bool) -> FaultDecision:
        """The decisions for one request; `/oauth/token` is only affected when `include_auth` is set."""
        with self._lock:
            config = self._config
            if not config.active or (auth_endpoint and not config.include_auth):
                return NO_FAULTS
            draws = [self._random.random() for _ in range(6)]
            drop_draw, latency_draw, limit_draw, error_draw, pick_draw, drop_after_draw = draws
            error_status: int | None = None
            if error_draw < config.error_rate:
                statuses = config.error_statuses
                error_status = statuses[min(int(pick_draw * len(statuses)), len(statuses) - 1)]
            decision = FaultDecision(
                down=config.down,
                drop=drop_draw < config.drop_rate,
                latency_seconds=config.latency_ms / 1000 if latency_draw < config.latency_rate else 0.0,
                inject_429=limit_draw < config.rate_429,
                retry_after=config.retry_after,
                error_status=error_status,
                drop_after=drop_after_draw < config.drop_after_rate,
                source_statuses=dict(config.source_statuses) if not auth_endpoint else {},
            )
            if decision.rejects or decision.drop_after:
                self._injected += 1
            return decision

    @property
    def injected(self) -> int:
        """How many requests a fault rejected, dropped or cut off (latency and source_statuses not counted)."""
        with self._lock:
            return self._injected
