"""Onboarding host keys in Slack: a key awaiting approval is posted to ops with Approve / Deny."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp

from acl.rbac import Permission, require
from bot.deps import BotDeps
from bot.tasks import TaskSet
from bot.views import Block, button, context, deny_modal, section, when
from provisioner.models import SYSTEM_ACTOR
from provisioner.onboard_models import OnboardRequest, OnboardState
from provisioner.onboarding import Onboarding

KIND = "onboard"
Ack = Callable[..., Awaitable[None]]
# Interactions.spawn: run work after the ack, errors privately to whoever clicked.
Spawn = Callable[..., None]
APPROVE, DENY, REASON = "approve_onboard_key", "deny_onboard_key", "deny_onboard_key_reason"


def request_view(request: OnboardRequest) -> tuple[str, list[Block]]:
    """The ops-channel message asking whether to trust the key an existing host presents."""
    fp, where = request.presented_fingerprint or "", f"{request.host}:{request.port}"
    who = f"*{request.requested_by}* asks to onboard `{request.desired_user}` on `{where}`"
    if request.pinned_fingerprint:
        headline = (
            f":rotating_light: {who}, and the host presents a *changed* SSH host key `{fp}` "
            f"(pinned: `{request.pinned_fingerprint}`). If it was not reinstalled, deny."
        )
    else:
        headline = (
            f":key: {who}. The host presents an unknown SSH host key `{fp}`: compare it with "
            "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host before approving."
        )
    value = f"{request.id}|{fp}"
    text = f"Host key approval needed for onboarding {where}: {fp}"
    return text, [
        section(headline, block_id=f"onboard:{request.id}"),
        {
            "type": "actions",
            "block_id": f"onboard_actions:{request.id}",
            "elements": [
                button("Approve", APPROVE, value, "primary", f"Trust `{fp}`?"),
                button("Deny", DENY, value, "danger", "You will be asked for a reason."),
            ],
        },
    ]


def outcome_view(request: OnboardRequest) -> list[Block]:
    """The message once decided: who decided, and where the request stands now."""
    fp, where = request.presented_fingerprint, f"{request.host}:{request.port}"
    if request.state == OnboardState.CANCELLED:
        verdict = f":heavy_multiplication_x: Onboarding of `{where}` was cancelled."
    elif request.approved_key is not None:
        states = {
            OnboardState.RUNNING: "creating the user now",
            OnboardState.SUCCEEDED: f"`{request.desired_user}` is ready",
            OnboardState.FAILED: f"then it failed: {request.reason}",
        }
        verdict = f":white_check_mark: Trusted host key `{fp}` of `{where}`; "
        verdict += states.get(request.state, request.state.value) + "."
    else:
        verdict = f":no_entry: Host key `{fp}` of `{where}`: {request.reason}."
    by = f"Decided by {request.decided_by}" if request.decided_by else "Ended by the system"
    return [section(verdict), context(f"{by} {when(request.updated_at)}")]


class OnboardButtons:
    """The Approve and Deny buttons, and the message that mirrors each request's key decision."""

    def __init__(self, deps: BotDeps, spawn: Spawn, tasks: TaskSet) -> None:
        self.deps, self.spawn, self.tasks = deps, spawn, tasks
        self.onboarding: Onboarding | None = None
        self._lock = asyncio.Lock()  # one mirror at a time: a post never overtakes its update

    def attach(self, onboarding: Onboarding) -> None:
        """Follow the requests' changes made in this process (the composition root calls this)."""
        self.onboarding = onboarding
        onboarding.transitions.on_change(self._changed)

    def register(self, bolt: AsyncApp) -> None:
        """Attach the listeners: each acks at once and decides after the ack."""
        bolt.action(APPROVE)(self.approve)
        bolt.action(DENY)(self.deny)
        bolt.view(REASON)(self.deny_submitted)

    async def _changed(self, request: OnboardRequest) -> None:
        """Mirror in the background: a slow Slack must not hold up the onboarding runner."""
        self.tasks.spawn(self.mirror(request.id), f"onboard-mirror-{request.id}")

    async def mirror(self, request_id: str) -> None:
        """Post the request's message while it awaits approval; show the outcome after."""
        deps, onboarding = self.deps, self.onboarding
        if deps.config.ops_channel is None or onboarding is None:
            return
        async with self._lock:
            request = await onboarding.get(SYSTEM_ACTOR, request_id)
            message = await deps.conversations.message_for(KIND, request_id)
            if message is None and request.state == OnboardState.AWAITING_APPROVAL:
                text, blocks = request_view(request)
                answer = await deps.client.chat_postMessage(
                    channel=deps.config.ops_channel, text=text, blocks=blocks
                )
                channel, ts = str(answer["channel"]), str(answer["ts"])
                if not await deps.conversations.remember(
                    KIND, request_id, channel=channel, ts=ts, chat_user=""
                ):  # another process posted it first
                    await deps.client.chat_delete(channel=channel, ts=ts)
            elif message is not None and not message.done and _decided(request):
                await self._show_outcome(request)

    async def _show_outcome(self, request: OnboardRequest) -> None:
        """Replace the buttons with the decision; done once the request ended."""
        message = await self.deps.conversations.message_for(KIND, request.id)
        if message is None:
            return
        blocks = outcome_view(request)
        await self.deps.client.chat_update(
            channel=message.channel, ts=message.ts, text=blocks[0]["text"]["text"], blocks=blocks
        )
        await self.deps.conversations.synced(
            message, version=datetime.now(UTC), posted_steps=(), done=request.state.terminal
        )

    async def approve(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Approve button."""
        await ack()
        value = str(body["actions"][0]["value"])
        self.spawn(body, self.decide(body, value, approve=True), "approve-onboard-key")

    async def deny(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Deny button: ask for a reason first (the trigger id lasts 3 s)."""
        await ack()
        view = deny_modal(
            str(body["actions"][0]["value"]),
            callback_id=REASON,
            title="Deny host key",
            question="Why? The requester and the audit trail will see this.",
        )
        work = self.deps.client.views_open(trigger_id=body["trigger_id"], view=view)
        self.spawn(body, _done(work), "onboard-key-modal", urgent=True)

    async def deny_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The reason modal: a reason is required."""
        reason = (view["state"]["values"]["reason"]["reason"].get("value") or "").strip()
        if not reason:
            await ack(response_action="errors", errors={"reason": "Say why, for the audit trail."})
            return
        await ack()
        value = str(view["private_metadata"])
        self.spawn(body, self.decide(body, value, approve=False, reason=reason), "deny-onboard")

    async def decide(
        self, body: dict[str, Any], value: str, *, approve: bool, reason: str | None = None
    ) -> None:
        """The core decides (ops only, not on one's own request, compare-and-set); we mirror."""
        user = await self.deps.identity.user(body["user"]["id"])
        require(user.actor, Permission.MANAGE_NODES)
        if self.onboarding is None:
            return
        request_id, _, fingerprint = value.partition("|")
        if approve:
            await self.onboarding.approve(user.actor, request_id, fingerprint)
        else:
            await self.onboarding.deny(user.actor, request_id, fingerprint, reason)


def _decided(request: OnboardRequest) -> bool:
    """Whether an operator decided on the key, or the request ended anyway."""
    return request.decided_by is not None or request.state.terminal


async def _done(work: Awaitable[Any]) -> None:
    """Await `work` and drop its answer."""
    await work


def register(bolt: AsyncApp, deps: BotDeps, spawn: Spawn, tasks: TaskSet) -> OnboardButtons:
    """The onboarding buttons, listening on `bolt`."""
    buttons = OnboardButtons(deps, spawn, tasks)
    buttons.register(bolt)
    return buttons
