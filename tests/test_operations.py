"""The durable operation runner: claims, fencing, resume, cancel, failure with compensation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import libvirt
import pytest

from provisioner.app import cli as main
from provisioner.app.cli import System
from provisioner.models import (
    SYSTEM_ACTOR,
    Actor,
    Claim,
    OperationKind,
    OperationState,
    Role,
    Step,
    StepState,
    WorkspaceState,
)
from provisioner.requests import CreateRequest
from provisioner.settings import Settings
from provisioner.steps import RECIPES, StepDef

ADMIN = Actor("tester", Role.ADMIN, "test")


@pytest.fixture
async def idle(settings: Settings) -> AsyncIterator[System]:
    """The system with its workers not started, so tests drive claims by hand."""
    async with main.built(settings) as built:
        yield built


def driver() -> libvirt.virConnect:
    """A connection to the process's shared test driver."""
    return libvirt.open("test:///default")


async def wait_state(system: System, op_id: str, timeout: float = 10.0) -> OperationState:
    """Wait until the operation reaches a final state."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        op = await system.core.get_operation(ADMIN, op_id)
        if op.state.terminal:
            return op.state
        await asyncio.sleep(0.02)
    raise AssertionError(f"operation {op_id} still {op.state}")


async def claim(system: System, worker: str, now: datetime) -> list[Claim]:
    """Claim whatever is claimable as `worker` at `now`, with a 30 s lease."""
    async with system.store.transaction() as tx:
        return await tx.claim_operations(
            worker=worker, now=now, lease_until=now + timedelta(seconds=30), limit=10
        )


async def test_a_lapsed_claim_is_fenced_out(idle: System) -> None:
    _ws, op = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    now = datetime.now(UTC)
    [first] = await claim(idle, "worker-a", now)
    assert await claim(idle, "worker-b", now) == [], "a live lease must not be stolen"
    [second] = await claim(idle, "worker-b", now + timedelta(seconds=31))
    assert second.fence == first.fence + 1 and second.operation.attempts == 2
    step = Step("define_domain", StepState.RUNNING, now)
    async with idle.store.transaction() as tx:
        assert not await tx.record_step(first, step), "stale worker wrote a step"
        assert not await tx.renew_lease(first, now + timedelta(minutes=5))
        assert not await tx.finish_operation(first, OperationState.SUCCEEDED, None, now)
        assert await tx.record_step(second, step)
    stored = await idle.core.get_operation(ADMIN, op.id)
    assert stored.state == OperationState.RUNNING and stored.fence == second.fence


async def test_concurrent_claims_never_share_an_operation(idle: System) -> None:
    for i in range(12):
        await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12", name=f"c{i}"))
    now = datetime.now(UTC)
    batches = await asyncio.gather(*(claim(idle, f"w{i}", now) for i in range(4)))
    claimed = [c.operation.id for batch in batches for c in batch]
    assert len(claimed) == 12 and len(set(claimed)) == 12


async def test_resume_skips_finished_steps(idle: System) -> None:
    ws, op = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    now = datetime.now(UTC)
    # A first worker made the disk and seed, defined the domain, and died before starting it.
    [first] = await claim(idle, "dead-worker", now - timedelta(seconds=60))
    ctx = await idle.runner._contexts.build(ws.id)
    for name in FIRST_STEPS:
        await idle.runner._run_step(first, main_step(name), ctx)
    async with idle.store.transaction() as tx:
        await tx.renew_lease(first, now - timedelta(seconds=1))
    idle.runner.start()
    try:
        assert await wait_state(idle, op.id) == OperationState.SUCCEEDED
    finally:
        await idle.runner.stop(5)
    done = await idle.core.get_operation(ADMIN, op.id)
    assert [(s.name, s.state) for s in done.steps] == [
        (step.name, StepState.SUCCEEDED) for step in RECIPES[OperationKind.CREATE].steps
    ]
    assert done.steps[0].detail == "10 GiB copy-on-write disk over debian-12.qcow2"
    assert done.attempts == 2
    assert driver().lookupByName(ws.domain_name).isActive()


FIRST_STEPS = ("prepare_disk", "write_seed", "define_domain")


def main_step(name: str) -> StepDef:
    """The step definition called `name` from the create recipe."""
    return next(s for s in RECIPES[OperationKind.CREATE].steps if s.name == name)


async def test_a_foreign_domain_fails_the_create_and_is_left_alone(idle: System) -> None:
    ws, op = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    foreign = driver().defineXML(
        f"<domain type='test'><name>{ws.domain_name}</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    idle.runner.start()
    try:
        assert await wait_state(idle, op.id) == OperationState.FAILED
    finally:
        await idle.runner.stop(5)
    failed = await idle.core.get_operation(ADMIN, op.id)
    assert failed.error is not None and "not ours" in failed.error
    assert (await idle.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.FAILED
    assert driver().lookupByName(ws.domain_name).UUIDString() == foreign.UUIDString()
    foreign.undefine()


async def test_cancel_of_a_pending_create_deletes_the_workspace(idle: System) -> None:
    ws, op = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    cancelled = await idle.core.cancel_operation(ADMIN, op.id)
    assert cancelled.state == OperationState.CANCELLED
    assert (await idle.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.DELETED
    assert await claim(idle, "w", datetime.now(UTC)) == []


async def test_cancel_between_steps_compensates(idle: System) -> None:
    ws, op = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    [held] = await claim(idle, "w", datetime.now(UTC))
    ctx = await idle.runner._contexts.build(ws.id)
    for name in FIRST_STEPS:
        await idle.runner._run_step(held, main_step(name), ctx)
    pool = driver().storagePoolLookupByName("default-pool")
    assert {ws.disk_volume, ws.seed_volume} <= set(pool.listVolumes())
    await idle.core.cancel_operation(ADMIN, op.id)
    assert await idle.runner._run(held) == OperationState.CANCELLED
    assert [s.name for s in (await idle.core.get_operation(ADMIN, op.id)).steps] == [
        *FIRST_STEPS,
        "undo_destroy_domain",
        "undo_undefine_domain",
        "undo_delete_disk",
        "undo_delete_seed",
        "undo_leave_tailnet",
    ]
    with pytest.raises(libvirt.libvirtError):
        driver().lookupByName(ws.domain_name)
    assert not {ws.disk_volume, ws.seed_volume} & set(pool.listVolumes())
    assert (await idle.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.DELETED


async def test_too_many_interruptions_fail_cleanly(idle: System) -> None:
    ws, op = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    now = datetime.now(UTC)
    for attempt in range(4):
        [held] = await claim(idle, f"w{attempt}", now + timedelta(minutes=attempt))
    assert held.operation.attempts == 4
    assert await idle.runner._run(held) == OperationState.FAILED
    failed = await idle.core.get_operation(ADMIN, op.id)
    assert failed.error == "interrupted 3 times; giving up"
    assert (await idle.core.get_workspace(ADMIN, ws.id)).state == WorkspaceState.FAILED


async def test_every_state_change_is_audited(system: System) -> None:
    ws, op = await system.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    assert await wait_state(system, op.id) == OperationState.SUCCEEDED
    async with system.store.transaction() as tx:
        events = await tx.list_audit(target=ws.id, actor=None, after=None, limit=100)
    assert [(e.actor, e.action) for e in events] == [
        ("tester", "operation.pending"),
        ("tester", "workspace.requested"),
        (SYSTEM_ACTOR.name, "operation.running"),
        (SYSTEM_ACTOR.name, "operation.succeeded"),
        (SYSTEM_ACTOR.name, "workspace.running"),
    ]
    assert all(e.at is not None and e.operation_id == op.id for e in events)


async def test_stop_start_and_expiry(system: System) -> None:
    ws, op = await system.core.create_workspace(
        ADMIN, CreateRequest("small", "debian-12", ttl_hours=1)
    )
    assert await wait_state(system, op.id) == OperationState.SUCCEEDED
    stop = await system.core.power(ADMIN, ws.id, OperationKind.STOP)
    assert await wait_state(system, stop.id) == OperationState.SUCCEEDED
    assert not driver().lookupByName(ws.domain_name).isActive()
    start = await system.core.power(ADMIN, ws.id, OperationKind.START)
    assert await wait_state(system, start.id) == OperationState.SUCCEEDED
    assert driver().lookupByName(ws.domain_name).isActive()
    async with system.store.transaction() as tx:
        await tx.update_workspace(ws.id, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    assert await system.core.expire_workspaces(SYSTEM_ACTOR) == 1
    deleting = await system.core.get_workspace(ADMIN, ws.id)
    assert deleting.state in (WorkspaceState.DELETING, WorkspaceState.DELETED)


async def test_a_node_at_its_share_of_workers_is_passed_over_when_claiming(idle: System) -> None:
    on_local, _ = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    # A second node's workspace, written straight into the store (placement is not the point).
    async with idle.store.transaction() as tx:
        await tx.update_workspace(on_local.id, node="elsewhere")
    other, _ = await idle.core.create_workspace(ADMIN, CreateRequest("small", "debian-12"))
    now = datetime.now(UTC)
    async with idle.store.transaction() as tx:
        claims = await tx.claim_operations(
            worker="w",
            now=now,
            lease_until=now + timedelta(seconds=30),
            limit=10,
            exclude_nodes=frozenset({"elsewhere"}),
        )
    assert [c.operation.workspace_id for c in claims] == [other.id]
    # Once the full node has room again, its work is claimed as usual.
    assert [c.operation.workspace_id for c in await claim(idle, "w", now)] == [on_local.id]


def test_the_share_of_a_node_is_half_the_workers(idle: System) -> None:
    runner = idle.runner
    runner._node_of.update({f"op{i}": "hung" for i in range(runner._concurrency // 2)})
    runner._node_of["op-x"] = "local"
    assert runner._full_nodes() == frozenset({"hung"})
