"""What Commerce Layer must look like after a run, and every way the service can fall short of it.

The contract: an event that got a 2xx is applied exactly once in effect, or dead-lettered. So the `payment_sync`
of each wallet entry must be the event with the largest `service.domain.ordering_key` among its acknowledged,
not dead-lettered events. When that event's write would have changed nothing (same card, status and customer
as an older event already written) the service skips it (`unchanged`), so the stored `event_id` may be that
older event's: any acknowledged event with the same content and a smaller key is accepted.

- lost: an acknowledged event whose status record is missing or not final, that ended `unmatched` though its
  wallet entry exists, or that is `applied` without any PATCH carrying it reaching Commerce Layer;
- wrong: a wallet entry whose final state differs from the model (status, card, event id, customer token, or a
  metadata key that is not ours);
- double PATCH: a wallet entry that received two successful PATCHes carrying the same event id. Allowed only when
  the first one's answer never reached the worker (a timeout, a dropped connection, a killed worker): the worker
  cannot know that write landed. Those are counted apart, with the reason found.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.harness import FINAL_STATUSES
from tests.chaos.provider import PlannedEvent


@dataclass(frozen=True)
class Wallet:
    """A seeded wallet entry and the state it started in."""

    id: str
    token: str
    customer: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Expectation:
    winner: PlannedEvent | None
    event_ids: frozenset[str]  # acceptable `payment_sync.event_id`s
    customers: frozenset[str]  # acceptable `customer_token`s


def expectations(
    wallets: Iterable[Wallet],
    events: Iterable[PlannedEvent],
    *,
    acked: set[str],
    excluded: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Expectation]:
    """The expected state of every wallet entry (by id) given the events that were acknowledged."""
    by_token: dict[str, list[PlannedEvent]] = defaultdict(list)
    for event in events:
        if event.event_id in acked and event.event_id not in excluded:
            by_token[event.token].append(event)
    result: dict[str, Expectation] = {}
    for wallet in wallets:
        candidates = by_token.get(wallet.token, [])
        if not candidates:
            result[wallet.id] = Expectation(None, frozenset(), frozenset({wallet.customer}))
            continue
        winner = max(candidates, key=lambda event: event.key)
        same = frozenset(e.event_id for e in candidates if e.content == winner.content and e.key <= winner.key)
        if winner.status == "active" and winner.customer is not None:
            customers = frozenset({winner.customer})
        else:
            # A detach never writes the customer; which update got written before it depends on delivery order.
            customers = frozenset({wallet.customer} | {e.customer for e in candidates if e.customer is not None})
        result[wallet.id] = Expectation(winner, same, customers)
    return result


def compare(wallet: Wallet, expected: Expectation, actual: dict[str, Any], events: dict[str, PlannedEvent]) -> str:
    """'' when the wallet entry is as expected, else what differs."""
    metadata = actual.get("metadata") or {}
    problems: list[str] = []
    for key, value in wallet.metadata.items():
        if metadata.get(key) != value:
            problems.append(f"metadata.{key} lost or changed ({metadata.get(key)!r})")
    sync = metadata.get("payment_sync")
    if expected.winner is None:
        if sync is not None:
            problems.append(f"payment_sync written ({sync.get('event_id')}) though no event was acknowledged")
    elif not isinstance(sync, dict):
        problems.append(f"no payment_sync; expected {expected.winner.event_id}")
    else:
        winner = expected.winner
        if sync.get("status") != winner.status:
            problems.append(f"status {sync.get('status')!r} != {winner.status!r}")
        if sync.get("card") != winner.card:
            problems.append(f"card {sync.get('card')} != {winner.card}")
        if sync.get("event_id") not in expected.event_ids:
            stored = events.get(str(sync.get("event_id")))
            what = f" (created {stored.created}, {stored.event_type})" if stored else ""
            problems.append(
                f"event_id {sync.get('event_id')}{what} != {winner.event_id} (created {winner.created}, "
                f"{winner.event_type})"
            )
        else:
            stored = events[sync["event_id"]]
            if (sync.get("event_type"), sync.get("event_created")) != (stored.event_type, stored.created):
                problems.append("event_type/event_created do not match the event id")
        if sync.get("provider") != "stripe":
            problems.append(f"provider {sync.get('provider')!r}")
    if actual.get("customer_token") not in expected.customers:
        problems.append(f"customer_token {actual.get('customer_token')!r} not in {sorted(expected.customers)}")
    return "; ".join(problems)


@dataclass(frozen=True)
class Patch:
    seq: int
    time: float  # when the simulator received it
    source_id: str
    event_id: str | None
    status: Any
    min_delay: float  # a lower bound of how long its answer took (see `patches`)


def patches(requests_log: list[dict[str, Any]]) -> list[Patch]:
    """The PATCHes in the simulator's log. The log is in completion order, so a request completed after every
    request logged before it was received: the latest of those arrival times bounds its answer's delay."""
    result = []
    latest_arrival = 0.0
    for entry in requests_log:
        arrived = float(entry["time"])
        latest_arrival = max(latest_arrival, arrived)
        if entry.get("method") != "PATCH" or not str(entry.get("path", "")).startswith("/api/"):
            continue
        body = entry.get("body")
        sync = None
        if isinstance(body, dict):
            sync = (((body.get("data") or {}).get("attributes") or {}).get("metadata") or {}).get("payment_sync")
        event = sync.get("event_id") if isinstance(sync, dict) else None
        source_id = str(entry["path"]).rsplit("/", 1)[-1]
        result.append(Patch(int(entry["seq"]), arrived, source_id, event, entry["status"], latest_arrival - arrived))
    return result


