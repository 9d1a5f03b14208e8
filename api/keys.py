"""Routes for owners' SSH public keys: list, add (public keys only), remove."""

from __future__ import annotations

from aiohttp import web

from acl.rbac import Permission
from api.body import Field, Json
from api.render import json_response
from api.routing import Call, RouteTable
from api.schema import answer, array, obj, query, ref, string
from provisioner.keys import SshKeys
from provisioner.models import SshKey
from provisioner.requests import OWNER_RE, owner_for

KEYS_KEY = web.AppKey("ssh_keys", SshKeys)
READ, WRITE = Permission.READ_WORKSPACES, Permission.WRITE_WORKSPACES
routes = RouteTable("keys")
OWNER = query("owner", string(), "Whose keys (operators and admins only; default: yours).")
KEY_FIELDS = {
    "public_key": Field(
        str,
        required=True,
        max_length=16384,
        doc={"examples": ["ssh-ed25519 AAAAC3Nza… you@laptop"]},
    ),
    "owner": Field(str, doc={"pattern": OWNER_RE.pattern}),
}
KEY = answer("The key.", ref("SshKey"))


def key_json(key: SshKey) -> dict[str, object]:
    """A key as the API shows it."""
    return {
        "id": key.id,
        "owner": key.owner,
        "fingerprint": key.fingerprint,
        "public_key": key.public_key,
        "created_at": key.created_at,
    }


@routes.get(
    "/v1/keys",
    READ,
    "Your SSH public keys",
    ok=answer("All of them.", obj({"keys": array(ref("SshKey"))})),
    params=(OWNER,),
)
async def list_keys(call: Call) -> web.Response:
    """The owner's keys; they reach every new workspace of that owner."""
    owner = owner_for(call.actor, call.query.get("owner"))
    keys = await call.app[KEYS_KEY].list(owner)
    return json_response({"keys": [key_json(k) for k in keys]})


@routes.post(
    "/v1/keys",
    WRITE,
    "Add an SSH public key",
    status=201,
    ok=KEY,
    body=Json("AddKey", KEY_FIELDS),
)
async def add_key(call: Call) -> web.Response:
    """Add a public key (a private key is refused and never stored or echoed)."""
    owner = owner_for(call.actor, call.body.get("owner"))
    key, added = await call.app[KEYS_KEY].add(call.actor, owner, call.body["public_key"])
    return json_response(key_json(key), status=201 if added else 200)


@routes.delete(
    "/v1/keys/{id}",
    WRITE,
    "Remove an SSH public key",
    ok=KEY,
    errors=(404,),
    params=(OWNER,),
)
async def remove_key(call: Call) -> web.Response:
    """Remove one of the owner's keys; workspaces made earlier keep theirs."""
    owner = owner_for(call.actor, call.query.get("owner"))
    key = await call.app[KEYS_KEY].remove(call.actor, owner, call.path("id"))
    return json_response(key_json(key))
