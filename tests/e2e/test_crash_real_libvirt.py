"""kill -9 of `provisioner serve` mid-step against a real libvirtd, whose domains outlive the crash.

After a restart the resumed steps must observe the node and act only where needed: one domain
per workspace, never an orphan, never a foreign domain touched.
"""

from __future__ import annotations

import signal
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

from .conftest import LEASE_SECONDS, domains_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

RESUME_TIMEOUT = LEASE_SECONDS + 20


def steps(op: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each recorded step's (state, detail) by name; fails if a name was recorded twice."""
    names = [s["name"] for s in op["steps"]]
    assert len(names) == len(set(names)), f"a step was recorded twice: {names}"
    return {s["name"]: (s["state"], s["detail"]) for s in op["steps"]}


async def crash(serves: ServeGroup, settings: dict[str, str], fault: str) -> ServeProcess:
    """A serve child that will SIGKILL itself at `fault`."""
    return await serves.start({**settings, "PROVISIONER_FAULT_POINT": fault})


async def died_at(serve: ServeProcess, fault: str) -> None:
    """Wait until the child has killed itself at its fault point."""
    assert await serve.wait_exit(timeout=30) == -signal.SIGKILL, serve.log_text()
    assert f"fault point {fault} reached" in serve.log_text()


async def delete_and_check_nothing_is_left(
    serve: ServeProcess, conn: Any, ws: dict[str, Any]
) -> None:
    """Delete through the API; no domain of the workspace may remain on the node."""
    op = await wait_operation(serve.client, await delete_workspace(serve, ws["id"]))
    assert op["state"] == "succeeded", op
    assert domains_of(conn, ws["id"]) == []
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(ws["domain"])
    got = (await serve.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["state"] == "deleted"


# What the node holds when the process dies, and what each step reports after the restart.
CREATE_CRASHES = {
    "define_domain:before": (None, "defined ", "started"),
    "define_domain:after": ("shutoff", "already defined", "started"),
    "start_domain:before": ("shutoff", "defined ", "started"),
    "start_domain:after": ("running", "defined ", "already running"),
}


@pytest.mark.parametrize("fault", list(CREATE_CRASHES))
async def test_kill_during_create_leaves_exactly_one_running_domain(
    fault: str, conn: Any, serve_settings: dict[str, str], serves: ServeGroup
) -> None:
    at_crash, define_detail, start_detail = CREATE_CRASHES[fault]
    first = await crash(serves, serve_settings, fault)
    ws, op_id = await create_workspace(first, "crashy")
    await died_at(first, fault)
    left = domains_of(conn, ws["id"])
    if at_crash is None:
        assert left == []
    else:
        [domain] = left
        assert bool(domain.isActive()) == (at_crash == "running")

    second = await serves.start(serve_settings)
    op = await wait_operation(second.client, op_id, timeout=RESUME_TIMEOUT)

    assert op["state"] == "succeeded" and op["attempts"] == 2, op
    recorded = steps(op)
    assert list(recorded) == ["define_domain", "start_domain"]
    assert recorded["define_domain"][0] == "succeeded"
    assert recorded["define_domain"][1].startswith(define_detail)
    assert recorded["start_domain"] == ("succeeded", start_detail)
    [domain] = domains_of(conn, ws["id"])
    assert domain.name() == ws["domain"] and domain.isActive()
    got = (await second.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["state"] == "running"

    await delete_and_check_nothing_is_left(second, conn, ws)
    assert await second.terminate() == 0


@pytest.mark.parametrize("fault", ["destroy_domain:after", "undefine_domain:before"])
async def test_kill_during_delete_then_restart_removes_the_domain(
    fault: str, conn: Any, serve_settings: dict[str, str], serves: ServeGroup
) -> None:
    first = await crash(serves, serve_settings, fault)  # a create passes neither point
    ws, op_id = await create_workspace(first, "doomed")
    assert (await wait_operation(first.client, op_id))["state"] == "succeeded"
    delete_id = await delete_workspace(first, ws["id"])
    await died_at(first, fault)
    [domain] = domains_of(conn, ws["id"])
    assert not domain.isActive()

    second = await serves.start(serve_settings)
    op = await wait_operation(second.client, delete_id, timeout=RESUME_TIMEOUT)

    assert op["state"] == "succeeded" and op["attempts"] == 2, op
    assert steps(op) == {
        "destroy_domain": (
            "succeeded",
            "already off" if fault.endswith("after") else "powered off",
        ),
        "undefine_domain": ("succeeded", "undefined"),
    }
    assert domains_of(conn, ws["id"]) == []
    got = (await second.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["state"] == "deleted"
    assert await second.terminate() == 0


async def test_create_interrupted_too_often_gives_up_and_leaves_nothing(
    conn: Any, serve_settings: dict[str, str], serves: ServeGroup
) -> None:
    # Three crashes just before the start; the fourth claim is past the limit of attempts.
    fault = "start_domain:before"
    first = await crash(serves, serve_settings, fault)
    ws, op_id = await create_workspace(first, "unlucky")
    await died_at(first, fault)
    for _ in range(2):
        await died_at(await crash(serves, serve_settings, fault), fault)
    assert len(domains_of(conn, ws["id"])) == 1  # defined, never started

    last = await serves.start(serve_settings)
    op = await wait_operation(last.client, op_id, timeout=RESUME_TIMEOUT)

    assert op["state"] == "failed" and op["attempts"] == 4, op
    assert op["error"] == "interrupted 3 times; giving up"
    assert domains_of(conn, ws["id"]) == []
    recorded = steps(op)
    assert recorded["undo_destroy_domain"][0] == "succeeded"
    assert recorded["undo_undefine_domain"] == ("succeeded", "undefined")
    # A finished operation shows no step as still running.
    assert all(state != "running" for state, _detail in recorded.values()), recorded
    got = (await last.client.get(f"/v1/workspaces/{ws['id']}")).json()
    assert got["state"] == "failed"
    assert await last.terminate() == 0


async def test_a_foreign_domain_with_our_name_is_never_touched(
    conn: Any, serve_settings: dict[str, str], serves: ServeGroup
) -> None:
    # The crash comes before the define; meanwhile someone else takes the domain's name.
    fault = "define_domain:before"
    first = await crash(serves, serve_settings, fault)
    ws, op_id = await create_workspace(first, "squatted")
    await died_at(first, fault)
    foreign = conn.defineXML(
        f"<domain type='qemu'><name>{ws['domain']}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
    )
    try:
        second = await serves.start(serve_settings)
        op = await wait_operation(second.client, op_id, timeout=RESUME_TIMEOUT)

        assert op["state"] == "failed" and op["attempts"] == 2, op
        assert op["error"] == (
            f"node n1 already has a domain named {ws['domain']} that is not ours"
        )
        assert steps(op) == {
            "define_domain": ("failed", op["error"]),
            "undo_destroy_domain": ("succeeded", "no domain"),
            "undo_undefine_domain": ("succeeded", "no domain"),
        }
        assert conn.lookupByName(ws["domain"]).UUIDString() == foreign.UUIDString()
        got = (await second.client.get(f"/v1/workspaces/{ws['id']}")).json()
        assert got["state"] == "failed"
        assert await second.terminate() == 0
    finally:
        foreign.undefine()
