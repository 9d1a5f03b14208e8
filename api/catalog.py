"""Routes for what can be asked for: plans and images."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from acl.rbac import Permission
from api.render import json_response
from api.routing import Call, RouteTable
from api.schema import answer, array, obj, ref
from api.workspaces import PROVISIONER_KEY

routes = RouteTable("catalog")


@routes.get(
    "/v1/plans",
    Permission.READ_CATALOG,
    "The plans",
    ok=answer("All.", obj({"plans": array(ref("Plan"))})),
)
async def list_plans(call: Call) -> web.Response:
    """The configured plans."""
    plans = call.app[PROVISIONER_KEY].catalog.plans.values()
    return json_response({"plans": [asdict(p) for p in plans]})


@routes.get(
    "/v1/images",
    Permission.READ_CATALOG,
    "The images",
    ok=answer("All.", obj({"images": array(ref("Image"))})),
)
async def list_images(call: Call) -> web.Response:
    """The configured images."""
    images = call.app[PROVISIONER_KEY].catalog.images.values()
    return json_response({"images": [asdict(i) for i in images]})
