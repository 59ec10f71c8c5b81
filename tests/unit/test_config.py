"""Settings from the environment: defaults, validation naming the variable, secrets that never print."""

from __future__ import annotations

import pytest

from service.config import DEFAULT_AUTH_URL, ConfigError, WebSettings, WorkerSettings

WEB = {"STRIPE_WEBHOOK_SECRET": "whsec_abc123"}
WORKER = {
    "COMMERCELAYER_BASE_URL": "https://acme.commercelayer.io/",
    "COMMERCELAYER_CLIENT_ID": "client-id",
    "COMMERCELAYER_CLIENT_SECRET": "very-secret-value",
}


def test_web_defaults() -> None:
    settings = WebSettings.from_environ(WEB)
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.stripe_webhook_tolerance == 300
    assert settings.max_body_bytes == 1024 * 1024
    assert [s.reveal() for s in settings.stripe_webhook_secrets] == ["whsec_abc123"]


def test_several_webhook_secrets_are_comma_separated() -> None:
    settings = WebSettings.from_environ({"STRIPE_WEBHOOK_SECRET": "whsec_one, whsec_two"})
    assert [s.reveal() for s in settings.stripe_webhook_secrets] == ["whsec_one", "whsec_two"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": "   "}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": "sk_live_oops"}, "STRIPE_WEBHOOK_SECRET"),
        ({**WEB, "STRIPE_WEBHOOK_TOLERANCE": "five"}, "STRIPE_WEBHOOK_TOLERANCE"),
        ({**WEB, "STRIPE_WEBHOOK_TOLERANCE": "0"}, "STRIPE_WEBHOOK_TOLERANCE"),
        ({**WEB, "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({**WEB, "WEBHOOK_MAX_BODY_BYTES": "-1"}, "WEBHOOK_MAX_BODY_BYTES"),
        ({**WEB, "WEBHOOK_ALLOWED_IPS": "10.0.0.0/8,not-an-ip"}, "WEBHOOK_ALLOWED_IPS"),
        ({**WEB, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_a_bad_web_variable_is_named_in_one_line(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        WebSettings.from_environ(env)
    assert raised.value.variable == variable
    assert variable in str(raised.value)
    assert "\n" not in str(raised.value)


def test_worker_settings_and_defaults() -> None:
    settings = WorkerSettings.from_environ(WORKER)
    assert settings.commercelayer.base_url == "https://acme.commercelayer.io"
    assert settings.commercelayer.auth_url == DEFAULT_AUTH_URL
    assert settings.commercelayer.scope is None
    assert settings.retry.max_attempts == 12
    assert settings.retry.max_age_seconds == 86400


def test_the_scope_is_taken_when_set() -> None:
    settings = WorkerSettings.from_environ({**WORKER, "COMMERCELAYER_SCOPE": "market:id:xYZkjABcde"})
    assert settings.commercelayer.scope == "market:id:xYZkjABcde"


@pytest.mark.parametrize(
    "variable", ["COMMERCELAYER_BASE_URL", "COMMERCELAYER_CLIENT_ID", "COMMERCELAYER_CLIENT_SECRET"]
)
def test_each_required_worker_variable_is_named_when_missing(variable: str) -> None:
    env = {k: v for k, v in WORKER.items() if k != variable}
    with pytest.raises(ConfigError, match=variable):
        WorkerSettings.from_environ(env)


def test_a_malformed_base_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="COMMERCELAYER_BASE_URL"):
        WorkerSettings.from_environ({**WORKER, "COMMERCELAYER_BASE_URL": "acme.commercelayer.io"})


def test_a_redis_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as raised:
        WebSettings.from_environ({**WEB, "REDIS_URL": "http://:hunter2@redis:6379"})
    assert "hunter2" not in str(raised.value)


def test_secrets_never_appear_in_a_repr() -> None:
    settings = WorkerSettings.from_environ(WORKER)
    web = WebSettings.from_environ(WEB)
    assert "very-secret-value" not in repr(settings)
    assert "whsec_abc123" not in repr(web)
    assert settings.commercelayer.client_secret.reveal() == "very-secret-value"
