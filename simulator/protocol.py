"""Transport-neutral request and response values.

The HTTP layer (`simulator.server`) turns bytes on a socket into a `Request`, hands it to the simulator logic
(`simulator.app`) and writes back the `Response` it gets, or drops the connection when the response says so.
Keeping the logic free of sockets makes every endpoint a plain function of a value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

JSON = "application/json"
JSON_API = "application/vnd.api+json"

# Deeper JSON than this is refused with 400: it is never legitimate here and would only risk recursion limits
# when the body is re-serialised (request log, responses).
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class Request:
    """One HTTP request as received: raw path and query, headers in arrival order, body bytes."""

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    base_url: str = "http://127.0.0.1"
    received_at: float = 0.0

    def header(self, name: str) -> str | None:
        """The first value of a header, looked up case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def headers_dict(self) -> dict[str, str]:
        """Headers with their names as sent; repeated headers are joined with ", "."""
        result: dict[str, str] = {}
        for key, value in self.headers:
            result[key] = f"{result[key]}, {value}" if key in result else value
        return result

    @property
    def args(self) -> dict[str, list[str]]:
        """The percent-decoded query string: every name with all its values, in order."""
        return parse_qs(self.query, keep_blank_values=True)

    def arg(self, name: str) -> str | None:
        """The last value given for a query parameter, or None."""
        values = self.args.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    """What to answer; `drop=True` means close the connection without answering at all."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    close: bool = False


def json_response(
    status: int,
    document: Any,
    *,
    content_type: str = JSON_API,
    headers: dict[str, str] | None = None,
) -> Response:
    # ASCII escapes: any stored string, even a lone surrogate, can be sent back.
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=body, content_type=content_type, headers=dict(headers or {}))


def dropped() -> Response:
    return Response(status=0, drop=True)


class InvalidJSON(ValueError):
    """The body is not acceptable JSON (syntax, encoding, non-finite numbers or nesting)."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Strict JSON parsing: UTF-8, no NaN/Infinity, nesting at most MAX_JSON_DEPTH."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant)
    except InvalidJSON:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidJSON(str(exc)) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InvalidJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars are 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: list[Any] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def media_type(value: str | None) -> str:
    """The bare media type of a Content-Type or Accept element, lower-cased, parameters removed."""
    return (value or "").split(";", 1)[0].strip().lower()


def format_number(value: float) -> str:
    """`10` for whole numbers, `0.5` otherwise (header values such as X-Ratelimit-Interval)."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
