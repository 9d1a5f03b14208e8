"""Routes for the playbook catalogue (list, upload, delete) and for running one in a workspace."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from acl.rbac import Permission
from api.body import Field, Json, Multipart, Upload
from api.render import json_response, operation
from api.routing import Call, RouteTable
from api.schema import answer, array, obj, ref
from api.workspaces import OPERATION, PROVISIONER_KEY
from provisioner.playbook_admin import Playbooks
from provisioner.playbook_uploads import MAX_UPLOAD_BYTES
from provisioner.playbooks import default_name

PLAYBOOKS_KEY = web.AppKey("playbooks", Playbooks)
routes = RouteTable("playbooks")
PLAYBOOK = answer("The playbook.", ref("Playbook"))
UPLOAD_FIELDS = {
    "file": Field(Upload, required=True, doc={"description": "A zip, tar or tar.gz archive."}),
    "name": Field(str, max_length=63, doc={"description": "Absent: the file's name."}),
    "entry": Field(str, max_length=255, doc={"description": "Absent: site.yml at its root."}),
}
RUN_FIELDS = {
    "playbook": Field(str, required=True, max_length=63, doc={"examples": ["docker"]}),
    "extra_vars": Field(dict, doc={"description": "Variables for the play (not ansible_*)."}),
}


async def _chunks(content: bytes) -> AsyncIterator[bytes]:
    """The uploaded archive as the catalogue's checker reads it, in chunks."""
    for at in range(0, len(content), 1 << 16):
        yield content[at : at + (1 << 16)]


@routes.get(
    "/v1/playbooks",
    Permission.READ_CATALOG,
    "The playbooks",
    ok=answer("All.", obj({"playbooks": array(ref("Playbook"))})),
)
async def list_playbooks(call: Call) -> web.Response:
    """The playbooks directory's and the uploaded ones."""
    found = await call.app[PLAYBOOKS_KEY].list()
    return json_response({"playbooks": [p.fields() for p in found]})


@routes.post(
    "/v1/playbooks",
    Permission.MANAGE_PLAYBOOKS,
    "Upload a playbook",
    status=201,
    ok=PLAYBOOK,
    body=Multipart("UploadPlaybook", UPLOAD_FIELDS, max_bytes=MAX_UPLOAD_BYTES + (1 << 16)),
    errors=(409, 413),
)
async def upload_playbook(call: Call) -> web.Response:
    """Check an archive against every upload rule, then store it by content digest."""
    upload: Upload = call.body["file"]
    name = call.body.get("name") or default_name(upload.filename or "")
    playbook = await call.app[PLAYBOOKS_KEY].upload(
        call.actor, _chunks(upload.content), name, call.body.get("entry")
    )
    return json_response(playbook.fields(), status=201)


@routes.get(
    "/v1/playbooks/{name}", Permission.READ_CATALOG, "One playbook", ok=PLAYBOOK, errors=(404,)
)
async def get_playbook(call: Call) -> web.Response:
    """One playbook."""
    return json_response((await call.app[PLAYBOOKS_KEY].get(call.path("name"))).fields())


@routes.delete(
    "/v1/playbooks/{name}",
    Permission.MANAGE_PLAYBOOKS,
    "Delete an uploaded playbook",
    status=204,
    ok=answer("Deleted.", obj({})),
    errors=(404, 409),
)
async def delete_playbook(call: Call) -> web.Response:
    """Remove an upload's name (operations already fixed to its content still run it)."""
    await call.app[PLAYBOOKS_KEY].delete(call.actor, call.path("name"))
    return web.Response(status=204)


@routes.post(
    "/v1/workspaces/{id}/playbooks",
    Permission.WRITE_WORKSPACES,
    "Run a playbook in the workspace",
    status=202,
    ok=OPERATION,
    body=Json("RunPlaybook", RUN_FIELDS),
    errors=(404, 409),
)
async def run_playbook(call: Call) -> web.Response:
    """Start a playbook operation; its log carries ansible's output line by line."""
    op = await call.app[PROVISIONER_KEY].run_playbook(
        call.actor, call.path("id"), call.body["playbook"], call.body.get("extra_vars")
    )
    return json_response(operation(op), status=202)
