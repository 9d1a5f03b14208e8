"""The OpenAPI 3.1 document of the HTTP API, built from the code it describes; needs no auth."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from importlib import metadata
from typing import Any

from aiohttp import web

from acl.rbac import ROLE_PERMISSIONS, Permission
from api.admin import APPROVE_FIELDS, CAPACITY_FIELDS, NODE_FIELDS
from api.body import MAX_BODY, Field
from api.render import json_response
from api.workspaces import CREATE_FIELDS, PROVISIONER_KEY
from provisioner import audit, service
from provisioner.catalog import Catalog
from provisioner.models import (
    ApprovalState,
    NodeTrust,
    OperationKind,
    OperationState,
    Role,
    StepState,
    WorkspaceState,
)
from provisioner.requests import LIBVIRT_URI_RE, NAME_RE, OWNER_RE
from provisioner.tokens import DURATION_RE

Schema = dict[str, Any]
SPEC_PATH = "/v1/openapi.json"
routes = web.RouteTableDef()

# Mirrors of the field tables the handlers declare inline (api/workspaces.py extend_workspace,
# api/approvals.py decide, api/admin.py create_token); CREATE_FIELDS is imported as is.
EXTEND_FIELDS = {"hours": Field(int, required=True)}
DECISION_FIELDS = {"reason": Field(str, max_length=500)}
TOKEN_FIELDS = {
    "role": Field(str, required=True),
    "owner": Field(str, required=True),
    "expires": Field(str, max_length=16),
}
# api/body.py _check_value: list fields hold up to 20 names of 1 to 255 characters.
MAX_LIST_ITEMS, MAX_ITEM_LENGTH = 20, 255
POWER_KINDS = (
    OperationKind.START,
    OperationKind.STOP,
    OperationKind.REBOOT,
    OperationKind.REBUILD,
)
ERRORS: dict[int, str] = {
    400: "The body is not valid JSON.",
    401: "No bearer token, or one that is unknown, revoked or expired.",
    403: "The token's role lacks the permission this needs.",
    404: "No such resource, or the caller may not see it.",
    409: "The resource's state forbids this, or no node has room for it.",
    413: f"The body is larger than {MAX_BODY // 1024} KiB.",
    415: "The body is not sent as application/json.",
    422: "The input is well-formed but breaks a rule (unknown field, wrong type, bad value).",
    429: "Too many requests from this token; retry after Retry-After seconds.",
    503: "The database or a node is unavailable; the request may succeed later.",
}
AUTHED_ERRORS = (401, 403, 429, 503)
BODY_ERRORS = (400, 413, 415, 422)


# --- schema building blocks -------------------------------------------------------------------


def ref(name: str, kind: str = "schemas") -> Schema:
    """A reference to a component."""
    return {"$ref": f"#/components/{kind}/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` that also admits null."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    widened = {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        widened["enum"] = [*schema["enum"], None]
    return widened


def string(**constraints: Any) -> Schema:
    """A string schema with optional constraints (maxLength, pattern, format, …)."""
    return {"type": "string", **constraints}


def integer(**constraints: Any) -> Schema:
    """An integer schema with optional bounds."""
    return {"type": "integer", **constraints}


def boolean() -> Schema:
    """A boolean schema."""
    return {"type": "boolean"}


def enum_of(values: Any) -> Schema:
    """A string schema whose values are those of a StrEnum (or any iterable of strings)."""
    return string(enum=[str(v) for v in values])


def timestamp() -> Schema:
    """An RFC 3339 timestamp in UTC."""
    return string(format="date-time")


def array(items: Schema, **constraints: Any) -> Schema:
    """An array of `items`."""
    return {"type": "array", "items": items, **constraints}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A closed object; every property is required unless `required` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def page(key: str, item: str) -> Schema:
    """A page of a listing: the items under `key` and the cursor to the next page."""
    return obj({key: array(ref(item)), "next_cursor": nullable(string())})


# --- request bodies: derived from api/body.py Field tables -------------------------------------


def field_schema(field: Field) -> Schema:
    """The JSON schema of one body field as api/body.py check_fields enforces it."""
    if field.kind is str:
        schema = string(minLength=1, maxLength=field.max_length)
    elif field.kind is int:
        schema = integer()
    elif field.kind is list:
        item = string(minLength=1, maxLength=MAX_ITEM_LENGTH)
        schema = array(item, maxItems=MAX_LIST_ITEMS)
    elif field.kind is dict:
        schema = {"type": "object"}
    else:
        raise TypeError(f"no schema for body field kind {field.kind!r}; teach api/openapi.py")
    # check_fields treats null like an absent field: optional fields accept it.
    return schema if field.required else nullable(schema)


def body_schema(fields: dict[str, Field], rules: dict[str, Schema]) -> Schema:
    """A closed object of `fields`, with the core's extra `rules` (patterns, ranges) merged in."""
    properties = {name: field_schema(field) for name, field in fields.items()}
    for name, extra in rules.items():
        properties[name] = {**properties[name], **extra}
    return obj(properties, [name for name, field in fields.items() if field.required])


