"""The sync itself: one provider event → the matching Commerce Layer payment sources, each written at most once.

A plain function with its collaborators passed in, so it is tested without Celery. The event is first offered as
the payment method's newest snapshot (`service.snapshots`); what gets written is the newest snapshot, so a burst
of events for one card ends in one read and one write, and tasks whose event is already superseded everywhere
finish from Redis alone, without calling Commerce Layer. For every wallet entry that carries the payment-method
token it decides, from what Commerce Layer stores and the Redis watermark:
- `duplicate`: this very event is already applied;
- `stale`: a newer event (see `service.domain.ordering_key`) is already applied, so this one must not overwrite it;
- `unchanged`: writing would change nothing that matters, so no PATCH is sent (the watermark still moves);
- `applied`: one PATCH carrying the merged metadata (and the customer token when it changed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.commercelayer import CustomerPaymentSource
from service.domain import Outcome, PaymentMethodEvent, ordering_key
from service.errors import CommerceLayerError, ErrorKind
from service.eventlog import now_iso
from service.ordering import Ordering, OrderKey
from service.snapshots import Settling, Snapshots

log = logging.getLogger(__name__)

SYNC_KEY = "payment_sync"  # the one metadata key this service owns
# Fields of our metadata entry that describe *which* event wrote it, not the card: they never make a write useful.
_BOOKKEEPING = frozenset({"event_id", "event_type", "event_created", "synced_at"})
# When several sources match, the event's outcome is the most consequential of theirs.
_PRECEDENCE = (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.STALE, Outcome.DUPLICATE)


class Wallets(Protocol):
    def reserve(self, calls: int) -> None: ...
    def find_payment_sources(self, payment_source_token: str) -> list[CustomerPaymentSource]: ...
    def update_payment_source(self, source_id: str, attributes: Mapping[str, Any]) -> CustomerPaymentSource: ...


@dataclass(frozen=True)
class SourceOutcome:
    source_id: str
    outcome: Outcome


@dataclass(frozen=True)
class SyncResult:
    outcome: Outcome  # of the task's own event
    sources: tuple[SourceOutcome, ...]
    # The newer event that was written in this event's stead (coalescing), with its own outcome.
    written: PaymentMethodEvent | None = None
    written_outcome: Outcome | None = None


def sync_payment_method(
    event: PaymentMethodEvent,
    *,
    wallets: Wallets,
    ordering: Ordering,
    snapshots: Snapshots,
    clock: Callable[[], str] = now_iso,
) -> SyncResult:
    """Bring every matching payment source up to the newest known event; raises `CommerceLayerError`,
    `SourceBusy`, `Settling`, or the rate limiter's / breaker's refusals."""
    snapshots.offer(event)
    settled = _settled_from_redis(event, ordering=ordering, snapshots=snapshots)
    if settled is not None:
        return settled
    wait = snapshots.quiet_wait(event)
    if wait > 0:
        raise Settling(wait)  # more events of this card are arriving: write the newest once they stop
    with ordering.lease(event.provider, event.payment_source_token):
        # Again under the lease: another task may have written the newest state while this one waited for it.
        settled = _settled_from_redis(event, ordering=ordering, snapshots=snapshots)
        if settled is not None:
            return settled
        target = snapshots.newest(event)  # read under the lease: the newest state at the time of writing
        known = ordering.known_sources(event.provider, event.payment_source_token)
        wallets.reserve(1 + len(known or [None]))  # a lookup and the writes, so the budget is not spent halfway
        try:
            result = _sync_all(target, wallets=wallets, ordering=ordering, clock=clock)
        except CommerceLayerError as error:
            if error.kind is not ErrorKind.NOT_FOUND:
                raise
            # A source vanished between lookup and PATCH: look again once. Sources already written come
            # back as duplicates, so nothing is written twice.
            log.info("payment source vanished during sync; resolving again", extra={"event_id": event.event_id})
            ordering.forget_sources(event.provider, event.payment_source_token)
            result = _sync_all(target, wallets=wallets, ordering=ordering, clock=clock)
    if target is event:
        return result
    # A newer event was written instead of this one: this one is superseded (stale) on every source.
    superseded = tuple(SourceOutcome(s.source_id, Outcome.STALE) for s in result.sources)
    own = Outcome.STALE if superseded else Outcome.UNMATCHED
    return SyncResult(own, superseded, written=target, written_outcome=result.outcome)


def _settled_from_redis(event: PaymentMethodEvent, *, ordering: Ordering, snapshots: Snapshots) -> SyncResult | None:
    """Without any Commerce Layer call: when every known source's watermark is at or beyond the newest
    snapshot, there is nothing to write; this event is then a duplicate (it is the watermark) or stale."""
    source_ids = ordering.known_sources(event.provider, event.payment_source_token)
    if not source_ids:
        return None
    newest = snapshots.newest(event).order_key
    outcomes = []
    for source_id in source_ids:
        mark = ordering.watermark(source_id)
        if mark is None or mark < newest:
            return None
        outcomes.append(SourceOutcome(source_id, Outcome.DUPLICATE if mark == event.order_key else Outcome.STALE))
    overall = Outcome.STALE if any(o.outcome is Outcome.STALE for o in outcomes) else Outcome.DUPLICATE
    return SyncResult(overall, tuple(outcomes))


def _sync_all(
    event: PaymentMethodEvent, *, wallets: Wallets, ordering: Ordering, clock: Callable[[], str]
) -> SyncResult:
    sources = wallets.find_payment_sources(event.payment_source_token)
    ordering.remember_sources(event.provider, event.payment_source_token, [s.id for s in sources])
    results = tuple(
        SourceOutcome(source.id, _sync_one(event, source, wallets=wallets, ordering=ordering, clock=clock))
        for source in sources
        # The filter is Commerce Layer's; a page from a misbehaving proxy must not make us write elsewhere.
        if source.payment_source_token in (None, event.payment_source_token)
    )
    if not results:
        return SyncResult(Outcome.UNMATCHED, ())
    outcomes = {result.outcome for result in results}
    overall = next(outcome for outcome in _PRECEDENCE if outcome in outcomes)
    return SyncResult(overall, results)


def _sync_one(
    event: PaymentMethodEvent,
    source: CustomerPaymentSource,
    *,
    wallets: Wallets,
    ordering: Ordering,
    clock: Callable[[], str],
) -> Outcome:
    stored = source.metadata.get(SYNC_KEY)
    stored = stored if isinstance(stored, dict) else {}
    watermark = ordering.watermark(source.id)
    if event.event_id in (stored.get("event_id"), watermark[2] if watermark else None):
        return Outcome.DUPLICATE
    newest = max((key for key in (_stored_key(stored), watermark) if key is not None), default=None)
    if newest is not None and event.order_key < newest:
        return Outcome.STALE

    attributes = desired_attributes(event, source, synced_at=clock())
    if _same_content(attributes, source, stored):
        ordering.advance(source.id, event.order_key)
        return Outcome.UNCHANGED
    try:
        wallets.update_payment_source(source.id, attributes)
    except CommerceLayerError as error:
        if error.kind is not ErrorKind.CONFLICT:
            raise
        # 409 "record not unique": Commerce Layer documents it as safe to ignore; the write is done.
    ordering.advance(source.id, event.order_key)
    log.info(
        "payment source updated",
        extra={"event_id": event.event_id, "payment_source_id": source.id, "provider": event.provider},
    )
    return Outcome.APPLIED


def desired_attributes(event: PaymentMethodEvent, source: CustomerPaymentSource, *, synced_at: str) -> dict[str, Any]:
    """The PATCH attributes: every metadata key that is not ours kept, ours replaced (metadata is replaced
    wholesale by Commerce Layer), and the customer token when the provider names a different one."""
    entry: dict[str, Any] = {"provider": event.provider, "status": event.status}
    if event.card is not None:
        entry["card"] = event.card.as_metadata()
    entry.update(
        event_id=event.event_id,
        event_type=event.event_type,
        event_created=event.event_created,
        synced_at=synced_at,
    )
    attributes: dict[str, Any] = {"metadata": {**source.metadata, SYNC_KEY: entry}}
    if event.status == "active" and event.customer_token and event.customer_token != source.customer_token:
        attributes["customer_token"] = event.customer_token
    return attributes


def _same_content(attributes: Mapping[str, Any], source: CustomerPaymentSource, stored: Mapping[str, Any]) -> bool:
    if "customer_token" in attributes:
        return False
    wanted = {k: v for k, v in attributes["metadata"][SYNC_KEY].items() if k not in _BOOKKEEPING}
    present = {k: v for k, v in stored.items() if k not in _BOOKKEEPING}
    return bool(present) and wanted == present


def _stored_key(stored: Mapping[str, Any]) -> OrderKey | None:
    created, event_id = stored.get("event_created"), stored.get("event_id")
    if not isinstance(created, int) or isinstance(created, bool) or not isinstance(event_id, str):
        return None
    return ordering_key(created, str(stored.get("status")), event_id)
