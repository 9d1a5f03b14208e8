"""The nodes at hand: each node's hypervisor and link, what images they hold, and placement."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from provisioner.errors import (
    CapacityExhausted,
    Conflict,
    InfrastructureError,
    NodeUntrusted,
    ProvisionerError,
    UnknownReference,
)
from provisioner.models import Capacity, Image, Node, NodeTrust
from provisioner.ports import Hypervisor, NodeLink


@dataclass(frozen=True)
class NodeAccess:
    """How the core reaches one node: its libvirt, and its SSH link (None on the test driver)."""

    hypervisor: Hypervisor
    link: NodeLink | None = None


AccessFactory = Callable[[Node], NodeAccess]
NodeLoader = Callable[[], Awaitable[Sequence[Node]]]


class Fleet:
    """Hands out each node's adapters, opened on first use, and places workspaces."""

    def __init__(
        self, nodes: Iterable[Node], factory: AccessFactory, loader: NodeLoader | None = None
    ) -> None:
        self._nodes = {node.name: node for node in nodes}
        self._factory = factory
        self._loader = loader
        self._access: dict[str, NodeAccess] = {}
        # Volume names last seen in each node's pool; absent while unknown.
        self._volumes: dict[str, frozenset[str]] = {}

    def nodes(self) -> list[Node]:
        """Every node known to this process."""
        return list(self._nodes.values())

    def add(self, node: Node) -> None:
        """Take a new node into use (its adapters are built now, so a bad entry fails here)."""
        if node.name in self._nodes:
            raise Conflict(f"a node named {node.name!r} already exists", code="name_taken")
        self._access[node.name] = self._factory(node)
        self._nodes[node.name] = node

    async def forget(self, node_name: str) -> None:
        """Drop a node again (its registration failed)."""
        self._nodes.pop(node_name, None)
        self._volumes.pop(node_name, None)
        await self._close(node_name)

    async def update(self, node: Node) -> None:
        """Replace a node's record; a new pinned key means reconnecting with it."""
        old = self._nodes.get(node.name)
        self._nodes[node.name] = node
        if old is not None and old.host_key != node.host_key:
            await self._close(node.name)

    async def refresh(self) -> None:
        """Learn nodes another process added, and trust decisions made since."""
        if self._loader is None:
            return
        for node in await self._loader():
            await self.update(node)

    async def node(self, node_name: str) -> Node:
        """The node called `node_name`, looked up in the store if it is new here."""
        if node_name not in self._nodes:
            await self.refresh()
        if node_name not in self._nodes:
            raise UnknownReference(f"unknown node {node_name!r}")
        return self._nodes[node_name]

    async def hypervisor(self, node_name: str) -> Hypervisor:
        """The hypervisor of `node_name`."""
        return (await self._reach(node_name)).hypervisor

    async def link(self, node_name: str) -> NodeLink | None:
        """The SSH link of `node_name` (None for the in-process test driver)."""
        return (await self._reach(node_name)).link

    async def _reach(self, node_name: str) -> NodeAccess:
        """The node's adapters, built on first use."""
        node = await self.node(node_name)
        if node.name not in self._access:
            self._access[node.name] = self._factory(node)
        return self._access[node.name]

    def place(self, need: Capacity, usage: Mapping[str, Capacity], image: Image) -> Node:
        """The trusted node with the most free room that has the image."""
        best: tuple[Capacity, Node] | None = None
        holders = [n for n in self._nodes.values() if self._may_hold(n, image)]
        for node in holders:
            free = node.capacity.minus(usage.get(node.name, Capacity(0, 0, 0)))
            if free.fits(need) and (best is None or _roomier(free, best[0])):
                best = (free, node)
        if best is not None:
            return best[1]
        if not holders:
            raise CapacityExhausted(
                f"no trusted node holds image {image.name!r}; import it with "
                f"`provisioner image import {image.name} FILE` or see `provisioner node list`",
                code="image_unavailable",
            )
        raise CapacityExhausted(
            f"no node has room for {need.vcpus} vCPU, {need.memory_mib} MiB, "
            f"{need.disk_gib} GiB; delete a workspace or pick a smaller plan"
        )

    def _may_hold(self, node: Node, image: Image) -> bool:
        """Whether a node may take a workspace of `image` (unknown inventories count as yes)."""
        if node.trust != NodeTrust.TRUSTED:
            return False
        volumes = self._volumes.get(node.name)
        return volumes is None or image.base_volume in volumes

    def holds_image(self, image: Image) -> bool:
        """Whether some trusted node is known, or may be, to hold the image."""
        return any(self._may_hold(node, image) for node in self._nodes.values())

    async def survey(self, timeout: float) -> None:
        """Look at every node's pool again, so placement knows which images are where."""
        await asyncio.gather(*(self._survey_one(name, timeout) for name in list(self._nodes)))

    async def _survey_one(self, name: str, timeout: float) -> None:
        """Refresh one node's volume list; on failure keep the last one."""
        try:
            hypervisor = await self.hypervisor(name)
            found = await asyncio.wait_for(hypervisor.volumes(), timeout)
        except (TimeoutError, ProvisionerError):
            return
        self._volumes[name] = frozenset(found)

    async def check(self, timeout: float) -> dict[str, str | None]:
        """Each node's health: None when it answers, else why not."""
        names = list(self._nodes)
        results = await asyncio.gather(*(self._check_one(name, timeout) for name in names))
        return dict(zip(names, results, strict=True))

    async def _check_one(self, name: str, timeout: float) -> str | None:
        """None if the node, its link and its pool answer within `timeout`, else the reason."""
        try:
            space = await asyncio.wait_for((await self.hypervisor(name)).check(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except (InfrastructureError, NodeUntrusted, Conflict) as error:
            return error.message
        if space.available_bytes < 1 << 30:
            return f"pool has only {space.available_bytes >> 20} MiB free"
        return None

    async def _close(self, node_name: str) -> None:
        """Close a node's adapters; they are rebuilt on next use."""
        access = self._access.pop(node_name, None)
        if access is not None:
            await access.hypervisor.close()

    async def close(self) -> None:
        """Close every opened adapter."""
        for name in list(self._access):
            await self._close(name)


def _roomier(a: Capacity, b: Capacity) -> bool:
    """Whether `a` leaves more room than `b` (memory first, then vCPUs)."""
    return (a.memory_mib, a.vcpus, a.disk_gib) > (b.memory_mib, b.vcpus, b.disk_gib)
