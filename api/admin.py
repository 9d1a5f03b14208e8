"""Routes for operators and admins: the audit trail and token management."""

from __future__ import annotations

from aiohttp import web

from acl.rbac import Permission
from api import render
from api.auth import TOKENS_KEY
from api.body import Field, Json
from api.paging import limit_of
from api.routing import Call, RouteTable
from api.schema import answer, cursor, enum_of, limit, page, query, ref, string
from provisioner import audit, service
from provisioner.audit import AuditTrail
from provisioner.errors import InvalidInput
from provisioner.models import Role
from provisioner.tokens import DURATION_RE, parse_duration

AUDIT_KEY = web.AppKey("audit", AuditTrail)
MANAGE_TOKENS = Permission.MANAGE_TOKENS
routes = RouteTable("admin")

TOKEN_FIELDS = {
    "role": Field(str, required=True, doc=enum_of(Role)),
    "owner": Field(str, required=True, doc={"examples": ["alice@example.com"]}),
    "expires": Field(
        str, max_length=16, doc={"pattern": DURATION_RE.pattern, "examples": ["12h", "30d", "2w"]}
    ),
}


@routes.get(
    "/v1/audit",
    Permission.READ_AUDIT,
    "Audit events, oldest first",
    ok=answer("A page.", page("events", "AuditEvent")),
    errors=(422,),
    params=(
        query("target", string(), "Only events on this target."),
        query("actor", string(), "Only events by this actor."),
        query("action", string(), "Only events of this action, e.g. `workspace.requested`."),
        cursor(string(pattern="^[0-9]+$")),
        limit(audit.MAX_PAGE, default=100),
    ),
)
async def list_audit(call: Call) -> web.Response:
    """Audit events, oldest first, filtered by target, actor or action."""
    page_ = await call.app[AUDIT_KEY].list(
        target=call.query.get("target"),
        actor=call.query.get("actor"),
        action=call.query.get("action"),
        cursor=call.query.get("cursor"),
        limit=limit_of(call.request, default=100),
    )
    return render.json_response(
        {"events": [render.audit_event(e) for e in page_.items], "next_cursor": page_.next_cursor}
    )


@routes.post(
    "/v1/tokens",
    MANAGE_TOKENS,
    "Create a token",
    status=201,
    ok=answer("The token and its secret (shown this once).", ref("CreatedToken")),
    body=Json("CreateToken", TOKEN_FIELDS),
)
async def create_token(call: Call) -> web.Response:
    """Create a token; its secret is in this answer and nowhere else, ever."""
    body = call.body
    try:
        role = Role(body["role"])
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role; choose one of: {roles}", field="role") from None
    expires = parse_duration(body["expires"]) if body.get("expires") else None
    token, secret = await call.app[TOKENS_KEY].create(call.actor, role, body["owner"], expires)
    return render.json_response({"token": render.token(token), "secret": secret}, status=201)


@routes.get(
    "/v1/tokens",
    MANAGE_TOKENS,
    "List tokens",
    ok=answer("A page.", page("tokens", "Token")),
    errors=(422,),
    params=(cursor(), limit(service.MAX_PAGE, default=50)),
)
async def list_tokens(call: Call) -> web.Response:
    """Tokens without their secrets."""
    tokens = await call.app[TOKENS_KEY].list(
        cursor=call.query.get("cursor"), limit=limit_of(call.request, default=50)
    )
    return render.json_response(
        {"tokens": [render.token(t) for t in tokens.items], "next_cursor": tokens.next_cursor}
    )


@routes.delete(
    "/v1/tokens/{id}",
    MANAGE_TOKENS,
    "Revoke a token",
    ok=answer("The revoked token.", ref("Token")),
    errors=(404,),
)
async def revoke_token(call: Call) -> web.Response:
    """Revoke a token; it stops working at once."""
    token = await call.app[TOKENS_KEY].revoke(call.actor, call.path("id"))
    return render.json_response(render.token(token))
