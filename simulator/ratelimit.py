"""Sliding-window rate limits for `/api/*`, like Commerce Layer's per-endpoint and per-class limits.

Each window is `limit` requests per `seconds` (fractional seconds allowed, so benchmarks can scale time) and
counts either per endpoint (method + path template, e.g. `PATCH /api/customer_payment_sources/:id`) or
globally (all `/api` requests together). A request is admitted only if every window has room; an admitted
request is counted in every window, a refused one in none.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simulator.protocol import format_number

SCOPES = ("endpoint", "global")


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: float
    per: str | None = None  # None: the config's default scope

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"limit": self.limit, "seconds": self.seconds}
        if self.per is not None:
            result["per"] = self.per
        return result


@dataclass(frozen=True)
class RateLimitConfig:
    windows: tuple[Window, ...] = ()
    per: str = "endpoint"

    def to_json(self) -> dict[str, Any]:
        return {"windows": [w.to_json() for w in self.windows], "per": self.per}


@dataclass(frozen=True)
class Admission:
    """The outcome for one request: admitted or not, and the X-Ratelimit-* headers to send."""

    allowed: bool
    headers: dict[str, str]


def parse_config(current: RateLimitConfig, changes: Mapping[str, Any]) -> RateLimitConfig:
    """Merge `windows` / `per` into the current settings (`{"reset": true}` starts from none)."""
    unknown = sorted(set(changes) - {"windows", "per", "reset"})
    if unknown:
        raise ValueError(f"unknown rate limit settings: {', '.join(unknown)}")
    reset = changes.get("reset", False)
    if not isinstance(reset, bool):
        raise ValueError("reset must be true or false")
    base = RateLimitConfig() if reset else current
    per = changes.get("per", base.per)
    if per not in SCOPES:
        raise ValueError('per must be "endpoint" or "global"')
    windows = base.windows
    if "windows" in changes:
        raw = changes["windows"]
        if not isinstance(raw, list):
            raise ValueError("windows must be a list")
        windows = tuple(_window(item) for item in raw)
    return RateLimitConfig(windows=windows, per=per)


def _window(item: Any) -> Window:
    if not isinstance(item, dict) or set(item) - {"limit", "seconds", "per"}:
        raise ValueError('each window must be {"limit": int, "seconds": number, "per"?: "endpoint"|"global"}')
    limit, seconds, per = item.get("limit"), item.get("seconds"), item.get("per")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("window limit must be an integer >= 1")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 86_400:
        raise ValueError("window seconds must be a number > 0 (at most 86400)")
    if per is not None and per not in SCOPES:
        raise ValueError('window per must be "endpoint" or "global"')
    return Window(limit=limit, seconds=seconds, per=per)


class RateLimiter:
    """Sliding-window logs of admitted request times, one per (window, scope key)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._config = RateLimitConfig()
        self._logs: dict[tuple[int, str], deque[float]] = {}

    @property
    def config(self) -> RateLimitConfig:
        with self._lock:
            return self._config

    @property
    def enabled(self) -> bool:
        with self._lock:
            return bool(self._config.windows)

    def configure(self, changes: Mapping[str, Any]) -> RateLimitConfig:
        """Apply new settings; the counting starts afresh."""
        with self._lock:
            self._config = parse_config(self._config, changes)
            self._logs.clear()
            return self._config

    def reset(self) -> None:
        self.configure({"reset": True})

    def admit(self, route_key: str) -> Admission | None:
        """Count the request if every window has room; None when no limits are configured."""
        with self._lock:
            windows = self._config.windows
            if not windows:
                return None
            now = self._clock()
            counts = [len(self._log(index, window, route_key, now)) for index, window in enumerate(windows)]
            for window, count in zip(windows, counts, strict=True):
                if count >= window.limit:
                    return Admission(False, _headers(window, 0))
            for index, window in enumerate(windows):
                self._log(index, window, route_key, now).append(now)
            remaining = [window.limit - count - 1 for window, count in zip(windows, counts, strict=True)]
            return Admission(True, _tightest(windows, remaining))

    def headers(self, route_key: str) -> dict[str, str]:
        """The current X-Ratelimit-* headers for a route without counting a request ({} when off)."""
        with self._lock:
            windows = self._config.windows
            if not windows:
                return {}
            now = self._clock()
            remaining = [
                max(window.limit - len(self._log(index, window, route_key, now)), 0)
                for index, window in enumerate(windows)
            ]
            return _tightest(windows, remaining)

    def _log(self, index: int, window: Window, route_key: str, now: float) -> deque[float]:
        scope = window.per or self._config.per
        key = (index, route_key if scope == "endpoint" else "global")
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque()
        horizon = now - window.seconds
        while log and log[0] <= horizon:
            log.popleft()
        return log


def _tightest(windows: tuple[Window, ...], remaining: list[int]) -> dict[str, str]:
    index = min(range(len(windows)), key=lambda i: (remaining[i], windows[i].seconds))
    return _headers(windows[index], remaining[index])


def _headers(window: Window, remaining: int) -> dict[str, str]:
    return {
        "X-Ratelimit-Limit": str(window.limit),
        "X-Ratelimit-Interval": format_number(window.seconds),
        "X-Ratelimit-Remaining": str(remaining),
    }
