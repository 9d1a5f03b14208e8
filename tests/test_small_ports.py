"""Use cases against a fake store of a few dicts: each declares only the rows it touches."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from provisioner.errors import InvalidInput, NotFound, Unauthenticated
from provisioner.keys import KeyTx, SshKeys
from provisioner.models import Actor, ApiToken, AuditEvent, Role, SshKey
from provisioner.ports import Database
from provisioner.tokens import Tokens, TokenTx

ADMIN = Actor(name="alice", role=Role.ADMIN, source="api")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bob@laptop"


@dataclass
class Rows:
    """Everything the fake store holds: tokens by secret hash, keys by owner, the audit trail."""

    tokens: dict[str, ApiToken] = field(default_factory=dict)
    keys: dict[str, list[SshKey]] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)


class DictTx:
    """Token, SSH key and audit rows over `Rows`; the lock is moot in one task."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    async def lock(self, name: str) -> None:
        pass

    async def add_audit(self, event: AuditEvent) -> None:
        self.rows.audit.append(replace(event, id=len(self.rows.audit) + 1))

    async def list_audit(
        self,
        *,
        target: str | None,
        actor: str | None,
        after: int | None,
        limit: int,
        action: str | None = None,
    ) -> list[AuditEvent]:
        return [e for e in self.rows.audit if (e.id or 0) > (after or 0)][:limit]

    async def insert_token(self, token: ApiToken, secret_hash: str) -> None:
        self.rows.tokens[secret_hash] = token

    async def token_by_hash(self, secret_hash: str) -> ApiToken | None:
        return self.rows.tokens.get(secret_hash)

    async def touch_token(self, token_id: str, now: datetime) -> None:
        digest = self._digest(token_id)
        if digest is not None:
            self.rows.tokens[digest] = replace(self.rows.tokens[digest], last_used_at=now)

    async def list_tokens(self, *, after: str | None, limit: int) -> list[ApiToken]:
        found = sorted(self.rows.tokens.values(), key=lambda t: t.id)
        return [t for t in found if after is None or t.id > after][:limit]

    async def revoke_token(self, token_id: str, now: datetime) -> ApiToken | None:
        digest = self._digest(token_id)
        if digest is None:
            return None
        if self.rows.tokens[digest].revoked_at is None:
            self.rows.tokens[digest] = replace(self.rows.tokens[digest], revoked_at=now)
        return self.rows.tokens[digest]

    async def count_tokens(self) -> int:
        return len(self.rows.tokens)

    async def add_ssh_key(self, key: SshKey) -> bool:
        owned = self.rows.keys.setdefault(key.owner, [])
        if any(k.fingerprint == key.fingerprint for k in owned):
            return False
        owned.append(key)
        return True

    async def ssh_keys(self, owner: str) -> list[SshKey]:
        return list(self.rows.keys.get(owner, []))

    async def delete_ssh_key(self, owner: str, fingerprint: str) -> bool:
        owned = self.rows.keys.get(owner, [])
        kept = [k for k in owned if k.fingerprint != fingerprint]
        self.rows.keys[owner] = kept
        return len(kept) < len(owned)

    def _digest(self, token_id: str) -> str | None:
        """The secret hash the token with this id is stored under."""
        return next((h for h, t in self.rows.tokens.items() if t.id == token_id), None)


class DictStore:
    """A Database[TokenTx] and a Database[KeyTx]: a transaction rolls the dicts back on error."""

    def __init__(self) -> None:
        self.rows = Rows()

    def transaction(self) -> AbstractAsyncContextManager[DictTx]:
        return self._transaction()

    def read(self) -> AbstractAsyncContextManager[DictTx]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[DictTx]:
        before = copy.deepcopy(self.rows)
        try:
            yield DictTx(self.rows)
        except BaseException:
            self.rows = before
            raise


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store() -> DictStore:
    return DictStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tokens(store: Database[TokenTx], clock: Clock) -> Tokens:
    """Tokens over the fake (typed as the port, so mypy checks the fake satisfies it)."""
    return Tokens(store, clock)


