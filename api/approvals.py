"""Routes for approvals: list them, approve or deny one (operators and admins only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acl.rbac import Permission
from api.body import Field, Json
from api.render import json_response
from api.routing import Call, RouteTable
from api.schema import answer, cursor, enum_of, page, query, ref
from provisioner.approvals import Approvals
from provisioner.errors import InvalidInput
from provisioner.models import Approval, ApprovalState

APPROVALS_KEY = web.AppKey("approvals", Approvals)
DECIDE = Permission.DECIDE_APPROVALS
routes = RouteTable("approvals")


def render(approval: Approval) -> dict[str, Any]:
    """An approval as the API shows it."""
    return {
        "id": approval.id,
        "operation_id": approval.operation_id,
        "requested_by": approval.requested_by,
        "state": approval.state.value,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at,
        "reason": approval.reason,
        "created_at": approval.created_at,
    }


STATES = enum_of(ApprovalState) | {"default": ApprovalState.PENDING.value}


@routes.get(
    "/v1/approvals",
    DECIDE,
    "List approvals",
    ok=answer("A page.", page("approvals", "Approval")),
    errors=(422,),
    params=(query("state", STATES, "Only these."), cursor()),
)
async def list_approvals(call: Call) -> web.Response:
    """A page of approvals, by default the pending ones."""
    try:
        state = ApprovalState(call.query.get("state", "pending"))
    except ValueError:
        raise InvalidInput("unknown state; choose pending, approved, denied or withdrawn") from None
    found = await call.app[APPROVALS_KEY].list(state=state, cursor=call.query.get("cursor"))
    return json_response(
        {"approvals": [render(a) for a in found.items], "next_cursor": found.next_cursor}
    )


@routes.post(
    r"/v1/approvals/{id}/{decision:approve|deny}",
    DECIDE,
    "{decision}",
    ok=answer("The decided approval.", ref("Approval")),
    body=Json("Decision", {"reason": Field(str, max_length=500)}, required=False),
    errors=(404, 409),
)
async def decide(call: Call) -> web.Response:
    """Approve or deny a request, optionally with a reason."""
    approval = await call.app[APPROVALS_KEY].decide(
        call.actor,
        call.path("id"),
        approve=call.path("decision") == "approve",
        reason=call.body.get("reason"),
    )
    return json_response(render(approval))
