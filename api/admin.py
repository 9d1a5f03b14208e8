"""Routes for operators and admins: nodes, the audit trail, and token management."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.auth import TOKENS_KEY, authorize
from api.body import Field, check_fields, read_json
from api.paging import limit_of
from api.workspaces import PROVISIONER_KEY
from provisioner.audit import AuditTrail
from provisioner.errors import InvalidInput
from provisioner.models import Capacity, Node, Role
from provisioner.tokens import parse_duration

AUDIT_KEY = web.AppKey("audit", AuditTrail)
routes = web.RouteTableDef()


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """Every node with its capacity and what is in use."""
    await authorize(request, Permission.READ_NODES)
    nodes = await request.app[PROVISIONER_KEY].nodes.list()
    return render.json_response({"nodes": [render.node(n, used) for n, used in nodes]})


NODE_FIELDS = {
    "name": Field(str, required=True, max_length=63),
    "libvirt_uri": Field(str, required=True),
    "ssh_host": Field(str),
    "ssh_port": Field(int),
    "ssh_user": Field(str, max_length=64),
    "ssh_key": Field(str, max_length=1024),
    "host_key": Field(str, max_length=4096),
    "pool": Field(str, max_length=63),
    "network": Field(str, max_length=63),
    "virt_type": Field(str, max_length=8),
    "capacity": Field(dict),
}
APPROVE_FIELDS = {"fingerprint": Field(str, required=True, max_length=128)}
CAPACITY_FIELDS = {
    "vcpus": Field(int, required=True),
    "memory_mib": Field(int, required=True),
    "disk_gib": Field(int, required=True),
}


@routes.post("/v1/nodes")
async def add_node(request: web.Request) -> web.Response:
    """Register a node; it takes workspaces at once."""
    actor = await authorize(request, Permission.MANAGE_NODES)
    body = await read_json(request, NODE_FIELDS)
    node = Node(**{k: v for k, v in body.items() if k != "capacity" and v is not None})
    if body.get("capacity") is not None:
        cap = check_fields(body["capacity"], CAPACITY_FIELDS)
        node = replace(node, capacity=Capacity(cap["vcpus"], cap["memory_mib"], cap["disk_gib"]))
    added = await request.app[PROVISIONER_KEY].nodes.add(actor, node)
    return render.json_response(render.node(added, Capacity(0, 0, 0)), status=201)


@routes.post("/v1/nodes/{name}/approve")
async def approve_host_key(request: web.Request) -> web.Response:
    """Trust the SSH host key a node presents, named by the fingerprint the operator checked."""
    actor = await authorize(request, Permission.MANAGE_NODES)
    body = await read_json(request, APPROVE_FIELDS)
    nodes = request.app[PROVISIONER_KEY].nodes
    node = await nodes.approve_host_key(actor, request.match_info["name"], body["fingerprint"])
    used = next((u for n, u in await nodes.list() if n.name == node.name), Capacity(0, 0, 0))
    return render.json_response(render.node(node, used))


@routes.get("/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    """Audit events, oldest first, filtered by target, actor or action."""
    await authorize(request, Permission.READ_AUDIT)
    query = request.query
    page = await request.app[AUDIT_KEY].list(
        target=query.get("target"),
        actor=query.get("actor"),
        action=query.get("action"),
        cursor=query.get("cursor"),
        limit=limit_of(request, default=100),
    )
    return render.json_response(
        {"events": [render.audit_event(e) for e in page.items], "next_cursor": page.next_cursor}
    )


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
    return render.json_response({"token": render.token(token), "secret": secret}, status=201)


@routes.get("/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """Tokens without their secrets."""
    await authorize(request, Permission.MANAGE_TOKENS)
    page = await request.app[TOKENS_KEY].list(
        cursor=request.query.get("cursor"), limit=limit_of(request, default=50)
    )
    return render.json_response(
        {"tokens": [render.token(t) for t in page.items], "next_cursor": page.next_cursor}
    )


@routes.delete("/v1/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token; it stops working at once."""
    actor = await authorize(request, Permission.MANAGE_TOKENS)
    token = await request.app[TOKENS_KEY].revoke(actor, request.match_info["id"])
    return render.json_response(render.token(token))
