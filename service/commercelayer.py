"""The Commerce Layer client: the only module that speaks HTTP to Commerce Layer.

It knows the JSON:API shapes of `customer_payment_sources`, the OAuth2 client_credentials grant, and how to
turn every HTTP answer into either data or a `CommerceLayerError` carrying its classification. It does not
retry (Celery is the one retry layer), except that a 401 `INVALID_TOKEN` renews the token once and repeats the
call, as the official SDK does.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from service.breaker import CircuitBreaker
from service.config import CommerceLayerSettings
from service.errors import CommerceLayerError, ErrorKind, classify_status
from service.metrics import metrics
from service.ratelimit import RateLimiter

log = logging.getLogger(__name__)

JSON_API = "application/vnd.api+json"
RESOURCE = "customer_payment_sources"
PAGE_SIZE = 25  # the largest page Commerce Layer serves
# Sparse fieldset for reads: the sync needs nothing else, and smaller answers are cheaper for both sides.
READ_FIELDS = "payment_source_token,customer_token,metadata"


@dataclass(frozen=True)
class CustomerPaymentSource:
    """A Commerce Layer wallet entry as far as the sync is concerned."""

    id: str
    payment_source_token: str | None
    customer_token: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float


class TokenStore(Protocol):
    """Shares one access token between all worker processes (see `service.tokens.RedisTokenStore`)."""

    def get(self, key: str) -> str | None: ...
    def put(self, key: str, token: str, ttl_seconds: int) -> None: ...
    def discard(self, key: str, token: str) -> None: ...


CREDIT_SECONDS = 5.0
# Renew this long before the token expires, so that no request goes out with a token about to lapse.
TOKEN_RENEW_MARGIN_SECONDS = 300


class CommerceLayerClient:
    """Finds and updates customer payment sources; one instance per worker process."""

    def __init__(
        self,
        settings: CommerceLayerSettings,
        *,
        session: requests.Session,
        tokens: TokenStore,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._tokens = tokens
        self._breaker = breaker
        self._limiter = limiter
        self._credit: tuple[list[str], float] = ([], 0.0)  # ids of calls already paid for, and when
        # Tokens are cached per credential set and endpoint, never under the secret itself.
        fingerprint = f"{settings.auth_url}|{settings.client_id}|{settings.scope or ''}"
        self._token_key = hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
        self.calls = 0  # Commerce Layer API calls made by this client (token requests not included)

    # -- public API -------------------------------------------------------------------------------------

    def reserve(self, calls: int) -> None:
        """Take rate-limit budget for the next `calls` calls at once (raises `RateLimited` when there is none),
        so that a sync does not get its lookup through and then wait for budget to write."""
        if self._limiter is not None:
            ids = self._limiter.acquire(access_token=self._access_token(renew=False), calls=calls)
            self._credit = (ids, time.monotonic())

    def find_payment_sources(self, payment_source_token: str) -> list[CustomerPaymentSource]:
        """Every wallet entry whose `payment_source_token` equals the given one, across all pages."""
        return list(self._iter_payment_sources(payment_source_token))

    def update_payment_source(self, source_id: str, attributes: Mapping[str, Any]) -> CustomerPaymentSource:
        body = {"data": {"type": RESOURCE, "id": source_id, "attributes": dict(attributes)}}
        payload = self._request("PATCH", f"/api/{RESOURCE}/{source_id}", json_body=body)
        return _payment_source(payload["data"])

    # -- internals --------------------------------------------------------------------------------------

    def _iter_payment_sources(self, payment_source_token: str) -> Iterator[CustomerPaymentSource]:
        page = 1
        while True:
            params = {
                "filter[q][payment_source_token_eq]": payment_source_token,
                f"fields[{RESOURCE}]": READ_FIELDS,
                "page[size]": str(PAGE_SIZE),
                "page[number]": str(page),
            }
            payload = self._request("GET", f"/api/{RESOURCE}", params=params)
            data = payload.get("data")
            if not isinstance(data, list):
                raise CommerceLayerError(ErrorKind.PERMANENT, detail="list answer without a data array")
            for item in data:
                yield _payment_source(item)
            page_count = _int_or_none((payload.get("meta") or {}).get("page_count"))
            if not data or page_count is None or page >= page_count:
                return
            page += 1

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            token = self._access_token(renew=attempt == 2)
            headers = {"Accept": JSON_API, "Authorization": f"Bearer {token}"}
            if json_body is not None:
                headers["Content-Type"] = JSON_API
            response = self._send(method, path, params=params, json_body=json_body, headers=headers)
            if response.status_code == 401 and attempt == 1:
                # The token may have expired or been revoked: drop it for every process, renew once.
                self._tokens.discard(self._token_key, token)
                continue
            return _payload_or_raise(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _send(
        self, method: str, path: str, *, params: Mapping[str, str] | None, json_body: Any, headers: dict[str, str]
    ) -> requests.Response:
        if self._breaker is not None:
            self._breaker.before_call()  # raises BreakerOpen while Commerce Layer is failing hard
        access_token = headers["Authorization"].removeprefix("Bearer ")
        call_id = self._spend_budget(access_token)
        self.calls += 1
        try:
            response = self._session.request(
                method,
                self._settings.base_url + path,
                params=params,
                json=json_body,
                headers=headers,
                timeout=(self._settings.connect_timeout, self._settings.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            self._settle(call_id, access_token)
            self._record(ok=False)
            kind = "timeout" if isinstance(exc, requests.Timeout) else "connection_error"
            _count(method, path, kind)
            # A write that may have left (anything but a failed connect) may still land, later, at Commerce Layer.
            sent = method != "GET" and not isinstance(exc, requests.ConnectTimeout)
            raise CommerceLayerError(
                ErrorKind.TRANSIENT, detail=f"{kind}: {type(exc).__name__}", ambiguous=sent
            ) from None
        self._settle(call_id, access_token)
        self._record(ok=response.status_code < 500)
        _count(method, path, str(response.status_code))
        if response.status_code == 429 and self._limiter is not None:
            self._limiter.observe_429(response.headers)
        return response

    def _spend_budget(self, access_token: str) -> str | None:
        """The id of the budget this call uses (None without a limiter)."""
        credit, since = self._credit
        # Reserved budget is used only shortly after it was taken: older credit may belong to a past window.
        if credit and time.monotonic() - since < CREDIT_SECONDS:
            self._credit = (credit[1:], since)
            return credit[0]
        if self._limiter is None:
            return None
        return self._limiter.acquire(access_token=access_token)[0]

    def _settle(self, call_id: str | None, access_token: str) -> None:
        if call_id is not None and self._limiter is not None:
            self._limiter.settle(call_id, access_token=access_token)

    def _record(self, *, ok: bool) -> None:
        if self._breaker is not None:
            self._breaker.record(ok=ok)

    def _access_token(self, *, renew: bool) -> str:
        if not renew:
            cached = self._tokens.get(self._token_key)
            if cached:
                return cached
        token = self._fetch_token()
        ttl = int(token.expires_at - time.time())
        if ttl > 0:
            self._tokens.put(self._token_key, token.value, ttl)
        return token.value

    def _fetch_token(self) -> AccessToken:
        body = {
            "grant_type": "client_credentials",
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret.reveal(),
        }
        if self._settings.scope:
            body["scope"] = self._settings.scope
        try:
            response = self._session.post(
                self._settings.auth_url,
                json=body,
                headers={"Accept": "application/json"},
                timeout=(self._settings.connect_timeout, self._settings.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            metrics().commercelayer_calls.labels("POST", "/oauth/token", "connection_error").inc()
            raise CommerceLayerError(ErrorKind.TRANSIENT, detail=f"token endpoint: {type(exc).__name__}") from None
        metrics().commercelayer_calls.labels("POST", "/oauth/token", str(response.status_code)).inc()
        if response.status_code in (400, 401, 403):
            # Wrong credentials do not heal by retrying; the token endpoint allows only 30 requests a minute.
            raise CommerceLayerError(
                ErrorKind.PERMANENT,
                status=response.status_code,
                code="invalid_client",
                detail="the token endpoint refused the client credentials",
            )
        payload = _payload_or_raise(response)
        value = payload.get("access_token")
        expires_in = _int_or_none(payload.get("expires_in")) or 0
        if not isinstance(value, str) or not value:
            raise CommerceLayerError(ErrorKind.TRANSIENT, detail="token endpoint answered without an access_token")
        lifetime = max(expires_in - TOKEN_RENEW_MARGIN_SECONDS, expires_in // 2)
        return AccessToken(value=value, expires_at=time.time() + lifetime)


def _count(method: str, path: str, status: str) -> None:
    # The route, not the path: ids must never become label values.
    route = f"/api/{RESOURCE}" if path == f"/api/{RESOURCE}" else f"/api/{RESOURCE}/:id"
    metrics().commercelayer_calls.labels(method, route, status).inc()


def _payment_source(resource: Any) -> CustomerPaymentSource:
    if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
        raise CommerceLayerError(ErrorKind.PERMANENT, detail="resource without an id")
    attributes = resource.get("attributes") or {}
    metadata = attributes.get("metadata")
    return CustomerPaymentSource(
        id=resource["id"],
        payment_source_token=attributes.get("payment_source_token"),
        customer_token=attributes.get("customer_token"),
        metadata=metadata if isinstance(metadata, dict) else {},
    )


def _payload_or_raise(response: requests.Response) -> dict[str, Any]:
    if 200 <= response.status_code < 300:
        try:
            payload = response.json()
        except ValueError:
            raise CommerceLayerError(
                ErrorKind.TRANSIENT, status=response.status_code, detail="answer is not JSON"
            ) from None
        if not isinstance(payload, dict):
            raise CommerceLayerError(ErrorKind.PERMANENT, status=response.status_code, detail="answer not an object")
        return payload
    code, detail = _first_error(response)
    raise CommerceLayerError(
        classify_status(response.status_code),
        status=response.status_code,
        code=code,
        detail=detail,
        retry_after=_retry_after(response.headers),
    )


def _first_error(response: requests.Response) -> tuple[str | None, str | None]:
    try:
        errors = response.json().get("errors")
        first = errors[0]
        return (
            str(first.get("code")) if first.get("code") else None,
            str(first.get("detail") or first.get("title")),
        )
    except (ValueError, AttributeError, TypeError, IndexError, KeyError):
        return None, f"HTTP {response.status_code}"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The floor for the next attempt: `Retry-After`, else a rate-limit window's `X-Ratelimit-Interval`."""
    for name in ("Retry-After", "X-Ratelimit-Interval"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
