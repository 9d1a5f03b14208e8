"""Buttons, modals and App Home: each listener acks at once and hands the work off."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp

from acl.rbac import Permission, require
from bot import views
from bot.deps import BotDeps
from bot.errors import guarded
from bot.sync import MessageSync
from bot.tasks import TaskSet
from provisioner.errors import InvalidInput, ProvisionerError
from provisioner.models import OperationKind
from provisioner.playbook_runs import resolve_runs
from provisioner.requests import (
    CreateRequest,
    Idempotency,
    ttl_hours,
    workspace_name,
)

Ack = Callable[..., Awaitable[None]]
HOME_ACTIONS = {
    "home_stop": OperationKind.STOP,
    "home_start": OperationKind.START,
    "home_delete": OperationKind.DELETE,
}
HOME_ACTION_IDS = re.compile(f"^({'|'.join([*HOME_ACTIONS, 'extend_ws'])})$")


class Interactions:
    """Button, modal and App Home listeners; each acks, then hands its work to the task set."""

    def __init__(self, deps: BotDeps, tasks: TaskSet, sync: MessageSync) -> None:
        self.deps, self.tasks, self.sync = deps, tasks, sync

    def register(self, bolt: AsyncApp) -> None:
        """Attach every listener to the Bolt app."""
        bolt.action("approve_request")(self.approve)
        bolt.action("deny_request")(self.deny)
        bolt.view("deny_reason")(self.deny_submitted)
        bolt.action("open_create_modal")(self.open_create)
        bolt.view("create_ws")(self.create_submitted)
        bolt.action(HOME_ACTION_IDS)(self.home_action)
        bolt.event("app_home_opened")(self.home_opened)

    async def ephemeral(self, body: dict[str, Any], text: str) -> None:
        """Answer the clicker privately where they clicked (by DM from App Home or a modal)."""
        user_id = body["user"]["id"]
        channel = (body.get("container") or {}).get("channel_id")
        if channel:
            await self.deps.client.chat_postEphemeral(channel=channel, user=user_id, text=text)
        else:
            dm = await self.deps.dm_channel(user_id)
            await self.deps.client.chat_postMessage(channel=dm, text=text)

    def spawn(
        self, body: dict[str, Any], work: Awaitable[None], name: str, *, urgent: bool = False
    ) -> None:
        """Run `work` after the ack; its errors go privately to whoever acted."""

        async def tell(text: str) -> None:
            await self.ephemeral(body, text)

        self.tasks.spawn(guarded(work, tell), name, urgent=urgent)

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """Open a modal (the trigger id lasts 3 s, so this runs right after the ack)."""
        await self.deps.client.views_open(trigger_id=trigger_id, view=view)

    async def decide(
        self, body: dict[str, Any], approval_id: str, approve: bool, reason: str | None
    ) -> None:
        """One operator's decision; the store makes sure only the first one counts."""
        user = await self.deps.identity.user(body["user"]["id"])
        require(user.actor, Permission.DECIDE_APPROVALS)
        await self.deps.approvals.decide(user.actor, approval_id, approve=approve, reason=reason)
        self.deps.wake_sync.set()

    async def approve(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Approve button."""
        await ack()
        self.spawn(body, self.decide(body, body["actions"][0]["value"], True, None), "approve")

    async def deny(self, ack: Ack, body: dict[str, Any]) -> None:
        """The Deny button: ask for a reason first."""
        await ack()
        view = views.deny_modal(body["actions"][0]["value"])
        # Urgent: the trigger id expires 3 s after the click.
        self.spawn(body, self.open_view(body["trigger_id"], view), "deny-modal", urgent=True)

    async def deny_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The reason modal: a reason is required."""
        reason = (view["state"]["values"]["reason"]["reason"].get("value") or "").strip()
        if not reason:
            await ack(
                response_action="errors", errors={"reason": "Say why, so the requester can adjust."}
            )
            return
        await ack()
        self.spawn(body, self.decide(body, view["private_metadata"], False, reason), "deny")

    async def open_create(self, ack: Ack, body: dict[str, Any]) -> None:
        """The App Home's New workspace button."""
        await ack()
        catalog = self.deps.core.catalog
        view = views.create_modal(catalog.plans.values(), catalog.images.values(), "")
        self.spawn(body, self.open_view(body["trigger_id"], view), "create-modal", urgent=True)

    async def create_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The create form: field errors show in the form, the create runs after the ack."""
        try:
            request = await form_request(view["state"]["values"], self.deps)
        except FieldError as error:
            await ack(response_action="errors", errors={error.field: error.message})
            return
        await ack()
        channel = json.loads(view.get("private_metadata") or "{}").get("channel") or ""
        self.spawn(body, self.create_from_form(body, view["id"], request, channel), "create-form")

    async def create_from_form(
        self, body: dict[str, Any], view_id: str, request: CreateRequest, channel: str
    ) -> None:
        """Create what the form asked for; a resubmitted form replays the first create."""
        deps = self.deps
        user = await deps.identity.user(body["user"]["id"])
        key = Idempotency(f"slack-view:{view_id}", view_id)
        ws, op = await deps.core.create_workspace(user.actor, request, key)
        await deps.post_status(channel or await deps.dm_channel(user.user_id), user.user_id, op, ws)

    async def home_action(self, ack: Ack, body: dict[str, Any]) -> None:
        """Stop, Start, Extend or Delete from App Home or a reminder."""
        await ack()
        self.spawn(body, self.act_on_workspace(body), body["actions"][0]["action_id"])

    async def act_on_workspace(self, body: dict[str, Any]) -> None:
        """Do what the button says, then refresh the user's App Home."""
        deps, action = self.deps, body["actions"][0]
        user = await deps.identity.user(body["user"]["id"])
        ws = await deps.core.get_workspace(user.actor, action["value"])
        if action["action_id"] == "extend_ws":
            ws = await deps.core.extend_workspace(user.actor, ws.id, 24)
            await self.ephemeral(body, f"*{ws.name}* now expires {views.when(ws.expires_at)}.")
        else:
            kind = HOME_ACTIONS[action["action_id"]]
            if kind == OperationKind.DELETE:
                op = await deps.core.delete_workspace(user.actor, ws.id)
            else:
                op = await deps.core.power(user.actor, ws.id, kind)
            await deps.post_status(await deps.dm_channel(user.user_id), user.user_id, op, ws)
        await self.sync.publish_home(user.user_id)

    async def home_opened(self, event: dict[str, Any]) -> None:
        """Publish App Home when its Home tab is opened."""
        if event.get("tab") == "home":
            body = {"user": {"id": event["user"]}}
            self.spawn(body, self.sync.publish_home(event["user"]), "home")


class FieldError(Exception):
    """A form value the modal should flag next to its field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


async def form_request(values: dict[str, Any], deps: BotDeps) -> CreateRequest:
    """A create request from the modal's values, checked field by field."""

    def value(block: str) -> Any:
        element = values.get(block, {}).get(block, {})
        if "selected_option" in element:
            return (element["selected_option"] or {}).get("value")
        return element.get("value")

    playbooks = tuple(
        line.strip() for line in (value("playbooks") or "").splitlines() if line.strip()
    )
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("plan", lambda: deps.core.catalog.plan(value("plan") or "")),
        ("image", lambda: deps.core.catalog.image(value("image") or "")),
        ("name", lambda: value("name") and workspace_name(value("name"), "x")),
    ]
    for field, check in checks:
        try:
            check()
        except ProvisionerError as error:
            raise FieldError(field, error.message) from None
    try:
        await resolve_runs(deps.core.playbooks, playbooks)
    except ProvisionerError as error:
        raise FieldError("playbooks", error.message) from None
    ttl = value("ttl")
    if ttl is not None:
        try:
            ttl_hours(deps.core.catalog.plan(value("plan")), int(ttl))
        except (ValueError, InvalidInput) as error:
            raise FieldError("ttl", getattr(error, "message", "a whole number of hours")) from None
    return CreateRequest(
        plan=value("plan"),
        image=value("image"),
        name=value("name") or None,
        ttl_hours=int(ttl) if ttl is not None else None,
        playbooks=playbooks,
    )
