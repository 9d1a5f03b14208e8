"""Node host keys in Slack: an unknown or changed key is posted to ops with Approve / Reject."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp

from acl.rbac import Permission, require
from bot.deps import BotDeps
from bot.views import Block, button, context, section
from provisioner.models import Node, NodeTrust

KIND = "hostkey"
Ack = Callable[..., Awaitable[None]]
Spawn = Callable[[dict[str, Any], Awaitable[None], str], None]


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
                button("Reject", "reject_host_key", value, "danger", "The node stays unused."),
            ],
        },
    ]


def outcome_view(node_name: str, fingerprint: str, approved: bool, who: str) -> list[Block]:
    """The message once decided: who decided what."""
    verdict = ":white_check_mark: Trusted" if approved else ":no_entry: Rejected"
    result = "takes workspaces again" if approved else "stays out of use"
    return [
        section(f"{verdict} host key `{fingerprint}` of node *{node_name}*; the node {result}."),
        context(f"Decided by <@{who}>"),
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

    async def approve(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Approve button."""
        await ack()
        self.spawn(body, self.decide(body, approve=True), "approve-host-key")

    async def reject(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Reject button."""
        await ack()
        self.spawn(body, self.decide(body, approve=False), "reject-host-key")

    async def decide(self, body: dict[str, Any], *, approve: bool) -> None:
        """Record the decision in the core (compare-and-set), then show it in the message."""
        deps = self.deps
        user = await deps.identity.user(body["user"]["id"])
        require(user.actor, Permission.MANAGE_NODES)
        node, _, fingerprint = str(body["actions"][0]["value"]).partition("|")
        if approve:
            await deps.core.nodes.approve_host_key(user.actor, node, fingerprint)
        else:
            await deps.core.nodes.reject_host_key(user.actor, node, fingerprint)
        message = await deps.conversations.message_for(KIND, subject_of(node, fingerprint))
        if message is None:
            return
        blocks = outcome_view(node, fingerprint, approve, user.user_id)
        await deps.client.chat_update(
            channel=message.channel, ts=message.ts, text=blocks[0]["text"]["text"], blocks=blocks
        )
        await deps.conversations.synced(
            message, version=datetime.now(UTC), posted_steps=(), done=True
        )
