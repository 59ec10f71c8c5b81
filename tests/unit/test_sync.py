"""The sync decision per payment source, with a recording fake of Commerce Layer and a real Redis."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis

from service.commercelayer import CustomerPaymentSource
from service.domain import Card, Outcome, PaymentMethodEvent
from service.errors import CommerceLayerError, ErrorKind
from service.ordering import Ordering, SourceBusy
from service.snapshots import Snapshots
from service.sync import SYNC_KEY, SyncResult, sync_payment_method

TOKEN = "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"
VISA = Card(brand="visa", last4="4242", exp_month=8, exp_year=2030, funding="credit", country="US")


class FakeWallets:
    """Commerce Layer as a dict; replaces metadata wholesale on update, as the real API does."""

    def __init__(self, *sources: CustomerPaymentSource) -> None:
        self.sources = {source.id: source for source in sources}
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.lookups = 0
        self.reserved = 0
        self.fail_next_update: CommerceLayerError | None = None

    def reserve(self, calls: int) -> None:
        self.reserved += calls

    def find_payment_sources(self, payment_source_token: str) -> list[CustomerPaymentSource]:
        self.lookups += 1
        return [s for s in self.sources.values() if s.payment_source_token == payment_source_token]

    def update_payment_source(self, source_id: str, attributes: Mapping[str, Any]) -> CustomerPaymentSource:
        if self.fail_next_update is not None:
            error, self.fail_next_update = self.fail_next_update, None
            raise error
        self.updates.append((source_id, copy.deepcopy(dict(attributes))))
        old = self.sources[source_id]
        updated = CustomerPaymentSource(
            id=source_id,
            payment_source_token=old.payment_source_token,
            customer_token=attributes.get("customer_token", old.customer_token),
            metadata=attributes.get("metadata", old.metadata),
        )
        self.sources[source_id] = updated
        return updated


def source(
    source_id: str = "src_A", *, customer: str | None = "cus_QXg1o8vcGmoR32", **metadata: Any
) -> CustomerPaymentSource:
    return CustomerPaymentSource(id=source_id, payment_source_token=TOKEN, customer_token=customer, metadata=metadata)


def event(
    event_id: str = "evt_1",
    created: int = 1000,
    *,
    status: str = "active",
    card: Card | None = VISA,
    customer: str | None = "cus_QXg1o8vcGmoR32",
) -> PaymentMethodEvent:
    return PaymentMethodEvent(
        provider="stripe",
        event_id=event_id,
        event_type="payment_method.detached" if status == "detached" else "payment_method.updated",
        event_created=created,
        payment_source_token=TOKEN,
        customer_token=customer,
        status=status,  # type: ignore[arg-type]
        card=card,
    )


@pytest.fixture
def ordering(redis_client: redis.Redis) -> Ordering:
    return Ordering(redis_client)


@pytest.fixture(autouse=True)
def snapshots(redis_client: redis.Redis) -> Snapshots:
    global _snapshots
    _snapshots = Snapshots(redis_client)
    return _snapshots


_snapshots: Snapshots


def sync(event: PaymentMethodEvent, wallets: FakeWallets, ordering: Ordering) -> SyncResult:
    snapshots = _snapshots
    return sync_payment_method(
        event, wallets=wallets, ordering=ordering, snapshots=snapshots, clock=lambda: "2026-11-28T00:00:00.000Z"
    )


def run(wallets: FakeWallets, ordering: Ordering, *events: PaymentMethodEvent) -> list[Outcome]:
    return [sync(e, wallets, ordering).outcome for e in events]


def test_an_event_is_written_into_our_metadata_key_keeping_every_other_key(ordering: Ordering) -> None:
    wallets = FakeWallets(source(wallet_label="Jenny's Visa", loyalty={"tier": 2}))
    assert run(wallets, ordering, event()) == [Outcome.APPLIED]
    [(source_id, attributes)] = wallets.updates
    assert source_id == "src_A"
    assert attributes == {
        "metadata": {
            "wallet_label": "Jenny's Visa",
            "loyalty": {"tier": 2},
            SYNC_KEY: {
                "provider": "stripe",
                "status": "active",
                "card": {
                    "brand": "visa",
                    "last4": "4242",
                    "exp_month": 8,
                    "exp_year": 2030,
                    "funding": "credit",
                    "country": "US",
                },
                "event_id": "evt_1",
                "event_type": "payment_method.updated",
                "event_created": 1000,
                "synced_at": "2026-11-28T00:00:00.000Z",
            },
        }
    }


def test_no_matching_source_is_unmatched_and_writes_nothing(ordering: Ordering) -> None:
    wallets = FakeWallets()
    assert run(wallets, ordering, event()) == [Outcome.UNMATCHED]
    assert wallets.updates == []


def test_the_same_event_twice_is_written_once(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    assert run(wallets, ordering, event(), event()) == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert len(wallets.updates) == 1


def test_an_older_event_never_overwrites_a_newer_one(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    newer = event("evt_new", 2000, card=Card(last4="1111"))
    older = event("evt_old", 1000, card=Card(last4="2222"))
    assert run(wallets, ordering, newer, older) == [Outcome.APPLIED, Outcome.STALE]
    assert wallets.sources["src_A"].metadata[SYNC_KEY]["card"] == {"last4": "1111"}


def test_the_order_holds_from_commerce_layer_alone_when_redis_forgot_the_watermark(
    ordering: Ordering, redis_client: redis.Redis
) -> None:
    wallets = FakeWallets(source())
    run(wallets, ordering, event("evt_new", 2000))
    redis_client.flushall()
    assert run(wallets, ordering, event("evt_old", 1000)) == [Outcome.STALE]


def test_an_unchanged_card_is_not_written_but_still_moves_the_watermark(ordering: Ordering) -> None:
    # A(1000, exp 2030) applied; C(3000, exp 2030) changes nothing; B(2000, exp 2031) arrives last and is older than C.
    wallets = FakeWallets(source())
    a, c = event("evt_A", 1000), event("evt_C", 3000)
    b = event(
        "evt_B", 2000, card=Card(brand="visa", last4="4242", exp_month=8, exp_year=2031, funding="credit", country="US")
    )
    assert run(wallets, ordering, a, c, b) == [Outcome.APPLIED, Outcome.UNCHANGED, Outcome.STALE]
    assert len(wallets.updates) == 1
    assert wallets.sources["src_A"].metadata[SYNC_KEY]["card"]["exp_year"] == 2030


def test_a_detach_is_not_revived_by_an_older_or_same_second_update(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    detach = event("evt_D", 2000, status="detached", customer=None)
    assert run(wallets, ordering, detach, event("evt_same", 2000), event("evt_old", 1999)) == [
        Outcome.APPLIED,
        Outcome.STALE,
        Outcome.STALE,
    ]
    assert wallets.sources["src_A"].metadata[SYNC_KEY]["status"] == "detached"


def test_a_detach_wins_over_a_same_second_update_that_arrived_first(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    assert run(wallets, ordering, event("evt_zzz", 2000), event("evt_aaa", 2000, status="detached", customer=None)) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert wallets.sources["src_A"].metadata[SYNC_KEY]["status"] == "detached"


def test_same_second_updates_converge_whatever_the_arrival_order(ordering: Ordering, redis_client: redis.Redis) -> None:
    first, second = event("evt_a", 2000, card=Card(last4="1111")), event("evt_b", 2000, card=Card(last4="2222"))
    finals = []
    for order in ((first, second), (second, first)):
        redis_client.flushall()
        wallets = FakeWallets(source())
        run(wallets, ordering, *order)
        finals.append(wallets.sources["src_A"].metadata[SYNC_KEY]["card"])
    assert finals == [{"last4": "2222"}, {"last4": "2222"}]


def test_a_detach_keeps_the_customer_token(ordering: Ordering) -> None:
    wallets = FakeWallets(source(customer="cus_kept"))
    run(wallets, ordering, event(status="detached", customer=None))
    [(_, attributes)] = wallets.updates
    assert "customer_token" not in attributes
    assert wallets.sources["src_A"].customer_token == "cus_kept"


def test_a_new_customer_token_is_written_when_it_differs(ordering: Ordering) -> None:
    wallets = FakeWallets(source(customer="cus_old"))
    run(wallets, ordering, event(customer="cus_new"))
    assert wallets.updates[0][1]["customer_token"] == "cus_new"


def test_an_absent_or_equal_customer_token_is_not_written(ordering: Ordering) -> None:
    wallets = FakeWallets(source(customer="cus_same"))
    run(
        wallets,
        ordering,
        event("evt_1", 1000, customer="cus_same"),
        event("evt_2", 2000, customer=None, card=Card(last4="9999")),
    )
    assert all("customer_token" not in attributes for _, attributes in wallets.updates)


def test_a_non_card_method_writes_no_card_key(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    run(wallets, ordering, event(card=None))
    assert "card" not in wallets.updates[0][1]["metadata"][SYNC_KEY]


def test_every_matching_source_is_written(ordering: Ordering) -> None:
    wallets = FakeWallets(source("src_A"), source("src_B"), CustomerPaymentSource("src_C", "pm_other", None, {}))
    result = sync(event(), wallets, ordering)
    assert result.outcome == Outcome.APPLIED
    assert sorted(s.source_id for s in result.sources) == ["src_A", "src_B"]
    assert sorted(source_id for source_id, _ in wallets.updates) == ["src_A", "src_B"]


def test_a_source_that_vanished_before_the_patch_is_resolved_again_once(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    wallets.fail_next_update = CommerceLayerError(ErrorKind.NOT_FOUND, status=404)
    assert run(wallets, ordering, event()) == [Outcome.APPLIED]
    assert wallets.lookups == 2
    assert len(wallets.updates) == 1


def test_a_conflict_on_patch_counts_as_done(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    wallets.fail_next_update = CommerceLayerError(ErrorKind.CONFLICT, status=409)
    assert run(wallets, ordering, event("evt_1", 1000)) == [Outcome.APPLIED]
    assert run(wallets, ordering, event("evt_old", 900)) == [Outcome.STALE]


def test_a_transient_failure_propagates_and_leaves_the_watermark_alone(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    wallets.fail_next_update = CommerceLayerError(ErrorKind.TRANSIENT, status=503)
    with pytest.raises(CommerceLayerError):
        run(wallets, ordering, event("evt_1", 1000))
    assert ordering.watermark("src_A") is None
    assert run(wallets, ordering, event("evt_1", 1000)) == [Outcome.APPLIED]


def test_a_second_task_for_the_same_card_waits_for_the_first(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    with ordering.lease("stripe", TOKEN), pytest.raises(SourceBusy):
        run(wallets, ordering, event())
    assert wallets.lookups == 0


def test_a_burst_for_one_card_is_written_once_with_the_newest_state(ordering: Ordering, snapshots: Snapshots) -> None:
    wallets = FakeWallets(source())
    burst = [event(f"evt_{i:02d}", 1000 + i, card=Card(last4=f"{i:04d}")) for i in range(20)]
    for queued in burst:  # what the web process does when it queues each of them
        snapshots.offer(queued)
    results = [sync(e, wallets, ordering) for e in burst]
    assert wallets.lookups == 1
    assert len(wallets.updates) == 1
    assert wallets.sources["src_A"].metadata[SYNC_KEY]["event_id"] == "evt_19"
    assert results[0].outcome == Outcome.STALE
    assert results[0].written == burst[-1]
    assert results[0].written_outcome == Outcome.APPLIED
    assert [r.outcome for r in results[1:-1]] == [Outcome.STALE] * 18
    assert results[-1].outcome == Outcome.DUPLICATE


def test_a_duplicate_is_recognised_from_redis_without_calling_commerce_layer(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    run(wallets, ordering, event("evt_1", 1000))
    lookups = wallets.lookups
    assert run(wallets, ordering, event("evt_1", 1000)) == [Outcome.DUPLICATE]
    assert wallets.lookups == lookups


def test_budget_is_reserved_for_the_lookup_and_the_write_before_the_first_call(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    run(wallets, ordering, event())
    assert wallets.reserved == 2


def test_a_new_event_after_a_cached_lookup_is_still_written(ordering: Ordering) -> None:
    wallets = FakeWallets(source())
    run(wallets, ordering, event("evt_1", 1000), event("evt_2", 2000, card=Card(last4="7777")))
    assert [attributes["metadata"][SYNC_KEY]["event_id"] for _, attributes in wallets.updates] == ["evt_1", "evt_2"]


def test_a_card_still_receiving_a_burst_is_written_once_it_is_quiet(
    redis_client: redis.Redis, ordering: Ordering
) -> None:
    from service.snapshots import Settling

    settling = Snapshots(redis_client, burst_quiet=1.0)
    wallets = FakeWallets(source())
    first, second = event("evt_b1", 1000), event("evt_b2", 1001, card=Card(last4="1111"))
    settling.offer(first)
    sync_payment_method(first, wallets=wallets, ordering=ordering, snapshots=settling)  # a single event: at once
    settling.offer(second)  # arrives right after: a burst
    with pytest.raises(Settling) as raised:
        sync_payment_method(second, wallets=wallets, ordering=ordering, snapshots=settling)
    assert 0 < raised.value.retry_after <= 1.0
    assert len(wallets.updates) == 1


def test_a_task_that_got_the_lease_after_another_wrote_the_newest_state_makes_no_call(
    ordering: Ordering, snapshots: Snapshots, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a task's first look at Redis and its lease, another task may write the card's newest state: the
    look is repeated under the lease, so the late task neither reads nor writes (one read per write in a burst)."""
    wallets = FakeWallets(source())
    older, newest = event("evt_1", 1000), event("evt_2", 2000, card=Card(last4="7777"))
    run(wallets, ordering, event("evt_0", 900))  # the card is known: its ids are cached
    snapshots.offer(newest)
    real_lease = ordering.lease

    @contextlib.contextmanager
    def lease_after_the_other_task(provider: str, token: str) -> Iterator[None]:
        monkeypatch.setattr(ordering, "lease", real_lease)
        assert sync(newest, wallets, ordering).outcome is Outcome.APPLIED  # the other task, first to the lease
        with real_lease(provider, token):
            yield

    monkeypatch.setattr(ordering, "lease", lease_after_the_other_task)
    lookups, reserved = wallets.lookups, wallets.reserved
    assert sync(older, wallets, ordering).outcome is Outcome.STALE
    assert wallets.lookups == lookups + 1  # only the other task's
    assert wallets.reserved == reserved + 2
    assert [attributes["metadata"][SYNC_KEY]["event_id"] for _, attributes in wallets.updates] == ["evt_0", "evt_2"]
