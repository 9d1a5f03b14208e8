"""Gated plans wait for exactly one operator decision; never the requester's own."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient

from provisioner.app import cli as main
from provisioner.app.cli import System
from provisioner.models import Actor, Quota, Role
from provisioner.requests import CreateRequest
from provisioner.settings import Settings
from tests.test_api_workspaces import wait_operation

Client = TestClient[object, object]
LARGE = {"plan": "large", "image": "debian-12", "name": "big"}


async def make_token(
    client: Client, admin: dict[str, str], role: str, owner: str
) -> dict[str, str]:
    """Headers of a new token."""
    resp = await client.post("/v1/tokens", json={"role": role, "owner": owner}, headers=admin)
    return {"Authorization": f"Bearer {(await resp.json())['secret']}"}


async def request_large(
    client: Client, admin: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A developer asks for a large workspace; the pending approval and an operator's headers."""
    dev = await make_token(client, admin, "developer", "dana")
    created = await (await client.post("/v1/workspaces", json=LARGE, headers=dev)).json()
    assert created["workspace"]["state"] == "awaiting_approval"
    assert created["operation"]["state"] == "awaiting_approval"
    ops = await make_token(client, admin, "operator", "olga")
    listing = await (await client.get("/v1/approvals", headers=ops)).json()
    [approval] = listing["approvals"]
    assert (
        approval["requested_by"] == "dana"
        and approval["operation_id"] == created["operation"]["id"]
    )
    return approval, ops


async def test_approve_runs_the_create(client: Client, admin_headers: dict[str, str]) -> None:
    approval, ops = await request_large(client, admin_headers)
    resp = await client.post(f"/v1/approvals/{approval['id']}/approve", headers=ops)
    assert resp.status == 200
    decided = await resp.json()
    assert (decided["state"], decided["decided_by"]) == ("approved", "olga")
    done = await wait_operation(client, admin_headers, approval["operation_id"])
    assert done["state"] == "succeeded"
    again = await client.post(f"/v1/approvals/{approval['id']}/deny", headers=admin_headers)
    assert again.status == 409
    assert "already approved by olga" in (await again.json())["error"]["message"]


async def test_deny_with_reason(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    approval, ops = await request_large(client, admin_headers)
    resp = await client.post(
        f"/v1/approvals/{approval['id']}/deny", json={"reason": "use medium"}, headers=ops
    )
    assert (await resp.json())["state"] == "denied"
    op = await (
        await client.get(f"/v1/operations/{approval['operation_id']}", headers=admin_headers)
    ).json()
    assert op["state"] == "cancelled" and op["error"] == "denied by olga: use medium"
    ws = await (
        await client.get(f"/v1/workspaces/{op['workspace_id']}", headers=admin_headers)
    ).json()
    assert ws["state"] == "denied"


async def test_only_operators_and_never_the_requester(
    client: Client, admin_headers: dict[str, str]
) -> None:
    approval, _ops = await request_large(client, admin_headers)
    dev = await make_token(client, admin_headers, "developer", "eve")
    assert (await client.post(f"/v1/approvals/{approval['id']}/approve", headers=dev)).status == 403
    self_op = await make_token(client, admin_headers, "operator", "dana")
    resp = await client.post(f"/v1/approvals/{approval['id']}/approve", headers=self_op)
    assert resp.status == 403


async def test_two_operators_at_once_make_one_decision(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    approval, ops = await request_large(client, admin_headers)
    other = await make_token(client, admin_headers, "operator", "omar")
    results = await asyncio.gather(
        client.post(f"/v1/approvals/{approval['id']}/approve", headers=ops),
        client.post(f"/v1/approvals/{approval['id']}/deny", headers=other),
    )
    assert sorted(r.status for r in results) == [200, 409]
    async with system.store.transaction() as tx:
        events = await tx.list_audit(target=None, actor=None, after=None, limit=1000)
    assert len([e for e in events if e.action in ("approval.approved", "approval.denied")]) == 1


async def test_deleting_a_waiting_request_withdraws_its_approval(
    client: Client, admin_headers: dict[str, str]
) -> None:
    approval, ops = await request_large(client, admin_headers)
    op = await (
        await client.get(f"/v1/operations/{approval['operation_id']}", headers=admin_headers)
    ).json()
    assert (
        await client.delete(f"/v1/workspaces/{op['workspace_id']}", headers=admin_headers)
    ).status == 202
    listing = await (await client.get("/v1/approvals", headers=ops)).json()
    assert listing["approvals"] == []
    resp = await client.post(f"/v1/approvals/{approval['id']}/approve", headers=ops)
    assert resp.status == 409


async def test_over_quota_requests_wait_for_approval(settings: Settings) -> None:
    limited = replace(settings, quota=Quota(max_workspaces=2, max_vcpus=3))
    async with main.built(limited) as system:

        async def ask(owner: str, plan: str) -> tuple[str, str | None]:
            who = Actor(owner, Role.DEVELOPER, "test", owner_scope=owner)
            ws, op = await system.core.create_workspace(who, CreateRequest(plan, "debian-12"))
            return ws.state.value, op.params.get("approval_reason")

        assert await ask("dana", "small") == ("provisioning", None)
        assert await ask("dana", "small") == ("provisioning", None)
        assert await ask("dana", "small") == (
            "awaiting_approval",
            "over quota: 3 workspaces (quota 2)",
        )
        assert await ask("carl", "medium") == ("provisioning", None)
        assert await ask("carl", "medium") == ("awaiting_approval", "over quota: 4 vCPUs (quota 3)")
        assert await ask("bob", "large") == ("awaiting_approval", "plan large requires approval")
        assert len((await system.approvals.list()).items) == 3
