"""What a step may touch: the workspace, its node, its guest, and how to remember progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from provisioner.catalog import Catalog
from provisioner.errors import InvalidInput
from provisioner.fleet import Fleet
from provisioner.models import Capacity, Image, Node, Operation, Workspace
from provisioner.ports import (
    Hypervisor,
    NodeLink,
    PlaybookRunner,
    SeedMaker,
    Store,
    TagPolicy,
    Tailnet,
)

Save = Callable[[str, dict[str, Any]], Awaitable[Workspace | None]]
Output = Callable[[str, Sequence[str]], Awaitable[None]]


async def _never_cancelled() -> bool:
    """The cancel check of a context built outside an operation."""
    return False


async def _no_output(step: str, lines: Sequence[str]) -> None:
    """Where output goes when no operation keeps it."""


class ResolvedPlaybook(Protocol):
    """A validated playbook's files, as the catalogue resolved them."""

    @property
    def directory(self) -> Path:
        """The directory holding the playbook."""
        ...

    @property
    def entry(self) -> str:
        """The playbook file inside it, e.g. site.yml."""
        ...


class PlaybookSource(Protocol):
    """Looks a playbook up by the content digest it was resolved to."""

    def by_digest(self, digest: str) -> ResolvedPlaybook:
        """The playbook stored under `digest` (NotFound if it is gone)."""
        ...


@dataclass(frozen=True)
class PlaybookTools:
    """What running playbooks needs: the catalogue, a runner, our guest key and a time limit."""

    catalog: PlaybookSource
    runner: PlaybookRunner
    private_key: Path
    timeout: float = 1800.0


@dataclass(frozen=True)
class GuestLogin:
    """The provisioner's own account in every guest: used to check and onboard it."""

    user: str = "provisioner"
    public_key: str = ""


@dataclass(frozen=True)
class TailnetJoin:
    """How workspaces join the tailnet: the tags every one gets, and how long a join may take."""

    base_tags: tuple[str, ...] = ()
    key_expiry_seconds: int = 3600
    timeout: float = 300.0
    required: bool = True  # False: a device that never appears leaves the workspace node-only


@dataclass(frozen=True)
class Timeouts:
    """How long steps wait for a guest (TCG guests boot in tens of seconds)."""

    shutdown: float = 60.0
    boot: float = 600.0
    poll: float = 1.0


@dataclass
class StepContext:
    """Everything one operation's steps need; `workspace` follows what steps remember."""

    workspace: Workspace
    image: Image
    size: Capacity
    node: Node
    hypervisor: Hypervisor
    link: NodeLink | None
    seeds: SeedMaker
    login: GuestLogin
    owner_keys: tuple[str, ...]
    save: Save
    timeouts: Timeouts = field(default_factory=Timeouts)
    tailnet: Tailnet | None = None
    join: TailnetJoin = field(default_factory=TailnetJoin)
    tag_policy: TagPolicy | None = None
    playbooks: PlaybookTools | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    output: Output = _no_output
    cancel_requested: Callable[[], Awaitable[bool]] = _never_cancelled

    async def remember(self, **changes: Any) -> None:
        """Store facts about the workspace (its address, its guest's key) before relying on them."""
        updated = await self.save(self.workspace.id, changes)
        if updated is not None:
            self.workspace = updated


class StepContexts:
    """Builds the context of an operation from the store, the catalog and the fleet."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        fleet: Fleet,
        seeds: SeedMaker,
        clock: Callable[[], datetime],
        *,
        login: GuestLogin | None = None,
        timeouts: Timeouts | None = None,
        tailnet: Tailnet | None = None,
        join: TailnetJoin | None = None,
        tag_policy: TagPolicy | None = None,
        playbooks: PlaybookTools | None = None,
    ) -> None:
        self._store, self._catalog, self._fleet = store, catalog, fleet
        self._seeds, self._clock = seeds, clock
        self._login = login or GuestLogin()
        self._timeouts = timeouts or Timeouts()
        self._tailnet, self._join = tailnet, join or TailnetJoin()
        self._playbooks, self._tag_policy = playbooks, tag_policy

    async def build(self, workspace_id: str, operation: Operation | None = None) -> StepContext:
        """The context of `operation` (or of any operation) on this workspace."""
        async with self._store.read() as tx:
            ws = await tx.get_workspace(workspace_id)
            if ws is None:
                raise InvalidInput(f"operation on unknown workspace {workspace_id}")
            keys = tuple(key.public_key for key in await tx.ssh_keys(ws.owner))
            # From the store, not memory: an import in another process may have just given
            # the image its kernel boot files.
            image = await tx.get_image(ws.image) or self._catalog.image(ws.image)
        plan = self._catalog.plans.get(ws.plan)
        size = (
            Capacity(plan.vcpus, plan.memory_mib, plan.disk_gib) if plan else Capacity(1, 1024, 10)
        )
        return StepContext(
            workspace=ws,
            image=image,
            size=size,
            node=await self._fleet.node(ws.node),
            hypervisor=await self._fleet.hypervisor(ws.node),
            link=await self._fleet.link(ws.node),
            seeds=self._seeds,
            login=self._login,
            owner_keys=keys,
            save=self._save,
            timeouts=self._timeouts,
            tailnet=self._tailnet,
            join=self._join,
            tag_policy=self._tag_policy,
            playbooks=self._playbooks,
            **(self._of_operation(operation) if operation else {}),
        )

    def _of_operation(self, operation: Operation) -> dict[str, Any]:
        """The parts of a context that belong to one operation: params, output, cancel."""

        async def output(step: str, lines: Sequence[str]) -> None:
            async with self._store.transaction() as tx:
                await tx.append_output(operation.id, step, lines, self._clock())

        async def cancel_requested() -> bool:
            async with self._store.read() as tx:
                return await tx.cancel_requested(operation.id)

        return {
            "params": operation.params,
            "output": output,
            "cancel_requested": cancel_requested,
        }

    async def _save(self, workspace_id: str, changes: dict[str, Any]) -> Workspace | None:
        """Write workspace fields a step learnt."""
        async with self._store.transaction() as tx:
            return await tx.update_workspace(workspace_id, updated_at=self._clock(), **changes)
