"""The real processes of a benchmark run, each in its own session with its own log file, and CPU accounting.

Every process is started with `start_new_session`, so stopping it also reaches its children (gunicorn and
Celery pool processes) through its own process group, and nothing else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "whsec_bench_walletsync_0123456789abcdef"
SIM_CLIENT_ID, SIM_CLIENT_SECRET = "sim-client-id", "sim-client-secret"
QUEUE = "walletsync"  # tasks.celery_app.QUEUE


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a process died, a wait timed out)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def base_env(**extra: str) -> dict[str, str]:
    """This environment without any service setting that could leak in, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMERCELAYER_", "STRIPE_", "GUNICORN_"))}
    for name in ("REDIS_URL", "WORKER_METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR", "SYNC_MAX_ATTEMPTS"):
        env.pop(name, None)
    env.update({"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", **extra})
    return env


class Proc:
    """One started process (and its descendants, through its process group)."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 40) -> None:
        if self.popen is None:
            return
        group = self.popen.pid  # its own session: the process group id is its pid
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)  # any child left behind in its group
        self.popen = None


class Processes:
    """Everything started in one run, stopped in reverse order by `stop_all` (also after errors)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        # Names stay unique so that each process keeps its own log file.
        taken = {p.name for p in self.started}
        unique, n = name, 1
        while unique in taken or (self.log_dir / f"{unique}.log").exists():
            n += 1
            unique = f"{name}-{n}"
        proc = Proc(unique, args, env=env, log_dir=self.log_dir).start()
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 40) -> None:
        proc.stop(timeout)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=20)

    # -- the components --------------------------------------------------------------------------------

    def redis_server(self, *, appendfsync: str = "everysec") -> RedisHandle:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (`make redis-server` installs it)")
        port = free_port()
        directory = self.log_dir / f"redis-{port}"
        directory.mkdir(parents=True)
        args = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
            "--appendfsync", appendfsync, "--dir", str(directory), "--maxmemory-policy", "noeviction",
            "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        proc = self.start(f"redis-{appendfsync}", args, base_env())
        client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=10)
        wait_for(lambda: _pings(client), timeout=20, what="redis-server")
        return RedisHandle(proc, f"redis://127.0.0.1:{port}/0", client)

    def simulator(self) -> tuple[Proc, str]:
        port = free_port()
        args = [str(BIN / "python"), "-m", "simulator", "--port", str(port), "--token-ttl", "7200"]
        proc = self.start("simulator", args, base_env(LOG_LEVEL="WARNING"))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/_sim/health") or not proc.alive(), timeout=30, what="the simulator")
        if not proc.alive():
            raise BenchError(f"the simulator did not start:\n{proc.tail()}")
        return proc, url

    def gunicorn(self, app: str, *, redis_url: str, workers: int, threads: int, name: str) -> tuple[Proc, int]:
        port = free_port()
        env = base_env(
            REDIS_URL=redis_url,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_WORKERS=str(workers),
            GUNICORN_THREADS=str(threads),
            PROMETHEUS_MULTIPROC_DIR=str(self.log_dir / f"metrics-{name}-{port}"),
        )
        proc = self.start(name, [str(BIN / "gunicorn"), app], env)
        wait_for(lambda: _listening(port) or not proc.alive(), timeout=30, what=f"gunicorn ({app})", interval=0.1)
        if not proc.alive():
            raise BenchError(f"gunicorn {app} did not start:\n{proc.tail()}")
        # Every worker forked and serving: the master logs one "Booting worker" line per worker.
        wait_for(lambda: proc.log().count("Booting worker") >= workers, timeout=30, what="gunicorn workers")
        return proc, port

    def worker(
        self, *, redis_url: str, simulator_url: str, concurrency: int, rate_limits: str, name: str
    ) -> tuple[Proc, str]:
        metrics_port = free_port()
        env = base_env(
            REDIS_URL=redis_url,
            COMMERCELAYER_BASE_URL=simulator_url,
            COMMERCELAYER_AUTH_URL=f"{simulator_url}/oauth/token",
            COMMERCELAYER_CLIENT_ID=SIM_CLIENT_ID,
            COMMERCELAYER_CLIENT_SECRET=SIM_CLIENT_SECRET,
            COMMERCELAYER_RATE_LIMITS=rate_limits,
            WORKER_METRICS_PORT=str(metrics_port),
            PROMETHEUS_MULTIPROC_DIR=str(self.log_dir / f"metrics-{name}-{metrics_port}"),
        )
        args = [
            str(BIN / "celery"), "-A", "tasks", "worker", "--loglevel=INFO", f"--concurrency={concurrency}",
            "-n", f"{name}@%h",
        ]  # fmt: skip
        proc = self.start(name, args, env)
        wait_for(
            lambda: "ready." in proc.log() or not proc.alive(), timeout=120, what="the celery worker", interval=0.1
        )
        if not proc.alive():
            raise BenchError(f"the celery worker did not start:\n{proc.tail()}")
        return proc, f"http://127.0.0.1:{metrics_port}/metrics"


class RedisHandle:
    def __init__(self, proc: Proc, url: str, client: redis.Redis) -> None:
        self.proc, self.url, self.client = proc, url, client


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- CPU accounting ------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over all cores (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


def _process_table() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds used so far) for every process we may read."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        # After "pid (comm) ": state ppid ... utime (index 11) stime (12)
        table[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICK)
    return table


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its live descendants."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    result: dict[str, float] = {}
    for name, root in roots.items():
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                total += table[pid][1]
            stack.extend(children.get(pid, []))
        result[name] = total
    return result


def _own_cpu() -> float:
    """CPU seconds of this process alone (all its threads: the load generator and the pollers)."""
    times = os.times()
    return times.user + times.system


class CpuWindow:
    """Machine and per-process-tree CPU use between `start` and `stop`, plus this process's own ("harness")."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self._start: tuple[float, tuple[float, float], dict[str, float]] | None = None
        self.result: dict[str, float] = {}

    def start(self) -> CpuWindow:
        self._start = (time.monotonic(), machine_cpu(), {**tree_cpu(self.roots), "harness": _own_cpu()})
        return self

    def stop(self) -> dict[str, float]:
        assert self._start is not None
        began, (busy0, total0), trees0 = self._start
        wall = time.monotonic() - began
        busy1, total1 = machine_cpu()
        trees1 = {**tree_cpu(self.roots), "harness": _own_cpu()}
        cores = os.cpu_count() or 1
        ours = {name: max(trees1[name] - trees0.get(name, 0.0), 0.0) for name in trees1}
        machine_busy = busy1 - busy0
        self.result = {
            "wall": wall,
            "machine_busy_fraction": machine_busy / max(total1 - total0, 1e-9),
            "machine_busy": machine_busy / max(wall, 1e-9),
            "others_cores": max(machine_busy - sum(ours.values()), 0.0) / max(wall, 1e-9),
            "cores": float(cores),
            **{f"{name}_cores": seconds / max(wall, 1e-9) for name, seconds in ours.items()},
        }
        return self.result
