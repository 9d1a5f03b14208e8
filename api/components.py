"""The shapes of the API's answers (api/render.py) as OpenAPI component schemas."""

from __future__ import annotations

from api.schema import (
    Schema,
    array,
    boolean,
    enum_of,
    integer,
    nullable,
    obj,
    ref,
    string,
    timestamp,
)
from provisioner.models import (
    ApprovalState,
    NodeTrust,
    OperationKind,
    OperationState,
    Role,
    StepState,
    WorkspaceState,
)


def workspace_schemas() -> dict[str, Schema]:
    """Workspaces and operations as api/render.py shows them."""
    text, when = nullable(string()), nullable(timestamp())
    return {
        "Tailscale": obj({"hostname": text, "ip": text, "tags": array(string())}),
        "Workspace": obj(
            {key: string() for key in ("id", "name", "owner", "plan", "image", "node")}
            | {"state": enum_of(WorkspaceState), "domain": string(), "tailscale": ref("Tailscale")}
            | {"error": text, "created_at": timestamp(), "updated_at": timestamp()}
            | {"expires_at": when, "address": text}
        ),
        "Step": obj(
            {"name": string(), "state": enum_of(StepState), "detail": text}
            | {"started_at": timestamp(), "finished_at": when}
        ),
        "Operation": obj(
            {"id": string(), "kind": enum_of(OperationKind), "state": enum_of(OperationState)}
            | {"workspace_id": string(), "requested_by": string(), "steps": array(ref("Step"))}
            | {"error": text, "attempts": integer(minimum=0), "cancel_requested": boolean()}
            | {"created_at": timestamp(), "updated_at": timestamp()}
        ),
        "WorkspaceAccepted": obj({"workspace": ref("Workspace"), "operation": ref("Operation")}),
    }


def catalog_schemas() -> dict[str, Schema]:
    """Plans, images and nodes as the catalog routes show them."""
    sizes = {key: integer() for key in ("vcpus", "memory_mib", "disk_gib")}
    text = nullable(string())
    return {
        "Capacity": obj(sizes),
        "Plan": obj(
            {"name": string(), **sizes, "ttl_hours": integer(), "max_ttl_hours": integer()}
            | {"requires_approval": boolean()}
        ),
        "Image": obj(
            {"name": string(), "base_volume": string(), "os": string()}
            | {key: text for key in ("kernel", "initrd", "cmdline")}
        ),
        "Node": obj(
            {"name": string(), "libvirt_uri": string(), "ssh_host": text}
            | {"ssh_port": nullable(integer()), "pool": string(), "network": string()}
            | {"virt_type": string(), "capacity": ref("Capacity"), "used": ref("Capacity")}
            | {"host_key": ref("HostKey")}
        ),
        "HostKey": obj(
            {"state": enum_of(NodeTrust), "fingerprint": text, "presented_fingerprint": text}
        ),
    }


def admin_schemas() -> dict[str, Schema]:
    """Approvals, tokens and audit events."""
    text, when = nullable(string()), nullable(timestamp())
    return {
        "Approval": obj(
            {key: string() for key in ("id", "operation_id", "requested_by")}
            | {"state": enum_of(ApprovalState), "decided_by": text, "decided_at": when}
            | {"reason": text, "created_at": timestamp()}
        ),
        "Token": obj(
            {"id": string(), "role": enum_of(Role), "owner": string(), "created_at": timestamp()}
            | {key: when for key in ("expires_at", "last_used_at", "revoked_at")}
        ),
        "CreatedToken": obj({"token": ref("Token"), "secret": string()}),
        "AuditEvent": obj(
            {"id": integer(), "at": timestamp()}
            | {key: string() for key in ("actor", "source", "action", "target", "outcome")}
            | {"reason": text, "operation_id": text}
        ),
    }


def probe_schemas() -> dict[str, Schema]:
    """The common error shape and the probes' answers."""
    code = string(pattern="^[a-z][a-z0-9_]*$")
    return {
        "Error": obj({"error": obj({"code": code, "message": string(minLength=1)})}),
        "Health": obj({"status": string(enum=["ok"])}),
        "Readiness": obj(
            {"status": string(enum=["ok", "unavailable"]), "database": string()}
            | {"nodes": {"type": "object", "additionalProperties": string()}}
        ),
    }


def schemas() -> dict[str, Schema]:
    """Every answer's component schema."""
    found = probe_schemas()
    for group in (workspace_schemas, catalog_schemas, admin_schemas):
        found.update(group())
    return found
