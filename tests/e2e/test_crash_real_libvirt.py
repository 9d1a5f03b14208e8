"""kill -9 of `provisioner serve` mid-step, against a real libvirtd reached over SSH.

Domains and volumes outlive the crash. After a restart the resumed steps must observe the node
and act only where needed: one domain, one disk, one seed per workspace, never an orphan, never
a foreign domain touched.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import libvirt
import pytest
from serve_process import (
    ServeGroup,
    ServeProcess,
    create_workspace,
    delete_workspace,
    wait_operation,
)

from .conftest import domains_of
from .world import BOOT_SECONDS, World, our_volumes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RESUME_TIMEOUT = 25.0  # lease (2 s) + start-up + the steps that do not wait for a guest


def steps(op: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each recorded step's (state, detail) by name; fails if a name was recorded twice."""
    names = [s["name"] for s in op["steps"]]
    assert len(names) == len(set(names)), f"a step was recorded twice: {names}"
    return {s["name"]: (s["state"], s["detail"]) for s in op["steps"]}


async def crash(serves: ServeGroup, settings: dict[str, str], fault: str) -> ServeProcess:
    """A serve child that will SIGKILL itself at `fault`."""
    return await serves.start({**settings, "PROVISIONER_FAULT_POINT": fault})


async def died_at(serve: ServeProcess, fault: str, timeout: float = 60) -> None:
    """Wait until the child has killed itself at its fault point."""
    assert await serve.wait_exit(timeout=timeout) == -signal.SIGKILL, serve.log_text()
    assert f"fault point {fault} reached" in serve.log_text()


async def ready(world: World, serves: ServeGroup, fault: str | None = None) -> ServeProcess:
    """A serve child on the SSH node, with the image imported (uploaded once per tier run)."""
    settings = world.settings()
    world.import_image(settings)
    if fault is None:
        return await serves.start(settings)
    return await crash(serves, settings, fault)


