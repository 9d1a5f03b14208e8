"""Roles → permissions, one table used by the token API and the Slack bot alike."""

from __future__ import annotations

from enum import StrEnum

from provisioner.errors import PermissionDenied
from provisioner.models import Actor, Role


class Permission(StrEnum):
    """Things a caller may be allowed to do."""

    READ_CATALOG = "catalog:read"
    READ_WORKSPACES = "workspaces:read"
    WRITE_WORKSPACES = "workspaces:write"
    ALL_OWNERS = "workspaces:all_owners"
    READ_NODES = "nodes:read"
    MANAGE_NODES = "nodes:manage"
    DECIDE_APPROVALS = "approvals:decide"
    READ_AUDIT = "audit:read"
    MANAGE_TOKENS = "tokens:manage"
    MANAGE_PLAYBOOKS = "playbooks:manage"
    READ_POLICY = "policy:read"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            P.READ_CATALOG,
            P.READ_WORKSPACES,
            P.WRITE_WORKSPACES,
            P.ALL_OWNERS,
            P.READ_NODES,
            P.MANAGE_NODES,
            P.DECIDE_APPROVALS,
            P.READ_AUDIT,
            P.MANAGE_PLAYBOOKS,
            P.READ_POLICY,
        }
    ),
    Role.DEVELOPER: frozenset({P.READ_CATALOG, P.READ_WORKSPACES, P.WRITE_WORKSPACES}),
    Role.VIEWER: frozenset({P.READ_CATALOG, P.READ_WORKSPACES, P.ALL_OWNERS, P.READ_NODES}),
}


def actor(name: str, role: Role, source: str) -> Actor:
    """An actor for `name`; roles without ALL_OWNERS only see their own workspaces."""
    scope = None if Permission.ALL_OWNERS in ROLE_PERMISSIONS[role] else name
    return Actor(name=name, role=role, source=source, owner_scope=scope)


def require(who: Actor, permission: Permission) -> None:
    """Raise PermissionDenied unless `who` holds `permission`."""
    if permission not in ROLE_PERMISSIONS[who.role]:
        raise PermissionDenied(
            f"role {who.role.value} may not do this ({permission.value}); ask an operator"
        )
