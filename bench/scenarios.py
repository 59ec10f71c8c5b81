"""The four measurements (and the appendfsync comparison), each on freshly started processes.

- ingest: the webhook against a trivial Flask route on the same gunicorn settings, alternating in one run, and the
  webhook on a Redis with `appendfsync always` against `everysec`;
- drain: a backlog queued with no worker running, then drained by one Celery worker with N pool processes against
  the simulator's rate limit; the clock runs from the first Commerce Layer call until every event is final;
- burst: 20 events for one card within one second, with workers idle and waiting;
- cost curve: the drain at several backlog sizes.
"""

from __future__ import annotations

import http.client
import random
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.load import LoadResult, Request, event, run_load, signed
from bench.procs import QUEUE, BenchError, CpuWindow, Processes, wait_for

FINAL = frozenset({"applied", "duplicate", "stale", "unchanged", "unmatched", "dead"})
CUSTOMER = "cus_QXg1o8vcGmoR32"  # the events' customer: the wallet entries already carry it


@dataclass(frozen=True)
class Config:
    quick: bool = False
    concurrency: int = 8  # load generator connections (= GUNICORN_WORKERS x GUNICORN_THREADS)
    web_workers: int = 2
    web_threads: int = 4
    ingest_requests: int = 3600  # per target, over all rounds (below gunicorn's max_requests per worker)
    ingest_rounds: int = 6
    ingest_warmup: int = 300
    limit: int = 50  # Commerce Layer's 50 per 10 s, scaled to 50 per 1 s
    limit_seconds: int = 1
    drain_events: int = 2000
    drain_sources: int = 1000
    drain_procs: tuple[int, ...] = (4, 16)
    burst_events: int = 20
    burst_trials: int = 5
    burst_procs: int = 4
    cost_sizes: tuple[int, ...] = (500, 1000, 2000, 4000)
    cost_procs: int = 4
    seed: int = 20260729

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            ingest_requests=400,
            ingest_rounds=2,
            ingest_warmup=50,
            drain_events=200,
            drain_sources=100,
            burst_trials=2,
            cost_sizes=(50, 100, 200, 400),
        )

    @property
    def rate_limits(self) -> str:
        return f"{self.limit}/{self.limit_seconds}s"

    @property
    def calls_per_second(self) -> float:
        return self.limit / self.limit_seconds


# -- the simulator's admin API -------------------------------------------------------------------------------


