"""A Stripe-like provider: plans `payment_method.*` events per payment method, signs and sends them.

Like Stripe it delivers at least once and in no particular order: a share of the events is delivered two or more
times, every delivery is shuffled, and any answer that is not 2xx (or no answer at all) is re-sent after a short
backoff with a fresh signature, until a bounded retry budget runs out. Every answer is recorded.
"""

from __future__ import annotations

import json
import queue
import random
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from service.domain import ordering_key
from tests.support import sign

ACTIVE_TYPES = ("payment_method.attached", "payment_method.updated", "payment_method.automatically_updated")
ACTIVE_WEIGHTS = (1, 2, 2)
DETACHED = "payment_method.detached"
# Seconds between consecutive events of one card; 0 makes same-second ties (a quarter of the steps).
CREATED_STEPS = (0, 0, 1, 1, 2, 3, 7, 60)
_ID_CHARS = string.ascii_letters + string.digits


@dataclass(frozen=True)
class PlannedEvent:
    event_id: str
    token: str  # the payment method id (Commerce Layer's payment_source_token)
    event_type: str
    created: int
    customer: str | None
    card: dict[str, Any]
    body: bytes

    @property
    def status(self) -> str:
        return "detached" if self.event_type == DETACHED else "active"

    @property
    def key(self) -> tuple[int, int, str]:
        return ordering_key(self.created, self.status, self.event_id)

    @property
    def content(self) -> tuple[str, str, str | None]:
        """What a write of this event changes (bookkeeping fields aside): two events with the same content make
        the later one `unchanged`."""
        return (self.status, json.dumps(self.card, sort_keys=True), self.customer if self.status == "active" else None)


def _new_card(rng: random.Random) -> dict[str, Any]:
    return {
        "brand": rng.choice(("visa", "mastercard", "amex")),
        "last4": f"{rng.randrange(10_000):04d}",
        "exp_month": rng.randint(1, 12),
        "exp_year": rng.randint(2027, 2036),
        "funding": rng.choice(("credit", "debit")),
        "country": rng.choice(("US", "GB", "DE", "FR", "IT")),
    }


def event_id(rng: random.Random) -> str:
    # Random, so that the id order of same-second events has nothing to do with the order they were planned in.
    return "evt_chaos" + "".join(rng.choice(_ID_CHARS) for _ in range(16))


def stripe_event(
    *, eid: str, event_type: str, created: int, token: str, customer: str | None, card: dict[str, Any]
) -> dict[str, Any]:
    """A Stripe event envelope as the webhook receives it (billing details included, as Stripe sends them)."""
    return {
        "id": eid,
        "object": "event",
        "api_version": "2026-07-29.dahlia",
        "created": created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {
            "object": {
                "id": token,
                "object": "payment_method",
                "type": "card",
                "created": created - 86_400,
                "customer": customer,
                "livemode": False,
                "metadata": {},
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {
                        "city": "Chaos City",
                        "country": "US",
                        "line1": "1 Chaos Street",
                        "postal_code": "94102",
                    },
                    "email": "chaos@example.com",
                    "name": None,
                    "phone": None,
                },
                "card": {**card, "display_brand": card["brand"], "fingerprint": "chaosFingerprint", "wallet": None},
            }
        },
    }


def plan_events(
    rng: random.Random,
    tokens: list[str],
    customers: dict[str, list[str]],
    total: int,
    *,
    base_created: int,
    detach_share: float = 0.25,
    repeat_share: float = 0.15,
) -> list[PlannedEvent]:
    """`total` events spread over `tokens` (at least one each): a random sequence of attach/update/automatic
    update events with changing cards and customers, same-second ties, repeats of the previous content (which
    the service must find `unchanged`), and for some cards a final detach (sometimes in the same second as the
    update before it)."""
    assert total >= len(tokens)
    counts = Counter(tokens)
    for _ in range(total - len(tokens)):
        counts[rng.choice(tokens)] += 1
    events: list[PlannedEvent] = []
    for token in tokens:
        created = base_created + rng.randrange(3600)
        card = _new_card(rng)
        customer = rng.choice(customers[token])
        n = counts[token]
        detach_last = n > 1 and rng.random() < detach_share
        for index in range(n):
            if index:
                created += rng.choice(CREATED_STEPS)
            if detach_last and index == n - 1:
                kind = DETACHED
            elif index and rng.random() < repeat_share:
                kind = rng.choices(ACTIVE_TYPES[1:], k=1)[0]  # same card, same customer: nothing to write
            else:
                kind = rng.choices(ACTIVE_TYPES, weights=ACTIVE_WEIGHTS, k=1)[0]
                if kind == "payment_method.attached":
                    card, customer = _new_card(rng), rng.choice(customers[token])
                elif kind == "payment_method.automatically_updated":
                    card = {
                        **card,
                        "exp_year": card["exp_year"] + rng.randint(1, 4),
                        "last4": f"{rng.randrange(10_000):04d}",
                    }
                else:
                    card = {**card, "exp_month": rng.randint(1, 12), "exp_year": rng.randint(2027, 2036)}
            eid = event_id(rng)
            event_customer = None if kind == DETACHED else customer
            body = stripe_event(
                eid=eid, event_type=kind, created=created, token=token, customer=event_customer, card=card
            )
            events.append(
                PlannedEvent(
                    event_id=eid,
                    token=token,
                    event_type=kind,
                    created=created,
                    customer=event_customer,
                    card=dict(card),
                    body=json.dumps(body, separators=(",", ":")).encode(),
                )
            )
    return events


