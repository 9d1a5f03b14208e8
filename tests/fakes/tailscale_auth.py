"""Who is calling the fake Tailscale API: users and their API keys, OAuth clients and tokens.

Reference §1.1 and §5: API keys act as their user (Bearer or Basic `<key>:`); OAuth clients
mint 1-hour tokens at /api/v2/oauth/token (form or Basic credentials, `scope` and `tags`
narrowing, RFC 6749 error bodies); scopes gate each route (a write scope implies its :read,
`all` everything); `{tailnet}` must be `-` or the tailnet's id.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.tailnet_common import RECORD, FakeTailnetServer, Refusal

ADMIN_ROLES = frozenset({"owner", "admin", "network-admin"})
# Our wording where Tailscale documents none.
BAD_TOKEN = "API token invalid"
NO_PERMISSION = "calling actor does not have enough permissions to perform this function"
WRONG_TAILNET = "user tailnet does not match"

Route = Callable[[web.Request, "Principal"], Awaitable[web.StreamResponse]]


@dataclass
class User:
    """A tailnet member; `role` decides what its API keys may do."""

    email: str
    role: str = "member"
    id: str = field(default_factory=lambda: "u" + secrets.token_hex(6) + "CNTRL")


@dataclass(frozen=True)
class Principal:
    """The identity behind a request: a user's API key or an OAuth token."""

    name: str  # the user's e-mail or "oauth:<client id>", as recorded in the request log
    user: User | None
    scopes: frozenset[str]
    tags: tuple[str, ...] = ()

    @property
    def is_user(self) -> bool:
        return self.user is not None


@dataclass
class OAuthClient:
    """A trust credential: its id, secret, scopes and the tags it holds."""

    id: str
    secret: str
    scopes: frozenset[str]
    tags: tuple[str, ...]


@dataclass
class AccessToken:
    """A bearer secret and whom it stands for; OAuth tokens expire."""

    principal: Principal
    expires: datetime | None


def grants(scopes: Iterable[str], need: str) -> bool:
    """Whether `scopes` allow `need` (`all`, `all:read`, and a write scope implying its :read)."""
    held = set(scopes)
    if "all" in held or need in held:
        return True
    return need.endswith(":read") and ("all:read" in held or need.removesuffix(":read") in held)


def split_list(value: str | None) -> list[str]:
    """`a b` or `a,b` (both are seen in the wild) as a list."""
    return [part for part in re.split(r"[\s,]+", value or "") if part]


class TailscaleAuth(FakeTailnetServer):
    """Credentials and route guarding of the fake Tailscale API."""

    def __init__(self, *, tailnet_id: str = "T1234CNTRL", token_lifetime: int = 3600) -> None:
        super().__init__()
        self.tailnet_id = tailnet_id
        self.token_lifetime = token_lifetime
        self.users: dict[str, User] = {}
        self.oauth_clients: dict[str, OAuthClient] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.app.router.add_post("/api/v2/oauth/token", self._token_endpoint)

    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        """Tailscale's error body: {"message", "data"?}."""
        return web.json_response({"message": message, **extra}, status=status)

    def add_user(self, email: str, role: str = "member") -> User:
        """A member of the tailnet."""
        self.users[email] = user = User(email, role)
        return user

    def add_api_key(self, email: str, role: str = "admin") -> str:
        """A `tskey-api-…` access token acting as `email` (created with `role` if new)."""
        user = self.users.get(email) or self.add_user(email, role)
        secret = f"tskey-api-{secrets.token_hex(6)}CNTRL-{secrets.token_urlsafe(24)}"
        self.tokens[secret] = AccessToken(Principal(email, user, frozenset({"all"})), None)
        return secret

    def add_oauth_client(self, scopes: Iterable[str], tags: Iterable[str] = ()) -> tuple[str, str]:
        """An OAuth client; returns (client_id, client_secret)."""
        client_id = f"k{secrets.token_hex(6)}CNTRL"
        secret = f"tskey-client-{client_id}-{secrets.token_urlsafe(24)}"
        self.oauth_clients[client_id] = OAuthClient(
            client_id, secret, frozenset(scopes), tuple(tags)
        )
        return client_id, secret

    def revoke_tokens(self) -> None:
        """Forget every OAuth access token (the next call with one gets 401)."""
        self.tokens = {k: v for k, v in self.tokens.items() if v.expires is None}

    def minted_tokens(self) -> int:
        """How many times /oauth/token handed out a token."""
        return sum(1 for r in self.calls("POST", "/api/v2/oauth/token") if r.status == 200)

    def owned_by_tags(self, tag: str, holder_tags: Iterable[str]) -> bool:
        """Whether one of `holder_tags` is listed as an owner of `tag` (filled in by the fake)."""
        raise NotImplementedError

    def route(self, method: str, path: str, scope: str, handler: Route) -> None:
        """Serve `handler` at `path` behind authentication, the scope check and `{tailnet}`."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                who = self.authenticate(request)
                request[RECORD].principal = who.name
                tailnet = request.match_info.get("tailnet")
                if tailnet is not None and tailnet not in ("-", self.tailnet_id):
                    raise Refusal(404, WRONG_TAILNET)
                if not grants(who.scopes, scope):
                    raise Refusal(403, NO_PERMISSION)
                return await handler(request, who)
            except Refusal as refusal:
                return self.error(refusal.status, refusal.message, **refusal.extra)

        self.app.router.add_route(method, path, guarded)

    def authenticate(self, request: web.Request) -> Principal:
        """The principal of a Bearer or Basic `<token>:` header; 401 otherwise."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        token = value.strip()
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                token = ""
        elif scheme.lower() != "bearer":
            token = ""
        found = self.tokens.get(token)
        if found is None or (found.expires is not None and found.expires <= self.now()):
            raise Refusal(401, BAD_TOKEN)
        return found.principal

    async def _token_endpoint(self, request: web.Request) -> web.Response:
        form = request[RECORD].body if isinstance(request[RECORD].body, dict) else {}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return _oauth_error(400, "invalid_request", "malformed Basic credentials")
        if form.get("grant_type", "client_credentials") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials")
        if not client_id or not secret:
            return _oauth_error(400, "invalid_request", "client_id and client_secret required")
        client = self.oauth_clients.get(str(client_id))
        if client is None or not secrets.compare_digest(client.secret, str(secret)):
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        request[RECORD].principal = f"oauth:{client.id}"
        scopes = split_list(form.get("scope")) or sorted(client.scopes)
        if not all(grants(client.scopes, s) for s in scopes):
            return _oauth_error(400, "invalid_scope", "a requested scope is not granted")
        tags = split_list(form.get("tags")) or list(client.tags)
        if not all(t in client.tags or self.owned_by_tags(t, client.tags) for t in tags):
            return _oauth_error(400, "invalid_target", "a requested tag is not permitted")
        token = f"tskey-api-{secrets.token_hex(6)}CNTRL-{secrets.token_urlsafe(24)}"
        principal = Principal(f"oauth:{client.id}", None, frozenset(scopes), tuple(tags))
        expires = self.now() + timedelta(seconds=self.token_lifetime)
        self.tokens[token] = AccessToken(principal, expires)
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "scope": " ".join(scopes),
                "tags": " ".join(tags),
            }
        )


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    """An RFC 6749 §5.2 error body."""
    return web.json_response({"error": error, "error_description": description}, status=status)
