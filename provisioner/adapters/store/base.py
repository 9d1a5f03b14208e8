"""Shared base of the query mixins: the connection they run on."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


class QueriesBase:
    """Holds the connection of the surrounding transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock(self, name: str) -> None:
        """Hold a lock named `name` until the transaction ends.

        SQLite needs nothing: BEGIN IMMEDIATE already admits one writer at a time.
        """
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name}
            )
