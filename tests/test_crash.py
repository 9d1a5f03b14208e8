"""Crash safety of `provisioner serve` as a real process: kill -9 mid-step, restart, resume.

libvirt's test driver lives inside the killed process, so its domains die with it; these tests
check what the store guarantees (resume from the first unfinished step, one record per step, a
consistent audit trail, nothing run twice). tests/e2e/test_crash_real_libvirt.py checks the
node side against a libvirtd whose domains survive the crash.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from serve_process import ServeGroup, create_workspace, wait_operation
from sqlalchemy.ext.asyncio import create_async_engine

from provisioner.adapters.store.tables import audit_events, operations
from provisioner.app import cli as main
from provisioner.app.cli import DRAIN_SECONDS
from provisioner.models import SYSTEM_ACTOR, Role
from provisioner.settings import Settings

ADMIN_SECRET = "prov_crash-admin-" + "z" * 24
LEASE_SECONDS = 2
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
COMPENSATION_STEPS = [
    "undo_destroy_domain",
    "undo_undefine_domain",
    "undo_delete_disk",
    "undo_delete_seed",
    "undo_leave_tailnet",
]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def serves(database_url: str, tmp_path: Path) -> AsyncIterator[ServeGroup]:
    """Serve children for this test, killed at the end (before the database is dropped)."""
    group = ServeGroup(tmp_path, ADMIN_SECRET)
    try:
        yield group
    finally:
        await group.aclose()


def serve_settings(database_url: str, tmp_path: Path, fault: str | None = None) -> dict[str, str]:
    """Embedded defaults on the test's database and data dir, a short lease, maybe a fault."""
    settings = {
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_DATABASE_URL": database_url,
        "PROVISIONER_ADMIN_TOKEN": ADMIN_SECRET,
        "PROVISIONER_LEASE_SECONDS": str(LEASE_SECONDS),
        "PROVISIONER_RATE_LIMIT": "0",
    }
    if fault is not None:
        settings["PROVISIONER_FAULT_POINT"] = fault
    return settings


async def query(database_url: str, statement: sa.Select[Any]) -> list[sa.Row[Any]]:
    """Rows of one SELECT, read straight from the database the children share."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(statement)).all())
    finally:
        await engine.dispose()


async def audit_trail(database_url: str, workspace_id: str) -> list[sa.Row[Any]]:
    """The audit events about a workspace, oldest first."""
    return await query(
        database_url,
        sa.select(audit_events)
        .where(audit_events.c.target == workspace_id)
        .order_by(audit_events.c.id),
    )


def step_table(op: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, state) of each recorded step, in order."""
    return [(s["name"], s["state"]) for s in op["steps"]]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", CREATE_STEPS)
async def test_kill_during_create_then_restart_finishes_the_operation(
    step: str, when: str, database_url: str, tmp_path: Path, serves: ServeGroup
) -> None:
    first = await serves.start(serve_settings(database_url, tmp_path, f"{step}:{when}"))
    ws, op_id = await create_workspace(first, "crashy")
    assert await first.wait_exit(timeout=15) == -signal.SIGKILL, first.log_text()
    assert f"fault point {step}:{when} reached" in first.log_text()

    second = await serves.start(serve_settings(database_url, tmp_path))
    op = await wait_operation(second.client, op_id, timeout=LEASE_SECONDS + 15)
    got = (await second.client.get(f"/v1/workspaces/{ws['id']}")).json()

    assert op["attempts"] == 2, op
    if step == "prepare_disk":
        # Nothing was recorded done: the re-run starts from scratch on the fresh test driver.
        assert op["state"] == "succeeded", op
        assert op["error"] is None
        assert step_table(op) == [(name, "succeeded") for name in CREATE_STEPS]
        assert got["state"] == "running"
        outcome = ["operation.succeeded", "workspace.running"]
    else:
        # Steps recorded done are not re-run; a later step observes that what they made
        # vanished with the killed process (the test driver lives in it), fails readably,
        # and the undo runs.
        assert op["state"] == "failed", op
        assert "missing" in op["error"], op
        done = CREATE_STEPS.index(step)
        table = step_table(op)
        assert table[:done] == [(name, "succeeded") for name in CREATE_STEPS[:done]]
        failed = [name for name, state in table if state == "failed"]
        assert len(failed) == 1 and failed[0] in CREATE_STEPS[done:], table
        assert table[-len(COMPENSATION_STEPS) :] == [
            (name, "succeeded") for name in COMPENSATION_STEPS
        ]
        assert got["state"] == "failed" and got["error"] == op["error"]
        outcome = ["operation.failed", "workspace.failed"]

    trail = await audit_trail(database_url, ws["id"])
    assert [e.action for e in trail] == [
        "operation.pending",
        "workspace.requested",
        "operation.running",
        "operation.running",
        *outcome,
    ]
    assert all(e.operation_id == op_id for e in trail)
    assert [e.actor for e in trail] == ["admin", "admin"] + ["system"] * 4
    # Each claim names its worker: the first by the killed process, the second by its successor.
    assert trail[2].reason.startswith("attempt 1 by ") and f"-{first.pid}-" in trail[2].reason
    assert trail[3].reason.startswith("attempt 2 by ") and f"-{second.pid}-" in trail[3].reason
    assert await second.terminate() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the drain is engine-blind
