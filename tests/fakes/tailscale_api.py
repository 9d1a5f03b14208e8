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
tailscale_auth's; the policy file and tag ownership are tailscale_acl's; auth keys are
tailscale_keys'.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.tailnet_common import (
    RECORD,
    Addresses,
    JoinRefused,
    Refusal,
    dns_label,
    stamp,
    unique_label,
)
from tests.fakes.tailnet_policy import valid_tag
from tests.fakes.tailscale_auth import Principal
from tests.fakes.tailscale_keys import TailscaleKeys

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


class FakeTailscale(TailscaleKeys):
    """The fake Tailscale control plane: users, credentials, devices, keys and the policy file."""

    def __init__(self, *, domain: str = "tail1234.ts.net", **options: Any) -> None:
        super().__init__(**options)
        self.domain = domain
        self.filters_supported = True  # False: ignore field=value filters, like older tailnets
        self.devices: dict[str, Device] = {}
        self._addresses = Addresses(first=0x2A4E)
        self._ids = itertools.count(92960230385)
        for method, path, scope, handler in (
            ("GET", "/api/v2/tailnet/{tailnet}/devices", "devices:core:read", self._list),
            ("GET", "/api/v2/device/{id}", "devices:core:read", self._get_device),
            ("DELETE", "/api/v2/device/{id}", "devices:core", self._delete_device),
            ("POST", "/api/v2/device/{id}/tags", "devices:core", self._set_tags),
            ("POST", "/api/v2/device/{id}/key", "devices:core", self._set_key_expiry),
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


def _field_matches(value: Any, wanted: str) -> bool:
    """The list filter: exact match; lists match when they contain the value."""
    if isinstance(value, list):
        return wanted in value
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return str(value) == wanted
