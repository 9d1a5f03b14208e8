"""Operation output rows: appended by long steps, read back in order (for logs that follow)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import operation_output, operations
from provisioner.models import OutputLine


class OutputQueries(QueriesBase):
    """Queries on the operation_output table."""

    async def append_output(
        self, operation_id: str, step: str, lines: Sequence[str], at: datetime
    ) -> None:
        """Append lines printed by `step` of the operation, which counts as a change of it."""
        if lines:
            # Chat messages that mirror the operation sync when it changed: output is a change.
            await self.conn.execute(
                operations.update().where(operations.c.id == operation_id).values(updated_at=at)
            )
            rows = [
                {"operation_id": operation_id, "step": step, "at": at, "line": line}
                for line in lines
            ]
            await self.conn.execute(operation_output.insert(), rows)

    async def operation_output(
        self, operation_id: str, *, after: int, limit: int
    ) -> list[OutputLine]:
        """The operation's output lines after the id `after`, oldest first."""
        query = (
            sa.select(
                operation_output.c.id,
                operation_output.c.step,
                operation_output.c.at,
                operation_output.c.line,
            )
            .where(operation_output.c.operation_id == operation_id, operation_output.c.id > after)
            .order_by(operation_output.c.id)
            .limit(limit)
        )
        return [OutputLine(*row) for row in await self.conn.execute(query)]
