"""Steps on a workspace's libvirt domain: define, start, shut down, destroy, undefine."""

from __future__ import annotations

import asyncio

from provisioner.errors import Conflict
from provisioner.models import DomainState
from provisioner.ports import DomainInfo, DomainSpec
from provisioner.step_context import StepContext


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
    spec = DomainSpec(
        name=ws.domain_name,
        workspace_id=ws.id,
        owner=ws.owner,
        vcpus=ctx.size.vcpus,
        memory_mib=ctx.size.memory_mib,
        image=ctx.image,
        disk_volume=ws.disk_volume,
        seed_volume=ws.seed_volume,
        network=ctx.node.network,
    )
    await ctx.hypervisor.define(spec)
    return (
        f"defined {ws.domain_name} on {ws.node} ({ctx.size.vcpus} vCPU, {ctx.size.memory_mib} MiB)"
    )


async def require_domain(ctx: StepContext) -> DomainInfo:
    """The workspace's domain, or Conflict saying it vanished from its node."""
    found = await ctx.hypervisor.lookup(ctx.workspace.domain_name)
    if found is None:
        raise Conflict(
            f"domain {ctx.workspace.domain_name} is missing on its node", code="domain_missing"
        )
    return found


async def start_domain(ctx: StepContext) -> str:
    """Power the domain on unless it runs already."""
    found = await require_domain(ctx)
    if found.state == DomainState.RUNNING:
        return "already running"
    await ctx.hypervisor.start(found.name)
    return "started"


async def shutdown_domain(ctx: StepContext) -> str:
    """Ask the guest to power off (ACPI), and force it off after the timeout."""
    name = ctx.workspace.domain_name
    found = await ctx.hypervisor.lookup(name)
    if found is None or found.state == DomainState.SHUTOFF:
        return "already off"
    await ctx.hypervisor.shutdown(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeouts.shutdown
    while loop.time() < deadline:
        found = await ctx.hypervisor.lookup(name)
        if found is None or found.state == DomainState.SHUTOFF:
            return "shut down"
        await asyncio.sleep(ctx.timeouts.poll)
    await ctx.hypervisor.destroy(name)
    return f"forced off after {ctx.timeouts.shutdown:g} s"


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
