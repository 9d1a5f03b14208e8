"""A running system with Slack on, talking to the fake Slack, driven by signed requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from provisioner.app import cli as main
from provisioner.app.cli import System
from provisioner.settings import Settings, SlackSettings
from tests.fakes import slack_payloads as sp
from tests.fakes.slack_api import FakeSlack

SECRET = "test-signing-secret"
DEV, OPS, OTHER_OPS = "U222", "UOPS1", "UOPS2"
OPS_CHANNEL = "COPS"


@dataclass
class SlackWorld:
    """The system under test, its HTTP client, and the fake Slack it talks to."""

    system: System
    client: TestClient[Any, Any]
    fake: FakeSlack

    async def post(self, body: str, **headers: str) -> ClientResponse:
        """POST a body to /slack/events, signed as Slack would."""
        return await self.client.post(
            "/slack/events", data=body, headers={**sp.signed_headers(body, SECRET), **headers}
        )

    async def command(self, text: str, user_id: str = DEV, **extra: Any) -> ClientResponse:
        """Run `/workspace TEXT` as `user_id`."""
        body = sp.slash_command(
            text, user_id=user_id, response_url=self.fake.response_url(0), **extra
        )
        return await self.post(body)

    async def settle(self) -> None:
        """Let handed-off work, the workers and one sync round finish."""
        bot = self.system.bot
        assert bot is not None
        for _ in range(200):
            await bot.tasks.idle()
            async with self.system.store.read() as tx:
                busy = await tx.count_operations_by_state()
            if not any(busy.get(s, 0) for s in ("pending", "running")):
                break
            await asyncio.sleep(0.02)
        await bot.sync.sync_once()
        await bot.tasks.idle()


@asynccontextmanager
async def slack_world(settings: Settings, **slack: Any) -> AsyncIterator[SlackWorld]:
    """A system with Slack configured against a fresh fake; workers and sync running."""
    async with FakeSlack.running() as fake:
        fake.add_user(DEV, email="dana.dev@example.com")
        fake.add_user(OPS, email="olga.ops@example.com")
        fake.add_user(OTHER_OPS, email="omar.ops@example.com")
        slack_settings = SlackSettings(
            bot_token="xoxb-test",
            signing_secret=SECRET,
            app_token=None,
            api_url=fake.api_url,
            slash_command="/workspace",
            ops_channel=OPS_CHANNEL,
            ops_users=frozenset({OPS, OTHER_OPS}),
        )
        configured = replace(settings, slack=replace(slack_settings, **slack))
        async with main.built(configured) as system:
            assert system.bot is not None
            system.bot.deps.config = replace(system.bot.deps.config, update_interval=0.0)
            await main.ensure_admin(system)
            system.runner.start()
            await system.bot.start()
            try:
                async with TestClient(TestServer(system.api())) as client:
                    yield SlackWorld(system, client, fake)
            finally:
                await system.bot.stop()
                await system.runner.stop(5)
