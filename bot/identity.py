"""Who a Slack user is to the provisioner: e-mail → owner, ops list → role, and their tag."""

from __future__ import annotations

import time
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from acl.rbac import actor
from provisioner.errors import InfrastructureError, InvalidInput
from provisioner.models import Actor, Role
from provisioner.requests import owner_tag

CACHE_SECONDS = 600.0


@dataclass(frozen=True)
class SlackUser:
    """A Slack user as the provisioner knows them."""

    user_id: str
    email: str
    actor: Actor

    @property
    def tag(self) -> str:
        """The owner's Tailscale tag (InvalidInput when the e-mail cannot make one)."""
        return owner_tag(self.email)


class Identity:
    """Maps Slack user ids to actors through users.info, cached for a while."""

    def __init__(self, client: AsyncWebClient, ops_users: frozenset[str]) -> None:
        self._client, self._ops = client, ops_users
        self._cache: dict[str, tuple[float, SlackUser]] = {}
        self._by_email: dict[str, str] = {}

    async def user(self, user_id: str) -> SlackUser:
        """The provisioner identity of a Slack user (InvalidInput if they have no e-mail)."""
        cached = self._cache.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            answer = await self._client.users_info(user=user_id)
        except SlackApiError as error:
            raise InfrastructureError(
                f"Slack users.info failed: {error.response.get('error')}"
            ) from None
        email = str((answer.get("user") or {}).get("profile", {}).get("email") or "").lower()
        if not email:
            raise InvalidInput(
                "your Slack profile shows no e-mail to the app; an admin must grant it "
                "the users:read.email scope"
            )
        role = Role.OPERATOR if user_id in self._ops else Role.DEVELOPER
        user = SlackUser(user_id, email, actor(email, role, "slack"))
        self._cache[user_id] = (time.monotonic(), user)
        self._by_email[email] = user_id
        return user

    async def user_id_for(self, email: str) -> str | None:
        """The Slack user id behind an owner's e-mail, if Slack knows one."""
        if email in self._by_email:
            return self._by_email[email]
        try:
            answer = await self._client.users_lookupByEmail(email=email)
        except SlackApiError:
            return None
        user_id = (answer.get("user") or {}).get("id")
        if user_id:
            self._by_email[email] = str(user_id)
        return str(user_id) if user_id else None

    def is_ops(self, user_id: str) -> bool:
        """Whether the user may decide approvals."""
        return user_id in self._ops
