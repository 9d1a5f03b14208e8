"""JSON shapes of the API's answers (CONTRACT §3) and their encoder; secrets never appear in them.

Shapes keep timestamps as datetimes: the encoder writes them as RFC 3339 in UTC ("…Z"), about
ten times faster than formatting each one in Python, which a page of 50 workspaces felt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from provisioner.keys import pinned_fingerprint
from provisioner.models import (
    ApiToken,
    AuditEvent,
    Capacity,
    Node,
    Operation,
    OutputLine,
    Step,
    Workspace,
)


def iso(moment: datetime | None) -> str | None:
    """An RFC 3339 timestamp in UTC, or None (for text; JSON shapes keep the datetime)."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An answer with `data` as JSON, timestamps in UTC with a Z."""
    body = orjson.dumps(data, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


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
        "created_at": ws.created_at,
        "updated_at": ws.updated_at,
        "expires_at": ws.expires_at,
        "address": ws.address,
    }


def step(s: Step) -> dict[str, Any]:
    """One step of an operation."""
    return {
        "name": s.name,
        "state": s.state.value,
        "detail": s.detail,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
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
        "created_at": op.created_at,
        "updated_at": op.updated_at,
    }


def token(t: ApiToken) -> dict[str, Any]:
    """A token's public fields (never its secret or hash)."""
    return {
        "id": t.id,
        "role": t.role.value,
        "owner": t.owner,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
    }


def audit_event(e: AuditEvent) -> dict[str, Any]:
    """One audit event."""
    return {
        "id": e.id,
        "at": e.at,
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


def operation_log(op: Operation, output: Sequence[OutputLine] = ()) -> list[str]:
    """The operation's history as text lines, one per event, oldest first.

    A step's printed lines (ansible's output) follow its start: a running step is the last
    one, so the log only ever grows at its end.
    """
    printed: dict[str, list[OutputLine]] = {}
    for line in output:
        printed.setdefault(line.step, []).append(line)
    lines = [f"{iso(op.created_at)} {op.kind.value} requested by {op.requested_by}"]
    for s in op.steps:
        lines.append(f"{iso(s.started_at)} {s.name} started")
        lines.extend(f"{iso(o.at)} {s.name} | {o.line}" for o in printed.get(s.name, ()))
        if s.finished_at is not None:
            detail = f": {s.detail}" if s.detail else ""
            lines.append(f"{iso(s.finished_at)} {s.name} {s.state.value}{detail}")
    if op.state.terminal:
        lines.append(
            f"{iso(op.updated_at)} operation {op.state.value}"
            + (f": {op.error}" if op.error else "")
        )
    return lines
