"""Steps that wait for the guest: an address on the node's network, then SSH."""

from __future__ import annotations

import asyncio

from provisioner.domain_steps import require_domain
from provisioner.errors import GuestUnreachable, TimedOut
from provisioner.step_context import StepContext


async def wait_for_address(ctx: StepContext) -> str:
    """Wait until the guest has an IPv4 address (DHCP lease or guest agent) and store it."""
    await require_domain(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeouts.boot
    while True:
        found = await ctx.hypervisor.addresses(ctx.workspace.domain_name)
        if found:
            await ctx.remember(address=found[0])
            return f"address {found[0]}"
        if loop.time() >= deadline:
            raise TimedOut(
                f"guest {ctx.workspace.domain_name} got no address within "
                f"{ctx.timeouts.boot:g} s; check network {ctx.node.network!r} on {ctx.node.name} "
                f"and the console log /var/log/libvirt/qemu/{ctx.workspace.domain_name}"
                "-console.log there"
            )
        await asyncio.sleep(ctx.timeouts.poll)


async def wait_for_ssh(ctx: StepContext) -> str:
    """Wait until the guest accepts the provisioner's SSH login through the node."""
    ws = ctx.workspace
    await require_domain(ctx)
    if ctx.link is None:
        return "skipped: this node is not reached over SSH, so neither is its guest"
    if not ws.address or not ws.guest_host_key:
        raise GuestUnreachable(f"workspace {ws.name} has no address or guest key yet")
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = "no answer"
    while loop.time() - started < ctx.timeouts.boot:
        try:
            result = await ctx.link.run_on_guest(
                ws.address, ctx.login.user, ws.guest_host_key, ["true"], timeout=15.0
            )
        except GuestUnreachable as error:
            last = error.message
        else:
            if result.exit_status == 0:
                return f"ssh ready after {loop.time() - started:.1f} s"
            # None means the connection dropped: the outcome is unknown, so look again.
            last = f"exit status {result.exit_status}"
        await asyncio.sleep(ctx.timeouts.poll)
    raise TimedOut(
        f"guest {ws.domain_name} did not accept SSH within {ctx.timeouts.boot:g} s ({last}); "
        f"see /var/log/libvirt/qemu/{ws.domain_name}-console.log on {ctx.node.name}"
    )
