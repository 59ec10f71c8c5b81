"""The request log and counters behind `/_sim/requests` and `/_sim/stats`.

Only Commerce Layer requests (`/api/*`, `/oauth/token`) are recorded. An entry is appended when the answer is
decided, just before it is written, so a client that has its answer always finds its request in the log;
`seq` therefore follows completion order, which is what makes `?since=<seq>` safe to poll.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from simulator.protocol import InvalidJSON, Request, parse_json

MAX_ENTRIES = 100_000
DROPPED = "dropped"


def body_for_log(body: bytes) -> Any:
    """Parsed JSON when the body is JSON, else its text (invalid UTF-8 replaced), None when empty."""
    if not body:
        return None
    try:
        return parse_json(body)
    except InvalidJSON:
        return body.decode("utf-8", errors="replace")


class Recorder:
    """Thread-safe request log (bounded) and per-status / per-route counters."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._seq = 0
        self._by_status: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()
        self._requests = 0
        self._rate_limited = 0
        self._dropped = 0

    def record(self, request: Request, route_key: str, status: int | str, *, rate_limited: bool = False) -> int:
        """Log one answered (or dropped) request and count it; returns its `seq`."""
        entry: dict[str, Any] = {
            "seq": 0,
            "time": request.received_at,
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "args": request.args,
            "headers": request.headers_dict(),
            "body": body_for_log(request.body),
            "status": status,
            "route": route_key,
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
            self._requests += 1
            self._by_route[route_key] += 1
            if status == DROPPED:
                self._dropped += 1
            else:
                self._by_status[str(status)] += 1
            if rate_limited:
                self._rate_limited += 1
            return self._seq

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        """Logged requests with `seq > since`, oldest first."""
        with self._lock:
            return [entry for entry in self._entries if entry["seq"] > since]

    def clear_entries(self) -> None:
        """Empty the log; counters and the `seq` sequence carry on."""
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "by_status": dict(sorted(self._by_status.items())),
                "by_route": dict(sorted(self._by_route.items())),
                "rate_limited": self._rate_limited,
                "dropped": self._dropped,
            }

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seq = 0
            self._by_status.clear()
            self._by_route.clear()
            self._requests = 0
            self._rate_limited = 0
            self._dropped = 0
