"""The rest of the API surface: tokens, audit, nodes, operation logs, rate limits, CORS, metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from provisioner.app import cli as main
from provisioner.app.cli import System
from provisioner.settings import Settings
from tests.test_api_workspaces import wait_operation

Client = TestClient[object, object]
SMALL = {"plan": "small", "image": "debian-12"}


async def new_token(
    client: Client, admin: dict[str, str], role: str, owner: str
) -> tuple[str, dict[str, str]]:
    """A new token's id and its Authorization headers."""
    resp = await client.post("/v1/tokens", json={"role": role, "owner": owner}, headers=admin)
    body = await resp.json()
    return body["token"]["id"], {"Authorization": f"Bearer {body['secret']}"}


async def test_revoked_tokens_stop_working_at_once(
    client: Client, admin_headers: dict[str, str]
) -> None:
    token_id, headers = await new_token(client, admin_headers, "viewer", "dashboard")
    assert (await client.get("/v1/workspaces", headers=headers)).status == 200
    listing = await (await client.get("/v1/tokens", headers=admin_headers)).json()
    listed = {t["id"]: t for t in listing["tokens"]}
    assert listed[token_id]["last_used_at"] is not None
    assert all("secret" not in t and "secret_hash" not in t for t in listing["tokens"])
    revoked = await client.delete(f"/v1/tokens/{token_id}", headers=admin_headers)
    assert revoked.status == 200 and (await revoked.json())["revoked_at"]
    assert (await client.get("/v1/workspaces", headers=headers)).status == 401
    assert (await client.delete(f"/v1/tokens/{token_id}", headers=admin_headers)).status == 200
    assert (await client.delete("/v1/tokens/tok_nope", headers=admin_headers)).status == 404


async def test_audit_is_filterable_and_paged(client: Client, admin_headers: dict[str, str]) -> None:
    created = await (await client.post("/v1/workspaces", json=SMALL, headers=admin_headers)).json()
    ws_id = created["workspace"]["id"]
    await wait_operation(client, admin_headers, created["operation"]["id"])
    page = await (
        await client.get(f"/v1/audit?target={ws_id}&limit=2", headers=admin_headers)
    ).json()
    assert [e["action"] for e in page["events"]] == ["operation.pending", "workspace.requested"]
    rest = await (
        await client.get(
            f"/v1/audit?target={ws_id}&cursor={page['next_cursor']}", headers=admin_headers
        )
    ).json()
    assert [e["action"] for e in rest["events"]][-2:] == [
        "operation.succeeded",
        "workspace.running",
    ]
    by_action = await (
        await client.get("/v1/audit?action=token.created", headers=admin_headers)
    ).json()
    assert by_action["events"] and all(e["action"] == "token.created" for e in by_action["events"])
    bad = await client.get("/v1/audit?cursor=abc", headers=admin_headers)
    assert bad.status == 422


async def test_nodes_show_capacity_in_use(client: Client, admin_headers: dict[str, str]) -> None:
    created = await (
        await client.post("/v1/workspaces", json={**SMALL, "plan": "medium"}, headers=admin_headers)
    ).json()
    await wait_operation(client, admin_headers, created["operation"]["id"])
    [node] = (await (await client.get("/v1/nodes", headers=admin_headers)).json())["nodes"]
    assert node["name"] == "local" and node["libvirt_uri"] == "test:///default"
    assert node["used"] == {"vcpus": 2, "memory_mib": 4096, "disk_gib": 40}
    metrics = await (await client.get("/metrics")).text()
    assert 'provisioner_node_capacity_used{node="local",resource="vcpus"} 2.0' in metrics
    assert 'provisioner_workspaces{state="running"} 1.0' in metrics
    assert 'provisioner_operation_seconds_count{kind="create",outcome="succeeded"} 1.0' in metrics
    assert (
        'provisioner_http_requests_total{method="POST",route="/v1/workspaces",status="202"}'
        in metrics
    )


