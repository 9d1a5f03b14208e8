"""The nodes at hand: one hypervisor per node, and placement of new workspaces."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from provisioner.errors import (
    CapacityExhausted,
    Conflict,
    InfrastructureError,
    UnknownReference,
)
from provisioner.models import Capacity, Node
from provisioner.ports import Hypervisor

HypervisorFactory = Callable[[Node], Hypervisor]
NodeLoader = Callable[[], Awaitable[Sequence[Node]]]


class Fleet:
    """Hands out each node's hypervisor, opened on first use, and places workspaces."""

    def __init__(
        self, nodes: Iterable[Node], factory: HypervisorFactory, loader: NodeLoader | None = None
    ) -> None:
        self._nodes = {node.name: node for node in nodes}
        self._factory = factory
        self._loader = loader
        self._hypervisors: dict[str, Hypervisor] = {}

    def nodes(self) -> list[Node]:
        """Every node known to this process."""
        return list(self._nodes.values())

    def add(self, node: Node) -> None:
        """Take a new node into use (its adapter is built now, so a bad entry fails here)."""
        if node.name in self._nodes:
            raise Conflict(f"a node named {node.name!r} already exists", code="name_taken")
        self._hypervisors[node.name] = self._factory(node)
        self._nodes[node.name] = node

    async def forget(self, node_name: str) -> None:
        """Drop a node again (its registration failed)."""
        self._nodes.pop(node_name, None)
        hypervisor = self._hypervisors.pop(node_name, None)
        if hypervisor is not None:
            await hypervisor.close()

    async def refresh(self) -> None:
        """Learn nodes that another process added to the store."""
        if self._loader is not None:
            for node in await self._loader():
                self._nodes.setdefault(node.name, node)

    async def hypervisor(self, node_name: str) -> Hypervisor:
        """The hypervisor of `node_name`, looking the node up in the store if it is new."""
        if node_name not in self._nodes:
            await self.refresh()
        if node_name not in self._nodes:
            raise UnknownReference(f"unknown node {node_name!r}")
        if node_name not in self._hypervisors:
            self._hypervisors[node_name] = self._factory(self._nodes[node_name])
        return self._hypervisors[node_name]

    def place(self, need: Capacity, usage: Mapping[str, Capacity]) -> Node:
        """The node with the most free memory that fits `need`; CapacityExhausted if none."""
        best: tuple[Capacity, Node] | None = None
        for node in self._nodes.values():
            free = node.capacity.minus(usage.get(node.name, Capacity(0, 0, 0)))
            if free.fits(need) and (best is None or _roomier(free, best[0])):
                best = (free, node)
        if best is None:
            raise CapacityExhausted(
                f"no node has room for {need.vcpus} vCPU, {need.memory_mib} MiB, "
                f"{need.disk_gib} GiB; delete a workspace or pick a smaller plan"
            )
        return best[1]

    async def check(self, timeout: float) -> dict[str, str | None]:
        """Each node's health: None when it answers, else why not."""
        names = list(self._nodes)
        results = await asyncio.gather(
            *(self._check_one(name, timeout) for name in names), return_exceptions=False
        )
        return dict(zip(names, results, strict=True))

    async def _check_one(self, name: str, timeout: float) -> str | None:
        """None if the node answers within `timeout`, else the reason."""
        try:
            await asyncio.wait_for((await self.hypervisor(name)).check(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except InfrastructureError as error:
            return error.message
        return None

    async def close(self) -> None:
        """Close every opened hypervisor."""
        for hypervisor in self._hypervisors.values():
            await hypervisor.close()
        self._hypervisors.clear()


def _roomier(a: Capacity, b: Capacity) -> bool:
    """Whether `a` leaves more room than `b` (memory first, then vCPUs)."""
    return (a.memory_mib, a.vcpus, a.disk_gib) > (b.memory_mib, b.vcpus, b.disk_gib)