# --- parameters ---------------------------------------------------------------------------------


def path_param(name: str, description: str) -> Schema:
    """A string path parameter such as `{name}`."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": string(),
    }


def path_id(what: str) -> Schema:
    """The `{id}` path parameter."""
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": f"The {what}'s id.",
        "schema": string(minLength=1),
    }


def query(name: str, schema: Schema, description: str) -> Schema:
    """An optional query parameter."""
    return {"name": name, "in": "query", "description": description, "schema": schema}


def cursor(schema: Schema | None = None) -> Schema:
    """The `cursor` query parameter of a paginated listing."""
    return query("cursor", schema or string(), "The `next_cursor` of the previous page.")


def limit(maximum: int, default: int) -> Schema:
    """The `limit` query parameter of a paginated listing."""
    schema = integer(minimum=1, maximum=maximum, default=default)
    return query("limit", schema, f"Items per page, 1 to {maximum}.")


def idempotency_key() -> Schema:
    """The optional Idempotency-Key header of a create."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "Same key and same body: the first answer again; other body: 422.",
        "schema": string(minLength=1, maxLength=255),
    }


# --- responses ----------------------------------------------------------------------------------


def answer(description: str, schema: Schema, media_type: str = "application/json") -> Schema:
    """One documented response with a body."""
    return {
        "description": description,
        "headers": {"X-Request-Id": ref("RequestId", "headers")},
        "content": {media_type: {"schema": schema}},
    }


def error_name(status: int) -> str:
    """The component name of the error response for `status`."""
    return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")


def error_responses() -> dict[str, Schema]:
    """Every error response, each in the common error shape."""
    responses: dict[str, Schema] = {}
    for status, description in ERRORS.items():
        response = answer(description, ref("Error"))
        if status == 429:
            response["headers"]["Retry-After"] = ref("RetryAfter", "headers")
        responses[error_name(status)] = response
    return responses


@dataclass(frozen=True)
class Route:
    """One documented operation: what it does, who may call it, what it takes and answers."""

    method: str
    path: str
    summary: str
    status: int
    ok: Schema
    permission: Permission | None = None
    errors: tuple[int, ...] = ()
    parameters: tuple[Schema, ...] = ()
    body: str | None = None
    body_required: bool = True

    def document(self, tag: str) -> Schema:
        """The OpenAPI operation object."""
        statuses = [*self.errors]
        op: Schema = {"operationId": self.operation_id(), "summary": self.summary, "tags": [tag]}
        if self.permission is None:
            op["security"] = []
        else:
            statuses += AUTHED_ERRORS
            op["description"] = f"Needs `{self.permission.value}` (roles: {self.roles()})."
        if self.parameters:
            op["parameters"] = list(self.parameters)
        if self.body is not None:
            content = {"application/json": {"schema": ref(self.body)}}
            op["requestBody"] = {"required": self.body_required, "content": content}
            statuses += BODY_ERRORS
        op["responses"] = {str(self.status): self.ok} | {
            str(s): ref(error_name(s), "responses") for s in sorted(set(statuses))
        }
        return op

    def operation_id(self) -> str:
        """A stable operationId from the method and path."""
        words = [w.strip("{}") for w in self.path.split("/") if w and w != "v1"]
        return "_".join([self.method, *words]).replace(".", "_")

    def roles(self) -> str:
        """The roles holding this route's permission, for humans."""
        return ", ".join(r.value for r in Role if self.permission in ROLE_PERMISSIONS[r])


