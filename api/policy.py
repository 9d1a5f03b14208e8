"""The route for the generated tailnet policy: what a push would write, and its diff."""

from __future__ import annotations

from aiohttp import web

from acl.publisher import PolicyPublisher
from acl.rbac import Permission
from api.render import json_response
from api.routing import Call, RouteTable
from api.schema import answer, array, nullable, obj, string

POLICY_KEY = web.AppKey("policy", PolicyPublisher)
routes = RouteTable("tailnet")


@routes.get(
    "/v1/acl",
    Permission.READ_POLICY,
    "The generated tailnet policy",
    ok=answer(
        "The rendered policy (HuJSON), the diff against the live one, and warnings.",
        obj(
            {
                "policy": string(),
                "dialect": string(),
                "diff": nullable(string()),
                "warnings": array(string()),
            }
        ),
    ),
    errors=(503,),
)
async def get_policy(call: Call) -> web.Response:
    """The policy `provisioner acl push` would write; the diff when a tailnet is set."""
    publisher = call.app[POLICY_KEY]
    diff: str | None = None
    if publisher.tailnet is None:
        rendered = await publisher.render()
    else:
        diff, rendered = await publisher.diff()
    return json_response(
        {
            "policy": rendered.text,
            "dialect": publisher.dialect,
            "diff": diff,
            "warnings": list(rendered.warnings),
        }
    )
