"""The project's own small types: a provider's payment-method event, its card, and the outcomes of a sync.

Provider adapters turn a verified webhook into a `PaymentMethodEvent`; the worker turns it into Commerce
Layer writes. These types travel through Celery as plain JSON (`to_message` / `from_message`) and hold no card
number, CVC or billing address: only what a wallet entry may show.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

PaymentSourceStatus = Literal["active", "detached"]


class Outcome(StrEnum):
    """What happened to an event (or to one of its payment sources)."""

    RECEIVED = "received"
    QUEUED = "queued"
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    UNCHANGED = "unchanged"
    UNMATCHED = "unmatched"
    IGNORED = "ignored"
    RETRYING = "retrying"
    DEAD = "dead"


#: Outcomes after which nothing more happens to an event (until an operator replays it).
FINAL_OUTCOMES = frozenset(
    {
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.STALE,
        Outcome.UNCHANGED,
        Outcome.UNMATCHED,
        Outcome.IGNORED,
        Outcome.DEAD,
    }
)


@dataclass(frozen=True)
class Card:
    """The displayable facts of a card; each is None when the provider did not send it."""

    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    funding: str | None = None
    country: str | None = None

    def to_message(self) -> dict[str, Any]:
        return {
            "brand": self.brand,
            "last4": self.last4,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "funding": self.funding,
            "country": self.country,
        }

    def as_metadata(self) -> dict[str, Any]:
        """Only what the event's card has: absent facts are left out rather than written as null."""
        return {key: value for key, value in self.to_message().items() if value is not None}


@dataclass(frozen=True)
class PaymentMethodEvent:
    """One provider event about one saved payment method."""

    provider: str
    event_id: str
    event_type: str
    event_created: int
    payment_source_token: str
    customer_token: str | None
    status: PaymentSourceStatus
    card: Card | None = None

    def to_message(self) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict, whose deep copies were a tenth of the webhook's CPU.
        return {
            "provider": self.provider,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event_created": self.event_created,
            "payment_source_token": self.payment_source_token,
            "customer_token": self.customer_token,
            "status": self.status,
            "card": None if self.card is None else self.card.to_message(),
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> PaymentMethodEvent:
        card = message.get("card")
        return cls(
            provider=str(message["provider"]),
            event_id=str(message["event_id"]),
            event_type=str(message["event_type"]),
            event_created=int(message["event_created"]),
            payment_source_token=str(message["payment_source_token"]),
            customer_token=message.get("customer_token"),
            status="detached" if message.get("status") == "detached" else "active",
            card=Card(**card) if isinstance(card, dict) else None,
        )

    @property
    def order_key(self) -> tuple[int, int, str]:
        """Total order of events about one payment method (see `ordering_key`)."""
        return ordering_key(self.event_created, self.status, self.event_id)


def ordering_key(event_created: int, status: str, event_id: str) -> tuple[int, int, str]:
    """Newer wins; within the same second a detach wins over any update (detached is terminal against
    same-second updates); two same-second events of the same kind are ordered by event id, an arbitrary
    but deterministic rule, so every delivery order converges on the same final state."""
    return (event_created, 1 if status == "detached" else 0, event_id)
