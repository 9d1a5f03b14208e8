"""A real Debian guest on a node reached over SSH: approval, import, create, reach, stop, rebuild.

The node is an OpenSSH sshd on loopback in front of the namespace's libvirtd; the guest boots
under TCG with the cloud-init seed the provisioner built, and is reached through the node.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import libvirt
import pytest
from serve_process import ServeGroup, ServeProcess, wait_operation

from tests.fakes.tailscale_api import FakeTailscale
from tests.playbook_archives import tar_gz

from .conftest import domains_of
from .guest import Jump, keypair
from .tailnet_guest import BASE_TAG, OWNER_TAG, files_holding, join_from_seed, tailnet_env
from .world import BOOT_SECONDS, OWNER, OWNER_LOGIN, World, our_volumes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
PLAYBOOK = b"""- hosts: all
  gather_facts: true
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: /tmp/pb-marker
        content: "{{ greeting }}"
        mode: "0644"
"""


PLAYBOOK_ARCHIVE = tar_gz({"site.yml": PLAYBOOK})
CREATE_STEPS = [
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


def fingerprint_of(public_key: str, tmp: Path) -> str:
    """The SHA256 fingerprint `ssh-keygen -lf` shows for a public key line."""
    path = tmp / "hostkey-to-check.pub"
    path.write_text(public_key + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[1]


async def node_entry(serve: ServeProcess) -> dict[str, Any]:
    """n1 as GET /v1/nodes shows it."""
    nodes = (await serve.client.get("/v1/nodes")).json()["nodes"]
    [entry] = [n for n in nodes if n["name"] == "n1"]
    return dict(entry)


async def finished(serve: ServeProcess, op_id: str, domain: str) -> dict[str, Any]:
    """Wait for an operation; on a timeout, the guest's console tells why."""
    try:
        return await wait_operation(serve.client, op_id, timeout=BOOT_SECONDS)
    except AssertionError as error:
        log = Path(f"/var/log/libvirt/qemu/{domain}-console.log")
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no console log)"
        raise AssertionError(f"{error}\n--- console of {domain} ---\n{tail}") from None


async def act(serve: ServeProcess, ws_id: str, action: str) -> dict[str, Any]:
    """POST a lifecycle action and wait for its operation to end."""
    resp = await serve.client.post(f"/v1/workspaces/{ws_id}/{action}")
    assert resp.status_code == 202, resp.text
    return await wait_operation(serve.client, resp.json()["id"], timeout=BOOT_SECONDS)


