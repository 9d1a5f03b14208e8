"""The Slack edge end to end: signed requests in, Web API calls out to a fake Slack."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest

from provisioner.models import Actor, Role
from provisioner.settings import Settings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import Message
from tests.slack_harness import DEV, OPS, OPS_CHANNEL, OTHER_OPS, SECRET, SlackWorld, slack_world

ADMIN = Actor("test-admin", Role.ADMIN, "test")


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[SlackWorld]:
    """Slack on, against a fresh fake."""
    async with slack_world(settings) as built:
        yield built


def top_level(world: SlackWorld, channel: str) -> list[Message]:
    """Messages in a channel, without thread replies."""
    return [m for m in world.fake.channel(channel) if m.thread_ts is None]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=zz"},
        {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64},
        sp.sign("other body", SECRET),
        sp.sign("text=help", SECRET, ts=int(time.time()) - 301),
        sp.sign("text=help", "wrong-secret"),
    ],
    ids=[
        "missing",
        "ts-not-a-number",
        "ts-5000-digits",
        "sig-malformed",
        "sig-wrong",
        "other-body",
        "stale",
        "wrong-secret",
    ],
)
async def test_requests_not_from_slack_get_401_never_500(
    world: SlackWorld, headers: dict[str, str]
) -> None:
    body = "text=help"
    resp = await world.client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 401
    assert world.fake.calls_of("chat.postMessage") == []


async def test_non_ascii_signature_is_401(world: SlackWorld) -> None:
    headers = {
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=ü" + "0" * 63,
    }
    resp = await world.client.post(
        "/slack/events",
        data="x=1",
        headers={k: v.encode().decode("latin-1") for k, v in headers.items()},
    )
    assert resp.status == 401


async def test_help_and_mistyped_commands(world: SlackWorld) -> None:
    resp = await world.command("help")
    assert resp.status == 200
    await world.settle()
    [answer] = world.fake.responses(0)
    assert "/workspace create [name]" in answer["text"] and answer["response_type"] == "ephemeral"
    typo = await world.command("creat demo")
    assert typo.status == 200
    assert "Did you mean `/workspace create`?" in await typo.text()


async def test_create_from_slack_reports_progress_and_dms_when_ready(world: SlackWorld) -> None:
    started = time.perf_counter()
    resp = await world.command("create demo plan=small")
    assert resp.status == 200 and time.perf_counter() - started < 1.0
    await world.settle()
    [status] = top_level(world, "C111")
    assert "done" in status.text and "running" in status.text
    thread = [m.text for m in world.fake.thread("C111", status.ts)]
    assert any("define_domain" in line for line in thread) and any(
        "start_domain" in line for line in thread
    )
    [dm] = world.fake.dms(DEV)
    assert "demo is ready" in dm.text
    page = await world.system.core.list_workspaces(ADMIN, name="demo")
    [created] = page.items
    assert created.owner == "dana.dev@example.com" and created.state.value == "running"
    assert libvirt.open("test:///default").lookupByName(created.domain_name).isActive()


async def test_the_word_payload_in_a_command_is_not_lost(world: SlackWorld) -> None:
    resp = await world.command("create payload-svc")
    assert resp.status == 200
    await world.settle()
    page = await world.system.core.list_workspaces(ADMIN, name="payload-svc")
    assert [w.state.value for w in page.items] == ["running"]


async def test_approval_buttons_decide_once_and_only_for_ops(world: SlackWorld) -> None:
    await world.command("create big plan=large")
    await world.settle()
    [request] = top_level(world, OPS_CHANNEL)
    [actions] = [block for block in request.blocks if block["type"] == "actions"]
    buttons = actions["elements"]
    assert "plan large requires approval" in request.text
    assert [(b["text"]["text"], b.get("style")) for b in buttons] == [
        ("Approve", "primary"),
        ("Deny", "danger"),
    ]
    approval_id = buttons[0]["value"]

    def click(user: str, action: str = "approve_request") -> str:
        return sp.block_action(
            action, approval_id, user_id=user, channel_id=OPS_CHANNEL, message=request.to_payload()
        )

    assert (await world.post(click(DEV))).status == 200
    await world.settle()
    assert "may not" in world.fake.ephemerals[-1].text
    assert (await world.post(click(OPS))).status == 200
    assert (await world.post(click(OTHER_OPS))).status == 200
    await world.settle()
    decided = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert "Approved by olga.ops@example.com" in decided.text
    assert all(block["type"] != "actions" for block in decided.blocks)
    assert "already approved by olga.ops@example.com" in world.fake.ephemerals[-1].text
    page = await world.system.core.list_workspaces(ADMIN, name="big")
    assert [w.state.value for w in page.items] == ["running"]
    assert any("approved" in m.text.lower() for m in world.fake.dms(DEV))


def test_manifest_points_every_feature_at_the_one_endpoint() -> None:
    import yaml

    manifest = yaml.safe_load((Path(__file__).parent.parent / "slack-manifest.yml").read_text())
    urls = {
        manifest["features"]["slash_commands"][0]["url"],
        manifest["settings"]["event_subscriptions"]["request_url"],
        manifest["settings"]["interactivity"]["request_url"],
    }
    assert len(urls) == 1 and urls.pop().endswith("/slack/events")
    assert manifest["features"]["slash_commands"][0]["command"] == "/workspace"
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "im:write", "users:read", "users:read.email"} <= scopes