async def delete_and_check_nothing_is_left(
    serve: ServeProcess, conn: Any, ws: dict[str, Any]
) -> None:
    """Delete through the API; no domain, disk or seed of the workspace may remain."""
    op = await wait_operation(serve.client, await delete_workspace(serve, ws["id"]), timeout=120)
    assert op["state"] == "succeeded", op
    assert domains_of(conn, ws["id"]) == []
    assert our_volumes(conn, ws["domain"]) == []
    got = (await serve.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["state"] == "deleted"


# What the node holds when the process dies, and what the re-run step reports.
CREATE_CRASHES = {
    "write_seed:after": ((2, None), "write_seed", "already there"),
    "define_domain:after": ((2, "shutoff"), "define_domain", "already defined"),
    "start_domain:after": ((2, "running"), "start_domain", "already running"),
}


@pytest.mark.parametrize("fault", list(CREATE_CRASHES))
async def test_kill_during_create_leaves_exactly_one_guest(
    fault: str, conn: Any, world: World, serves: ServeGroup
) -> None:
    (volumes, power), rerun, detail = CREATE_CRASHES[fault]
    first = await ready(world, serves, fault)
    ws, op_id = await create_workspace(first, "crashy")
    await died_at(first, fault)
    assert len(our_volumes(conn, ws["domain"])) == volumes
    left = domains_of(conn, ws["id"])
    if power is None:
        assert left == []
    else:
        [domain] = left
        assert bool(domain.isActive()) == (power == "running")

    second = await serves.start(world.settings())
    op = await wait_operation(second.client, op_id, timeout=BOOT_SECONDS)

    assert op["state"] == "succeeded" and op["attempts"] == 2, op
    recorded = steps(op)
    assert recorded[rerun] == ("succeeded", detail)
    assert all(state == "succeeded" for state, _ in recorded.values()), recorded
    [domain] = domains_of(conn, ws["id"])
    assert domain.name() == ws["domain"] and domain.isActive()
    assert len(our_volumes(conn, ws["domain"])) == 2
    await delete_and_check_nothing_is_left(second, conn, ws)
    assert await second.terminate() == 0


async def test_kill_during_delete_then_restart_removes_everything(
    conn: Any, world: World, serves: ServeGroup
) -> None:
    fault = "delete_disk:before"
    first = await ready(world, serves, fault)  # a create never passes this point
    ws, op_id = await create_workspace(first, "doomed")
    assert (await wait_operation(first.client, op_id, timeout=BOOT_SECONDS))["state"] == (
        "succeeded"
    )
    delete_id = await delete_workspace(first, ws["id"])
    await died_at(first, fault)
    assert domains_of(conn, ws["id"]) == []
    assert len(our_volumes(conn, ws["domain"])) == 2  # the domain went, its volumes not yet

    second = await serves.start(world.settings())
    op = await wait_operation(second.client, delete_id, timeout=RESUME_TIMEOUT)
    assert op["state"] == "succeeded" and op["attempts"] == 2, op
    assert steps(op)["undefine_domain"] == ("succeeded", "undefined")
    assert steps(op)["delete_disk"] == ("succeeded", f"deleted {ws['domain']}.qcow2")
    assert our_volumes(conn, ws["domain"]) == []
    assert await second.terminate() == 0


async def test_create_interrupted_too_often_gives_up_and_leaves_nothing(
    conn: Any, world: World, serves: ServeGroup
) -> None:
    # Three crashes just before the start; the fourth claim is past the limit of attempts.
    fault = "start_domain:before"
    first = await ready(world, serves, fault)
    ws, op_id = await create_workspace(first, "unlucky")
    await died_at(first, fault)
    for _ in range(2):
        await died_at(await crash(serves, world.settings(), fault), fault)
    assert len(domains_of(conn, ws["id"])) == 1  # defined, never started

    last = await serves.start(world.settings())
    op = await wait_operation(last.client, op_id, timeout=RESUME_TIMEOUT)

    assert op["state"] == "failed" and op["attempts"] == 4, op
    assert op["error"] == "interrupted 3 times; giving up"
    assert domains_of(conn, ws["id"]) == [] and our_volumes(conn, ws["domain"]) == []
    recorded = steps(op)
    assert recorded["undo_undefine_domain"] == ("succeeded", "undefined")
    assert recorded["undo_delete_disk"] == ("succeeded", f"deleted {ws['domain']}.qcow2")
    assert all(state != "running" for state, _detail in recorded.values()), recorded
    got = (await last.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["state"] == "failed"
    assert await last.terminate() == 0


async def test_a_foreign_domain_with_our_name_is_never_touched(
    conn: Any, world: World, serves: ServeGroup
) -> None:
    # The crash comes before the define; meanwhile someone else takes the domain's name.
    fault = "define_domain:before"
    first = await ready(world, serves, fault)
    ws, op_id = await create_workspace(first, "squatted")
    await died_at(first, fault)
    foreign = conn.defineXML(
        f"<domain type='qemu'><name>{ws['domain']}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
    )
    try:
        second = await serves.start(world.settings())
        op = await wait_operation(second.client, op_id, timeout=RESUME_TIMEOUT)

        assert op["state"] == "failed" and op["attempts"] == 2, op
        assert op["error"] == (
            f"node n1 already has a domain named {ws['domain']} that is not ours"
        )
        recorded = steps(op)
        assert recorded["define_domain"] == ("failed", op["error"])
        assert recorded["undo_destroy_domain"] == ("succeeded", "no domain")
        assert recorded["undo_undefine_domain"] == ("succeeded", "no domain")
        assert conn.lookupByName(ws["domain"]).UUIDString() == foreign.UUIDString()
        assert our_volumes(conn, ws["domain"]) == []  # our own disk and seed are gone
        assert await second.terminate() == 0
    finally:
        foreign.undefine()


def test_libvirt_is_the_namespace_one(conn: Any) -> None:
    """Guard: these tests talk to the private libvirtd (its pool was made by setup-host.sh)."""
    assert conn.storagePoolLookupByName("default").isActive()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("a-domain-nobody-defined")


async def test_ssh_dropped_mid_create_reconnects_and_finishes(
    conn: Any, world: World, serves: ServeGroup
) -> None:
    serve = await ready(world, serves)
    ws, op_id = await create_workspace(serve, "flaky")
    # Once the guest is booting, cut every SSH session the node has (the master stays up).
    master = int((world.node.directory / "sshd" / "sshd.pid").read_text())
    for _ in range(600):
        op = (await serve.client.get(f"/v1/operations/{op_id}")).json()
        if any(s["name"] == "start_domain" and s["state"] == "succeeded" for s in op["steps"]):
            break
        await asyncio.sleep(0.1)
    cut = subprocess.run(["pkill", "-KILL", "-P", str(master)], check=False)
    assert cut.returncode == 0, "no SSH session to cut"

    op = await wait_operation(serve.client, op_id, timeout=BOOT_SECONDS)
    assert op["state"] == "succeeded", op
    assert op["attempts"] == 1  # the link reconnected; nothing was handed over
    [domain] = domains_of(conn, ws["id"])
    assert domain.isActive() and len(our_volumes(conn, ws["domain"])) == 2
    assert serve.log_text().count("connected to node n1") >= 2  # it did reconnect
    await delete_and_check_nothing_is_left(serve, conn, ws)
    assert await serve.terminate() == 0
