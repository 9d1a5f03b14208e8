"""API tokens: created once and shown once, stored as hashes, checked on every request."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from provisioner.audit import record
from provisioner.errors import InvalidInput, NotFound, Unauthenticated
from provisioner.ids import new_id
from provisioner.models import Actor, ApiToken, Page, Role
from provisioner.ports import AuditRows, Database, Locks, TokenRows
from provisioner.requests import OWNER_RE

Clock = Callable[[], datetime]
PREFIX = "prov_"
DURATION_RE = re.compile(r"^([0-9]{1,5})([hdw])$")
UNITS = {"h": 1, "d": 24, "w": 24 * 7}
# Writing last-use on every request would turn each read into a write; a minute is precise enough.
TOUCH_EVERY = timedelta(minutes=1)
MAX_PAGE = 200
# Checking a token costs a database read per request; a revocation made in another process
# takes effect within this many seconds (in this process, at once).
CACHE_SECONDS = 5.0
MAX_CACHED = 10_000


class TokenTx(TokenRows, AuditRows, Locks, Protocol):
    """What token use cases touch: token rows, the audit trail, the `tokens` lock."""


def hash_secret(secret: str) -> str:
    """The stored form of a token secret (SHA-256: secrets are random, not passwords)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """'12h', '30d' or '2w' as a timedelta."""
    match = DURATION_RE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(f"invalid duration {text!r}; write it like 12h, 30d or 2w")
    return timedelta(hours=int(match.group(1)) * UNITS[match.group(2)])


class Tokens:
    """Creating and checking API tokens."""

    def __init__(self, store: Database[TokenTx], clock: Clock) -> None:
        self._store, self._clock = store, clock
        self._cache: dict[str, tuple[float, ApiToken]] = {}

    async def create(
        self, actor: Actor, role: Role, owner: str, expires_in: timedelta | None = None
    ) -> tuple[ApiToken, str]:
        """A new token and its secret; the secret is not kept and cannot be shown again."""
        secret = _new_secret()
        return await self.adopt(actor, secret, role, owner, expires_in), secret

    async def adopt(
        self,
        actor: Actor,
        secret: str,
        role: Role,
        owner: str,
        expires_in: timedelta | None = None,
    ) -> ApiToken:
        """Make `secret` a valid token (no-op if it already is one)."""
        if not OWNER_RE.fullmatch(owner):
            raise InvalidInput("owner may hold letters, digits and . _ @ + - (at most 255)")
        now = self._clock()
        async with self._store.transaction() as tx:
            # Serialised: processes starting together may adopt the same configured secret.
            await tx.lock("tokens")
            existing = await tx.token_by_hash(hash_secret(secret))
            if existing is not None:
                return existing
            token = ApiToken(
                id=new_id("tok"),
                role=role,
                owner=owner,
                created_at=now,
                expires_at=now + expires_in if expires_in else None,
            )
            await tx.insert_token(token, hash_secret(secret))
            await record(
                tx, now, actor, "token.created", token.id, reason=f"{role.value} for {owner}"
            )
        return token

    async def authenticate(self, secret: str) -> ApiToken:
        """The live token behind `secret`, or Unauthenticated."""
        now = self._clock()
        digest = hash_secret(secret)
        token = await self._lookup(digest)
        if token is None or token.revoked_at is not None:
            raise Unauthenticated("the token is not valid; ask an admin for a new one")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthenticated("the token has expired; ask an admin for a new one")
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            async with self._store.transaction() as tx:
                await tx.touch_token(token.id, now)
            self._cache[digest] = (time.monotonic(), replace(token, last_used_at=now))
        return token

    async def _lookup(self, digest: str) -> ApiToken | None:
        """The token with this hash, from a cache of a few seconds or the store."""
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        async with self._store.read() as tx:
            token = await tx.token_by_hash(digest)
        if token is not None:
            if len(self._cache) > MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (time.monotonic(), token)
        return token

    async def list(self, *, cursor: str | None = None, limit: int = 50) -> Page[ApiToken]:
        """A page of tokens (never their secrets)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        async with self._store.read() as tx:
            items = await tx.list_tokens(after=cursor, limit=limit + 1)
        return Page.from_overfetch(items, limit, lambda token: token.id)

    async def revoke(self, actor: Actor, token_id: str) -> ApiToken:
        """Revoke a token at once; revoking twice is harmless."""
        now = self._clock()
        async with self._store.transaction() as tx:
            token = await tx.revoke_token(token_id, now)
            if token is None:
                raise NotFound(f"no token {token_id}")
            if token.revoked_at == now:
                await record(tx, now, actor, "token.revoked", token.id)
        # This process forgets at once; others within CACHE_SECONDS.
        self._cache.clear()
        return token

    async def first_admin(self, actor: Actor) -> str | None:
        """Create an admin token if none exists at all; its secret, or None."""
        now = self._clock()
        secret = _new_secret()
        async with self._store.transaction() as tx:
            # Under the lock, so two first starts cannot both mint an admin token.
            await tx.lock("tokens")
            if await tx.count_tokens() > 0:
                return None
            token = ApiToken(id=new_id("tok"), role=Role.ADMIN, owner="admin", created_at=now)
            await tx.insert_token(token, hash_secret(secret))
            await record(tx, now, actor, "token.created", token.id, reason="first admin")
        return secret


def _new_secret() -> str:
    """A fresh token secret: 256 random bits, recognisable by its prefix."""
    return PREFIX + secrets.token_urlsafe(32)
