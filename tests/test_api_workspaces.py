"""The workspace slice end to end through the real HTTP app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import libvirt
import pytest
from aiohttp.test_utils import TestClient

from provisioner.app.cli import System
from provisioner.errors import InvalidInput
from provisioner.models import Actor, Role
from provisioner.requests import CreateRequest

Client = TestClient[object, object]
ADMIN = Actor("tester", Role.ADMIN, "test")


async def wait_operation(client: Client, headers: dict[str, str], op_id: str) -> dict[str, Any]:
    """Poll an operation until it ends."""
    for _ in range(200):
        resp = await client.get(f"/v1/operations/{op_id}", headers=headers)
        op: dict[str, Any] = await resp.json()
        if op["state"] in ("succeeded", "failed", "cancelled"):
            return op
        await asyncio.sleep(0.05)
    raise AssertionError(f"operation {op_id} did not end: {op}")


def driver_domain(name: str) -> Any:
    """The domain `name` in the in-process test driver, or None."""
    conn = libvirt.open("test:///default")
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


async def test_create_defines_and_starts_a_domain_then_delete_removes_it(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    resp = await client.post(
        "/v1/workspaces",
        json={"plan": "medium", "image": "debian-12", "name": "alpha"},
        headers=admin_headers,
    )
    assert resp.status == 202
    body = await resp.json()
    ws, op = body["workspace"], body["operation"]
    assert ws["state"] == "provisioning" and op["kind"] == "create"
    done = await wait_operation(client, admin_headers, op["id"])
    assert done["state"] == "succeeded", done
    assert [s["name"] for s in done["steps"]] == [
        "prepare_disk",
        "write_seed",
        "define_domain",
        "start_domain",
        "wait_for_address",
        "wait_for_ssh",
        "join_tailnet",
        "onboard",
        "run_playbooks",
    ]
    domain = driver_domain(ws["domain"])
    assert domain is not None and domain.isActive()
    assert domain.maxMemory() == 4096 * 1024 and domain.info()[3] == 2
    xml = domain.XMLDesc()
    assert ws["id"] in xml
    # The disk is a 40 GiB (medium) qcow2 overlay on the image; the seed rides along.
    pool = libvirt.open("test:///default").storagePoolLookupByName("default-pool")
    disk = pool.storageVolLookupByName(f"{ws['domain']}.qcow2")
    assert disk.info()[1] == 40 << 30
    assert "<backingStore>" in disk.XMLDesc() and "debian-12.qcow2" in disk.XMLDesc()
    assert disk.path() in xml and f"{ws['domain']}-seed.iso" in xml
    got = await (await client.get(f"/v1/workspaces/{ws['id']}", headers=admin_headers)).json()
    assert got["state"] == "running"
    assert got["address"].startswith("192.168.122.")  # the test driver's canned lease

    resp = await client.delete(f"/v1/workspaces/{ws['id']}", headers=admin_headers)
    assert resp.status == 202
    deleted = await wait_operation(client, admin_headers, (await resp.json())["id"])
    assert deleted["state"] == "succeeded"
    assert driver_domain(ws["domain"]) is None
    assert not {f"{ws['domain']}.qcow2", f"{ws['domain']}-seed.iso"} & set(pool.listVolumes())
    got = await (await client.get(f"/v1/workspaces/{ws['id']}", headers=admin_headers)).json()
    assert got["state"] == "deleted"


async def test_a_create_without_plan_or_image_gets_the_defaults(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    resp = await client.post("/v1/workspaces", json={"name": "plain"}, headers=admin_headers)
    assert resp.status == 202, await resp.text()
    ws = (await resp.json())["workspace"]
    assert (ws["plan"], ws["image"]) == (system.core.defaults.plan, system.core.defaults.image)
    assert (ws["plan"], ws["image"]) == ("small", "debian-12")
    nulls = {"plan": None, "image": None, "name": "nulls"}
    resp = await client.post("/v1/workspaces", json=nulls, headers=admin_headers)
    assert resp.status == 202, await resp.text()


async def test_core_errors_name_the_field_they_are_about(system: System) -> None:
    cases = [
        (CreateRequest(plan="giant"), "plan"),
        (CreateRequest(image="nope"), "image"),
        (CreateRequest(name="Not A Name"), "name"),
        (CreateRequest(ttl_hours=100000), "ttl_hours"),
        (CreateRequest(owner="bad owner!"), "owner"),
    ]
    for request, field in cases:
        with pytest.raises(InvalidInput) as caught:
            await system.core.create_workspace(ADMIN, request)
        assert caught.value.field == field, (request, caught.value.message)
