"""The in-memory `customer_payment_sources` store: thread-safe, creation-ordered, with sample data.

Every read returns copies, so callers can never mutate the stored state behind the lock's back.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

ID_ALPHABET = string.ascii_letters
ID_LENGTH = 10
DEFAULT_NAME = "XXXX-XXXX-XXXX-4242"

# What a PATCH may change (Commerce Layer schema 4.18+); `name` and the timestamps are read-only.
WRITABLE_ATTRIBUTES = frozenset({"customer_token", "payment_source_token", "reference", "reference_origin", "metadata"})
ATTRIBUTE_NAMES = (
    "name",
    "customer_token",
    "payment_source_token",
    "reference",
    "reference_origin",
    "metadata",
    "created_at",
    "updated_at",
)


def now_iso() -> str:
    """UTC time as Commerce Layer writes it: `2018-01-01T12:00:00.000Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Source:
    """One customer payment source (a wallet entry)."""

    id: str
    payment_source_token: str | None
    customer_token: str | None = None
    name: str | None = DEFAULT_NAME
    reference: str | None = None
    reference_origin: str | None = None
    metadata: dict[str, Any] | None = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""

    def attributes(self) -> dict[str, Any]:
        """All attributes, in Commerce Layer's order; `metadata` is a copy."""
        return {
            "name": self.name,
            "customer_token": self.customer_token,
            "payment_source_token": self.payment_source_token,
            "reference": self.reference,
            "reference_origin": self.reference_origin,
            "metadata": copy.deepcopy(self.metadata),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def copy(self) -> Source:
        return replace(self, metadata=copy.deepcopy(self.metadata))


@dataclass(frozen=True)
class NewSource:
    """What is needed to create a source; `id` is generated when None."""

    payment_source_token: str | None
    id: str | None = None
    customer_token: str | None = None
    name: str | None = DEFAULT_NAME
    reference: str | None = None
    reference_origin: str | None = None
    metadata: dict[str, Any] | None = field(default_factory=dict)


class DuplicateIdError(ValueError):
    """A source with the requested id already exists (or the same id was requested twice)."""


class Store:
    """Customer payment sources by id, in creation order, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, Source] = {}
        self._updates = 0

    # -- writes ---------------------------------------------------------------------------------------------

    def create(self, new: NewSource) -> Source:
        return self.create_many([new])[0]

    def create_many(self, items: Iterable[NewSource]) -> list[Source]:
        """Create all or nothing: a duplicate id anywhere refuses the whole batch."""
        items = list(items)
        with self._lock:
            wanted = [item.id for item in items if item.id is not None]
            taken = [i for i in wanted if i in self._sources]
            if taken or len(set(wanted)) != len(wanted):
                duplicates = sorted(set(taken) | {i for i in wanted if wanted.count(i) > 1})
                raise DuplicateIdError(", ".join(duplicates))
            created: list[Source] = []
            for item in items:
                stamp = now_iso()
                source = Source(
                    id=item.id if item.id is not None else self._new_id(),
                    payment_source_token=item.payment_source_token,
                    customer_token=item.customer_token,
                    name=item.name,
                    reference=item.reference,
                    reference_origin=item.reference_origin,
                    metadata=copy.deepcopy(item.metadata),
                    created_at=stamp,
                    updated_at=stamp,
                )
                self._sources[source.id] = source
                created.append(source.copy())
            return created

    def update(self, source_id: str, attributes: Mapping[str, Any]) -> Source | None:
        """Replace each given writable attribute (metadata wholesale) and bump `updated_at`; None if unknown."""
        unknown = set(attributes) - WRITABLE_ATTRIBUTES
        if unknown:
            raise ValueError(f"not writable: {', '.join(sorted(unknown))}")
        with self._lock:
            source = self._sources.get(source_id)
            if source is None:
                return None
            for name, value in attributes.items():
                setattr(source, name, copy.deepcopy(value))
            source.updated_at = now_iso()
            self._updates += 1
            return source.copy()

    def delete(self, source_id: str) -> bool:
        with self._lock:
            return self._sources.pop(source_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._sources.clear()
            self._updates = 0

    def seed_sample(self) -> list[Source]:
        """Add the sample wallet entries that match the sample Stripe events (see sample_sources.json)."""
        return self.create_many(load_sample())

    # -- reads ----------------------------------------------------------------------------------------------

    def get(self, source_id: str) -> Source | None:
        with self._lock:
            source = self._sources.get(source_id)
            return source.copy() if source is not None else None

    def all(self) -> list[Source]:
        """Every source, in creation order."""
        with self._lock:
            return [source.copy() for source in self._sources.values()]

    def select(self, predicate: Callable[[Source], bool]) -> list[Source]:
        """The sources the predicate accepts, in creation order (the predicate runs under the lock)."""
        with self._lock:
            return [source.copy() for source in self._sources.values() if predicate(source)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sources)

    @property
    def updates_applied(self) -> int:
        """How many PATCHes changed a source since the last clear."""
        with self._lock:
            return self._updates

    def _new_id(self) -> str:
        while True:
            candidate = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
            if candidate not in self._sources:
                return candidate


def new_source_from_json(item: Any) -> NewSource:
    """Validate one admin `POST /_sim/sources` entry; raises ValueError with a readable reason."""
    if not isinstance(item, dict):
        raise ValueError("each source must be a JSON object")
    allowed = {"id", "payment_source_token", "customer_token", "name", "reference", "reference_origin", "metadata"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)}")
    if "payment_source_token" not in item:
        raise ValueError("payment_source_token is required")
    for key in ("payment_source_token", "customer_token", "name", "reference", "reference_origin"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise ValueError(f"{key} must be a string or null")
    source_id = item.get("id")
    if source_id is not None and not _valid_id(source_id):
        raise ValueError("id must be 1-64 characters from A-Z a-z 0-9 _ -")
    metadata = item.get("metadata", {})
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("metadata must be an object or null")
    return NewSource(
        id=source_id,
        payment_source_token=item["payment_source_token"],
        customer_token=item.get("customer_token"),
        name=item.get("name", DEFAULT_NAME),
        reference=item.get("reference"),
        reference_origin=item.get("reference_origin"),
        metadata=metadata,
    )


def _valid_id(value: Any) -> bool:
    allowed = set(string.ascii_letters + string.digits + "_-")
    return isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= allowed


def load_sample() -> list[NewSource]:
    """The sample wallet entries shipped in `sample_sources.json`."""
    text = resources.files("simulator").joinpath("sample_sources.json").read_text(encoding="utf-8")
    items = json.loads(text)["sources"]
    return [new_source_from_json(item) for item in items]
