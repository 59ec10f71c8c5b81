"""Ordering state per payment source, in Redis: the watermark (the guarantee) and the lease (the efficiency).

The watermark of a Commerce Layer payment source is the `ordering_key` of the newest event applied to it (or
found to change nothing). It lives in Commerce Layer too (`metadata.payment_sync`), but only Redis sees the
events that were `unchanged` and therefore never written; both are consulted and the newer one counts.
It only moves forward: `advance` is one Lua script that compares and sets atomically.

The lease is taken per provider payment-method token, before the lookup, so that two tasks for the same card
never interleave their read-merge-PATCH. It expires by itself (far below the task time limit) so a killed worker
cannot block a card for long.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import redis

WATERMARK_TTL_SECONDS = 40 * 24 * 3600  # longer than any event can wait (retries, dead letters, replays)
LEASE_SECONDS = 30
SOURCE_IDS_TTL_SECONDS = 24 * 3600

_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if current and current >= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

OrderKey = tuple[int, int, str]


class SourceBusy(Exception):
    """Another task holds the lease for this payment method; try again shortly (not a failure)."""


def encode(key: OrderKey) -> str:
    """A string whose byte order is the order of the keys (fixed-width seconds, then flag, then id)."""
    created, detached, event_id = key
    return f"{max(created, 0):015d}:{detached}:{event_id}"


def decode(raw: str) -> OrderKey | None:
    created, _, rest = raw.partition(":")
    detached, _, event_id = rest.partition(":")
    if not (created.isdigit() and detached in ("0", "1") and event_id):
        return None
    return (int(created), int(detached), event_id)


class Ordering:
    def __init__(self, client: redis.Redis, *, lease_seconds: int = LEASE_SECONDS) -> None:
        self._redis = client
        self._advance = client.register_script(_ADVANCE)
        self._lease_seconds = lease_seconds

    def watermark(self, source_id: str) -> OrderKey | None:
        raw = self._redis.get(_watermark_key(source_id))
        if raw is None:
            return None
        return decode(raw.decode() if isinstance(raw, bytes) else str(raw))

    def advance(self, source_id: str, key: OrderKey) -> bool:
        """Move the watermark to `key` unless it is already there or beyond; True when it moved."""
        return bool(self._advance(keys=[_watermark_key(source_id)], args=[encode(key), WATERMARK_TTL_SECONDS]))

    def known_sources(self, provider: str, payment_source_token: str) -> list[str] | None:
        """The Commerce Layer ids last found for this payment method (None: not known, look them up)."""
        raw = self._redis.get(_sources_key(provider, payment_source_token))
        if raw is None:
            return None
        ids = json.loads(raw)
        return [str(i) for i in ids] if isinstance(ids, list) and ids else None

    def remember_sources(self, provider: str, payment_source_token: str, source_ids: list[str]) -> None:
        if source_ids:  # "no match" is never cached: a wallet entry may be created at any moment
            self._redis.set(
                _sources_key(provider, payment_source_token), json.dumps(source_ids), ex=SOURCE_IDS_TTL_SECONDS
            )

    def forget_sources(self, provider: str, payment_source_token: str) -> None:
        self._redis.delete(_sources_key(provider, payment_source_token))

    @contextmanager
    def lease(self, provider: str, payment_source_token: str) -> Iterator[None]:
        lock = self._redis.lock(
            f"walletsync:lease:{provider}:{payment_source_token}",
            timeout=self._lease_seconds,
            blocking=False,
        )
        if not lock.acquire():
            raise SourceBusy(payment_source_token)
        fenced = False
        try:
            yield
        except Exception as error:
            if getattr(error, "ambiguous", False):
                # A PATCH whose answer was lost may still land at Commerce Layer later: keep every other write of
                # this card out for a full lease period, so that the late write cannot overwrite a newer one.
                with contextlib.suppress(redis.exceptions.LockError):
                    lock.extend(self._lease_seconds, replace_ttl=True)
                fenced = True
            raise
        finally:
            if not fenced:
                # If the lease expired first, releasing fails; the watermark still protects the order.
                with contextlib.suppress(redis.exceptions.LockError):
                    lock.release()


def _watermark_key(source_id: str) -> str:
    return f"walletsync:watermark:{source_id}"


def _sources_key(provider: str, payment_source_token: str) -> str:
    return f"walletsync:sources:{provider}:{payment_source_token}"
