"""The Stripe adapter: real signatures made with the official library, never a mocked verification."""

from __future__ import annotations

import json
import time

import pytest

from service.config import Secret
from service.domain import Card
from service.providers import InvalidWebhook
from service.providers.stripe import StripeAdapter
from tests.support import OTHER_SECRET, WEBHOOK_SECRET, sign, signed_request, stripe_event


def now() -> int:
    # The library checks staleness against the real clock, so timestamps are taken when each test runs.
    return int(time.time())


def adapter(*secrets: str, tolerance: int = 300) -> StripeAdapter:
    return StripeAdapter(secrets=tuple(Secret(s) for s in secrets or (WEBHOOK_SECRET,)), tolerance=tolerance)


def test_a_correctly_signed_event_verifies() -> None:
    body, headers = signed_request(stripe_event("payment_method.updated"), timestamp=now())
    adapter().verify(body, headers)


def test_any_one_of_several_secrets_may_match_during_rotation() -> None:
    body, headers = signed_request(stripe_event("payment_method.updated"), secret=OTHER_SECRET, timestamp=now())
    adapter(WEBHOOK_SECRET, OTHER_SECRET).verify(body, headers)


def test_a_header_with_one_signature_per_secret_verifies() -> None:
    body = json.dumps(stripe_event("payment_method.updated")).encode()
    first, second = sign(body, WEBHOOK_SECRET, timestamp=now()), sign(body, OTHER_SECRET, timestamp=now())
    header = first + "," + second.split(",")[1]
    adapter(OTHER_SECRET).verify(body, {"Stripe-Signature": header})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing Stripe-Signature header"),
        ({"Stripe-Signature": ""}, "missing Stripe-Signature header"),
        ({"Stripe-Signature": "garbage"}, "malformed Stripe-Signature header"),
        ({"Stripe-Signature": f"t={now()},v1=" + "0" * 64}, "invalid signature"),
        ({"Stripe-Signature": f"t={now()},v0=abc"}, "invalid signature"),
        ({"Stripe-Signature": f"t={now()},v1=\u00e9\u00e9"}, "malformed Stripe-Signature header"),
    ],
)
def test_a_missing_or_wrong_signature_is_refused_with_its_reason(headers: dict[str, str], message: str) -> None:
    body = json.dumps(stripe_event("payment_method.updated")).encode()
    with pytest.raises(InvalidWebhook, match=message):
        adapter().verify(body, headers)


def test_a_signature_made_with_another_secret_is_refused() -> None:
    body, headers = signed_request(stripe_event("payment_method.updated"), secret=OTHER_SECRET, timestamp=now())
    with pytest.raises(InvalidWebhook, match="invalid signature"):
        adapter(WEBHOOK_SECRET).verify(body, headers)


def test_a_body_changed_after_signing_is_refused() -> None:
    body, headers = signed_request(stripe_event("payment_method.updated"), timestamp=now())
    with pytest.raises(InvalidWebhook, match="invalid signature"):
        adapter().verify(body.replace(b"4242", b"4243"), headers)


def test_a_stale_timestamp_is_refused() -> None:
    # Signed 301 s ago by our clock, and also stale by the library's real clock check.
    body, headers = signed_request(stripe_event("payment_method.updated"), timestamp=now() - 301)
    with pytest.raises(InvalidWebhook, match="tolerance"):
        adapter(tolerance=300).verify(body, headers)


def test_a_timestamp_inside_the_tolerance_is_accepted() -> None:
    body, headers = signed_request(stripe_event("payment_method.updated"), timestamp=now() - 250)
    adapter(tolerance=300).verify(body, headers)


def test_the_library_tolerance_is_applied_against_the_real_clock() -> None:
    real_clock_adapter = StripeAdapter(secrets=(Secret(WEBHOOK_SECRET),), tolerance=300)
    body, headers = signed_request(stripe_event("payment_method.updated"), timestamp=int(time.time()) - 3600)
    with pytest.raises(InvalidWebhook, match="tolerance"):
        real_clock_adapter.verify(body, headers)


def test_a_timestamp_from_the_future_is_refused() -> None:
    body, headers = signed_request(stripe_event("payment_method.updated"), timestamp=now() + 3600)
    with pytest.raises(InvalidWebhook, match="future"):
        adapter().verify(body, headers)


