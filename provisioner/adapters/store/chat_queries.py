"""Chat message records (kept in sync with their subjects), SSH keys and TTL reminders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import (
    approvals,
    chat_messages,
    operations,
    ssh_keys,
    workspaces,
)
from provisioner.adapters.store.workspace_queries import SELECT_WORKSPACES, to_workspace
from provisioner.models import ChatMessage, SshKey, Workspace, WorkspaceState

REMINDABLE = [WorkspaceState.RUNNING.value, WorkspaceState.STOPPED.value]


def _to_message(row: sa.Row[Any]) -> ChatMessage:
    """Map a chat message row to the domain record."""
    return ChatMessage(
        id=row.id,
        subject_kind=row.subject_kind,
        subject_id=row.subject_id,
        channel=row.channel,
        ts=row.ts,
        chat_user=row.chat_user,
        posted_steps=tuple(row.posted_steps or ()),
        synced_at=row.synced_at,
        done=row.done,
    )


class ChatQueries(QueriesBase):
    """Queries on chat messages, SSH keys and reminder marks."""

    async def add_chat_message(
        self, kind: str, subject_id: str, *, channel: str, ts: str, chat_user: str, now: datetime
    ) -> bool:
        """Remember the message that mirrors a subject (the first one wins)."""
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    chat_messages.insert().values(
                        subject_kind=kind,
                        subject_id=subject_id,
                        channel=channel,
                        ts=ts,
                        chat_user=chat_user,
                        posted_steps=[],
                        done=False,
                        created_at=now,
                    )
                )
        except exc.IntegrityError:
            return False
        return True

    async def chat_message(self, kind: str, subject_id: str) -> ChatMessage | None:
        """The message that mirrors this subject, if any."""
        row = (
            await self.conn.execute(
                chat_messages.select().where(
                    chat_messages.c.subject_kind == kind, chat_messages.c.subject_id == subject_id
                )
            )
        ).first()
        return None if row is None else _to_message(row)

    async def chat_messages_to_sync(self, limit: int) -> list[ChatMessage]:
        """Open messages whose subject changed since they were last synced."""
        never = chat_messages.c.synced_at.is_(None)
        op_changed = (
            chat_messages.select()
            .join(operations, operations.c.id == chat_messages.c.subject_id)
            .where(chat_messages.c.subject_kind == "operation", ~chat_messages.c.done)
            .where(sa.or_(never, operations.c.updated_at > chat_messages.c.synced_at))
        )
        approval_changed = (
            chat_messages.select()
            .join(approvals, approvals.c.id == chat_messages.c.subject_id)
            .where(chat_messages.c.subject_kind == "approval", ~chat_messages.c.done)
            .where(sa.or_(never, approvals.c.decided_at > chat_messages.c.synced_at))
        )
        found = []
        for query in (op_changed, approval_changed):
            found += [_to_message(row) for row in await self.conn.execute(query.limit(limit))]
        return sorted(found, key=lambda message: message.id)[:limit]

    async def update_chat_message(
        self, message_id: int, *, posted_steps: tuple[str, ...], synced_at: datetime, done: bool
    ) -> None:
        """Record how far the message has been brought in line with its subject."""
        await self.conn.execute(
            chat_messages.update()
            .where(chat_messages.c.id == message_id)
            .values(posted_steps=list(posted_steps), synced_at=synced_at, done=done)
        )

    async def add_ssh_key(self, key: SshKey) -> bool:
        """Store a key; False if the owner already has it."""
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    ssh_keys.insert().values(
                        owner=key.owner,
                        fingerprint=key.fingerprint,
                        public_key=key.public_key,
                        created_at=key.created_at,
                    )
                )
        except exc.IntegrityError:
            return False
        return True

    async def ssh_keys(self, owner: str) -> list[SshKey]:
        """The owner's keys, oldest first."""
        rows = await self.conn.execute(
            ssh_keys.select().where(ssh_keys.c.owner == owner).order_by(ssh_keys.c.created_at)
        )
        return [SshKey(r.owner, r.fingerprint, r.public_key, r.created_at) for r in rows]

    async def delete_ssh_key(self, owner: str, fingerprint: str) -> bool:
        """Remove one of the owner's keys; False if they had no such key."""
        result = await self.conn.execute(
            ssh_keys.delete().where(
                ssh_keys.c.owner == owner, ssh_keys.c.fingerprint == fingerprint
            )
        )
        return bool(result.rowcount)

    async def workspaces_to_remind(self, before: datetime, limit: int) -> list[Workspace]:
        """Live workspaces expiring before `before` whose owner was not reminded yet."""
        query = (
            SELECT_WORKSPACES.where(workspaces.c.state.in_(REMINDABLE))
            .where(workspaces.c.expires_at < before, workspaces.c.reminded_at.is_(None))
            .order_by(workspaces.c.expires_at)
            .limit(limit)
        )
        return [to_workspace(row) for row in await self.conn.execute(query)]
