"""Routes for workspaces and operations: parse, authorise, one core call, render."""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.body import Field, Json
from api.paging import limit_of
from api.routing import Call, RouteTable
from api.schema import answer, cursor, enum_of, header, limit, page, query, ref, string
from provisioner import service
from provisioner.catalog import Catalog
from provisioner.errors import InvalidInput
from provisioner.models import OperationKind, WorkspaceState
from provisioner.requests import NAME_RE, OWNER_RE, CreateRequest, Idempotency
from provisioner.service import Provisioner

PROVISIONER_KEY = web.AppKey("provisioner", Provisioner)
FOLLOW_POLL_SECONDS = 0.5
FOLLOW_LIMIT_SECONDS = 3600.0
READ, WRITE = Permission.READ_WORKSPACES, Permission.WRITE_WORKSPACES
routes = RouteTable("workspaces")
operation_routes = RouteTable("operations")


def longest_ttl(catalog: Catalog) -> dict[str, int]:
    """The longest lifetime any plan allows, as a schema bound."""
    return {"maximum": max(plan.max_ttl_hours for plan in catalog.plans.values())}


NAME_DOC = {"pattern": NAME_RE.pattern, "maxLength": 40, "examples": ["dev-box"]}
CREATE_FIELDS = {
    "plan": Field(
        str,
        max_length=63,
        doc={"examples": ["small"], "description": "Absent: the deployment's default plan."},
        choices=lambda catalog: {"enum": sorted(catalog.plans)},
    ),
    "image": Field(
        str,
        max_length=63,
        doc={"examples": ["debian-12"], "description": "Absent: the default image."},
        choices=lambda catalog: {"enum": sorted(catalog.images)},
    ),
    "name": Field(str, max_length=63, doc=NAME_DOC),
    "owner": Field(str, doc={"pattern": OWNER_RE.pattern, "examples": ["alice@example.com"]}),
    "ttl_hours": Field(
        int,
        doc={"minimum": 1, "description": "At most the plan's max_ttl_hours."},
        choices=longest_ttl,
    ),
    "playbooks": Field(list),
}
EXTEND_FIELDS = {
    "hours": Field(int, required=True, doc={"minimum": 1, "examples": [24]}, choices=longest_ttl)
}
IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    string(minLength=1, maxLength=255),
    "Same key and same body: the first answer again; other body: 422.",
)
WORKSPACE = answer("The workspace.", ref("Workspace"))
OPERATION = answer("The operation.", ref("Operation"))


def _core(call: Call) -> Provisioner:
    """The provisioner core behind this app."""
    return call.app[PROVISIONER_KEY]


@routes.post(
    "/v1/workspaces",
    WRITE,
    "Request a workspace",
    status=202,
    ok=answer("Accepted.", ref("WorkspaceAccepted")),
    body=Json("CreateWorkspace", CREATE_FIELDS),
    errors=(409,),
    params=(IDEMPOTENCY_KEY,),
)
async def create_workspace(call: Call) -> web.Response:
    """Accept a workspace request and start its create operation."""
    body = call.body
    key = call.request.headers.get("Idempotency-Key")
    idempotency = None
    if key is not None:
        if not 0 < len(key) <= 255:
            raise InvalidInput("Idempotency-Key must be 1 to 255 characters")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        idempotency = Idempotency(key, digest)
    create = CreateRequest(
        plan=body.get("plan"),
        image=body.get("image"),
        name=body.get("name"),
        owner=body.get("owner"),
        ttl_hours=body.get("ttl_hours"),
        playbooks=tuple(body.get("playbooks") or ()),
    )
    ws, op = await _core(call).create_workspace(call.actor, create, idempotency)
    return render.json_response(
        {"workspace": render.workspace(ws), "operation": render.operation(op)}, status=202
    )


