"""Unauthenticated probes: liveness, readiness (database and nodes) and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web

from api.errors import METRICS_KEY
from api.render import json_response
from api.routing import PUBLIC, Call, RouteTable
from api.schema import answer, ref, string
from api.workspaces import PROVISIONER_KEY
from provisioner.errors import InfrastructureError

routes = RouteTable("probes")


@routes.get("/healthz", PUBLIC, "Liveness", ok=answer("Alive.", ref("Health")))
async def healthz(_call: Call) -> web.Response:
    """The process is alive and serving."""
    return json_response({"status": "ok"})


@routes.get(
    "/readyz",
    PUBLIC,
    "Readiness: database and a node",
    ok=answer("Ready.", ref("Readiness")),
    # Not ready is its own body, not the error shape.
    responses={503: answer("Not ready.", ref("Readiness"))},
)
async def readyz(call: Call) -> web.Response:
    """Ready when the database answers and at least one node does."""
    try:
        nodes = await call.app[PROVISIONER_KEY].nodes.readiness()
    except InfrastructureError as error:
        body = {"status": "unavailable", "database": error.message, "nodes": {}}
        return json_response(body, status=503)
    ready = any(problem is None for problem in nodes.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "database": "ok",
        "nodes": {name: problem or "ok" for name, problem in nodes.items()},
    }
    return json_response(body, status=200 if ready else 503)


@routes.get(
    "/metrics",
    PUBLIC,
    "Prometheus metrics",
    ok=answer("Prometheus text.", string(), "text/plain"),
    errors=(503,),
)
async def metrics(call: Call) -> web.Response:
    """Prometheus text format, with state gauges refreshed from the store."""
    registry = call.app[METRICS_KEY]
    core = call.app[PROVISIONER_KEY]
    registry.set_counts(*await core.counts())
    registry.set_nodes(await core.nodes.list())
    return web.Response(body=registry.render(), content_type="text/plain", charset="utf-8")
