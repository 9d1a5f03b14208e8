"""The API token rows seam of the store."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from provisioner.models import ApiToken


class TokenRows(Protocol):
    """API tokens, stored by the hash of their secret."""

    async def insert_token(self, token: ApiToken, secret_hash: str) -> None:
        """Store a token by the hash of its secret."""
        ...

    async def token_by_hash(self, secret_hash: str) -> ApiToken | None:
        """The token whose secret hashes to this value."""
        ...

    async def touch_token(self, token_id: str, now: datetime) -> None:
        """Record that the token was just used."""
        ...

    async def list_tokens(self, *, after: str | None, limit: int) -> list[ApiToken]:
        """Tokens in creation order, after the id `after`."""
        ...

    async def revoke_token(self, token_id: str, now: datetime) -> ApiToken | None:
        """Mark a token revoked (once); the token, or None if there is no such token."""
        ...

    async def count_tokens(self) -> int:
        """How many tokens exist, revoked ones included."""
        ...
