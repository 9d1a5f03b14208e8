"""Routes for approvals: list them, approve or deny one (operators and admins only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acl.rbac import Permission
from api.auth import authorize
from api.body import Field, read_json
from api.render import json_response
from provisioner.approvals import Approvals
from provisioner.errors import InvalidInput
from provisioner.models import Approval, ApprovalState

APPROVALS_KEY = web.AppKey("approvals", Approvals)
routes = web.RouteTableDef()


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


@routes.get("/v1/approvals")
async def list_approvals(request: web.Request) -> web.Response:
    """A page of approvals, by default the pending ones."""
    await authorize(request, Permission.DECIDE_APPROVALS)
    try:
        state = ApprovalState(request.query.get("state", "pending"))
    except ValueError:
        raise InvalidInput("unknown state; choose pending, approved, denied or withdrawn") from None
    page = await request.app[APPROVALS_KEY].list(state=state, cursor=request.query.get("cursor"))
    return json_response(
        {"approvals": [render(a) for a in page.items], "next_cursor": page.next_cursor}
    )


@routes.post(r"/v1/approvals/{id}/{decision:approve|deny}")
async def decide(request: web.Request) -> web.Response:
    """Approve or deny a request, optionally with a reason."""
    actor = await authorize(request, Permission.DECIDE_APPROVALS)
    reason = None
    if request.can_read_body:
        reason = (await read_json(request, {"reason": Field(str, max_length=500)})).get("reason")
    approval = await request.app[APPROVALS_KEY].decide(
        actor,
        request.match_info["id"],
        approve=request.match_info["decision"] == "approve",
        reason=reason,
    )
    return json_response(render(approval))