def test_a_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InvalidWebhook, match="UTF-8"):
        adapter().verify(b"\xff\xfe{}", {"Stripe-Signature": f"t={now()},v1=00"})


def test_the_refusal_message_never_contains_the_secret() -> None:
    body = json.dumps(stripe_event("payment_method.updated")).encode()
    with pytest.raises(InvalidWebhook) as raised:
        adapter().verify(body, {"Stripe-Signature": f"t={now()},v1=" + "0" * 64})
    assert WEBHOOK_SECRET not in str(raised.value)


def test_an_automatic_update_becomes_an_active_card_event_without_billing_details() -> None:
    delivery = adapter().parse(json.dumps(stripe_event("payment_method.automatically_updated")).encode())
    event = delivery.event
    assert event is not None
    assert (delivery.event_id, delivery.event_type) == (
        "evt_1SampleAutoUpd000000001",
        "payment_method.automatically_updated",
    )
    assert event.payment_source_token == "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"
    assert event.customer_token == "cus_QXg1o8vcGmoR32"
    assert event.status == "active"
    assert event.event_created == 1785312120
    assert event.card == Card(brand="visa", last4="4242", exp_month=8, exp_year=2033, funding="credit", country="US")
    assert "Fake Street" not in json.dumps(event.to_message())


def test_a_detach_is_a_detached_event_without_customer() -> None:
    event = (
        adapter()
        .parse(json.dumps(stripe_event("payment_method.detached", object={"customer": "cus_x"})).encode())
        .event
    )
    assert event is not None
    assert event.status == "detached"
    assert event.customer_token is None


@pytest.mark.parametrize("token", ["card_1PgaftB7WZ01zgkWm3waTcFp", "src_1PgaftB7WZ01zgkWm3waTcFp"])
def test_legacy_card_and_source_ids_are_matched_like_payment_methods(token: str) -> None:
    event = adapter().parse(json.dumps(stripe_event("payment_method.updated", object={"id": token})).encode()).event
    assert event is not None
    assert event.payment_source_token == token


def test_a_non_card_payment_method_has_no_card() -> None:
    raw = stripe_event("payment_method.attached", object={"type": "sepa_debit", "card": None})
    event = adapter().parse(json.dumps(raw).encode()).event
    assert event is not None
    assert event.card is None


def test_wrongly_typed_card_fields_are_left_out_rather_than_written() -> None:
    raw = stripe_event("payment_method.updated")
    raw["data"]["object"]["card"].update(exp_month="12", exp_year=True, last4="42424", brand=None)
    event = adapter().parse(json.dumps(raw).encode()).event
    assert event is not None
    assert event.card == Card(funding="credit", country="US")


@pytest.mark.parametrize(
    "name", ["setup_intent.succeeded", "customer.source.updated", "thin.v1.payment_method.automatically_updated"]
)
def test_genuine_events_of_other_types_are_ignored(name: str) -> None:
    raw = json.loads((__import__("tests.support").support.FIXTURES / "stripe" / f"{name}.json").read_text())
    delivery = adapter().parse(json.dumps(raw).encode())
    assert delivery.event is None
    assert delivery.event_id == raw["id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a Stripe event"),
        (b'{"object": "charge"}', "not a Stripe event"),
        (b'{"object": "event", "type": "payment_method.updated"}', "event id"),
        (b'{"object": "event", "id": "evt_1", "type": 5}', "event type"),
        (b'{"object": "event", "id": "evt_' + b"x" * 300 + b'", "type": "a"}', "event id"),
        (
            b'{"object": "event", "id": "evt_1", "type": "payment_method.updated", "created": "x", "data": {}}',
            "created",
        ),
        (
            b'{"object": "event", "id": "evt_1", "type": "payment_method.updated", "created": 5, "data": {}}',
            "data.object",
        ),
        (
            b'{"object": "event", "id": "evt_1", "type": "payment_method.updated", "created": 5, '
            b'"data": {"object": {"id": 1}}}',
            "payment method id",
        ),
        (b"[" * 100000 + b"]" * 100000, "not"),
    ],
)
def test_a_body_that_is_not_a_usable_stripe_event_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(InvalidWebhook, match=message):
        adapter().parse(body)
