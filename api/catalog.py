"""Routes for what can be asked for: plans and images."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from acl.rbac import Permission
from api.auth import authorize
from api.render import json_response
from api.workspaces import PROVISIONER_KEY

routes = web.RouteTableDef()


@routes.get("/v1/plans")
async def list_plans(request: web.Request) -> web.Response:
    """The configured plans."""
    await authorize(request, Permission.READ_CATALOG)
    plans = request.app[PROVISIONER_KEY].catalog.plans.values()
    return json_response({"plans": [asdict(p) for p in plans]})


@routes.get("/v1/images")
async def list_images(request: web.Request) -> web.Response:
    """The configured images."""
    await authorize(request, Permission.READ_CATALOG)
    images = request.app[PROVISIONER_KEY].catalog.images.values()
    return json_response({"images": [asdict(i) for i in images]})
