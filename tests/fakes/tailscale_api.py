"""A faithful local fake of the Tailscale API v2 (reference §7): devices, auth keys, policy.

Usage::

    async with FakeTailscale.running() as fake:
        api_key = fake.add_api_key("admin@example.com")              # role admin
        client_id, secret = fake.add_oauth_client(
            ["auth_keys", "devices:core", "policy_file"], tags=["tag:provisioner"])
        fake.set_policy('{"tagOwners": {"tag:alice": ["tag:provisioner"]}}')
        # … our client creates a key; the guest joins with it:
        device = fake.register_device(key_secret, "ws-alice-1")      # JoinRefused if spent
        fake.fail(429, retry_after="1"); fake.delay(2.0, times=1)
        fake.calls("POST", "/api/v2/device/" + device.node_id + "/tags")

Serving, faults, the log and `/fake/register` are tailnet_common's; who may call what is
tailscale_auth's; the policy file's routes are tailscale_acl's.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.tailnet_common import (
    RECORD,
    Addresses,
    JoinRefused,
    Refusal,
    dns_label,
    unique_label,
)
from tests.fakes.tailnet_policy import valid_tag
from tests.fakes.tailscale_acl import TailscaleACL
from tests.fakes.tailscale_auth import ADMIN_ROLES, Principal

DEFAULT_FIELDS = [
    "addresses",
    "id",
    "nodeId",
    "user",
    "name",
    "hostname",
    "clientVersion",
    "updateAvailable",
    "os",
    "created",
    "connectedToControl",
    "lastSeen",
    "keyExpiryDisabled",
    "expires",
    "authorized",
    "isExternal",
    "machineKey",
    "nodeKey",
    "blocksIncomingConnections",
    "tailnetLockKey",
    "tailnetLockError",
    "tags",
    "isEphemeral",
]
ALL_FIELDS = frozenset(DEFAULT_FIELDS) | {"enabledRoutes", "advertisedRoutes", "sshEnabled"}
NINETY_DAYS = 90 * 86400


def stamp(moment: datetime | None) -> str | None:
    """RFC 3339 with Z, as the API writes times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


@dataclass
class Device:
    """A machine on the fake tailnet."""

    id: str
    node_id: str
    hostname: str
    name: str
    addresses: tuple[str, str]
    user: str
    tags: list[str]
    created: datetime
    expires: datetime
    authorized: bool = True
    key_expiry_disabled: bool = False
    is_ephemeral: bool = False
    is_external: bool = False
    hidden_polls: int = 0  # the device shows in lists only after this many list calls
    os: str = "linux"


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


