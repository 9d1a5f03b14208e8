"""Bad input gets a clear 4xx JSON error and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from provisioner.app.cli import System

Client = TestClient[object, object]
GOOD = {"plan": "small", "image": "debian-12"}


async def snapshot(system: System) -> tuple[int, int, int]:
    """Workspaces, operations and audit events in the store: nothing may change on bad input."""
    async with system.store.transaction() as tx:
        ops, wss = await tx.count_operations_by_state(), await tx.count_workspaces_by_state()
        audit = await tx.list_audit(target=None, actor=None, after=None, limit=10_000)
    return sum(wss.values()), sum(ops.values()), len(audit)


async def expect_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert a JSON error of the contract's shape."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"plan": "gigantic", "image": "debian-12"}, 422, "unknown_reference"),
        ({"plan": "small", "image": "windows-95"}, 422, "unknown_reference"),
        ({"plan": 5, "image": "debian-12"}, 422, "invalid_type"),  # absent is fine: the default
        ({**GOOD, "colour": "blue"}, 422, "unknown_field"),
        ({**GOOD, "ttl_hours": "ten"}, 422, "invalid_type"),
        ({**GOOD, "ttl_hours": True}, 422, "invalid_type"),
        ({**GOOD, "ttl_hours": 100_000}, 422, "invalid_input"),
        ({**GOOD, "name": "Bad_Name!"}, 422, "invalid_input"),
        ({**GOOD, "name": "x" * 64}, 422, "invalid_length"),
        ({**GOOD, "playbooks": "site.yml"}, 422, "invalid_type"),
        ({**GOOD, "playbooks": ["nonexistent.yml"]}, 422, "unknown_reference"),
        ([GOOD], 422, "invalid_body"),
    ],
)
async def test_invalid_create_bodies_are_rejected(
    client: Client, admin_headers: dict[str, str], system: System, body: Any, status: int, code: str
) -> None:
    before = await snapshot(system)
    resp = await client.post("/v1/workspaces", json=body, headers=admin_headers)
    await expect_error(resp, status, code)
    assert await snapshot(system) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 413, "payload_too_large"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "malformed_json"),
        (b"plan=small", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"plan": "small", "image": "debian-12"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"plan": "' + b"a" * 70_000 + b'"}', "application/json", 413, "payload_too_large"),
        (b"\xff\xfe\x00", "application/json", 400, "malformed_json"),
    ],
)
async def test_malformed_requests_get_4xx(
    client: Client,
    admin_headers: dict[str, str],
    system: System,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    before = await snapshot(system)
    headers = {**admin_headers, "Content-Type": content_type}
    resp = await client.post("/v1/workspaces", data=data, headers=headers)
    await expect_error(resp, status, code)
    assert await snapshot(system) == before


async def test_streamed_oversized_body_is_413(
    client: Client, admin_headers: dict[str, str]
) -> None:
    async def chunks() -> Any:
        yield b'{"plan": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'"}'

    headers = {**admin_headers, "Content-Type": "application/json"}
    resp = await client.post("/v1/workspaces", data=chunks(), headers=headers)
    await expect_error(resp, 413, "payload_too_large")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
async def test_missing_or_wrong_token_is_401(
    client: Client, system: System, headers: dict[str, str]
) -> None:
    before = await snapshot(system)
    await expect_error(await client.post("/v1/workspaces", json=GOOD, headers=headers), 401)
    await expect_error(await client.get("/v1/workspaces", headers=headers), 401)
    assert await snapshot(system) == before


async def test_duplicate_live_name_is_409(client: Client, admin_headers: dict[str, str]) -> None:
    body = {**GOOD, "name": "twin"}
    assert (await client.post("/v1/workspaces", json=body, headers=admin_headers)).status == 202
    await expect_error(
        await client.post("/v1/workspaces", json=body, headers=admin_headers), 409, "name_taken"
    )


async def test_unknown_routes_and_methods_are_json(
    client: Client, admin_headers: dict[str, str]
) -> None:
    await expect_error(await client.get("/v1/nothing", headers=admin_headers), 404, "not_found")
    await expect_error(await client.put("/v1/workspaces", headers=admin_headers), 405)
    await expect_error(
        await client.get("/v1/workspaces/ws_missing", headers=admin_headers), 404, "not_found"
    )
    await expect_error(
        await client.get("/v1/operations/op_missing", headers=admin_headers), 404, "not_found"
    )
    await expect_error(await client.get("/v1/workspaces?state=melting", headers=admin_headers), 422)
    await expect_error(await client.get("/v1/workspaces?limit=0", headers=admin_headers), 422)
    await expect_error(await client.get("/v1/workspaces?limit=x", headers=admin_headers), 422)


async def test_every_answer_carries_a_request_id(client: Client) -> None:
    resp = await client.get("/healthz", headers={"X-Request-Id": "abc123"})
    assert resp.headers["X-Request-Id"] == "abc123"
    resp = await client.get("/v1/workspaces")
    assert len(resp.headers["X-Request-Id"]) == 16


async def test_capacity_exhausted_is_409_with_advice(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    # The default node offers 64 vCPUs: 16 large-plan requests (4 vCPU each) fill it.
    for i in range(16):
        body = {"plan": "large", "image": "debian-12", "name": f"big-{i}"}
        assert (await client.post("/v1/workspaces", json=body, headers=admin_headers)).status == 202
    before = await snapshot(system)
    body = {"plan": "small", "image": "debian-12", "name": "one-too-many"}
    err = await expect_error(
        await client.post("/v1/workspaces", json=body, headers=admin_headers),
        409,
        "capacity_exhausted",
    )
    assert "smaller plan" in err["error"]["message"]
    assert await snapshot(system) == before
