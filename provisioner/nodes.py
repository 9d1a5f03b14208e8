"""Node use cases: which nodes there are and what they hold, adding one, and their health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from provisioner.audit import record
from provisioner.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    ProvisionerError,
)
from provisioner.fleet import Fleet
from provisioner.models import SYSTEM_ACTOR, Actor, Capacity, Node
from provisioner.ports import AuditRows, Database, HostKeySighting, NodeRows, WorkspaceRows
from provisioner.requests import check_node

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


class NodeTx(NodeRows, WorkspaceRows, AuditRows, Protocol):
    """What node use cases touch: node rows, workspace usage, the audit trail."""


class NodeDatabase(Database[NodeTx], Protocol):
    """The store as node use cases need it, with its health check for readiness."""

    async def ping(self) -> None:
        """Raise InfrastructureError unless the database answers."""
        ...


class Nodes:
    """The fleet as operators see it."""

    def __init__(self, store: NodeDatabase, fleet: Fleet, clock: Clock) -> None:
        self._store, self._fleet, self._clock = store, fleet, clock

    async def list(self) -> list[tuple[Node, Capacity]]:
        """Every node with the resources its live workspaces take."""
        async with self._store.read() as tx:
            usage = await tx.usage_by_node()
        idle = Capacity(0, 0, 0)
        return [(node, usage.get(node.name, idle)) for node in self._fleet.nodes()]

    async def add(self, actor: Actor, node: Node) -> Node:
        """Register a node at run time; it takes workspaces at once."""
        check_node(node)
        now = self._clock()
        try:
            self._fleet.add(node)
        except ConfigError as error:
            raise InvalidInput(error.message) from None
        try:
            async with self._store.transaction() as tx:
                await tx.insert_node(node)
                await record(tx, now, actor, "node.added", node.name, reason=node.libvirt_uri)
        except BaseException:
            # Whatever went wrong, the node must not linger in memory without being stored.
            await self._fleet.forget(node.name)
            raise
        return await self.probe(node.name)

    async def probe(self, name: str, timeout: float = 10.0) -> Node:
        """Contact a node once, so an unknown host key is fetched and shown; the node after."""
        try:
            await asyncio.wait_for((await self._fleet.hypervisor(name)).check(), timeout)
        except (TimeoutError, ProvisionerError) as error:
            # Whatever went wrong is the node's state, shown by `node list`; not the caller's.
            log.info("probing node %s: %s", name, getattr(error, "message", "no answer"))
        await self._fleet.refresh()
        return await self._fleet.node(name)

    async def report_host_key(self, sighting: HostKeySighting) -> None:
        """Record a host key that is not pinned: unknown (pending) or changed (untrusted)."""
        changed = sighting.pinned_fingerprint is not None
        now = self._clock()
        async with self._store.transaction() as tx:
            new = await tx.note_host_key(
                sighting.node,
                sighting.fingerprint,
                sighting.public_key,
                untrusted=changed,
                now=now,
            )
            if new:
                action = "node.host_key_changed" if changed else "node.host_key_unknown"
                reason = f"presented {sighting.fingerprint}"
                if changed:
                    reason += f", pinned {sighting.pinned_fingerprint}"
                await record(tx, now, SYSTEM_ACTOR, action, sighting.node, reason=reason)
        if changed and new:
            log.warning(
                "node %s presented host key %s instead of the pinned %s: refusing to use it",
                sighting.node,
                sighting.fingerprint,
                sighting.pinned_fingerprint,
            )

    async def approve_host_key(self, actor: Actor, name: str, fingerprint: str) -> Node:
        """Trust the host key a node presents, if it is the one the operator checked."""
        node = await self._node(name)
        if not node.ssh_host:
            raise InvalidInput(f"node {name} is reached without SSH; it has no host key to approve")
        now = self._clock()
        async with self._store.transaction() as tx:
            key = await tx.trust_host_key(name, fingerprint, now)
            if key is None:
                shown = node.presented_fingerprint or "no new key"
                raise Conflict(
                    f"node {name} presents {shown}, not {fingerprint}; "
                    "compare again with `provisioner node list`",
                    code="fingerprint_mismatch",
                )
            await record(tx, now, actor, "node.host_key_approved", name, reason=fingerprint)
        await self._fleet.refresh()
        return await self._fleet.node(name)

    async def reject_host_key(
        self, actor: Actor, name: str, fingerprint: str, reason: str | None = None
    ) -> Node:
        """Refuse the key a node presents: it stays out of use, and the refusal is audited."""
        node = await self._node(name)
        if node.presented_fingerprint != fingerprint:
            raise Conflict(
                f"node {name} does not present {fingerprint} any more; nothing to reject",
                code="fingerprint_mismatch",
            )
        async with self._store.transaction() as tx:
            why = f"{fingerprint}: {reason}" if reason else fingerprint
            await record(tx, self._clock(), actor, "node.host_key_rejected", name, reason=why)
        return node

    async def _node(self, name: str) -> Node:
        """The node called `name`, or NotFound."""
        await self._fleet.refresh()
        for node in self._fleet.nodes():
            if node.name == name:
                return node
        raise NotFound(f"no node named {name!r}")

    async def readiness(self, node_timeout: float = 2.0) -> dict[str, str | None]:
        """Health of the database and of each node: None when fine, else why not."""
        await self._store.ping()
        return await self._fleet.check(node_timeout)