class Sim:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def _post(self, path: str, body: Any) -> Any:
        answer = self.http.post(f"{self.url}{path}", json=body, timeout=60)
        if answer.status_code >= 300:
            raise BenchError(f"simulator {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def _get(self, path: str, **params: Any) -> Any:
        answer = self.http.get(f"{self.url}{path}", params=params, timeout=60)
        answer.raise_for_status()
        return answer.json()

    def reset(self, config: Config) -> None:
        self._post("/_sim/reset", {})
        window = {"limit": config.limit, "seconds": config.limit_seconds, "per": "global"}
        self._post("/_sim/rate_limits", {"windows": [window], "per": "global"})

    def seed(self, tokens: list[str]) -> dict[str, str]:
        """token → source id; seeded in chunks, each entry with a label of its own to keep."""
        ids: dict[str, str] = {}
        for start in range(0, len(tokens), 500):
            chunk = [
                {"payment_source_token": t, "customer_token": CUSTOMER, "metadata": {"wallet_label": f"card {t[-6:]}"}}
                for t in tokens[start : start + 500]
            ]
            for resource in self._post("/_sim/sources", chunk)["data"]:
                ids[resource["attributes"]["payment_source_token"]] = resource["id"]
        return ids

    def stats(self) -> dict[str, Any]:
        return dict(self._get("/_sim/stats"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self._get("/_sim/requests", since=0)["requests"])

    def source(self, source_id: str) -> dict[str, Any]:
        return dict(self._get(f"/_sim/sources/{source_id}")["data"])


def api_calls(stats: dict[str, Any]) -> Counter[str]:
    """Commerce Layer API calls by route (`GET /api/...`, `PATCH /api/...`); token requests left out."""
    return Counter({route: n for route, n in stats.get("by_route", {}).items() if " /api/" in route})


def served_429(stats: dict[str, Any]) -> int:
    return int(stats.get("by_status", {}).get("429", 0))


# -- helpers -------------------------------------------------------------------------------------------------


def event_key(event_id: str) -> str:
    return f"walletsync:event:stripe:{event_id}"


def statuses(client: redis.Redis, event_ids: list[str]) -> list[str | None]:
    values: list[str | None] = []
    for start in range(0, len(event_ids), 1000):
        pipe = client.pipeline(transaction=False)
        for event_id in event_ids[start : start + 1000]:
            pipe.hget(event_key(event_id), "status")
        values.extend(v.decode() if isinstance(v, bytes) else v for v in pipe.execute())
    return values


def queue_idle(client: redis.Redis) -> bool:
    """No task waiting in the queue and none held unacknowledged by a worker (kombu's `unacked` hash)."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.hlen("unacked")
    waiting, unacked = pipe.execute()
    return int(waiting) == 0 and int(unacked) == 0


def scrape(metrics_url: str) -> dict[str, dict[str, float]]:
    """Counters of the worker's Prometheus endpoint that explain a drain: retries, outcomes, calls by status."""
    try:
        text = requests.get(metrics_url, timeout=10).text
    except requests.RequestException:
        return {}
    wanted = {
        "walletsync_task_retries": "reason",
        "walletsync_task_outcomes": "outcome",
        "walletsync_commercelayer_calls": "status",
    }
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        label = wanted.get(family.name)
        if label is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels.get(label, "")
                bucket = found.setdefault(family.name.removeprefix("walletsync_"), {})
                bucket[key] = bucket.get(key, 0.0) + sample.value
    return found


def load_average() -> tuple[float, float, float]:
    with open("/proc/loadavg") as loadavg:
        one, five, fifteen = loadavg.read().split()[:3]
    return float(one), float(five), float(fifteen)


# -- ingest --------------------------------------------------------------------------------------------------


@dataclass
class IngestTarget:
    name: str
    port: int
    path: str
    marker: bytes
    rounds: list[LoadResult] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)

    def ratio_to(self, other: IngestTarget) -> float:
        """Median over rounds of this target's rate over `other`'s in the same round: the two ran back to back,
        so each round's ratio sees the same machine, and one disturbed round cannot move the median."""
        return statistics.median(
            mine.rate / theirs.rate for mine, theirs in zip(self.rounds, other.rounds, strict=True)
        )

    @property
    def total(self) -> LoadResult:
        merged = self.rounds[0]
        for other in self.rounds[1:]:
            merged = merged.merge(other)
        return merged


def ingest(procs: Processes, config: Config, log: Any) -> list[IngestTarget]:
    tag = secrets.token_hex(3)
    everysec = procs.redis_server(appendfsync="everysec")
    always = procs.redis_server(appendfsync="always")
    kwargs = {"workers": config.web_workers, "threads": config.web_threads}
    trivial, trivial_port = procs.gunicorn(
        "bench.trivial_app:app", redis_url=everysec.url, name="web-trivial", **kwargs
    )
    web_e, port_e = procs.gunicorn("service.wsgi:app", redis_url=everysec.url, name="web-everysec", **kwargs)
    web_a, port_a = procs.gunicorn("service.wsgi:app", redis_url=always.url, name="web-always", **kwargs)
    targets = [
        IngestTarget("trivial Flask route", trivial_port, "/trivial", b'"ok"'),
        IngestTarget("webhook, appendfsync everysec", port_e, "/webhooks/stripe", b'"queued"'),
        IngestTarget("webhook, appendfsync always", port_a, "/webhooks/stripe", b'"queued"'),
    ]
    counter = iter(range(10**9))

    def batch(n: int) -> list[Request]:
        now = int(time.time())
        out = []
        for _ in range(n):
            i = next(counter)
            out.append(signed(event(f"evt_ing{tag}_{i}", f"pm_ing{tag}_{i}", now - 5), timestamp=now))
        return out

    try:
        for target in targets:  # warm-up: connections, imports, first Redis writes; not measured
            warm = run_load(
                target.port,
                target.path,
                batch(config.ingest_warmup),
                concurrency=config.concurrency,
                accept_marker=target.marker,
            )
            if warm.accepted != config.ingest_warmup:
                raise BenchError(f"warm-up of {target.name}: {warm.statuses} errors={warm.errors}")
        per_round = config.ingest_requests // config.ingest_rounds
        servers = {targets[0].name: (trivial, everysec), targets[1].name: (web_e, everysec)}
        servers[targets[2].name] = (web_a, always)
        for round_number in range(config.ingest_rounds):
            order = targets[round_number % 3 :] + targets[: round_number % 3]  # each goes first once in turn
            for target in order:
                web, store = servers[target.name]
                roots = {"web": web.pid, "redis": store.proc.pid}
                requests_ = batch(per_round)
                cpu = CpuWindow(roots).start()
                result = run_load(
                    target.port, target.path, requests_, concurrency=config.concurrency, accept_marker=target.marker
                )
                target.cpu.append(cpu.stop())
                target.rounds.append(result)
                log(
                    f"  ingest round {round_number + 1} {target.name}: {result.rate:.0f}/s "
                    f"p50 {result.percentile(50) * 1000:.1f} ms p99 {result.percentile(99) * 1000:.1f} ms "
                    f"(machine CPU {target.cpu[-1]['machine_busy_fraction']:.0%})"
                )
                if result.accepted != per_round:
                    raise BenchError(f"{target.name}: {result.accepted}/{per_round} accepted, {result.statuses}")
    finally:
        for proc in (web_a, web_e, trivial, always.proc, everysec.proc):
            procs.stop(proc)
    return targets


# -- drain ---------------------------------------------------------------------------------------------------


@dataclass
class Drain:
    events: int
    sources: int
    procs: int
    completed: bool = False
    settled: int = 0
    seconds: float = 0.0  # first Commerce Layer call → every event final
    seconds_from_ready: float = 0.0  # worker "ready." → every event final
    idle_seconds: float = 0.0  # first call → queue empty and nothing unacknowledged
    calls: Counter[str] = field(default_factory=Counter)
    token_requests: int = 0
    served_429: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    worker_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    call_times: list[float] = field(default_factory=list)  # seconds after the first call, every /api answer
    times_429: list[float] = field(default_factory=list)
    backlog_rate: float = 0.0  # webhooks per second while building the backlog
    # Time from a card's lookup (GET) reaching Commerce Layer to its PATCH reaching it, in seconds: the worker's
    # limiter counts both calls when the sync reserves its budget, before the GET.
    lookup_to_patch: list[float] = field(default_factory=list)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def calls_per_event(self) -> float:
        return self.total_calls / self.events

    @property
    def rate(self) -> float:
        return self.settled / self.seconds if self.seconds > 0 else 0.0

    def limit_bound_rate(self, config: Config) -> float:
        return config.calls_per_second / self.calls_per_event if self.total_calls else float("inf")

    def fraction_of_limit(self, config: Config) -> float:
        return self.rate / self.limit_bound_rate(config)


def drain(procs: Processes, sim: Sim, config: Config, *, events: int, sources: int, workers: int, log: Any) -> Drain:
    """Queue `events` webhooks over `sources` cards with no worker running, then drain them with `workers`."""
    tag = secrets.token_hex(3)
    result = Drain(events=events, sources=sources, procs=workers)
    store = procs.redis_server(appendfsync="everysec")
    web = worker = None
    try:
        sim.reset(config)
        tokens = [f"pm_d{tag}_{k}" for k in range(sources)]
        token_of = {source_id: token for token, source_id in sim.seed(tokens).items()}
        per_source = -(-events // sources)
        now = int(time.time())
        backlog = []  # (event id, request)
        for k in range(events):
            generation, card = divmod(k, sources)
            event_id = f"evt_d{tag}_{generation}_{card}"
            body = event(event_id, tokens[card], now - per_source + generation, exp_year=2030 + generation)
            backlog.append((event_id, signed(body, timestamp=now)))
        random.Random(config.seed + events + workers).shuffle(backlog)  # both events of a card anywhere
        event_ids = [event_id for event_id, _ in backlog]

        web, web_port = procs.gunicorn(
            "service.wsgi:app",
            redis_url=store.url,
            workers=config.web_workers,
            threads=config.web_threads,
            name="web-backlog",
        )
        sent = run_load(web_port, "/webhooks/stripe", [r for _, r in backlog], concurrency=config.concurrency)
        result.backlog_rate = sent.rate
        if sent.accepted != events:
            raise BenchError(f"backlog: {sent.accepted}/{events} queued, {sent.statuses}, errors={sent.errors}")
        procs.stop(web)
        web = None
        queued = Counter(s or "missing" for s in statuses(store.client, event_ids))
        depth = int(store.client.llen(QUEUE))
        if queued != Counter({"queued": events}) or depth != events:
            raise BenchError(f"backlog not as sent: statuses {queued}, queue depth {depth}")

        worker, metrics_url = procs.worker(
            redis_url=store.url,
            simulator_url=sim.url,
            concurrency=workers,
            rate_limits=config.rate_limits,
            name=f"worker{workers}",
        )
        ready_at = time.time()
        cpu = CpuWindow({"worker": worker.pid, "simulator": _sim_pid(procs), "redis": store.proc.pid}).start()
        expected = events * 1.2 / config.calls_per_second
        deadline = time.monotonic() + 90 + 3 * expected
        pending = list(event_ids)
        done_at = idle_at = None
        while time.monotonic() < deadline and worker.alive():
            if pending:
                pending = [e for e, s in zip(pending, statuses(store.client, pending), strict=True) if s not in FINAL]
                if not pending:
                    done_at = time.time()
            if done_at is not None and queue_idle(store.client):
                idle_at = time.time()
                break
            time.sleep(0.2)
        result.cpu = cpu.stop()
        result.load = load_average()
        result.worker_metrics = scrape(metrics_url)
        result.settled = events - len(pending)
        result.completed = not pending
        if not worker.alive():
            log(f"  the worker died:\n{worker.tail()}")
    finally:
        if worker is not None:
            procs.stop(worker)
        if web is not None:
            procs.stop(web)
    try:
        result.outcomes = Counter(s or "missing" for s in statuses(store.client, event_ids))
    finally:
        procs.stop(store.proc)

    stats = sim.stats()
    result.calls = api_calls(stats)
    result.served_429 = served_429(stats)
    result.token_requests = int(stats.get("by_route", {}).get("POST /oauth/token", 0))
    log_entries = [entry for entry in sim.requests() if str(entry["path"]).startswith("/api/")]
    if log_entries:
        first = min(float(entry["time"]) for entry in log_entries)
        result.call_times = sorted(float(entry["time"]) - first for entry in log_entries)
        result.times_429 = sorted(float(e["time"]) - first for e in log_entries if e["status"] == 429)
        result.lookup_to_patch = _lookup_to_patch(log_entries, token_of)
        end = done_at if done_at is not None else time.time()
        result.seconds = end - first
        result.idle_seconds = (idle_at - first) if idle_at is not None else 0.0
        result.seconds_from_ready = end - ready_at
    return result


def _lookup_to_patch(entries: list[dict[str, Any]], token_of: dict[str, str]) -> list[float]:
    last_lookup: dict[str, float] = {}
    gaps = []
    for entry in sorted(entries, key=lambda e: float(e["time"])):
        if entry["status"] != 200:
            continue
        if entry["method"] == "GET":
            for token in (entry.get("args") or {}).get("filter[q][payment_source_token_eq]", []):
                last_lookup[token] = float(entry["time"])
        elif entry["method"] == "PATCH":
            token = token_of.get(str(entry["path"]).rsplit("/", 1)[-1], "")
            if token in last_lookup:
                gaps.append(float(entry["time"]) - last_lookup.pop(token))
    return gaps


def _sim_pid(procs: Processes) -> int:
    for proc in procs.started:
        if proc.name == "simulator":
            return proc.pid
    return 0


# -- burst ---------------------------------------------------------------------------------------------------


@dataclass
class BurstTrial:
    source_id: str
    reads: int
    patches: int
    final_event: str | None
    newest_event: str
    outcomes: Counter[str]
    settle_seconds: float
    send_seconds: float

    @property
    def newest_won(self) -> bool:
        return self.final_event == self.newest_event


def burst(procs: Processes, sim: Sim, config: Config, log: Any) -> list[BurstTrial]:
    tag = secrets.token_hex(3)
    store = procs.redis_server(appendfsync="everysec")
    web = worker = None
    trials: list[BurstTrial] = []
    try:
        sim.reset(config)
        tokens = [f"pm_b{tag}_{t}" for t in range(config.burst_trials)]
        ids = sim.seed(tokens)
        web, web_port = procs.gunicorn(
            "service.wsgi:app",
            redis_url=store.url,
            workers=config.web_workers,
            threads=config.web_threads,
            name="web-burst",
        )
        worker, _ = procs.worker(
            redis_url=store.url,
            simulator_url=sim.url,
            concurrency=config.burst_procs,
            rate_limits=config.rate_limits,
            name=f"worker-burst{config.burst_procs}",
        )
        for trial, token in enumerate(tokens):
            created = int(time.time())
            # Same second, ids in sending order: by the service's order (created, detached, id) the last is newest.
            event_ids = [f"evt_b{tag}_{trial}_{i:02d}" for i in range(config.burst_events)]
            batch = [
                signed(event(e, token, created, exp_month=1 + i % 12, exp_year=2030 + i), timestamp=created)
                for i, e in enumerate(event_ids)
            ]
            gap = 0.95 / max(config.burst_events - 1, 1)
            began = time.monotonic()
            _send_spaced(web_port, batch, gap, began)
            sent_in = time.monotonic() - began

            def all_final(ids_: list[str] = event_ids) -> bool:
                return all(s in FINAL for s in statuses(store.client, ids_))

            wait_for(all_final, timeout=120, what=f"burst {trial} to settle", interval=0.05)
            settled_in = time.monotonic() - began
            wait_for(lambda: queue_idle(store.client), timeout=120, what="the queue to empty", interval=0.1)
            source = sim.source(ids[token])
            sync = (source["attributes"].get("metadata") or {}).get("payment_sync") or {}
            requests_log = sim.requests()
            reads = sum(
                1
                for r in requests_log
                if r["method"] == "GET" and token in (r.get("args") or {}).get("filter[q][payment_source_token_eq]", [])
            )
            patches = sum(1 for r in requests_log if r["method"] == "PATCH" and r["path"].endswith("/" + ids[token]))
            result = BurstTrial(
                source_id=ids[token],
                reads=reads,
                patches=patches,
                final_event=sync.get("event_id"),
                newest_event=event_ids[-1],
                outcomes=Counter(s or "missing" for s in statuses(store.client, event_ids)),
                settle_seconds=settled_in,
                send_seconds=sent_in,
            )
            trials.append(result)
            log(
                f"  burst {trial + 1}: {reads} reads, {patches} PATCHes, final {result.final_event} "
                f"(newest {result.newest_event}), outcomes {dict(result.outcomes)}"
            )
            time.sleep(0.5)
    finally:
        for proc in (worker, web, store.proc):
            if proc is not None:
                procs.stop(proc)
    return trials


def _send_spaced(port: int, batch: list[Request], gap: float, began: float) -> None:
    """Send the batch over one keep-alive connection, request i at `began + i * gap`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i, (body, headers) in enumerate(batch):
            delay = began + i * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            connection.request("POST", "/webhooks/stripe", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise BenchError(f"burst webhook answered {answer.status}")
    finally:
        connection.close()
