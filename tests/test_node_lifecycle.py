"""Node lifecycle: reconciliation, rebuild, placement by image, image import, cloud-init seeds.

Everything runs on libvirt's in-process test driver, whose state every connection in the
process shares: other tests leave domains and volumes behind, so findings are checked by
membership, never by equality.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import libvirt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from provisioner.adapters.domain_xml import metadata_xml
from provisioner.adapters.libvirt import LibvirtHypervisor
from provisioner.app import composition
from provisioner.app.cli import System
from provisioner.catalog import DEFAULT_IMAGES, DEFAULT_NODES
from provisioner.errors import CapacityExhausted, InvalidInput, NotFound
from provisioner.fleet import Fleet, NodeAccess
from provisioner.images import ImageFiles, Images
from provisioner.keys import SshKeys
from provisioner.models import (
    SYSTEM_ACTOR,
    Actor,
    AuditEvent,
    Capacity,
    Image,
    Node,
    NodeTrust,
    OperationKind,
    OperationState,
    Role,
    Workspace,
    WorkspaceState,
)
from provisioner.ports import DomainSpec
from provisioner.reconcile import Reconciler
from provisioner.requests import CreateRequest
from provisioner.settings import Settings
from tests.test_api_workspaces import driver_domain, wait_operation

Client = TestClient[object, object]
ADMIN = Actor("tester", Role.ADMIN, "test")
POOL = "default-pool"
REBUILD_STEPS = [
    "destroy_domain",
    "leave_tailnet",
    "delete_disk",
    "delete_seed",
    "prepare_disk",
    "write_seed",
    "start_domain",
    "wait_for_address",
    "wait_for_ssh",
    "join_tailnet",
    "onboard",
]


# --- helpers -------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.at += timedelta(seconds=seconds)


def driver() -> libvirt.virConnect:
    """A connection to the process's shared test driver."""
    return libvirt.open("test:///default")


def volumes(pool: str = POOL) -> set[str]:
    """The volume names in a test-driver pool."""
    return set(driver().storagePoolLookupByName(pool).listVolumes())


def make_volume(name: str, pool: str = POOL) -> None:
    """Create an (empty) volume in a test-driver pool."""
    driver().storagePoolLookupByName(pool).createXML(
        f"<volume><name>{name}</name><capacity unit='bytes'>1</capacity>"
        "<target><format type='raw'/></target></volume>",
        0,
    )


def define_domain(name: str, workspace_id: str | None, *, start: bool = False) -> Any:
    """A test-driver domain, carrying our metadata when `workspace_id` is given."""
    metadata = ""
    if workspace_id is not None:
        spec = DomainSpec(
            name=name,
            workspace_id=workspace_id,
            owner="nobody",
            vcpus=1,
            memory_mib=64,
            image=DEFAULT_IMAGES[0],
            disk_volume=f"{name}.qcow2",
            seed_volume=f"{name}-seed.iso",
            network="default",
        )
        metadata = f"<metadata>{metadata_xml(spec)}</metadata>"
    domain = driver().defineXML(
        f"<domain type='test'><name>{name}</name><memory>65536</memory>{metadata}"
        "<os><type>hvm</type></os></domain>"
    )
    if start:
        domain.create()
    return domain


def vanish(domain_name: str) -> None:
    """Power off and undefine a domain behind the system's back."""
    domain = driver().lookupByName(domain_name)
    if domain.isActive():
        domain.destroy()
    domain.undefine()


def unique(stem: str) -> str:
    """A domain-style name no other test (or backend run) uses."""
    return f"ws-{stem}-{secrets.token_hex(3)}"


