"""`make run`: the whole service on this machine, with loud notes about every default it picks.

- Redis: `REDIS_URL` if it answers (default redis://localhost:6379/0), else a local redis-server started here
  (append-only file under .run/redis).
- Commerce Layer: `COMMERCELAYER_BASE_URL` and credentials if set, else the bundled simulator seeded with sample
  wallet entries.
- Stripe: `STRIPE_WEBHOOK_SECRET` if set, else a local development secret (printed, so `make demo` and
  `stripe listen` users know it).
Then the web process (gunicorn) and a Celery worker run until Ctrl-C; if one dies, everything stops.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".run"
BIN = Path(sys.executable).parent
DEV_SECRET = "whsec_walletsync_local_development_only"
WEB_PORT = int(os.environ.get("WEB_PORT", "8000"))
SIMULATOR_PORT = int(os.environ.get("SIMULATOR_PORT", "8080"))


def say(message: str) -> None:
    sys.stdout.write(f"\n*** {message}\n")
    sys.stdout.flush()


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - a local URL we built
                return True
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    env = dict(os.environ)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    STATE.mkdir(exist_ok=True)

    redis_url = env.get("REDIS_URL", "redis://localhost:6379/0")
    if redis_answers(redis_url):
        say(f"Using the Redis that answers at {redis_url.split('@')[-1]} (check that it persists: appendonly yes)")
    else:
        binary = shutil.which("redis-server")
        if binary is None:
            say("No Redis answers and redis-server is not installed: run 'make redis-server' or set REDIS_URL")
            return 1
        port = 6379 if port_free(6379) else 6390
        (STATE / "redis").mkdir(exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(STATE / "redis")]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--save", ""]
        children.append(("redis", subprocess.Popen(args, stdout=subprocess.DEVNULL)))
        redis_url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(redis_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        say(f"Started a local redis-server at {redis_url} (append-only file in .run/redis)")
    env["REDIS_URL"] = redis_url

    simulator_url = None
    if not env.get("COMMERCELAYER_BASE_URL"):
        if not port_free(SIMULATOR_PORT):
            say(f"Port {SIMULATOR_PORT} is taken: set SIMULATOR_PORT to a free port")
            return stop(children, 1)
        simulator_url = f"http://127.0.0.1:{SIMULATOR_PORT}"
        command = [str(BIN / "python"), "-m", "simulator", "--port", str(SIMULATOR_PORT), "--sample"]
        children.append(("simulator", subprocess.Popen(command, cwd=ROOT)))
        env.update(
            COMMERCELAYER_BASE_URL=simulator_url,
            COMMERCELAYER_AUTH_URL=f"{simulator_url}/oauth/token",
            COMMERCELAYER_CLIENT_ID=env.get("SIMULATOR_CLIENT_ID", "sim-client-id"),
            COMMERCELAYER_CLIENT_SECRET=env.get("SIMULATOR_CLIENT_SECRET", "sim-client-secret"),
        )
        if not wait_http(f"{simulator_url}/_sim/health"):
            say("The Commerce Layer simulator did not start")
            return stop(children, 1)
        say(
            f"COMMERCELAYER_BASE_URL is unset: using the Commerce Layer SIMULATOR at {simulator_url}, "
            f"seeded with sample wallet entries (see {simulator_url}/_sim/sources). Nothing reaches the real API."
        )
    else:
        say(f"Using Commerce Layer at {env['COMMERCELAYER_BASE_URL']}")

    if not env.get("STRIPE_WEBHOOK_SECRET"):
        env["STRIPE_WEBHOOK_SECRET"] = DEV_SECRET
        say(f"STRIPE_WEBHOOK_SECRET is unset: using the local development secret {DEV_SECRET}")

    if not port_free(WEB_PORT):
        say(f"Port {WEB_PORT} is taken: set WEB_PORT to a free port")
        return stop(children, 1)
    env.setdefault("GUNICORN_BIND", f"127.0.0.1:{WEB_PORT}")
    web_url = f"http://127.0.0.1:{WEB_PORT}"
    children.append(("web", subprocess.Popen([str(BIN / "gunicorn"), "service.wsgi:app"], cwd=ROOT, env=env)))
    worker = [str(BIN / "celery"), "-A", "tasks", "worker", "--loglevel=INFO", "--concurrency=2"]
    children.append(("worker", subprocess.Popen(worker, cwd=ROOT, env=env)))
    if not wait_http(f"{web_url}/healthz"):
        say("The web process did not start")
        return stop(children, 1)

    (STATE / "state.json").write_text(
        json.dumps(
            {
                "web_url": web_url,
                "simulator_url": simulator_url,
                # Only the development secret is written down; a real one stays in the environment.
                "webhook_secret": DEV_SECRET if env["STRIPE_WEBHOOK_SECRET"] == DEV_SECRET else None,
            }
        )
    )
    say(f"walletsync is running: webhooks at {web_url}/webhooks/stripe. Try 'make demo' in another terminal.")

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            for name, child in children:
                if child.poll() is not None:
                    say(f"{name} exited with code {child.returncode}; stopping everything")
                    return stop(children, 1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("Stopping")
        return stop(children, 0)


def stop(children: list[tuple[str, subprocess.Popen[bytes]]], code: int) -> int:
    for _, child in reversed(children):
        if child.poll() is None:
            child.terminate()
    for _, child in reversed(children):
        try:
            child.wait(timeout=40)
        except subprocess.TimeoutExpired:
            child.kill()
    (STATE / "state.json").unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
