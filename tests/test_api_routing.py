"""The route table: a route declared in a few lines is served, checked and documented."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.body import Field, Multipart, Upload, check_fields
from api.errors import METRICS_KEY, error_boundary
from api.openapi import spec
from api.render import json_response
from api.routing import PUBLIC, Call, RouteTable
from api.schema import answer, integer, obj, ref, string
from provisioner.errors import InvalidInput
from provisioner.metrics import Metrics

Client = TestClient[Any, Any]
ARRIVED = obj({"name": string(), "filename": string(), "size": integer()})
table = RouteTable("uploads", schemas={"Arrived": ARRIVED})
UPLOAD_FIELDS = {"file": Field(Upload, required=True), "name": Field(str, max_length=20)}


@table.post(
    "/v1/uploads",
    PUBLIC,
    "Upload a file",
    status=201,
    ok=answer("What arrived.", ref("Arrived")),
    body=Multipart("Upload", UPLOAD_FIELDS, max_bytes=1024),
)
async def upload(call: Call) -> web.Response:
    """Say what arrived."""
    file: Upload = call.body["file"]
    shown = {
        "name": call.body.get("name") or "-",
        "filename": file.filename,
        "size": len(file.content),
    }
    return json_response(shown, status=201)


@table.get("/v1/ticks", PUBLIC, "Streamed text", ok=answer("Lines.", string(), "text/plain"))
async def ticks(call: Call) -> web.StreamResponse:
    """Three lines, each sent on its own."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(call.request)
    for n in range(3):
        await response.write(f"tick {n}\n".encode())
    await response.write_eof()
    return response


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application(middlewares=[error_boundary])
    app[METRICS_KEY] = Metrics()
    table.add_to(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def form(**parts: bytes | str) -> aiohttp.FormData:
    """A multipart form; bytes parts are files."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in parts.items():
        if isinstance(value, bytes):
            data.add_field(name, value, filename=f"{name}.tar.gz")
        else:
            data.add_field(name, value)
    return data


async def test_a_multipart_route_reads_files_and_text(client: Client) -> None:
    response = await client.post("/v1/uploads", data=form(file=b"x" * 100, name="site"))
    assert response.status == 201
    assert await response.json() == {"name": "site", "filename": "file.tar.gz", "size": 100}


@pytest.mark.parametrize(
    ("parts", "status", "code"),
    [
        ({"file": b"x" * 2000}, 413, "payload_too_large"),
        ({"name": "no file"}, 422, "missing_field"),
        ({"file": b"x", "extra": "y"}, 422, "unknown_field"),
        ({"file": b"x", "name": "n" * 21}, 422, "invalid_length"),
    ],
)
async def test_a_multipart_body_is_checked(
    client: Client, parts: dict[str, Any], status: int, code: str
) -> None:
    response = await client.post("/v1/uploads", data=form(**parts))
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_a_multipart_route_refuses_json(client: Client) -> None:
    response = await client.post("/v1/uploads", json={"file": "x"})
    assert response.status == 415


async def test_a_streamed_text_route(client: Client) -> None:
    response = await client.get("/v1/ticks")
    assert response.content_type == "text/plain"
    assert await response.text() == "tick 0\ntick 1\ntick 2\n"


def test_the_document_describes_the_multipart_body() -> None:
    document = spec((table,))
    schemathesis.openapi.from_dict(document).validate()
    body = document["paths"]["/v1/uploads"]["post"]["requestBody"]
    assert body == {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/Upload"}}},
    }
    fields = document["components"]["schemas"]["Upload"]
    assert fields["required"] == ["file"]
    assert fields["properties"]["file"]["contentMediaType"] == "application/octet-stream"
    assert "413" in document["paths"]["/v1/uploads"]["post"]["responses"]
    assert document["components"]["schemas"]["Arrived"] == ARRIVED  # declared with the table


def test_field_errors_name_their_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_fields({"name": 3, "file": Upload("f", b"")}, UPLOAD_FIELDS)
    assert (caught.value.code, caught.value.field) == ("invalid_type", "name")