class FakeTailscale(TailscaleACL):
    """The fake Tailscale control plane: users, credentials, devices, keys and the policy file."""

    def __init__(self, *, domain: str = "tail1234.ts.net", **options: Any) -> None:
        super().__init__(**options)
        self.domain = domain
        self.filters_supported = True  # False: ignore field=value filters, like older tailnets
        self.devices: dict[str, Device] = {}
        self.keys: dict[str, Key] = {}
        self._addresses = Addresses(first=0x2A4E)
        self._ids = itertools.count(92960230385)
        for method, path, scope, handler in (
            ("GET", "/api/v2/tailnet/{tailnet}/devices", "devices:core:read", self._list),
            ("GET", "/api/v2/device/{id}", "devices:core:read", self._get_device),
            ("DELETE", "/api/v2/device/{id}", "devices:core", self._delete_device),
            ("POST", "/api/v2/device/{id}/tags", "devices:core", self._set_tags),
            ("POST", "/api/v2/device/{id}/key", "devices:core", self._set_key_expiry),
            ("POST", "/api/v2/tailnet/{tailnet}/keys", "auth_keys", self._create_key),
            ("GET", "/api/v2/tailnet/{tailnet}/keys", "auth_keys:read", self._list_keys),
            ("GET", "/api/v2/tailnet/{tailnet}/keys/{key}", "auth_keys:read", self._get_key),
            ("DELETE", "/api/v2/tailnet/{tailnet}/keys/{key}", "auth_keys", self._revoke_key),
        ):
            self.route(method, path, scope, handler)

    # Test hooks.

    def add_device(
        self, hostname: str, *, tags: list[str] | None = None, user: str = "", **flags: Any
    ) -> Device:
        """A device that joined some other way (e.g. `is_external=True` for a shared-in one)."""
        taken = {d.name.split(".")[0] for d in self.devices.values()}
        label = unique_label(dns_label(hostname), taken)
        device = Device(
            id=str(next(self._ids)),
            node_id=f"n{secrets.token_hex(5)}CNTRL",
            hostname=hostname,
            name=f"{label}.{self.domain}",
            addresses=self._addresses.allocate(),
            user=user or "tagged-devices",
            tags=sorted(set(tags or [])),
            created=self.now(),
            expires=self.now() + timedelta(days=180),
            **flags,
        )
        self.devices[device.node_id] = device
        return device

    def register_device(
        self, secret: str, hostname: str, *, visible_after_polls: int = 0, **_: Any
    ) -> Device:
        """`tailscale up --authkey`: spends the key, applies its tags, allocates addresses."""
        key = next(
            (k for k in self.keys.values() if secrets.compare_digest(k.secret, secret)), None
        )
        if key is None:
            raise JoinRefused("invalid key: API key does not exist")
        if key.revoked is not None:
            raise JoinRefused("invalid key: API key has been revoked")
        if key.expires <= self.now():
            raise JoinRefused("invalid key: API key has expired")
        if not key.reusable and key.uses:
            raise JoinRefused("invalid key: one-off API key has already been used")
        key.uses += 1
        owner = next((u.email for u in self.users.values() if u.id == key.user_id), "")
        device = self.add_device(
            hostname, tags=key.tags, user=owner,
            is_ephemeral=key.ephemeral, hidden_polls=visible_after_polls,
        )  # fmt: skip
        key.devices.append(device.node_id)
        return device

    def device_json(self, device: Device, fields: str = "all") -> dict[str, Any]:
        """The API's Device object, `fields=default` or all."""
        full: dict[str, Any] = {
            "addresses": list(device.addresses), "id": device.id, "nodeId": device.node_id,
            "user": device.user, "name": device.name, "hostname": device.hostname,
            "clientVersion": "v1.90.0", "updateAvailable": False, "os": device.os,
            "created": stamp(device.created), "connectedToControl": True,
            "keyExpiryDisabled": device.key_expiry_disabled, "expires": stamp(device.expires),
            "authorized": device.authorized, "isExternal": device.is_external,
            "machineKey": f"mkey:{device.id}", "nodeKey": f"nodekey:{device.id}",
            "blocksIncomingConnections": False, "tailnetLockKey": "", "tailnetLockError": "",
            "tags": list(device.tags), "isEphemeral": device.is_ephemeral,
            "enabledRoutes": [], "advertisedRoutes": [], "sshEnabled": False,
        }  # fmt: skip
        return (
            full
            if "all" in fields.split(",")
            else {k: full[k] for k in DEFAULT_FIELDS if k in full}
        )

    def find(self, device_id: str) -> Device:
        """A device by nodeId or legacy numeric id; 404 otherwise."""
        for device in self.devices.values():
            if device_id in (device.node_id, device.id):
                return device
        raise Refusal(404, "not found")

    def may_apply(self, who: Principal, tag: str) -> bool:
        """Reference §5: whether `who` may put `tag` on a device."""
        policy = self.policy()
        owners = policy.tag_owners(tag)
        if owners is None:
            return False
        if who.user is not None:
            return who.user.role in ADMIN_ROLES or who.user.email in policy.users_owning(tag)
        return "all" in who.scopes or tag in who.tags or any(t in owners for t in who.tags)

    def owned_by_tags(self, tag: str, holder_tags: Any) -> bool:
        owners = self.policy().tag_owners(tag) or []
        return any(t in owners for t in holder_tags)

    # Devices.

    async def _list(self, request: web.Request, who: Principal) -> web.Response:
        fields = request.query.get("fields", "default")
        if "all" in fields.split(",") and any(d.is_external for d in self.devices.values()):
            raise Refusal(404, "not found")  # tailscale/tailscale#21721 (observed)
        shown = []
        for device in list(self.devices.values()):
            if device.hidden_polls > 0:
                device.hidden_polls -= 1
                continue
            shown.append(self.device_json(device, fields))
        filters = [(k, v) for k, v in request.query.items() if k != "fields"]
        filters = filters if self.filters_supported else []
        for key, _ in filters:
            if key not in ALL_FIELDS:
                raise Refusal(400, f"invalid filter field {key!r}")
        shown = [d for d in shown if all(_field_matches(d.get(k), v) for k, v in filters)]
        return web.json_response({"devices": shown})

    async def _get_device(self, request: web.Request, who: Principal) -> web.Response:
        device = self.find(request.match_info["id"])
        return web.json_response(self.device_json(device, request.query.get("fields", "default")))

    async def _delete_device(self, request: web.Request, who: Principal) -> web.Response:
        device = self.find(request.match_info["id"])
        if device.is_external:
            raise Refusal(501, "cannot delete devices outside of your tailnet")
        del self.devices[device.node_id]
        return web.Response(status=200)

    async def _set_tags(self, request: web.Request, who: Principal) -> web.Response:
        device = self.find(request.match_info["id"])
        if device.is_external:
            raise Refusal(404, "no manageable device matching this ID found")
        body = request[RECORD].body
        tags = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Refusal(400, 'invalid request body: want {"tags": [...]}')
        if not tags:
            raise Refusal(400, "cannot remove all tags from a device")
        bad = [t for t in tags if not valid_tag(t) or not self.may_apply(who, t)]
        if bad:
            raise Refusal(400, f"requested tags [{' '.join(bad)}] are invalid or not permitted")
        device.tags = sorted(set(tags))
        return web.json_response({})

    async def _set_key_expiry(self, request: web.Request, who: Principal) -> web.Response:
        device = self.find(request.match_info["id"])
        body = request[RECORD].body
        if not isinstance(body, dict) or not isinstance(body.get("keyExpiryDisabled"), bool):
            raise Refusal(400, 'invalid request body: want {"keyExpiryDisabled": bool}')
        device.key_expiry_disabled = body["keyExpiryDisabled"]
        return web.json_response({})

    # Keys (reference §3).

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


def _field_matches(value: Any, wanted: str) -> bool:
    """The list filter: exact match; lists match when they contain the value."""
    if isinstance(value, list):
        return wanted in value
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return str(value) == wanted
