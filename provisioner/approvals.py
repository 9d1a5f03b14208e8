"""Approvals: gated requests wait for one operator's decision, made exactly once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from provisioner.audit import record
from provisioner.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from provisioner.ids import new_id
from provisioner.models import (
    Actor,
    Approval,
    ApprovalState,
    Operation,
    OperationState,
    Page,
    WorkspaceState,
)
from provisioner.ports import (
    ApprovalRows,
    AuditRows,
    Database,
    OperationRows,
    WorkspaceRows,
)

Clock = Callable[[], datetime]
AWAITING = frozenset({OperationState.AWAITING_APPROVAL})
MAX_PAGE = 200


class ApprovalTx(ApprovalRows, OperationRows, WorkspaceRows, AuditRows, Protocol):
    """What a decision touches: the approval, its operation and workspace, the audit trail."""


async def request_approval(tx: ApprovalTx, actor: Actor, op: Operation, now: datetime) -> Approval:
    """Open an approval for an operation that waits for one."""
    approval = Approval(new_id("ap"), op.id, actor.name, ApprovalState.PENDING, now)
    await tx.insert_approval(approval)
    await record(tx, now, actor, "approval.requested", op.workspace_id, operation_id=op.id)
    return approval


class Approvals:
    """Listing approvals and deciding on them."""

    def __init__(
        self, store: Database[ApprovalTx], clock: Clock, wake_workers: Callable[[], None]
    ) -> None:
        self._store, self._clock, self._wake = store, clock, wake_workers

    async def list(
        self, *, state: ApprovalState | None = None, cursor: str | None = None, limit: int = 50
    ) -> Page[Approval]:
        """A page of approvals in creation order."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        async with self._store.read() as tx:
            items = await tx.list_approvals(state=state, after=cursor, limit=limit + 1)
        return Page.from_overfetch(items, limit, lambda item: item.id)

    async def get(self, approval_id: str) -> Approval:
        """One approval."""
        async with self._store.read() as tx:
            approval = await tx.get_approval(approval_id)
        if approval is None:
            raise NotFound(f"no approval {approval_id}")
        return approval

    async def decide(
        self, actor: Actor, approval_id: str, *, approve: bool, reason: str | None = None
    ) -> Approval:
        """Approve or deny; a second decision, or one on your own request, is refused."""
        now = self._clock()
        state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
        async with self._store.transaction() as tx:
            approval = await tx.get_approval(approval_id)
            if approval is None:
                raise NotFound(f"no approval {approval_id}")
            if approval.requested_by == actor.name:
                raise PermissionDenied(
                    "you cannot decide on your own request; ask another operator"
                )
            if not await tx.decide_approval(approval_id, state, actor.name, reason, now):
                # Read again: the first read may predate the decision that just won.
                current = await tx.get_approval(approval_id)
                raise Conflict(_already(current or approval), code="already_decided")
            op = await tx.get_operation(approval.operation_id)
            assert op is not None
            if approve:
                moved = await tx.set_operation_state(
                    op.id, OperationState.PENDING, expect=AWAITING, now=now
                )
                ws_state = WorkspaceState.PROVISIONING
            else:
                why = f"denied by {actor.name}" + (f": {reason}" if reason else "")
                moved = await tx.set_operation_state(
                    op.id, OperationState.CANCELLED, expect=AWAITING, now=now, error=why
                )
                ws_state = WorkspaceState.DENIED
            if not moved:
                raise Conflict("the request was withdrawn before the decision", code="withdrawn")
            await tx.update_workspace(
                op.workspace_id,
                expect=frozenset({WorkspaceState.AWAITING_APPROVAL}),
                state=ws_state,
                updated_at=now,
            )
            await record(
                tx,
                now,
                actor,
                f"approval.{state.value}",
                op.workspace_id,
                operation_id=op.id,
                reason=reason,
            )
            decided = await tx.get_approval(approval_id)
        if approve:
            self._wake()
        assert decided is not None
        return decided


def _already(approval: Approval) -> str:
    """Why a second decision is refused."""
    if approval.state == ApprovalState.PENDING:
        return "another operator decided at the same moment"
    if approval.state == ApprovalState.WITHDRAWN or approval.decided_by is None:
        return "this request was withdrawn by the requester"
    return f"already {approval.state.value} by {approval.decided_by}"
