"""The Stripe adapter: the only module that imports `stripe` or knows the `Stripe-Signature` header.

Verification is the official library's (`stripe.WebhookSignature.verify_header`), called once per configured
secret so that a secret rotation works (any one may match), always with an explicit tolerance (the library's
default is no timestamp check at all). Timestamps from the future are refused here, as the library does not.
The body is parsed as plain JSON (Stripe objects are not dicts since stripe-python 15) into our own types;
billing details and anything else that is not a displayable card fact are dropped at this boundary.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import stripe

from service.config import Secret
from service.domain import Card, PaymentMethodEvent
from service.providers.base import Delivery, InvalidWebhook

SIGNATURE_HEADER = "Stripe-Signature"
HANDLED_TYPES = frozenset(
    {
        "payment_method.attached",
        "payment_method.updated",
        "payment_method.automatically_updated",
        "payment_method.detached",
    }
)
# How far ahead of our clock a signature timestamp may be (clock skew between Stripe and us).
FUTURE_SKEW_SECONDS = 60
MAX_ID_LENGTH = 255
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]+")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.]+")
# pm_… (PaymentMethods), and the legacy card_… / src_… objects, which Commerce Layer stores the same way.
_PAYMENT_METHOD_ID = re.compile(r"(pm|card|src)_[A-Za-z0-9_]+")
_CUSTOMER_ID = re.compile(r"cus_[A-Za-z0-9_]+")
_LAST4 = re.compile(r"[0-9]{4}")


class StripeAdapter:
    name = "stripe"

    def __init__(self, *, secrets: tuple[Secret, ...], tolerance: int, clock: Callable[[], float] = time.time) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._secrets = secrets
        self._tolerance = tolerance
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        header = headers.get(SIGNATURE_HEADER)
        if not header:
            raise InvalidWebhook("missing Stripe-Signature header")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidWebhook("body is not UTF-8") from None
        failure = "invalid signature"
        for secret in self._secrets:
            try:
                stripe.WebhookSignature.verify_header(payload, header, secret.reveal(), tolerance=self._tolerance)
            except stripe.SignatureVerificationError as exc:
                # The library's messages name no secret; keep the most specific one (stale beats mismatch).
                if "tolerance" in str(exc):
                    failure = "signature timestamp outside the tolerance"
                elif "extract" in str(exc):
                    failure = "malformed Stripe-Signature header"
                continue
            except (TypeError, ValueError):
                # compare_digest refuses non-ASCII signatures; a header like that is simply not valid.
                raise InvalidWebhook("malformed Stripe-Signature header") from None
            break
        else:
            raise InvalidWebhook(failure)
        timestamp = _signature_timestamp(header)
        if timestamp is None or timestamp > self._clock() + FUTURE_SKEW_SECONDS:
            raise InvalidWebhook("signature timestamp is in the future")
        if timestamp < self._clock() - self._tolerance:
            # verify_header checks this too, against its own clock; ours is the one tests and ops control.
            raise InvalidWebhook("signature timestamp outside the tolerance")

    def parse(self, body: bytes) -> Delivery:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidWebhook("body is not JSON") from None
        if not isinstance(envelope, dict) or envelope.get("object") not in ("event", "v2.core.event"):
            raise InvalidWebhook("body is not a Stripe event")
        event_id, event_type = envelope.get("id"), envelope.get("type")
        if not isinstance(event_id, str) or len(event_id) > MAX_ID_LENGTH or not _EVENT_ID.fullmatch(event_id):
            raise InvalidWebhook("event id is missing or malformed")
        if not isinstance(event_type, str) or len(event_type) > MAX_ID_LENGTH or not _EVENT_TYPE.fullmatch(event_type):
            raise InvalidWebhook("event type is missing or malformed")
        if envelope["object"] != "event" or event_type not in HANDLED_TYPES:
            # Thin (v2) events and other types are genuine but not ours: acknowledged as ignored.
            return Delivery(event_id=event_id, event_type=event_type, event=None)
        return Delivery(event_id=event_id, event_type=event_type, event=_payment_method_event(envelope))


def _payment_method_event(envelope: dict[str, Any]) -> PaymentMethodEvent:
    created = envelope.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 < created < 10**12:
        raise InvalidWebhook("event created is missing or not a unix timestamp")
    data = envelope.get("data")
    payment_method = data.get("object") if isinstance(data, dict) else None
    if not isinstance(payment_method, dict):
        raise InvalidWebhook("event has no data.object")
    token = payment_method.get("id")
    if not isinstance(token, str) or len(token) > MAX_ID_LENGTH or not _PAYMENT_METHOD_ID.fullmatch(token):
        raise InvalidWebhook("data.object.id is not a payment method id")
    detached = envelope["type"] == "payment_method.detached"
    customer = payment_method.get("customer")
    return PaymentMethodEvent(
        provider="stripe",
        event_id=envelope["id"],
        event_type=envelope["type"],
        event_created=created,
        payment_source_token=token,
        customer_token=customer if _is_customer_id(customer) and not detached else None,
        status="detached" if detached else "active",
        card=_card(payment_method),
    )


def _card(payment_method: Mapping[str, Any]) -> Card | None:
    # PaymentMethods carry the card under "card"; legacy card_/src_ objects are the card themselves.
    card = payment_method.get("card")
    if not isinstance(card, dict):
        card = payment_method if payment_method.get("object") == "card" else None
    if card is None:
        return None  # not a card (SEPA debit, bank account, ...): no card facts to write

    def text(name: str, limit: int = 32) -> str | None:
        value = card.get(name)
        return value if isinstance(value, str) and value and len(value) <= limit and value.isprintable() else None

    def number(name: str, low: int, high: int) -> int | None:
        value = card.get(name)
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return value if ok else None

    last4 = text("last4")
    return Card(
        brand=text("brand"),
        last4=last4 if last4 and _LAST4.fullmatch(last4) else None,
        exp_month=number("exp_month", 1, 12),
        exp_year=number("exp_year", 1900, 9999),
        funding=text("funding"),
        country=text("country", 2),
    )


def _is_customer_id(value: Any) -> bool:
    # Only a well-formed Stripe customer id is ever written as customer_token.
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _CUSTOMER_ID.fullmatch(value) is not None


def _signature_timestamp(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t":  # exactly the item verify_header used: the library strips nothing
            try:
                return int(value)
            except ValueError:
                return None
    return None
