"""Reconciliation of the tailnet: devices carrying our tags that no workspace accounts for.

Only devices with one of the provisioner's own base tags are looked at: an untagged device, or
one tagged by someone else, is never ours to touch. A device a workspace is still joining with
(key minted, device not recorded yet) is not an orphan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from provisioner.audit import record
from provisioner.models import SYSTEM_ACTOR, Workspace
from provisioner.ports import AuditRows, Database, Tailnet, TailnetDevice, WorkspaceRows
from provisioner.tailnet_steps import joined_since

log = logging.getLogger(__name__)


class TailnetTx(WorkspaceRows, AuditRows, Protocol):
    """What a pass touches: workspaces with devices, the audit trail."""


@dataclass
class DeviceFindings:
    """Devices one pass reported (first sight) and removed (after the grace period)."""

    orphans: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class TailnetReconciler:
    """Reports, then after `grace` seconds deletes, our tagged devices with no workspace."""

    def __init__(
        self,
        store: Database[TailnetTx],
        tailnet: Tailnet,
        clock: Callable[[], datetime],
        *,
        our_tags: tuple[str, ...],
        grace: float,
    ) -> None:
        self._store, self._tailnet, self._clock = store, tailnet, clock
        self._our_tags, self._grace = our_tags, timedelta(seconds=grace)
        self._first_seen: dict[str, datetime] = {}

    async def run(self) -> DeviceFindings:
        """One pass; a tailnet that fails raises (the caller logs it and tries next time)."""
        findings = DeviceFindings()
        # Listed before the store is read: a device joining meanwhile has its workspace row.
        tagged: dict[str, TailnetDevice] = {}
        for tag in self._our_tags:
            tagged |= {d.id: d for d in await self._tailnet.devices(tag=tag)}
        async with self._store.read() as tx:
            workspaces = await tx.workspaces_on_tailnet()
        orphans = [d for d in tagged.values() if not any(_accounts(w, d) for w in workspaces)]
        current = {d.id for d in orphans}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in current}
        for device in orphans:
            await self._orphan(device, findings)
        return findings

    async def _orphan(self, device: TailnetDevice, findings: DeviceFindings) -> None:
        """Report a device at first sight; delete it once it outlived the grace period."""
        now = self._clock()
        what = f"device {device.id} ({device.name}, tags {' '.join(device.tags)})"
        if device.id not in self._first_seen:
            self._first_seen[device.id] = now
            findings.orphans.append(device.id)
            await self._audit("tailnet.orphan_found", what)
            log.warning("reconcile: %s belongs to no workspace", what)
        if now - self._first_seen[device.id] < self._grace:
            return
        await self._tailnet.delete_device(device.id)
        del self._first_seen[device.id]
        findings.removed.append(device.id)
        await self._audit("tailnet.orphan_removed", what)

    async def _audit(self, action: str, what: str) -> None:
        """Record a finding against the tailnet."""
        async with self._store.transaction() as tx:
            await record(tx, self._clock(), SYSTEM_ACTOR, action, "tailnet", reason=what)


def _accounts(ws: Workspace, device: TailnetDevice) -> bool:
    """Whether the workspace owns the device, or is joining with it right now."""
    if ws.tailscale.device_id == device.id:
        return True
    minted = ws.tailscale.key_created_at
    return (
        ws.tailscale.device_id is None
        and minted is not None
        and device.hostname == ws.name
        and joined_since(device, minted)
    )