def ssh_keys(store: Database[KeyTx], clock: Clock) -> SshKeys:
    """SshKeys over the fake."""
    return SshKeys(store, clock)


async def test_a_token_is_stored_as_a_hash_and_audited(store: DictStore, clock: Clock) -> None:
    token, secret = await tokens(store, clock).create(ADMIN, Role.DEVELOPER, "bob")
    assert secret.startswith("prov_")
    assert secret not in store.rows.tokens
    assert list(store.rows.tokens.values()) == [token]
    assert [(e.action, e.target, e.reason) for e in store.rows.audit] == [
        ("token.created", token.id, "developer for bob")
    ]


async def test_a_token_authenticates_until_revoked(store: DictStore, clock: Clock) -> None:
    use = tokens(store, clock)
    token, secret = await use.create(ADMIN, Role.OPERATOR, "carol")
    assert (await use.authenticate(secret)).id == token.id
    await use.revoke(ADMIN, token.id)
    clock.now += timedelta(seconds=1)
    assert (await use.revoke(ADMIN, token.id)).revoked_at == clock.now - timedelta(seconds=1)
    with pytest.raises(Unauthenticated):
        await use.authenticate(secret)
    assert [e.action for e in store.rows.audit] == ["token.created", "token.revoked"]
    with pytest.raises(NotFound):
        await use.revoke(ADMIN, "tok_nope")


async def test_last_use_is_written_at_most_once_a_minute(store: DictStore, clock: Clock) -> None:
    use = tokens(store, clock)
    token, secret = await use.create(ADMIN, Role.DEVELOPER, "bob")
    await use.authenticate(secret)
    first = clock.now
    clock.now += timedelta(seconds=30)
    await use.authenticate(secret)
    assert store.rows.tokens[next(iter(store.rows.tokens))].last_used_at == first
    clock.now += timedelta(minutes=2)
    await use.authenticate(secret)
    assert store.rows.tokens[next(iter(store.rows.tokens))].last_used_at == clock.now
    assert token.last_used_at is None


async def test_an_expired_token_is_refused(store: DictStore, clock: Clock) -> None:
    use = tokens(store, clock)
    _, secret = await use.create(ADMIN, Role.DEVELOPER, "bob", timedelta(hours=1))
    clock.now += timedelta(hours=1)
    with pytest.raises(Unauthenticated, match="expired"):
        await use.authenticate(secret)


async def test_the_first_admin_is_minted_once(store: DictStore, clock: Clock) -> None:
    use = tokens(store, clock)
    secret = await use.first_admin(ADMIN)
    assert secret is not None
    assert await use.first_admin(ADMIN) is None
    assert (await use.authenticate(secret)).role == Role.ADMIN


async def test_an_invalid_owner_leaves_no_row(store: DictStore, clock: Clock) -> None:
    with pytest.raises(InvalidInput):
        await tokens(store, clock).create(ADMIN, Role.DEVELOPER, "no spaces")
    assert store.rows == Rows()


async def test_a_key_is_added_once_and_removed_by_id(store: DictStore, clock: Clock) -> None:
    keys = ssh_keys(store, clock)
    key, added = await keys.add(ADMIN, "bob", KEY)
    assert added
    assert not (await keys.add(ADMIN, "bob", KEY))[1]
    assert await keys.list("bob") == [key]
    assert await keys.remove(ADMIN, "bob", key.id) == key
    with pytest.raises(NotFound):
        await keys.remove(ADMIN, "bob", key.id)
    assert [e.action for e in store.rows.audit] == ["ssh_key.added", "ssh_key.removed"]


async def test_a_private_key_is_refused_and_not_stored(store: DictStore, clock: Clock) -> None:
    pasted = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    with pytest.raises(InvalidInput) as refused:
        await ssh_keys(store, clock).add(ADMIN, "bob", pasted)
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in refused.value.message
    assert store.rows == Rows()
