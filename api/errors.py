"""The API's one error boundary: every failure becomes {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web

from api.render import json_response
from provisioner.errors import (
    CapacityExhausted,
    Conflict,
    InfrastructureError,
    InvalidInput,
    NodeUntrusted,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProvisionerError,
    RateLimited,
    Unauthenticated,
)
from provisioner.metrics import Metrics

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS_KEY = web.AppKey("metrics", Metrics)
REQUEST_ID = web.RequestKey("request_id", str)
# The id of the request being served, for log lines written while serving it.
CURRENT_REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

STATUS: tuple[tuple[type[ProvisionerError], int], ...] = (
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (CapacityExhausted, 409),
    (NodeUntrusted, 409),
    (RateLimited, 429),
    (InfrastructureError, 503),
)
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class RequestError(ProvisionerError):
    """A malformed HTTP request, with the status it deserves (400, 413, 415)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def error_response(status: int, code: str, message: str) -> web.Response:
    """The JSON error body every failure uses."""
    return json_response({"error": {"code": code, "message": message}}, status=status)


def _status_of(error: ProvisionerError) -> int:
    """The HTTP status for a core error."""
    if isinstance(error, RequestError):
        return error.status
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


@web.middleware
async def error_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate errors to JSON, tag the request with an id, and count it."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    CURRENT_REQUEST_ID.set(request_id)
    started = time.perf_counter()
    try:
        if "\x00" in request.path or any("\x00" in v for v in request.query.values()):
            raise InvalidInput("NUL characters are not allowed", code="invalid_value")
        response = await handler(request)
    except ProvisionerError as error:
        response = error_response(_status_of(error), error.code, error.message)
        if isinstance(error, RateLimited):
            response.headers["Retry-After"] = str(error.retry_after)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = HTTP_CODES.get(error.status, "http_error")
        response = error_response(error.status, code, error.reason)
        if "Allow" in error.headers:  # a 405 must say which methods are allowed
            response.headers["Allow"] = error.headers["Allow"]
    except Exception:
        log.exception("request %s %s failed (id %s)", request.method, request.path, request_id)
        response = error_response(500, "internal_error", f"internal error; request id {request_id}")
    response.headers["X-Request-Id"] = request_id
    route = request.match_info.route.resource
    label = route.canonical if route is not None else "unmatched"
    request.app[METRICS_KEY].observe_http(
        request.method, label, response.status, time.perf_counter() - started
    )
    return response
