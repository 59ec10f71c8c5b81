"""Signed Stripe events and a closed-loop HTTP load generator with client-side latencies.

Requests are built and signed before the clock starts, and sent over keep-alive connections with `http.client`
(lighter than `requests`, so that on a small machine the client takes as little CPU from the server as possible:
what is measured is the server).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import http.client
import itertools
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.procs import WEBHOOK_SECRET

Request = tuple[bytes, dict[str, str]]

# A `payment_method.updated` event as Stripe sends it (shape and size of the real thing; test-mode values).
_TEMPLATE: dict[str, Any] = {
    "id": "evt_x",
    "object": "event",
    "api_version": "2026-07-29.dahlia",
    "created": 0,
    "data": {
        "object": {
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {
                    "city": "San Francisco",
                    "country": "US",
                    "line1": "1234 Fake Street",
                    "line2": None,
                    "postal_code": "94102",
                    "state": "CA",
                },
                "email": "jenny@example.com",
                "name": None,
                "phone": "+15555555555",
                "tax_id": None,
            },
            "card": {
                "brand": "visa",
                "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                "country": "US",
                "display_brand": "visa",
                "exp_month": 12,
                "exp_year": 2031,
                "fingerprint": "AOB934RVNwzk6xtn",
                "funding": "credit",
                "generated_from": {
                    "charge": None,
                    "payment_method_details": {"type": "type"},
                    "setup_attempt": None,
                },
                "last4": "4242",
                "networks": {"available": ["visa"], "preferred": None},
                "three_d_secure_usage": {"supported": True},
                "wallet": {"dynamic_last4": None, "type": "link"},
                "regulated_status": None,
            },
            "created": 1234567890,
            "customer": "cus_QXg1o8vcGmoR32",
            "id": "pm_x",
            "livemode": False,
            "metadata": {"order_id": "123456789"},
            "object": "payment_method",
            "type": "card",
            "customer_account": None,
        },
        "previous_attributes": {"card": {"exp_month": 8, "exp_year": 2030}},
    },
    "livemode": False,
    "pending_webhooks": 1,
    "request": {"id": "req_SampleUpdate001", "idempotency_key": "8c1e5f6a-update-0001"},
    "type": "payment_method.updated",
}


def event(
    event_id: str, payment_method: str, created: int, *, exp_month: int = 12, exp_year: int = 2031
) -> dict[str, Any]:
    body = copy.deepcopy(_TEMPLATE)
    body.update(id=event_id, created=created)
    body["data"]["object"]["id"] = payment_method
    body["data"]["object"]["card"].update(exp_month=exp_month, exp_year=exp_year)
    return body


def signed(body: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> Request:
    """The body and headers Stripe would send: `Stripe-Signature: t=<ts>,v1=<HMAC-SHA256(secret, "ts.body")>`."""
    payload = json.dumps(body).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, {"Stripe-Signature": f"t={ts},v1={digest}", "Content-Type": "application/json"}


@dataclass
class LoadResult:
    sent: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, of answered requests
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: int = 0  # answers whose body says the event is queued (or the trivial route's "ok")
    errors: int = 0  # requests that got no answer (connection errors), counted once each
    reconnects: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
        return ordered[index]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies) if self.latencies else float("nan")

    def merge(self, other: LoadResult) -> LoadResult:
        merged = LoadResult(self.sent + other.sent, self.seconds + other.seconds)
        merged.latencies = self.latencies + other.latencies
        merged.statuses = self.statuses + other.statuses
        merged.accepted = self.accepted + other.accepted
        merged.errors = self.errors + other.errors
        merged.reconnects = self.reconnects + other.reconnects
        return merged


def run_load(
    port: int,
    path: str,
    requests: list[Request],
    *,
    concurrency: int,
    accept_marker: bytes = b'"queued"',
    timeout: float = 30.0,
) -> LoadResult:
    """Send every request once over `concurrency` keep-alive connections, as fast as answers come back."""
    next_index = itertools.count()
    lock = threading.Lock()
    result = LoadResult(sent=len(requests), seconds=0.0)
    start_gate = threading.Barrier(concurrency + 1)

    def worker() -> None:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        accepted = errors = reconnects = 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        start_gate.wait()
        while True:
            with lock:
                index = next(next_index)
            if index >= len(requests):
                break
            body, headers = requests[index]
            for attempt in (1, 2):
                began = time.perf_counter()
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException):
                    connection.close()  # the server closed a keep-alive connection: one new one, one more try
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                    reconnects += 1
                    if attempt == 2:
                        errors += 1
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[response.status] += 1
                if response.status == 200 and accept_marker in answer:
                    accepted += 1
                break
        connection.close()
        with lock:
            result.latencies.extend(latencies)
            result.statuses.update(statuses)
            result.accepted += accepted
            result.errors += errors
            result.reconnects += reconnects

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout=900)
    result.seconds = time.perf_counter() - began
    return result
