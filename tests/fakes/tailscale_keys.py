"""Auth keys of the fake Tailscale API (reference §3): create, list, get, revoke.

Create follows §3.2: a user's key may carry tags the user may apply; a trust credential's key
must carry tags, exactly the client's or tags they own (a subset is refused, as observed).
The secret is only in the create answer; revoked, expired and spent one-off keys are listed
with `invalid: true`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.tailnet_common import RECORD, Refusal, stamp
from tests.fakes.tailnet_policy import valid_tag
from tests.fakes.tailscale_acl import TailscaleACL
from tests.fakes.tailscale_auth import Principal

NINETY_DAYS = 90 * 86400


@dataclass
class Key:
    """An auth key; `secret` leaves the fake only in the create answer."""

    id: str
    secret: str
    created: datetime
    expires: datetime
    description: str
    tags: list[str]
    user_id: str | None
    reusable: bool = False
    ephemeral: bool = False
    preauthorized: bool = False
    revoked: datetime | None = None
    uses: int = 0
    devices: list[str] = field(default_factory=list)

    def invalid(self, now: datetime) -> bool:
        return (
            self.revoked is not None or self.expires <= now or (not self.reusable and self.uses > 0)
        )


class TailscaleKeys(TailscaleACL):
    """Key state and routes; devices come on top (tailscale_api)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.keys: dict[str, Key] = {}
        path = "/api/v2/tailnet/{tailnet}/keys"
        self.route("POST", path, "auth_keys", self._create_key)
        self.route("GET", path, "auth_keys:read", self._list_keys)
        self.route("GET", path + "/{key}", "auth_keys:read", self._get_key)
        self.route("DELETE", path + "/{key}", "auth_keys", self._revoke_key)

    def key_json(self, key: Key, *, secret: bool = False) -> dict[str, Any]:
        """The API's Key object; the secret only when it was just created."""
        create = {"reusable": key.reusable, "ephemeral": key.ephemeral,
                  "preauthorized": key.preauthorized, "tags": list(key.tags)}  # fmt: skip
        body: dict[str, Any] = {
            "id": key.id, "keyType": "auth", "description": key.description,
            "created": stamp(key.created), "updated": stamp(key.created),
            "expires": stamp(key.expires), "capabilities": {"devices": {"create": create}},
            "userId": key.user_id or "",
        }  # fmt: skip
        if secret:
            body["key"] = key.secret
        if key.revoked:
            body["revoked"] = stamp(key.revoked)
        if key.invalid(self.now()):
            body["invalid"] = True
        return body

    async def _create_key(self, request: web.Request, who: Principal) -> web.Response:
        body = request[RECORD].body
        if not isinstance(body, dict) or not isinstance(
            body.get("capabilities", {}).get("devices"), dict
        ):
            raise Refusal(400, "capabilities.devices is required")
        if body.get("keyType", "auth") != "auth":
            raise Refusal(400, "this fake creates auth keys only")
        create = body["capabilities"]["devices"].get("create") or {}
        tags = list(create.get("tags") or [])
        self._check_key_tags(who, tags)
        description = str(body.get("description") or "")
        if len(description) > 50 or not all(c.isalnum() or c in " -_" for c in description):
            raise Refusal(
                400, "description: at most 50 letters, digits, hyphens, spaces or underscores"
            )
        expiry = int(body.get("expirySeconds") or NINETY_DAYS)
        if not 0 < expiry <= NINETY_DAYS:
            raise Refusal(400, "expirySeconds must be between 1 and 7776000")
        key_id = f"k{secrets.token_hex(5)}CNTRL"
        key = Key(
            id=key_id, secret=f"tskey-auth-{key_id}-{secrets.token_urlsafe(24)}",
            created=self.now(), expires=self.now() + timedelta(seconds=expiry),
            description=description, tags=sorted(set(tags)),
            user_id=who.user.id if who.user else None,
            reusable=bool(create.get("reusable")), ephemeral=bool(create.get("ephemeral")),
            preauthorized=bool(create.get("preauthorized")),
        )  # fmt: skip
        self.keys[key.id] = key
        return web.json_response(self.key_json(key, secret=True))

    def _check_key_tags(self, who: Principal, tags: list[str]) -> None:
        """Reference §3.2: a user may tag what it owns; a trust credential must tag, exactly."""
        bad = [t for t in tags if not valid_tag(t) or not self.may_apply(who, t)]
        if who.user is None and "all" not in who.scopes:
            if not tags:
                raise Refusal(400, "auth keys created by trust credentials must have tags")
            owned = all(self.owned_by_tags(t, who.tags) for t in tags)
            if set(tags) != set(who.tags) and not owned:
                bad = bad or tags  # the observed quirk: a subset of the client's tags is refused
        if bad:
            raise Refusal(400, f"requested tags [{' '.join(bad)}] are invalid or not permitted")

    def _visible_keys(self, request: web.Request, who: Principal) -> list[Key]:
        if request.query.get("all") == "true":
            return list(self.keys.values())
        owner = who.user.id if who.user else None
        return [k for k in self.keys.values() if k.user_id == owner]

    async def _list_keys(self, request: web.Request, who: Principal) -> web.Response:
        keys = self._visible_keys(request, who)
        return web.json_response({"keys": [self.key_json(k) for k in keys]})

    async def _get_key(self, request: web.Request, who: Principal) -> web.Response:
        key = self.keys.get(request.match_info["key"])
        if key is None:
            raise Refusal(404, "not found")
        return web.json_response(self.key_json(key))

    async def _revoke_key(self, request: web.Request, who: Principal) -> web.Response:
        key = self.keys.get(request.match_info["key"])
        if key is None:
            raise Refusal(404, "not found")
        key.revoked = key.revoked or self.now()
        return web.Response(status=200)
