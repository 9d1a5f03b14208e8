"""Routes for what can be asked for (plans, images) and for API tokens."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.auth import TOKENS_KEY, authorize
from api.body import Field, read_json
from api.workspaces import PROVISIONER_KEY
from provisioner.errors import InvalidInput
from provisioner.models import Role
from provisioner.tokens import parse_duration

routes = web.RouteTableDef()


@routes.get("/v1/plans")
async def list_plans(request: web.Request) -> web.Response:
    """The configured plans."""
    await authorize(request, Permission.READ_CATALOG)
    plans = request.app[PROVISIONER_KEY].catalog.plans.values()
    return web.json_response({"plans": [asdict(p) for p in plans]})


@routes.get("/v1/images")
async def list_images(request: web.Request) -> web.Response:
    """The configured images."""
    await authorize(request, Permission.READ_CATALOG)
    images = request.app[PROVISIONER_KEY].catalog.images.values()
    return web.json_response({"images": [asdict(i) for i in images]})


@routes.post("/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    """Create a token; its secret is in this answer and nowhere else, ever."""
    actor = await authorize(request, Permission.MANAGE_TOKENS)
    fields = {
        "role": Field(str, required=True),
        "owner": Field(str, required=True),
        "expires": Field(str, max_length=16),
    }
    body = await read_json(request, fields)
    try:
        role = Role(body["role"])
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role; choose one of: {roles}") from None
    expires = parse_duration(body["expires"]) if body.get("expires") else None
    token, secret = await request.app[TOKENS_KEY].create(actor, role, body["owner"], expires)
    return web.json_response({"token": render.token(token), "secret": secret}, status=201)
