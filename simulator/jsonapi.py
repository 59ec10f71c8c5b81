"""JSON:API building blocks: error documents, media-type checks and the rendering of a resource.

Errors always have Commerce Layer's shape, `{"errors": [{"title", "detail", "code", "status", "source"?,
"meta"?}]}`, and are sent as `application/vnd.api+json`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from http import HTTPStatus
from typing import Any

from simulator.protocol import JSON_API, Response, json_response, media_type
from simulator.store import ATTRIBUTE_NAMES, Source

RESOURCE_TYPE = "customer_payment_sources"
ORGANIZATION_ID = "simorg"
RELATIONSHIPS = ("customer", "payment_method", "payment_source", "versions")
FIELD_NAMES = frozenset(ATTRIBUTE_NAMES) | frozenset(RELATIONSHIPS)

# status -> (title, detail, code) for errors that need nothing more specific.
STANDARD_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Bad request", "The request could not be understood.", "BAD_REQUEST"),
    401: ("Invalid token", "The access token you provided is invalid.", "INVALID_TOKEN"),
    404: ("Record not found", "The requested resource was not found.", "RECORD_NOT_FOUND"),
    405: ("Method not allowed", "The requested method is not allowed on this resource.", "METHOD_NOT_ALLOWED"),
    406: (
        "Not acceptable",
        "All requests must accept the application/vnd.api+json media type.",
        "NOT_ACCEPTABLE",
    ),
    409: ("Record not unique", "The record is not unique.", "RECORD_NOT_UNIQUE"),
    413: ("Payload too large", "The request body is too large.", "PAYLOAD_TOO_LARGE"),
    415: (
        "Unsupported media type",
        "All requests that create or update must use the 'application/vnd.api+json' Content-Type.",
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    422: ("Unprocessable entity", "The resource could not be processed.", "VALIDATION_ERROR"),
    423: ("Locked", "The resource is locked, try again later.", "LOCKED"),
    429: ("Too many requests", "You have exceeded the rate limit, try again later.", "TOO_MANY_REQUESTS"),
    500: ("Internal server error", "Something went wrong.", "INTERNAL_SERVER_ERROR"),
    502: ("Bad gateway", "The upstream service answered badly.", "BAD_GATEWAY"),
    503: ("Service unavailable", "The service is temporarily unavailable.", "SERVICE_UNAVAILABLE"),
    504: ("Gateway timeout", "The upstream service did not answer in time.", "GATEWAY_TIMEOUT"),
}


def error_object(
    status: int,
    title: str,
    detail: str,
    code: str,
    *,
    pointer: str | None = None,
    parameter: str | None = None,
    meta: dict[str, Any] | None = None,
    numeric_status: bool = False,
) -> dict[str, Any]:
    """One JSON:API error; `status` is a string unless `numeric_status` (Commerce Layer uses both)."""
    error: dict[str, Any] = {
        "title": title,
        "detail": detail,
        "code": code,
        "status": status if numeric_status else str(status),
    }
    if pointer is not None:
        error["source"] = {"pointer": pointer}
    elif parameter is not None:
        error["source"] = {"parameter": parameter}
    if meta is not None:
        error["meta"] = meta
    return error


def errors_response(
    status: int,
    errors: Iterable[dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    content_type: str = JSON_API,
) -> Response:
    return json_response(status, {"errors": list(errors)}, content_type=content_type, headers=headers)


def error_response(
    status: int,
    title: str,
    detail: str,
    code: str,
    *,
    pointer: str | None = None,
    parameter: str | None = None,
    meta: dict[str, Any] | None = None,
    numeric_status: bool = False,
    headers: dict[str, str] | None = None,
    content_type: str = JSON_API,
) -> Response:
    error = error_object(
        status,
        title,
        detail,
        code,
        pointer=pointer,
        parameter=parameter,
        meta=meta,
        numeric_status=numeric_status,
    )
    return errors_response(status, [error], headers=headers, content_type=content_type)


def standard_error(
    status: int,
    *,
    detail: str | None = None,
    pointer: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = JSON_API,
) -> Response:
    """An error with the usual title and code for its status (any status, known or not)."""
    title, default_detail, code = STANDARD_ERRORS.get(status, _generic(status))
    return error_response(
        status,
        title,
        detail or default_detail,
        code,
        pointer=pointer,
        headers=headers,
        content_type=content_type,
    )


def _generic(status: int) -> tuple[str, str, str]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return phrase, f"{phrase}.", phrase.upper().replace(" ", "_").replace("-", "_")


def accepts_json_api(accept: str | None) -> bool:
    """True when the Accept header lists `application/vnd.api+json` (with or without parameters)."""
    return any(media_type(part) == JSON_API for part in (accept or "").split(","))


def is_json_api(content_type: str | None) -> bool:
    return media_type(content_type) == JSON_API


def render_source(
    source: Source,
    *,
    base_url: str,
    mode: str,
    fields: Collection[str] | None = None,
) -> dict[str, Any]:
    """A `customer_payment_sources` resource object; `fields` is a sparse fieldset (None: everything)."""
    self_url = f"{base_url}/api/{RESOURCE_TYPE}/{source.id}"
    attributes = source.attributes()
    if fields is not None:
        attributes = {name: value for name, value in attributes.items() if name in fields}
    relationships = {
        name: {"links": {"self": f"{self_url}/relationships/{name}", "related": f"{self_url}/{name}"}}
        for name in RELATIONSHIPS
        if fields is None or name in fields
    }
    return {
        "id": source.id,
        "type": RESOURCE_TYPE,
        "links": {"self": self_url},
        "attributes": attributes,
        "relationships": relationships,
        "meta": {"mode": mode, "organization_id": ORGANIZATION_ID},
    }