# --- the routes, by tag -------------------------------------------------------------------------


def probe_routes() -> list[Route]:
    """Unauthenticated probes, metrics and this document."""
    ready, metrics = ref("Readiness"), answer("Prometheus text.", string(), "text/plain")
    return [
        Route("get", "/healthz", "Liveness", 200, answer("Alive.", ref("Health"))),
        Route("get", "/readyz", "Readiness: database and a node", 200, answer("Ready.", ready)),
        Route("get", "/metrics", "Prometheus metrics", 200, metrics, errors=(503,)),
        Route("get", SPEC_PATH, "This document", 200, answer("OpenAPI.", {"type": "object"})),
    ]


def workspace_routes() -> list[Route]:
    """Creating, listing, reading, changing and deleting workspaces."""
    read, write = Permission.READ_WORKSPACES, Permission.WRITE_WORKSPACES
    ws, op = answer("The workspace.", ref("Workspace")), answer("The operation.", ref("Operation"))
    one, accepted = (path_id("workspace"),), answer("Accepted.", ref("WorkspaceAccepted"))
    filters = (
        query("owner", string(), "Only this owner's workspaces."),
        query("state", enum_of(WorkspaceState), "Only workspaces in this state."),
        query("name", string(), "Only the workspace with this name."),
        cursor(),
        limit(service.MAX_PAGE, default=50),
    )
    listing = answer("A page.", page("workspaces", "Workspace"))

    def change(method: str, action: str, status: int, ok: Schema, body: str | None = None) -> Route:
        """A route that changes one workspace."""
        path = "/v1/workspaces/{id}" + (f"/{action}" if method == "post" else "")
        summary = f"{action.capitalize()} the workspace"
        return Route(method, path, summary, status, ok, write, (404, 409), one, body)

    return [
        Route(
            "post",
            "/v1/workspaces",
            "Request a workspace",
            202,
            accepted,
            permission=write,
            errors=(409,),
            parameters=(idempotency_key(),),
            body="CreateWorkspace",
        ),
        Route(
            "get",
            "/v1/workspaces",
            "List workspaces",
            200,
            listing,
            permission=read,
            errors=(422,),
            parameters=filters,
        ),
        Route(
            "get",
            "/v1/workspaces/{id}",
            "One workspace",
            200,
            ws,
            permission=read,
            errors=(404,),
            parameters=one,
        ),
        change("delete", "delete", 202, op),
        *(change("post", kind.value, 202, op) for kind in POWER_KINDS),
        change("post", "extend", 200, ws, body="Extend"),
    ]


def operation_routes() -> list[Route]:
    """Reading, following and cancelling operations."""
    read, write = Permission.READ_WORKSPACES, Permission.WRITE_WORKSPACES
    op, one = answer("The operation.", ref("Operation")), (path_id("operation"),)
    log = answer("One event a line.", string(), "text/plain")
    follow = query("follow", string(), "`1` or `true`: stream lines until the operation ends.")
    return [
        Route(
            "get",
            "/v1/operations/{id}",
            "One operation",
            200,
            op,
            permission=read,
            errors=(404,),
            parameters=one,
        ),
        Route(
            "get",
            "/v1/operations/{id}/log",
            "Its history as text",
            200,
            log,
            permission=read,
            errors=(404,),
            parameters=(*one, follow),
        ),
        Route(
            "post",
            "/v1/operations/{id}/cancel",
            "Cancel",
            202,
            op,
            permission=write,
            errors=(404, 409),
            parameters=one,
        ),
    ]


