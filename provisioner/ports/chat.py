"""The chat message seam of the store: messages mirroring subjects, reminders due."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from provisioner.models import ChatMessage, Workspace


class ChatRows(Protocol):
    """Chat messages mirroring subjects, and the TTL reminders a chat edge sends."""

    async def add_chat_message(
        self, kind: str, subject_id: str, *, channel: str, ts: str, chat_user: str, now: datetime
    ) -> bool:
        """Remember the chat message that mirrors a subject (the first one wins)."""
        ...

    async def chat_message(self, kind: str, subject_id: str) -> ChatMessage | None:
        """The chat message that mirrors this subject."""
        ...

    async def chat_messages_to_sync(self, limit: int) -> list[ChatMessage]:
        """Open chat messages whose subject changed since they were last synced."""
        ...

    async def update_chat_message(
        self, message_id: int, *, posted_steps: tuple[str, ...], synced_at: datetime, done: bool
    ) -> None:
        """Record how far a chat message has been brought in line with its subject."""
        ...

    async def workspaces_to_remind(self, before: datetime, limit: int) -> list[Workspace]:
        """Live workspaces expiring before `before` whose owner was not reminded yet."""
        ...
