"""Tokens, the audit trail, idempotency keys and the configured catalog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.node_queries import node_values
from provisioner.adapters.store.tables import (
    api_tokens,
    audit_events,
    idempotency_keys,
    images,
    nodes,
    plans,
)
from provisioner.errors import Conflict
from provisioner.models import ApiToken, AuditEvent, Image, Node, Plan, Role


def _to_token(row: sa.Row[Any]) -> ApiToken:
    """Map a token row to the domain record."""
    return ApiToken(
        id=row.id,
        role=Role(row.role),
        owner=row.owner,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _to_audit(row: sa.Row[Any]) -> AuditEvent:
    """Map an audit row to the domain record."""
    return AuditEvent(
        id=row.id,
        at=row.at,
        actor=row.actor,
        source=row.source,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        reason=row.reason,
        operation_id=row.operation_id,
    )


def _with_boot_files(image: Image, stored: Image | None) -> dict[str, Any]:
    """A configured image's row, its unset kernel boot fields taken from an earlier import."""
    values = asdict(image)
    if stored is not None and image.kernel is None:
        values.update(kernel=stored.kernel, initrd=stored.initrd, cmdline=stored.cmdline)
    return values


class AccessQueries(QueriesBase):
    """Queries on tokens, audit events, idempotency keys and the catalog."""

    async def add_audit(self, event: AuditEvent) -> None:
        """Append an audit event."""
        assert event.at is not None, "audit events carry their time"
        values = asdict(event)
        values.pop("id")
        await self.conn.execute(audit_events.insert().values(**values))

    async def list_audit(
        self,
        *,
        target: str | None,
        actor: str | None,
        after: int | None,
        limit: int,
        action: str | None = None,
    ) -> list[AuditEvent]:
        """Audit events in order, after the id `after`."""
        query = audit_events.select().order_by(audit_events.c.id).limit(limit)
        if target is not None:
            query = query.where(audit_events.c.target == target)
        if actor is not None:
            query = query.where(audit_events.c.actor == actor)
        if action is not None:
            query = query.where(audit_events.c.action == action)
        if after is not None:
            query = query.where(audit_events.c.id > after)
        return [_to_audit(row) for row in await self.conn.execute(query)]

    async def insert_token(self, token: ApiToken, secret_hash: str) -> None:
        """Store a token under the hash of its secret."""
        values = asdict(token)
        values["role"] = token.role.value
        await self.conn.execute(api_tokens.insert().values(secret_hash=secret_hash, **values))

    async def token_by_hash(self, secret_hash: str) -> ApiToken | None:
        """The token whose secret has this hash."""
        row = (
            await self.conn.execute(
                api_tokens.select().where(api_tokens.c.secret_hash == secret_hash)
            )
        ).first()
        return None if row is None else _to_token(row)

    async def touch_token(self, token_id: str, now: datetime) -> None:
        """Record the token's last use."""
        await self.conn.execute(
            api_tokens.update().where(api_tokens.c.id == token_id).values(last_used_at=now)
        )

    async def list_tokens(self, *, after: str | None, limit: int) -> list[ApiToken]:
        """Tokens in id (creation) order."""
        query = api_tokens.select().order_by(api_tokens.c.id).limit(limit)
        if after is not None:
            query = query.where(api_tokens.c.id > after)
        return [_to_token(row) for row in await self.conn.execute(query)]

    async def revoke_token(self, token_id: str, now: datetime) -> ApiToken | None:
        """Set revoked_at unless already set; the token as it now is."""
        await self.conn.execute(
            api_tokens.update()
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        query = api_tokens.select().where(api_tokens.c.id == token_id)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _to_token(row)

    async def count_tokens(self) -> int:
        """How many tokens exist."""
        return int(
            (await self.conn.execute(sa.select(sa.func.count(api_tokens.c.id)))).scalar_one()
        )

    async def get_idempotent(self, scope: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """The stored request hash and answer for this key."""
        row = (
            await self.conn.execute(
                idempotency_keys.select().where(
                    idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
                )
            )
        ).first()
        return None if row is None else (row.request_hash, dict(row.answer))

    async def put_idempotent(
        self, scope: str, key: str, request_hash: str, answer: Mapping[str, Any], now: datetime
    ) -> None:
        """Remember the answer given for this key; Conflict if a twin request got there first."""
        try:
            await self.conn.execute(
                idempotency_keys.insert().values(
                    scope=scope,
                    key=key,
                    request_hash=request_hash,
                    answer=dict(answer),
                    created_at=now,
                )
            )
        except exc.IntegrityError:
            raise Conflict(
                "a request with this Idempotency-Key is still being processed; retry shortly",
                code="idempotency_key_in_use",
            ) from None

    async def sync_catalog(
        self, node_list: Sequence[Node], plan_list: Sequence[Plan], image_list: Sequence[Image]
    ) -> None:
        """Replace the stored catalog with the configured one; added nodes and images stay."""
        # Serialised: processes starting together would otherwise insert the same rows.
        await self.lock("catalog")
        configured = [n.name for n in node_list]
        await self.conn.execute(
            nodes.delete().where(sa.or_(nodes.c.source == "config", nodes.c.name.in_(configured)))
        )
        if node_list:
            await self.conn.execute(nodes.insert(), [node_values(n, "config") for n in node_list])
        await self.conn.execute(plans.delete())
        if plan_list:
            await self.conn.execute(plans.insert(), [asdict(p) for p in plan_list])
        # An import may have given a configured image its kernel boot files: keep those.
        stored = {i.name: i for i in await self.list_images()}
        rows = [_with_boot_files(i, stored.get(i.name)) for i in image_list]
        names = [i.name for i in image_list]
        await self.conn.execute(
            images.delete().where(sa.or_(images.c.source == "config", images.c.name.in_(names)))
        )
        if rows:
            await self.conn.execute(images.insert(), rows)

    async def save_image(self, image: Image) -> None:
        """Store an image registered by an import (replacing an earlier import of it)."""
        await self.conn.execute(images.delete().where(images.c.name == image.name))
        await self.conn.execute(images.insert().values(**asdict(image), source="import"))

    async def get_image(self, name: str) -> Image | None:
        """The stored image called `name`, configured or imported."""
        row = (await self.conn.execute(images.select().where(images.c.name == name))).first()
        if row is None:
            return None
        return Image(row.name, row.base_volume, row.os, row.kernel, row.initrd, row.cmdline)

    async def list_images(self) -> list[Image]:
        """Every stored image, configured or imported."""
        rows = await self.conn.execute(images.select().order_by(images.c.name))
        return [Image(r.name, r.base_volume, r.os, r.kernel, r.initrd, r.cmdline) for r in rows]
