"""The provider registry: `/webhooks/<name>` is served by the adapter registered under that name.

A new provider is one module implementing `ProviderAdapter` and one entry in `build_adapters`.
"""

from __future__ import annotations

from service.config import WebSettings
from service.providers.base import Delivery, InvalidWebhook, ProviderAdapter
from service.providers.stripe import StripeAdapter

__all__ = ["Delivery", "InvalidWebhook", "ProviderAdapter", "build_adapters"]


def build_adapters(settings: WebSettings) -> dict[str, ProviderAdapter]:
    return {
        "stripe": StripeAdapter(secrets=settings.stripe_webhook_secrets, tolerance=settings.stripe_webhook_tolerance),
    }
