"""Reconciliation: the store against what each node really runs, on start and on a timer.

A domain with our metadata whose workspace is gone is an orphan: reported at once, removed
after a grace period (with its volumes). A running or stopped workspace whose domain vanished
is marked failed. A node that cannot be listed completely is skipped, never reaped. Devices on
the tailnet are reconciled the same way (provisioner.tailnet_reconcile).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from provisioner.audit import record
from provisioner.errors import ProvisionerError
from provisioner.fleet import Fleet
from provisioner.models import (
    SYSTEM_ACTOR,
    DomainState,
    Node,
    NodeTrust,
    Workspace,
    WorkspaceState,
)
from provisioner.ports import (
    AuditRows,
    Database,
    Hypervisor,
    Locks,
    OperationRows,
    WorkspaceRows,
)
from provisioner.tailnet_reconcile import DeviceFindings, TailnetReconciler

log = logging.getLogger(__name__)
SETTLED = frozenset({WorkspaceState.RUNNING, WorkspaceState.STOPPED})
OUR_VOLUME = re.compile(r"^(ws-[a-z0-9-]+?)(?:\.qcow2|-seed\.iso)$")


class ReconcileTx(WorkspaceRows, OperationRows, AuditRows, Locks, Protocol):
    """What a pass touches: workspaces per node, their active operation, the audit trail."""


@dataclass
class Findings:
    """What one pass found and did, per kind."""

    orphans: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    skipped_nodes: list[str] = field(default_factory=list)
    devices: DeviceFindings = field(default_factory=DeviceFindings)


class Reconciler:
    """Brings the store and the nodes back in line; every action is audited as `system`."""

    def __init__(
        self,
        store: Database[ReconcileTx],
        fleet: Fleet,
        clock: Callable[[], datetime],
        *,
        grace: float,
        tailnet: TailnetReconciler | None = None,
    ) -> None:
        self._store, self._fleet, self._clock = store, fleet, clock
        self._grace = timedelta(seconds=grace)
        self._first_seen: dict[tuple[str, str], datetime] = {}
        self._tailnet = tailnet

    async def run(self) -> Findings:
        """One pass over every trusted node; one node's failure never stops the others."""
        findings = Findings()
        await self._fleet.refresh()
        for node in self._fleet.nodes():
            if node.trust != NodeTrust.TRUSTED:
                continue
            try:
                await self._node(node, findings)
            except ProvisionerError as error:
                findings.skipped_nodes.append(node.name)
                log.warning("reconcile: skipping node %s: %s", node.name, error.message)
        if self._tailnet is not None:
            try:
                findings.devices = await self._tailnet.run()
            except ProvisionerError as error:
                log.warning("reconcile: skipping the tailnet: %s", error.message)
        return findings

    async def _node(self, node: Node, findings: Findings) -> None:
        """Compare one node's domains and volumes with its workspaces."""
        hypervisor = await self._fleet.hypervisor(node.name)
        # Listed before the store is read: anything created meanwhile has a row already.
        domains = {d.name: d for d in await hypervisor.list_ours()}
        volumes = await hypervisor.volumes()
        async with self._store.read() as tx:
            owned = {ws.domain_name: ws for ws in await tx.workspaces_on_node(node.name)}
        for ws in owned.values():
            if ws.state in SETTLED and ws.domain_name not in domains:
                await self._mark_lost(ws, findings)
        leftovers = {d for d in domains if d not in owned}
        for name in {m.group(1) for v in volumes if (m := OUR_VOLUME.match(v))} - set(owned):
            # Volumes named like ours that a foreign domain uses are that domain's business.
            if name in domains or await hypervisor.lookup(name) is None:
                leftovers.add(name)
        seen_now = {(node.name, name) for name in leftovers}
        for key in list(self._first_seen):
            if key[0] == node.name and key not in seen_now:
                del self._first_seen[key]
        for name in sorted(leftovers):
            await self._orphan(node, hypervisor, name, name in domains, findings)

    async def _mark_lost(self, ws: Workspace, findings: Findings) -> None:
        """A settled workspace whose domain is gone: failed, unless an operation is on it."""
        now = self._clock()
        reason = f"its domain {ws.domain_name} vanished from node {ws.node}"
        async with self._store.transaction() as tx:
            await tx.lock(f"workspace:{ws.id}")
            if await tx.active_operation(ws.id) is not None:
                return
            changed = await tx.update_workspace(
                ws.id, expect=SETTLED, state=WorkspaceState.FAILED, error=reason, updated_at=now
            )
            if changed is None:
                return
            await record(tx, now, SYSTEM_ACTOR, "workspace.lost", ws.id, reason=reason)
        findings.lost.append(ws.name)
        log.warning("reconcile: workspace %s failed: %s", ws.name, reason)

    async def _orphan(
        self, node: Node, hypervisor: Hypervisor, name: str, has_domain: bool, findings: Findings
    ) -> None:
        """Report a leftover at first sight; remove it once it outlived the grace period."""
        now = self._clock()
        new = (node.name, name) not in self._first_seen
        first = self._first_seen.setdefault((node.name, name), now)
        what = "domain" if has_domain else "volumes"
        if new:
            findings.orphans.append(name)
            async with self._store.transaction() as tx:
                await record(
                    tx, now, SYSTEM_ACTOR, "node.orphan_found", node.name, reason=f"{what} {name}"
                )
            log.warning("reconcile: %s %s on node %s belong to no workspace", what, name, node.name)
        if now - first < self._grace:
            return
        await _remove(hypervisor, name)
        del self._first_seen[(node.name, name)]
        findings.reaped.append(name)
        async with self._store.transaction() as tx:
            await record(
                tx, now, SYSTEM_ACTOR, "node.orphan_removed", node.name, reason=f"{what} {name}"
            )


async def _remove(hypervisor: Hypervisor, name: str) -> None:
    """Power off and undefine the domain (if it is ours), then delete its volumes."""
    found = await hypervisor.lookup(name)
    if found is not None:
        if found.workspace_id is None:
            return  # a foreign domain took the name meanwhile: neither it nor its disks are ours
        if found.state != DomainState.SHUTOFF:
            await hypervisor.destroy(name)
        await hypervisor.undefine(name)
    for volume in (f"{name}.qcow2", f"{name}-seed.iso"):
        if await hypervisor.volume(volume) is not None:
            await hypervisor.delete_volume(volume)
