"""The OpenAPI 3.1 document, rendered from the route tables and the bodies they declare."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from importlib import metadata

from aiohttp import web

from acl.rbac import ROLE_PERMISSIONS
from api.body import MAX_BODY, fields_schema
from api.components import schemas
from api.render import json_response
from api.routing import PUBLIC, Call, Route, RouteTable
from api.schema import Schema, answer, path_param, ref, string
from api.workspaces import PROVISIONER_KEY
from provisioner.catalog import Catalog
from provisioner.models import Role

SPEC_PATH = "/v1/openapi.json"
TABLES_KEY = web.AppKey("route_tables", tuple)
routes = RouteTable("probes")
ERRORS: dict[int, str] = {
    400: "The body is not valid JSON.",
    401: "No bearer token, or one that is unknown, revoked or expired.",
    403: "The token's role lacks the permission this needs.",
    404: "No such resource, or the caller may not see it.",
    409: "The resource's state forbids this, or no node has room for it.",
    413: f"The body is larger than {MAX_BODY // 1024} KiB.",
    415: "The body is not sent in the media type the route takes.",
    422: "The input is well-formed but breaks a rule (unknown field, wrong type, bad value).",
    429: "Too many requests from this token; retry after Retry-After seconds.",
    503: "The database or a node is unavailable; the request may succeed later.",
}
AUTHED_ERRORS = (401, 403, 429, 503)
BODY_ERRORS = (400, 413, 415, 422)
# `{name:a|b}` in an aiohttp path: one documented path per choice.
CHOICES = re.compile(r"\{(\w+):([\w|-]+)\}")


def error_name(status: int) -> str:
    """The component name of the error response for `status`."""
    return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")


def expansions(route: Route) -> Iterator[tuple[str, str]]:
    """(path, summary) for each concrete path the route serves."""
    match = CHOICES.search(route.path)
    if match is None:
        yield route.path, route.summary
        return
    for choice in match.group(2).split("|"):
        path = route.path[: match.start()] + choice + route.path[match.end() :]
        narrowed = Route(**{**route.__dict__, "path": path})
        summary = route.summary.replace(f"{{{match.group(1)}}}", choice.capitalize())
        for deeper, _ in expansions(narrowed):
            yield deeper, summary


def path_params(path: str) -> list[Schema]:
    """The `{id}`/`{name}` parameters of a path, each described by the collection before it."""
    params = []
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.startswith("{"):
            name, what = part.strip("{}"), parts[i - 1].removesuffix("s")
            schema = string(minLength=1) if name == "id" else string()
            params.append(path_param(name, f"The {what}'s {name}.", schema))
    return params


def operation(route: Route, path: str, summary: str, tag: str) -> Schema:
    """The OpenAPI operation object of one concrete path of a route."""
    statuses = [*route.errors]
    words = [w.strip("{}") for w in path.split("/") if w and w != "v1"]
    op: Schema = {
        "operationId": "_".join([route.method, *words]).replace(".", "_"),
        "summary": summary,
        "tags": [tag],
    }
    if route.permission is PUBLIC:
        op["security"] = []
    else:
        statuses += AUTHED_ERRORS
        op["description"] = f"Needs `{route.permission.value}` (roles: {_roles(route)})."
    if params := [*path_params(path), *route.params]:
        op["parameters"] = params
    if any(p["in"] == "query" for p in route.params):
        statuses.append(422)  # a query value the route cannot use
    if route.body is not None:
        content = {route.body.media_type: {"schema": ref(route.body.name)}}
        op["requestBody"] = {"required": route.body.required, "content": content}
        statuses += BODY_ERRORS
    op["responses"] = (
        {str(route.status): route.ok}
        | {str(s): ref(error_name(s), "responses") for s in sorted(set(statuses))}
        | {str(s): schema for s, schema in route.responses.items()}
    )
    return op


def paths(tables: Iterable[RouteTable]) -> dict[str, dict[str, Schema]]:
    """Every documented path with its operations."""
    documented: dict[str, dict[str, Schema]] = {}
    for table in tables:
        for route in table.routes:
            for path, summary in expansions(route):
                documented.setdefault(path, {})[route.method] = operation(
                    route, path, summary, table.tag
                )
    return documented


def error_responses() -> dict[str, Schema]:
    """Every error response, each in the common error shape."""
    responses: dict[str, Schema] = {}
    for status, description in ERRORS.items():
        response = answer(description, ref("Error"))
        if status == 429:
            response["headers"]["Retry-After"] = ref("RetryAfter", "headers")
        responses[error_name(status)] = response
    return responses


def bodies(tables: Iterable[RouteTable], catalog: Catalog | None) -> dict[str, Schema]:
    """The request bodies the routes declare, with the catalog's choices when there is one."""
    if catalog is not None and not (catalog.plans and catalog.images):
        catalog = None
    return {
        route.body.name: fields_schema(route.body.fields, catalog)
        for table in tables
        for route in table.routes
        if route.body is not None
    }


