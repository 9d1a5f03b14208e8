"""Writing the audit trail: every state change records who, what, when and why."""

from __future__ import annotations

from datetime import datetime

from provisioner.models import Actor, AuditEvent
from provisioner.ports import Transaction


async def record(
    tx: Transaction,
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
