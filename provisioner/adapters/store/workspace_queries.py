"""Workspace rows: insert, read, list with cursor, compare-and-set updates, usage."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from provisioner.adapters.store.base import QueriesBase
from provisioner.adapters.store.tables import workspaces
from provisioner.errors import Conflict
from provisioner.models import (
    LIVE_WORKSPACE_STATES,
    Capacity,
    TailnetReach,
    TailscaleInfo,
    Workspace,
    WorkspaceState,
)

# What a Workspace is made of, in the order to_workspace unpacks it (a row unpacked as a tuple
# costs a fraction of seventeen lookups by name, and listings map thousands of rows).
WORKSPACE_COLUMNS = (
    workspaces.c.id,
    workspaces.c.name,
    workspaces.c.owner,
    workspaces.c.plan,
    workspaces.c.image,
    workspaces.c.node,
    workspaces.c.state,
    workspaces.c.domain_name,
    workspaces.c.created_at,
    workspaces.c.updated_at,
    workspaces.c.expires_at,
    workspaces.c.tailscale_hostname,
    workspaces.c.tailscale_ip,
    workspaces.c.tailscale_tags,
    workspaces.c.error,
    workspaces.c.address,
    workspaces.c.guest_host_key,
    workspaces.c.tailscale_device_id,
    workspaces.c.tailscale_ipv6,
    workspaces.c.tailscale_key_id,
    workspaces.c.tailscale_key_created_at,
    workspaces.c.tailscale_reach,
)


SELECT_WORKSPACES = sa.select(*WORKSPACE_COLUMNS)
STATES = {state.value: state for state in WorkspaceState}  # WorkspaceState(v) costs 1 µs a row
REACH = {reach.value: reach for reach in TailnetReach}
# The listing's optional filters, each compared with a bound parameter of the same name.
LISTING_FILTERS: tuple[tuple[str, Callable[[Any], sa.ColumnElement[bool]]], ...] = (
    ("owner", lambda value: workspaces.c.owner == value),
    ("state", lambda value: workspaces.c.state == value),
    ("name", lambda value: workspaces.c.name == value),
    ("after", lambda value: workspaces.c.id > value),
)


@functools.cache
def _listing(filters: frozenset[str]) -> sa.Select[Any]:
    """The listing query for one set of filters, built once.

    Building a statement and computing its cache key cost about as much as SQLite's run of
    it; a statement kept with bound parameters keeps its key.
    """
    query = SELECT_WORKSPACES.order_by(workspaces.c.id).limit(sa.bindparam("limit"))
    for name, compare in LISTING_FILTERS:
        if name in filters:
            query = query.where(compare(sa.bindparam(name)))
    return query


def to_workspace(row: Sequence[Any]) -> Workspace:
    """Map a row of SELECT_WORKSPACES to the domain record."""
    (id_, name, owner, plan, image, node, state, domain_name, created_at, updated_at, expires_at,
     ts_hostname, ts_ip, ts_tags, error, address, guest_host_key,
     ts_device, ts_ipv6, ts_key, ts_key_created, ts_reach) = row  # fmt: skip
    return Workspace(
        id=id_,
        name=name,
        owner=owner,
        plan=plan,
        image=image,
        node=node,
        state=STATES[state],
        domain_name=domain_name,
        created_at=created_at,
        updated_at=updated_at,
        expires_at=expires_at,
        tailscale=TailscaleInfo(
            ts_hostname,
            ts_ip,
            tuple(ts_tags or ()),
            ts_device,
            ts_ipv6,
            ts_key,
            ts_key_created,
            REACH[ts_reach] if ts_reach else None,
        ),
        error=error,
        address=address,
        guest_host_key=guest_host_key,
    )


class WorkspaceQueries(QueriesBase):
    """Queries on the workspaces table."""

    async def insert_workspace(self, workspace: Workspace, size: Capacity) -> None:
        """Store a new workspace; Conflict if a live one already has its name."""
        values = {
            "id": workspace.id,
            "name": workspace.name,
            "owner": workspace.owner,
            "plan": workspace.plan,
            "image": workspace.image,
            "node": workspace.node,
            "state": workspace.state.value,
            "domain_name": workspace.domain_name,
            "vcpus": size.vcpus,
            "memory_mib": size.memory_mib,
            "disk_gib": size.disk_gib,
            "tailscale_hostname": workspace.tailscale.hostname,
            "tailscale_ip": workspace.tailscale.ip,
            "tailscale_tags": list(workspace.tailscale.tags),
            "error": workspace.error,
            "address": workspace.address,
            "guest_host_key": workspace.guest_host_key,
            "created_at": workspace.created_at,
            "updated_at": workspace.updated_at,
            "expires_at": workspace.expires_at,
        }
        # No savepoint: a name clash aborts the whole create, so the transaction may fail too.
        try:
            await self.conn.execute(workspaces.insert().values(**values))
        except exc.IntegrityError:
            raise Conflict(
                f"a workspace named {workspace.name!r} already exists; pick another name",
                code="name_taken",
            ) from None

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        """The workspace with this id, or None."""
        row = (
            await self.conn.execute(SELECT_WORKSPACES.where(workspaces.c.id == workspace_id))
        ).first()
        return None if row is None else to_workspace(row)

    async def list_workspaces(
        self,
        *,
        owner: str | None,
        state: WorkspaceState | None,
        after: str | None,
        limit: int,
        name: str | None = None,
    ) -> list[Workspace]:
        """Workspaces in id order (ids sort by creation time), after the id `after`."""
        given = {
            "owner": owner,
            "state": state.value if state else None,
            "name": name,
            "after": after,
        }
        params = {key: value for key, value in given.items() if value is not None}
        query = _listing(frozenset(params))
        rows = (await self.conn.execute(query, {**params, "limit": limit})).all()
        return [to_workspace(row) for row in rows]

    async def workspaces_on_node(self, node: str) -> list[Workspace]:
        """Workspaces on `node` that may still own something there (not deleted or denied)."""
        gone = [WorkspaceState.DELETED.value, WorkspaceState.DENIED.value]
        query = SELECT_WORKSPACES.where(workspaces.c.node == node, workspaces.c.state.not_in(gone))
        return [to_workspace(row) for row in await self.conn.execute(query)]

    async def workspaces_on_tailnet(self) -> list[Workspace]:
        """Workspaces not deleted or denied with a tailnet device or a key minted for one."""
        gone = [WorkspaceState.DELETED.value, WorkspaceState.DENIED.value]
        query = SELECT_WORKSPACES.where(
            workspaces.c.state.not_in(gone),
            sa.or_(
                workspaces.c.tailscale_device_id.is_not(None),
                workspaces.c.tailscale_key_created_at.is_not(None),
            ),
        )
        return [to_workspace(row) for row in await self.conn.execute(query)]

    async def update_workspace(
        self,
        workspace_id: str,
        *,
        expect: frozenset[WorkspaceState] | None = None,
        **changes: Any,
    ) -> Workspace | None:
        """Apply `changes` if the state is in `expect`; None when the guard fails."""
        values = {key: _column_value(value) for key, value in changes.items()}
        query = workspaces.update().where(workspaces.c.id == workspace_id).values(**values)
        if expect is not None:
            query = query.where(workspaces.c.state.in_([s.value for s in expect]))
        result = await self.conn.execute(query)
        if result.rowcount != 1:
            return None
        return await self.get_workspace(workspace_id)

    async def owner_usage(self, owner: str) -> tuple[int, Capacity]:
        """How many live workspaces an owner holds, and their resources."""
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(workspaces.c.vcpus), 0),
            sa.func.coalesce(sa.func.sum(workspaces.c.memory_mib), 0),
            sa.func.coalesce(sa.func.sum(workspaces.c.disk_gib), 0),
        ).where(
            workspaces.c.owner == owner,
            workspaces.c.state.in_([s.value for s in LIVE_WORKSPACE_STATES]),
        )
        count, vcpus, memory, disk = (await self.conn.execute(query)).one()
        return int(count), Capacity(int(vcpus), int(memory), int(disk))

    async def usage_by_node(self) -> dict[str, Capacity]:
        """Resources held by live workspaces, per node."""
        query = (
            sa.select(
                workspaces.c.node,
                sa.func.sum(workspaces.c.vcpus),
                sa.func.sum(workspaces.c.memory_mib),
                sa.func.sum(workspaces.c.disk_gib),
            )
            .where(workspaces.c.state.in_([s.value for s in LIVE_WORKSPACE_STATES]))
            .group_by(workspaces.c.node)
        )
        rows = await self.conn.execute(query)
        return {node: Capacity(int(v), int(m), int(d)) for node, v, m, d in rows}

    async def count_workspaces_by_state(self) -> dict[WorkspaceState, int]:
        """How many workspaces are in each state."""
        query = sa.select(workspaces.c.state, sa.func.count()).group_by(workspaces.c.state)
        return {WorkspaceState(s): int(n) for s, n in await self.conn.execute(query)}

    async def expired_workspaces(self, now: datetime, limit: int) -> list[Workspace]:
        """Running or stopped workspaces past their expiry."""
        query = (
            SELECT_WORKSPACES.where(workspaces.c.expires_at < now)
            .where(
                workspaces.c.state.in_([WorkspaceState.RUNNING.value, WorkspaceState.STOPPED.value])
            )
            .order_by(workspaces.c.expires_at)
            .limit(limit)
        )
        return [to_workspace(row) for row in await self.conn.execute(query)]


def _column_value(value: Any) -> Any:
    """Enum members are stored as their values, tag tuples as lists."""
    if isinstance(value, WorkspaceState | TailnetReach):
        return value.value
    return list(value) if isinstance(value, tuple) else value
