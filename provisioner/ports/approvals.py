"""The approval rows seam of the store."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from provisioner.models import Approval, ApprovalState


class ApprovalRows(Protocol):
    """Approval rows: opened, listed, decided once, withdrawn."""

    async def insert_approval(self, approval: Approval) -> None:
        """Store a new pending approval."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None:
        """The approval with this id."""
        ...

    async def list_approvals(
        self, *, state: ApprovalState | None, after: str | None, limit: int
    ) -> list[Approval]:
        """Approvals in creation order, after the id `after`."""
        ...

    async def decide_approval(
        self, approval_id: str, state: ApprovalState, by: str, reason: str | None, now: datetime
    ) -> bool:
        """Record a decision if none was made yet; False if one already was."""
        ...

    async def withdraw_approvals(self, operation_id: str, now: datetime) -> None:
        """Close the pending approvals of an operation that no longer waits."""
        ...