def catalog_routes() -> list[Route]:
    """What can be asked for, and where it runs; operators add nodes."""
    listings = (
        ("/v1/plans", "plans", "Plan", Permission.READ_CATALOG),
        ("/v1/images", "images", "Image", Permission.READ_CATALOG),
        ("/v1/nodes", "nodes", "Node", Permission.READ_NODES),
    )
    listed = [
        Route(
            "get",
            path,
            f"The {key}",
            200,
            answer("All.", obj({key: array(ref(item))})),
            permission=permission,
        )
        for path, key, item, permission in listings
    ]
    added = answer("The node, with nothing in use yet.", ref("Node"))
    return [
        *listed,
        Route(
            "post",
            "/v1/nodes",
            "Add a node (takes workspaces at once)",
            201,
            added,
            permission=Permission.MANAGE_NODES,
            errors=(409,),
            body="AddNode",
        ),
        Route(
            "post",
            "/v1/nodes/{name}/approve",
            "Trust the SSH host key the node presents (its fingerprint, as checked by you)",
            200,
            answer("The node, trusted.", ref("Node")),
            permission=Permission.MANAGE_NODES,
            errors=(404, 409),
            parameters=(path_param("name", "The node's name."),),
            body="ApproveHostKey",
        ),
    ]


def approval_routes() -> list[Route]:
    """Listing approvals and deciding on them (never on your own request)."""
    decide = Permission.DECIDE_APPROVALS
    states = enum_of(ApprovalState) | {"default": ApprovalState.PENDING.value}
    listing = answer("A page.", page("approvals", "Approval"))
    decided = answer("The decided approval.", ref("Approval"))
    return [
        Route(
            "get",
            "/v1/approvals",
            "List approvals",
            200,
            listing,
            permission=decide,
            errors=(422,),
            parameters=(query("state", states, "Only these."), cursor()),
        ),
        *(
            Route(
                "post",
                f"/v1/approvals/{{id}}/{decision}",
                decision.capitalize(),
                200,
                decided,
                permission=decide,
                errors=(404, 409),
                parameters=(path_id("approval"),),
                body="Decision",
                body_required=False,
            )
            for decision in ("approve", "deny")
        ),
    ]


def admin_routes() -> list[Route]:
    """The audit trail and API tokens."""
    manage = Permission.MANAGE_TOKENS
    audit_query = (
        query("target", string(), "Only events on this target."),
        query("actor", string(), "Only events by this actor."),
        query("action", string(), "Only events of this action, e.g. `workspace.requested`."),
        cursor(string(pattern="^[0-9]+$")),
        limit(audit.MAX_PAGE, default=100),
    )
    events, tokens = page("events", "AuditEvent"), page("tokens", "Token")
    created = answer("The token and its secret (shown this once).", ref("CreatedToken"))
    return [
        Route(
            "get",
            "/v1/audit",
            "Audit events, oldest first",
            200,
            answer("A page.", events),
            permission=Permission.READ_AUDIT,
            errors=(422,),
            parameters=audit_query,
        ),
        Route(
            "post",
            "/v1/tokens",
            "Create a token",
            201,
            created,
            permission=manage,
            body="CreateToken",
        ),
        Route(
            "get",
            "/v1/tokens",
            "List tokens",
            200,
            answer("A page.", tokens),
            permission=manage,
            errors=(422,),
            parameters=(cursor(), limit(service.MAX_PAGE, default=50)),
        ),
        Route(
            "delete",
            "/v1/tokens/{id}",
            "Revoke a token",
            200,
            answer("The revoked token.", ref("Token")),
            permission=manage,
            errors=(404,),
            parameters=(path_id("token"),),
        ),
    ]


ROUTES = {
    "probes": probe_routes,
    "workspaces": workspace_routes,
    "operations": operation_routes,
    "catalog": catalog_routes,
    "approvals": approval_routes,
    "admin": admin_routes,
}


# --- component schemas --------------------------------------------------------------------------


