"""Reading request bodies safely: content type, size, JSON, shape and field types."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from api.errors import RequestError
from provisioner.errors import InvalidInput

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Field:
    """One accepted field of a JSON object body."""

    kind: type | tuple[type, ...]
    required: bool = False
    max_length: int = 255


async def read_json(request: web.Request, fields: dict[str, Field]) -> dict[str, Any]:
    """The request's JSON object, checked against `fields`; 4xx errors for anything else."""
    if request.content_type != "application/json":
        raise RequestError(415, "unsupported_media_type", "send the body as application/json")
    raw = await _read_limited(request)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", code="invalid_body")
    return check_fields(data, fields)


async def _read_limited(request: web.Request) -> bytes:
    """The raw body, counting streamed bytes too (aiohttp's own limit does not)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16384):
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestError(
                413, "payload_too_large", f"the body is larger than {MAX_BODY // 1024} KiB"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def check_fields(data: dict[str, Any], fields: dict[str, Field]) -> dict[str, Any]:
    """`data` if every key is known, every required key present, and every value well typed."""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; accepted: {', '.join(sorted(fields))}",
            code="unknown_field",
        )
    for name, field in fields.items():
        if name not in data or data[name] is None:
            if field.required:
                raise InvalidInput(f"field {name!r} is required", code="missing_field")
            continue
        _check_value(name, data[name], field)
    return data


def _check_value(name: str, value: Any, field: Field) -> None:
    """Raise InvalidInput unless `value` suits `field`."""
    # bool is an int in Python; JSON true is never a valid number here.
    if isinstance(value, bool) and bool not in _kinds(field):
        raise InvalidInput(f"field {name!r} has the wrong type", code="invalid_type")
    if not isinstance(value, field.kind):
        raise InvalidInput(f"field {name!r} has the wrong type", code="invalid_type")
    if isinstance(value, str) and "\x00" in value:
        raise InvalidInput(f"field {name!r} holds a NUL character", code="invalid_value")
    if isinstance(value, str) and not 0 < len(value) <= field.max_length:
        raise InvalidInput(
            f"field {name!r} must be 1 to {field.max_length} characters", code="invalid_length"
        )
    if isinstance(value, list) and (
        len(value) > 20 or not all(isinstance(v, str) and 0 < len(v) <= 255 for v in value)
    ):
        raise InvalidInput(f"field {name!r} must be a list of up to 20 names", code="invalid_type")


def _kinds(field: Field) -> tuple[type, ...]:
    """The accepted types of a field as a tuple."""
    return field.kind if isinstance(field.kind, tuple) else (field.kind,)
