"""The Slack edge over Socket Mode: envelopes in over a loopback WebSocket, Web API calls out.

The fake Slack hands out a ``ws://127.0.0.1`` URL from ``apps.connections.open``; the real
Bolt ``AsyncSocketModeHandler`` (slack_sdk's aiohttp client) connects there, and tests push
envelopes and read the acks the app sends back.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from provisioner.app import cli as main
from provisioner.errors import ConfigError
from provisioner.models import Actor, Role
from provisioner.settings import Settings, SlackSettings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlack, Message
from tests.slack_harness import DEV, OPS, OPS_CHANNEL, SECRET, SlackWorld, slack_world

ADMIN = Actor("test-admin", Role.ADMIN, "test")
APP_TOKEN = "xapp-1-test"
ACK_BUDGET = 1.0  # Slack allows 3 s; the app must ack well within it


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[SlackWorld]:
    """Slack on in Socket Mode (app token, no signing secret), against a fresh fake."""
    async with slack_world(settings, app_token=APP_TOKEN, signing_secret=None) as built:
        await built.fake.socket_connected()
        yield built


def top_level(world: SlackWorld, channel: str) -> list[Message]:
    """Messages in a channel, without thread replies."""
    return [m for m in world.fake.channel(channel) if m.thread_ts is None]


async def send(
    world: SlackWorld, kind: str, body: str | dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """Push an envelope; the ack JSON and the seconds it took to arrive."""
    started = time.perf_counter()
    envelope_id = await world.fake.socket_send(FakeSlack.socket_envelope(kind, body))
    ack = await world.fake.socket_ack(envelope_id, timeout=3.0)
    return ack, time.perf_counter() - started


async def command(world: SlackWorld, text: str, user_id: str = DEV) -> tuple[dict[str, Any], float]:
    """`/workspace TEXT` as a slash_commands envelope."""
    body = sp.slash_command(text, user_id=user_id, response_url=world.fake.response_url(0))
    return await send(world, "slash_commands", body)


async def test_bot_connects_with_the_app_token(world: SlackWorld) -> None:
    # Start-up checks the token once (a refused token fails fast), then the client connects.
    checked, opened = world.fake.calls_of("apps.connections.open")
    for call in (checked, opened):
        assert call.headers["Authorization"] == f"Bearer {APP_TOKEN}"
    assert opened.reply["ok"] is True and opened.reply["url"].startswith("ws://127.0.0.1:")
    [conn] = world.fake.socket_connections
    assert conn.open and conn.sent[0]["type"] == "hello"
    assert conn.sent[0]["connection_info"] == {"app_id": "A111"}
    # The client pings right after connecting (sdk-ping-pong) and gets the pong.
    for _ in range(100):
        if conn.pings:
            break
        await asyncio.sleep(0.01)
    assert conn.pings >= 1
    # Only apps.connections.open carries the app-level token; Web API calls use the bot's.
    others = [c for c in world.fake.calls if c.method != "apps.connections.open"]
    assert all(c.token != APP_TOKEN for c in others)


async def test_slash_command_is_acked_at_once_then_creates_and_reports(
    world: SlackWorld,
) -> None:
    ack, took = await command(world, "create demo plan=small")
    assert took < ACK_BUDGET, f"ack took {took:.3f}s"
    assert set(ack) == {"envelope_id"}  # a bare ack: nothing shown in the channel yet
    record = world.fake.socket_ack_of(ack["envelope_id"])
    assert record is not None and record.latency is not None and record.latency < ACK_BUDGET
    await world.settle()
    [status] = top_level(world, "C111")
    assert "done" in status.text and "running" in status.text
    thread = [m.text for m in world.fake.thread("C111", status.ts)]
    assert any("define_domain" in line for line in thread)
    [dm] = world.fake.dms(DEV)
    assert "demo is ready" in dm.text
    page = await world.system.core.list_workspaces(ADMIN, name="demo")
    [created] = page.items
    assert created.owner == "dana.dev@example.com" and created.state.value == "running"


async def test_help_and_typo_answer_through_the_socket(world: SlackWorld) -> None:
    typo, took = await command(world, "creat demo")
    assert took < ACK_BUDGET
    assert "Did you mean `/workspace create`?" in typo["payload"]["text"]
    help_ack, _ = await command(world, "help")
    assert "payload" not in help_ack
    await world.settle()
    [answer] = world.fake.responses(0)
    assert "/workspace create [name]" in answer["text"] and answer["response_type"] == "ephemeral"


async def test_approval_click_over_the_socket_decides(world: SlackWorld) -> None:
    await command(world, "create big plan=large")
    await world.settle()
    [request] = top_level(world, OPS_CHANNEL)
    [actions] = [b for b in request.blocks or [] if b["type"] == "actions"]
    approval_id = actions["elements"][0]["value"]

    def click(user: str) -> str:
        return sp.block_action(
            "approve_request",
            approval_id,
            user_id=user,
            channel_id=OPS_CHANNEL,
            message=request.to_payload(),
        )

    refused, _ = await send(world, "interactive", click(DEV))
    assert set(refused) == {"envelope_id"}
    await world.settle()
    assert "may not" in world.fake.ephemerals[-1].text
    ack, took = await send(world, "interactive", click(OPS))
    assert took < ACK_BUDGET and set(ack) == {"envelope_id"}
    await world.settle()
    decided = world.fake.messages[(OPS_CHANNEL, request.ts)]
    assert "Approved by olga.ops@example.com" in decided.text
    assert all(block["type"] != "actions" for block in decided.blocks or [])
    page = await world.system.core.list_workspaces(ADMIN, name="big")
    assert [w.state.value for w in page.items] == ["running"]


async def test_app_home_opened_event_publishes_home(world: SlackWorld) -> None:
    ack, took = await send(world, "events_api", sp.event(sp.app_home_opened(DEV, tab="messages")))
    assert set(ack) == {"envelope_id"} and took < ACK_BUDGET
    await world.settle()
    assert world.fake.calls_of("views.publish") == []
    ack, took = await send(world, "events_api", sp.event(sp.app_home_opened(DEV)))
    assert set(ack) == {"envelope_id"} and took < ACK_BUDGET
    await world.fake.wait_for("views.publish")
    await world.settle()
    home = world.fake.home(DEV)
    assert home is not None and home["type"] == "home"


async def test_no_http_endpoint_in_socket_mode(world: SlackWorld) -> None:
    body = sp.slash_command("create sneaky", user_id=DEV)
    unsigned = await world.client.post("/slack/events", data=body)
    signed = await world.client.post(
        "/slack/events", data=body, headers=sp.signed_headers(body, SECRET)
    )
    assert (unsigned.status, signed.status) == (404, 404)
    await world.settle()
    page = await world.system.core.list_workspaces(ADMIN, name="sneaky")
    assert not page.items


async def test_refresh_requested_reconnects_on_a_new_url(world: SlackWorld) -> None:
    first = await world.fake.socket_connected()
    await world.fake.socket_disconnect("refresh_requested")
    second = await world.fake.socket_connected(count=2)
    assert second is not first and second.ticket != first.ticket
    assert len(world.fake.calls_of("apps.connections.open")) == 3  # check, connect, reconnect
    for _ in range(100):  # the client closes the old connection itself
        if not first.open:
            break
        await asyncio.sleep(0.01)
    assert not first.open
    ack, took = await command(world, "help")
    assert took < ACK_BUDGET and ack["envelope_id"]
    assert world.fake.socket_ack_of(ack["envelope_id"]) in world.fake.socket_acks


async def test_shutdown_closes_the_socket_cleanly(
    world: SlackWorld, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await world.fake.socket_connected()
    await command(world, "help")
    await world.settle()
    bot = world.system.bot
    assert bot is not None
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        await bot.stop()
        took = time.perf_counter() - started
        await asyncio.sleep(0.05)  # let cancelled client tasks finish
        gc.collect()
    assert took < 2.0, f"stop took {took:.2f}s"
    assert not conn.open and conn.close_code == 1000  # client-initiated normal closure
    leftover = [
        t for t in asyncio.all_tasks() if "socket_mode" in repr(t.get_coro()) and not t.done()
    ]
    assert leftover == []
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(world.fake.socket_connections) == 1  # no reconnect attempt after stop


async def test_fake_only_accepts_app_level_tokens() -> None:
    async with FakeSlack.running() as fake:
        bot = AsyncWebClient(token="xoxb-test", base_url=fake.api_url)
        with pytest.raises(SlackApiError) as refused:
            await bot.apps_connections_open(app_token="xoxb-test")
        assert refused.value.response["error"] == "not_allowed_token_type"
        opened = await bot.apps_connections_open(app_token=APP_TOKEN)
        assert opened["url"].startswith(f"ws://127.0.0.1:{fake.base_url.rsplit(':', 1)[1]}/link?")


async def test_rejected_app_token_does_not_hang_start(tmp_path: Path) -> None:
    async with FakeSlack.running() as fake:
        fake.fail_next(
            "apps.connections.open", 200, {"ok": False, "error": "invalid_auth"}, times=99
        )
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
            admin_token="prov_test-admin-" + "x" * 24,
            slack=SlackSettings(
                bot_token="xoxb-test",
                signing_secret=None,
                app_token=APP_TOKEN,
                api_url=fake.api_url,
                slash_command="/workspace",
                ops_channel=OPS_CHANNEL,
                ops_users=frozenset({OPS}),
            ),
        )
        async with main.built(settings) as system:
            assert system.bot is not None
            start = asyncio.create_task(system.bot.start())
            done, _ = await asyncio.wait({start}, timeout=2.0)
            try:
                assert start in done, "start() still blocked after 2 s"
                error = start.exception()
                assert isinstance(error, ConfigError) and "SLACK_APP_TOKEN" in error.message
            finally:
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                await system.bot.stop()