def steps(op: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """(state, detail) of each recorded step by name."""
    return {s["name"]: (s["state"], s["detail"]) for s in op["steps"]}


async def test_an_unknown_node_is_approved_then_a_workspace_lives_its_whole_life(
    world: World, serves: ServeGroup, conn: Any, tmp_path: Path, tailnet: FakeTailscale
) -> None:
    # 1. A node without a pinned key is held pending with the fingerprint it presents.
    settings = world.settings(pin=False, **tailnet_env(tailnet))
    serve = await serves.start(settings)
    expected = fingerprint_of(world.node.host_key, tmp_path)
    for _ in range(100):
        entry = await node_entry(serve)
        if entry["host_key"]["presented_fingerprint"]:
            break
        await asyncio.sleep(0.2)
    assert entry["host_key"] == {
        "state": "pending",
        "fingerprint": None,
        "presented_fingerprint": expected,
    }
    request = {"plan": "small", "image": "debian-12", "name": "e2e1", "owner": OWNER}
    refused = await serve.client.post("/v1/workspaces", json=request)
    assert refused.status_code == 409 and "no trusted node" in refused.text
    wrong = await serve.client.post(
        "/v1/nodes/n1/approve", json={"fingerprint": "SHA256:" + "A" * 43}
    )
    assert wrong.status_code == 409, wrong.text
    approved = await serve.client.post("/v1/nodes/n1/approve", json={"fingerprint": expected})
    assert approved.status_code == 200, approved.text
    assert approved.json()["host_key"]["state"] == "trusted"

    # 2. The image goes into the node's pool once, through the SSH link.
    first = world.import_image(settings)
    assert "uploading base.qcow2" in first or "already there" in first, first
    assert "already there" in world.import_image(settings)

    # 3. A workspace: every step, reached as its owner through the node with the pinned key.
    owner_key = keypair(tmp_path / "owner" / "id_ed25519", OWNER)
    world.add_owner_key((owner_key.parent / "id_ed25519.pub").read_text())
    resp = await serve.client.post("/v1/workspaces", json=request)
    assert resp.status_code == 202, resp.text
    ws = resp.json()["workspace"]
    joining = asyncio.create_task(join_from_seed(tailnet, conn, ws["domain"], "e2e1"))
    op = await finished(serve, resp.json()["operation"]["id"], ws["domain"])
    assert op["state"] == "succeeded", op
    assert [s["name"] for s in op["steps"]] == CREATE_STEPS
    assert steps(op)["wait_for_ssh"][1].startswith("ssh ready at 10.254.9.")
    assert steps(op)["join_tailnet"][1].startswith("on the tailnet as e2e1.tail1234.ts.net")
    assert steps(op)["onboard"][1] == "cloud-init done; account dev (sudo) with 1 SSH key(s)"
    got = (await serve.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["tailscale"]["hostname"] == "e2e1.tail1234.ts.net"
    assert got["tailscale"]["tags"] == [OWNER_TAG, BASE_TAG]
    # The auth key is in the seed the guest booted with, and in no other file of ours: not the
    # data dir, the database, serve's log, nor any other volume in the node's pool.
    auth_key, seed = await joining
    pool_dir = seed.parent
    others = [p for p in pool_dir.iterdir() if p != seed and p.name != f"{ws['domain']}.qcow2"]
    assert files_holding(auth_key, seed) == [seed]
    assert files_holding(auth_key, tmp_path / "data", world.database, *others) == []
    assert auth_key not in serve.log_text()
    assert got["state"] == "running" and got["address"].startswith("10.254.9.")
    assert our_volumes(conn, ws["domain"]) == [f"{ws['domain']}-seed.iso", f"{ws['domain']}.qcow2"]
    disk = f"{ws['domain']}.qcow2"
    volume = conn.storagePoolLookupByName("default").storageVolLookupByName(disk)
    assert volume.info()[1] == 10 << 30  # the plan's size, not the image's
    assert "<backingStore>" in volume.XMLDesc(0)
    guest_key = world.guest_host_key(ws["id"])
    with Jump(world.node.port, world.node.client_key, world.node.host_key) as jump:

        def on_guest(*argv: str) -> subprocess.CompletedProcess[str]:
            return jump.run(got["address"], OWNER_LOGIN, owner_key, list(argv), host_key=guest_key)

        hello = on_guest("sh", "-c", "hostname; id -un; sudo -n true && echo sudo-ok")
        assert hello.returncode == 0, hello.stderr
        assert hello.stdout.split() == ["e2e1", OWNER_LOGIN, "sudo-ok"]
        # The key file was removed after `tailscale up` (absent from this image, so it failed).
        gone = on_guest("sudo", "-n", "test", "!", "-e", "/etc/provisioner/tailscale-authkey")
        assert gone.returncode == 0, gone.stderr
        assert on_guest("touch", "marker").returncode == 0

        # A playbook from an upload, run through the node by real ansible-playbook.
        upload = await serve.client.post(
            "/v1/playbooks",
            data={"name": "marker"},
            files={"file": ("marker.tar.gz", PLAYBOOK_ARCHIVE, "application/gzip")},
        )
        assert upload.status_code == 201, upload.text
        ran = await serve.client.post(
            f"/v1/workspaces/{ws['id']}/playbooks",
            json={"playbook": "marker", "extra_vars": {"greeting": "hello from ansible"}},
        )
        assert ran.status_code == 202, ran.text
        played = await wait_operation(serve.client, ran.json()["id"], timeout=300)
        assert played["state"] == "succeeded", played
        assert "marker: ok=2 changed=1 failed=0" in steps(played)["run_playbooks"][1]
        log = (await serve.client.get(f"/v1/operations/{played['id']}/log")).text
        assert "run_playbooks | PLAY RECAP" in log
        written = on_guest("cat", "/tmp/pb-marker")
        assert written.stdout == "hello from ansible", written.stderr

        # 4. Stop is a graceful ACPI shutdown; start brings it back, reachable again.
        stopped = await act(serve, ws["id"], "stop")
        assert stopped["state"] == "succeeded", stopped
        assert steps(stopped)["shutdown_domain"] == ("succeeded", "shut down")
        assert not conn.lookupByName(ws["domain"]).isActive()
        started = await act(serve, ws["id"], "start")
        assert started["state"] == "succeeded", started
        assert on_guest("test", "-e", "marker").returncode == 0

        # 5. Rebuild: a fresh disk and a new guest key under the same name, a new device.
        old_device = got["tailscale"]
        rejoin = asyncio.create_task(
            join_from_seed(tailnet, conn, ws["domain"], "e2e1", not_key=auth_key)
        )
        rebuilt = await act(serve, ws["id"], "rebuild")
        assert rebuilt["state"] == "succeeded", rebuilt
        await rejoin
        (device,) = tailnet.devices.values()
        assert device.name == old_device["hostname"] and device.addresses[0] != old_device["ip"]
        new_key = world.guest_host_key(ws["id"])
        assert new_key != guest_key
        got = (await serve.client.get(f"/v1/workspaces/{ws['id']}")).json()
    # A new jump (a new connection to the node) for the new guest.
    with Jump(world.node.port, world.node.client_key, world.node.host_key) as jump:
        address = got["address"]
        jump.wait(address, OWNER_LOGIN, owner_key, 60, host_key=new_key)
        again = jump.run(address, OWNER_LOGIN, owner_key, ["ls"], host_key=new_key)
        assert again.returncode == 0 and "marker" not in again.stdout, again.stderr
        # The old key no longer opens the door: the guest really is a new one.
        stale = jump.run(address, OWNER_LOGIN, owner_key, ["true"], host_key=guest_key)
        assert stale.returncode == 255

    # 6. Delete leaves no domain, disk or seed behind.
    resp = await serve.client.delete(f"/v1/workspaces/{ws['id']}")
    deleted = await wait_operation(serve.client, resp.json()["id"], timeout=120)
    assert deleted["state"] == "succeeded", deleted
    assert domains_of(conn, ws["id"]) == [] and our_volumes(conn, ws["domain"]) == []
    assert tailnet.devices == {}
    assert all(k.revoked is not None or k.uses for k in tailnet.keys.values())
    assert await serve.terminate() == 0


async def test_a_changed_node_key_stops_all_work_on_the_node(
    world: World, serves: ServeGroup, conn: Any
) -> None:
    other = keypair(world.tmp / "impostor" / "hostkey", "impostor")
    impostor = " ".join((other.parent / "hostkey.pub").read_text().split()[:2])
    settings = world.settings(pin=True)
    # Pin a key the node does not have: to us, the node now presents a changed key.
    nodes_file = Path(settings["PROVISIONER_NODES"])
    nodes_file.write_text(nodes_file.read_text().replace(world.node.host_key, impostor))
    serve = await serves.start(settings)
    for _ in range(100):
        entry = await node_entry(serve)
        if entry["host_key"]["state"] == "untrusted":
            break
        await asyncio.sleep(0.2)
    assert entry["host_key"]["state"] == "untrusted", entry
    audit = (await serve.client.get("/v1/audit", params={"target": "n1"})).json()
    assert "node.host_key_changed" in [e["action"] for e in audit["events"]]
    resp = await serve.client.post(
        "/v1/workspaces", json={"plan": "small", "image": "debian-12", "name": "nope"}
    )
    assert resp.status_code == 409
    ours = [d for d in conn.listAllDomains() if d.name().startswith("ws-nope-")]
    assert ours == []
    # Nothing authenticated to the node with the wrong pin.
    assert "Accepted publickey" not in world.node.sshd_log.read_text()
    assert await serve.terminate() == 0


def test_the_pool_really_is_the_namespace_one(conn: Any) -> None:
    """Guard: the e2e pool exists and is active (scripts/e2e/setup-host.sh made it)."""
    try:
        pool = conn.storagePoolLookupByName("default")
    except libvirt.libvirtError as error:  # pragma: no cover - a broken host set-up
        pytest.fail(f"no pool 'default' in the namespace: {error}")
    assert pool.isActive()