async def test_operation_log_plain_and_followed(
    client: Client, admin_headers: dict[str, str]
) -> None:
    created = await (await client.post("/v1/workspaces", json=SMALL, headers=admin_headers)).json()
    op_id = created["operation"]["id"]
    followed = await client.get(f"/v1/operations/{op_id}/log?follow=1", headers=admin_headers)
    assert followed.status == 200 and followed.content_type == "text/plain"
    streamed = (await followed.text()).splitlines()
    assert streamed[0].endswith("create requested by admin")
    assert streamed[-1].endswith("operation succeeded")
    assert any("define_domain succeeded: defined" in line for line in streamed)
    plain = await (await client.get(f"/v1/operations/{op_id}/log", headers=admin_headers)).text()
    assert plain.splitlines() == streamed


@pytest.fixture
async def limited_client(settings: Settings) -> AsyncIterator[tuple[Client, System]]:
    """A client of an app whose tokens may make 2 requests per second, bursts of 3."""
    limited = replace(
        settings, rate_limit=2.0, rate_burst=3, cors_origins=frozenset({"https://ui.example"})
    )
    async with main.built(limited) as system:
        await main.ensure_admin(system)
        async with TestClient(TestServer(system.api())) as test_client:
            yield test_client, system


async def test_rate_limit_per_token_answers_429_with_retry_after(
    limited_client: tuple[Client, System], admin_headers: dict[str, str]
) -> None:
    client, _system = limited_client
    statuses = [(await client.get("/v1/plans", headers=admin_headers)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = await client.get("/v1/plans", headers=admin_headers)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "rate_limited"
    # Another caller has a budget of its own; the probes have none at all.
    assert (await client.get("/healthz")).status == 200


async def test_cors_only_for_configured_origins(
    limited_client: tuple[Client, System], client: Client
) -> None:
    allowed, _system = limited_client
    preflight = await allowed.options(
        "/v1/workspaces",
        headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    other = await allowed.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    default = await client.get("/healthz", headers={"Origin": "https://ui.example"})
    assert "Access-Control-Allow-Origin" not in default.headers


async def test_request_ids_reach_the_log(
    client: Client, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for handler in [caplog.handler]:
        handler.addFilter(main._tag_request_id)
    headers = {**admin_headers, "X-Request-Id": "trace-me-42"}
    created: dict[str, Any] = await (
        await client.post("/v1/workspaces", json={**SMALL, "name": "BAD!"}, headers=headers)
    ).json()
    assert created["error"]["code"] == "invalid_input"
    await client.get("/v1/workspaces", headers=headers)
    ids = {
        getattr(record, "request_id", None)
        for record in caplog.records
        if record.name == "aiohttp.access"
    }
    assert "trace-me-42" in ids


async def test_nodes_added_through_the_api_take_work_and_survive_restarts(
    client: Client, admin_headers: dict[str, str], settings: Settings
) -> None:
    body = {
        "name": "spare",
        "libvirt_uri": "test:///default",
        "capacity": {"vcpus": 128, "memory_mib": 1 << 20, "disk_gib": 9000},
    }
    resp = await client.post("/v1/nodes", json=body, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    assert (await client.post("/v1/nodes", json=body, headers=admin_headers)).status == 409
    bad = {**body, "name": "Bad Name"}
    assert (await client.post("/v1/nodes", json=bad, headers=admin_headers)).status == 422
    odd = {**body, "name": "odd", "capacity": {"vcpus": "many"}}
    assert (await client.post("/v1/nodes", json=odd, headers=admin_headers)).status == 422
    # The roomier node wins placement.
    created = await (await client.post("/v1/workspaces", json=SMALL, headers=admin_headers)).json()
    assert created["workspace"]["node"] == "spare"
    assert (await wait_operation(client, admin_headers, created["operation"]["id"]))[
        "state"
    ] == "succeeded"
    async with main.built(settings) as again:
        assert [node.name for node in again.fleet.nodes()] == ["local", "spare"]
