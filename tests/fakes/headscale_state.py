"""The state of the fake Headscale: users, API keys, pre-auth keys, nodes, policy; its shapes.

JSON is proto3's as grpc-gateway writes it: lowerCamelCase, uint64 as strings, unpopulated
fields kept (null or empty). The routes are headscale_api's.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.tailnet_common import (
    Addresses,
    FakeTailnetServer,
    JoinRefused,
    dns_label,
    stamp,
    unique_label,
)
from tests.fakes.tailnet_policy import HEADSCALE_AUTOGROUPS, Policy

GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 500: 2, 503: 14, 504: 4}
TAGGED_DEVICES = {"id": "2147455555", "name": "tagged-devices", "displayName": "Tagged Devices"}


@dataclass
class HsUser:
    id: int
    name: str
    email: str = ""
    created: datetime | None = None


@dataclass
class PreAuthKey:
    id: int
    prefix: str
    secret: str
    user_id: int | None
    tags: list[str]
    expiration: datetime | None
    created: datetime
    reusable: bool = False
    ephemeral: bool = False
    used: bool = False


@dataclass
class Node:
    id: int
    hostname: str
    given_name: str
    addresses: tuple[str, str]
    user_id: int | None
    tags: list[str]
    created: datetime
    expiry: datetime | None = None
    key_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class HeadscaleState(FakeTailnetServer):
    """Users, API keys, pre-auth keys, nodes and the policy of one fake Headscale."""

    def __init__(self, *, policy_mode: str = "database", node_expiry: float | None = None) -> None:
        super().__init__()
        super().__init__()
        self.policy_mode = policy_mode  # "database" or "file" (writes refused)
        self.node_expiry = node_expiry  # seconds an untagged node's key lasts; None: forever
        self.api_keys: set[str] = set()
        self.users: dict[int, HsUser] = {}
        self.keys: dict[int, PreAuthKey] = {}
        self.nodes: dict[int, Node] = {}
        self.policy_text: str | None = None
        self.policy_updated: datetime | None = None
        self._user_ids, self._key_ids, self._node_ids = (itertools.count(1) for _ in range(3))
        self._addresses = Addresses()

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        """grpc-gateway's error body."""
        body = {"code": GRPC_CODES.get(status, 2), "message": message, "details": []}
        return web.json_response(body, status=status)

    # Test hooks.

    def add_api_key(self) -> str:
        """A `hskey-api-<prefix>-<secret>` admin API key."""
        key = f"hskey-api-{secrets.token_urlsafe(9)[:12]}-{secrets.token_urlsafe(48)}"
        self.api_keys.add(key)
        return key

    def add_user(self, name: str, *, email: str = "") -> HsUser:
        """A Headscale user (policies name it `name@` or by e-mail)."""
        user = HsUser(next(self._user_ids), name, email, self.now())
        self.users[user.id] = user
        return user

    def set_policy(self, text: str) -> None:
        """Store a policy directly (test set-up; checked, its tests not run)."""
        self.parse(text)
        self.policy_text, self.policy_updated = text, self.now()

    def parse(self, text: str) -> Policy:
        """`text` in Headscale's dialect (no autogroup:admin, users as `name@` or e-mail)."""
        names = {u.name for u in self.users.values()}
        return Policy.parse(
            text, resolve_user=self._user_token, autogroups=HEADSCALE_AUTOGROUPS, members=names
        )

    def register_device(self, secret: str, hostname: str, **_: Any) -> Node:
        """`tailscale up --login-server … --authkey`: checks and spends the pre-auth key."""
        key = next(
            (k for k in self.keys.values() if secrets.compare_digest(k.secret, secret)), None
        )
        if key is None:
            raise JoinRefused("invalid authkey")
        if key.expiration is not None and key.expiration <= self.now():
            raise JoinRefused("authkey expired")
        if key.used and not key.reusable:
            raise JoinRefused("authkey already used")
        key.used = True
        taken = {n.given_name for n in self.nodes.values()}
        expiry = None
        if not key.tags and self.node_expiry is not None:
            expiry = self.now() + timedelta(seconds=self.node_expiry)
        node = Node(
            id=next(self._node_ids), hostname=hostname,
            given_name=unique_label(dns_label(hostname), taken),
            addresses=self._addresses.allocate(), user_id=key.user_id,
            tags=list(key.tags), created=self.now(), expiry=expiry, key_id=key.id,
        )  # fmt: skip
        self.nodes[node.id] = node
        return node

    def device_json(self, device: Node) -> dict[str, Any]:
        return self.node_json(device)

    # JSON shapes (proto3 JSON: lowerCamelCase, uint64 as strings, unpopulated fields kept).

    def user_json(self, user: HsUser) -> dict[str, Any]:
        return {
            "id": str(user.id), "name": user.name, "createdAt": stamp(user.created),
            "displayName": "", "email": user.email, "providerId": "", "provider": "",
            "profilePicUrl": "",
        }  # fmt: skip

    def key_json(self, key: PreAuthKey, *, secret: bool = False) -> dict[str, Any]:
        user = self.users.get(key.user_id) if key.user_id is not None else None
        return {
            "user": self.user_json(user) if user else None, "id": str(key.id),
            "key": key.secret if secret else f"hskey-auth-{key.prefix}-***",
            "reusable": key.reusable, "ephemeral": key.ephemeral, "used": key.used,
            "expiration": stamp(key.expiration), "createdAt": stamp(key.created),
            "aclTags": list(key.tags),
        }  # fmt: skip

    def node_json(self, node: Node) -> dict[str, Any]:
        owner = self.users.get(node.user_id) if node.user_id is not None else None
        user = TAGGED_DEVICES if node.tags or owner is None else self.user_json(owner)
        key = self.keys.get(node.key_id) if node.key_id is not None else None
        return {
            "id": str(node.id), "machineKey": f"mkey:{node.id:064x}",
            "nodeKey": f"nodekey:{node.id:064x}", "discoKey": f"discokey:{node.id:064x}",
            "ipAddresses": list(node.addresses), "name": node.hostname, "user": user,
            "lastSeen": stamp(self.now()), "expiry": stamp(node.expiry),
            "preAuthKey": self.key_json(key) if key else None, "createdAt": stamp(node.created),
            "registerMethod": "REGISTER_METHOD_AUTH_KEY", "givenName": node.given_name,
            "online": True, "approvedRoutes": [], "availableRoutes": [], "subnetRoutes": [],
            "tags": list(node.tags),
        }  # fmt: skip

    # Machinery.

    def _user_token(self, token: str) -> str | None:
        """`alice@` by name, `alice@example.com` by e-mail, as a user's name; else None."""
        if "@" not in token or token.startswith(("group:", "tag:", "autogroup:")):
            return None
        for user in self.users.values():
            if token in (f"{user.name}@", user.email):
                return user.name
        return token.lower()
