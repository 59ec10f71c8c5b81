"""Metrics exposition, the Grafana dashboard built on it, and structured logs with request context."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service import create_app
from service.config import Secret, WebSettings
from service.logs import configure_logging
from tests.support import ROOT, WEBHOOK_SECRET, signed_request, stripe_event

DASHBOARD = ROOT / "deploy" / "grafana" / "walletsync-dashboard.json"


@pytest.fixture
def client(redis_url: str) -> FlaskClient:
    settings = WebSettings(redis_url=redis_url, stripe_webhook_secrets=(Secret(WEBHOOK_SECRET),))
    return create_app(settings, configure_logs=False).test_client()


def test_metrics_are_served_in_prometheus_text_format(client: FlaskClient) -> None:
    body, headers = signed_request(stripe_event("payment_method.updated", id="evt_observed1"))
    client.post("/webhooks/stripe", data=body, headers=headers)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert re.search(r'walletsync_webhooks_received_total\{.*outcome="queued".*\} [1-9]', text)
    assert "walletsync_queue_depth 1.0" in text
    assert 'walletsync_breaker_state{state="closed"} 1.0' in text


def test_no_label_value_is_an_event_id_or_a_secret(client: FlaskClient) -> None:
    body, headers = signed_request(stripe_event("payment_method.updated", id="evt_labelcheck", type="x.custom.type"))
    client.post("/webhooks/stripe", data=body, headers=headers)
    text = client.get("/metrics").get_data(as_text=True)
    for forbidden in ("evt_labelcheck", "x.custom.type", WEBHOOK_SECRET, "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"):
        assert forbidden not in text


def test_every_dashboard_query_uses_a_metric_the_service_exports(client: FlaskClient) -> None:
    exported = client.get("/metrics").get_data(as_text=True)
    dashboard = json.loads(DASHBOARD.read_text())
    names = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"walletsync_[a-z_]+", target["expr"])
    }
    assert names
    for name in names:
        assert f"# TYPE {name.removesuffix('_total')} " in exported or f"# TYPE {name} " in exported, name


def test_every_dashboard_panel_is_described_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert f"**{panel['title']}**" in readme, panel["title"]


@contextmanager
def json_logs() -> Iterator[None]:
    # Inside the test body: pytest's own log capture rearranges the root logger around each test phase.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", process="web")
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_log_lines_are_json_with_the_request_and_event_context(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    body, headers = signed_request(stripe_event("payment_method.updated", id="evt_logged1"))
    with json_logs():
        client.post("/webhooks/stripe", data=body, headers={**headers, "X-Request-ID": "req-42"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [accepted] = [line for line in lines if line.get("event_id") == "evt_logged1"]  # one line per webhook
    assert accepted["message"] == "webhook accepted"
    assert accepted["request_id"] == "req-42"
    assert accepted["provider"] == "stripe"
    assert accepted["process"] == "web"
    assert accepted["event_type"] == "payment_method.updated"
    assert accepted["outcome"] == "queued"
    assert accepted["task_id"]
    # The request's HTTP facts too: this line stands in for gunicorn's access line.
    assert (accepted["method"], accepted["path"], accepted["status"]) == ("POST", "/webhooks/stripe", 200)
    assert accepted["duration_ms"] >= 0
    assert WEBHOOK_SECRET not in json.dumps(lines)


@pytest.mark.parametrize(
    ("mangle", "outcome", "status", "level"),
    [
        (lambda body, headers: (body, {**headers, "Stripe-Signature": "t=1,v1=00"}), "invalid", 400, "INFO"),
        (lambda body, headers: (body, headers), "duplicate", 200, "INFO"),
    ],
)
def test_every_webhook_outcome_is_one_line_with_its_reason_and_status(
    client: FlaskClient, capsys: pytest.CaptureFixture[str], mangle: Any, outcome: str, status: int, level: str
) -> None:
    body, headers = signed_request(stripe_event("payment_method.updated", id="evt_logged2"))
    if outcome == "duplicate":
        client.post("/webhooks/stripe", data=body, headers=headers)
    capsys.readouterr()
    with json_logs():
        client.post("/webhooks/stripe", data=body, headers=mangle(body, headers)[1])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line.get("path") == "/webhooks/stripe"]
    assert (line["outcome"], line["status"], line["level"]) == (outcome, status, level)
    if outcome == "invalid":
        assert line["reason"]
        assert "event_id" not in line  # nothing unverified is logged as an event
    else:
        assert line["event_id"] == "evt_logged2"


def test_a_hostile_request_id_is_replaced_not_logged(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": 'evil" injected=1'})
    assert response.headers["X-Request-ID"] != 'evil" injected=1'
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_every_answer_carries_a_request_id_and_made_up_ones_differ(client: FlaskClient) -> None:
    made_up = {client.get("/healthz").headers["X-Request-ID"] for _ in range(50)}
    assert len(made_up) == 50
    assert client.get("/no-such-page", headers={"X-Request-ID": "lb-404"}).headers["X-Request-ID"] == "lb-404"
    too_long = "x" * 129
    assert client.get("/healthz", headers={"X-Request-ID": too_long}).headers["X-Request-ID"] != too_long


def test_the_dashboard_file_is_valid_grafana_json() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert dashboard["uid"] == "walletsync"
    assert all(panel["targets"] and panel["datasource"]["type"] == "prometheus" for panel in dashboard["panels"])