def own_schemas(tables: Iterable[RouteTable]) -> dict[str, Schema]:
    """The component schemas the tables declare with their routes."""
    return {name: schema for table in tables for name, schema in table.schemas.items()}


def components(tables: tuple[RouteTable, ...], catalog: Catalog | None) -> Schema:
    """Schemas, error responses, headers and the security scheme."""
    request_id = "Correlates the answer with the server's log lines."
    return {
        "schemas": schemas() | own_schemas(tables) | bodies(tables, catalog),
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


def spec(tables: tuple[RouteTable, ...], catalog: Catalog | None = None) -> Schema:
    """The whole OpenAPI document of `tables`; with a catalog, its plans and images."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "provisioner",
            "version": version(),
            "description": "Workspaces (libvirt VMs) on request. Every error is "
            '`{"error": {"code": "snake_case", "message": "a sentence"}}`.',
        },
        "security": [{"bearer": []}],
        "paths": paths(tables),
        "components": components(tables, catalog),
    }


@routes.get(SPEC_PATH, PUBLIC, "This document", ok=answer("OpenAPI.", {"type": "object"}))
async def openapi_document(call: Call) -> web.Response:
    """This API's OpenAPI document, with the plans and images this deployment offers."""
    return json_response(spec(call.app[TABLES_KEY], call.app[PROVISIONER_KEY].catalog))


MARKDOWN_START = "<!-- API routes: generated by `python -m api --markdown` -->"
MARKDOWN_END = "<!-- end of API routes -->"


def markdown(tables: Iterable[RouteTable]) -> str:
    """The README's route table: each route, what it takes and answers, and who may call it."""
    lines = [MARKDOWN_START, "| route | what | answer | roles |", "|---|---|---|---|"]
    for table in tables:
        for route in table.routes:
            for path, summary in expansions(route):
                lines.append(
                    f"| `{route.method.upper()} {path}` | {summary}{_takes(route)} "
                    f"| {route.status} | {_roles(route)} |"
                )
    lines.append(MARKDOWN_END)
    return "\n".join(lines) + "\n"


def _takes(route: Route) -> str:
    """What a route takes, for the README: query parameters and body fields."""
    names = [p["name"] for p in route.params if p["in"] == "query"]
    text = f" `?{'&'.join(f'{n}=' for n in names)}`" if names else ""
    if route.body is not None:
        fields = ", ".join(f"{n}{'' if f.required else '?'}" for n, f in route.body.fields.items())
        kind = "form" if route.body.media_type == "multipart/form-data" else "JSON"
        text += f" ({kind}: {fields})"
    return text


def _roles(route: Route) -> str:
    """The roles that may call a route."""
    if route.permission is PUBLIC:
        return "anyone, no token"
    return ", ".join(r.value for r in Role if route.permission in ROLE_PERMISSIONS[r])
