"""The Commerce Layer endpoints: `POST /oauth/token` and `customer_payment_sources` list / retrieve / update.

Behaviour follows the real API where it is known (see README.md for the choices made where it is not):
406 without the JSON:API Accept type, 415 for writes without the JSON:API Content-Type, 401 `INVALID_TOKEN`
for a missing, unknown or expired bearer token, 404 `RECORD_NOT_FOUND`, 400 for bad parameters, 422
`VALIDATION_ERROR` for bodies that fail the official `customerPaymentSourceUpdate` schema.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from simulator import schema
from simulator.auth import TokenIssuer, bearer_token
from simulator.jsonapi import (
    FIELD_NAMES,
    RESOURCE_TYPE,
    accepts_json_api,
    error_object,
    error_response,
    errors_response,
    is_json_api,
    render_source,
    standard_error,
)
from simulator.protocol import JSON, InvalidJSON, Request, Response, json_response, media_type, parse_json
from simulator.store import WRITABLE_ATTRIBUTES, Source, Store

TOKEN_PATH = "/oauth/token"
COLLECTION_PATH = f"/api/{RESOURCE_TYPE}"
MEMBER_TEMPLATE = f"/api/{RESOURCE_TYPE}/:id"
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 25
WRITABLE_RELATIONSHIPS = frozenset({"customer", "payment_method", "payment_source"})
FILTERABLE = ("id", "name", "payment_source_token", "reference", "reference_origin")
SORTABLE = frozenset({"id", "created_at", "updated_at", "reference", "reference_origin"})
FORM = "application/x-www-form-urlencoded"

_FILTER = re.compile(r"^filter\[q\]\[(?P<attribute>[a-z_]+?)_(?P<predicate>eq|in)\]$")
_MEMBER = re.compile(rf"^/api/{RESOURCE_TYPE}/(?P<id>[^/]+)$")

INVALID_CLIENT_DETAIL = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)


@dataclass(frozen=True)
class Route:
    """Where a Commerce Layer request goes; `template` is None for paths the simulator does not serve."""

    method: str
    template: str | None
    allowed: tuple[str, ...] = ()
    source_id: str | None = None

    @property
    def key(self) -> str:
        """Method + path template: the unit of per-endpoint rate limits and of `stats.by_route`."""
        return f"{self.method} {self.template or '/api/*'}"

    @property
    def auth_endpoint(self) -> bool:
        return self.template == TOKEN_PATH


def resolve(method: str, path: str) -> Route | None:
    """The route of a Commerce Layer path, or None when the path is neither `/api...` nor `/oauth/token`."""
    if path == TOKEN_PATH:
        return Route(method, TOKEN_PATH, ("POST",))
    if path == COLLECTION_PATH:
        return Route(method, COLLECTION_PATH, ("GET",))
    match = _MEMBER.match(path)
    if match:
        return Route(method, MEMBER_TEMPLATE, ("GET", "PATCH"), source_id=unquote(match["id"]))
    if path == "/api" or path.startswith("/api/"):
        return Route(method, None)
    return None


@dataclass
class Query:
    """The accepted query parameters of a request."""

    fields: frozenset[str] | None = None
    filters: list[tuple[str, str, list[str]]] = field(default_factory=list)
    page_size: int = DEFAULT_PAGE_SIZE
    page_number: int = 1
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (attribute, descending)


class BadQuery(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class CommerceLayerApi:
    """The endpoint logic; faults and rate limits have already been applied when these methods run."""

    def __init__(self, store: Store, tokens: TokenIssuer, *, mode: str) -> None:
        self.store = store
        self.tokens = tokens
        self.mode = mode

    def handle(self, request: Request, route: Route, *, source_statuses: Mapping[str, int]) -> Response:
        if route.auth_endpoint:
            return self.token(request)
        if not accepts_json_api(request.header("Accept")):
            return standard_error(406)
        if request.method in ("POST", "PATCH", "PUT") and not is_json_api(request.header("Content-Type")):
            return standard_error(415)
        if not self.tokens.valid(bearer_token(request.header("Authorization"))):
            return standard_error(401)
        if route.template is None:
            return error_response(404, "Not found", f"The path {request.path} does not exist.", "NOT_FOUND")
        if request.method not in route.allowed:
            return standard_error(405, headers={"Allow": ", ".join(route.allowed)})
        try:
            if route.source_id is None:
                return self.list_sources(request)
            if request.method == "GET":
                return self.retrieve_source(request, route.source_id)
            return self.update_source(request, route.source_id, source_statuses)
        except BadQuery as bad:
            return bad.response

    # -- POST /oauth/token ----------------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        if request.method != "POST":
            return standard_error(405, headers={"Allow": "POST"})
        params = _token_params(request)
        if params is None:
            return _oauth_error(400, "invalid_request", "The request body must be JSON or form-encoded fields.")
        grant_type = params.get("grant_type")
        if grant_type is None:
            return _oauth_error(400, "invalid_request", "The request is missing the grant_type parameter.")
        if grant_type != "client_credentials":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        scope = params.get("scope")
        if scope is not None and (not isinstance(scope, str) or not scope.strip()):
            return _oauth_error(400, "invalid_scope", "The requested scope is invalid.")
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if client_id is None and client_secret is None:
            client_id, client_secret = _basic_credentials(request.header("Authorization"))
        if not self.tokens.client_ok(client_id, client_secret):
            return _oauth_error(401, "invalid_client", INVALID_CLIENT_DETAIL, code="UNAUTHORIZED")
        body = self.tokens.issue(scope.strip() if isinstance(scope, str) else None)
        return json_response(200, body, content_type=JSON, headers={"Cache-Control": "no-store"})

    # -- GET /api/customer_payment_sources ------------------------------------------------------------------

    def list_sources(self, request: Request) -> Response:
        query = _parse_query(request, collection=True)
        matches = self.store.select(lambda source: _matches(source, query.filters))
        for attribute, descending in reversed(query.sort):
            indexed = list(enumerate(matches))
            indexed.sort(key=lambda pair: (_sort_value(pair[1], attribute), pair[0]), reverse=descending)
            matches = [source for _, source in indexed]
        record_count = len(matches)
        page_count = math.ceil(record_count / query.page_size)
        start = (query.page_number - 1) * query.page_size
        page = matches[start : start + query.page_size]
        document = {
            "data": [self._render(source, request, query.fields) for source in page],
            "meta": {"record_count": record_count, "page_count": page_count},
            "links": _page_links(request, query, page_count),
        }
        return json_response(200, document)

    # -- GET /api/customer_payment_sources/:id --------------------------------------------------------------

    def retrieve_source(self, request: Request, source_id: str) -> Response:
        query = _parse_query(request, collection=False)
        source = self.store.get(source_id)
        if source is None:
            return standard_error(404)
        return json_response(200, {"data": self._render(source, request, query.fields)})

    # -- PATCH /api/customer_payment_sources/:id ------------------------------------------------------------

    def update_source(self, request: Request, source_id: str, source_statuses: Mapping[str, int]) -> Response:
        query = _parse_query(request, collection=False)
        injected = source_statuses.get(source_id)
        if injected is not None:
            return _injected_source_error(injected, source_id)
        if self.store.get(source_id) is None:
            return standard_error(404)
        try:
            body = parse_json(request.body)
        except InvalidJSON:
            return error_response(400, "Bad request", "The request body is not valid JSON.", "BAD_REQUEST")
        if not isinstance(body, dict):
            return error_response(400, "Bad request", "The request body must be a JSON object.", "BAD_REQUEST")
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"] != source_id:
            return error_response(
                400,
                "Key is not included in URL",
                f"The URL does not support the key {data['id']}",
                "KEY_NOT_INCLUDED_IN_URL",
                pointer="/data/id",
            )
        not_allowed = _not_writable(data)
        if not_allowed:
            return errors_response(400, not_allowed)
        violations = schema.violations(schema.UPDATE_SCHEMA, body)
        if violations:
            return errors_response(422, [_violation_error(v) for v in violations])
        attributes = data.get("attributes", {}) if isinstance(data, dict) else {}
        updated = self.store.update(source_id, attributes)
        if updated is None:  # deleted in the meantime
            return standard_error(404)
        return json_response(200, {"data": self._render(updated, request, query.fields)})

    def _render(self, source: Source, request: Request, fields: frozenset[str] | None) -> dict[str, Any]:
        return render_source(source, base_url=request.base_url, mode=self.mode, fields=fields)


# -- helpers ------------------------------------------------------------------------------------------------


def _oauth_error(status: int, title: str, detail: str, *, code: str = "BAD_REQUEST") -> Response:
    return error_response(status, title, detail, code, numeric_status=True)


def _token_params(request: Request) -> dict[str, Any] | None:
    """The token request's fields from a JSON object or a form body; None when the body is neither."""
    if not request.body.strip():
        return {}
    if media_type(request.header("Content-Type")) == FORM:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return {name: values[-1] for name, values in parse_qs(text, keep_blank_values=True).items()}
    try:
        value = parse_json(request.body)
    except InvalidJSON:
        return None
    return value if isinstance(value, dict) else None