@dataclass
class Verdict:
    statuses: Counter[str] = field(default_factory=Counter)  # final status of the acknowledged events
    lost: list[str] = field(default_factory=list)  # "evt_...: why"
    wrong: list[str] = field(default_factory=list)  # "source id: what differs"
    double_patches: list[tuple[str, str, str]] = field(default_factory=list)  # (source, event, explanation)
    unexplained_double_patches: list[tuple[str, str]] = field(default_factory=list)

    @property
    def explained_double_patches(self) -> int:
        return len(self.double_patches) - len(self.unexplained_double_patches)


def verify(
    *,
    wallets: list[Wallet],
    events: list[PlannedEvent],
    acked: set[str],
    records: dict[str, dict[str, str]],
    sources: dict[str, dict[str, Any]],
    requests_log: list[dict[str, Any]],
    explain: Callable[[str, list[Patch]], str],
    expect_dead: set[str] | frozenset[str] = frozenset(),
) -> Verdict:
    """Check the final state of a run against the model. `expect_dead`: events allowed to be dead-lettered
    (they are left out of the model); any other dead letter is reported as lost."""
    verdict = Verdict()
    by_id = {event.event_id: event for event in events}
    all_patches = patches(requests_log)
    patched_ok = {p.event_id for p in all_patches if p.status == 200}
    dead: set[str] = set()
    for eid in sorted(acked):
        record = records.get(eid) or {}
        status = record.get("status")
        verdict.statuses[status or "missing"] += 1
        if status is None:
            verdict.lost.append(f"{eid}: no status record")
        elif status not in FINAL_STATUSES:
            verdict.lost.append(f"{eid}: still {status!r}")
        elif status == "unmatched":
            verdict.lost.append(f"{eid}: unmatched although its wallet entry exists")
        elif status == "dead":
            dead.add(eid)
            if eid not in expect_dead:
                verdict.lost.append(f"{eid}: dead-lettered ({record.get('dead_reason', '')[:120]})")
        elif status == "applied" and eid not in patched_ok:
            verdict.lost.append(f"{eid}: applied, but no successful PATCH carried it")
    expected = expectations(wallets, events, acked=acked, excluded=dead)
    for wallet in wallets:
        actual = sources.get(wallet.id)
        if actual is None:
            verdict.wrong.append(f"{wallet.id}: wallet entry gone")
            continue
        problem = compare(wallet, expected[wallet.id], actual, by_id)
        if problem:
            verdict.wrong.append(f"{wallet.id} ({wallet.token}): {problem}")

    groups: dict[tuple[str, str], list[Patch]] = defaultdict(list)
    for patch in all_patches:
        if patch.status == 200 and patch.event_id is not None:
            groups[(patch.source_id, patch.event_id)].append(patch)
    for (source_id, eid), group in sorted(groups.items()):
        if len(group) < 2:
            continue
        reason = explain(eid, group)
        verdict.double_patches.append((source_id, eid, reason))
        if not reason:
            verdict.unexplained_double_patches.append((source_id, eid))
    return verdict
