"""The audit trail: every state change records who, what, when and why; operators read it."""

from __future__ import annotations

from datetime import datetime

from provisioner.errors import InvalidInput
from provisioner.models import Actor, AuditEvent, Page
from provisioner.ports import AuditRows, Database

MAX_PAGE = 500


async def record(
    tx: AuditRows,
    at: datetime,
    actor: Actor,
    action: str,
    target: str,
    *,
    operation_id: str | None = None,
    reason: str | None = None,
    outcome: str = "ok",
) -> None:
    """Append one audit event inside the transaction that makes the change."""
    await tx.add_audit(
        AuditEvent(
            actor=actor.name,
            source=actor.source,
            action=action,
            target=target,
            outcome=outcome,
            reason=reason,
            operation_id=operation_id,
            at=at,
        )
    )


class AuditTrail:
    """Reading the audit trail, filtered and paged."""

    def __init__(self, store: Database[AuditRows]) -> None:
        self._store = store

    async def list(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[AuditEvent]:
        """Events oldest first; `cursor` is the id of the last event already seen."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 10):
            raise InvalidInput("cursor must be the next_cursor of an earlier page")
        after = int(cursor) if cursor is not None else None
        async with self._store.read() as tx:
            items = await tx.list_audit(
                target=target, actor=actor, action=action, after=after, limit=limit + 1
            )
        return Page.from_overfetch(items, limit, lambda event: str(event.id))
