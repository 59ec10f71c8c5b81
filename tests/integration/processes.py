"""Real processes for integration tests: the simulator, gunicorn and a Celery worker, each with its log file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import ROOT, WEBHOOK_SECRET, free_port, wait_until

BIN = Path(sys.executable).parent
SIM_CLIENT_ID, SIM_CLIENT_SECRET = "sim-client-id", "sim-client-secret"


class Process:
    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.metrics_url = ""

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        code, self.popen = self.popen.returncode, None
        return code


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMERCELAYER_", "STRIPE_", "GUNICORN_"))}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", **extra)
    return env


def start_simulator(log_dir: Path, *, token_ttl: int = 7200) -> tuple[Process, str]:
    port = free_port()
    args = [str(BIN / "python"), "-m", "simulator", "--port", str(port), "--token-ttl", str(token_ttl)]
    process = Process("simulator", args, env=base_env(), log_dir=log_dir).start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/_sim/health"), timeout=30, what="the simulator")
    return process, url


def start_web(log_dir: Path, *, redis_url: str, workers: int = 2, **extra: str) -> tuple[Process, str]:
    port = free_port()
    env = base_env(
        REDIS_URL=redis_url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(workers),
        PROMETHEUS_MULTIPROC_DIR=str(log_dir / f"metrics-web-{port}"),
        **extra,
    )
    process = Process("web", [str(BIN / "gunicorn"), "service.wsgi:app"], env=env, log_dir=log_dir).start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/healthz") or not process.alive(), timeout=30, what="gunicorn")
    assert process.alive(), process.log()
    return process, url


def worker_env(redis_url: str, simulator_url: str, **extra: str) -> dict[str, str]:
    extra.setdefault("WORKER_METRICS_PORT", str(free_port()))
    return base_env(
        REDIS_URL=redis_url,
        COMMERCELAYER_BASE_URL=simulator_url,
        COMMERCELAYER_AUTH_URL=f"{simulator_url}/oauth/token",
        COMMERCELAYER_CLIENT_ID=SIM_CLIENT_ID,
        COMMERCELAYER_CLIENT_SECRET=SIM_CLIENT_SECRET,
        **extra,
    )


def start_worker(
    log_dir: Path, *, redis_url: str, simulator_url: str, concurrency: int = 2, name: str = "worker", **extra: str
) -> Process:
    args = [
        str(BIN / "celery"),
        "-A",
        "tasks",
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "-n",
        f"{name}@%h",
    ]
    extra.setdefault("PROMETHEUS_MULTIPROC_DIR", str(log_dir / f"metrics-{name}"))
    process = Process(name, args, env=worker_env(redis_url, simulator_url, **extra), log_dir=log_dir).start()
    process.metrics_url = f"http://127.0.0.1:{process.env['WORKER_METRICS_PORT']}/metrics"
    wait_until(lambda: "ready." in process.log() or not process.alive(), timeout=60, what="the celery worker")
    assert process.alive(), process.log()
    return process


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def eventually(predicate, *, timeout: float = 60, what: str = ""):  # type: ignore[no-untyped-def]
    return wait_until(predicate, timeout=timeout, interval=0.1, what=what)


__all__ = ["Process", "eventually", "start_simulator", "start_web", "start_worker", "time"]
