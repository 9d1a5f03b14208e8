"""What each kind of operation does, as a table of steps that observe before they act.

Every step may run again after a crash, so each one looks at the node first and does
nothing when its effect is already there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from provisioner.errors import Conflict
from provisioner.models import (
    DomainState,
    Image,
    OperationKind,
    OperationState,
    Workspace,
    WorkspaceState,
)
from provisioner.ports import DomainSpec, Hypervisor


@dataclass(frozen=True)
class StepContext:
    """What a step may touch: the workspace, its node and how long it may wait."""

    workspace: Workspace
    image: Image
    vcpus: int
    memory_mib: int
    hypervisor: Hypervisor
    shutdown_timeout: float = 60.0


StepFn = Callable[[StepContext], Awaitable[str]]


@dataclass(frozen=True)
class StepDef:
    """A named step; `run` returns a short detail line for the record."""

    name: str
    run: StepFn


@dataclass(frozen=True)
class Recipe:
    """How an operation kind runs, and what the workspace becomes when it ends."""

    steps: tuple[StepDef, ...]
    on_success: WorkspaceState
    on_failure: WorkspaceState | None
    compensation: tuple[StepDef, ...] = ()
    on_cancel: WorkspaceState | None = None
    cancellable_while_running: bool = True

    def outcome(self, state: OperationState) -> WorkspaceState | None:
        """The workspace state after the operation ends in `state` (None: unchanged)."""
        if state == OperationState.SUCCEEDED:
            return self.on_success
        if state == OperationState.CANCELLED:
            return self.on_cancel
        return self.on_failure


async def define_domain(ctx: StepContext) -> str:
    """Define the workspace's domain unless it already exists as ours."""
    ws = ctx.workspace
    found = await ctx.hypervisor.lookup(ws.domain_name)
    if found is not None:
        if found.workspace_id != ws.id:
            raise Conflict(
                f"node {ws.node} already has a domain named {ws.domain_name} that is not ours",
                code="domain_not_ours",
            )
        return "already defined"
    spec = DomainSpec(ws.domain_name, ws.id, ws.owner, ctx.vcpus, ctx.memory_mib, ctx.image)
    await ctx.hypervisor.define(spec)
    return f"defined {ws.domain_name} on {ws.node} ({ctx.vcpus} vCPU, {ctx.memory_mib} MiB)"


async def start_domain(ctx: StepContext) -> str:
    """Power the domain on unless it runs already."""
    found = await ctx.hypervisor.lookup(ctx.workspace.domain_name)
    if found is None:
        raise Conflict(
            f"domain {ctx.workspace.domain_name} is missing on its node", code="domain_missing"
        )
    if found.state == DomainState.RUNNING:
        return "already running"
    await ctx.hypervisor.start(found.name)
    return "started"


async def shutdown_domain(ctx: StepContext) -> str:
    """Ask the guest to power off, and force it off after the timeout."""
    name = ctx.workspace.domain_name
    found = await ctx.hypervisor.lookup(name)
    if found is None or found.state == DomainState.SHUTOFF:
        return "already off"
    await ctx.hypervisor.shutdown(name)
    deadline = asyncio.get_running_loop().time() + ctx.shutdown_timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await ctx.hypervisor.lookup(name)
        if found is None or found.state == DomainState.SHUTOFF:
            return "shut down"
        await asyncio.sleep(1.0)
    await ctx.hypervisor.destroy(name)
    return f"forced off after {ctx.shutdown_timeout:g} s"


async def destroy_domain(ctx: StepContext) -> str:
    """Power the domain off at once, if it is ours and on."""
    found = await ctx.hypervisor.lookup(ctx.workspace.domain_name)
    if found is None or found.workspace_id != ctx.workspace.id:
        return "no domain"
    if found.state == DomainState.SHUTOFF:
        return "already off"
    await ctx.hypervisor.destroy(found.name)
    return "powered off"


async def undefine_domain(ctx: StepContext) -> str:
    """Remove the domain's definition, if it is ours."""
    found = await ctx.hypervisor.lookup(ctx.workspace.domain_name)
    if found is None or found.workspace_id != ctx.workspace.id:
        return "no domain"
    await ctx.hypervisor.undefine(found.name)
    return "undefined"


DEFINE = StepDef("define_domain", define_domain)
START = StepDef("start_domain", start_domain)
SHUTDOWN = StepDef("shutdown_domain", shutdown_domain)
DESTROY = StepDef("destroy_domain", destroy_domain)
UNDEFINE = StepDef("undefine_domain", undefine_domain)

RECIPES: dict[OperationKind, Recipe] = {
    OperationKind.CREATE: Recipe(
        steps=(DEFINE, START),
        on_success=WorkspaceState.RUNNING,
        on_failure=WorkspaceState.FAILED,
        compensation=(DESTROY, UNDEFINE),
        on_cancel=WorkspaceState.DELETED,
    ),
    OperationKind.DELETE: Recipe(
        steps=(DESTROY, UNDEFINE),
        on_success=WorkspaceState.DELETED,
        on_failure=WorkspaceState.FAILED,
        cancellable_while_running=False,
    ),
    OperationKind.START: Recipe(steps=(START,), on_success=WorkspaceState.RUNNING, on_failure=None),
    OperationKind.STOP: Recipe(
        steps=(SHUTDOWN,), on_success=WorkspaceState.STOPPED, on_failure=None
    ),
    OperationKind.REBOOT: Recipe(
        steps=(SHUTDOWN, START), on_success=WorkspaceState.RUNNING, on_failure=None
    ),
}
