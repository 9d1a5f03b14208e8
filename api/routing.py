"""The API's route tables: each route declared once (method, path, permission, body, answer,
errors, summary); authorisation, body reading and its OpenAPI operation all come from that."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from acl.rbac import Permission
from api.auth import authorize
from api.body import Body
from api.schema import Schema
from provisioner.models import Actor

# A route anyone may call, without a token.
PUBLIC = None


@dataclass(frozen=True)
class Call:
    """One request to a declared route: the request, its authorised caller, its checked body."""

    request: web.Request
    caller: Actor | None
    body: dict[str, Any]

    @property
    def actor(self) -> Actor:
        """The caller; only routes declared with a permission have one."""
        if self.caller is None:
            raise RuntimeError("a PUBLIC route has no caller")
        return self.caller

    @property
    def app(self) -> web.Application:
        """The application, for its services."""
        return self.request.app

    @property
    def query(self) -> Mapping[str, str]:
        """The query string's parameters."""
        return self.request.query

    def path(self, name: str) -> str:
        """A path parameter, such as `id`."""
        return self.request.match_info[name]


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One declared route; `{x:a|b}` in the path serves (and documents) one route per choice,
    and `{x}` in the summary names the choice."""

    method: str
    path: str
    permission: Permission | None
    summary: str
    handler: Handler
    ok: Schema  # the success answer, built with api.schema.answer
    status: int = 200
    body: Body | None = None
    errors: tuple[int, ...] = ()  # besides those the permission and the body imply
    params: tuple[Schema, ...] = ()  # query and header parameters (path ones come from the path)
    responses: Mapping[int, Schema] = field(default_factory=dict)  # answers not in the error shape

    def endpoint(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler: authorise, read the body, then the declared handler."""

        async def endpoint(request: web.Request) -> web.StreamResponse:
            caller = None
            if self.permission is not None:
                caller = await authorize(request, self.permission)
            body = await self.body.read(request) if self.body is not None else {}
            return await self.handler(Call(request, caller, body))

        return endpoint


class RouteTable:
    """The routes of one part of the API (its OpenAPI tag), declared with decorators, and the
    component schemas its answers refer to (`ref("Name")`)."""

    def __init__(self, tag: str, schemas: Mapping[str, Schema] | None = None) -> None:
        self.tag = tag
        self.routes: list[Route] = []
        self.schemas: dict[str, Schema] = dict(schemas or {})

    def route(
        self, method: str, path: str, permission: Permission | None, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Declare `method path`; `options` are Route's (ok, status, body, errors, params)."""

        def declare(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, permission, summary, handler, **options))
            return handler

        return declare

    def get(
        self, path: str, permission: Permission | None, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Declare a GET route."""
        return self.route("get", path, permission, summary, **options)

    def post(
        self, path: str, permission: Permission | None, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Declare a POST route."""
        return self.route("post", path, permission, summary, **options)

    def delete(
        self, path: str, permission: Permission | None, summary: str, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Declare a DELETE route."""
        return self.route("delete", path, permission, summary, **options)

    def add_to(self, app: web.Application) -> None:
        """Serve every route of this table (GET routes answer HEAD too)."""
        for route in self.routes:
            if route.method == "get":
                app.router.add_get(route.path, route.endpoint())
            else:
                app.router.add_route(route.method.upper(), route.path, route.endpoint())
