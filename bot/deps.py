"""What the Slack edge works with: core services, the Slack client, identity and settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.identity import Identity
from provisioner.approvals import Approvals
from provisioner.conversations import Conversations
from provisioner.keys import SshKeys
from provisioner.models import Operation, Workspace
from provisioner.service import Provisioner

# Where a message cannot go to the channel (the app is not in it), it goes to the user's DM.
NOT_POSTABLE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


@dataclass(frozen=True)
class BotConfig:
    """Slack settings of this deployment."""

    slash_command: str = "/workspace"
    ops_channel: str | None = None
    ops_users: frozenset[str] = frozenset()
    sync_interval: float = 2.0
    update_interval: float = 3.0
    remind_within_hours: int = 24


@dataclass
class BotDeps:
    """Everything listeners and the sync loop need."""

    core: Provisioner
    approvals: Approvals
    conversations: Conversations
    keys: SshKeys
    client: AsyncWebClient
    identity: Identity
    config: BotConfig
    wake_sync: asyncio.Event = field(default_factory=asyncio.Event)

    async def dm_channel(self, user_id: str) -> str:
        """The id of the app's DM conversation with a user."""
        answer = await self.client.conversations_open(users=user_id)
        return str(answer["channel"]["id"])

    async def post(
        self, channel: str, user_id: str, text: str, blocks: list[views.Block]
    ) -> tuple[str, str]:
        """Post to `channel`, or to the user's DM when the app may not post there."""
        try:
            answer = await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        except SlackApiError as error:
            if error.response.get("error") not in NOT_POSTABLE:
                raise
            answer = await self.client.chat_postMessage(
                channel=await self.dm_channel(user_id), text=text, blocks=blocks
            )
        return str(answer["channel"]), str(answer["ts"])

    async def post_status(self, channel: str, user_id: str, op: Operation, ws: Workspace) -> None:
        """Post the one status message of a request and have the sync loop keep it true."""
        # A replayed request (same trigger or form) already has its message.
        if await self.conversations.message_for("operation", op.id) is None:
            text, blocks = views.status_message(op, ws, user_id)
            posted_channel, ts = await self.post(channel, user_id, text, blocks)
            if not await self.conversations.remember(
                "operation", op.id, channel=posted_channel, ts=ts, chat_user=user_id
            ):
                await self.client.chat_delete(channel=posted_channel, ts=ts)
        self.wake_sync.set()
