"""Validation against the official Commerce Layer OpenAPI schema shipped with the package.

The schema file (`customer_payment_source.schema.json`, an extract of the official spec) marks nullable fields
the OpenAPI 3.0 way (`"nullable": true`), which JSON Schema ignores; `to_json_schema` rewrites it so that null is
accepted. The extract also carries `oneOf` lists of `$ref`s to payment schemas that are not part of it
(`#/components/schemas/stripePayment`, ...): those dangling references are dropped, so a relationship is
checked for its documented shape (`data.type` from the enum, `data.id` a string) and nothing more.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema

SCHEMA_FILE = "customer_payment_source.schema.json"
UPDATE_SCHEMA = "customerPaymentSourceUpdate"
RESPONSE_SCHEMA = "customerPaymentSourceResponse"
RESPONSE_LIST_SCHEMA = "customerPaymentSourceResponseList"

_lock = threading.Lock()
_document: dict[str, Any] | None = None
_validators: dict[str, Any] = {}


@dataclass(frozen=True)
class Violation:
    """One schema violation: where (JSON pointer into the body), what, and the failing JSON Schema keyword."""

    pointer: str
    message: str
    keyword: str


def raw_document() -> dict[str, Any]:
    """The schema file exactly as shipped."""
    text = resources.files("simulator").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    document = json.loads(text)
    if not isinstance(document, dict):
        raise TypeError(f"{SCHEMA_FILE} is not a JSON object")
    return document


def document() -> dict[str, Any]:
    """The schema document translated to JSON Schema (loaded once)."""
    global _document
    with _lock:
        if _document is None:
            raw = raw_document()
            schemas = raw.get("components", {}).get("schemas", {})
            translated = to_json_schema(raw, known=set(schemas))
            if not isinstance(translated, dict):
                raise TypeError(f"{SCHEMA_FILE} is not a JSON object")
            _document = translated
        return _document


def to_json_schema(node: Any, *, known: set[str]) -> Any:
    """A copy of an OpenAPI schema node with `nullable` honoured and dangling component `$ref`s removed."""
    if isinstance(node, list):
        return [to_json_schema(item, known=known) for item in node]
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    result = {key: to_json_schema(value, known=known) for key, value in node.items() if key != "nullable"}
    for keyword in ("oneOf", "anyOf"):
        options = result.get(keyword)
        if isinstance(options, list):
            kept = [option for option in options if not _dangling(option, known)]
            if kept:
                result[keyword] = kept
            else:
                del result[keyword]
    if node.get("nullable") is True:
        kind = result.get("type")
        if isinstance(kind, str):
            result["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            result["type"] = [*kind, "null"]
        if isinstance(result.get("enum"), list) and None not in result["enum"]:
            result["enum"] = [*result["enum"], None]
    return result


def _dangling(option: Any, known: set[str]) -> bool:
    prefix = "#/components/schemas/"
    if not isinstance(option, dict) or not isinstance(option.get("$ref"), str):
        return False
    ref: str = option["$ref"]
    return ref.startswith(prefix) and ref[len(prefix) :].split("/", 1)[0] not in known


def validator(schema_name: str) -> Any:
    """A Draft 2020-12 validator for `components.schemas.<schema_name>`, with the document as root for `$ref`s."""
    with _lock:
        cached = _validators.get(schema_name)
    if cached is not None:
        return cached
    root = dict(document())
    if schema_name not in root.get("components", {}).get("schemas", {}):
        raise KeyError(schema_name)
    root["$ref"] = f"#/components/schemas/{schema_name}"
    built = jsonschema.Draft202012Validator(root)
    with _lock:
        _validators[schema_name] = built
    return built


def violations(schema_name: str, instance: Any) -> list[Violation]:
    """Every violation of the named schema, sorted by pointer; empty when the instance is valid."""
    found: list[Violation] = []
    for error in validator(schema_name).iter_errors(instance):
        path = [str(part) for part in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [
                name for name in error.validator_value if name not in error.instance and repr(name) in error.message
            ]
            if missing:
                path.append(str(missing[0]))
        found.append(Violation(pointer=pointer(path), message=str(error.message), keyword=str(error.validator)))
    found.sort(key=lambda v: (v.pointer, v.keyword, v.message))
    return found


def pointer(parts: list[str]) -> str:
    """A JSON pointer (RFC 6901) from path segments."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)
