"""Onboarding host keys in Slack: posted to ops, decided by ops only (never their own), once."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from provisioner.models import Actor, Role
from provisioner.onboard_models import OnboardInput, OnboardRequest, OnboardState
from provisioner.onboarding import Onboarding
from provisioner.settings import Settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import Message
from tests.onboard_sshd import SSHD, PasswordSshd, Users, running_sshd, throwaway_users
from tests.slack_harness import OPS, OPS_CHANNEL, OTHER_OPS, SlackWorld, slack_world

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not SSHD.exists(),
    reason="needs root (to make throwaway users) and openssh-server",
)
DANA = Actor("dana.dev@example.com", Role.DEVELOPER, "api", owner_scope="dana.dev@example.com")
OLGA = Actor("olga.ops@example.com", Role.OPERATOR, "api")  # the Slack user OPS


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[SlackWorld]:
    async with slack_world(settings) as built:
        assert built.system.onboard_runner is not None
        built.system.onboard_runner.start()
        try:
            yield built
        finally:
            await built.system.onboard_runner.stop()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[PasswordSshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def users() -> Iterator[Users]:
    with throwaway_users() as made:
        yield made


def onboarding(world: SlackWorld) -> Onboarding:
    """The system's onboarding use cases."""
    assert world.system.onboarding is not None
    return world.system.onboarding


async def until(world: SlackWorld, request_id: str, *states: OnboardState) -> OnboardRequest:
    """The request once in one of `states`, Slack's background work settled."""
    assert world.system.bot is not None
    for _ in range(400):
        request = await onboarding(world).get(OLGA, request_id)
        if request.state in states:
            await world.system.bot.tasks.idle()
            return request
        await asyncio.sleep(0.05)
    raise AssertionError(f"{request_id} stayed {request.state}: {request.reason}")


async def waiting(
    world: SlackWorld, sshd: PasswordSshd, users: Users, by: Actor = DANA
) -> tuple[OnboardRequest, Message]:
    """A request waiting for its host key's approval, and its ops-channel message."""
    login = users.login(root=True)
    spec = OnboardInput("127.0.0.1", login[0], login[1], users.name(), sshd.port, True)
    request = await onboarding(world).request(by, spec)
    request = await until(world, request.id, OnboardState.AWAITING_APPROVAL)
    [message] = [m for m in world.fake.channel(OPS_CHANNEL) if request.id in str(m.blocks)]
    assert login[1] not in str(world.fake.calls)
    return request, copy.deepcopy(message)


def buttons(message: Message) -> list[dict[str, object]]:
    """The buttons of a message."""
    return [e for b in message.blocks or [] if b["type"] == "actions" for e in b["elements"]]


def click(message: Message, user_id: str, action: str) -> str:
    """A click on one of the message's buttons."""
    [block_id] = [b["block_id"] for b in message.blocks or [] if b["type"] == "actions"]
    value = next(str(b["value"]) for b in buttons(message) if b["action_id"] == action)
    return sp.block_action(
        action,
        value,
        user_id=user_id,
        channel_id=OPS_CHANNEL,
        message=message.to_payload(),
        block_id=block_id,
    )


async def test_posted_with_the_fingerprint_approved_once_and_the_message_says_by_whom(
    world: SlackWorld, sshd: PasswordSshd, users: Users
) -> None:
    request, message = await waiting(world, sshd, users)
    assert sshd.fingerprint in message.text
    assert [b["action_id"] for b in buttons(message)] == ["approve_onboard_key", "deny_onboard_key"]
    assert (await world.post(click(message, OPS, "approve_onboard_key"))).status == 200
    done = await until(world, request.id, OnboardState.SUCCEEDED, OnboardState.FAILED)
    assert done.state == OnboardState.SUCCEEDED, done.reason
    assert done.decided_by == OLGA.name
    decided = world.fake.messages[(OPS_CHANNEL, message.ts)]
    assert buttons(decided) == [] and "Trusted" in decided.text and "is ready" in decided.text
    assert OLGA.name in str(decided.blocks)
    # A second operator clicking the stale button changes nothing and is told why.
    assert (await world.post(click(message, OTHER_OPS, "approve_onboard_key"))).status == 200
    await world.settle()
    assert "not awaiting approval" in world.fake.ephemerals[-1].text
    page = await world.system.audit.list(target=request.id, limit=50)
    assert [e.action for e in page.items].count("onboard.approved") == 1


async def test_a_developer_and_the_requester_may_not_decide(
    world: SlackWorld, sshd: PasswordSshd, users: Users
) -> None:
    request, message = await waiting(world, sshd, users, by=OLGA)
    await world.post(click(message, "U222", "approve_onboard_key"))  # a developer
    await world.settle()
    assert "may not" in world.fake.ephemerals[-1].text
    await world.post(click(message, OPS, "approve_onboard_key"))  # Olga asked herself
    await world.settle()
    assert "your own request" in world.fake.ephemerals[-1].text
    still = await onboarding(world).get(OLGA, request.id)
    assert still.state == OnboardState.AWAITING_APPROVAL and still.decided_by is None
    assert buttons(world.fake.messages[(OPS_CHANNEL, message.ts)]) != []


async def test_deny_asks_why_then_fails_the_request(
    world: SlackWorld, sshd: PasswordSshd, users: Users
) -> None:
    request, message = await waiting(world, sshd, users)
    await world.post(click(message, OPS, "deny_onboard_key"))
    await world.settle()
    [opened] = world.fake.calls_of("views.open")
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    submission = sp.view_submission(
        "deny_onboard_key_reason",
        {"reason": {"reason": sp.plain_text_value("not one of our hosts")}},
        user_id=OPS,
        private_metadata=view["private_metadata"],
    )
    await world.post(submission)
    failed = await until(world, request.id, OnboardState.FAILED)
    assert (
        failed.reason == f"host key {sshd.fingerprint} refused by {OLGA.name}: not one of our hosts"
    )
    decided = world.fake.messages[(OPS_CHANNEL, message.ts)]
    assert buttons(decided) == [] and "not one of our hosts" in decided.text
    assert "Accepted password" not in sshd.log()


async def test_an_api_cancel_updates_the_message(
    world: SlackWorld, sshd: PasswordSshd, users: Users
) -> None:
    request, message = await waiting(world, sshd, users)
    await onboarding(world).cancel(OLGA, request.id)
    await until(world, request.id, OnboardState.CANCELLED)
    decided = world.fake.messages[(OPS_CHANNEL, message.ts)]
    assert buttons(decided) == [] and "cancelled" in decided.text
