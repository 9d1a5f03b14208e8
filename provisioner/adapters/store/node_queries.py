"""Nodes: the stored fleet, and operators' decisions on their SSH host keys."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import node_host_keys, nodes
from provisioner.errors import Conflict
from provisioner.models import Capacity, Node, NodeTrust


def node_values(node: Node, source: str) -> dict[str, Any]:
    """Columns of a node row (trust lives in node_host_keys)."""
    values = asdict(node)
    del values["trust"], values["presented_fingerprint"]
    values.update(values.pop("capacity"), source=source)
    return values


def _to_node(row: sa.Row[Any]) -> Node:
    """Map a node row, joined with its host-key record, to the domain record."""
    values = {c.name: row._mapping[c] for c in nodes.c if c.name != "source"}
    capacity = Capacity(values.pop("vcpus"), values.pop("memory_mib"), values.pop("disk_gib"))
    # An operator's approval is the latest word on the key, so it wins over the entry's pin.
    pinned = row.trusted_key or values.pop("host_key")
    values.pop("host_key", None)
    if not values["ssh_host"]:
        trust = NodeTrust.TRUSTED
    elif row.untrusted:
        trust = NodeTrust.UNTRUSTED
    else:
        trust = NodeTrust.TRUSTED if pinned else NodeTrust.PENDING
    return Node(
        capacity=capacity,
        host_key=pinned,
        trust=trust,
        presented_fingerprint=row.presented_fingerprint,
        **values,
    )


class NodeQueries(QueriesBase):
    """Queries on nodes and their host keys."""

    async def insert_node(self, node: Node) -> None:
        """Store a node added through the API; Conflict if the name is taken."""
        try:
            await self.conn.execute(nodes.insert().values(**node_values(node, "api")))
        except exc.IntegrityError:
            raise Conflict(
                f"a node named {node.name!r} already exists", code="name_taken"
            ) from None

    async def list_nodes(self) -> list[Node]:
        """Every stored node, configured or added, with its host-key trust."""
        keys = node_host_keys
        query = (
            sa.select(nodes, keys.c.trusted_key, keys.c.presented_fingerprint, keys.c.untrusted)
            .select_from(nodes.outerjoin(keys, keys.c.node == nodes.c.name))
            .order_by(nodes.c.name)
        )
        return [_to_node(row) for row in await self.conn.execute(query)]

    async def note_host_key(
        self, node: str, fingerprint: str, public_key: str, *, untrusted: bool, now: datetime
    ) -> bool:
        """Remember a key a node presented; False if this exact sighting was already known."""
        keys = node_host_keys
        row = (await self.conn.execute(keys.select().where(keys.c.node == node))).first()
        values = {
            "presented_key": public_key,
            "presented_fingerprint": fingerprint,
            "untrusted": untrusted or bool(row and row.untrusted),
            "updated_at": now,
        }
        if row is None:
            await self.conn.execute(keys.insert().values(node=node, trusted_key=None, **values))
            return True
        if row.presented_fingerprint == fingerprint and row.untrusted == values["untrusted"]:
            return False
        await self.conn.execute(keys.update().where(keys.c.node == node).values(**values))
        return True

    async def trust_host_key(self, node: str, fingerprint: str, now: datetime) -> str | None:
        """Trust the presented key if its fingerprint is `fingerprint` (compare-and-set)."""
        keys = node_host_keys
        row = (await self.conn.execute(keys.select().where(keys.c.node == node))).first()
        if row is None or row.presented_fingerprint != fingerprint or not row.presented_key:
            return None
        await self.conn.execute(
            keys.update()
            .where(keys.c.node == node, keys.c.presented_fingerprint == fingerprint)
            .values(
                trusted_key=row.presented_key,
                presented_key=None,
                presented_fingerprint=None,
                untrusted=False,
                updated_at=now,
            )
        )
        return str(row.presented_key)
