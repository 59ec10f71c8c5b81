"""`make demo`: send real, signed sample Stripe events to a running `make run` and show the wallet entries.

Each run sends fresh copies of the four handled event types (new event ids, `created` = now), one of them twice
(to show the duplicate answer), plus one type the service ignores, then prints what Commerce Layer holds.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import stripe

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "tests" / "fixtures" / "stripe"
SEQUENCE = [
    "payment_method.attached",
    "payment_method.updated",
    "payment_method.automatically_updated",
    "payment_method.automatically_updated",  # the same event again: a duplicate
    "setup_intent.succeeded",  # not handled: ignored
]


def main() -> int:
    state_file = ROOT / ".run" / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    web_url = os.environ.get("WEB_URL") or state.get("web_url") or "http://127.0.0.1:8000"
    simulator_url = os.environ.get("SIMULATOR_URL") or state.get("simulator_url")
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET") or state.get("webhook_secret")
    if not secret:
        print("Set STRIPE_WEBHOOK_SECRET to the secret the running service uses.", file=sys.stderr)
        return 1

    created = int(time.time()) - len(SEQUENCE)
    previous: dict[str, Any] | None = None
    print(f"Sending signed sample events to {web_url}/webhooks/stripe")
    for offset, name in enumerate(SEQUENCE):
        if previous is not None and name == previous["type"]:
            event = previous
        else:
            event = json.loads((EVENTS / f"{name}.json").read_text())
            event["id"] = f"evt_demo{uuid.uuid4().hex[:20]}"
            event["created"] = created + offset
            if name == "payment_method.automatically_updated":
                event["data"]["object"]["card"].update(exp_month=12, exp_year=2034, last4="4242")
        status, answer = post(web_url, event, secret)
        print(f"  {event['type']:40} {event['id']:32} -> {status} {answer}")
        previous = event

    if not simulator_url:
        print("\nCommerce Layer is not the simulator here: look the entries up in your organization.")
        return 0
    print("\nWaiting for the worker ...")
    time.sleep(3)
    with urllib.request.urlopen(f"{simulator_url}/_sim/sources", timeout=5) as response:  # noqa: S310 - local URL
        sources = json.load(response)["data"]
    print(f"\nWallet entries in the Commerce Layer simulator ({simulator_url}/_sim/sources):")
    for source in sources:
        attributes = source["attributes"]
        sync = attributes["metadata"].get("payment_sync") or {}
        card = sync.get("card") or {}
        expiry = f"{card.get('exp_month', '?')}/{card.get('exp_year', '?')}" if card else "-"
        print(
            f"  {source['id']}  token={attributes['payment_source_token']:30} customer={attributes['customer_token']}"
            f"  status={sync.get('status', '-')} card={card.get('brand', '-')} {card.get('last4', '')} exp {expiry}"
            f"  last event={sync.get('event_type', '-')}"
        )
    return 0


def post(web_url: str, event: dict[str, Any], secret: str) -> tuple[int, str]:
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret)
    request = urllib.request.Request(  # noqa: S310 - local URL
        f"{web_url}/webhooks/stripe",
        data=body.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()


if __name__ == "__main__":
    raise SystemExit(main())
