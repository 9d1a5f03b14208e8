"""Routes for workspaces and operations: parse, authorise, one core call, render."""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.auth import authorize
from api.body import Field, read_json
from api.paging import limit_of
from provisioner.errors import InvalidInput
from provisioner.models import OperationKind, WorkspaceState
from provisioner.requests import CreateRequest, Idempotency
from provisioner.service import Provisioner

PROVISIONER_KEY = web.AppKey("provisioner", Provisioner)
FOLLOW_POLL_SECONDS = 0.5
FOLLOW_LIMIT_SECONDS = 3600.0
routes = web.RouteTableDef()

CREATE_FIELDS = {
    "plan": Field(str, required=True, max_length=63),
    "image": Field(str, required=True, max_length=63),
    "name": Field(str, max_length=63),
    "owner": Field(str),
    "ttl_hours": Field(int),
    "playbooks": Field(list),
}


def _core(request: web.Request) -> Provisioner:
    """The provisioner core behind this app."""
    return request.app[PROVISIONER_KEY]


@routes.post("/v1/workspaces")
async def create_workspace(request: web.Request) -> web.Response:
    """Accept a workspace request and start its create operation."""
    actor = await authorize(request, Permission.WRITE_WORKSPACES)
    body = await read_json(request, CREATE_FIELDS)
    key = request.headers.get("Idempotency-Key")
    idempotency = None
    if key is not None:
        if not 0 < len(key) <= 255:
            raise InvalidInput("Idempotency-Key must be 1 to 255 characters")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        idempotency = Idempotency(key, digest)
    create = CreateRequest(
        plan=body["plan"],
        image=body["image"],
        name=body.get("name"),
        owner=body.get("owner"),
        ttl_hours=body.get("ttl_hours"),
        playbooks=tuple(body.get("playbooks") or ()),
    )
    ws, op = await _core(request).create_workspace(actor, create, idempotency)
    return render.json_response(
        {"workspace": render.workspace(ws), "operation": render.operation(op)}, status=202
    )


@routes.get("/v1/workspaces")
async def list_workspaces(request: web.Request) -> web.Response:
    """A page of workspaces, filtered by owner and state."""
    actor = await authorize(request, Permission.READ_WORKSPACES)
    query = request.query
    state = None
    if "state" in query:
        try:
            state = WorkspaceState(query["state"])
        except ValueError:
            choices = ", ".join(s.value for s in WorkspaceState)
            raise InvalidInput(f"unknown state; choose one of: {choices}") from None
    page = await _core(request).list_workspaces(
        actor,
        owner=query.get("owner"),
        state=state,
        name=query.get("name"),
        cursor=query.get("cursor"),
        limit=limit_of(request, default=50),
    )
    return render.json_response(
        {"workspaces": [render.workspace(w) for w in page.items], "next_cursor": page.next_cursor}
    )


@routes.get("/v1/workspaces/{id}")
async def get_workspace(request: web.Request) -> web.Response:
    """One workspace."""
    actor = await authorize(request, Permission.READ_WORKSPACES)
    ws = await _core(request).get_workspace(actor, request.match_info["id"])
    return render.json_response(render.workspace(ws))


@routes.delete("/v1/workspaces/{id}")
async def delete_workspace(request: web.Request) -> web.Response:
    """Start deleting a workspace."""
    actor = await authorize(request, Permission.WRITE_WORKSPACES)
    op = await _core(request).delete_workspace(actor, request.match_info["id"])
    return render.json_response(render.operation(op), status=202)


@routes.post(r"/v1/workspaces/{id}/{action:start|stop|reboot|rebuild}")
async def power_workspace(request: web.Request) -> web.Response:
    """Start, stop, reboot or rebuild (fresh disk, same name) a workspace."""
    actor = await authorize(request, Permission.WRITE_WORKSPACES)
    kind = OperationKind(request.match_info["action"])
    op = await _core(request).power(actor, request.match_info["id"], kind)
    return render.json_response(render.operation(op), status=202)


@routes.post("/v1/workspaces/{id}/extend")
async def extend_workspace(request: web.Request) -> web.Response:
    """Push a workspace's expiry later."""
    actor = await authorize(request, Permission.WRITE_WORKSPACES)
    body = await read_json(request, {"hours": Field(int, required=True)})
    ws = await _core(request).extend_workspace(actor, request.match_info["id"], body["hours"])
    return render.json_response(render.workspace(ws))


@routes.get("/v1/operations/{id}")
async def get_operation(request: web.Request) -> web.Response:
    """One operation with its steps."""
    actor = await authorize(request, Permission.READ_WORKSPACES)
    op = await _core(request).get_operation(actor, request.match_info["id"])
    return render.json_response(render.operation(op))


@routes.get("/v1/operations/{id}/log")
async def operation_log(request: web.Request) -> web.StreamResponse:
    """The operation's history as text; with ?follow=1, streamed until the operation ends."""
    actor = await authorize(request, Permission.READ_WORKSPACES)
    core, op_id = _core(request), request.match_info["id"]
    op = await core.get_operation(actor, op_id)
    follow = request.query.get("follow") in ("1", "true")
    if not follow:
        return web.Response(text="".join(f"{line}\n" for line in render.operation_log(op)))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    sent = 0
    deadline = asyncio.get_running_loop().time() + FOLLOW_LIMIT_SECONDS
    while True:
        lines = render.operation_log(op)
        # Steps run one at a time, so lines only ever grow at the end: send what is past `sent`.
        await response.write("".join(f"{line}\n" for line in lines[sent:]).encode())
        sent = len(lines)
        if op.state.terminal or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        op = await core.get_operation(actor, op_id)
    await response.write_eof()
    return response


@routes.post("/v1/operations/{id}/cancel")
async def cancel_operation(request: web.Request) -> web.Response:
    """Cancel an operation."""
    actor = await authorize(request, Permission.WRITE_WORKSPACES)
    op = await _core(request).cancel_operation(actor, request.match_info["id"])
    return render.json_response(render.operation(op), status=202)
