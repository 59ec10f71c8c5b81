"""The small interface every payment provider adapter implements.

An adapter verifies a raw webhook request and turns its body into a `Delivery`: the event's identity and,
when the event is one the service handles, a `PaymentMethodEvent`. It does no I/O and knows no web framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from service.domain import PaymentMethodEvent


class InvalidWebhook(Exception):
    """The request is not an authentic provider event: answered 400, nothing recorded. The message is safe
    to return to the caller (it never contains a secret)."""


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    event: PaymentMethodEvent | None  # None: a genuine event of a type the service does not handle


class ProviderAdapter(Protocol):
    name: str

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise `InvalidWebhook` unless the request is signed by the provider and recent."""

    def parse(self, body: bytes) -> Delivery:
        """Raise `InvalidWebhook` unless the (verified) body is a provider event."""
