"""Approval rows: pending requests and one compare-and-set decision each."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import approvals
from provisioner.models import Approval, ApprovalState


def _to_approval(row: sa.Row[Any]) -> Approval:
    """Map an approval row to the domain record."""
    return Approval(
        id=row.id,
        operation_id=row.operation_id,
        requested_by=row.requested_by,
        state=ApprovalState(row.state),
        created_at=row.created_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        reason=row.reason,
    )


class ApprovalQueries(QueriesBase):
    """Queries on the approvals table."""

    async def insert_approval(self, approval: Approval) -> None:
        """Store a new approval."""
        values = asdict(approval)
        values["state"] = approval.state.value
        await self.conn.execute(approvals.insert().values(**values))

    async def get_approval(self, approval_id: str) -> Approval | None:
        """The approval with this id."""
        row = (
            await self.conn.execute(approvals.select().where(approvals.c.id == approval_id))
        ).first()
        return None if row is None else _to_approval(row)

    async def list_approvals(
        self, *, state: ApprovalState | None, after: str | None, limit: int
    ) -> list[Approval]:
        """Approvals in id (creation) order."""
        query = approvals.select().order_by(approvals.c.id).limit(limit)
        if state is not None:
            query = query.where(approvals.c.state == state.value)
        if after is not None:
            query = query.where(approvals.c.id > after)
        return [_to_approval(row) for row in await self.conn.execute(query)]

    async def decide_approval(
        self, approval_id: str, state: ApprovalState, by: str, reason: str | None, now: datetime
    ) -> bool:
        """The decision sticks only if the approval is still pending: one decision, ever."""
        result = await self.conn.execute(
            approvals.update()
            .where(approvals.c.id == approval_id, approvals.c.state == ApprovalState.PENDING.value)
            .values(state=state.value, decided_by=by, decided_at=now, reason=reason)
        )
        return result.rowcount == 1

    async def withdraw_approvals(self, operation_id: str, now: datetime) -> None:
        """Close the operation's pending approvals: the request went away."""
        await self.conn.execute(
            approvals.update()
            .where(
                approvals.c.operation_id == operation_id,
                approvals.c.state == ApprovalState.PENDING.value,
            )
            .values(state=ApprovalState.WITHDRAWN.value, decided_at=now)
        )
