"""aiohttp application factory: the token API, probes and metrics under one error boundary."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from acl.publisher import PolicyPublisher
from api import (
    admin,
    approvals,
    catalog,
    health,
    keys,
    nodes,
    onboard,
    openapi,
    playbooks,
    policy,
    workspaces,
)
from api.admin import AUDIT_KEY
from api.approvals import APPROVALS_KEY
from api.auth import LIMITER_KEY, TOKENS_KEY
from api.body import MAX_BODY
from api.cors import cors_middleware
from api.errors import METRICS_KEY, error_boundary
from api.openapi import TABLES_KEY
from api.ratelimit import RateLimiter
from api.routing import RouteTable
from api.schema import Schema
from api.workspaces import PROVISIONER_KEY
from provisioner.approvals import Approvals
from provisioner.audit import AuditTrail
from provisioner.catalog import Catalog
from provisioner.keys import SshKeys
from provisioner.metrics import Metrics
from provisioner.playbook_admin import Playbooks
from provisioner.service import Provisioner
from provisioner.tokens import Tokens

# Every route the API serves, in the order the document lists them.
TABLES: tuple[RouteTable, ...] = (
    health.routes,
    openapi.routes,
    workspaces.routes,
    workspaces.operation_routes,
    catalog.routes,
    nodes.routes,
    approvals.routes,
    keys.routes,
    onboard.routes,
    playbooks.routes,
    policy.routes,
    admin.routes,
)


def document(catalog: Catalog | None = None) -> Schema:
    """The OpenAPI document of every route; with a catalog, its plans and images."""
    return openapi.spec(TABLES, catalog)


@dataclass(frozen=True)
class ApiServices:
    """The core services the HTTP edge translates to."""

    core: Provisioner
    approvals: Approvals
    tokens: Tokens
    audit: AuditTrail
    metrics: Metrics
    keys: SshKeys
    playbooks: Playbooks
    policy: PolicyPublisher


@dataclass(frozen=True)
class ApiOptions:
    """How the HTTP edge behaves: rate limits and CORS."""

    rate_per_second: float = 20.0
    burst: int = 40
    cors_origins: frozenset[str] = field(default_factory=frozenset)


def build_app(services: ApiServices, options: ApiOptions | None = None) -> web.Application:
    """The HTTP application over ready core services."""
    options = options or ApiOptions()
    middlewares: list[Middleware] = [error_boundary]
    if options.cors_origins:
        middlewares.insert(0, cors_middleware(options.cors_origins))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[PROVISIONER_KEY] = services.core
    app[APPROVALS_KEY] = services.approvals
    app[TOKENS_KEY] = services.tokens
    app[AUDIT_KEY] = services.audit
    app[METRICS_KEY] = services.metrics
    app[keys.KEYS_KEY] = services.keys
    app[playbooks.PLAYBOOKS_KEY] = services.playbooks
    app[policy.POLICY_KEY] = services.policy
    app[LIMITER_KEY] = RateLimiter(options.rate_per_second, options.burst)
    app[TABLES_KEY] = TABLES
    for table in TABLES:
        table.add_to(app)
    return app
