"""The web tier as deployed: real gunicorn with several workers, its config file, logs and metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.processes import BIN, Process, base_env, start_web
from tests.integration.test_end_to_end import sample
from tests.support import WEBHOOK_SECRET, RedisServer, free_port, signed_request, stripe_event, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("web-redis"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[tuple[Process, str]]:
    process, url = start_web(
        Path(tmp_path_factory.mktemp("web")), redis_url=redis_server.url, workers=2, TRUSTED_PROXY_HOPS="1"
    )
    yield process, url
    process.stop()


def test_metrics_add_up_across_two_gunicorn_workers(web: tuple[Process, str]) -> None:
    process, url = web
    before = requests.get(f"{url}/metrics", timeout=5).text
    base_invalid = sample(before, "walletsync_webhooks_received_total", outcome="invalid")
    base_queued = sample(before, "walletsync_webhooks_received_total", outcome="queued")
    for index in range(40):
        # A new connection each time, so the kernel spreads them over both workers.
        with requests.Session() as session:
            if index % 2:
                body, headers = signed_request(stripe_event("payment_method.updated", id=f"evt_metrics{index}"))
            else:
                body, headers = b"{}", {"Stripe-Signature": "t=1,v1=00"}
            session.post(f"{url}/webhooks/stripe", data=body, headers=headers, timeout=5)
    multiproc_dir = Path(process.env["PROMETHEUS_MULTIPROC_DIR"]) / "web"
    writers = {path.stem.rsplit("_", 1)[-1] for path in multiproc_dir.glob("counter_*.db")}
    assert len(writers) >= 2, "both workers should have answered some requests"
    for _ in range(6):  # whichever worker answers the scrape, the totals are the same
        text = requests.get(f"{url}/metrics", timeout=5).text
        assert sample(text, "walletsync_webhooks_received_total", outcome="invalid") - base_invalid == 20
        assert sample(text, "walletsync_webhooks_received_total", outcome="queued") - base_queued == 20
        assert sample(text, "walletsync_webhook_ack_seconds_count") >= 40
        assert sample(text, "walletsync_queue_depth") >= 20
        assert sample(text, "walletsync_redis_up") == 1


def test_the_client_address_behind_one_trusted_proxy_is_logged(web: tuple[Process, str]) -> None:
    process, url = web
    requests.get(
        f"{url}/healthz", headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "trace-proxyfix"}, timeout=5
    )

    def access_line() -> dict[str, object] | None:
        for line in process.log().splitlines():
            if "trace-proxyfix" in line and line.startswith("{"):
                return dict(json.loads(line))
        return None

    record = wait_until(access_line, timeout=10, what="the access log line")
    assert record["remote_addr"] == "203.0.113.7"
    assert record["request_id"] == "trace-proxyfix"
    assert record["status"] == 200


def test_a_webhook_is_one_log_line_with_its_http_facts_and_other_requests_keep_the_access_line(
    web: tuple[Process, str],
) -> None:
    process, url = web
    body, headers = signed_request(stripe_event("payment_method.updated", id="evt_one_line"))
    requests.post(f"{url}/webhooks/stripe", data=body, headers={**headers, "X-Request-ID": "trace-one-line"}, timeout=5)
    requests.get(f"{url}/healthz", headers={"X-Request-ID": "trace-health"}, timeout=5)

    def lines_of(request_id: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in process.log().splitlines() if request_id in line and line[:1] == "{"]

    wait_until(lambda: lines_of("trace-health"), timeout=10, what="the access line of /healthz")
    [webhook] = lines_of("trace-one-line")
    assert webhook["event_id"] == "evt_one_line"
    assert webhook["outcome"] == "queued"
    assert (webhook["method"], webhook["path"], webhook["status"]) == ("POST", "/webhooks/stripe", 200)
    assert webhook["remote_addr"]
    [health] = lines_of("trace-health")
    assert (health["logger"], health["path"], health["status"]) == ("gunicorn.access", "/healthz", 200)


def test_every_log_line_of_the_web_process_is_json_except_gunicorns_own(web: tuple[Process, str]) -> None:
    process, _ = web
    app_lines = [line for line in process.log().splitlines() if line.startswith("{")]
    assert app_lines
    for line in app_lines:
        record = json.loads(line)
        assert {"time", "level", "message"} <= record.keys()


@pytest.mark.parametrize(
    ("env", "variable"),
    [({}, "STRIPE_WEBHOOK_SECRET"), ({"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "REDIS_URL": "nope"}, "REDIS_URL")],
)
def test_the_web_process_stops_at_once_naming_a_bad_variable(env: dict[str, str], variable: str) -> None:
    full_env = base_env(GUNICORN_BIND=f"127.0.0.1:{free_port()}", **env)
    result = subprocess.run(
        [str(BIN / "gunicorn"), "service.wsgi:app"],
        env=full_env,
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.decode().splitlines() if "configuration error" in line]
    assert len(lines) == 1
    assert variable in lines[0]


@pytest.mark.parametrize(
    "missing", ["COMMERCELAYER_BASE_URL", "COMMERCELAYER_CLIENT_ID", "COMMERCELAYER_CLIENT_SECRET"]
)
def test_the_worker_stops_at_once_naming_a_missing_variable(missing: str) -> None:
    env = base_env(
        COMMERCELAYER_BASE_URL="http://127.0.0.1:9",
        COMMERCELAYER_CLIENT_ID="id",
        COMMERCELAYER_CLIENT_SECRET="secret",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    del env[missing]
    result = subprocess.run(
        [str(BIN / "celery"), "-A", "tasks", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.decode().splitlines() if "configuration error" in line]
    assert lines == [f"walletsync worker: configuration error: {missing} is required but not set"]


def test_the_simulator_entry_command_of_the_image_runs() -> None:
    port = free_port()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--sample"], stdout=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: _ok(f"http://127.0.0.1:{port}/_sim/health"), timeout=30, what="the simulator")
        assert len(requests.get(f"http://127.0.0.1:{port}/_sim/sources", timeout=5).json()["data"]) >= 1
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
