"""The node rows seam of the store: stored nodes and their host keys."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from provisioner.models import Node


class NodeRows(Protocol):
    """Stored nodes and the host keys they presented."""

    async def insert_node(self, node: Node) -> None:
        """Store a node added at run time; Conflict if the name is taken."""
        ...

    async def list_nodes(self) -> list[Node]:
        """Every stored node, with its host-key trust."""
        ...

    async def note_host_key(
        self, node: str, fingerprint: str, public_key: str, *, untrusted: bool, now: datetime
    ) -> bool:
        """Remember a key a node presented; False if this sighting was already known."""
        ...

    async def trust_host_key(self, node: str, fingerprint: str, now: datetime) -> str | None:
        """Trust the presented key if its fingerprint matches; the key, or None."""
        ...
