"""The Slack edge assembled: Bolt app, command listener, interactions, sync loop, Socket Mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands, host_keys, interactions, onboard_buttons
from bot.commands import Invocation
from bot.deps import BotConfig, BotDeps
from bot.errors import guarded
from bot.http import slack_handler
from bot.identity import Identity
from bot.redacting import RedactingWebClient
from bot.sync import MessageSync
from bot.tasks import TaskSet
from provisioner.approvals import Approvals
from provisioner.conversations import Conversations
from provisioner.errors import ConfigError, InvalidInput
from provisioner.keys import SshKeys
from provisioner.redaction import redact
from provisioner.service import Provisioner

log = logging.getLogger(__name__)
REFUSED_TOKEN = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "account_inactive"}
)


@dataclass(frozen=True)
class SlackCredentials:
    """How to reach Slack and prove requests come from it."""

    bot_token: str
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str = "https://slack.com/api/"


def web_client(credentials: SlackCredentials) -> AsyncWebClient:
    """One Web API client for everything: redacting, retrying 429 and dropped connections."""
    return RedactingWebClient(
        token=credentials.bot_token,
        base_url=credentials.api_url,
        timeout=15,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
        ],
    )


class SlackBot:
    """Slash commands, buttons, modals, App Home and the messages that follow operations."""

    def __init__(
        self,
        credentials: SlackCredentials,
        config: BotConfig,
        *,
        core: Provisioner,
        approvals: Approvals,
        conversations: Conversations,
        keys: SshKeys,
    ) -> None:
        client = web_client(credentials)
        self.deps = BotDeps(
            core, approvals, conversations, keys, client, Identity(client, config.ops_users), config
        )
        self.tasks = TaskSet()
        self.sync = MessageSync(self.deps)
        self._credentials = credentials
        self.bolt = AsyncApp(
            client=client,
            signing_secret=credentials.signing_secret,
            request_verification_enabled=credentials.app_token is None,
            # Our listeners ack and hand off at once; with False, Bolt would poll every 10 ms
            # for the ack and let the handed-off work run first.
            process_before_response=True,
        )
        self._register_command()
        buttons = interactions.Interactions(self.deps, self.tasks, self.sync)
        buttons.register(self.bolt)
        host_keys.HostKeyButtons(self.deps, buttons.spawn).register(self.bolt)
        self.onboard = onboard_buttons.register(self.bolt, self.deps, buttons.spawn, self.tasks)
        self._sync_task: asyncio.Task[None] | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._connect_task: asyncio.Task[None] | None = None

    def _register_command(self) -> None:
        """The slash command: parse (pure, instant), ack, then work in the background."""
        deps, slash = self.deps, self.deps.config.slash_command

        @self.bolt.command(slash)
        async def on_command(ack: Any, command: dict[str, Any], respond: Any) -> None:
            try:
                found, args = commands.lookup(slash, command.get("text", ""))
            except InvalidInput as error:
                await ack(redact(error.message))
                return
            await ack()

            async def reply(text: str) -> None:
                await respond(text=redact(text), response_type="ephemeral")

            async def work() -> None:
                user = await deps.identity.user(command["user_id"])
                invocation = Invocation(
                    user, command["channel_id"], command["trigger_id"], args, reply
                )
                await commands.run(deps, found, invocation)

            urgent = found.form_without_args and not args
            self.tasks.spawn(guarded(work(), reply), f"command-{found.name}", urgent=urgent)

    def mount(self, app: web.Application) -> None:
        """Serve Slack's requests at POST /slack/events (HTTP mode)."""
        if self._credentials.signing_secret:
            handler = slack_handler(self.bolt, self._credentials.signing_secret)
            app.router.add_post("/slack/events", handler)

    async def start(self) -> None:
        """Start the sync loop, and Socket Mode when an app token is set."""
        self._sync_task = asyncio.create_task(self.sync.run_forever(), name="slack-sync")
        app_token = self._credentials.app_token
        if app_token:
            await self._check_app_token(app_token)
            self._socket = AsyncSocketModeHandler(self.bolt, app_token)
            # slack-sdk retries a failed connect forever: keep it off the start-up path.
            self._connect_task = asyncio.create_task(
                self._socket.connect_async(),  # type: ignore[no-untyped-call]
                name="slack-socket-connect",
            )

    async def _check_app_token(self, app_token: str) -> None:
        """ConfigError now for a token Slack refuses; an outage only delays the connection."""
        try:
            await self.deps.client.apps_connections_open(app_token=app_token)
        except SlackApiError as error:
            code = error.response.get("error")
            if code in REFUSED_TOKEN:
                raise ConfigError(f"SLACK_APP_TOKEN was refused by Slack ({code})") from None
            log.warning("Slack Socket Mode not reachable yet (%s); will keep trying", code)
        except (OSError, TimeoutError) as error:
            log.warning("Slack Socket Mode not reachable yet (%s); will keep trying", error)

    async def stop(self) -> None:
        """Finish handed-off work, stop the loop and Socket Mode."""
        await self.tasks.drain(timeout=10.0)
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]

    async def remind(self) -> None:
        """DM owners of workspaces that expire soon (a scheduler job)."""
        sent = await self.sync.remind_once()
        if sent:
            log.info("sent %d expiry reminder(s)", sent)
