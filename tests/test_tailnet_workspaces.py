"""Workspaces on a tailnet: the seed's key, the device found and tagged, delete, faults, orphans.

The fake Tailscale API speaks the real wire format; a "guest" task plays cloud-init: it reads the
auth key from the seed volume on the node (the ISO the guest would mount), then joins with it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from provisioner.app import cli as main
from provisioner.app.composition import System
from provisioner.settings import Settings, TailnetSettings
from tests.fakes.guest_join import seed_auth_key
from tests.fakes.tailnet_common import JoinRefused
from tests.fakes.tailscale_api import FakeTailscale

OWNER = "alice.smith@example.com"
OWNER_TAG = "tag:alice-smith"
BASE_TAG = "tag:provisioner-workspace"
Client = TestClient[object, object]
pytestmark = pytest.mark.timeout(60)


def tailnet_settings(fake: FakeTailscale, **changes: Any) -> TailnetSettings:
    base = TailnetSettings(
        kind="tailscale",
        api_url=fake.base_url,
        api_key=fake.add_api_key("admin@example.com", role="admin"),
        tags=(BASE_TAG,),
    )
    return replace(base, **changes)


@pytest.fixture
def settings(settings: Settings, tailnet: FakeTailscale) -> Settings:
    """The suite's settings on the fake tailnet: joins time out fast, orphans go at once."""
    ts = tailnet_settings(tailnet, join_timeout=timedelta(seconds=5))
    return replace(settings, tailnet=ts, orphan_grace=0.0)


async def play_guest(system: System, fake: FakeTailscale, name: str) -> str:
    """Wait for the workspace's seed on its node, read the key from it, join as `name`."""
    hypervisor = await system.fleet.hypervisor("local")
    for _ in range(200):
        found = [v for v in await hypervisor.volumes() if v.endswith("-seed.iso")]
        async with system.store.read() as tx:
            rows = await tx.list_workspaces(owner=None, state=None, after=None, limit=50, name=name)
        live = [w for w in rows if w.seed_volume in found and w.tailscale.key_id]
        if live:
            iso = await hypervisor.download_volume(live[-1].seed_volume, 1 << 20)
            secret = seed_auth_key(iso)
            assert secret is not None
            fake.register_device(secret, name)
            return secret
        await asyncio.sleep(0.05)
    raise AssertionError(f"no seed for {name} appeared")


async def create(client: Client, headers: dict[str, str], name: str) -> dict[str, Any]:
    answer = await client.post(
        "/v1/workspaces",
        json={"plan": "small", "image": "debian-12", "name": name, "owner": OWNER},
        headers=headers,
    )
    assert answer.status == 202, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


async def wait_done(
    client: Client, headers: dict[str, str], op_id: str, *, seconds: float = 20.0
) -> dict[str, Any]:
    for _ in range(int(seconds / 0.05)):
        op: dict[str, Any] = await (
            await client.get(f"/v1/operations/{op_id}", headers=headers)
        ).json()
        if op["state"] in ("succeeded", "failed", "cancelled"):
            return op
        await asyncio.sleep(0.05)
    raise AssertionError(f"operation {op_id} did not end")


