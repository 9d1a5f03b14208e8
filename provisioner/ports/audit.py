"""The audit trail seam of the store."""

from __future__ import annotations

from typing import Protocol

from provisioner.models import AuditEvent


class AuditRows(Protocol):
    """The audit trail: appended inside the change's transaction, read in pages."""

    async def add_audit(self, event: AuditEvent) -> None:
        """Append an audit event."""
        ...

    async def list_audit(
        self,
        *,
        target: str | None,
        actor: str | None,
        after: int | None,
        limit: int,
        action: str | None = None,
    ) -> list[AuditEvent]:
        """Audit events, oldest first, after the id `after`."""
        ...
