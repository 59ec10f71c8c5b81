"""Test helpers shared by the suites: real Redis servers, Stripe signing, fixtures, waiting, free ports."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import stripe

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WEBHOOK_SECRET = "whsec_test_walletsync_0123456789abcdef"
OTHER_SECRET = "whsec_test_rotated_secret_fedcba9876543210"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def stripe_event(name: str, **changes: Any) -> dict[str, Any]:
    """A sample event from tests/fixtures/stripe, with top-level keys (or data.object keys via `object`) changed."""
    event = json.loads((FIXTURES / "stripe" / f"{name}.json").read_text())
    event = copy.deepcopy(event)
    object_changes = changes.pop("object", None) or {}
    event.update(changes)
    event["data"]["object"].update(object_changes)
    return event


def sign(body: bytes | str, secret: str = WEBHOOK_SECRET, *, timestamp: int | None = None) -> str:
    payload = body.decode() if isinstance(body, bytes) else body
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp))


def signed_request(
    event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": sign(body, secret, timestamp=timestamp), "Content-Type": "application/json"}


class RedisServer:
    """A private redis-server on a free port (so tests can stop, restart or persist it)."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.port = free_port()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if appendonly else "no", "--dir", str(directory),
            "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: _pings(client), timeout=15, what="redis-server to answer")
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