async def test_create_joins_with_the_seed_key_and_delete_removes_the_device(
    system: System,
    client: Client,
    tailnet: FakeTailscale,
    admin_headers: dict[str, str],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    created = await create(client, admin_headers, "demo")
    secret = await play_guest(system, tailnet, "demo")
    op = await wait_done(client, admin_headers, created["operation"]["id"])
    assert op["state"] == "succeeded", op
    steps = {s["name"]: s["detail"] for s in op["steps"]}
    assert steps["join_tailnet"].startswith("on the tailnet as demo.tail1234.ts.net (100.")

    ws = await (
        await client.get(f"/v1/workspaces/{created['workspace']['id']}", headers=admin_headers)
    ).json()
    assert ws["tailscale"]["hostname"] == "demo.tail1234.ts.net"
    assert ws["tailscale"]["ip"].startswith("100.")
    assert ws["tailscale"]["tags"] == [OWNER_TAG, BASE_TAG]
    (device,) = tailnet.devices.values()
    assert sorted(device.tags) == sorted([OWNER_TAG, BASE_TAG]) and device.key_expiry_disabled
    # Single-use, and revoked once the device joined: the seed's copy is worth nothing now.
    with pytest.raises(JoinRefused):
        tailnet.register_device(secret, "thief")
    (key,) = tailnet.keys.values()
    assert key.revoked is not None and key.tags == sorted([OWNER_TAG, BASE_TAG])
    assert key.preauthorized and not key.reusable and not key.ephemeral

    # The secret is nowhere but in the seed: not in the API's answers, the logs, the database.
    op_log = await (
        await client.get(f"/v1/operations/{op['id']}/log", headers=admin_headers)
    ).text()
    for text in (json.dumps(ws), json.dumps(op), op_log, caplog.text):
        assert secret not in text
    assert_not_stored(settings, secret)

    deleted = await (
        await client.delete(f"/v1/workspaces/{ws['id']}", headers=admin_headers)
    ).json()
    done = await wait_done(client, admin_headers, deleted["id"])
    assert done["state"] == "succeeded", done
    assert tailnet.devices == {}


def assert_not_stored(settings: Settings, secret: str) -> None:
    """The secret is in no file of the data dir and no row of a SQLite database."""
    for path in settings.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    if settings.database_url.startswith("sqlite"):
        db = Path(settings.database_url.split("///", 1)[1])
        with sqlite3.connect(db) as conn:
            dump = "\n".join(conn.iterdump())
        assert secret not in dump


async def test_a_reused_name_never_matches_the_old_device(
    system: System, client: Client, tailnet: FakeTailscale, admin_headers: dict[str, str]
) -> None:
    stale = tailnet.add_device("demo", tags=[OWNER_TAG])  # an earlier "demo" still listed
    tailnet.advance(2)  # the new key is minted later than the old device joined
    created = await create(client, admin_headers, "demo")
    await play_guest(system, tailnet, "demo")
    op = await wait_done(client, admin_headers, created["operation"]["id"])
    assert op["state"] == "succeeded", op
    ws = await (
        await client.get(f"/v1/workspaces/{created['workspace']['id']}", headers=admin_headers)
    ).json()
    assert ws["tailscale"]["hostname"] == "demo-1.tail1234.ts.net"
    assert stale.node_id in tailnet.devices  # not ours to delete


async def test_a_device_that_never_appears_fails_the_create_and_revokes_the_key(
    client: Client, tailnet: FakeTailscale, admin_headers: dict[str, str]
) -> None:
    created = await create(client, admin_headers, "ghost")
    op = await wait_done(client, admin_headers, created["operation"]["id"])
    assert op["state"] == "failed"
    assert "did not appear on the tailnet within 5 s" in op["error"]
    assert [s["name"] for s in op["steps"]][-1] == "undo_leave_tailnet"
    (key,) = tailnet.keys.values()
    assert key.revoked is not None


async def test_join_optional_leaves_the_workspace_reachable_through_its_node(
    settings: Settings, tailnet: FakeTailscale, admin_headers: dict[str, str]
) -> None:
    ts = tailnet_settings(tailnet, join="optional", join_timeout=timedelta(seconds=1))
    async with main.built(replace(settings, tailnet=ts)) as system:
        await main.ensure_admin(system)
        system.runner.start()
        try:
            async with TestClient(TestServer(system.api())) as client:
                created = await create(client, admin_headers, "lonely")
                op = await wait_done(client, admin_headers, created["operation"]["id"])
                assert op["state"] == "succeeded", op
                join = next(s for s in op["steps"] if s["name"] == "join_tailnet")
                assert "reachable through node local only" in join["detail"]
        finally:
            await system.runner.stop(drain_seconds=5)
    assert all(k.revoked is not None for k in tailnet.keys.values())


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "refused"), (403, "refused"), (500, "")],
)
async def test_a_tailnet_failing_at_key_minting_fails_the_create_cleanly(
    system: System,
    client: Client,
    tailnet: FakeTailscale,
    admin_headers: dict[str, str],
    status: int,
    expected: str,
) -> None:
    tailnet.fail(status, times=None, path="/api/v2/tailnet/-/keys", method="POST")
    created = await create(client, admin_headers, "denied")
    op = await wait_done(client, admin_headers, created["operation"]["id"])
    assert op["state"] == "failed", op
    assert str(status) in op["error"] and expected in op["error"]
    hypervisor = await system.fleet.hypervisor("local")
    assert not [v for v in await hypervisor.volumes() if v.startswith("ws-denied")]


async def test_an_owner_whose_email_cannot_make_a_tag_is_refused_with_the_reason(
    client: Client, admin_headers: dict[str, str]
) -> None:
    answer = await client.post(
        "/v1/workspaces",
        json={"plan": "small", "image": "debian-12", "name": "odd", "owner": "1st@example.com"},
        headers=admin_headers,
    )
    body = await answer.json()
    assert answer.status == 422, body
    assert body["error"]["code"] == "invalid_owner_tag"


async def test_reconcile_reports_then_removes_only_our_orphaned_devices(
    system: System, tailnet: FakeTailscale
) -> None:
    orphan = tailnet.add_device("gone", tags=[OWNER_TAG, BASE_TAG])
    foreign = tailnet.add_device("laptop", tags=["tag:bob"])
    untagged = tailnet.add_device("phone", user="alice.smith@example.com")
    findings = await system.reconciler.run()
    assert findings.devices.orphans == [orphan.node_id]
    assert findings.devices.removed == [orphan.node_id]  # grace 0 in these settings
    assert set(tailnet.devices) == {foreign.node_id, untagged.node_id}


async def test_a_new_owners_first_create_pushes_the_policy_that_defines_their_tag(
    system: System, client: Client, tailnet: FakeTailscale, admin_headers: dict[str, str]
) -> None:
    answer = await client.post(
        "/v1/workspaces",
        json={"plan": "small", "image": "debian-12", "name": "fresh", "owner": "carol@example.com"},
        headers=admin_headers,
    )
    assert answer.status == 202, await answer.text()
    created = await answer.json()
    await play_guest(system, tailnet, "fresh")
    op = await wait_done(client, admin_headers, created["operation"]["id"])
    assert op["state"] == "succeeded", op
    assert "tag:carol" in tailnet.policy().doc["tagOwners"]
    assert tailnet.calls("POST", "/api/v2/tailnet/-/acl")  # pushed, with If-Match
