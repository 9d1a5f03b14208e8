"""Operation rows: leased claims with fencing, recorded steps, compare-and-set transitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import operation_steps, operations, workspaces
from provisioner.models import (
    Claim,
    Operation,
    OperationKind,
    OperationState,
    Step,
    StepState,
)

PENDING = OperationState.PENDING.value
RUNNING = OperationState.RUNNING.value
LIVE = [PENDING, RUNNING, OperationState.AWAITING_APPROVAL.value]


def _to_step(row: sa.Row[Any]) -> Step:
    """Map a step row to the domain record."""
    return Step(
        name=row.name,
        state=StepState(row.state),
        started_at=row.started_at,
        finished_at=row.finished_at,
        detail=row.detail,
    )


def _to_operation(row: sa.Row[Any], steps: tuple[Step, ...]) -> Operation:
    """Map an operation row and its steps to the domain record."""
    return Operation(
        id=row.id,
        kind=OperationKind(row.kind),
        state=OperationState(row.state),
        workspace_id=row.workspace_id,
        requested_by=row.requested_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        params=dict(row.params or {}),
        steps=steps,
        error=row.error,
        attempts=row.attempts,
        fence=row.fence,
        cancel_requested=row.cancel_requested,
    )


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    """Pending, or running under a lease that has lapsed (its worker died or hung)."""
    return sa.or_(
        operations.c.state == PENDING,
        sa.and_(operations.c.state == RUNNING, operations.c.lease_until < now),
    )


def _fenced(claim: Claim) -> sa.ColumnElement[bool]:
    """Rows still owned by this claim: a newer claim bumps the fence and locks us out."""
    return sa.and_(
        operations.c.id == claim.operation.id,
        operations.c.fence == claim.fence,
        operations.c.worker == claim.worker,
        operations.c.state == RUNNING,
    )


class OperationQueries(QueriesBase):
    """Queries on operations and their steps."""

    async def insert_operation(self, operation: Operation) -> None:
        """Store a new operation."""
        await self.conn.execute(
            operations.insert().values(
                id=operation.id,
                kind=operation.kind.value,
                state=operation.state.value,
                workspace_id=operation.workspace_id,
                requested_by=operation.requested_by,
                params=operation.params,
                error=operation.error,
                attempts=0,
                fence=0,
                cancel_requested=False,
                created_at=operation.created_at,
                updated_at=operation.updated_at,
            )
        )

    async def get_operation(self, operation_id: str) -> Operation | None:
        """The operation with its steps in order, or None."""
        row = (
            await self.conn.execute(operations.select().where(operations.c.id == operation_id))
        ).first()
        if row is None:
            return None
        step_rows = await self.conn.execute(
            operation_steps.select()
            .where(operation_steps.c.operation_id == operation_id)
            .order_by(operation_steps.c.seq)
        )
        return _to_operation(row, tuple(_to_step(s) for s in step_rows))

    async def active_operation(self, workspace_id: str) -> Operation | None:
        """The workspace's operation that has not ended, if any."""
        row = (
            await self.conn.execute(
                sa.select(operations.c.id)
                .where(operations.c.workspace_id == workspace_id)
                .where(operations.c.state.in_(LIVE))
                .limit(1)
            )
        ).first()
        return None if row is None else await self.get_operation(row.id)

    async def claim_operations(
        self,
        *,
        worker: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_nodes: frozenset[str] = frozenset(),
    ) -> list[Claim]:
        """Lease up to `limit` claimable operations, none on `exclude_nodes`; bumps fences."""
        candidates = (
            sa.select(operations.c.id, operations.c.fence)
            .where(_claimable(now))
            .order_by(operations.c.created_at)
            .limit(limit)
        )
        if exclude_nodes:
            on_excluded = sa.select(workspaces.c.id).where(
                workspaces.c.node.in_(sorted(exclude_nodes))
            )
            candidates = candidates.where(operations.c.workspace_id.not_in(on_excluded))
        if self.conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        claims = []
        for op_id, fence in (await self.conn.execute(candidates)).all():
            # The guard repeats the candidate test: on SQLite this compare-and-set is the lock.
            result = await self.conn.execute(
                operations.update()
                .where(operations.c.id == op_id, operations.c.fence == fence, _claimable(now))
                .values(
                    state=RUNNING,
                    worker=worker,
                    lease_until=lease_until,
                    fence=fence + 1,
                    attempts=operations.c.attempts + 1,
                    updated_at=now,
                )
            )
            if result.rowcount == 1:
                operation = await self.get_operation(op_id)
                assert operation is not None
                claims.append(Claim(operation, worker, fence + 1))
        return claims

    async def renew_lease(self, claim: Claim, lease_until: datetime) -> bool:
        """Extend the lease; False if another worker took the operation."""
        result = await self.conn.execute(
            operations.update().where(_fenced(claim)).values(lease_until=lease_until)
        )
        return result.rowcount == 1

    async def finish_operation(
        self, claim: Claim, state: OperationState, error: str | None, now: datetime
    ) -> bool:
        """End a claimed operation; False if the claim is stale."""
        result = await self.conn.execute(
            operations.update()
            .where(_fenced(claim))
            .values(state=state.value, error=error, worker=None, lease_until=None, updated_at=now)
        )
        return result.rowcount == 1

    async def set_operation_state(
        self,
        operation_id: str,
        state: OperationState,
        *,
        expect: frozenset[OperationState],
        now: datetime,
        error: str | None = None,
    ) -> bool:
        """Compare-and-set the state of an operation nobody holds."""
        result = await self.conn.execute(
            operations.update()
            .where(operations.c.id == operation_id)
            .where(operations.c.state.in_([s.value for s in expect]))
            .values(state=state.value, error=error, updated_at=now)
        )
        return result.rowcount == 1

    async def record_step(self, claim: Claim, step: Step) -> bool:
        """Insert or update the named step, only while the claim still holds.

        Two statements when the step exists (the fence, the update), three when it is new:
        every step of every operation comes through here twice.
        """
        still_ours = await self.conn.execute(
            operations.update().where(_fenced(claim)).values(updated_at=step.started_at)
        )
        if still_ours.rowcount != 1:
            return False
        op_id = claim.operation.id
        values = {
            "state": step.state.value,
            "detail": step.detail,
            "started_at": step.started_at,
            "finished_at": step.finished_at,
        }
        updated = await self.conn.execute(
            operation_steps.update()
            .where(operation_steps.c.operation_id == op_id, operation_steps.c.name == step.name)
            .values(**values)
        )
        if updated.rowcount == 0:
            next_seq = (
                sa.select(sa.func.coalesce(sa.func.max(operation_steps.c.seq), 0) + 1)
                .where(operation_steps.c.operation_id == op_id)
                .scalar_subquery()
            )
            await self.conn.execute(
                operation_steps.insert().values(
                    operation_id=op_id, seq=next_seq, name=step.name, **values
                )
            )
        return True

    async def cancel_requested(self, operation_id: str) -> bool:
        """Whether a cancel was asked for (False for an unknown operation)."""
        query = sa.select(operations.c.cancel_requested).where(operations.c.id == operation_id)
        return bool((await self.conn.execute(query)).scalar())

    async def request_cancel(self, operation_id: str, now: datetime) -> bool:
        """Flag a live operation for cancellation; False if it already ended."""
        result = await self.conn.execute(
            operations.update()
            .where(operations.c.id == operation_id, operations.c.state.in_(LIVE))
            .values(cancel_requested=True, updated_at=now)
        )
        return result.rowcount == 1

    async def count_operations_by_state(self) -> dict[OperationState, int]:
        """How many operations are in each state."""
        query = sa.select(operations.c.state, sa.func.count()).group_by(operations.c.state)
        return {OperationState(s): int(n) for s, n in await self.conn.execute(query)}
