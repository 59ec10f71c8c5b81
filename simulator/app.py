"""The simulator: its state and the path every request takes through it.

For a Commerce Layer request (`/api/*`, `/oauth/token`) the order is:

1. fault injection (`down` -> 503, `drop_rate` -> no answer, `latency_rate` -> sleep, `rate_429` -> 429,
   `error_rate` -> a status from `error_statuses`); `/oauth/token` only with `include_auth`;
2. rate limits (`/api/*` only): 429 when a window is full, the request is not counted;
3. the endpoint itself (`simulator.api`), where `source_statuses` fails a PATCH before anything is applied;
4. `drop_after_rate`: the request was processed but the connection is dropped instead of answered;
5. the request is logged and counted, then answered.

Every fault that rejects a request is decided before the endpoint runs, so an injected error never
half-applies. `/_sim/*` (see `simulator.admin`) bypasses all of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from simulator import admin
from simulator.api import CommerceLayerApi, Route, resolve
from simulator.auth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TokenIssuer
from simulator.faults import FaultDecision, FaultInjector
from simulator.jsonapi import error_response, standard_error
from simulator.protocol import Request, Response, dropped, format_number
from simulator.ratelimit import RateLimiter
from simulator.recorder import DROPPED, Recorder
from simulator.store import Store

log = logging.getLogger("simulator")

# X-Ratelimit-* for injected 429s when no limits are configured: Commerce Layer's per-endpoint windows.
DEFAULT_LIMITS = {"test": ("25", "10"), "live": ("50", "10")}
TOKEN_ENDPOINT_LIMIT = ("30", "60")


class Simulator:
    """All simulator state; `handle()` answers one request (thread-safe)."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        token_ttl: int = 7200,
        test_mode: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.mode = "test" if test_mode else "live"
        self.store = Store()
        self.tokens = TokenIssuer(client_id=client_id, client_secret=client_secret, ttl=token_ttl, test_mode=test_mode)
        self.faults = FaultInjector()
        self.limits = RateLimiter()
        self.recorder = Recorder()
        self.api = CommerceLayerApi(self.store, self.tokens, mode=self.mode)
        self._sleep = sleep

    def reset(self) -> None:
        """Clear sources, request log, stats, faults, rate limits and tokens."""
        self.store.clear()
        self.recorder.reset()
        self.faults.reset()
        self.limits.reset()
        self.tokens.reset()

    def handle(self, request: Request) -> Response:
        try:
            if request.path == "/_sim" or request.path.startswith("/_sim/"):
                return admin.handle(self, request)
            route = resolve(request.method, request.path)
            if route is None:
                return error_response(404, "Not found", f"The path {request.path} does not exist.", "NOT_FOUND")
            return self._commerce_layer(request, route)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return standard_error(500)

    def _commerce_layer(self, request: Request, route: Route) -> Response:
        rate_limited = False
        try:
            response, rate_limited = self._answer(request, route)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            response = standard_error(500)
        status: int | str = DROPPED if response.drop else response.status
        self.recorder.record(request, route.key, status, rate_limited=rate_limited)
        return response

    def _answer(self, request: Request, route: Route) -> tuple[Response, bool]:
        """The response and whether the rate limiter refused the request."""
        decision = self.faults.decide(auth_endpoint=route.auth_endpoint)
        is_api = not route.auth_endpoint
        if decision.down:
            detail = "The service is down (simulator fault injection)."
            return standard_error(503, detail=detail, headers=self._limit_headers(route, is_api)), False
        if decision.drop:
            return dropped(), False
        if decision.latency_seconds > 0:
            self._sleep(decision.latency_seconds)
        if decision.inject_429:
            return standard_error(429, headers=self._injected_429_headers(route, decision)), False
        if decision.error_status is not None:
            detail = f"Injected {decision.error_status} (simulator fault injection)."
            headers = self._limit_headers(route, is_api)
            return standard_error(decision.error_status, detail=detail, headers=headers), False
        limit_headers: dict[str, str] = {}
        if is_api:
            admission = self.limits.admit(route.key)
            if admission is not None:
                if not admission.allowed:
                    return standard_error(429, headers=admission.headers), True
                limit_headers = admission.headers
        response = self.api.handle(request, route, source_statuses=decision.source_statuses)
        if decision.drop_after:
            return dropped(), False
        for name, value in limit_headers.items():
            response.headers.setdefault(name, value)
        return response, False

    def _limit_headers(self, route: Route, is_api: bool) -> dict[str, str]:
        return self.limits.headers(route.key) if is_api else {}

    def _injected_429_headers(self, route: Route, decision: FaultDecision) -> dict[str, str]:
        headers = self._limit_headers(route, not route.auth_endpoint)
        if not headers:
            limit, interval = TOKEN_ENDPOINT_LIMIT if route.auth_endpoint else DEFAULT_LIMITS[self.mode]
            headers = {"X-Ratelimit-Limit": limit, "X-Ratelimit-Interval": interval}
        headers["X-Ratelimit-Remaining"] = "0"
        headers["Retry-After"] = format_number(decision.retry_after)
        return headers