async def test_sigterm_drains_and_exits_zero_leaving_nothing_half_done(
    database_url: str, tmp_path: Path, serves: ServeGroup
) -> None:
    first = await serves.start(serve_settings(database_url, tmp_path))
    created = await asyncio.gather(*(create_workspace(first, f"drain-{i}") for i in range(10)))
    started = time.monotonic()
    code = await first.terminate(timeout=DRAIN_SECONDS + 10)
    took = time.monotonic() - started
    assert code == 0, first.log_text()
    assert took < DRAIN_SECONDS, f"drain took {took:.1f} s"
    # Whatever the drain did not finish was handed back (no lease left), not abandoned.
    rows = await query(database_url, sa.select(operations))
    assert all(
        row.worker is None and row.lease_until is None for row in rows if row.state != "pending"
    )
    second = await serves.start(serve_settings(database_url, tmp_path))
    for _ws, op_id in created:
        op = await wait_operation(second.client, op_id, timeout=LEASE_SECONDS + 15)
        assert op["state"] == "succeeded", op
        assert op["attempts"] <= 2
    assert await second.terminate() == 0


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_serves_on_one_database_never_run_an_operation_twice(
    database_url: str, tmp_path: Path, serves: ServeGroup
) -> None:
    # One after the other: starting together is the subject of the tests below.
    a = await serves.start(serve_settings(database_url, tmp_path / "a"))
    b = await serves.start(serve_settings(database_url, tmp_path / "b"))
    created = await asyncio.gather(
        *(create_workspace((a, b)[i % 2], f"pair-{i}") for i in range(20))
    )
    ops = await asyncio.gather(*(wait_operation(a.client, op_id) for _ws, op_id in created))

    assert [op["state"] for op in ops] == ["succeeded"] * 20, ops
    assert [op["attempts"] for op in ops] == [1] * 20
    for op in ops:
        assert step_table(op) == [(name, "succeeded") for name in CREATE_STEPS]
    claims = await query(
        database_url,
        sa.select(audit_events.c.operation_id, audit_events.c.reason).where(
            audit_events.c.action == "operation.running"
        ),
    )
    assert len(claims) == 20
    assert sorted(c.operation_id for c in claims) == sorted(op_id for _ws, op_id in created)
    assert await a.terminate() == 0
    assert await b.terminate() == 0


async def test_serves_starting_together_on_one_database_do_not_trip_over_each_other(
    database_url: str, tmp_path: Path
) -> None:
    # What each `serve` does at start-up (migrate, write the catalog, adopt the admin token),
    # twice at once in one event loop, so the two transactions interleave on every round.
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, admin_token=ADMIN_SECRET
    )

    async def start_up() -> None:
        async with main.built(settings) as system:
            await main.ensure_admin(system)

    # Each round collides with roughly even odds; twenty make a miss vanishingly rare.
    for _round in range(20):
        outcomes = await asyncio.gather(start_up(), start_up(), return_exceptions=True)
        failed = [error for error in outcomes if isinstance(error, BaseException)]
        assert not failed, f"a start-up failed: {failed[0]!r}"


async def test_two_serves_adopting_the_same_admin_token_at_once_agree_on_it(
    database_url: str, tmp_path: Path
) -> None:
    # Two processes started with the same PROVISIONER_ADMIN_TOKEN on one database.
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    async with main.built(settings) as one, main.built(settings) as other:
        for round_ in range(3):
            secret = f"prov_crash-adopt-{round_}-" + "q" * 24
            first, second = await asyncio.gather(
                one.tokens.adopt(SYSTEM_ACTOR, secret, Role.ADMIN, "admin"),
                other.tokens.adopt(SYSTEM_ACTOR, secret, Role.ADMIN, "admin"),
            )
            assert first.id == second.id
