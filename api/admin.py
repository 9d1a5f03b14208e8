"""Routes for operators and admins: nodes, the audit trail, and token management."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.auth import TOKENS_KEY
from api.body import Field, Json
from api.paging import limit_of
from api.routing import Call, RouteTable
from api.schema import answer, array, cursor, enum_of, limit, obj, page, query, ref, string
from api.workspaces import NAME_DOC, PROVISIONER_KEY
from provisioner import audit, service
from provisioner.audit import AuditTrail
from provisioner.errors import InvalidInput
from provisioner.models import Capacity, Node, Role
from provisioner.requests import LIBVIRT_URI_RE
from provisioner.tokens import DURATION_RE, parse_duration

AUDIT_KEY = web.AppKey("audit", AuditTrail)
MANAGE_NODES, MANAGE_TOKENS = Permission.MANAGE_NODES, Permission.MANAGE_TOKENS
routes = RouteTable("admin")
node_routes = RouteTable("catalog")

CAPACITY_FIELDS = {
    key: Field(int, required=True, doc={"minimum": 1})
    for key in ("vcpus", "memory_mib", "disk_gib")
}
NODE_FIELDS = {
    "name": Field(str, required=True, max_length=63, doc=NAME_DOC),
    "libvirt_uri": Field(
        str,
        required=True,
        doc={"pattern": LIBVIRT_URI_RE.pattern, "examples": ["test:///default"]},
    ),
    "ssh_host": Field(str),
    "ssh_port": Field(int),
    "ssh_user": Field(str, max_length=64),
    "ssh_key": Field(str, max_length=1024),
    "host_key": Field(str, max_length=4096),
    "pool": Field(str, max_length=63),
    "network": Field(str, max_length=63),
    "virt_type": Field(str, max_length=8),
    "capacity": Field(dict, nested=CAPACITY_FIELDS),
}
APPROVE_FIELDS = {"fingerprint": Field(str, required=True, max_length=128)}
TOKEN_FIELDS = {
    "role": Field(str, required=True, doc=enum_of(Role)),
    "owner": Field(str, required=True, doc={"examples": ["alice@example.com"]}),
    "expires": Field(
        str, max_length=16, doc={"pattern": DURATION_RE.pattern, "examples": ["12h", "30d", "2w"]}
    ),
}


@node_routes.get(
    "/v1/nodes",
    Permission.READ_NODES,
    "The nodes",
    ok=answer("All.", obj({"nodes": array(ref("Node"))})),
)
async def list_nodes(call: Call) -> web.Response:
    """Every node with its capacity and what is in use."""
    nodes = await call.app[PROVISIONER_KEY].nodes.list()
    return render.json_response({"nodes": [render.node(n, used) for n, used in nodes]})


@node_routes.post(
    "/v1/nodes",
    MANAGE_NODES,
    "Add a node (takes workspaces at once)",
    status=201,
    ok=answer("The node, with nothing in use yet.", ref("Node")),
    body=Json("AddNode", NODE_FIELDS),
    errors=(409,),
)
async def add_node(call: Call) -> web.Response:
    """Register a node; it takes workspaces at once."""
    body = call.body
    node = Node(**{k: v for k, v in body.items() if k != "capacity" and v is not None})
    if (cap := body.get("capacity")) is not None:
        node = replace(node, capacity=Capacity(cap["vcpus"], cap["memory_mib"], cap["disk_gib"]))
    added = await call.app[PROVISIONER_KEY].nodes.add(call.actor, node)
    return render.json_response(render.node(added, Capacity(0, 0, 0)), status=201)


@node_routes.post(
    "/v1/nodes/{name}/approve",
    MANAGE_NODES,
    "Trust the SSH host key the node presents (its fingerprint, as checked by you)",
    ok=answer("The node, trusted.", ref("Node")),
    body=Json("ApproveHostKey", APPROVE_FIELDS),
    errors=(404, 409),
)
async def approve_host_key(call: Call) -> web.Response:
    """Trust the SSH host key a node presents, named by the fingerprint the operator checked."""
    nodes = call.app[PROVISIONER_KEY].nodes
    node = await nodes.approve_host_key(call.actor, call.path("name"), call.body["fingerprint"])
    used = next((u for n, u in await nodes.list() if n.name == node.name), Capacity(0, 0, 0))
    return render.json_response(render.node(node, used))


@routes.get(
    "/v1/audit",
    Permission.READ_AUDIT,
    "Audit events, oldest first",
    ok=answer("A page.", page("events", "AuditEvent")),
    errors=(422,),
    params=(
        query("target", string(), "Only events on this target."),
        query("actor", string(), "Only events by this actor."),
        query("action", string(), "Only events of this action, e.g. `workspace.requested`."),
        cursor(string(pattern="^[0-9]+$")),
        limit(audit.MAX_PAGE, default=100),
    ),
)
async def list_audit(call: Call) -> web.Response:
    """Audit events, oldest first, filtered by target, actor or action."""
    page_ = await call.app[AUDIT_KEY].list(
        target=call.query.get("target"),
        actor=call.query.get("actor"),
        action=call.query.get("action"),
        cursor=call.query.get("cursor"),
        limit=limit_of(call.request, default=100),
    )
    return render.json_response(
        {"events": [render.audit_event(e) for e in page_.items], "next_cursor": page_.next_cursor}
    )


@routes.post(
    "/v1/tokens",
    MANAGE_TOKENS,
    "Create a token",
    status=201,
    ok=answer("The token and its secret (shown this once).", ref("CreatedToken")),
    body=Json("CreateToken", TOKEN_FIELDS),
)
async def create_token(call: Call) -> web.Response:
    """Create a token; its secret is in this answer and nowhere else, ever."""
    body = call.body
    try:
        role = Role(body["role"])
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role; choose one of: {roles}", field="role") from None
    expires = parse_duration(body["expires"]) if body.get("expires") else None
    token, secret = await call.app[TOKENS_KEY].create(call.actor, role, body["owner"], expires)
    return render.json_response({"token": render.token(token), "secret": secret}, status=201)


@routes.get(
    "/v1/tokens",
    MANAGE_TOKENS,
    "List tokens",
    ok=answer("A page.", page("tokens", "Token")),
    errors=(422,),
    params=(cursor(), limit(service.MAX_PAGE, default=50)),
)
async def list_tokens(call: Call) -> web.Response:
    """Tokens without their secrets."""
    tokens = await call.app[TOKENS_KEY].list(
        cursor=call.query.get("cursor"), limit=limit_of(call.request, default=50)
    )
    return render.json_response(
        {"tokens": [render.token(t) for t in tokens.items], "next_cursor": tokens.next_cursor}
    )


@routes.delete(
    "/v1/tokens/{id}",
    MANAGE_TOKENS,
    "Revoke a token",
    ok=answer("The revoked token.", ref("Token")),
    errors=(404,),
)
async def revoke_token(call: Call) -> web.Response:
    """Revoke a token; it stops working at once."""
    token = await call.app[TOKENS_KEY].revoke(call.actor, call.path("id"))
    return render.json_response(render.token(token))