async def wait_op(system: System, op_id: str, timeout: float = 10.0) -> OperationState:
    """Wait until the operation ends; its final state."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        op = await system.core.get_operation(ADMIN, op_id)
        if op.state.terminal:
            return op.state
        await asyncio.sleep(0.02)
    raise AssertionError(f"operation {op_id} still {op.state}")


async def running(system: System, name: str) -> Workspace:
    """A workspace created through the core and waited for until it runs."""
    ws, op = await system.core.create_workspace(ADMIN, CreateRequest("small", "debian-12", name))
    assert await wait_op(system, op.id) == OperationState.SUCCEEDED
    return await system.core.get_workspace(ADMIN, ws.id)


async def mark_deleted(system: System, workspace_id: str) -> None:
    """Forget a workspace in the store only, leaving its domain and volumes on the node."""
    async with system.store.transaction() as tx:
        await tx.update_workspace(workspace_id, state=WorkspaceState.DELETED)


async def audit(system: System, action: str) -> list[AuditEvent]:
    """Every audit event with this action."""
    async with system.store.read() as tx:
        return await tx.list_audit(target=None, actor=None, after=None, limit=1000, action=action)


def reasons(events: list[AuditEvent]) -> set[tuple[str, str, str | None]]:
    """(actor, target, reason) of each event."""
    return {(e.actor, e.target, e.reason) for e in events}


def fleet_of(*nodes: Node, call_timeout: float = 5.0) -> Fleet:
    """A fleet of the given nodes, each on real libvirt with a short call timeout."""
    return Fleet(nodes, lambda node: NodeAccess(LibvirtHypervisor(node, call_timeout=call_timeout)))


@pytest.fixture
def pools() -> Iterator[tuple[str, str]]:
    """Two fresh, empty test-driver pools (the process keeps one connection open meanwhile)."""
    conn = driver()
    names = (f"small-{secrets.token_hex(3)}", f"big-{secrets.token_hex(3)}")
    created = [
        conn.storagePoolCreateXML(
            f"<pool type='dir'><name>{n}</name><target><path>/{n}</path></target></pool>", 0
        )
        for n in names
    ]
    try:
        yield names
    finally:
        for pool in created:
            pool.destroy()


# --- reconciliation ------------------------------------------------------------------------


async def test_an_orphan_domain_is_reported_at_once_and_removed_after_the_grace(
    system: System,
) -> None:
    ws = await running(system, "orphan")
    await mark_deleted(system, ws.id)
    clock = Clock()
    reconciler = Reconciler(system.store, system.fleet, clock, grace=600)

    first = await reconciler.run()
    assert ws.domain_name in first.orphans and ws.domain_name not in first.reaped
    assert driver_domain(ws.domain_name) is not None
    assert {ws.disk_volume, ws.seed_volume} <= volumes()
    found = ("system", "local", f"domain {ws.domain_name}")
    assert found in reasons(await audit(system, "node.orphan_found"))

    clock.advance(599)
    second = await reconciler.run()
    assert ws.domain_name not in second.orphans, "reported once, not on every pass"
    assert ws.domain_name not in second.reaped and driver_domain(ws.domain_name) is not None

    clock.advance(2)
    third = await reconciler.run()
    assert ws.domain_name in third.reaped
    assert driver_domain(ws.domain_name) is None
    assert not {ws.disk_volume, ws.seed_volume} & volumes()
    removed = ("system", "local", f"domain {ws.domain_name}")
    assert removed in reasons(await audit(system, "node.orphan_removed"))
    assert [e.reason for e in await audit(system, "node.orphan_found")].count(found[2]) == 1


async def test_a_running_domain_of_an_unknown_workspace_is_powered_off_and_reaped(
    system: System,
) -> None:
    name = unique("stray")
    define_domain(name, "ws_0000000000000000000000", start=True)
    make_volume(f"{name}.qcow2")
    make_volume(f"{name}-seed.iso")
    findings = await Reconciler(system.store, system.fleet, Clock(), grace=0).run()
    assert name in findings.orphans and name in findings.reaped
    assert driver_domain(name) is None
    assert not {f"{name}.qcow2", f"{name}-seed.iso"} & volumes()


async def test_orphan_volumes_without_a_domain_are_removed_after_the_grace(
    system: System,
) -> None:
    name = unique("ghost")
    make_volume(f"{name}.qcow2")
    make_volume(f"{name}-seed.iso")
    clock = Clock()
    reconciler = Reconciler(system.store, system.fleet, clock, grace=60)

    first = await reconciler.run()
    assert name in first.orphans and name not in first.reaped
    assert {f"{name}.qcow2", f"{name}-seed.iso"} <= volumes()
    assert ("system", "local", f"volumes {name}") in reasons(
        await audit(system, "node.orphan_found")
    )

    clock.advance(61)
    second = await reconciler.run()
    assert name in second.reaped
    assert not {f"{name}.qcow2", f"{name}-seed.iso"} & volumes()
    assert ("system", "local", f"volumes {name}") in reasons(
        await audit(system, "node.orphan_removed")
    )


async def test_a_domain_without_our_metadata_is_never_touched(system: System) -> None:
    names = [unique("alien"), f"foreign-{secrets.token_hex(3)}"]
    for name in names:
        define_domain(name, None, start=True)
    reconciler = Reconciler(system.store, system.fleet, Clock(), grace=0)
    try:
        for _ in range(2):
            findings = await reconciler.run()
            assert not set(names) & {*findings.orphans, *findings.reaped}
        for name in names:
            assert driver_domain(name).isActive()
    finally:
        for name in names:
            vanish(name)


async def test_the_disks_of_a_foreign_domain_named_like_ours_are_never_deleted(
    system: System,
) -> None:
    name = unique("alien")
    define_domain(name, None, start=True)
    make_volume(f"{name}.qcow2")
    try:
        findings = await Reconciler(system.store, system.fleet, Clock(), grace=0).run()
        assert name not in findings.reaped
        assert f"{name}.qcow2" in volumes()
    finally:
        vanish(name)
        if f"{name}.qcow2" in volumes():
            driver().storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}.qcow2").delete()


async def test_a_domain_of_a_workspace_being_created_is_not_an_orphan(system: System) -> None:
    await system.runner.stop(5)  # the create stays in flight: its row exists, its op pending
    ws, _op = await system.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    define_domain(ws.domain_name, ws.id)
    findings = await Reconciler(system.store, system.fleet, Clock(), grace=0).run()
    assert ws.domain_name not in {*findings.orphans, *findings.reaped}
    assert driver_domain(ws.domain_name) is not None
    vanish(ws.domain_name)


async def test_a_running_workspace_whose_domain_vanished_is_marked_failed(
    system: System,
) -> None:
    ws = await running(system, "lost")
    vanish(ws.domain_name)
    findings = await system.reconciler.run()
    assert ws.name in findings.lost
    failed = await system.core.get_workspace(ADMIN, ws.id)
    assert failed.state == WorkspaceState.FAILED
    assert failed.error is not None and ws.domain_name in failed.error
    [event] = [e for e in await audit(system, "workspace.lost") if e.target == ws.id]
    assert event.actor == SYSTEM_ACTOR.name and ws.domain_name in (event.reason or "")
    again = await system.reconciler.run()
    assert ws.name not in again.lost, "a failed workspace is not lost twice"


async def test_a_workspace_with_an_active_operation_is_not_marked_lost(system: System) -> None:
    ws = await running(system, "busy")
    await system.runner.stop(5)
    stop = await system.core.power(ADMIN, ws.id, OperationKind.STOP)  # stays pending
    vanish(ws.domain_name)
    findings = await system.reconciler.run()
    assert ws.name not in findings.lost
    assert (await system.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.RUNNING
    assert not [e for e in await audit(system, "workspace.lost") if e.target == ws.id]
    assert (await system.core.get_operation(ADMIN, stop.id)).state == OperationState.PENDING


async def test_a_node_that_cannot_be_listed_is_skipped_and_the_others_still_reconciled(
    system: System, silent_socket: Path
) -> None:
    ws = await running(system, "kept")
    stray = unique("stray")
    define_domain(stray, "ws_0000000000000000000000")
    hung = Node("hung", f"qemu+unix:///system?socket={silent_socket}")
    fleet = fleet_of(DEFAULT_NODES[0], hung, call_timeout=0.5)
    try:
        started = time.monotonic()
        findings = await Reconciler(system.store, fleet, Clock(), grace=0).run()
        assert time.monotonic() - started < 3.0
    finally:
        await fleet.close()
    assert findings.skipped_nodes == ["hung"]
    assert stray in findings.reaped and driver_domain(stray) is None
    assert ws.name not in findings.lost and ws.domain_name not in findings.reaped
    assert driver_domain(ws.domain_name).isActive()
    assert {ws.disk_volume, ws.seed_volume} <= volumes()
    assert (await system.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.RUNNING


async def test_a_pass_right_after_a_survey_gave_up_on_a_hung_node_skips_it_at_once(
    system: System, silent_socket: Path
) -> None:
    hung = Node("hung", f"qemu+unix:///system?socket={silent_socket}")
    fleet = fleet_of(DEFAULT_NODES[0], hung, call_timeout=2.0)
    try:
        await fleet.survey(timeout=0.2)  # as upkeep does before reconciling
        started = time.monotonic()
        findings = await Reconciler(system.store, fleet, Clock(), grace=600).run()
        elapsed = time.monotonic() - started
    finally:
        await fleet.close()
    assert findings.skipped_nodes == ["hung"]
    assert elapsed < 1.0, f"the pass waited {elapsed:.1f} s on a node already known to hang"


# --- rebuild -------------------------------------------------------------------------------


async def test_rebuild_gives_a_fresh_disk_seed_and_guest_host_key(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    ws = await running(system, "rebuilt")
    assert ws.guest_host_key is not None
    disk_before = driver().storagePoolLookupByName(POOL).storageVolLookupByName(ws.disk_volume)
    resp = await client.post(f"/v1/workspaces/{ws.id}/rebuild", headers=admin_headers)
    assert resp.status == 202
    op = await resp.json()
    assert op["kind"] == "rebuild" and op["workspace_id"] == ws.id
    done = await wait_operation(client, admin_headers, op["id"])
    assert done["state"] == "succeeded", done
    assert [(s["name"], s["state"]) for s in done["steps"]] == [
        (name, "succeeded") for name in REBUILD_STEPS
    ]
    details = {s["name"]: s["detail"] for s in done["steps"]}
    assert details["delete_disk"] == f"deleted {ws.disk_volume}"
    assert details["prepare_disk"] == "10 GiB copy-on-write disk over debian-12.qcow2"
    after = await system.core.get_workspace(ADMIN, ws.id)
    assert after.state == WorkspaceState.RUNNING and after.domain_name == ws.domain_name
    assert after.guest_host_key is not None and after.guest_host_key.startswith("ssh-ed25519 ")
    assert after.guest_host_key != ws.guest_host_key
    assert {ws.disk_volume, ws.seed_volume} <= volumes()
    disk_after = driver().storagePoolLookupByName(POOL).storageVolLookupByName(ws.disk_volume)
    assert disk_after.key() == disk_before.key()  # same path, fresh volume
    assert driver_domain(ws.domain_name).isActive()


async def test_rebuild_of_a_stopped_workspace_brings_it_back_running(system: System) -> None:
    ws = await running(system, "cold")
    stop = await system.core.power(ADMIN, ws.id, OperationKind.STOP)
    assert await wait_op(system, stop.id) == OperationState.SUCCEEDED
    rebuild = await system.core.power(ADMIN, ws.id, OperationKind.REBUILD)
    assert await wait_op(system, rebuild.id) == OperationState.SUCCEEDED
    done = await system.core.get_operation(ADMIN, rebuild.id)
    assert done.steps[0].detail == "already off"
    assert (await system.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.RUNNING
    assert driver_domain(ws.domain_name).isActive()


async def test_rebuild_of_a_deleted_workspace_is_refused(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    ws = await running(system, "gone")
    delete = await system.core.delete_workspace(ADMIN, ws.id)
    assert await wait_op(system, delete.id) == OperationState.SUCCEEDED
    resp = await client.post(f"/v1/workspaces/{ws.id}/rebuild", headers=admin_headers)
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "wrong_state" and "deleted" in error["message"]


# --- placement and images ------------------------------------------------------------------


IMAGE = Image("place-img", "place-img.qcow2")
NEED = Capacity(1, 1024, 10)


async def test_placement_picks_the_roomiest_node_that_holds_the_image(
    pools: tuple[str, str],
) -> None:
    small_pool, big_pool = pools
    small = Node("small", "test:///default", pool=small_pool, capacity=Capacity(4, 8192, 100))
    big = Node("big", "test:///default", pool=big_pool, capacity=Capacity(64, 262144, 4096))
    fleet = fleet_of(small, big)
    try:
        assert fleet.place(NEED, {}, IMAGE) == big, "unknown inventories may hold the image"
        make_volume(IMAGE.base_volume, small_pool)
        await fleet.survey(timeout=5.0)
        assert fleet.place(NEED, {}, IMAGE) == small, "big is roomier but lacks the image"
        make_volume(IMAGE.base_volume, big_pool)
        await fleet.survey(timeout=5.0)
        assert fleet.place(NEED, {}, IMAGE) == big
        assert fleet.place(NEED, {"big": Capacity(64, 0, 0)}, IMAGE) == small, "big is full"
    finally:
        await fleet.close()


async def test_a_node_with_an_unapproved_host_key_is_never_chosen(
    pools: tuple[str, str],
) -> None:
    small_pool, big_pool = pools
    make_volume(IMAGE.base_volume, small_pool)
    make_volume(IMAGE.base_volume, big_pool)
    small = Node("small", "test:///default", pool=small_pool, capacity=Capacity(2, 2048, 20))
    pending = Node(
        "pending",
        "test:///default",
        pool=big_pool,
        capacity=Capacity(512, 1 << 22, 1 << 16),
        trust=NodeTrust.PENDING,
    )
    fleet = fleet_of(pending, small)
    try:
        await fleet.survey(timeout=5.0)
        assert fleet.place(NEED, {}, IMAGE) == small
        with pytest.raises(CapacityExhausted, match="no node has room"):
            fleet.place(Capacity(8, 1024, 10), {}, IMAGE)
        only_pending = fleet_of(pending)
        assert not only_pending.holds_image(IMAGE)
        with pytest.raises(CapacityExhausted) as refused:
            only_pending.place(NEED, {}, IMAGE)
        assert refused.value.code == "image_unavailable"
    finally:
        await fleet.close()


async def test_no_trusted_node_holding_the_image_is_image_unavailable(
    pools: tuple[str, str],
) -> None:
    small_pool, _big = pools
    fleet = fleet_of(Node("small", "test:///default", pool=small_pool))
    try:
        await fleet.survey(timeout=5.0)
        assert not fleet.holds_image(IMAGE)
        with pytest.raises(CapacityExhausted) as refused:
            fleet.place(NEED, {}, IMAGE)
    finally:
        await fleet.close()
    assert refused.value.code == "image_unavailable"
    assert "provisioner image import place-img FILE" in refused.value.message


async def test_create_places_on_an_added_node_only_once_it_holds_the_image(
    client: Client, admin_headers: dict[str, str], system: System, pools: tuple[str, str]
) -> None:
    _small, big_pool = pools
    resp = await client.post(
        "/v1/nodes",
        json={
            "name": "big",
            "libvirt_uri": "test:///default",
            "pool": big_pool,
            "capacity": {"vcpus": 512, "memory_mib": 1 << 22, "disk_gib": 1 << 16},
        },
        headers=admin_headers,
    )
    assert resp.status == 201, await resp.text()
    await system.fleet.survey(timeout=5.0)

    async def create(name: str) -> dict[str, Any]:
        resp = await client.post(
            "/v1/workspaces",
            json={"plan": "small", "image": "debian-12", "name": name},
            headers=admin_headers,
        )
        assert resp.status == 202, await resp.text()
        body: dict[str, Any] = await resp.json()
        done = await wait_operation(client, admin_headers, body["operation"]["id"])
        assert done["state"] == "succeeded", done
        return body["workspace"]

    assert (await create("first"))["node"] == "local", "big lacks debian-12.qcow2"
    make_volume("debian-12.qcow2", big_pool)
    await system.fleet.survey(timeout=5.0)
    placed = await create("second")
    assert placed["node"] == "big"
    assert f"{placed['domain']}.qcow2" in volumes(big_pool)
    vanish(placed["domain"])


async def test_create_with_an_image_no_node_holds_is_409_image_unavailable(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    ghost = Image("ghost", "ghost.qcow2")
    with_ghost = replace(settings, images=(*DEFAULT_IMAGES, ghost))
    async with composition.built(with_ghost) as system:
        await composition.ensure_admin(system)
        assert "ghost.qcow2" in volumes(), "test-driver pools are stocked at start"
        driver().storagePoolLookupByName(POOL).storageVolLookupByName("ghost.qcow2").delete()
        await system.fleet.survey(timeout=5.0)
        async with TestClient(TestServer(system.api())) as client:
            resp = await client.post(
                "/v1/workspaces", json={"plan": "small", "image": "ghost"}, headers=admin_headers
            )
            assert resp.status == 409
            error = (await resp.json())["error"]
            assert error["code"] == "image_unavailable"
            assert "provisioner image import ghost" in error["message"]
            listed = await client.get("/v1/workspaces", headers=admin_headers)
            assert (await listed.json())["workspaces"] == []


# --- image import --------------------------------------------------------------------------


@pytest.fixture
def image_files(tmp_path: Path) -> ImageFiles:
    """A small disk, kernel and initrd on local disk."""
    files = {}
    for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"\0" * 1024)
        files[name] = tmp_path / name
    return ImageFiles(files["disk.qcow2"], files["vmlinuz"], files["initrd.img"], None)


async def test_import_on_a_test_driver_fleet_registers_the_image_without_uploading(
    system: System, image_files: ImageFiles
) -> None:
    name = f"tiny-{secrets.token_hex(3)}"
    lines: list[str] = []
    image = await system.images.import_image(
        ADMIN, name, ImageFiles(image_files.disk), [], lines.append
    )
    assert image == Image(name, f"{name}.qcow2")
    assert system.core.catalog.image(name) == image
    assert f"{name}.qcow2" not in volumes(), "test-driver pools are not uploaded into"
    [event] = [e for e in await audit(system, "image.imported") if e.target == name]
    assert event.actor == "tester" and event.reason == "disk.qcow2 onto no node"


async def test_import_on_a_test_driver_fleet_says_that_nothing_was_uploaded(
    system: System, image_files: ImageFiles
) -> None:
    lines: list[str] = []
    await system.images.import_image(
        ADMIN, "silent", ImageFiles(image_files.disk), [], lines.append
    )
    assert lines, "the operator is told that no node received the image"


async def test_import_rejects_a_bad_name_and_missing_files(
    system: System, image_files: ImageFiles, tmp_path: Path
) -> None:
    def nothing(_line: str) -> None:
        raise AssertionError("nothing is uploaded for a refused import")

    for bad in ("Debian", "-x", "a_b", "", "x" * 41):
        with pytest.raises(InvalidInput, match="invalid image name"):
            await system.images.import_image(ADMIN, bad, image_files, [], nothing)
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(InvalidInput, match=r"nope\.qcow2 is not a readable file"):
        await system.images.import_image(ADMIN, "fine", ImageFiles(missing), [], nothing)
    no_kernel = replace(image_files, kernel=tmp_path / "no-vmlinuz")
    with pytest.raises(InvalidInput, match="no-vmlinuz is not a readable file"):
        await system.images.import_image(ADMIN, "fine", no_kernel, [], nothing)
    with pytest.raises(InvalidInput, match="not a readable file"):
        await system.images.import_image(ADMIN, "fine", ImageFiles(tmp_path), [], nothing)
    assert "fine" not in system.core.catalog.images
    assert not await audit(system, "image.imported")


async def test_import_with_kernel_boot_files_registers_them(
    client: Client, admin_headers: dict[str, str], system: System, image_files: ImageFiles
) -> None:
    cmdline = "root=/dev/vda1 console=ttyS0"
    await system.images.import_image(
        ADMIN, "alpine-3", replace(image_files, cmdline=cmdline), [], lambda _line: None
    )
    await system.images.import_image(
        ADMIN, "debian-12", replace(image_files, initrd=None), [], lambda _line: None
    )
    resp = await client.get("/v1/images", headers=admin_headers)
    images = {i["name"]: i for i in (await resp.json())["images"]}
    assert images["alpine-3"] == {
        "name": "alpine-3",
        "base_volume": "alpine-3.qcow2",
        "os": "debian",
        "kernel": "alpine-3.vmlinuz",
        "initrd": "alpine-3.initrd",
        "cmdline": cmdline,
    }
    # A configured image keeps its base volume and os, and gains only what came along.
    assert images["debian-12"] == {
        "name": "debian-12",
        "base_volume": "debian-12.qcow2",
        "os": "debian12",
        "kernel": "debian-12.vmlinuz",
        "initrd": None,
        "cmdline": None,
    }


async def test_import_refuses_unknown_and_unapproved_nodes(
    system: System, image_files: ImageFiles
) -> None:
    pending = Node("pending", "qemu+ssh://n1/system", ssh_host="n1", trust=NodeTrust.PENDING)
    fleet = Fleet([DEFAULT_NODES[0], pending], lambda node: pytest.fail("no node is reached"))
    images = Images(system.store, system.core.catalog, fleet, composition.now)
    with pytest.raises(NotFound, match="no node named 'elsewhere'"):
        await images.import_image(ADMIN, "x", image_files, ["elsewhere"], lambda _line: None)
    with pytest.raises(InvalidInput, match="pending have an unapproved host key"):
        await images.import_image(ADMIN, "x", image_files, [], lambda _line: None)
    assert "x" not in system.core.catalog.images


async def test_upkeep_learns_an_image_imported_by_another_process(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    async with system.store.transaction() as tx:
        await tx.save_image(Image("elsewhere", "elsewhere.qcow2"))
    await composition.upkeep(system)
    resp = await client.get("/v1/images", headers=admin_headers)
    assert "elsewhere" in {i["name"] for i in (await resp.json())["images"]}


async def test_an_image_imported_by_another_process_is_usable_after_upkeep(
    client: Client, admin_headers: dict[str, str], system: System
) -> None:
    async with system.store.transaction() as tx:
        await tx.save_image(Image("later", "later.qcow2"))
    await composition.upkeep(system)
    resp = await client.post(
        "/v1/workspaces", json={"plan": "small", "image": "later"}, headers=admin_headers
    )
    assert resp.status == 202, await resp.text()
    done = await wait_operation(client, admin_headers, (await resp.json())["operation"]["id"])
    assert done["state"] == "succeeded", done


# --- seeds ---------------------------------------------------------------------------------


@pytest.fixture
def public_key(tmp_path: Path) -> str:
    """A real ed25519 public key line from ssh-keygen."""
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(key)],
        check=True,
    )
    return key.with_suffix(".pub").read_text().strip()


async def test_create_writes_a_seed_with_the_owners_keys_and_keeps_the_guest_host_key(
    client: Client, admin_headers: dict[str, str], system: System, public_key: str
) -> None:
    owner = "alice@example.com"
    _key, added = await SshKeys(system.store, composition.now).add(ADMIN, owner, public_key)
    assert added
    resp = await client.post(
        "/v1/workspaces",
        json={"plan": "small", "image": "debian-12", "name": "seeded", "owner": owner},
        headers=admin_headers,
    )
    assert resp.status == 202
    body = await resp.json()
    done = await wait_operation(client, admin_headers, body["operation"]["id"])
    assert done["state"] == "succeeded", done
    seed_step = next(s for s in done["steps"] if s["name"] == "write_seed")
    assert seed_step["detail"] == ("cloud-init seed: hostname seeded, user alice with 1 SSH key(s)")
    domain = body["workspace"]["domain"]
    assert f"{domain}-seed.iso" in volumes()
    async with system.store.read() as tx:
        stored = await tx.get_workspace(body["workspace"]["id"])
    assert stored is not None and stored.guest_host_key is not None
    assert stored.guest_host_key.startswith("ssh-ed25519 ")
    assert "guest_host_key" not in body["workspace"] and "PRIVATE" not in await resp.text()
