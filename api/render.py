"""JSON shapes of the API's answers (CONTRACT §3); secrets never appear in them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from provisioner.keys import pinned_fingerprint
from provisioner.models import ApiToken, AuditEvent, Capacity, Node, Operation, Step, Workspace


def iso(moment: datetime | None) -> str | None:
    """An RFC 3339 timestamp in UTC, or None."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def workspace(ws: Workspace) -> dict[str, Any]:
    """A workspace as the API shows it."""
    return {
        "id": ws.id,
        "name": ws.name,
        "owner": ws.owner,
        "plan": ws.plan,
        "image": ws.image,
        "node": ws.node,
        "state": ws.state.value,
        "domain": ws.domain_name,
        "tailscale": {
            "hostname": ws.tailscale.hostname,
            "ip": ws.tailscale.ip,
            "tags": list(ws.tailscale.tags),
        },
        "error": ws.error,
        "created_at": iso(ws.created_at),
        "updated_at": iso(ws.updated_at),
        "expires_at": iso(ws.expires_at),
        "address": ws.address,
    }


def step(s: Step) -> dict[str, Any]:
    """One step of an operation."""
    return {
        "name": s.name,
        "state": s.state.value,
        "detail": s.detail,
        "started_at": iso(s.started_at),
        "finished_at": iso(s.finished_at),
    }


def operation(op: Operation) -> dict[str, Any]:
    """An operation with its steps."""
    return {
        "id": op.id,
        "kind": op.kind.value,
        "state": op.state.value,
        "workspace_id": op.workspace_id,
        "requested_by": op.requested_by,
        "steps": [step(s) for s in op.steps],
        "error": op.error,
        "attempts": op.attempts,
        "cancel_requested": op.cancel_requested,
        "created_at": iso(op.created_at),
        "updated_at": iso(op.updated_at),
    }


def token(t: ApiToken) -> dict[str, Any]:
    """A token's public fields (never its secret or hash)."""
    return {
        "id": t.id,
        "role": t.role.value,
        "owner": t.owner,
        "created_at": iso(t.created_at),
        "expires_at": iso(t.expires_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


def audit_event(e: AuditEvent) -> dict[str, Any]:
    """One audit event."""
    return {
        "id": e.id,
        "at": iso(e.at),
        "actor": e.actor,
        "source": e.source,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "reason": e.reason,
        "operation_id": e.operation_id,
    }


def node(n: Node, used: Capacity) -> dict[str, Any]:
    """A node with its capacity and what live workspaces use of it (no key material)."""
    return {
        "name": n.name,
        "libvirt_uri": n.libvirt_uri,
        "ssh_host": n.ssh_host,
        "ssh_port": n.ssh_port if n.ssh_host else None,
        "pool": n.pool,
        "network": n.network,
        "virt_type": n.virt_type,
        "capacity": asdict(n.capacity),
        "used": asdict(used),
        "host_key": {
            "state": n.trust.value,
            "fingerprint": pinned_fingerprint(n.host_key),
            "presented_fingerprint": n.presented_fingerprint,
        },
    }


def operation_log(op: Operation) -> list[str]:
    """The operation's history as text lines, one per event, oldest first."""
    lines = [f"{iso(op.created_at)} {op.kind.value} requested by {op.requested_by}"]
    for s in op.steps:
        lines.append(f"{iso(s.started_at)} {s.name} started")
        if s.finished_at is not None:
            detail = f": {s.detail}" if s.detail else ""
            lines.append(f"{iso(s.finished_at)} {s.name} {s.state.value}{detail}")
    if op.state.terminal:
        lines.append(
            f"{iso(op.updated_at)} operation {op.state.value}"
            + (f": {op.error}" if op.error else "")
        )
    return lines
