"""CORS, off unless origins are configured: browsers on those origins may call the API."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from api.errors import Handler

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id"


def cors_middleware(origins: frozenset[str]) -> Middleware:
    """A middleware answering preflights and tagging answers for the allowed origins."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        allowed = origin if origin in origins or "*" in origins else None
        preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        if allowed and preflight:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Vary"] = "Origin"
        return response

    return cors
