"""Node host keys in Slack: an unknown key is posted to ops; only operators decide, once."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from provisioner.models import SYSTEM_ACTOR, Node, NodeTrust
from provisioner.ports import HostKeySighting
from provisioner.settings import Settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import Message
from tests.slack_harness import DEV, OPS, OPS_CHANNEL, OTHER_OPS, SlackWorld, slack_world

FINGERPRINT = "SHA256:" + "q" * 43
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0CAlrEGp6mF9ew1L0DZa9Xy+7pxSbI6n+Xc/t39Tm7"


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[SlackWorld]:
    """The Slack app with a remote node whose host key was just seen for the first time."""
    async with slack_world(settings) as built:
        node = Node("far", ssh_host="192.0.2.10", libvirt_uri="qemu:///system")
        async with built.system.store.transaction() as tx:
            await tx.insert_node(node)
        await built.system.core.nodes.report_host_key(
            HostKeySighting("far", FINGERPRINT, KEY, None)
        )
        await built.system.fleet.refresh()
        yield built


def buttons(message: Message) -> list[dict[str, object]]:
    """The buttons of a message."""
    return [e for b in message.blocks or [] if b["type"] == "actions" for e in b["elements"]]


async def posted_request(world: SlackWorld) -> Message:
    """The ops-channel message about the node's key, after one sync round."""
    await world.settle()
    [request] = [m for m in world.fake.channel(OPS_CHANNEL) if "far" in m.text]
    return copy.deepcopy(request)


def click(request: Message, user_id: str, action: str) -> str:
    """A click on one of the request's buttons."""
    value = next(str(b["value"]) for b in buttons(request) if b["action_id"] == action)
    return sp.block_action(
        action,
        value,
        user_id=user_id,
        channel_id=OPS_CHANNEL,
        message=request.to_payload(),
        block_id="hostkey_actions:far",
    )


def reason_submission(value: str, reason: str) -> str:
    """An operator submitting the Deny modal of a host key with `reason`."""
    return sp.view_submission(
        "reject_host_key_reason",
        {"reason": {"reason": sp.plain_text_value(reason)}},
        user_id=OPS,
        private_metadata=value,
    )


async def trust_of(world: SlackWorld) -> NodeTrust:
    """The node's trust as the store says."""
    [node] = [n for n, _ in await world.system.core.nodes.list() if n.name == "far"]
    return node.trust


async def test_an_unknown_key_is_posted_once_with_its_fingerprint(world: SlackWorld) -> None:
    request = await posted_request(world)
    assert FINGERPRINT in request.text
    assert [(b["action_id"], b.get("style")) for b in buttons(request)] == [
        ("approve_host_key", "primary"),
        ("reject_host_key", "danger"),
    ]
    assert all("confirm" in b for b in buttons(request))
    await world.system.bot.sync.sync_once()  # type: ignore[union-attr]
    assert len([m for m in world.fake.channel(OPS_CHANNEL) if "far" in m.text]) == 1


async def test_a_developer_cannot_approve_and_an_operator_approves_once(
    world: SlackWorld,
) -> None:
    request = await posted_request(world)
    assert (await world.post(click(request, DEV, "approve_host_key"))).status == 200
    await world.settle()
    assert await trust_of(world) == NodeTrust.PENDING
    assert "may not do this (nodes:manage)" in world.fake.ephemerals[-1].text

    assert (await world.post(click(request, OPS, "approve_host_key"))).status == 200
    await world.settle()
    assert await trust_of(world) == NodeTrust.TRUSTED
    decided = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert "Trusted" in decided.text and buttons(decided) == []

    # A second operator clicking the stale button changes nothing and is told so.
    assert (await world.post(click(request, OTHER_OPS, "approve_host_key"))).status == 200
    await world.settle()
    assert "no new key" in world.fake.ephemerals[-1].text
    page = await world.system.audit.list(target="far", limit=50)
    approvals = [e for e in page.items if e.action == "node.host_key_approved"]
    assert len(approvals) == 1 and approvals[0].reason == FINGERPRINT


async def test_a_denied_key_asks_why_and_keeps_the_node_out_of_use(world: SlackWorld) -> None:
    request = await posted_request(world)
    assert (await world.post(click(request, OPS, "reject_host_key"))).status == 200
    await world.settle()
    [opened] = world.fake.calls_of("views.open")
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["callback_id"] == "reject_host_key_reason"
    value = view["private_metadata"]
    answer = await world.post(reason_submission(value, "  "))
    assert (await answer.json())["response_action"] == "errors"
    assert await trust_of(world) == NodeTrust.PENDING
    reason = "not the fingerprint hv1 showed on its console"
    await world.post(reason_submission(value, reason))
    await world.settle()
    assert await trust_of(world) == NodeTrust.PENDING
    decided = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert "Rejected" in decided.text and buttons(decided) == []
    assert reason in str(decided.blocks)
    page = await world.system.audit.list(target="far", limit=50)
    [rejected] = [e for e in page.items if e.action == "node.host_key_rejected"]
    assert rejected.reason == f"{FINGERPRINT}: {reason}"


async def test_a_changed_key_is_flagged_as_a_possible_attack(world: SlackWorld) -> None:
    request = await posted_request(world)
    await world.post(click(request, OPS, "approve_host_key"))
    await world.settle()
    other = "SHA256:" + "z" * 43
    await world.system.core.nodes.report_host_key(
        HostKeySighting("far", other, KEY.replace("B0C", "B0D"), FINGERPRINT)
    )
    await world.system.fleet.refresh()
    assert await trust_of(world) == NodeTrust.UNTRUSTED
    await world.settle()
    [alert] = [m for m in world.fake.channel(OPS_CHANNEL) if other in m.text]
    assert "changed" in (alert.blocks or [{}])[0]["text"]["text"]
    page = await world.system.audit.list(target="far", limit=50)
    changed = [e for e in page.items if e.action == "node.host_key_changed"]
    assert len(changed) == 1 and changed[0].actor == SYSTEM_ACTOR.name
    assert changed[0].at <= datetime.now(UTC)
