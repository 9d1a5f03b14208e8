"""The policy file of the fake Tailscale API (reference §4): GET, POST with If-Match, validate.

GET negotiates HuJSON (default) or JSON by `Accept`, answers `details=true|1` with base64, and
always sends `ETag: "<sha256 of the stored bytes>"`. POST honours `If-Match` (`"<etag>"`,
`"ts-default"` while the policy is the untouched default, `*`), parses HuJSON, checks the
policy and runs its `tests`: 400 `test(s) failed` with `data` and nothing stored. Validate
answers 200 with the verdict in the body, for a candidate policy or an array of tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from aiohttp import web

from tests.fakes.tailnet_common import Refusal
from tests.fakes.tailnet_policy import TAILSCALE_AUTOGROUPS, Policy, PolicyError, tailscale_data
from tests.fakes.tailscale_auth import ADMIN_ROLES, Principal, TailscaleAuth

DEFAULT_POLICY = """// Example/default ACLs for unrestricted connections.
{
\t// Define access control lists for users, groups, autogroups, tags,
\t// Tailscale IP addresses, and subnet ranges.
\t"acls": [
\t\t// Allow all connections.
\t\t{"action": "accept", "src": ["*"], "dst": ["*:*"]},
\t],
\t"ssh": [
\t\t{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"],
\t\t "users": ["autogroup:nonroot", "root"]},
\t],
}
"""
HUJSON = "application/hujson"


def etag_of(text: str) -> str:
    """Quoted hex SHA-256 of the stored bytes (what Headscale's re-implementation does)."""
    return '"' + hashlib.sha256(text.encode()).hexdigest() + '"'


class TailscaleACL(TailscaleAuth):
    """Policy state and routes; devices and keys come on top (tailscale_api)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.policy_text = DEFAULT_POLICY
        self.policy_is_default = True
        path = "/api/v2/tailnet/{tailnet}/acl"
        self.route("GET", path, "policy_file:read", self._get_policy)
        self.route("POST", path, "policy_file", self._set_policy)
        self.route("POST", path + "/validate", "policy_file:read", self._validate)

    @property
    def etag(self) -> str:
        """The ETag of the stored policy."""
        return etag_of(self.policy_text)

    def parse(self, text: str) -> Policy:
        """`text` as a policy of this tailnet (PolicyError when it does not parse or check)."""
        return Policy.parse(
            text,
            resolve_user=_email,
            autogroups=TAILSCALE_AUTOGROUPS,
            admins={u.email for u in self.users.values() if u.role in ADMIN_ROLES},
            members=set(self.users),
        )

    def policy(self) -> Policy:
        """The stored policy, parsed."""
        return self.parse(self.policy_text)

    def set_policy(self, text: str) -> None:
        """Store a policy directly (test set-up; checked like a POST but its tests not run)."""
        self.parse(text)
        self.policy_text, self.policy_is_default = text, False

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
        """Whether one of `holder_tags` is listed as an owner of `tag`."""
        owners = self.policy().tag_owners(tag) or []
        return any(t in owners for t in holder_tags)

    def _answer(self, request: web.Request) -> web.Response:
        """The stored policy in the representation the caller asked for, with its ETag."""
        headers = {"ETag": self.etag}
        if request.query.get("details") in ("true", "1"):
            encoded = base64.b64encode(self.policy_text.encode()).decode()
            body: dict[str, Any] = {"acl": encoded, "warnings": [], "errors": None}
            return web.json_response(body, headers=headers)
        accept = request.headers.get("Accept", "")
        if "application/json" in accept and HUJSON not in accept:
            return web.json_response(self.policy().doc, headers=headers)
        return web.Response(text=self.policy_text, content_type=HUJSON, headers=headers)

    async def _get_policy(self, request: web.Request, who: Principal) -> web.Response:
        return self._answer(request)

    async def _set_policy(self, request: web.Request, who: Principal) -> web.Response:
        if who.user is not None and who.user.role not in ADMIN_ROLES:
            raise Refusal(403, "only admins may edit the policy file")
        wanted = request.headers.get("If-Match")
        if wanted is not None and not self._precondition(wanted.strip()):
            raise Refusal(412, "precondition failed, invalid old hash")
        text = await request.text()
        policy = self._parsed_or_400(text)
        failures = policy.run_tests()
        if failures:
            raise Refusal(400, "test(s) failed", data=tailscale_data(failures))
        self.policy_text, self.policy_is_default = text, False
        return self._answer(request)

    def _precondition(self, wanted: str) -> bool:
        if wanted == "*":
            return True
        if wanted.strip('"') == "ts-default":
            return self.policy_is_default
        return wanted == self.etag or f'"{wanted}"' == self.etag

    def _parsed_or_400(self, text: str) -> Policy:
        try:
            return self.parse(text)
        except PolicyError as exc:
            raise Refusal(400, str(exc)) from None

    async def _validate(self, request: web.Request, who: Principal) -> web.Response:
        text = await request.text()
        try:
            candidate = json.loads(text) if text.lstrip().startswith("[") else None
        except ValueError:
            raise Refusal(400, "parsing tests: not a JSON array") from None
        if candidate is not None:  # an array of tests, run against the stored policy
            failures = self.policy().run_tests(candidate)
        else:
            try:
                failures = self.parse(text).run_tests()
            except PolicyError as exc:
                return web.json_response({"message": str(exc)})
        if failures:
            return web.json_response(
                {"message": "test(s) failed", "data": tailscale_data(failures)}
            )
        return web.json_response({})


def _email(token: str) -> str | None:
    """Tailscale names users by login e-mail."""
    if "@" in token and not token.startswith(("group:", "tag:", "autogroup:")):
        return token.lower()
    return None
