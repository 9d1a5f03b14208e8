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
    if not ws.guest_host_key:
        raise GuestUnreachable(f"workspace {ws.name} has no guest host key yet")
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = "no answer"
    while loop.time() - started < ctx.timeouts.boot:
        # Leases are looked at again each round: a rebuilt guest asks DHCP as a new client
        # and may get a new address while its old lease is still listed.
        for address in await _candidates(ctx):
            outcome = await _try_login(ctx, address, ws.guest_host_key)
            if outcome is None:
                if address != ctx.workspace.address:
                    await ctx.remember(address=address)
                return f"ssh ready at {address} after {loop.time() - started:.1f} s"
            last = f"{address}: {outcome}"
        await asyncio.sleep(ctx.timeouts.poll)
    raise TimedOut(
        f"guest {ws.domain_name} did not accept SSH within {ctx.timeouts.boot:g} s ({last}); "
        f"see /var/log/libvirt/qemu/{ws.domain_name}-console.log on {ctx.node.name}"
    )


async def _candidates(ctx: StepContext) -> list[str]:
    """The guest's addresses to try, newest lease first, the stored one included."""
    found = list(reversed(await ctx.hypervisor.addresses(ctx.workspace.domain_name)))
    known = ctx.workspace.address
    return found + ([known] if known and known not in found else [])


async def _try_login(ctx: StepContext, address: str, host_key: str) -> str | None:
    """None if the provisioner's login at `address` works, else why not."""
    assert ctx.link is not None
    try:
        result = await ctx.link.run_on_guest(
            address, ctx.login.user, host_key, ["true"], timeout=15.0
        )
    except GuestUnreachable as error:
        return error.message
    if result.exit_status == 0:
        return None
    # None means the connection dropped: the outcome is unknown, so look again.
    return f"exit status {result.exit_status}"