def _basic_credentials(authorization: str | None) -> tuple[str | None, str | None]:
    """Client credentials from `Authorization: Basic ...` (RFC 6749 2.3.1), else (None, None)."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, client_secret = decoded.partition(":")
    return (unquote(client_id), unquote(client_secret)) if sep else (None, None)


def _bad(status: int, title: str, detail: str, code: str, parameter: str) -> BadQuery:
    return BadQuery(error_response(status, title, detail, code, parameter=parameter))


def _parse_query(request: Request, *, collection: bool) -> Query:
    """Check every query parameter; raises BadQuery (400) for anything not supported."""
    query = Query()
    for name, values in request.args.items():
        value = values[-1]
        if name.startswith("fields[") and name.endswith("]"):
            query.fields = _parse_fields(name, value)
        elif collection and name.startswith("filter["):
            match = _FILTER.match(name)
            if not match or match["attribute"] not in FILTERABLE:
                raise _bad(400, "Filter not allowed", f"{name} is not allowed.", "FILTER_NOT_ALLOWED", name)
            wanted = [v.strip() for v in value.split(",")] if match["predicate"] == "in" else [value]
            wanted = [v for v in wanted if v != ""]
            if wanted:  # like Ransack, a blank value drops the condition instead of matching nothing
                query.filters.append((match["attribute"], match["predicate"], wanted))
        elif collection and name in ("page[size]", "page[number]"):
            number = int(value) if value.isascii() and value.isdigit() else 0
            if name == "page[size]" and not 1 <= number <= MAX_PAGE_SIZE:
                raise _bad(
                    400,
                    "Invalid page value",
                    f"{value} is not a valid value for size page parameter (1 to {MAX_PAGE_SIZE}).",
                    "INVALID_PAGE_VALUE",
                    name,
                )
            if name == "page[number]" and number < 1:
                raise _bad(
                    400,
                    "Invalid page value",
                    f"{value} is not a valid value for number page parameter.",
                    "INVALID_PAGE_VALUE",
                    name,
                )
            if name == "page[size]":
                query.page_size = number
            else:
                query.page_number = number
        elif collection and name == "sort":
            query.sort = _parse_sort(value)
        else:
            raise _bad(400, "Param not allowed", f"{name} is not allowed.", "PARAM_NOT_ALLOWED", name)
    return query


def _parse_fields(name: str, value: str) -> frozenset[str]:
    resource_type = name[len("fields[") : -1]
    if resource_type != RESOURCE_TYPE:
        raise _bad(400, "Invalid resource", f"{resource_type} is not a valid resource.", "INVALID_RESOURCE", name)
    wanted = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(wanted - FIELD_NAMES)
    if unknown:
        detail = f"{unknown[0]} is not a valid field for {RESOURCE_TYPE}."
        raise _bad(400, "Invalid field", detail, "INVALID_FIELD", name)
    return wanted


def _parse_sort(value: str) -> list[tuple[str, bool]]:
    criteria: list[tuple[str, bool]] = []
    for part in (p.strip() for p in value.split(",")):
        descending = part.startswith("-")
        attribute = part[1:] if descending else part
        if attribute not in SORTABLE:
            detail = f"{attribute} is not a valid sort criteria for {RESOURCE_TYPE}"
            raise _bad(400, "Invalid sort criteria", detail, "INVALID_SORT_CRITERIA", "sort")
        criteria.append((attribute, descending))
    return criteria


def _sort_value(source: Source, attribute: str) -> tuple[bool, str]:
    value = getattr(source, attribute)
    return (value is not None, value or "")


def _matches(source: Source, filters: list[tuple[str, str, list[str]]]) -> bool:
    return all(getattr(source, attribute) in wanted for attribute, _, wanted in filters)


def _page_links(request: Request, query: Query, page_count: int) -> dict[str, str]:
    base = f"{request.base_url}{COLLECTION_PATH}"
    kept = [
        (name, value)
        for name, values in request.args.items()
        if name not in ("page[number]", "page[size]")
        for value in values
    ]

    def link(number: int) -> str:
        params = [*kept, ("page[number]", str(number)), ("page[size]", str(query.page_size))]
        return f"{base}?{urlencode(params)}"

    last = max(page_count, 1)
    links = {"first": link(1)}
    if query.page_number > 1:
        links["prev"] = link(min(query.page_number - 1, last))
    if query.page_number < page_count:
        links["next"] = link(query.page_number + 1)
    links["last"] = link(last)
    return links


def _not_writable(data: Any) -> list[dict[str, Any]]:
    """400 PARAM_NOT_ALLOWED errors for attributes and relationships a PATCH may not set."""
    errors: list[dict[str, Any]] = []
    if not isinstance(data, dict):
        return errors
    for section, allowed in (("attributes", WRITABLE_ATTRIBUTES), ("relationships", WRITABLE_RELATIONSHIPS)):
        given = data.get(section)
        if not isinstance(given, dict):
            continue
        for name in given:
            if name not in allowed:
                errors.append(
                    error_object(
                        400,
                        "Param not allowed",
                        f"{name} is not allowed.",
                        "PARAM_NOT_ALLOWED",
                        pointer=schema.pointer(["data", section, str(name)]),
                    )
                )
    return errors


def _violation_error(violation: schema.Violation) -> dict[str, Any]:
    field_name = violation.pointer.rsplit("/", 1)[-1] or "data"
    return error_object(
        422,
        violation.message,
        f"{field_name} - {violation.message}",
        "VALIDATION_ERROR",
        pointer=violation.pointer or "/data",
        meta={"error": violation.keyword},
    )


def _injected_source_error(status: int, source_id: str) -> Response:
    detail = f"Source {source_id} is set to fail with {status} (simulator source_statuses)."
    if status == 422:
        return error_response(422, "is invalid", detail, "VALIDATION_ERROR", pointer="/data", meta={"error": "invalid"})
    return standard_error(status, detail=detail)