def catalog_rules(catalog: Catalog | None) -> tuple[dict[str, Schema], dict[str, Schema]]:
    """What this deployment's catalog adds: plan and image choices, the longest lifetime."""
    if catalog is None or not catalog.plans or not catalog.images:
        return {}, {}
    longest: Schema = {"maximum": max(plan.max_ttl_hours for plan in catalog.plans.values())}
    create: dict[str, Schema] = {
        "plan": {"enum": sorted(catalog.plans)},
        "image": {"enum": sorted(catalog.images)},
        "ttl_hours": longest,
    }
    return create, {"hours": longest}


def request_schemas(catalog: Catalog | None) -> dict[str, Schema]:
    """Request bodies, with the core's validation rules and, if given, the catalog's choices."""
    create_choices, extend_choices = catalog_rules(catalog)
    name = {"pattern": NAME_RE.pattern, "maxLength": 40, "examples": ["dev-box"]}
    create_rules: dict[str, Schema] = {
        "plan": {"examples": ["small"]},
        "image": {"examples": ["debian-12"]},
        "name": name,
        "owner": {"pattern": OWNER_RE.pattern, "examples": ["alice@example.com"]},
        "ttl_hours": {"minimum": 1, "description": "At most the plan's max_ttl_hours."},
    }
    for key, extra in create_choices.items():
        create_rules[key] = create_rules[key] | extra
    token_rules: dict[str, Schema] = {
        "role": enum_of(Role),
        "owner": {"examples": ["alice@example.com"]},
        "expires": {"pattern": DURATION_RE.pattern, "examples": ["12h", "30d", "2w"]},
    }
    capacity = body_schema(CAPACITY_FIELDS, {key: {"minimum": 1} for key in CAPACITY_FIELDS})
    node_rules: dict[str, Schema] = {
        "name": name,
        "libvirt_uri": {"pattern": LIBVIRT_URI_RE.pattern, "examples": ["test:///default"]},
        # The nested object is checked by the same rules (api/admin.py add_node).
        "capacity": {k: v for k, v in capacity.items() if k != "type"},
    }
    return {
        "CreateWorkspace": body_schema(CREATE_FIELDS, create_rules),
        "AddNode": body_schema(NODE_FIELDS, node_rules),
        "ApproveHostKey": body_schema(APPROVE_FIELDS, {}),
        "Extend": body_schema(
            EXTEND_FIELDS,
            {"hours": {"minimum": 1, "examples": [24], **extend_choices.get("hours", {})}},
        ),
        "Decision": body_schema(DECISION_FIELDS, {}),
        "CreateToken": body_schema(TOKEN_FIELDS, token_rules),
    }


def workspace_schemas() -> dict[str, Schema]:
    """Workspaces and operations as api/render.py shows them."""
    text, when = nullable(string()), nullable(timestamp())
    return {
        "Tailscale": obj({"hostname": text, "ip": text, "tags": array(string())}),
        "Workspace": obj(
            {key: string() for key in ("id", "name", "owner", "plan", "image", "node")}
            | {"state": enum_of(WorkspaceState), "domain": string(), "tailscale": ref("Tailscale")}
            | {"error": text, "created_at": timestamp(), "updated_at": timestamp()}
            | {"expires_at": when, "address": text}
        ),
        "Step": obj(
            {"name": string(), "state": enum_of(StepState), "detail": text}
            | {"started_at": timestamp(), "finished_at": when}
        ),
        "Operation": obj(
            {"id": string(), "kind": enum_of(OperationKind), "state": enum_of(OperationState)}
            | {"workspace_id": string(), "requested_by": string(), "steps": array(ref("Step"))}
            | {"error": text, "attempts": integer(minimum=0), "cancel_requested": boolean()}
            | {"created_at": timestamp(), "updated_at": timestamp()}
        ),
        "WorkspaceAccepted": obj({"workspace": ref("Workspace"), "operation": ref("Operation")}),
    }


