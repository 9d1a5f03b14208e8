"""The workspace rows seam of the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from provisioner.models import Capacity, Workspace, WorkspaceState


class WorkspaceRows(Protocol):
    """Workspace rows: stored, listed, changed by compare-and-set, counted."""

    async def insert_workspace(self, workspace: Workspace, size: Capacity) -> None:
        """Store a new workspace; Conflict if a live one has the same name."""
        ...

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        """The workspace with this id."""
        ...

    async def list_workspaces(
        self,
        *,
        owner: str | None,
        state: WorkspaceState | None,
        after: str | None,
        limit: int,
        name: str | None = None,
    ) -> list[Workspace]:
        """Workspaces ordered by id, after the id `after`."""
        ...

    async def workspaces_on_node(self, node: str) -> list[Workspace]:
        """Workspaces on `node` that are not deleted or denied."""
        ...

    async def workspaces_on_tailnet(self) -> list[Workspace]:
        """Workspaces not deleted or denied that have, or are getting, a tailnet device."""
        ...

    async def update_workspace(
        self,
        workspace_id: str,
        *,
        expect: frozenset[WorkspaceState] | None = None,
        **changes: Any,
    ) -> Workspace | None:
        """Change a workspace if its state is in `expect`; None if not."""
        ...

    async def owner_usage(self, owner: str) -> tuple[int, Capacity]:
        """How many live workspaces an owner holds, and their resources."""
        ...

    async def usage_by_node(self) -> dict[str, Capacity]:
        """Resources taken by live workspaces, per node."""
        ...

    async def count_workspaces_by_state(self) -> dict[WorkspaceState, int]:
        """How many workspaces are in each state."""
        ...

    async def expired_workspaces(self, now: datetime, limit: int) -> list[Workspace]:
        """Running or stopped workspaces whose expiry has passed."""
        ...
