"""gunicorn.conf.py: the web server's settings come from the environment, with sane defaults."""

from __future__ import annotations

import runpy
from typing import Any

import pytest

from tests.support import ROOT

CONFIG = str(ROOT / "gunicorn.conf.py")


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_TIMEOUT", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(CONFIG)


def test_defaults_suit_short_io_bound_handlers_behind_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(monkeypatch)
    assert config["worker_class"] == "gthread"
    assert (config["bind"], config["workers"], config["threads"], config["timeout"]) == ("0.0.0.0:8000", 2, 4, 30)
    assert config["max_requests"] > 0
    assert 0 < config["max_requests_jitter"] < config["max_requests"]
    assert config["forwarded_allow_ips"] == "127.0.0.1"
    assert config["accesslog"] == "-"
    assert config["logger_class"] == "service.access_log.JsonLogger"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(
        monkeypatch,
        GUNICORN_BIND="127.0.0.1:9000",
        GUNICORN_WORKERS="5",
        GUNICORN_THREADS="8",
        GUNICORN_TIMEOUT="12",
        FORWARDED_ALLOW_IPS="10.0.0.1,10.0.0.2",
    )
    assert (config["bind"], config["workers"], config["threads"], config["timeout"]) == ("127.0.0.1:9000", 5, 8, 12)
    assert config["forwarded_allow_ips"] == "10.0.0.1,10.0.0.2"


@pytest.mark.parametrize("value", ["two", "0", "-3"])
def test_a_bad_number_stops_the_server_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit):
        load(monkeypatch, GUNICORN_WORKERS=value)
    assert "GUNICORN_WORKERS" in capsys.readouterr().err