def catalog_schemas() -> dict[str, Schema]:
    """Plans, images and nodes as the catalog routes show them."""
    sizes = {key: integer() for key in ("vcpus", "memory_mib", "disk_gib")}
    text = nullable(string())
    return {
        "Capacity": obj(sizes),
        "Plan": obj(
            {"name": string(), **sizes, "ttl_hours": integer(), "max_ttl_hours": integer()}
            | {"requires_approval": boolean()}
        ),
        "Image": obj(
            {"name": string(), "base_volume": string(), "os": string()}
            | {key: text for key in ("kernel", "initrd", "cmdline")}
        ),
        "Node": obj(
            {"name": string(), "libvirt_uri": string(), "ssh_host": text}
            | {"ssh_port": nullable(integer()), "pool": string(), "network": string()}
            | {"virt_type": string(), "capacity": ref("Capacity"), "used": ref("Capacity")}
            | {"host_key": ref("HostKey")}
        ),
        "HostKey": obj(
            {"state": enum_of(NodeTrust), "fingerprint": text, "presented_fingerprint": text}
        ),
    }


def admin_schemas() -> dict[str, Schema]:
    """Approvals, tokens and audit events."""
    text, when = nullable(string()), nullable(timestamp())
    return {
        "Approval": obj(
            {key: string() for key in ("id", "operation_id", "requested_by")}
            | {"state": enum_of(ApprovalState), "decided_by": text, "decided_at": when}
            | {"reason": text, "created_at": timestamp()}
        ),
        "Token": obj(
            {"id": string(), "role": enum_of(Role), "owner": string(), "created_at": timestamp()}
            | {key: when for key in ("expires_at", "last_used_at", "revoked_at")}
        ),
        "CreatedToken": obj({"token": ref("Token"), "secret": string()}),
        "AuditEvent": obj(
            {"id": integer(), "at": timestamp()}
            | {key: string() for key in ("actor", "source", "action", "target", "outcome")}
            | {"reason": text, "operation_id": text}
        ),
    }


def probe_schemas() -> dict[str, Schema]:
    """The common error shape and the probes' answers."""
    code = string(pattern="^[a-z][a-z0-9_]*$")
    return {
        "Error": obj({"error": obj({"code": code, "message": string(minLength=1)})}),
        "Health": obj({"status": string(enum=["ok"])}),
        "Readiness": obj(
            {"status": string(enum=["ok", "unavailable"]), "database": string()}
            | {"nodes": {"type": "object", "additionalProperties": string()}}
        ),
    }


# --- the document -------------------------------------------------------------------------------


def paths() -> dict[str, dict[str, Schema]]:
    """Every documented path with its operations."""
    documented: dict[str, dict[str, Schema]] = {}
    for tag, routes_of in ROUTES.items():
        for route in routes_of():
            documented.setdefault(route.path, {})[route.method] = route.document(tag)
    # /readyz answers 503 with its own body, not the error shape, when it is not ready.
    documented["/readyz"]["get"]["responses"]["503"] = answer("Not ready.", ref("Readiness"))
    return documented


def components(catalog: Catalog | None) -> Schema:
    """Schemas, error responses, headers and the security scheme."""
    schemas = probe_schemas() | request_schemas(catalog)
    for group in (workspace_schemas, catalog_schemas, admin_schemas):
        schemas.update(group())
    request_id = "Correlates the answer with the server's log lines."
    return {
        "schemas": schemas,
        "responses": error_responses(),
        "headers": {
            "RequestId": {"description": request_id, "schema": string()},
            "RetryAfter": {"description": "Seconds to wait.", "schema": string(pattern="^[0-9]+$")},
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    }


def version() -> str:
    """The installed project's version (the document still builds from a bare checkout)."""
    try:
        return metadata.version("provisioner")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def spec(catalog: Catalog | None = None) -> Schema:
    """The whole OpenAPI document, freshly built; with a catalog, its plans and images."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "provisioner",
            "version": version(),
            "description": "Workspaces (libvirt VMs) on request. Every error is "
            '`{"error": {"code": "snake_case", "message": "a sentence"}}`.',
        },
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": components(catalog),
    }


@routes.get(SPEC_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    """This API's OpenAPI document, with the plans and images this deployment offers."""
    return json_response(spec(request.app[PROVISIONER_KEY].catalog))
