"""Bearer-token authentication: turns the Authorization header into an Actor."""

from __future__ import annotations

from aiohttp import web

from acl.rbac import Permission, actor, require
from api.ratelimit import RateLimiter
from provisioner.errors import Unauthenticated
from provisioner.models import Actor
from provisioner.tokens import Tokens

TOKENS_KEY = web.AppKey("tokens", Tokens)
LIMITER_KEY = web.AppKey("rate_limiter", RateLimiter)


async def authorize(request: web.Request, permission: Permission) -> Actor:
    """The caller behind the bearer token, checked for `permission`."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("send the token as 'Authorization: Bearer <token>'")
    token = await request.app[TOKENS_KEY].authenticate(secret.strip())
    request.app[LIMITER_KEY].check(token.id)
    who = actor(token.owner, token.role, "api")
    require(who, permission)
    return who
