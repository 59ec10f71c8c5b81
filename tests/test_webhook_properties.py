"""Property-based tests of `POST /webhooks/stripe` and of the worker's handling of whatever the endpoint queues.

The web side runs the real app (Flask test client) with a real Redis and the real Celery publisher, so "queued"
means a message in the Redis list the workers consume. The worker side rebuilds each queued message into a
`PaymentMethodEvent` and runs `service.sync.sync_payment_method` through the real `CommerceLayerClient` against the
in-process Commerce Layer simulator, whose wallet is seeded with the payment-method ids the strategies use.

The contract under test (from the issue):
- the endpoint answers 2xx only as `{"status": "queued"|"duplicate"|"ignored", "event_id": "evt_..."}`; 400 with a
  JSON error for a missing/invalid signature, a stale timestamp or a body that is not a Stripe event (and then
  records and enqueues nothing); 413 over the body limit; 503 only when Redis is down; never another 5xx;
- a validly signed but odd event never crashes the worker: it ends applied / duplicate / stale / unchanged /
  unmatched, or with a PERMANENT `CommerceLayerError` (dead-lettered with its reason), and every PATCH we send is
  one Commerce Layer accepts.

The tests at the end pin bugs these properties found (trailing newlines in ids, lone surrogates, a decoy
timestamp, chunked bodies over the limit), fixed since.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import io
import json
import re
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, currently_in_test_context, example, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from service import create_app
from service.config import CommerceLayerSettings, Secret, WebSettings, WorkerSettings
from service.domain import Outcome, PaymentMethodEvent
from service.errors import CommerceLayerError, ErrorKind
from service.eventlog import event_key
from service.providers.stripe import HANDLED_TYPES
from service.ratelimit import Window
from service.snapshots import Snapshots
from service.sync import SYNC_KEY, SyncResult, sync_payment_method
from simulator import start
from simulator.server import RunningSimulator
from tasks.celery_app import QUEUE
from tasks.runtime import WorkerRuntime, build_runtime
from tests.support import FIXTURES, OTHER_SECRET, WEBHOOK_SECRET, free_port, sign

# -- settings ---------------------------------------------------------------------------------------------------

_HEALTH = [
    HealthCheck.function_scoped_fixture,  # the app, Redis and simulator are built once per test; state is reset
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=_HEALTH)
FUZZ_WITH_WORKER = settings(FUZZ, max_examples=100)

SMALL_LIMIT = 4096  # max_body_bytes of the app used for the size properties
TOLERANCE = 300  # WebSettings.stripe_webhook_tolerance (the default)

# -- the data the strategies start from -------------------------------------------------------------------------

SAMPLES: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text()) for path in sorted((FIXTURES / "stripe").glob("*.json"))
}
HANDLED = sorted(HANDLED_TYPES)
# Payment-method ids the simulator's wallet holds (the second one twice: two wallet entries, one card), and one
# that no wallet entry carries.
WALLET_TOKENS = ("pm_1Pgc75B7WZ01zgkWlHVgdEGJ", "card_1PgaftB7WZ01zgkWm3waTcFp", "src_PropWalletTwoEntries")
STRANGER_TOKEN = "pm_PropNotInAnyWallet"
TOKENS = (*WALLET_TOKENS, STRANGER_TOKEN)

_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]+")
_PAYMENT_METHOD_ID = re.compile(r"(pm|card|src)_[A-Za-z0-9_]+")
_BOOKKEEPING = {"event_id", "event_type", "event_created", "synced_at"}
SETTLED = {Outcome.APPLIED, Outcome.DUPLICATE, Outcome.STALE, Outcome.UNCHANGED, Outcome.UNMATCHED}
MESSAGE_KEYS = {
    "provider",
    "event_id",
    "event_type",
    "event_created",
    "payment_source_token",
    "customer_token",
    "status",
    "card",
}

# -- strategies: values -----------------------------------------------------------------------------------------

odd_strings = st.one_of(
    st.text(max_size=24),
    # No lone surrogates here: they are the known bug pinned at the end of the file.
    st.sampled_from(["", " ", "\x00", "\x1b[2J", "\u202e\u200b", "🙂" * 8, "null", "0", "evt_", "pm_", "cus_"]),
    st.integers(200, 6000).map(lambda n: "x" * n),
)
odd_numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12, 10**30, -(10**30), 10**400]),
    st.floats(),  # NaN and ±Infinity included: json.dumps writes them as NaN / Infinity literals
)
odd_scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_strings)
odd_values = st.recursive(
    odd_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

valid_event_ids = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=30).map(
    lambda tail: f"evt_{tail}"
)
event_ids = st.one_of(
    valid_event_ids,
    st.sampled_from([250, 251, 252, 253, 400, 5000]).map(lambda n: "evt_" + "A" * n),  # 255 characters at most
    st.sampled_from(["evt_", "EVT_abc", "evt-abc", "evt_a-b", "evt_a b", "evt_é", "evt_abc\x00", " evt_abc", "evt"]),
    odd_values,
)
event_types = st.one_of(
    st.sampled_from(HANDLED),
    st.sampled_from(
        [
            "payment_method.created",
            "setup_intent.succeeded",
            "customer.source.updated",
            "v1.payment_method.updated",
            "PAYMENT_METHOD.UPDATED",
            "payment_method.updated ",
            "payment_method.*",
            "x" * 255,
            "x" * 256,
            "",
        ]
    ),
    odd_values,
)
event_objects = st.one_of(
    st.sampled_from(["event", "v2.core.event", "Event", "events", "payment_method", ""]), odd_values
)
created_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([True, False, None, 1785312060.0, "1785312060", [1785312060]]),
    st.integers(10**12 - 3, 10**12 + 3),
    st.integers(1_785_312_000, 1_785_312_003),
    odd_values,
)
payment_method_ids = st.one_of(
    st.sampled_from(TOKENS),
    st.sampled_from(
        ["pm_", "ba_123", "pm_a-b", "pm_é", "PM_abc", "pm_abc def", "card_" + "A" * 250, "src_" + "A" * 251]
    ),
    st.sampled_from([251, 252, 253, 254, 400, 5000]).map(lambda n: "pm_" + "B" * n),  # 255 characters at most
    odd_values,
)
customers = st.one_of(st.sampled_from(["cus_QXg1o8vcGmoR32", "cus_PropOther", "", None]), odd_values)

# Replacement values by (container path, key); anything else gets `odd_values`.
FIELD_VALUES: dict[tuple[tuple[str, ...], str], st.SearchStrategy[Any]] = {
    ((), "id"): event_ids,
    ((), "type"): event_types,
    ((), "object"): event_objects,
    ((), "created"): created_values,
    (("data", "object"), "id"): payment_method_ids,
    (("data", "object"), "customer"): customers,
    (("data", "object"), "object"): st.one_of(st.sampled_from(["payment_method", "card", "source"]), odd_values),
    (("data", "object", "card"), "brand"): st.one_of(
        st.sampled_from(["visa", "x" * 32, "x" * 33, "x" * 100]), st.text(min_size=31, max_size=34), odd_values
    ),
    (("data", "object", "card"), "last4"): st.one_of(st.sampled_from(["4242", "424", "42424", "४२४२"]), odd_values),
    (("data", "object", "card"), "exp_month"): st.one_of(
        st.sampled_from([0, 1, 12, 13, True]), st.integers(), odd_values
    ),
    (("data", "object", "card"), "exp_year"): st.one_of(st.sampled_from([1899, 1900, 9999, 10000, 2031.0]), odd_values),
    (("data", "object", "card"), "country"): st.one_of(st.sampled_from(["US", "GB", "USA", "", "é"]), odd_values),
    (("data", "object", "card"), "funding"): st.one_of(
        st.sampled_from(["credit", "debit", "prepaid", "f" * 32, "f" * 33]), odd_values
    ),
}
FIELDS: dict[tuple[str, ...], tuple[str, ...]] = {
    (): ("id", "object", "type", "created", "data", "livemode", "api_version", "request"),
    ("data",): ("object", "previous_attributes"),
    ("data", "object"): ("id", "customer", "object", "type", "card", "metadata", "billing_details"),
    ("data", "object", "card"): ("brand", "last4", "exp_month", "exp_year", "funding", "country", "checks"),
}


def _container(event: Any, path: tuple[str, ...]) -> dict[str, Any] | None:
    node = event
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


@st.composite
def mutated_events(draw: st.DrawFn, max_mutations: int = 4) -> dict[str, Any]:
    """A real sample event with a fresh id, a payment-method id from `TOKENS`, a created time from a narrow range
    (so events of one card tie and overtake each other), then up to `max_mutations` mutations: a field deleted,
    replaced by an odd or borderline value, or an extra field added, anywhere from the envelope down to the card."""
    event = copy.deepcopy(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)), label="sample")])
    event["id"] = draw(valid_event_ids, label="id")
    if event.get("object") == "event":
        event["created"] = draw(st.integers(1_785_312_000, 1_785_312_003), label="created")
    payment_method = _container(event, ("data", "object"))
    if payment_method is not None:
        payment_method["id"] = draw(st.sampled_from(TOKENS), label="payment method")
    for _ in range(draw(st.integers(0, max_mutations), label="mutations")):
        path = draw(st.sampled_from(sorted(FIELDS)))
        container = _container(event, path)
        if container is None:
            continue
        action = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        key = draw(st.sampled_from(FIELDS[path])) if action != "add" else draw(st.text(max_size=12))
        if action == "delete":
            container.pop(key, None)
        else:
            container[key] = draw(FIELD_VALUES.get((path, key), odd_values))
    return event


def encode(event: Any, *, ascii_only: bool = True) -> bytes:
    """JSON as a provider might write it; lone surrogates force the \\u escape (they have no UTF-8 form)."""
    if not ascii_only:
        try:
            return json.dumps(event, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return json.dumps(event).encode()


def raw_signature(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature over the raw bytes (for bodies that are not UTF-8, which `sign` cannot sign)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def valid_signature(body: bytes) -> str:
    try:
        return sign(body)
    except UnicodeDecodeError:
        return raw_signature(body)


CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=walletsync",
]


def report(text: str, *, event: str | None = None) -> None:
    """A note for a failing example (and a statistics label), when run by hypothesis; the helpers below are
    also used by plain tests."""
    if currently_in_test_context():
        note(text)
        if event is not None:
            hypothesis_event(event)


# -- the expected answer (the contract, written down independently of the adapter) -----------------------------


INVALID, IGNORED, ACCEPTED = frozenset({"invalid"}), frozenset({"ignored"}), frozenset({"accepted"})
_STRIPE_TYPE = re.compile(r"[A-Za-z0-9_.]+")


def expected_answers(body: bytes) -> frozenset[str]:
    """What a validly signed body may get: "invalid" (400), "ignored" (200 ignored) or "accepted" (200 queued, or
    duplicate when already queued), per the contract: a Stripe event is a JSON object with `object` "event" (or a
    thin "v2.core.event"), an `evt_` id of at most 255 characters and a non-empty type of at most 255; a handled
    type also needs a positive integer unix `created` and a `data.object` whose id is a pm_/card_/src_ id. A type
    no Stripe event could have (odd characters) may be ignored or refused."""
    try:
        body.decode("utf-8")
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return INVALID
    if not isinstance(envelope, dict) or envelope.get("object") not in ("event", "v2.core.event"):
        return INVALID
    event_id, event_type = envelope.get("id"), envelope.get("type")
    if not isinstance(event_id, str) or len(event_id) > 255 or not _EVENT_ID.fullmatch(event_id):
        return INVALID
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 255:
        return INVALID
    if envelope["object"] != "event" or event_type not in HANDLED_TYPES:
        return IGNORED if _STRIPE_TYPE.fullmatch(event_type) else IGNORED | INVALID
    created = envelope.get("created")
    if type(created) is not int or not 0 < created < 10**12:
        return INVALID
    data = envelope.get("data")
    payment_method = data.get("object") if isinstance(data, dict) else None
    token = payment_method.get("id") if isinstance(payment_method, dict) else None
    if not isinstance(token, str) or len(token) > 255 or not _PAYMENT_METHOD_ID.fullmatch(token):
        return INVALID
    return ACCEPTED


# -- harnesses --------------------------------------------------------------------------------------------------


def web_settings(redis_url: str, **overrides: Any) -> WebSettings:
    return WebSettings(redis_url=redis_url, stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),), **overrides)


@dataclass
class Web:
    """The real app on a real Redis with the real Celery publisher; `reset` forgets everything between examples
    (but keeps kombu's routing keys, which the publisher declares once)."""

    client: FlaskClient
    redis: redis.Redis
    queued_ids: set[str] = field(default_factory=set)
    ignored_ids: set[str] = field(default_factory=set)

    def reset(self) -> None:
        keys = list(self.redis.scan_iter("walletsync*", count=1000))
        if keys:
            self.redis.delete(*keys)
        self.queued_ids.clear()
        self.ignored_ids.clear()

    def post(self, body: bytes, headers: dict[str, str] | list[tuple[str, str]], **kwargs: Any) -> Any:
        return self.client.post("/webhooks/stripe", data=body, headers=headers, **kwargs)

    def footprint(self) -> list[bytes]:
        """Every key the service writes (the queue itself is the `walletsync` list)."""
        return sorted(self.redis.scan_iter("walletsync*", count=1000))

    def queue_length(self) -> int:
        return int(self.redis.llen(QUEUE))

    def queued_messages(self) -> list[dict[str, Any]]:
        """The sync messages on the queue, oldest first (kombu LPUSHes, workers BRPOP)."""
        messages = []
        for raw in reversed(self.redis.lrange(QUEUE, 0, -1)):
            envelope = json.loads(raw)
            assert envelope["headers"]["task"] == "walletsync.sync_payment_method"
            args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
            messages.append(args[0])
        return messages

    def post_signed(self, body: bytes, content_type: str | None = "application/json") -> str:
        """POST a validly signed body and check the answer against `expected_answers`; returns what happened:
        "invalid", "ignored", "duplicate" or "queued"."""
        expected = expected_answers(body)
        headers = {"Stripe-Signature": valid_signature(body)}
        if content_type is not None:
            headers["Content-Type"] = content_type
        before, queue_before = self.footprint(), self.queue_length()
        response = self.post(body, headers)
        payload = response.get_json(silent=True)
        label = "/".join(sorted(expected))
        report(f"answer {response.status_code} {payload!r} (expected {label})", event=f"answer: {label}")
        assert response.status_code in (200, 400), (response.status_code, payload)
        assert response.is_json
        assert isinstance(payload, dict)
        if response.status_code == 400:
            assert "invalid" in expected, payload
            assert payload["error"] == "invalid_webhook"
            assert isinstance(payload["detail"], str)
            assert payload["detail"]
            assert self.footprint() == before, "a refused event left something in Redis"
            return "invalid"
        assert "invalid" not in expected or len(expected) > 1, payload
        envelope = json.loads(body)
        assert set(payload) == {"status", "event_id"}
        assert payload["event_id"] == envelope["id"]
        assert _EVENT_ID.fullmatch(payload["event_id"])
        assert len(payload["event_id"]) <= 255
        if "ignored" in expected:
            assert payload["status"] == "ignored"
            assert self.queue_length() == queue_before
            assert self.redis.hget(event_key("stripe", envelope["id"]), "status") == b"ignored"
            self.ignored_ids.add(envelope["id"])
            return "ignored"
        if envelope["id"] in self.queued_ids:
            assert payload["status"] == "duplicate"
            assert self.queue_length() == queue_before
            return "duplicate"
        assert payload["status"] == "queued"
        assert self.queue_length() == queue_before + 1
        # The web records `queued` only where no status is recorded yet (a fast worker's outcome wins); an id first
        # delivered as an unknown type keeps `ignored` until its task ends (Stripe never changes an event's type).
        recorded = self.redis.hget(event_key("stripe", envelope["id"]), "status")
        assert recorded == b"queued" or (recorded == b"ignored" and envelope["id"] in self.ignored_ids), recorded
        self.queued_ids.add(envelope["id"])
        check_message(self.queued_messages()[-1], envelope)
        return "queued"


def allowed_card(payment_method: dict[str, Any]) -> dict[str, list[Any]] | None:
    """The values each card fact of a message may have: the PaymentMethod's `card` (or the legacy card object
    itself), each fact kept when it has the right type and is within bounds, else None. A text fact that is not
    printable (control characters, lone surrogates) may be kept or dropped. No card at all: None."""
    card = payment_method.get("card")
    if not isinstance(card, dict):
        card = payment_method if payment_method.get("object") == "card" else None
    if card is None:
        return None

    def text(name: str, longest: int, pattern: str = ".*") -> list[Any]:
        value = card.get(name)
        if not (isinstance(value, str) and 0 < len(value) <= longest and re.fullmatch(pattern, value, re.DOTALL)):
            return [None]
        return [value] if value.isprintable() else [value, None]

    def number(name: str, low: int, high: int) -> list[Any]:
        value = card.get(name)
        return [value if type(value) is int and low <= value <= high else None]

    return {
        "brand": text("brand", 32),
        "last4": text("last4", 4, "[0-9]{4}"),
        "exp_month": number("exp_month", 1, 12),
        "exp_year": number("exp_year", 1900, 9999),
        "funding": text("funding", 32),
        "country": text("country", 2),
    }


def allowed_customer(payment_method: dict[str, Any], *, detached: bool) -> list[Any]:
    """A detach names no customer; otherwise a non-empty string is kept, though one that is no plausible Stripe
    customer id (`cus_` and letters or digits, at most 255 characters) may be dropped."""
    customer = payment_method.get("customer")
    if detached or not isinstance(customer, str) or not customer:
        return [None]
    if len(customer) <= 255 and re.fullmatch(r"cus_[A-Za-z0-9]+", customer):
        return [customer]
    return [customer, None]


def check_message(message: dict[str, Any], envelope: dict[str, Any]) -> None:
    """The queued message is the event, normalized: identity as sent, card facts typed, nothing else."""
    payment_method = envelope["data"]["object"]
    detached = envelope["type"] == "payment_method.detached"
    assert set(message) == MESSAGE_KEYS
    assert message["provider"] == "stripe"
    assert message["event_id"] == envelope["id"]
    assert message["event_type"] == envelope["type"]
    assert message["event_created"] == envelope["created"]
    assert message["payment_source_token"] == payment_method["id"]
    assert message["status"] == ("detached" if detached else "active")
    assert message["customer_token"] in allowed_customer(payment_method, detached=detached)
    allowed = allowed_card(payment_method)
    if allowed is None:
        assert message["card"] is None
    else:
        assert set(message["card"]) == set(allowed)
        for fact, values in allowed.items():
            assert message["card"][fact] in values, (fact, message["card"][fact], values)
    assert "billing_details" not in json.dumps(message)


ATTACHED_CARD_ENTRY = {
    "provider": "stripe",
    "status": "active",
    "card": {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2030, "funding": "credit", "country": "US"},
}
NEWER_STORED = {"payment_sync": {**ATTACHED_CARD_ENTRY, "event_id": "evt_Newer", "event_created": 10**12 - 1}}
STORED_METADATA = st.sampled_from(
    [
        {},
        {"wallet_label": "Jenny's Visa"},
        {"payment_sync": "not an object", "wallet_label": "🙂"},
        {"payment_sync": {"event_created": True, "event_id": ["evt_x"]}},
        {"payment_sync": {"provider": "stripe", "status": "active", "event_id": "evt_Ancient", "event_created": 0}},
        {"payment_sync": None, "nested": {"keep": [1, 2.5, {"x": None}]}},
        # Written by an event newer than any the strategies make: every event is stale against it.
        NEWER_STORED,
        # Already showing the card of the attached sample: an event with that content changes nothing.
        {"payment_sync": {**ATTACHED_CARD_ENTRY, "event_id": "evt_Ancient", "event_created": 0}, "wallet_label": "x"},
    ]
)
# Each wallet token gets one entry (the last one two), each with its own stored metadata.
wallets = st.tuples(
    st.lists(STORED_METADATA, min_size=1, max_size=1),
    st.lists(STORED_METADATA, min_size=1, max_size=1),
    st.lists(STORED_METADATA, min_size=2, max_size=2),
).map(lambda entries: dict(zip(WALLET_TOKENS, entries, strict=True)))


@dataclass
class Worker:
    """The worker's logic (`service.sync`) through the real Commerce Layer client, against the simulator."""

    runtime: WorkerRuntime
    simulator: RunningSimulator

    def seed(self, wallet: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Reset the simulator and fill the wallet; returns {source id: (payment-method id, stored metadata)}."""
        self.simulator.reset()
        entries = [
            {"payment_source_token": token, "customer_token": "cus_QXg1o8vcGmoR32", "metadata": metadata}
            for token, metadatas in wallet.items()
            for metadata in metadatas
        ]
        answer = requests.post(f"{self.simulator.url}/_sim/sources", json=entries, timeout=5)
        assert answer.status_code == 201, answer.text
        return {
            resource["id"]: (entry["payment_source_token"], entry["metadata"])
            for resource, entry in zip(answer.json()["data"], entries, strict=True)
        }

    def settle(self, messages: list[dict[str, Any]], wallet: dict[str, list[dict[str, Any]]]) -> None:
        """Run every queued message through the sync, in queue order, and check how each one ends and what
        Commerce Layer was sent and ends up holding."""
        sources = self.seed(wallet)
        events = [PaymentMethodEvent.from_message(message) for message in messages]
        dead = []
        for event in events:
            result = self.run(event)
            if isinstance(result, CommerceLayerError):
                # The task dead-letters a PERMANENT error with its reason; anything else would loop or be lost.
                report(f"{event.event_id}: {result.kind} {result.reason}")
                assert result.kind is ErrorKind.PERMANENT, result.reason
                assert result.reason
                dead.append(event)
                continue
            report(
                f"{event.event_id} ({event.payment_source_token}): {result.outcome}", event=f"worker: {result.outcome}"
            )
            assert result.outcome in SETTLED
            in_wallet = event.payment_source_token in wallet
            assert (result.outcome is Outcome.UNMATCHED) == (not in_wallet), result
        self.check_requests(sources)
        if not dead:
            self.check_convergence(sources, events)

    def run(self, event: PaymentMethodEvent) -> SyncResult | CommerceLayerError:
        """What the task calls; any exception other than a Commerce Layer error propagates (and fails the test)."""
        try:
            return sync_payment_method(
                event,
                wallets=self.runtime.commercelayer,
                ordering=self.runtime.ordering,
                # Without burst settling: it only postpones a write (the task retries later), which a test that
                # runs each event to its end at once would see as a spurious exception.
                snapshots=Snapshots(self.runtime.redis),
            )
        except CommerceLayerError as error:
            return error

    def check_requests(self, sources: dict[str, tuple[str, dict[str, Any]]]) -> None:
        log = requests.get(f"{self.simulator.url}/_sim/requests", timeout=5).json()["requests"]
        refused = [(entry["route"], entry["status"], entry["body"]) for entry in log if entry["status"] != 200]
        assert refused == [], "Commerce Layer refused requests we sent"
        for entry in log:
            if entry["method"] != "PATCH":
                continue
            source_id = entry["path"].rsplit("/", 1)[1]
            _token, stored = sources[source_id]
            assert stored != NEWER_STORED, "an entry written by a newer event was overwritten"
            attributes = entry["body"]["data"]["attributes"]
            assert set(attributes) <= {"metadata", "customer_token"}
            metadata = attributes["metadata"]
            for key, value in stored.items():
                if key != SYNC_KEY:
                    assert metadata[key] == value, f"metadata key {key!r} that is not ours was changed"
            assert metadata[SYNC_KEY]["provider"] == "stripe"

    def check_convergence(
        self, sources: dict[str, tuple[str, dict[str, Any]]], events: list[PaymentMethodEvent]
    ) -> None:
        """Whatever the order and the oddities, each wallet entry ends up showing the newest event of its card."""
        for source_id, (token, stored) in sources.items():
            mine = [event for event in events if event.payment_source_token == token]
            if not mine:
                continue
            resource = requests.get(f"{self.simulator.url}/_sim/sources/{source_id}", timeout=5).json()["data"]
            if stored == NEWER_STORED:
                assert resource["attributes"]["metadata"] == NEWER_STORED
                assert self.runtime.ordering.watermark(source_id) is None
                continue
            newest = max(mine, key=lambda event: event.order_key)
            assert self.runtime.ordering.watermark(source_id) == newest.order_key
            entry = resource["attributes"]["metadata"][SYNC_KEY]
            wanted: dict[str, Any] = {"provider": "stripe", "status": newest.status}
            if newest.card is not None:
                wanted["card"] = newest.card.as_metadata()
            assert {k: v for k, v in entry.items() if k not in _BOOKKEEPING} == wanted
            if newest.status == "active" and newest.customer_token:
                assert resource["attributes"]["customer_token"] == newest.customer_token


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def commerce_layer() -> Iterator[RunningSimulator]:
    simulator = start(port=0)
    yield simulator
    simulator.stop()


@pytest.fixture
def web(redis_url: str, redis_client: redis.Redis) -> Web:
    return Web(create_app(web_settings(redis_url), configure_logs=False).test_client(), redis_client)


@pytest.fixture
def small_web(redis_url: str, redis_client: redis.Redis) -> Web:
    app = create_app(web_settings(redis_url, max_body_bytes=SMALL_LIMIT), configure_logs=False)
    return Web(app.test_client(), redis_client)


@pytest.fixture
def worker(redis_url: str, commerce_layer: RunningSimulator) -> Iterator[Worker]:
    runtime = build_runtime(
        WorkerSettings(
            redis_url=redis_url,
            commercelayer=CommerceLayerSettings(
                base_url=commerce_layer.url,
                client_id="sim-client-id",
                client_secret=Secret("sim-client-secret"),
                auth_url=f"{commerce_layer.url}/oauth/token",
                read_timeout=5,
            ),
            rate_limits=(Window(1_000_000, 1),),  # the budget is not under test here
        )
    )
    yield Worker(runtime, commerce_layer)
    runtime.redis.close()


# -- strategies: requests without a valid signature -------------------------------------------------------------

header_text = st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]), max_size=80)
bodies = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
    mutated_events().map(encode),
    st.sampled_from(sorted(SAMPLES)).map(lambda name: encode(SAMPLES[name])),
)


@st.composite
def bad_signature_headers(draw: st.DrawFn, body: bytes) -> list[tuple[str, str]]:
    """Stripe-Signature headers that cannot be valid for `body` now: absent, empty, garbage, huge, many commas,
    `t=` overflow, v0/v1 mixes, non-ASCII, other secrets, other bodies, genuine signatures over stale timestamps,
    and the genuine fresh signature under the wrong scheme or key spelling. None signs `body` with our secret at
    a fresh timestamp under exactly `t=` and `v1=`."""
    now = int(time.time())
    stale = now - TOLERANCE - draw(st.integers(1, 10**6))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")

    def v1(header: str) -> str:
        return header.split("v1=")[1]

    genuine_now, genuine_stale = v1(sign(text, timestamp=now)), v1(sign(text, timestamp=stale))
    random_hex = draw(st.binary(min_size=32, max_size=32)).hex()
    well_formed_but_wrong = [
        f"t={now},v1={random_hex}",
        f"t={now},v1={v1(sign(text, OTHER_SECRET, timestamp=now))}",
        f"t={now},v1={v1(sign(text + ' ', timestamp=now))}",
        f"t={now},v1={genuine_stale}",  # genuine, but for another moment
        f"t={stale},v1={genuine_stale}",  # genuine and stale
        f"t={stale},v1={genuine_stale},v1={genuine_now}",
        f"t={now},v0={genuine_now}",  # the genuine fresh signature under other schemes or spellings
        f"t={now},V1={genuine_now}",
        f"t={now}, v1={genuine_now}",
        f"t ={now},v1={genuine_now}",
        f"T={now},v1={genuine_now}",
        f"t={now},v1={genuine_now.upper()}",
        f"t={now},v1={genuine_now[:-1]}",
        f"t={now},v1={genuine_now}0",
        f"t={now}.0,v1={genuine_now}",
        f"t={now},v1={genuine_now[:32]}é{genuine_now[33:]}",
        f"v1={genuine_now}",
        f"t={now}",
        f"t={now},v1=",
    ]
    values = st.one_of(
        st.integers(-(10**40), 10**40).map(str),
        st.sampled_from([str(stale), "9" * 5000, "1e9", "0x10", "١٢٣", ""]),
        st.just(random_hex),
        st.just(genuine_stale),
        header_text,
    )
    keys = st.one_of(st.sampled_from(["t", "v1", "v0", "v2", "T", "V1", " t", "t ", "", "t=t"]), header_text)
    items = st.one_of(st.builds(lambda key, value: f"{key}={value}", keys, values), header_text)
    value = draw(
        st.one_of(
            st.sampled_from(well_formed_but_wrong),
            st.sampled_from(well_formed_but_wrong),
            header_text,
            st.lists(items, max_size=8).flatmap(
                lambda parts: st.sampled_from([",", ", ", ",,", " , "]).map(lambda sep: sep.join(parts))
            ),
            st.sampled_from(
                [
                    "",
                    "," * 5000,
                    "t=" + "9" * 100_000,
                    ",".join(f"v1={'0' * 64}" for _ in range(2000)),
                    f"t={now}," + ",".join(f"v0={genuine_now}" for _ in range(500)),
                ]
            ),
        ),
        label="Stripe-Signature",
    )
    name = draw(st.sampled_from(["Stripe-Signature"] * 6 + ["stripe-signature", "STRIPE-SIGNATURE", "Stripe-Sig"]))
    headers = [] if draw(st.integers(0, 9)) == 9 else [(name, value)]  # absent one time in ten
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(st.sampled_from([c for c in CONTENT_TYPES if c]))))
    return headers


# -- properties: the endpoint -----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), body=bodies)
def test_a_request_without_a_valid_signature_is_a_json_400_and_leaves_nothing_behind(
    web: Web, data: st.DataObject, body: bytes
) -> None:
    web.reset()
    headers = data.draw(bad_signature_headers(body), label="headers")
    response = web.post(body, headers)
    payload = response.get_json(silent=True)
    assert response.status_code == 400, (response.status_code, payload)
    assert payload is not None
    assert payload["error"] == "invalid_webhook"
    assert payload["detail"]
    hypothesis_event(f"refused: {payload['detail']}")
    assert web.footprint() == [], "something was recorded or enqueued for an unauthenticated request"


@FUZZ
@given(
    event=mutated_events(),
    tamper=st.sampled_from(["append", "prepend", "flip", "truncate", "reencode"]),
    position=st.integers(min_value=0),
)
def test_a_genuine_signature_does_not_cover_a_changed_body(
    web: Web, event: dict[str, Any], tamper: str, position: int
) -> None:
    web.reset()
    body = encode(event)
    signature = sign(body)
    index = position % len(body)
    changed = {
        "append": body + b" ",
        "prepend": b" " + body,
        "flip": body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :],
        "truncate": body[:index],
        "reencode": json.dumps(json.loads(body), indent=1).encode(),
    }[tamper]
    if changed == body:
        changed = body + b"\n"
    response = web.post(changed, {"Stripe-Signature": signature, "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_json(silent=True)
    assert response.get_json()["error"] == "invalid_webhook"
    assert web.footprint() == []


@st.composite
def out_of_window_headers(draw: st.DrawFn, body: bytes) -> tuple[str, int]:
    """A genuine signature of `body` at a stale or future timestamp, mixed with decoy items under the exact key
    names Stripe parses (a fresh `t=`, v0/v1 signatures that do not match), in any order."""
    now = int(time.time())
    # Clear of the edges (tolerance 300 s, future skew 60 s) so that a slow CI machine cannot make it flaky.
    skew = draw(st.one_of(st.integers(TOLERANCE + 30, 10**8).map(lambda s: -s), st.integers(90, 10**8)))
    stamp = now + skew
    genuine = sign(body, timestamp=stamp)  # "t=<stamp>,v1=<sig>"
    decoys = draw(
        st.lists(
            st.sampled_from([f"t={now}", f"v1={'0' * 64}", f"v0={genuine.split('v1=')[1]}", "v1=", f"t={stamp}"]),
            max_size=3,
        )
    )
    items = draw(st.permutations([*genuine.split(","), *decoys]))
    return ",".join(items), skew


@FUZZ
@given(data=st.data(), event=mutated_events())
def test_a_genuine_signature_outside_the_time_window_is_refused_whatever_surrounds_it(
    web: Web, data: st.DataObject, event: dict[str, Any]
) -> None:
    web.reset()
    body = encode(event)
    header, skew = data.draw(out_of_window_headers(body), label="header")
    note(f"timestamp skew {skew} s")
    response = web.post(body, {"Stripe-Signature": header})
    assert response.status_code == 400, response.get_json(silent=True)
    assert web.footprint() == []


FOLLOW_UPS = ["redelivery", "same content, new id", "a second older", "a second newer", "detached same second"]


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[bytes, str | None]]:
    """What Stripe might send about a few cards in a burst: mutated events, then follow-ups of some of them
    (the same delivery again, the same content under a new id, one a second older or newer, a detach in the
    same second), each encoded with or without non-ASCII escapes and sent with some Content-Type."""
    events = draw(st.lists(mutated_events(), min_size=1, max_size=3), label="events")
    for kind in draw(st.lists(st.sampled_from(FOLLOW_UPS), max_size=3), label="follow-ups"):
        original = draw(st.sampled_from(events))
        if kind == "redelivery":
            events.append(original)
            continue
        follow_up = copy.deepcopy(original)
        follow_up["id"] = draw(valid_event_ids)
        created = follow_up.get("created")
        if type(created) is int:
            follow_up["created"] = created + {"a second older": -1, "a second newer": 1}.get(kind, 0)
        if kind == "detached same second":
            follow_up["type"] = "payment_method.detached"
        events.append(follow_up)
    return [
        (encode(event, ascii_only=draw(st.booleans())), draw(st.sampled_from(CONTENT_TYPES), label="content type"))
        for event in events
    ]


def sample_event(name: str, *, event_id: str, token: str, created: int = 1_785_312_000) -> dict[str, Any]:
    event = copy.deepcopy(SAMPLES[name])
    event.update(id=event_id, created=created)
    event["data"]["object"]["id"] = token
    return event


ALREADY_SHOWN = {"payment_sync": {**ATTACHED_CARD_ENTRY, "event_id": "evt_Ancient", "event_created": 0}}


@FUZZ_WITH_WORKER
@given(sent=deliveries(), wallet=wallets)
@example(  # the wallet already shows what the event says: nothing to write (unchanged)
    sent=[(encode(sample_event("payment_method.attached", event_id="evt_Same", token=WALLET_TOKENS[0])), None)],
    wallet={WALLET_TOKENS[0]: [ALREADY_SHOWN], WALLET_TOKENS[1]: [{}], WALLET_TOKENS[2]: [{}, ALREADY_SHOWN]},
)
@example(  # a burst for one card, out of order, with a same-second detach
    sent=[
        (encode(sample_event(name, event_id=f"evt_Burst{i}", token=WALLET_TOKENS[2], created=created)), None)
        for i, (name, created) in enumerate(
            [
                ("payment_method.updated", 1_785_312_002),
                ("payment_method.attached", 1_785_312_001),
                ("payment_method.detached", 1_785_312_002),
                ("payment_method.automatically_updated", 1_785_312_002),
            ]
        )
    ],
    wallet={WALLET_TOKENS[0]: [{}], WALLET_TOKENS[1]: [{}], WALLET_TOKENS[2]: [{"wallet_label": "a"}, ALREADY_SHOWN]},
)
def test_a_validly_signed_odd_event_gets_the_contracted_answer_and_the_worker_settles_it(
    web: Web, worker: Worker, sent: list[tuple[bytes, str | None]], wallet: dict[str, list[dict[str, Any]]]
) -> None:
    web.reset()
    for body, content_type in sent:
        web.post_signed(body, content_type)
    worker.settle(web.queued_messages(), wallet)


@st.composite
def events_with_odd_identity(draw: st.DrawFn) -> dict[str, Any]:
    """A handled sample event whose id, type, object, created and payment-method id are each, half the time,
    replaced by a borderline or odd value (the fields that decide between 400, ignored and queued)."""
    event = sample_event(
        draw(st.sampled_from(HANDLED)), event_id=draw(valid_event_ids), token=draw(st.sampled_from(TOKENS))
    )
    for key, values in (
        ("id", event_ids),
        ("type", event_types),
        ("object", event_objects),
        ("created", created_values),
    ):
        if draw(st.booleans()):
            event[key] = draw(values, label=key)
    if draw(st.booleans()):
        event["data"]["object"]["id"] = draw(payment_method_ids, label="payment method id")
    return event


@FUZZ
@given(event=events_with_odd_identity())
def test_an_event_is_queued_exactly_when_its_id_type_created_and_payment_method_are_well_formed(
    web: Web, event: dict[str, Any]
) -> None:
    web.reset()
    web.post_signed(encode(event))


card_values = st.fixed_dictionaries(
    {},
    optional={
        name: FIELD_VALUES[(("data", "object", "card"), name)]
        for name in ("brand", "last4", "exp_month", "exp_year", "funding", "country")
    },
)


@FUZZ
@given(
    name=st.sampled_from(HANDLED),
    card=st.one_of(card_values, odd_values),
    legacy=st.booleans(),
    customer=customers,
    wallet=wallets,
)
def test_only_typed_and_bounded_card_facts_reach_the_queue_and_commerce_layer_takes_them(
    web: Web,
    worker: Worker,
    name: str,
    card: Any,
    legacy: bool,
    customer: Any,
    wallet: dict[str, list[dict[str, Any]]],
) -> None:
    web.reset()
    event = sample_event(name, event_id="evt_Card", token=WALLET_TOKENS[0])
    payment_method = event["data"]["object"]
    payment_method["customer"] = customer
    if legacy and isinstance(card, dict):  # a legacy card_ object is the card itself
        del payment_method["card"]
        payment_method.update(card, object="card")
    else:
        payment_method["card"] = card
    assert web.post_signed(encode(event)) == "queued"
    worker.settle(web.queued_messages(), wallet)


# -- odd JSON encodings -----------------------------------------------------------------------------------------


def _with_raw_field(body: bytes, raw: bytes) -> bytes:
    """`body` (a JSON object) with one more member whose value is written verbatim."""
    return b'{"walletsync_extra": ' + raw + b", " + body.lstrip()[1:]


def _duplicate_member(body: bytes, key: str, value: Any) -> bytes:
    """A second `key` member, before or after the real one (Python's json keeps the last)."""
    return b"{" + json.dumps(key).encode() + b": " + json.dumps(value).encode() + b", " + body.lstrip()[1:]


ENCODINGS: dict[str, Any] = {
    "plain": lambda body: body,
    "utf-8 bom": lambda body: b"\xef\xbb\xbf" + body,
    "utf-16-le": lambda body: body.decode().encode("utf-16-le"),
    "utf-16 with bom": lambda body: body.decode().encode("utf-16"),
    "utf-32-be": lambda body: body.decode().encode("utf-32-be"),
    "latin-1": lambda body: body.decode().encode("latin-1", "replace"),
    "pretty": lambda body: json.dumps(json.loads(body), indent=4).encode(),
    "whitespace": lambda body: b" \t\r\n" + body + b"\n\n ",
    "trailing garbage": lambda body: body + b" {}",
    "two documents": lambda body: body + body,
    "nested 32": lambda body: _with_raw_field(body, b"[" * 32 + b"]" * 32),
    "nested 100000": lambda body: _with_raw_field(body, b"[" * 100_000 + b"]" * 100_000),
    "nested objects 5000": lambda body: _with_raw_field(body, b'{"a":' * 5000 + b"1" + b"}" * 5000),
    "nan": lambda body: _with_raw_field(body, b"NaN"),
    "infinity": lambda body: _with_raw_field(body, b"[Infinity, -Infinity]"),
    "huge integer": lambda body: _with_raw_field(body, b"9" * 4000),
    "too many digits": lambda body: _with_raw_field(body, b"9" * 5000),
    "huge float": lambda body: _with_raw_field(body, b"1e400"),
    "lone surrogate escape": lambda body: _with_raw_field(body, b'"\\ud800\\udfff\\udc00"'),
    "nul escape": lambda body: _with_raw_field(body, b'"\\u0000"'),
    "raw non-ascii": lambda body: _with_raw_field(body, '"żółw 🐢 \u2028"'.encode()),
    "invalid utf-8": lambda body: _with_raw_field(body, b'"\xff\xfe\xed\xa0\x80"'),
    "duplicate id": lambda body: _duplicate_member(body, "id", "evt_ShadowedByTheRealId"),
    "duplicate id last": lambda body: body.rstrip()[:-1] + b', "id": "evt_TheLastIdWins"}',
    "duplicate type": lambda body: _duplicate_member(body, "type", "setup_intent.succeeded"),
    "duplicate object last": lambda body: body.rstrip()[:-1] + b', "object": "not_an_event"}',
    "duplicate created last": lambda body: body.rstrip()[:-1] + b', "created": NaN}',
    "created as float": lambda body: re.sub(rb'"created": (\d+)', rb'"created": \1.0', body, count=1),
    "created with exponent": lambda body: re.sub(rb'"created": (\d)(\d+)', rb'"created": \1.\2e9', body, count=1),
    "created too many digits": lambda body: re.sub(rb'"created": \d+', b'"created": ' + b"1" * 5000, body, count=1),
    "created 1e400": lambda body: re.sub(rb'"created": \d+', b'"created": 1e400', body, count=1),
    "not an object": lambda body: b"[" + body + b"]",
    "json string": lambda body: json.dumps(body.decode()).encode(),
}


@settings(FUZZ_WITH_WORKER, max_examples=150)
@given(
    event=mutated_events(max_mutations=1),
    encodings=st.lists(st.sampled_from(sorted(ENCODINGS)), min_size=1, max_size=2),
    wallet=wallets,
)
def test_a_validly_signed_body_in_an_odd_json_encoding_is_answered_200_or_400_and_settled(
    web: Web, worker: Worker, event: dict[str, Any], encodings: list[str], wallet: dict[str, list[dict[str, Any]]]
) -> None:
    web.reset()
    body = encode(event)
    for name in encodings:
        try:
            body = ENCODINGS[name](body)
        except (ValueError, RecursionError):
            continue  # this encoding does not apply to the previous one's output (e.g. UTF-16 of UTF-16)
    web.post_signed(body)
    worker.settle(web.queued_messages(), wallet)


# -- sizes ------------------------------------------------------------------------------------------------------


def padded_body(name: str, size: int) -> bytes:
    """A handled sample event padded (with an extra field) to exactly `size` bytes when it can be."""
    event = copy.deepcopy(SAMPLES[name])
    event["id"] = f"evt_Size{size}"
    bare = len(encode({**event, "padding": ""}))
    event["padding"] = "x" * max(size - bare, 0)
    return encode(event)


@FUZZ
@given(
    name=st.sampled_from(HANDLED),
    size=st.one_of(
        st.integers(SMALL_LIMIT - 64, SMALL_LIMIT + 64),
        st.sampled_from([SMALL_LIMIT - 1, SMALL_LIMIT, SMALL_LIMIT + 1]),
        st.integers(SMALL_LIMIT + 1, 2 * 1024 * 1024),
    ),
    signed=st.booleans(),
)
def test_a_body_over_the_limit_is_a_413_and_one_within_it_is_judged_on_its_merits(
    small_web: Web, name: str, size: int, signed: bool
) -> None:
    small_web.reset()
    body = padded_body(name, size)
    headers = {"Stripe-Signature": sign(body) if signed else "t=1,v1=00", "Content-Type": "application/json"}
    response = small_web.post(body, headers)
    payload = response.get_json(silent=True)
    note(f"{len(body)} bytes: {response.status_code} {payload}")
    if len(body) > SMALL_LIMIT:
        assert response.status_code == 413
        assert payload is not None
        assert payload["error"] == "request_entity_too_large"
        assert small_web.footprint() == []
    elif signed:
        assert response.status_code == 200
        assert payload == {"status": "queued", "event_id": f"evt_Size{size}"}
    else:
        assert response.status_code == 400
        assert small_web.footprint() == []


# -- Redis down -------------------------------------------------------------------------------------------------


@pytest.fixture
def web_without_redis(redis_client: redis.Redis) -> Web:
    app = create_app(web_settings(f"redis://127.0.0.1:{free_port()}/0"), configure_logs=False)
    return Web(app.test_client(), redis_client)


@settings(FUZZ, max_examples=40)
@given(event=mutated_events())
def test_with_redis_down_an_event_that_needs_work_is_a_503_to_retry_and_nothing_else_fails(
    web_without_redis: Web, event: dict[str, Any]
) -> None:
    body = encode(event)
    expected = expected_answers(body)
    response = web_without_redis.post(body, {"Stripe-Signature": sign(body)})
    payload = response.get_json(silent=True)
    assert payload is not None, response.status_code
    assert response.status_code in (200, 400, 503), (response.status_code, payload)
    if response.status_code == 503:
        assert "accepted" in expected
        assert payload["error"] == "unavailable"
        assert payload["event_id"] == event["id"]
        assert int(response.headers["Retry-After"]) > 0
    elif response.status_code == 200:
        assert "ignored" in expected
        assert payload == {"status": "ignored", "event_id": event["id"]}
    else:
        assert "invalid" in expected
        assert payload["error"] == "invalid_webhook"
    if expected == ACCEPTED:
        assert response.status_code == 503


# -- regressions: bugs these properties found, fixed ------------------------------------------------


@pytest.mark.parametrize(
    "changes", [{"id": "evt_1SampleUpdate0000000001\n"}, {"object": {"id": "pm_1Pgc75B7WZ01zgkWlHVgdEGJ\n"}}]
)
def test_an_id_with_a_trailing_newline_is_not_a_stripe_id(web: Web, changes: dict[str, Any]) -> None:
    event = copy.deepcopy(SAMPLES["payment_method.updated"])
    event.update({k: v for k, v in changes.items() if k != "object"})
    event["data"]["object"].update(changes.get("object", {}))
    body = encode(event)
    response = web.post(body, {"Stripe-Signature": sign(body)})
    assert response.status_code == 400, response.get_json()
    assert web.footprint() == []


def test_a_last4_with_a_trailing_newline_is_not_a_card_fact(web: Web) -> None:
    event = sample_event("payment_method.updated", event_id="evt_Last4", token=WALLET_TOKENS[0])
    event["data"]["object"]["card"]["last4"] = "4242\n"
    assert web.post_signed(encode(event)) == "queued"  # checks the message: last4 is None or 4 digits


def test_a_decoy_timestamp_cannot_hide_a_signature_from_the_future(web: Web) -> None:
    body = encode(SAMPLES["payment_method.updated"])
    now = int(time.time())
    future = sign(body, timestamp=now + 3600)  # genuine, but an hour ahead: must be refused
    response = web.post(body, {"Stripe-Signature": f" t={now},{future}"})
    assert response.status_code == 400, response.get_json()
    assert web.footprint() == []


def test_a_chunked_body_over_the_limit_is_a_413(small_web: Web) -> None:
    body = padded_body("payment_method.updated", SMALL_LIMIT + 100)
    response = small_web.client.post(
        "/webhooks/stripe",
        input_stream=io.BytesIO(body),
        headers={"Stripe-Signature": sign(body), "Transfer-Encoding": "chunked"},
        environ_base={"wsgi.input_terminated": True},  # what gunicorn sets on every request
    )
    assert response.status_code == 413, response.get_json()


@pytest.mark.parametrize("event_type", ["payment_method.\ud800", "\udc00"])
def test_a_lone_surrogate_in_an_unknown_event_type_is_answered_without_a_5xx(web: Web, event_type: str) -> None:
    event = sample_event("payment_method.updated", event_id="evt_OddType", token=WALLET_TOKENS[0])
    event["type"] = event_type  # written as a \u escape: the body is valid UTF-8 and validly signed
    assert web.post_signed(encode(event)) in ("ignored", "invalid")


@pytest.mark.parametrize("where", ["customer", "brand", "funding"])
def test_a_lone_surrogate_in_the_customer_or_a_card_fact_never_reaches_commerce_layer(
    web: Web, worker: Worker, where: str
) -> None:
    event = sample_event("payment_method.updated", event_id="evt_OddText", token=WALLET_TOKENS[0])
    payment_method = event["data"]["object"]
    if where == "customer":
        payment_method["customer"] = "cus_\ud800"
    else:
        payment_method["card"][where] = "vi\udc00sa"
    assert web.post_signed(encode(event)) == "queued"
    worker.settle(web.queued_messages(), {WALLET_TOKENS[0]: [{}], WALLET_TOKENS[1]: [{}], WALLET_TOKENS[2]: [{}, {}]})
