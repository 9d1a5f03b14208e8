"""Routes for nodes: list them with what is in use, add one, trust its SSH host key."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.body import Field, Json
from api.routing import Call, RouteTable
from api.schema import answer, array, obj, ref
from api.workspaces import NAME_DOC, PROVISIONER_KEY
from provisioner.models import Capacity, Node
from provisioner.requests import LIBVIRT_URI_RE

MANAGE_NODES = Permission.MANAGE_NODES
routes = RouteTable("nodes")

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


@routes.get(
    "/v1/nodes",
    Permission.READ_NODES,
    "The nodes",
    ok=answer("All.", obj({"nodes": array(ref("Node"))})),
)
async def list_nodes(call: Call) -> web.Response:
    """Every node with its capacity and what is in use."""
    nodes = await call.app[PROVISIONER_KEY].nodes.list()
    return render.json_response({"nodes": [render.node(n, used) for n, used in nodes]})


@routes.post(
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


@routes.post(
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
