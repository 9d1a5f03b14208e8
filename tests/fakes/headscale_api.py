"""A faithful local fake of Headscale's native /api/v1 (v0.29, grpc-gateway), reference §8.1.

Usage::

    async with FakeHeadscale.running() as fake:
        api_key = fake.add_api_key()                     # hskey-api-…, Bearer only
        fake.add_user("alice", email="alice@example.com")
        fake.set_policy('{"tagOwners": {"tag:alice": ["alice@"]}}')
        node = fake.register_device(pre_auth_key, "ws-alice-1")   # JoinRefused when spent
        fake.fail(503, times=2); fake.delay(1.0)

Faithful quirks kept on purpose: errors are grpc-gateway bodies `{"code", "message",
"details"}`; plain Go errors become 500 with code 2 (a policy PUT that fails to parse or
whose tests fail, a policy write in file mode, a bad tag syntax on set-tags); a missing API
key answers 401 with the text `Unauthorized`; ids are uint64 written as strings; listed
pre-auth keys show only `hskey-auth-<prefix>-***`; tagged nodes show the user
`tagged-devices` and never expire.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fakes.headscale_state import HeadscaleState, Node, PreAuthKey
from tests.fakes.tailnet_common import (
    RECORD,
    Refusal,
    stamp,
)
from tests.fakes.tailnet_policy import PolicyError, valid_tag

Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]


class FakeHeadscale(HeadscaleState):
    """The /api/v1 routes of one fake Headscale."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for method, path, handler in (
            ("GET", "/api/v1/node", self._list_nodes),
            ("GET", "/api/v1/node/{id}", self._get_node),
            ("DELETE", "/api/v1/node/{id}", self._delete_node),
            ("POST", "/api/v1/node/{id}/tags", self._set_tags),
            ("POST", "/api/v1/node/{id}/expire", self._expire_node),
            ("POST", "/api/v1/preauthkey", self._create_key),
            ("GET", "/api/v1/preauthkey", self._list_keys),
            ("POST", "/api/v1/preauthkey/expire", self._expire_key),
            ("DELETE", "/api/v1/preauthkey", self._delete_key),
            ("GET", "/api/v1/policy", self._get_policy),
            ("PUT", "/api/v1/policy", self._put_policy),
            ("POST", "/api/v1/policy/check", self._check_policy),
        ):
            self.app.router.add_route(method, path, self._guarded(handler))

    def _guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or token.strip() not in self.api_keys:
                return web.Response(status=401, text="Unauthorized")
            request[RECORD].principal = "api-key"
            try:
                return web.json_response(await handler(request))
            except Refusal as refusal:
                return self.error(refusal.status, refusal.message)

        return guarded

    def _node(self, request: web.Request) -> Node:
        raw = request.match_info["id"]
        if not raw.isdigit():
            raise Refusal(400, f'type mismatch, parameter: node_id, error: invalid syntax "{raw}"')
        node = self.nodes.get(int(raw))
        if node is None:
            raise Refusal(404, "node not found")
        return node

    def _body(self, request: web.Request) -> dict[str, Any]:
        body = request[RECORD].body
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise Refusal(400, "invalid JSON body")
        return body

    # Nodes.

    async def _list_nodes(self, request: web.Request) -> dict[str, Any]:
        wanted = request.query.get("user")
        nodes = [
            n for n in sorted(self.nodes.values(), key=lambda n: n.id)
            if wanted is None or (n.user_id and self.users[n.user_id].name == wanted)
        ]  # fmt: skip
        return {"nodes": [self.node_json(n) for n in nodes]}

    async def _get_node(self, request: web.Request) -> dict[str, Any]:
        return {"node": self.node_json(self._node(request))}

    async def _delete_node(self, request: web.Request) -> dict[str, Any]:
        del self.nodes[self._node(request).id]
        return {}

    async def _set_tags(self, request: web.Request) -> dict[str, Any]:
        tags = self._body(request).get("tags") or []
        if not tags:
            raise Refusal(
                400, "cannot remove all tags from a node - tagged nodes must have at least one tag"
            )
        for tag in tags:
            problem = _tag_problem(str(tag))
            if problem:  # SetTags returns validateTag's plain error: grpc-gateway makes it 500
                raise Refusal(500, problem)
        node = self._node(request)
        policy = self.parse(self.policy_text or "")
        bad = [t for t in tags if not valid_tag(t) or policy.tag_owners(t) is None]
        if bad:
            raise Refusal(400, f"requested tags [{' '.join(bad)}] are invalid or not permitted")
        node.tags, node.expiry = sorted(set(tags)), None
        return {"node": self.node_json(node)}

    async def _expire_node(self, request: web.Request) -> dict[str, Any]:
        node = self._node(request)
        disable = request.query.get("disableExpiry", request.query.get("disable_expiry"))
        expiry = request.query.get("expiry")
        if disable == "true" and expiry:
            raise Refusal(400, "cannot set both disable_expiry and expiry")
        if disable == "true":
            node.expiry = None
        else:
            node.expiry = datetime.fromisoformat(expiry) if expiry else self.now()
        return {"node": self.node_json(node)}

    # Pre-auth keys.

    async def _create_key(self, request: web.Request) -> dict[str, Any]:
        body = self._body(request)
        tags = [str(t) for t in body.get("aclTags") or []]
        for tag in tags:
            problem = _tag_problem(tag)
            if problem:
                raise Refusal(400, problem)
        user_id = int(body["user"]) if str(body.get("user") or "0") != "0" else None
        if user_id is None and not tags:
            raise Refusal(500, "auth-key must be either tagged or owned by user")
        if user_id is not None and user_id not in self.users:
            raise Refusal(500, "user not found")
        expiration = _time(body.get("expiration"))
        prefix = secrets.token_urlsafe(9)[:12]
        key = PreAuthKey(
            id=next(self._key_ids), prefix=prefix,
            secret=f"hskey-auth-{prefix}-{secrets.token_hex(32)}", user_id=user_id,
            tags=sorted(set(tags)), expiration=expiration, created=self.now(),
            reusable=bool(body.get("reusable")), ephemeral=bool(body.get("ephemeral")),
        )  # fmt: skip
        self.keys[key.id] = key
        return {"preAuthKey": self.key_json(key, secret=True)}

    async def _list_keys(self, request: web.Request) -> dict[str, Any]:
        keys = sorted(self.keys.values(), key=lambda k: k.id)
        return {"preAuthKeys": [self.key_json(k) for k in keys]}

    async def _expire_key(self, request: web.Request) -> dict[str, Any]:
        key = self.keys.get(int(str(self._body(request).get("id") or 0)))
        if key is not None:  # an UPDATE … WHERE id = ?: an unknown id changes nothing
            key.expiration = self.now()
        return {}

    async def _delete_key(self, request: web.Request) -> dict[str, Any]:
        self.keys.pop(int(request.query.get("id", "0")), None)
        return {}

    # Policy.

    async def _get_policy(self, request: web.Request) -> dict[str, Any]:
        if self.policy_text is None:
            raise Refusal(500, "loading ACL from database: record not found")
        return {"policy": self.policy_text, "updatedAt": stamp(self.policy_updated)}

    def _checked(self, text: str) -> str | None:
        """What is wrong with `text` (parse, rules, failing tests), or None."""
        try:
            failures = self.parse(text).run_tests()
        except PolicyError as exc:
            return str(exc)
        if failures:
            return "test(s) failed:\n" + "\n".join(f.headscale() for f in failures)
        return None

    async def _put_policy(self, request: web.Request) -> dict[str, Any]:
        if self.policy_mode != "database":
            raise Refusal(500, "update is disabled for modes other than 'database'")
        text = str(self._body(request).get("policy") or "")
        problem = self._checked(text)
        if problem:
            raise Refusal(500, f"setting policy: {problem}")
        self.policy_text, self.policy_updated = text, self.now()
        return {"policy": text, "updatedAt": stamp(self.policy_updated)}

    async def _check_policy(self, request: web.Request) -> dict[str, Any]:
        problem = self._checked(str(self._body(request).get("policy") or ""))
        if problem:
            raise Refusal(400, problem)
        return {}


def _tag_problem(tag: str) -> str | None:
    """Headscale's validateTag."""
    if not tag.startswith("tag:"):
        return "tag must start with the string 'tag:'"
    if tag.lower() != tag:
        return "tag should be lowercase"
    if len(tag.split()) > 1:
        return "tags must not contain spaces"
    return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
