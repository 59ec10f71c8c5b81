"""How failures are classified: once, as data, closed by default.

Every failure of a Commerce Layer call becomes a `CommerceLayerError` with an `ErrorKind`; the task turns the
kind into "retry later", "renew and repeat", "re-resolve" or "dead-letter". Unknown statuses are permanent,
so that a surprise ends visibly in the dead-letter store instead of looping.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    TRANSIENT = "transient"  # connection errors, timeouts, 429, 5xx: retry with backoff
    UNAUTHORIZED = "unauthorized"  # 401 after one token renewal
    NOT_FOUND = "not_found"  # 404: the source vanished; re-resolve it once
    CONFLICT = "conflict"  # 409: "record not unique", documented as safe to ignore
    PERMANENT = "permanent"  # everything else: dead-letter with the reason


_TRANSIENT_STATUSES = frozenset({408, 423, 425, 429, 500, 502, 503, 504})


def classify_status(status: int) -> ErrorKind:
    if status in _TRANSIENT_STATUSES:
        return ErrorKind.TRANSIENT
    if status == 401:
        return ErrorKind.UNAUTHORIZED
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 409:
        return ErrorKind.CONFLICT
    return ErrorKind.PERMANENT


class CommerceLayerError(Exception):
    """A Commerce Layer call failed; `kind` says what to do about it. Holds no token and no request body."""

    def __init__(
        self,
        kind: ErrorKind,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        self.kind = kind
        # A write whose answer never came (timeout, connection lost after sending): it may still be applied.
        self.ambiguous = ambiguous
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """A one-line, log-safe description, e.g. `http 422 VALIDATION_ERROR: metadata is invalid`."""
        head = f"http {self.status}" if self.status is not None else self.kind.value
        code = f" {self.code}" if self.code else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{head}{code}{detail}"[:500]
