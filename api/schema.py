"""JSON Schema building blocks for the OpenAPI document (objects, pages, parameters, answers)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str, kind: str = "schemas") -> Schema:
    """A reference to a component."""
    return {"$ref": f"#/components/{kind}/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` that also admits null."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    widened = {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        widened["enum"] = [*schema["enum"], None]
    return widened


def string(**constraints: Any) -> Schema:
    """A string schema with optional constraints (maxLength, pattern, format, …)."""
    return {"type": "string", **constraints}


def integer(**constraints: Any) -> Schema:
    """An integer schema with optional bounds."""
    return {"type": "integer", **constraints}


def boolean() -> Schema:
    """A boolean schema."""
    return {"type": "boolean"}


def enum_of(values: Any) -> Schema:
    """A string schema whose values are those of a StrEnum (or any iterable of strings)."""
    return string(enum=[str(v) for v in values])


def timestamp() -> Schema:
    """An RFC 3339 timestamp in UTC."""
    return string(format="date-time")


def array(items: Schema, **constraints: Any) -> Schema:
    """An array of `items`."""
    return {"type": "array", "items": items, **constraints}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A closed object; every property is required unless `required` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def page(key: str, item: str) -> Schema:
    """A page of a listing: the items under `key` and the cursor to the next page."""
    return obj({key: array(ref(item)), "next_cursor": nullable(string())})


def answer(description: str, schema: Schema, media_type: str = "application/json") -> Schema:
    """One documented response with a body (`text/plain` for text and streamed text)."""
    return {
        "description": description,
        "headers": {"X-Request-Id": ref("RequestId", "headers")},
        "content": {media_type: {"schema": schema}},
    }


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    """A path parameter such as `{id}` or `{name}`."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or string(),
    }


def query(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "description": description, "schema": schema}


def cursor(schema: Schema | None = None) -> Schema:
    """The `cursor` query parameter of a paginated listing."""
    return query("cursor", schema or string(), "The `next_cursor` of the previous page.")


def limit(maximum: int, default: int) -> Schema:
    """The `limit` query parameter of a paginated listing."""
    schema = integer(minimum=1, maximum=maximum, default=default)
    return query("limit", schema, f"Items per page, 1 to {maximum}.")


def header(name: str, schema: Schema, description: str) -> Schema:
    """An optional request header."""
    return {"name": name, "in": "header", "description": description, "schema": schema}
