"""The idempotency-key seam of the store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol


class IdempotencyRows(Protocol):
    """Answers remembered per idempotency key."""

    async def get_idempotent(self, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """The request hash and answer stored for this key."""
        ...

    async def put_idempotent(
        self, scope: str, key: str, request_hash: str, answer: Mapping[str, Any], now: datetime
    ) -> None:
        """Remember the answer given for this key."""
        ...
