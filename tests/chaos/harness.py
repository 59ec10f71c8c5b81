"""The system under chaos: redis-server (AOF), the simulator, gunicorn and a Celery worker, as real processes.

Every process runs in its own session (process group), so that a `kill -9` of "the worker" takes its pool children
with it and nothing outlives the suite: `close()` stops everything, and an `atexit` hook kills whatever a crash
left behind. Nothing here waits on timing for correctness; every wait is a bounded poll of an observable state.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
import requests

from tests.integration.processes import BIN, base_env, worker_env
from tests.support import ROOT, WEBHOOK_SECRET, RedisServer, free_port, wait_until

FINAL_STATUSES = frozenset({"applied", "duplicate", "stale", "unchanged", "unmatched", "ignored", "dead"})
QUEUE_KEY = "walletsync"  # tasks.celery_app.QUEUE: the broker list
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered but not yet acknowledged messages
DEAD_LETTERS_KEY = "walletsync:dead"

# -- leftovers ----------------------------------------------------------------------------------------------------

_live: dict[int, Callable[[], None]] = {}
_live_lock = threading.Lock()


def _track(owner: object, kill: Callable[[], None]) -> None:
    with _live_lock:
        _live[id(owner)] = kill


def _untrack(owner: object) -> None:
    with _live_lock:
        _live.pop(id(owner), None)


def kill_leftovers() -> int:
    """SIGKILL every process this suite started and has not stopped yet; returns how many were killed."""
    with _live_lock:
        kills = list(_live.values())
        _live.clear()
    for kill in kills:
        with contextlib.suppress(Exception):
            kill()
    return len(kills)


atexit.register(kill_leftovers)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- processes ----------------------------------------------------------------------------------------------------


class Proc:
    """One process (and its children) in its own process group, logging to a file shared by its incarnations."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.name, self.args, self.env, self.log_path = name, args, env, log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.url = ""  # where it serves HTTP, if it does
        self._offset = 0

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self._offset = log.tell()
            self.popen = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        pgid = self.popen.pid
        _track(self, lambda: _killpg(pgid, signal.SIGKILL))
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def log(self) -> str:
        """What this incarnation wrote so far."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def children(self) -> list[int]:
        """Direct children (e.g. Celery's pool processes)."""
        if self.popen is None:
            return []
        pids: list[int] = []
        for task in Path(f"/proc/{self.popen.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                pids.extend(int(pid) for pid in (task / "children").read_text().split())
        return pids

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL for the whole group after `timeout`; the group is killed in any case."""
        popen, self.popen = self.popen, None
        if popen is None:
            return None
        try:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                try:
                    popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _killpg(popen.pid, signal.SIGKILL)
                    popen.wait(timeout=30)
        finally:
            _killpg(popen.pid, signal.SIGKILL)  # children left behind
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=30)
            _untrack(self)
        return popen.returncode

    def kill(self) -> None:
        """`kill -9` the process and all its children at once."""
        popen, self.popen = self.popen, None
        if popen is None:
            return
        _killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=30)
        _untrack(self)


class ChaosRedis(RedisServer):
    """The project's RedisServer (fixed port and directory, so it restarts in place), with AOF and a tracked process."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, appendonly=True)

    def start(self) -> ChaosRedis:
        super().start()
        process = self.process
        if process is not None:
            _track(self, process.kill)
        return self

    def stop(self) -> None:
        """SIGTERM: redis-server flushes the append-only file and exits (what an orderly restart does)."""
        super().stop()
        _untrack(self)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _why(log: str) -> str:
    """The message of the log line that says why a process stopped (Celery: "Unrecoverable error: ...")."""
    lines = log.strip().splitlines()
    for marker in ("Unrecoverable error", "CRITICAL", "Error"):
        for line in reversed(lines):
            if marker in line:
                with contextlib.suppress(ValueError, AttributeError):
                    line = str(json.loads(line).get("message", line))
                return line[:300]
    return lines[-1][:300] if lines else "(no log)"


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class System:
    """One complete walletsync deployment on loopback, private to a scenario."""

    def __init__(
        self,
        directory: Path,
        *,
        worker_settings: dict[str, str] | None = None,
        concurrency: int = 4,
        web_workers: int = 2,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.worker_settings = dict(worker_settings or {})
        self.concurrency = concurrency
        self.web_workers = web_workers
        self.redis_server = ChaosRedis(directory / "redis")
        self.redis = redis.Redis.from_url(self.redis_server.url, socket_timeout=10, socket_connect_timeout=5)
        self.http = requests.Session()
        self.simulator: Proc | None = None
        self.web: Proc | None = None
        self.worker: Proc | None = None
        self.simulator_url = ""
        self.web_url = ""
        self.worker_starts = 0
        # Like the deployment's `restart: unless-stopped`: a worker that exits by itself is started again, and
        # each such exit is recorded (the chaos suite's own kills are not exits by themselves).
        self.worker_crashes: list[str] = []
        self._worker_lock = threading.RLock()
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> System:
        try:
            self.redis_server.start()
            self._start_simulator()
            self._start_web()
            self.start_worker()
        except BaseException:
            self.close()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _supervise(self) -> None:
        while not self._closing.wait(0.5):
            with self._worker_lock:
                worker = self.worker
                if self._closing.is_set() or worker is None or worker.popen is None or worker.alive():
                    continue
                code = worker.popen.returncode
                self.worker_crashes.append(f"at {time.strftime('%H:%M:%S')}, exit code {code}: {_why(worker.log())}")
                worker.stop()
                with contextlib.suppress(AssertionError):
                    self.start_worker()

    def close(self) -> None:
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=180)
        for proc in (self.worker, self.web, self.simulator):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop(timeout=15)
        with contextlib.suppress(Exception):
            self.redis_server.stop()
        self.redis.close()
        self.http.close()

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def _start_http(self, name: str, make: Callable[[int], tuple[list[str], dict[str, str]]], ready: str) -> Proc:
        """Start a process serving HTTP on a free port and wait for `ready` to answer 200. The port was free when
        chosen, but other test runs on this machine may take it first: then try again on another one."""
        failures = []
        for _ in range(3):
            port = free_port()
            args, env = make(port)
            proc = Proc(name, args, env=env, log_path=self.directory / f"{name}.log").start()
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until(
                    lambda proc=proc, url=url: _answers(url + ready) or not proc.alive(),
                    timeout=60,
                    interval=0.1,
                    what=name,
                )
            except AssertionError as exc:
                failures.append(str(exc))
            if proc.alive() and _answers(url + ready):
                proc.url = url
                return proc
            failures.append(f"{name} on port {port}: {_why(proc.log())}")
            proc.stop(timeout=10)
        raise AssertionError(f"{name} did not start: {failures}")

    def _start_simulator(self) -> None:
        def make(port: int) -> tuple[list[str], dict[str, str]]:
            return [str(BIN / "python"), "-m", "simulator", "--port", str(port)], base_env()

        self.simulator = self._start_http("simulator", make, "/_sim/health")
        self.simulator_url = self.simulator.url

    def _start_web(self) -> None:
        def make(port: int) -> tuple[list[str], dict[str, str]]:
            env = base_env(
                **self.web_env(),
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS=str(self.web_workers),
                PROMETHEUS_MULTIPROC_DIR=str(self.directory / "metrics"),
            )
            return [str(BIN / "gunicorn"), "service.wsgi:app"], env

        self.web = self._start_http("web", make, "/healthz")
        self.web_url = self.web.url

    def web_env(self) -> dict[str, str]:
        """What the web process (and the operator CLI) get: the Redis URL and the webhook secret."""
        return {"REDIS_URL": self.redis_server.url, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}

    def start_worker(self) -> Proc:
        """Start a new worker (a new node name each time) and wait until it consumes."""
        with self._worker_lock:
            return self._start_worker()

    def _start_worker(self) -> Proc:
        self.worker_starts += 1
        args = [
            str(BIN / "celery"),
            "-A",
            "tasks",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={self.concurrency}",
            "-n",
            f"chaos{self.worker_starts}@%h",
        ]
        env = worker_env(
            self.redis_server.url,
            self.simulator_url,
            WORKER_METRICS_PORT=str(free_port()),
            PROMETHEUS_MULTIPROC_DIR=str(self.directory / "metrics"),
            **self.worker_settings,
        )
        worker = Proc("worker", args, env=env, log_path=self.directory / "worker.log").start()
        self.worker = worker
        wait_until(lambda: "ready." in worker.log() or not worker.alive(), timeout=120, interval=0.1, what="worker")
        assert worker.alive(), worker.log()[-4000:]
        return worker

    def kill_and_restart_worker(self) -> None:
        """`kill -9` the whole worker (main process and pool), then start a new one."""
        with self._worker_lock:
            if self.worker is not None:
                self.worker.kill()
            self._start_worker()

    def kill_worker_children(self, *, all_of_them: bool, choose: Callable[[list[int]], int]) -> list[int]:
        """`kill -9` pool processes of the running worker (its main process replaces them)."""
        if self.worker is None:
            return []
        children = self.worker.children()
        victims = children if all_of_them else ([choose(children)] if children else [])
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victims

    def worker_logs(self) -> str:
        path = self.directory / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the simulator ------------------------------------------------------------------------------------------

    def _sim(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.simulator_url}{path}", timeout=60, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def seed(self, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        created: list[dict[str, Any]] = []
        for start in range(0, len(sources), 100):
            created.extend(self._sim("POST", "/_sim/sources", json=sources[start : start + 100])["data"])
        return created

    def faults(self, **changes: Any) -> dict[str, Any]:
        return dict(self._sim("POST", "/_sim/faults", json=changes))

    def rate_limits(self, **settings: Any) -> dict[str, Any]:
        return dict(self._sim("POST", "/_sim/rate_limits", json=settings))

    def reset_faults(self) -> None:
        self._sim("POST", "/_sim/faults", json={"reset": True})

    def sources(self) -> dict[str, dict[str, Any]]:
        """Every wallet entry's attributes by id."""
        return {item["id"]: item["attributes"] for item in self._sim("GET", "/_sim/sources")["data"]}

    def sim_requests(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        since = 0
        while True:
            batch = self._sim("GET", "/_sim/requests", params={"since": since})["requests"]
            if not batch:
                return entries
            entries.extend(batch)
            since = int(batch[-1]["seq"])

    def sim_stats(self) -> dict[str, Any]:
        return dict(self._sim("GET", "/_sim/stats"))

    # -- Redis state --------------------------------------------------------------------------------------------

    def records(self, event_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The status record of each event ({} when there is none)."""
        ids = list(event_ids)
        result: dict[str, dict[str, str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for event_id in chunk:
                pipe.hgetall(f"walletsync:event:stripe:{event_id}")
            for event_id, raw in zip(chunk, pipe.execute(), strict=True):
                result[event_id] = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
        return result

    def statuses(self, event_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(event_ids)
        result: dict[str, str | None] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for event_id in chunk:
                pipe.hget(f"walletsync:event:stripe:{event_id}", "status")
            for event_id, raw in zip(chunk, pipe.execute(), strict=True):
                result[event_id] = raw.decode() if raw is not None else None
        return result

    def history(self, event_id: str) -> list[dict[str, Any]]:
        raw = self.redis.lrange(f"walletsync:event:stripe:{event_id}:history", 0, -1)
        return [json.loads(item) for item in raw]  # type: ignore[union-attr]

    def broker_backlog(self) -> tuple[int, int]:
        """(messages waiting in the queue, messages delivered but not acknowledged: running, held for a
        countdown, or orphaned by a killed worker until the visibility timeout gives them back)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(QUEUE_KEY)
        pipe.hlen(UNACKED_KEY)
        waiting, unacked = pipe.execute()
        return int(waiting), int(unacked)

    def dead_letters(self) -> list[str]:
        return [member.decode() for member in self.redis.zrange(DEAD_LETTERS_KEY, 0, -1)]  # type: ignore[union-attr]

    def redis_alive(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    # -- the operator CLI ---------------------------------------------------------------------------------------

    def flask(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = base_env(**self.web_env())
        return subprocess.run(
            [str(BIN / "flask"), "--app", "service", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
