"""Settings of the web and worker processes, read once from the environment when a process starts.

Nothing here runs at import time: `WebSettings.from_environ()` / `WorkerSettings.from_environ()` are called by
the process entry points (`service.wsgi`, `tasks`), validated, frozen and injected from there on.
A missing or malformed variable raises `ConfigError`, whose message is one line naming the variable.
Secrets are wrapped in `Secret` so that they never show up in a repr, a log line or an error page.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from service.ratelimit import Window, parse_windows

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_AUTH_URL = "https://auth.commercelayer.io/oauth/token"


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it in one line."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable} {problem}")
        self.variable = variable


class Secret:
    """A string that must not leak: its repr and str are masked; `.reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _required(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    if value is None:
        raise ConfigError(name, "is required but not set")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None, *, schemes: tuple[str, ...]) -> str:
    raw = _get(env, name) if default is None else (_get(env, name) or default)
    if raw is None:
        raise ConfigError(name, "is required but not set")
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.netloc:
        # Never echo the value: a Redis URL may carry a password.
        raise ConfigError(name, f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return raw.rstrip("/") if parts.scheme.startswith("http") else raw


def _redis_url(env: Mapping[str, str]) -> str:
    return _url(env, "REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix"))


_WHSEC = re.compile(r"^whsec_[A-Za-z0-9+/=_-]+$")


def _stripe_secrets(env: Mapping[str, str]) -> tuple[Secret, ...]:
    raw = _required(env, "STRIPE_WEBHOOK_SECRET")
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not secrets or not all(_WHSEC.match(secret) for secret in secrets):
        raise ConfigError("STRIPE_WEBHOOK_SECRET", "must be one or more comma-separated whsec_... secrets")
    return tuple(Secret(secret) for secret in secrets)


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = _get(env, name)
    if raw is None:
        return ()
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(name, f"must be a comma-separated list of IP addresses or networks ({exc})") from None


@dataclass(frozen=True)
class WebSettings:
    """What the web process needs: where to queue, how to verify webhooks, how to sit behind a proxy."""

    redis_url: str
    stripe_webhook_secrets: tuple[Secret, ...]
    stripe_webhook_tolerance: int = 300
    max_body_bytes: int = 1024 * 1024
    trusted_proxy_hops: int = 0
    webhook_allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    log_level: str = "INFO"

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> WebSettings:
        env = os.environ if env is None else env
        return cls(
            redis_url=_redis_url(env),
            stripe_webhook_secrets=_stripe_secrets(env),
            stripe_webhook_tolerance=_int(env, "STRIPE_WEBHOOK_TOLERANCE", 300, minimum=1),
            max_body_bytes=_int(env, "WEBHOOK_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", 0),
            webhook_allowed_networks=_networks(env, "WEBHOOK_ALLOWED_IPS"),
            log_level=_log_level(env),
        )


@dataclass(frozen=True)
class CommerceLayerSettings:
    """Where Commerce Layer is and how to authenticate to it (client_credentials)."""

    base_url: str
    client_id: str
    client_secret: Secret
    auth_url: str = DEFAULT_AUTH_URL
    scope: str | None = None
    connect_timeout: float = 3.05
    read_timeout: float = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry budget: by count and by age, with capped full-jitter backoff."""

    max_attempts: int = 12
    max_age_seconds: int = 24 * 3600
    backoff_base_seconds: float = 2.0
    # Far below the broker's visibility timeout (BrokerSettings), because a retry waits unacknowledged
    # inside a worker until its countdown ends; a longer wait would be delivered a second time.
    backoff_cap_seconds: float = 120.0


@dataclass(frozen=True)
class BreakerPolicy:
    """When Commerce Layer fails hard, stop calling it for a while; one probe at a time tests recovery."""

    window: int = 20  # the last N calls considered
    min_calls: int = 10  # never open on fewer samples than this
    failure_ratio: float = 0.5  # open when at least this share of the window failed hard (5xx, timeout)
    open_seconds: int = 15  # how long to stay open before a probe may go through


@dataclass(frozen=True)
class BrokerSettings:
    """What any Celery client of the Redis broker needs (worker, web publisher, `celery inspect`)."""

    redis_url: str
    # Redis transport: a message not acknowledged within this time is delivered again (after a worker was
    # killed with SIGKILL, say). Every retry countdown and task time limit must stay far below it.
    visibility_timeout: int = 900

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> BrokerSettings:
        env = os.environ if env is None else env
        return cls(
            redis_url=_redis_url(env),
            visibility_timeout=_int(env, "BROKER_VISIBILITY_TIMEOUT", cls.visibility_timeout, minimum=10),
        )


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker process needs."""

    redis_url: str
    commercelayer: CommerceLayerSettings
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    log_level: str = "INFO"
    metrics_port: int = 9808  # 0: no metrics endpoint
    # Commerce Layer rate-limit windows; None: the published live or test limits, chosen from the token.
    rate_limits: tuple[Window, ...] | None = None
    # An accepted event with no progress for this long is published again (service.redelivery).
    redeliver_after_seconds: int = 1800

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        commercelayer = CommerceLayerSettings(
            base_url=_url(env, "COMMERCELAYER_BASE_URL", None, schemes=("http", "https")),
            client_id=_required(env, "COMMERCELAYER_CLIENT_ID"),
            client_secret=Secret(_required(env, "COMMERCELAYER_CLIENT_SECRET")),
            auth_url=_url(env, "COMMERCELAYER_AUTH_URL", DEFAULT_AUTH_URL, schemes=("http", "https")),
            scope=_get(env, "COMMERCELAYER_SCOPE"),
            read_timeout=_int(env, "COMMERCELAYER_TIMEOUT_SECONDS", 10, minimum=1),
        )
        broker = BrokerSettings.from_environ(env)
        retry = RetryPolicy(
            max_attempts=_int(env, "SYNC_MAX_ATTEMPTS", RetryPolicy.max_attempts, minimum=1),
            max_age_seconds=_int(env, "SYNC_MAX_AGE_SECONDS", RetryPolicy.max_age_seconds, minimum=60),
            backoff_cap_seconds=_int(env, "SYNC_BACKOFF_CAP_SECONDS", int(RetryPolicy.backoff_cap_seconds), minimum=1),
        )
        if retry.backoff_cap_seconds * 3 > broker.visibility_timeout:
            raise ConfigError(
                "SYNC_BACKOFF_CAP_SECONDS", "must be at most a third of BROKER_VISIBILITY_TIMEOUT (else retries repeat)"
            )
        redeliver_after = _int(env, "SYNC_REDELIVER_AFTER_SECONDS", 2 * broker.visibility_timeout, minimum=30)
        if redeliver_after < 2 * retry.backoff_cap_seconds:
            raise ConfigError(
                "SYNC_REDELIVER_AFTER_SECONDS", "must be at least twice SYNC_BACKOFF_CAP_SECONDS (else retries repeat)"
            )
        breaker = BreakerPolicy(open_seconds=_int(env, "BREAKER_OPEN_SECONDS", BreakerPolicy.open_seconds, minimum=1))
        return cls(
            redis_url=broker.redis_url,
            commercelayer=commercelayer,
            retry=retry,
            breaker=breaker,
            log_level=_log_level(env),
            metrics_port=_int(env, "WORKER_METRICS_PORT", 9808),
            rate_limits=_rate_limits(env),
            redeliver_after_seconds=redeliver_after,
        )


def _rate_limits(env: Mapping[str, str]) -> tuple[Window, ...] | None:
    raw = _get(env, "COMMERCELAYER_RATE_LIMITS")
    if raw is None:
        return None
    try:
        return parse_windows(raw)
    except ValueError as exc:
        raise ConfigError("COMMERCELAYER_RATE_LIMITS", f"must look like 50/10s,200/60s: {exc}") from None


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(env: Mapping[str, str]) -> str:
    level = (_get(env, "LOG_LEVEL") or "INFO").upper()
    if level not in _LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"must be one of {', '.join(_LOG_LEVELS)}")
    return level
