"""What a chat edge needs to keep its messages true: which changed, and how far each is synced."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from provisioner.models import ChatMessage, Workspace
from provisioner.ports import ChatRows, Database, WorkspaceRows

Clock = Callable[[], datetime]


class ChatTx(ChatRows, WorkspaceRows, Protocol):
    """What conversations touch: chat messages, and workspaces for reminders."""


class Conversations:
    """Chat messages mirroring operations and approvals, and TTL reminders to send."""

    def __init__(self, store: Database[ChatTx], clock: Clock) -> None:
        self._store, self._clock = store, clock

    async def remember(
        self, kind: str, subject_id: str, *, channel: str, ts: str, chat_user: str
    ) -> bool:
        """Note that (channel, ts) mirrors `subject_id`; False if another message already does."""
        async with self._store.transaction() as tx:
            return await tx.add_chat_message(
                kind, subject_id, channel=channel, ts=ts, chat_user=chat_user, now=self._clock()
            )

    async def message_for(self, kind: str, subject_id: str) -> ChatMessage | None:
        """The message mirroring this subject, if one was posted."""
        async with self._store.read() as tx:
            return await tx.chat_message(kind, subject_id)

    async def to_sync(self, limit: int = 50) -> list[ChatMessage]:
        """Open messages whose subject changed since their last sync."""
        async with self._store.read() as tx:
            return await tx.chat_messages_to_sync(limit)

    async def synced(
        self, message: ChatMessage, *, version: datetime, posted_steps: tuple[str, ...], done: bool
    ) -> None:
        """Record that the message now shows its subject as of `version` (the subject's time)."""
        async with self._store.transaction() as tx:
            await tx.update_chat_message(
                message.id, posted_steps=posted_steps, synced_at=version, done=done
            )

    async def due_reminders(self, within: timedelta, limit: int = 50) -> list[Workspace]:
        """Workspaces expiring within `within` whose owner has not been reminded."""
        async with self._store.read() as tx:
            return await tx.workspaces_to_remind(self._clock() + within, limit)

    async def reminded(self, workspace_id: str) -> None:
        """Note that the owner was reminded (extending the workspace clears it)."""
        async with self._store.transaction() as tx:
            await tx.update_workspace(workspace_id, reminded_at=self._clock())
