"""aiohttp application factory: the token API, probes and metrics under one error boundary."""

from __future__ import annotations

from aiohttp import web

from api import approvals, catalog, health, workspaces
from api.approvals import APPROVALS_KEY
from api.auth import TOKENS_KEY
from api.body import MAX_BODY
from api.errors import METRICS_KEY, error_boundary
from api.workspaces import PROVISIONER_KEY
from provisioner.approvals import Approvals
from provisioner.metrics import Metrics
from provisioner.service import Provisioner
from provisioner.tokens import Tokens


def build_app(
    core: Provisioner, approvals_: Approvals, tokens: Tokens, metrics: Metrics
) -> web.Application:
    """The HTTP application over a ready core."""
    app = web.Application(middlewares=[error_boundary], client_max_size=MAX_BODY)
    app[PROVISIONER_KEY] = core
    app[APPROVALS_KEY] = approvals_
    app[TOKENS_KEY] = tokens
    app[METRICS_KEY] = metrics
    app.add_routes(health.routes)
    app.add_routes(workspaces.routes)
    app.add_routes(catalog.routes)
    app.add_routes(approvals.routes)
    return app
