"""Node use cases: which nodes there are and what they hold, adding one, and their health."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from provisioner.audit import record
from provisioner.errors import ConfigError, InvalidInput
from provisioner.fleet import Fleet
from provisioner.models import Actor, Capacity, Node
from provisioner.ports import Store
from provisioner.requests import check_node

Clock = Callable[[], datetime]


class Nodes:
    """The fleet as operators see it."""

    def __init__(self, store: Store, fleet: Fleet, clock: Clock) -> None:
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
        return node

    async def readiness(self, node_timeout: float = 2.0) -> dict[str, str | None]:
        """Health of the database and of each node: None when fine, else why not."""
        await self._store.ping()
        return await self._fleet.check(node_timeout)
