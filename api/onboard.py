"""Routes for existing-host onboarding: request, list, read, log, approve the host key, cancel."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acl.rbac import Permission
from api.body import Field, Json
from api.paging import limit_of
from api.render import iso, json_response
from api.routing import Call, RouteTable
from api.schema import (
    Schema,
    answer,
    boolean,
    cursor,
    enum_of,
    integer,
    limit,
    nullable,
    obj,
    page,
    query,
    ref,
    string,
    timestamp,
)
from provisioner.errors import InvalidInput
from provisioner.onboard_models import OnboardInput, OnboardRequest, OnboardState
from provisioner.onboarding import Onboarding

ONBOARD_KEY = web.AppKey("onboarding", Onboarding)
# Developers may ask; operators decide on host keys and cancel (CONTRACT §6).
REQUEST, READ = Permission.WRITE_WORKSPACES, Permission.READ_WORKSPACES
DECIDE = Permission.MANAGE_NODES


class Flag(Field):
    """A boolean body field (JSON true or false)."""

    def _base(self, catalog: object) -> Schema:
        return boolean()


REQUEST_FIELDS: dict[str, Field] = {
    "host": Field(str, required=True, max_length=253, doc={"examples": ["203.0.113.7"]}),
    "port": Field(int, doc={"minimum": 1, "maximum": 65535, "default": 22}),
    "login_user": Field(str, required=True, max_length=32, doc={"examples": ["root"]}),
    "login_password": Field(
        str,
        required=True,
        max_length=1024,
        doc={"writeOnly": True, "description": "Used once for the login, never stored or shown."},
    ),
    "desired_user": Field(
        str, required=True, max_length=32, doc={"pattern": "^[a-z_][a-z0-9_-]*$"}
    ),
    "generate_key": Flag(bool, doc={"description": "Make an Ed25519 key pair for the user."}),
    "public_key": Field(str, max_length=16384, doc={"examples": ["ssh-ed25519 AAAAC3Nza… me"]}),
    "sudo": Flag(bool, doc={"description": "Add the user to the host's sudo (or wheel) group."}),
}
APPROVE_FIELDS = {"fingerprint": Field(str, required=True, max_length=128)}
REQUEST_ANSWER = answer("The request.", ref("OnboardRequest"))


def _text() -> Schema:
    return nullable(string())


def onboard_schemas() -> dict[str, Schema]:
    """An onboarding request as `request_json` shows it."""
    names = ("id", "requested_by", "host", "login_user", "desired_user", "public_key")
    return {
        "OnboardRequest": obj(
            {name: string() for name in names}
            | {"port": integer(), "sudo": boolean(), "generate_key": boolean()}
            | {"state": enum_of(OnboardState), "key_fingerprint": string()}
            | {"host_key_fingerprint": _text(), "pinned_fingerprint": _text()}
            | {"decided_by": _text(), "reason": _text(), "private_key_path": _text()}
            | {"created_at": timestamp(), "updated_at": timestamp()}
        )
    }


routes = RouteTable("onboarding", schemas=onboard_schemas())


def request_json(request: OnboardRequest) -> dict[str, Any]:
    """A request as the API shows it (there is no password to show: none is kept)."""
    return {
        "id": request.id,
        "requested_by": request.requested_by,
        "host": request.host,
        "port": request.port,
        "login_user": request.login_user,
        "desired_user": request.desired_user,
        "sudo": request.sudo,
        "generate_key": request.generated_key,
        "public_key": request.public_key,
        "key_fingerprint": request.key_fingerprint,
        "state": request.state.value,
        "host_key_fingerprint": request.presented_fingerprint,
        "pinned_fingerprint": request.pinned_fingerprint,
        "decided_by": request.decided_by,
        "reason": request.reason,
        "private_key_path": request.private_key_path,
        "created_at": iso(request.created_at),
        "updated_at": iso(request.updated_at),
    }


@routes.post(
    "/v1/onboard/requests",
    REQUEST,
    "Onboard an existing host: make a user there with an SSH key (one-time password login)",
    status=202,
    ok=REQUEST_ANSWER,
    body=Json("OnboardRequestBody", REQUEST_FIELDS),
    errors=(429,),
)
async def create_request(call: Call) -> web.Response:
    """Take the request; the host key is fetched next, then approved by an operator if new."""
    body = {key: value for key, value in call.body.items() if value is not None}
    spec = OnboardInput(
        host=body["host"],
        port=body.get("port", 22),
        login_user=body["login_user"],
        login_password=body["login_password"],
        desired_user=body["desired_user"],
        generate_key=bool(body.get("generate_key", False)),
        public_key=body.get("public_key"),
        sudo=bool(body.get("sudo", False)),
    )
    request = await call.app[ONBOARD_KEY].request(call.actor, spec)
    return json_response(request_json(request), status=202)


@routes.get(
    "/v1/onboard/requests",
    READ,
    "Onboarding requests (yours; operators see all)",
    ok=answer("One page.", page("requests", "OnboardRequest")),
    params=(
        query("state", enum_of(OnboardState), "Only requests in this state."),
        cursor(),
        limit(500, 100),
    ),
    errors=(422,),
)
async def list_requests(call: Call) -> web.Response:
    """A page of requests, oldest first."""
    state = call.query.get("state")
    if state is not None and state not in {s.value for s in OnboardState}:
        raise InvalidInput(f"state must be one of {', '.join(OnboardState)}", field="state")
    found = await call.app[ONBOARD_KEY].list(
        call.actor,
        state=OnboardState(state) if state else None,
        cursor=call.query.get("cursor"),
        limit=limit_of(call.request, default=100),
    )
    items = [request_json(request) for request in found.items]
    return json_response({"requests": items, "next_cursor": found.next_cursor})


@routes.get(
    "/v1/onboard/requests/{id}", READ, "One onboarding request", ok=REQUEST_ANSWER, errors=(404,)
)
async def get_request(call: Call) -> web.Response:
    """One request."""
    return json_response(request_json(await call.app[ONBOARD_KEY].get(call.actor, call.path("id"))))


@routes.get(
    "/v1/onboard/requests/{id}/log",
    READ,
    "The request's history as text (redacted)",
    ok=answer("One event a line.", string(), "text/plain"),
    errors=(404,),
)
async def request_log(call: Call) -> web.Response:
    """Every state change and what the host printed, one line each."""
    lines = await call.app[ONBOARD_KEY].log(call.actor, call.path("id"))
    return web.Response(text="".join(f"{iso(line.at)} {line.line}\n" for line in lines))


@routes.post(
    "/v1/onboard/requests/{id}/approve",
    DECIDE,
    "Trust the host key the host presents (the fingerprint you checked); not your own request",
    ok=REQUEST_ANSWER,
    body=Json("ApproveOnboardHostKey", APPROVE_FIELDS),
    errors=(404, 409),
)
async def approve_request(call: Call) -> web.Response:
    """Compare-and-set: a fingerprint that is not the presented one changes nothing (409)."""
    onboarding = call.app[ONBOARD_KEY]
    request = await onboarding.approve(call.actor, call.path("id"), call.body["fingerprint"])
    return json_response(request_json(request))


@routes.post(
    "/v1/onboard/requests/{id}/cancel",
    DECIDE,
    "Cancel a request that has not logged in to the host yet",
    ok=REQUEST_ANSWER,
    errors=(404, 409),
)
async def cancel_request(call: Call) -> web.Response:
    """Withdraw a created or awaiting_approval request; its password is forgotten."""
    request = await call.app[ONBOARD_KEY].cancel(call.actor, call.path("id"))
    return json_response(request_json(request))
