"""The six chaos scenarios, at two scales, and the table they report.

1. baseline: events over many payment sources, a quarter delivered more than once, all shuffled;
2. the same while the simulator fails: 500/503s, 429s with rate-limit headers, answers slower than the client's
   timeout, dropped connections;
3. the same while the worker is killed with SIGKILL every few seconds (its pool processes, or all of it) and
   started again;
4. the same with Redis stopped and restarted (same port, same append-only file) in the middle of the run;
5. Commerce Layer fully down for a while (a circuit breaker should open, then close); everything applied after;
6. permanent 422s for a few wallet entries: their events end as dead letters with the reason; after the simulator
   is "fixed", a replay applies them.

Each scenario builds its own system, runs, waits until every acknowledged event is final and the broker is idle,
and checks the final Commerce Layer state against `tests.chaos.model`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.chaos.harness import FINAL_STATUSES, System
from tests.chaos.model import Patch, Verdict, Wallet, verify
from tests.chaos.provider import PlannedEvent, Provider, plan_deliveries, plan_events

# -- scales -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    name: str
    events: int
    sources: int
    pace: float  # deliveries per second, so that the chaos happens while events flow
    settle_timeout: float  # the longest wait for every acknowledged event to be final
    kill_every: tuple[float, float]  # scenario 3: seconds between kills
    kill_for: float  # scenario 3: seconds of killing
    redis_down: float  # scenario 4: seconds Redis is stopped
    cl_down: float  # scenario 5: seconds Commerce Layer is down
    rejected_sources: int  # scenario 6: wallet entries answering 422
    backoff_cap: int  # SYNC_BACKOFF_CAP_SECONDS for the worker
    breaker_open: int  # BREAKER_OPEN_SECONDS for the worker
    # Scenarios 3 and 4: BROKER_VISIBILITY_TIMEOUT. Messages a killed worker (or a dropped broker connection)
    # leaves unacknowledged come back only after it; the default (900 s) would make those runs last 15 minutes.
    visibility_timeout: int
    duplicate_share: float = 0.25
    # Seconds a delivery is re-sent before the provider gives up: longer than the webhook's claim lease (60 s), which
    # a request cut off between its claim and its confirmation leaves behind.
    provider_budget: float = 240


FULL = Scale(
    name="full",
    events=1000,
    sources=200,
    pace=50,
    settle_timeout=900,
    kill_every=(2, 5),
    kill_for=45,
    redis_down=5,
    cl_down=30,
    rejected_sources=5,
    backoff_cap=10,
    breaker_open=15,
    visibility_timeout=60,
)
SHORT = Scale(
    name="short",
    events=120,
    sources=30,
    pace=12,
    settle_timeout=120,
    kill_every=(2, 4),
    kill_for=14,
    redis_down=2.5,
    cl_down=8,
    rejected_sources=3,
    backoff_cap=3,
    breaker_open=3,
    visibility_timeout=10,
    provider_budget=90,
)

# Slow answers in scenario 2: past the worker's Commerce Layer read timeout, which the scenario sets.
CLIENT_TIMEOUT_SECONDS = 2
SLOW_ANSWER_MS = 3000
# Commerce Layer's rate limit in these runs, the same for the simulator and the worker, so that the simulator's
# injected 429s carry the headers of a limit the worker also knows (the published test-mode limits, 25 calls per
# 10 s, would make every run last many minutes). The worker counts every call against it: it never hits it.
RATE_LIMIT = {"limit": 100, "seconds": 1}


def stuck_after_idle_seconds(visibility_timeout: int) -> float:
    """How long events may stay unfinished with no message anywhere in the broker before the run calls them lost.

    A worker killed right after taking a message off the queue (kombu's BRPOP) and before recording it as
    unacknowledged takes that message with it; the worker's redelivery sweep (service.redelivery) publishes such
    an event again once it has made no progress for 2 x the visibility timeout, checking every quarter of that
    (at most every 60 s). Longer than that, plus a margin, and nothing will finish the event any more."""
    after = 2 * visibility_timeout
    return after + min(60.0, after / 4) + 10.0


BREAKER_OPEN_KEY = "walletsync:breaker:open"  # service.breaker: exists while the breaker is open


# -- results ------------------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    number: int
    title: str
    scale: str
    events: int = 0
    deliveries: int = 0
    posts: int = 0
    acked: int = 0
    answered_2xx: int = 0
    non_2xx: int = 0
    applied: int = 0
    dup_web: int = 0
    dup_worker: int = 0
    stale: int = 0
    unchanged: int = 0
    dead: int = 0
    lost: int = 0
    wrong: int = 0
    cl_calls: int = 0
    double_explained: int = 0
    double_unexplained: int = 0
    worker_crashes: int = 0
    wall: float = 0.0
    total_wall: float = 0.0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the scenario's own expectations that did not hold
    lost_details: list[str] = field(default_factory=list)
    wrong_details: list[str] = field(default_factory=list)
    double_details: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    workdir: str = ""

    @property
    def cl_per_event(self) -> float:
        return self.cl_calls / self.events if self.events else 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost == 0 and self.wrong == 0 and not self.failures

    def problems(self) -> str:
        lines = [f"scenario {self.number} ({self.title}), logs in {self.workdir}"]
        if self.error:
            lines.append(f"error: {self.error}")
        lines += [f"failed: {failure}" for failure in self.failures]
        lines += [f"lost: {line}" for line in self.lost_details[:15]]
        lines += [f"wrong: {line}" for line in self.wrong_details[:15]]
        lines += [f"double PATCH: {line}" for line in self.double_details[:10]]
        return "\n".join(lines)


# -- one run ------------------------------------------------------------------------------------------------------


class Run:
    """The shared steps of a scenario: seed, plan, send (with chaos alongside), settle, check."""

    def __init__(self, system: System, scale: Scale, result: ScenarioResult, seed: int) -> None:
        self.system = system
        self.scale = scale
        self.result = result
        self.rng = random.Random(seed)
        self.chaos_rng = random.Random(seed + 1)
        self.seed = seed
        self.wallets: list[Wallet] = []
        self.events: list[PlannedEvent] = []
        self.deliveries: list[PlannedEvent] = []
        self.provider: Provider | None = None
        self.kill_times: list[float] = []
        self.wall = 0.0

    # seed and plan

    def prepare(self) -> None:
        scale = self.scale
        self.system.rate_limits(windows=[RATE_LIMIT], per="endpoint")
        tokens = [f"pm_chaos{self.seed}x{n:04d}" for n in range(scale.sources)]
        customers = {token: [f"cus_{token[3:]}a", f"cus_{token[3:]}b", f"cus_{token[3:]}c"] for token in tokens}
        seeded = self.system.seed(
            [
                {
                    "payment_source_token": token,
                    "customer_token": f"cus_{token[3:]}0",
                    "metadata": {"wallet_label": f"card {n}", "owner": "chaos"},
                }
                for n, token in enumerate(tokens)
            ]
        )
        self.wallets = [
            Wallet(item["id"], item["attributes"]["payment_source_token"], item["attributes"]["customer_token"],
                   dict(item["attributes"]["metadata"]))
            for item in seeded
        ]  # fmt: skip
        self.events = plan_events(self.rng, tokens, customers, scale.events, base_created=int(time.time()) - 7 * 86_400)
        self.deliveries = plan_deliveries(self.rng, self.events, duplicate_share=scale.duplicate_share)
        self.result.events = len(self.events)
        self.result.deliveries = len(self.deliveries)

    # send, with chaos alongside

    def send(self, chaos: Callable[[Run], None] | None = None) -> None:
        started = time.monotonic()
        self.provider = Provider(
            f"{self.system.web_url}/webhooks/stripe",
            pace=self.scale.pace,
            retry_budget_seconds=self.scale.provider_budget,
            seed=self.seed,
        ).start(self.deliveries)
        chaos_error: list[BaseException] = []
        thread = None
        if chaos is not None:

            def run_chaos() -> None:
                try:
                    chaos(self)
                except BaseException as exc:
                    chaos_error.append(exc)

            thread = threading.Thread(target=run_chaos, name="chaos", daemon=True)
            thread.start()
        budget = len(self.deliveries) / self.scale.pace + self.scale.provider_budget + 30
        self.provider.join(timeout=budget)
        if thread is not None:
            thread.join(timeout=budget)
            if thread.is_alive():
                raise AssertionError(f"the chaos thread did not finish within {budget:.0f} s")
        if chaos_error:
            raise chaos_error[0]
        self.wall += time.monotonic() - started
        stats = self.provider.stats
        if stats.gave_up:
            self.result.failures.append(
                f"{len(stats.gave_up)} deliveries never got a 2xx within {self.scale.provider_budget:.0f} s "
                f"(e.g. {stats.gave_up[:3]}); answers: {dict(stats.answers)}"
            )

    def wait_for_progress(self, share: float, timeout: float = 600) -> None:
        """Until `share` of the deliveries are done (the moment a mid-run fault starts)."""
        provider = self.provider
        assert provider is not None
        wanted = int(len(self.deliveries) * share)
        deadline = time.monotonic() + timeout
        while provider.completed < wanted and not provider.done():
            if time.monotonic() > deadline:
                raise AssertionError(f"the provider did not reach {wanted} deliveries within {timeout} s")
            time.sleep(0.05)

    @property
    def acked(self) -> set[str]:
        assert self.provider is not None
        return set(self.provider.stats.acked)

    # settle

    def settle(self, timeout: float | None = None) -> list[str]:
        """Wait until every acknowledged event has a final status and the broker holds no message, twice in a
        row; returns the events still not final when the time ran out."""
        started = time.monotonic()
        deadline = started + (timeout or self.scale.settle_timeout)
        acked = sorted(self.acked)
        quiet = 0
        idle_since: float | None = None
        pending: list[str] = acked
        while True:
            try:
                statuses = self.system.statuses(acked)
                pending = [eid for eid, status in statuses.items() if status not in FINAL_STATUSES]
                waiting, unacked = self.system.broker_backlog()
            except redis.RedisError:
                pending, waiting, unacked = acked, -1, -1
            idle = waiting == 0 and unacked == 0
            quiet = quiet + 1 if not pending and idle else 0
            if quiet >= 3:
                break
            idle_since = (idle_since or time.monotonic()) if idle else None
            stuck_after = stuck_after_idle_seconds(self.scale.visibility_timeout)
            if idle_since is not None and time.monotonic() - idle_since > stuck_after:
                # No message is queued, running or held anywhere: nothing can finish these events any more.
                self.result.failures.append(
                    f"{len(pending)} events not final while the broker held no message for {stuck_after:.0f} s"
                )
                break
            if time.monotonic() > deadline:
                self.result.failures.append(
                    f"not settled after {timeout or self.scale.settle_timeout:.0f} s: {len(pending)} events not "
                    f"final, {waiting} messages queued, {unacked} unacknowledged"
                )
                break
            time.sleep(0.5)
        self.wall += time.monotonic() - started
        return pending

    # check

    def check(self, *, expect_dead: set[str] | None = None, count: bool = True) -> Verdict:
        system = self.system
        acked = self.acked
        records = system.records(acked)
        requests_log = system.sim_requests()
        verdict = verify(
            wallets=self.wallets,
            events=self.events,
            acked=acked,
            records=records,
            sources=system.sources(),
            requests_log=requests_log,
            explain=self._explainer(records),
            expect_dead=expect_dead or set(),
        )
        if not count:
            return verdict
        result = self.result
        stats = self.provider.stats if self.provider else None
        if stats is not None:
            result.posts = stats.posts
            result.acked = len(stats.acked)
            result.answered_2xx = stats.answered_2xx
            result.non_2xx = stats.non_2xx
            result.dup_web = stats.answered("duplicate")
        result.applied = verdict.statuses["applied"]
        result.dup_worker = verdict.statuses["duplicate"]
        result.stale = verdict.statuses["stale"]
        result.unchanged = verdict.statuses["unchanged"]
        result.dead = max(result.dead, verdict.statuses["dead"])
        result.lost += len(verdict.lost)
        result.wrong += len(verdict.wrong)
        result.lost_details += verdict.lost
        result.wrong_details += verdict.wrong
        result.double_explained = verdict.explained_double_patches
        result.double_unexplained = len(verdict.unexplained_double_patches)
        result.double_details = [
            f"{source} {eid}: {why or 'UNEXPLAINED'}" for source, eid, why in verdict.double_patches
        ]
        sim = system.sim_stats()
        result.cl_calls = sum(count for route, count in sim["by_route"].items() if " /api/" in route)
        result.evidence["simulator"] = sim
        result.evidence["statuses"] = dict(verdict.statuses)
        if stats is not None:
            result.evidence["answers"] = dict(stats.answers)
        if verdict.wrong:
            result.evidence["wrong_timelines"] = self._timelines(verdict.wrong, requests_log, records)
        return verdict

    def _explainer(self, records: dict[str, dict[str, str]]) -> Callable[[str, list[Patch]], str]:
        def explain(eid: str, group: list[Patch]) -> str:
            first = min(group, key=lambda patch: patch.time)  # the one sent first
            if first.min_delay >= CLIENT_TIMEOUT_SECONDS - 0.2 and first.min_delay >= 1:
                return f"first answer came after >= {first.min_delay:.1f} s (client timed out)"
            record = records.get(eid) or {}
            text = " ".join(json.dumps(entry) for entry in self.system.history(eid)).lower()
            text += " " + record.get("first_error", "").lower() + " " + record.get("last_error", "").lower()
            if "timeout" in text:
                return "the worker saw a timeout"
            if "connection" in text:
                return "the worker saw a dropped connection"
            if any(first.time - 1 <= kill <= first.time + 15 for kill in self.kill_times):
                return "worker killed around the first PATCH"
            return ""

        return explain

    def _timelines(
        self, wrong: list[str], requests_log: list[dict[str, Any]], records: dict[str, dict[str, str]]
    ) -> dict[str, list[str]]:
        """For the first few wrong wallet entries: every PATCH they got, to see which write came last."""
        by_id = {event.event_id: event for event in self.events}
        timelines: dict[str, list[str]] = {}
        for line in wrong[:5]:
            source_id = line.split(" ", 1)[0]
            entries = []
            for entry in requests_log:
                if entry.get("method") == "PATCH" and entry.get("path", "").endswith("/" + source_id):
                    sync = entry["body"]["data"]["attributes"]["metadata"]["payment_sync"]
                    event = by_id.get(sync["event_id"])
                    status = (records.get(sync["event_id"]) or {}).get("status")
                    entries.append(
                        f"seq {entry['seq']} t={entry['time']:.3f} {entry['status']} {sync['event_id']} "
                        f"key={event.key if event else '?'} final={status}"
                    )
            timelines[source_id] = entries
        return timelines


# -- chaos --------------------------------------------------------------------------------------------------------


def kill_workers(run: Run) -> None:
    """Scenario 3: every few seconds, SIGKILL pool processes (the worker replaces them) or the whole worker
    (then start a new one), for `kill_for` seconds."""
    system, scale, rng = run.system, run.scale, run.chaos_rng
    end = time.monotonic() + scale.kill_for
    kinds: Counter[str] = Counter()
    number = 0
    while time.monotonic() < end:
        time.sleep(rng.uniform(*scale.kill_every))
        number += 1
        run.kill_times.append(time.time())
        if number % 3 == 0:
            system.kill_and_restart_worker()
            kinds["whole worker"] += 1
        else:
            victims = system.kill_worker_children(all_of_them=rng.random() < 0.4, choose=rng.choice)
            kinds["pool processes" if len(victims) > 1 else "one pool process"] += 1
    run.result.evidence["kills"] = dict(kinds)
    run.result.notes.append(
        f"{number} SIGKILLs in {scale.kill_for:.0f} s: "
        + ", ".join(f"{count}x {kind}" for kind, count in sorted(kinds.items()))
        + f"; {system.worker_starts} worker starts"
    )


def stop_redis(run: Run) -> None:
    """Scenario 4: after 30% of the deliveries, stop Redis (SIGTERM: AOF flushed), wait, start it again."""
    system = run.system
    run.wait_for_progress(0.3)
    stopped = time.monotonic()
    system.redis_server.stop()
    time.sleep(run.scale.redis_down)
    system.redis_server.start()
    run.result.evidence["redis_outage_seconds"] = round(time.monotonic() - stopped, 1)
    run.result.notes.append(
        f"Redis stopped after 30% of the deliveries, restarted on port {system.redis_server.port} "
        f"with its AOF after {time.monotonic() - stopped:.1f} s"
    )


def commerce_layer_down(run: Run) -> None:
    """Scenario 5: after 20% of the deliveries, Commerce Layer answers 503 to everything for `cl_down` s."""
    system = run.system
    run.wait_for_progress(0.2)
    down_at = time.time()
    system.faults(down=True)
    time.sleep(run.scale.cl_down)
    system.faults(down=False)
    up_at = time.time()
    run.result.evidence["outage"] = (down_at, up_at)


# -- scenarios ----------------------------------------------------------------------------------------------------


def worker_settings(scale: Scale, **extra: str) -> dict[str, str]:
    return {
        "SYNC_MAX_ATTEMPTS": "1000",  # transient faults must never dead-letter here
        # Every scenario runs with the scale's visibility timeout, so that the service's own safety nets (redelivery
        # of abandoned messages and of events without progress) act within the run.
        "BROKER_VISIBILITY_TIMEOUT": str(scale.visibility_timeout),
        "SYNC_BACKOFF_CAP_SECONDS": str(min(scale.backoff_cap, scale.visibility_timeout // 3)),
        "BREAKER_OPEN_SECONDS": str(scale.breaker_open),
        "COMMERCELAYER_RATE_LIMITS": f"{RATE_LIMIT['limit']}/{RATE_LIMIT['seconds']}s",
        **extra,
    }


def scenario_baseline(run: Run) -> None:
    run.prepare()
    run.send()
    run.settle()
    run.check()
    expect_no_dead(run)


def scenario_flaky(run: Run) -> None:
    run.prepare()
    faults = run.system.faults(
        seed=run.seed,
        error_rate=0.10,
        error_statuses=[500, 503],
        rate_429=0.05,
        latency_rate=0.05,
        latency_ms=SLOW_ANSWER_MS,
        drop_rate=0.02,
    )
    run.result.notes.append(
        f"faults: 10% {faults['error_statuses']}, 5% 429 (Retry-After {faults['retry_after']} s), 5% answers after "
        f"{SLOW_ANSWER_MS} ms (client timeout {CLIENT_TIMEOUT_SECONDS} s), 2% dropped connections; kept on until "
        "everything settled"
    )
    run.send()
    run.settle()
    time.sleep(SLOW_ANSWER_MS / 1000 + 1)  # let any slow write still sleeping in the simulator land first
    run.system.reset_faults()
    run.check()
    sim = run.result.evidence["simulator"]
    run.result.notes.append(
        f"simulator: {sim['faults_injected']} faults injected, answers {sim['by_status']}, {sim['dropped']} dropped"
    )
    expect_no_dead(run)


def scenario_kills(run: Run) -> None:
    run.prepare()
    run.send(kill_workers)
    run.settle()
    run.check()
    expect_no_dead(run)


def scenario_redis(run: Run) -> None:
    run.prepare()
    run.send(stop_redis)
    run.settle()
    run.check()
    answers = run.result.evidence.get("answers", {})
    run.result.notes.append(
        "webhook answers while Redis was away: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()) if not k.startswith("200"))
    )
    expect_no_dead(run)


def scenario_outage(run: Run) -> None:
    run.prepare()
    run.send(commerce_layer_down)
    run.settle()
    settled_at = time.time()
    run.check()
    expect_no_dead(run)
    down_at, up_at = run.result.evidence["outage"]
    requests_log = run.system.sim_requests()
    during = [e for e in requests_log if down_at <= e["time"] < up_at and e["path"].startswith("/api/")]
    before = [e for e in requests_log if down_at - 10 <= e["time"] < down_at and e["path"].startswith("/api/")]
    seconds = up_at - down_at
    opened = run.system.worker_logs().count("circuit breaker opened")
    open_at_end = int(run.system.redis.pttl(BREAKER_OPEN_KEY)) > 0  # type: ignore[arg-type]
    run.result.evidence.update(
        calls_during_outage=len(during),
        breaker_opened=opened,
        breaker_open_at_end=open_at_end,
        recovered_after=round(settled_at - up_at, 1),
    )
    run.result.notes.append(
        f"Commerce Layer down {seconds:.0f} s after 20% of the deliveries: {len(during)} API calls during the outage "
        f"({len(during) / seconds:.1f}/s; {len(before) / 10:.1f}/s in the 10 s before); 'circuit breaker opened' "
        f"logged {opened} times; everything final {settled_at - up_at:.0f} s after it came back"
    )
    if not opened:
        run.result.notes.append("no circuit breaker evidence: the worker kept calling Commerce Layer during the outage")


def scenario_rejected(run: Run) -> None:
    run.prepare()
    system = run.system
    rejected = run.rng.sample(run.wallets, run.scale.rejected_sources)
    rejected_tokens = {wallet.token for wallet in rejected}
    system.faults(source_statuses={wallet.id: 422 for wallet in rejected})
    run.send()
    run.settle()
    expected_dead = {event.event_id for event in run.events if event.token in rejected_tokens} & run.acked
    first = run.check(expect_dead=expected_dead, count=False)
    run.result.lost += len(first.lost)
    run.result.wrong += len(first.wrong)
    run.result.lost_details += [f"(before replay) {line}" for line in first.lost]
    run.result.wrong_details += [f"(before replay) {line}" for line in first.wrong]
    records = system.records(expected_dead)
    dead_letters = {member.partition(":")[2] for member in system.dead_letters()}
    run.result.dead = len(dead_letters)
    if dead_letters != expected_dead:
        run.result.failures.append(
            f"dead letters {len(dead_letters)} != the {len(expected_dead)} events of the 422 sources "
            f"(missing {sorted(expected_dead - dead_letters)[:5]}, extra {sorted(dead_letters - expected_dead)[:5]})"
        )
    reasons = Counter(records[eid].get("dead_reason", "")[:60] for eid in expected_dead)
    if not all("422" in reason for reason in reasons):
        run.result.failures.append(f"dead letters without the 422 in their reason: {dict(reasons)}")
    run.result.evidence["dead_reasons"] = dict(reasons)
    run.result.notes.append(
        f"{len(rejected)} sources answered 422: {len(dead_letters)} dead letters, reasons {dict(reasons)}"
    )

    system.reset_faults()
    how = replay_dead_letters(run)
    run.result.notes.append(how)
    run.settle()
    run.check()
    left = system.dead_letters()
    run.result.evidence["dead_after_replay"] = len(left)
    if left:
        run.result.failures.append(f"{len(left)} dead letters still listed after the replay: {left[:5]}")
    statuses = Counter((system.statuses(expected_dead)).values())
    run.result.evidence["replayed_statuses"] = dict(statuses)
    if statuses.get("dead"):
        run.result.failures.append(f"replayed events still dead: {dict(statuses)}")


def replay_dead_letters(run: Run) -> str:
    """`flask --app service dead-letters replay --all --json`; when the command does not exist (yet), the events
    are republished from their stored payload the way a replay would."""
    answer = run.system.flask("dead-letters", "replay", "--all", "--json")
    run.result.evidence["replay_cli"] = {"exit": answer.returncode, "stdout": answer.stdout[-3000:]}
    if answer.returncode == 0:
        try:
            report = json.loads(answer.stdout)
            summary = ", ".join(f"{key} {len(value)}" for key, value in report.items() if isinstance(value, list))
        except (ValueError, AttributeError):
            summary = answer.stdout.strip()[:200]
        return f"replayed with `flask --app service dead-letters replay --all --json`: {summary}"
    missing = "No such command" in answer.stderr
    if not missing:
        run.result.failures.append(f"the replay command failed ({answer.returncode}): {answer.stderr.strip()[-500:]}")
    count = republish_dead_letters(run.system)
    reason = "does not exist" if missing else "failed"
    return f"`flask --app service dead-letters replay` {reason}: republished {count} stored events directly"


def republish_dead_letters(system: System) -> int:
    from service.config import BrokerSettings
    from service.domain import Outcome
    from service.eventlog import EventLog
    from tasks.celery_app import SYNC_TASK, create_celery

    events = EventLog(system.redis)
    celery = create_celery(BrokerSettings(redis_url=system.redis_server.url))
    count = 0
    try:
        for member in system.dead_letters():
            provider, _, eid = member.partition(":")
            event = events.stored_event(provider, eid)
            if event is None:
                continue
            # Recorded before publishing, so a fast worker's final status is never overwritten by "queued".
            events.record(provider, eid, Outcome.QUEUED, note={"replayed_by": "chaos suite"})
            celery.send_task(SYNC_TASK, args=[event.to_message()], kwargs={"accepted_at": time.time()})
            events.forget_dead_letter(provider, eid)
            count += 1
    finally:
        celery.close()
    return count


def expect_no_dead(run: Run) -> None:
    if run.result.dead:
        run.result.failures.append(f"{run.result.dead} events dead-lettered by transient faults")


@dataclass(frozen=True)
class Scenario:
    number: int
    title: str
    body: Callable[[Run], None]
    settings: Callable[[Scale], dict[str, str]]


SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in (
        Scenario(1, "shuffled + duplicates", scenario_baseline, lambda scale: worker_settings(scale)),
        Scenario(
            2,
            "CL 5xx/429/slow/drops",
            scenario_flaky,
            lambda scale: worker_settings(scale, COMMERCELAYER_TIMEOUT_SECONDS=str(CLIENT_TIMEOUT_SECONDS)),
        ),
        Scenario(
            3,
            "worker kill -9",
            scenario_kills,
            lambda scale: worker_settings(
                scale,
                BROKER_VISIBILITY_TIMEOUT=str(scale.visibility_timeout),
                SYNC_BACKOFF_CAP_SECONDS=str(min(scale.backoff_cap, scale.visibility_timeout // 3)),
            ),
        ),
        Scenario(
            4,
            "Redis stop/start",
            scenario_redis,
            lambda scale: worker_settings(
                scale,
                BROKER_VISIBILITY_TIMEOUT=str(scale.visibility_timeout),
                SYNC_BACKOFF_CAP_SECONDS=str(min(scale.backoff_cap, scale.visibility_timeout // 3)),
            ),
        ),
        Scenario(5, "CL down", scenario_outage, lambda scale: worker_settings(scale)),
        Scenario(6, "422 -> dead -> replay", scenario_rejected, lambda scale: worker_settings(scale)),
    )
}


def run_scenario(number: int, scale: Scale, workdir: Path, *, seed: int | None = None) -> ScenarioResult:
    scenario = SCENARIOS[number]
    title = scenario.title
    if number == 4:
        title = f"Redis stopped {scale.redis_down:g} s"
    elif number == 5:
        title = f"CL down {scale.cl_down:g} s"
    result = ScenarioResult(number, title, scale.name)
    directory = workdir / f"scenario{number}"
    result.workdir = str(directory)
    seed = seed if seed is not None else random.randrange(1, 10**6)
    result.notes.append(f"seed {seed}")
    started = time.monotonic()
    system = System(directory, worker_settings=scenario.settings(scale))
    try:
        system.start()
        run = Run(system, scale, result, seed)
        scenario.body(run)
        result.wall = run.wall
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.evidence["traceback"] = traceback.format_exc()
    finally:
        system.close()
    result.worker_crashes = len(system.worker_crashes)
    result.evidence["worker_crashes"] = list(system.worker_crashes)
    result.notes += [f"worker exited by itself (restarted, as `restart: unless-stopped` would): {crash}"
                     for crash in system.worker_crashes]  # fmt: skip
    result.total_wall = time.monotonic() - started
    return result


# -- the table ----------------------------------------------------------------------------------------------------

COLUMNS = (
    ("#", "number", "d"),
    ("scenario", "title", "s"),
    ("events", "events", "d"),
    ("sent", "posts", "d"),
    ("2xx", "answered_2xx", "d"),
    ("non-2xx", "non_2xx", "d"),
    ("applied", "applied", "d"),
    ("dup web", "dup_web", "d"),
    ("dup worker", "dup_worker", "d"),
    ("stale", "stale", "d"),
    ("unchanged", "unchanged", "d"),
    ("dead", "dead", "d"),
    ("lost", "lost", "d"),
    ("wrong", "wrong", "d"),
    ("CL calls/event", "cl_per_event", ".2f"),
    ("2x PATCH expl/unexpl", "double", "s"),
    ("worker crashes", "worker_crashes", "d"),
    ("wall s", "wall", ".1f"),
)


def _cell(result: ScenarioResult, attribute: str, spec: str) -> str:
    if attribute == "double":
        return f"{result.double_explained}/{result.double_unexplained}"
    if result.error is not None and attribute not in ("number", "title", "events"):
        return "ERR" if attribute == "lost" else "-"
    return format(getattr(result, attribute), spec)


def format_table(results: list[ScenarioResult]) -> str:
    rows = [[name for name, _, _ in COLUMNS]]
    rows += [[_cell(result, attribute, spec) for _, attribute, spec in COLUMNS] for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if COLUMNS[i][2] == "s" and COLUMNS[i][1] != "double" else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_notes(results: list[ScenarioResult]) -> str:
    lines = []
    for result in results:
        status = "ok" if result.ok else "FAILED"
        lines.append(f"[{result.number}] {result.title}: {status}, {result.total_wall:.0f} s with process start-up")
        lines += [f"    {note}" for note in result.notes]
        if not result.ok:
            lines += ["    " + line for line in result.problems().splitlines()]
            timelines = result.evidence.get("wrong_timelines") or {}
            for source, entries in list(timelines.items())[:3]:
                lines.append(f"    PATCHes of {source}:")
                lines += [f"      {entry}" for entry in entries]
            if result.error:
                lines.append("    " + result.evidence.get("traceback", "").replace("\n", "\n    "))
    return "\n".join(lines)


LEGEND = (
    "events: distinct events; sent: webhook POSTs (duplicates and re-sends included); 2xx/non-2xx: answers; "
    "applied/dup worker/stale/unchanged/dead: final status of the acknowledged events; dup web: deliveries "
    "answered 'duplicate'; lost/wrong: see tests/chaos/model.py; CL calls/event: /api calls to the simulator per "
    "distinct event; 2x PATCH: wallet entries written twice with the same event (explained by a lost answer / not); "
    "worker crashes: times the worker exited by itself and was started again"
)