@routes.get(
    "/v1/workspaces",
    READ,
    "List workspaces",
    ok=answer("A page.", page("workspaces", "Workspace")),
    errors=(422,),
    params=(
        query("owner", string(), "Only this owner's workspaces."),
        query("state", enum_of(WorkspaceState), "Only workspaces in this state."),
        query("name", string(), "Only the workspace with this name."),
        cursor(),
        limit(service.MAX_PAGE, default=50),
    ),
)
async def list_workspaces(call: Call) -> web.Response:
    """A page of workspaces, filtered by owner and state."""
    state = None
    if "state" in call.query:
        try:
            state = WorkspaceState(call.query["state"])
        except ValueError:
            choices = ", ".join(s.value for s in WorkspaceState)
            raise InvalidInput(f"unknown state; choose one of: {choices}") from None
    page = await _core(call).list_workspaces(
        call.actor,
        owner=call.query.get("owner"),
        state=state,
        name=call.query.get("name"),
        cursor=call.query.get("cursor"),
        limit=limit_of(call.request, default=50),
    )
    return render.json_response(
        {"workspaces": [render.workspace(w) for w in page.items], "next_cursor": page.next_cursor}
    )


@routes.get("/v1/workspaces/{id}", READ, "One workspace", ok=WORKSPACE, errors=(404,))
async def get_workspace(call: Call) -> web.Response:
    """One workspace."""
    ws = await _core(call).get_workspace(call.actor, call.path("id"))
    return render.json_response(render.workspace(ws))


@routes.delete(
    "/v1/workspaces/{id}",
    WRITE,
    "Delete the workspace",
    status=202,
    ok=OPERATION,
    errors=(404, 409),
)
async def delete_workspace(call: Call) -> web.Response:
    """Start deleting a workspace."""
    op = await _core(call).delete_workspace(call.actor, call.path("id"))
    return render.json_response(render.operation(op), status=202)


@routes.post(
    r"/v1/workspaces/{id}/{action:start|stop|reboot|rebuild}",
    WRITE,
    "{action} the workspace",
    status=202,
    ok=OPERATION,
    errors=(404, 409),
)
async def power_workspace(call: Call) -> web.Response:
    """Start, stop, reboot or rebuild (fresh disk, same name) a workspace."""
    kind = OperationKind(call.path("action"))
    op = await _core(call).power(call.actor, call.path("id"), kind)
    return render.json_response(render.operation(op), status=202)


@routes.post(
    "/v1/workspaces/{id}/extend",
    WRITE,
    "Extend the workspace",
    ok=WORKSPACE,
    body=Json("Extend", EXTEND_FIELDS),
    errors=(404, 409),
)
async def extend_workspace(call: Call) -> web.Response:
    """Push a workspace's expiry later."""
    ws = await _core(call).extend_workspace(call.actor, call.path("id"), call.body["hours"])
    return render.json_response(render.workspace(ws))


@operation_routes.get("/v1/operations/{id}", READ, "One operation", ok=OPERATION, errors=(404,))
async def get_operation(call: Call) -> web.Response:
    """One operation with its steps."""
    op = await _core(call).get_operation(call.actor, call.path("id"))
    return render.json_response(render.operation(op))


@operation_routes.get(
    "/v1/operations/{id}/log",
    READ,
    "The operation's history as text (`follow=1`: streamed until it ends)",
    ok=answer("One event a line; streamed with follow.", string(), "text/plain"),
    errors=(404,),
    params=(query("follow", string(), "`1` or `true`: stream lines until the operation ends."),),
)
async def operation_log(call: Call) -> web.StreamResponse:
    """The operation's history as text; with ?follow=1, streamed until the operation ends."""
    core, op_id = _core(call), call.path("id")
    op, output = await core.operation_with_output(call.actor, op_id)
    if call.query.get("follow") not in ("1", "true"):
        lines = render.operation_log(op, output)
        return web.Response(text="".join(f"{line}\n" for line in lines))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(call.request)
    sent = 0
    deadline = asyncio.get_running_loop().time() + FOLLOW_LIMIT_SECONDS
    while True:
        lines = render.operation_log(op, output)
        # Steps run one at a time, so lines only ever grow at the end: send what is past `sent`.
        await response.write("".join(f"{line}\n" for line in lines[sent:]).encode())
        sent = len(lines)
        if op.state.terminal or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        op, output = await core.operation_with_output(call.actor, op_id)
    await response.write_eof()
    return response


@operation_routes.post(
    "/v1/operations/{id}/cancel",
    WRITE,
    "Cancel the operation",
    status=202,
    ok=OPERATION,
    errors=(404, 409),
)
async def cancel_operation(call: Call) -> web.Response:
    """Cancel an operation."""
    op = await _core(call).cancel_operation(call.actor, call.path("id"))
    return render.json_response(render.operation(op), status=202)
