"""The operation rows seam of the store: operations, their steps and output lines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from provisioner.models import Claim, Operation, OperationState, OutputLine, Step


class OperationRows(Protocol):
    """Operation rows: queued, claimed under a lease, stepped, finished, cancelled."""

    async def insert_operation(self, operation: Operation) -> None:
        """Store a new operation."""
        ...

    async def get_operation(self, operation_id: str) -> Operation | None:
        """The operation with its steps."""
        ...

    async def cancel_requested(self, operation_id: str) -> bool:
        """Whether a cancel was asked for (False for an unknown operation)."""
        ...

    async def active_operation(self, workspace_id: str) -> Operation | None:
        """The workspace's operation that has not ended, if any."""
        ...

    async def claim_operations(
        self,
        *,
        worker: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        exclude_nodes: frozenset[str] = frozenset(),
    ) -> list[Claim]:
        """Lease up to `limit` pending or abandoned operations, none on `exclude_nodes`."""
        ...

    async def renew_lease(self, claim: Claim, lease_until: datetime) -> bool:
        """Extend the lease; False if the claim is no longer ours."""
        ...

    async def finish_operation(
        self, claim: Claim, state: OperationState, error: str | None, now: datetime
    ) -> bool:
        """Move a claimed operation to a final state; False if the claim is stale."""
        ...

    async def set_operation_state(
        self,
        operation_id: str,
        state: OperationState,
        *,
        expect: frozenset[OperationState],
        now: datetime,
        error: str | None = None,
    ) -> bool:
        """Compare-and-set an operation's state outside any claim."""
        ...

    async def record_step(self, claim: Claim, step: Step) -> bool:
        """Insert or update the step with this name; False if the claim is stale."""
        ...

    async def request_cancel(self, operation_id: str, now: datetime) -> bool:
        """Flag a live operation for cancellation; False if it already ended."""
        ...

    async def count_operations_by_state(self) -> dict[OperationState, int]:
        """How many operations are in each state."""
        ...


class OutputRows(Protocol):
    """The lines an operation's steps printed, appended and paged."""

    async def append_output(
        self, operation_id: str, step: str, lines: Sequence[str], at: datetime
    ) -> None:
        """Append lines printed by `step` of the operation."""
        ...

    async def operation_output(
        self, operation_id: str, *, after: int, limit: int
    ) -> list[OutputLine]:
        """The operation's output lines after the id `after`, oldest first."""
        ...
