"""Node host keys in Slack: an unknown or changed key is posted to ops with Approve / Reject."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp

from acl.rbac import Permission, require
from bot.deps import BotDeps
from bot.views import Block, button, context, deny_modal, section, when
from provisioner.models import Node, NodeTrust

KIND = "hostkey"
Ack = Callable[..., Awaitable[None]]
# Interactions.spawn: run work after the ack (urgent=True skips the queue), errors to the clicker.
Spawn = Callable[..., None]


def subject_of(node: str, fingerprint: str) -> str:
    """A short stable id for 'this node presents this key' (chat subjects hold 40 characters)."""
    return "hk_" + hashlib.sha256(f"{node}|{fingerprint}".encode()).hexdigest()[:32]


def request_view(node: Node) -> tuple[str, list[Block]]:
    """The ops-channel message asking whether to trust the key a node presents."""
    fp = node.presented_fingerprint or ""
    changed = node.trust == NodeTrust.UNTRUSTED
    if changed:
        headline = (
            f":rotating_light: Node *{node.name}* presented a *changed* SSH host key `{fp}`. "
            "Nothing runs on it until an operator decides. If the node was not reinstalled, "
            "this may be an attack: reject."
        )
    else:
        headline = (
            f":key: Node *{node.name}* ({node.ssh_host}:{node.ssh_port}) presents an unknown "
            f"SSH host key `{fp}`. Compare it with `ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub` on the node before approving."
        )
    value = f"{node.name}|{fp}"
    text = f"Host key approval needed for node {node.name}: {fp}"
    return text, [
        section(headline, block_id=f"hostkey:{node.name}"),
        {
            "type": "actions",
            "block_id": f"hostkey_actions:{node.name}",
            "elements": [
                button("Approve", "approve_host_key", value, "primary", f"Trust `{fp}`?"),
                button(
                    "Deny", "reject_host_key", value, "danger", "You will be asked for a reason."
                ),
            ],
        },
    ]


def outcome_view(
    node_name: str, fingerprint: str, approved: bool, who: str, reason: str | None
) -> list[Block]:
    """The message once decided: who decided what, when, and why."""
    verdict = ":white_check_mark: Trusted" if approved else ":no_entry: Rejected"
    result = "takes workspaces again" if approved else "stays out of use"
    why = f": {reason}" if reason else ""
    return [
        section(f"{verdict} host key `{fingerprint}` of node *{node_name}*; the node {result}."),
        context(f"Decided by <@{who}> {when(datetime.now(UTC))}{why}"),
    ]


async def post_new(deps: BotDeps) -> None:
    """Post each node key awaiting a decision that has no message yet to the ops channel."""
    if deps.config.ops_channel is None:
        return
    for node, _used in await deps.core.nodes.list():
        if node.trust == NodeTrust.TRUSTED or not node.presented_fingerprint:
            continue
        subject = subject_of(node.name, node.presented_fingerprint)
        if await deps.conversations.message_for(KIND, subject) is not None:
            continue
        text, blocks = request_view(node)
        answer = await deps.client.chat_postMessage(
            channel=deps.config.ops_channel, text=text, blocks=blocks
        )
        posted = await deps.conversations.remember(
            KIND, subject, channel=str(answer["channel"]), ts=str(answer["ts"]), chat_user=""
        )
        if not posted:  # another process posted it first
            await deps.client.chat_delete(channel=str(answer["channel"]), ts=str(answer["ts"]))


class HostKeyButtons:
    """The Approve and Reject buttons of host-key messages."""

    def __init__(self, deps: BotDeps, spawn: Spawn) -> None:
        self.deps, self.spawn = deps, spawn

    def register(self, bolt: AsyncApp) -> None:
        """Attach the listeners: each acks at once and decides after the ack."""
        bolt.action("approve_host_key")(self.approve)
        bolt.action("reject_host_key")(self.reject)
        bolt.view("reject_host_key_reason")(self.reject_submitted)

    async def approve(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Approve button."""
        await ack()
        value = str(body["actions"][0]["value"])
        self.spawn(body, self.decide(body, value, approve=True), "approve-host-key")

    async def reject(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Deny button: ask for a reason first (the trigger id lasts 3 s)."""
        await ack()
        view = deny_modal(
            str(body["actions"][0]["value"]),
            callback_id="reject_host_key_reason",
            title="Deny host key",
            question="Why? It goes into the audit trail.",
        )
        self.spawn(body, self._open(body["trigger_id"], view), "host-key-modal", urgent=True)

    async def _open(self, trigger_id: str, view: dict[str, Any]) -> None:
        """Open the reason modal."""
        await self.deps.client.views_open(trigger_id=trigger_id, view=view)

    async def reject_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The reason modal: a reason is required."""
        reason = (view["state"]["values"]["reason"]["reason"].get("value") or "").strip()
        if not reason:
            await ack(response_action="errors", errors={"reason": "Say why, for the audit trail."})
            return
        await ack()
        value = str(view["private_metadata"])
        self.spawn(body, self.decide(body, value, approve=False, reason=reason), "reject-key")

    async def decide(
        self, body: dict[str, Any], value: str, *, approve: bool, reason: str | None = None
    ) -> None:
        """Record the decision in the core (compare-and-set), then show it in the message."""
        deps = self.deps
        user = await deps.identity.user(body["user"]["id"])
        require(user.actor, Permission.MANAGE_NODES)
        node, _, fingerprint = value.partition("|")
        if approve:
            await deps.core.nodes.approve_host_key(user.actor, node, fingerprint)
        else:
            await deps.core.nodes.reject_host_key(user.actor, node, fingerprint, reason)
        message = await deps.conversations.message_for(KIND, subject_of(node, fingerprint))
        if message is None:
            return
        blocks = outcome_view(node, fingerprint, approve, user.user_id, reason)
        await deps.client.chat_update(
            channel=message.channel, ts=message.ts, text=blocks[0]["text"]["text"], blocks=blocks
        )
        await deps.conversations.synced(
            message, version=datetime.now(UTC), posted_steps=(), done=True
        )
