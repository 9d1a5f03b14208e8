"""Keeps Slack true to the store: status messages, step threads, approvals, DMs and reminders.

Level-triggered: each round reads what changed since a message was last synced and brings the
message up to date, so a restart, a missed wake-up or a Slack outage only delays an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from slack_sdk.errors import SlackApiError

from bot import host_keys, views
from bot.deps import BotDeps
from provisioner.errors import ProvisionerError
from provisioner.models import (
    SYSTEM_ACTOR,
    Approval,
    ApprovalState,
    ChatMessage,
    OperationKind,
    OperationState,
    StepState,
    Workspace,
)

log = logging.getLogger(__name__)
OUTPUT_MARK = "output:"


class MessageSync:
    """One loop that updates every open chat message whose subject changed."""

    def __init__(self, deps: BotDeps) -> None:
        self._deps = deps
        self._last_update: dict[int, float] = {}
        # One round at a time: two rounds at once would post the same approval twice.
        self._round = asyncio.Lock()

    async def run_forever(self) -> None:
        """Sync, then sleep until woken or the interval passes; never dies of one bad round."""
        deps = self._deps
        while True:
            deps.wake_sync.clear()
            try:
                await self.sync_once()
            except (ProvisionerError, SlackApiError, OSError) as error:
                log.warning("slack sync round failed: %s", error)
            except Exception:
                log.exception("slack sync round failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deps.wake_sync.wait(), deps.config.sync_interval)

    async def sync_once(self) -> None:
        """One round: post new approval requests, then bring changed messages up to date."""
        async with self._round:
            await self._post_new_approvals()
            await host_keys.post_new(self._deps)
            for message in await self._deps.conversations.to_sync():
                if message.subject_kind == "operation":
                    await self._sync_operation(message)
                else:
                    await self._sync_approval(message)

    async def _sync_operation(self, message: ChatMessage) -> None:
        """Thread lines for finished steps, the parent message, and the final DM."""
        deps = self._deps
        op = await deps.core.get_operation(SYSTEM_ACTOR, message.subject_id)
        ws = await deps.core.get_workspace(SYSTEM_ACTOR, op.workspace_id)
        final = op.state.terminal
        # chat.update is rate-limited workspace-wide: coalesce progress, never the final state.
        if (
            not final
            and time.monotonic() - self._last_update.get(message.id, 0.0)
            < deps.config.update_interval
        ):
            return
        posted = list(message.posted_steps)
        await self._post_output(message, posted)
        for step in op.steps:
            if (
                step.finished_at is not None
                and step.name not in posted
                and step.state != StepState.RUNNING
            ):
                line = views.step_line(step.name, step.state, step.detail)
                await deps.client.chat_postMessage(
                    channel=message.channel, thread_ts=message.ts, text=line
                )
                posted.append(step.name)
        text, blocks = views.status_message(op, ws, message.chat_user)
        await deps.client.chat_update(
            channel=message.channel, ts=message.ts, text=text, blocks=blocks
        )
        self._last_update[message.id] = time.monotonic()
        if final:
            await self._tell_requester(message, op.state, op.kind, ws)
            self._last_update.pop(message.id, None)
        await deps.conversations.synced(
            message, version=op.updated_at, posted_steps=tuple(posted), done=final
        )

    async def _post_output(self, message: ChatMessage, posted: list[str]) -> None:
        """New output lines (a playbook's) into the thread, a few messages per round at most.

        How far the thread got is kept among the posted steps as `output:<last line id>`.
        """
        mark = next((p for p in posted if p.startswith(OUTPUT_MARK)), f"{OUTPUT_MARK}0")
        after = int(mark.removeprefix(OUTPUT_MARK))
        _, output = await self._deps.core.operation_with_output(SYSTEM_ACTOR, message.subject_id)
        fresh = [line for line in output if line.id > after]
        if not fresh:
            return
        for chunk in views.output_chunks([line.line for line in fresh]):
            await self._deps.client.chat_postMessage(
                channel=message.channel, thread_ts=message.ts, text=chunk
            )
        if mark in posted:
            posted.remove(mark)
        posted.append(f"{OUTPUT_MARK}{fresh[-1].id}")

    async def _tell_requester(
        self, message: ChatMessage, state: OperationState, kind: OperationKind, ws: Workspace
    ) -> None:
        """A DM when a create is ready (how to reach it) or failed, and a fresh App Home."""
        deps = self._deps
        channel = await deps.dm_channel(message.chat_user)
        if state == OperationState.SUCCEEDED and kind == OperationKind.CREATE:
            text, blocks = views.ready_message(ws)
            await deps.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        elif state == OperationState.FAILED:
            await deps.client.chat_postMessage(
                channel=channel,
                text=f"{kind.value} of {ws.name} failed; see the thread of its status message.",
            )
        await self.publish_home(message.chat_user)

    async def publish_home(self, user_id: str) -> None:
        """Republish a user's App Home with their workspaces as they are now."""
        deps = self._deps
        user = await deps.identity.user(user_id)
        page = await deps.core.list_workspaces(user.actor, owner=user.actor.name, limit=200)
        try:
            await deps.client.views_publish(user_id=user_id, view=views.home_view(page.items))
        except SlackApiError as error:
            # Home tab disabled in the app's settings: nothing to keep up to date.
            if error.response.get("error") != "not_enabled":
                raise

    async def _post_new_approvals(self) -> None:
        """Post each pending approval that has no message yet to the ops channel."""
        deps = self._deps
        if deps.config.ops_channel is None:
            return
        for approval in (await deps.approvals.list(state=ApprovalState.PENDING, limit=50)).items:
            if await deps.conversations.message_for("approval", approval.id) is not None:
                continue
            ws, requester_id = await self._subject(approval)
            op = await deps.core.get_operation(SYSTEM_ACTOR, approval.operation_id)
            why = str(op.params.get("approval_reason") or "this request needs an operator")
            who = mention(requester_id, approval.requested_by)
            text, blocks = views.approval_request(approval, ws, who, why)
            answer = await deps.client.chat_postMessage(
                channel=deps.config.ops_channel, text=text, blocks=blocks
            )
            posted = await deps.conversations.remember(
                "approval",
                approval.id,
                channel=str(answer["channel"]),
                ts=str(answer["ts"]),
                chat_user=requester_id or "",
            )
            if not posted:  # another process posted it first
                await deps.client.chat_delete(channel=str(answer["channel"]), ts=str(answer["ts"]))

    async def _sync_approval(self, message: ChatMessage) -> None:
        """Once decided: show who decided and when, drop the buttons, tell the requester."""
        deps = self._deps
        approval = await deps.approvals.get(message.subject_id)
        if approval.state == ApprovalState.PENDING:
            await deps.conversations.synced(
                message, version=approval.created_at, posted_steps=(), done=False
            )
            return
        ws, requester_id = await self._subject(approval)
        who = mention(requester_id, approval.requested_by)
        text, blocks = views.approval_outcome(approval, ws, who)
        await deps.client.chat_update(
            channel=message.channel, ts=message.ts, text=text, blocks=blocks
        )
        if requester_id and approval.state != ApprovalState.WITHDRAWN:
            dm = await deps.dm_channel(requester_id)
            await deps.client.chat_postMessage(channel=dm, text=text, blocks=blocks)
        version = approval.decided_at or approval.created_at
        await deps.conversations.synced(message, version=version, posted_steps=(), done=True)

    async def _subject(self, approval: Approval) -> tuple[Workspace, str | None]:
        """The workspace an approval is about, and the requester's Slack id if they have one."""
        deps = self._deps
        op = await deps.core.get_operation(SYSTEM_ACTOR, approval.operation_id)
        ws = await deps.core.get_workspace(SYSTEM_ACTOR, op.workspace_id)
        return ws, await deps.identity.user_id_for(approval.requested_by)

    async def remind_once(self) -> int:
        """DM the owners of workspaces that expire soon, each once; how many were due."""
        deps = self._deps
        due = await deps.conversations.due_reminders(
            timedelta(hours=deps.config.remind_within_hours)
        )
        for ws in due:
            user_id = await deps.identity.user_id_for(ws.owner)
            if user_id is not None:
                text, blocks = views.reminder(ws)
                await deps.client.chat_postMessage(
                    channel=await deps.dm_channel(user_id), text=text, blocks=blocks
                )
            await deps.conversations.reminded(ws.id)
        return len(due)


def mention(user_id: str | None, fallback: str) -> str:
    """`<@U…>` when the person is a Slack user, else their name."""
    return f"<@{user_id}>" if user_id else fallback