def plan_deliveries(rng: random.Random, events: list[PlannedEvent], *, duplicate_share: float) -> list[PlannedEvent]:
    """Every event once, `duplicate_share` of them two or more times, all shuffled."""
    deliveries: list[PlannedEvent] = []
    for event in events:
        copies = 1
        if rng.random() < duplicate_share:
            copies = 2 if rng.random() < 0.7 else rng.randint(3, 4)
        deliveries.extend([event] * copies)
    rng.shuffle(deliveries)
    return deliveries


@dataclass
class DeliveryStats:
    """What the provider saw, over all deliveries."""

    deliveries: int = 0
    posts: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # "200 queued", "503", "connection error", ...
    acked: dict[str, float] = field(default_factory=dict)  # event id -> first 2xx (time.time())
    ack_count: Counter[str] = field(default_factory=Counter)  # event id -> 2xx answers
    gave_up: list[str] = field(default_factory=list)  # deliveries never answered 2xx within the budget

    @property
    def answered_2xx(self) -> int:
        return sum(self.ack_count.values())

    @property
    def non_2xx(self) -> int:
        return self.posts - self.answered_2xx

    def answered(self, body_status: str) -> int:
        return sum(count for answer, count in self.answers.items() if answer == f"200 {body_status}")


class Provider:
    """Sends deliveries with a few threads; `start()` returns at once, `join()` waits (bounded)."""

    def __init__(
        self,
        webhook_url: str,
        *,
        threads: int = 4,
        pace: float | None = None,
        retry_budget_seconds: float = 240,
        seed: int = 0,
    ) -> None:
        self.webhook_url = webhook_url
        self.threads = threads
        self.pace = pace  # deliveries per second over all threads; None: as fast as answers come
        self.retry_budget_seconds = retry_budget_seconds
        self.stats = DeliveryStats()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[PlannedEvent] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._completed = 0
        self._started_at = 0.0
        self._issued = 0
        self._rng = random.Random(seed)
        self.finished_at: float | None = None

    @property
    def completed(self) -> int:
        """Deliveries finished (answered 2xx, or given up)."""
        with self._lock:
            return self._completed

    def done(self) -> bool:
        return bool(self._workers) and not any(worker.is_alive() for worker in self._workers)

    def start(self, deliveries: list[PlannedEvent]) -> Provider:
        for delivery in deliveries:
            self._queue.put(delivery)
        self.stats.deliveries = len(deliveries)
        self._started_at = time.monotonic()
        self._workers = [
            threading.Thread(target=self._run, name=f"provider-{n}", daemon=True) for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.1))
        if any(worker.is_alive() for worker in self._workers):
            raise AssertionError(f"the provider did not finish within {timeout} s")
        if self.finished_at is None:
            self.finished_at = time.monotonic()

    def _wait_turn(self) -> None:
        if not self.pace:
            return
        with self._lock:
            due = self._started_at + self._issued / self.pace
            self._issued += 1
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _run(self) -> None:
        with requests.Session() as session:
            while True:
                try:
                    delivery = self._queue.get_nowait()
                except queue.Empty:
                    return
                self._wait_turn()
                self._deliver(session, delivery)
                with self._lock:
                    self._completed += 1

    def _deliver(self, session: requests.Session, event: PlannedEvent) -> None:
        deadline = time.monotonic() + self.retry_budget_seconds
        attempt = 0
        while True:
            attempt += 1
            headers = {"Stripe-Signature": sign(event.body), "Content-Type": "application/json"}
            answer, ok = "", False
            try:
                response = session.post(self.webhook_url, data=event.body, headers=headers, timeout=(5, 30))
                ok = 200 <= response.status_code < 300
                answer = str(response.status_code)
                if ok:
                    try:
                        answer += " " + str(response.json().get("status"))
                    except ValueError:
                        answer += " (not json)"
            except requests.RequestException as exc:
                answer = f"connection error ({type(exc).__name__})"
            with self._lock:
                self.stats.posts += 1
                self.stats.answers[answer] += 1
                if ok:
                    self.stats.ack_count[event.event_id] += 1
                    self.stats.acked.setdefault(event.event_id, time.time())
                elif time.monotonic() >= deadline:
                    self.stats.gave_up.append(event.event_id)
            if ok or time.monotonic() >= deadline:
                return
            # Stripe backs off for hours; here a short exponential backoff with jitter keeps the runs short.
            with self._lock:
                jitter = self._rng.uniform(0.5, 1.0)
            time.sleep(min(2.0, 0.2 * 2 ** min(attempt - 1, 4)) * jitter)
