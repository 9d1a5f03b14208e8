"""Request bodies, declared once per route: JSON objects or multipart forms, read and checked
safely (content type, size, shape, field types), and described for the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import BodyPartReader, web

from api.errors import RequestError
from api.schema import Schema, array, integer, nullable, string
from provisioner.catalog import Catalog
from provisioner.errors import InvalidInput

MAX_BODY = 64 * 1024
# List fields hold up to this many names of 1 to MAX_ITEM_LENGTH characters.
MAX_LIST_ITEMS, MAX_ITEM_LENGTH = 20, 255


@dataclass(frozen=True)
class Upload:
    """One file of a multipart body."""

    filename: str | None
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class Field:
    """One accepted field of a body: its type and bounds, and what the document adds about it.

    `doc` adds schema keywords (pattern, examples, bounds the core enforces); `choices` adds
    those that depend on the deployment's catalog (the plans and images it offers); `nested`
    checks an object field's own fields.
    """

    kind: type | tuple[type, ...]
    required: bool = False
    max_length: int = 255
    doc: Schema = field(default_factory=dict)
    choices: Callable[[Catalog], Schema] | None = None
    nested: dict[str, Field] | None = None

    def schema(self, catalog: Catalog | None) -> Schema:
        """The JSON schema of this field, as check_fields enforces it."""
        schema = self._base(catalog) | self.doc
        if catalog is not None and self.choices is not None:
            schema |= self.choices(catalog)
        # check_fields treats null like an absent field: optional fields accept it.
        return schema if self.required else nullable(schema)

    def _base(self, catalog: Catalog | None) -> Schema:
        if self.kind is str:
            return string(minLength=1, maxLength=self.max_length)
        if self.kind is int:
            return integer()
        if self.kind is list:
            return array(string(minLength=1, maxLength=MAX_ITEM_LENGTH), maxItems=MAX_LIST_ITEMS)
        if self.kind is dict:
            inner = fields_schema(self.nested, catalog) if self.nested else {}
            return {"type": "object"} | {k: v for k, v in inner.items() if k != "type"}
        if self.kind is Upload:
            return string(contentMediaType="application/octet-stream")
        raise TypeError(f"no schema for body field kind {self.kind!r}; teach api/body.py")


def fields_schema(fields: dict[str, Field], catalog: Catalog | None = None) -> Schema:
    """A closed object of `fields`."""
    return {
        "type": "object",
        "properties": {name: f.schema(catalog) for name, f in fields.items()},
        "required": [name for name, f in fields.items() if f.required],
        "additionalProperties": False,
    }


class Body(Protocol):
    """How a route's body is read and documented."""

    name: str  # its component schema's name
    fields: dict[str, Field]
    required: bool
    media_type: str

    async def read(self, request: web.Request) -> dict[str, Any]:
        """The checked fields; a 4xx error for anything else."""
        ...


@dataclass(frozen=True)
class Json:
    """A JSON object body; when not `required`, a request without a body reads as {}."""

    name: str
    fields: dict[str, Field]
    required: bool = True
    media_type = "application/json"

    async def read(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object, checked against the fields."""
        if not self.required and not request.can_read_body:
            return {}
        if request.content_type != self.media_type:
            raise RequestError(415, "unsupported_media_type", "send the body as application/json")
        raw = await _read_limited(request)
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise RequestError(400, "malformed_json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object", code="invalid_body")
        return check_fields(data, self.fields)


async def _read_limited(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, counting streamed bytes too (aiohttp's own limit does not)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16384):
        size = _counted(size + len(chunk), limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _counted(size: int, limit: int) -> int:
    """`size`, or 413 when it is past `limit`."""
    if size > limit:
        unit, scale = ("MiB", 1 << 20) if limit >= 1 << 20 else ("KiB", 1024)
        raise RequestError(
            413, "payload_too_large", f"the body is larger than {limit // scale} {unit}"
        )
    return size


@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body: `Field(Upload)` parts are files, `Field(str)` parts text."""

    name: str
    fields: dict[str, Field]
    max_bytes: int
    required: bool = True
    media_type = "multipart/form-data"

    async def read(self, request: web.Request) -> dict[str, Any]:
        """Every part, files as Upload, the whole at most `max_bytes`."""
        if request.content_type != self.media_type:
            raise RequestError(
                415, "unsupported_media_type", "send the body as multipart/form-data"
            )
        data: dict[str, Any] = {}
        size = 0
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader) or part.name is None or part.name in data:
                raise InvalidInput("each form part needs its own name", code="invalid_body")
            content = bytearray()
            while chunk := await part.read_chunk(65536):
                size = _counted(size + len(chunk), self.max_bytes)
                content += chunk
            data[part.name] = self._value(part, bytes(content))
        return check_fields(data, self.fields)

    def _value(self, part: BodyPartReader, content: bytes) -> Any:
        """A part as its field's kind: an Upload, or text."""
        kind = self.fields.get(part.name or "")
        if kind is not None and kind.kind is Upload:
            return Upload(part.filename, content)
        try:
            return content.decode()
        except UnicodeDecodeError:
            raise InvalidInput(
                f"field {part.name!r} is not UTF-8 text", code="invalid_value"
            ) from None


def check_fields(data: dict[str, Any], fields: dict[str, Field]) -> dict[str, Any]:
    """`data` if every key is known, every required key present, and every value well typed."""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; accepted: {', '.join(sorted(fields))}",
            code="unknown_field",
            field=unknown[0],
        )
    for name, spec in fields.items():
        if name not in data or data[name] is None:
            if spec.required:
                raise InvalidInput(f"field {name!r} is required", code="missing_field", field=name)
            continue
        _check_value(name, data[name], spec)
        if spec.nested is not None:
            check_fields(data[name], spec.nested)
    return data


def _check_value(name: str, value: Any, spec: Field) -> None:
    """Raise InvalidInput unless `value` suits `spec`."""
    # bool is an int in Python; JSON true is never a valid number here.
    if isinstance(value, bool) and bool not in _kinds(spec):
        raise InvalidInput(f"field {name!r} has the wrong type", code="invalid_type", field=name)
    if not isinstance(value, spec.kind):
        raise InvalidInput(f"field {name!r} has the wrong type", code="invalid_type", field=name)
    if isinstance(value, str) and "\x00" in value:
        raise InvalidInput(
            f"field {name!r} holds a NUL character", code="invalid_value", field=name
        )
    if isinstance(value, str) and not 0 < len(value) <= spec.max_length:
        raise InvalidInput(
            f"field {name!r} must be 1 to {spec.max_length} characters",
            code="invalid_length",
            field=name,
        )
    if isinstance(value, list) and (
        len(value) > MAX_LIST_ITEMS
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_ITEM_LENGTH for v in value)
    ):
        raise InvalidInput(
            f"field {name!r} must be a list of up to {MAX_LIST_ITEMS} names",
            code="invalid_type",
            field=name,
        )


def _kinds(spec: Field) -> tuple[type, ...]:
    """The accepted types of a field as a tuple."""
    return spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
