"""Steps that wait for the guest (an address, then SSH) and check it is onboarded."""

from __future__ import annotations

import asyncio

from provisioner.domain_steps import require_domain
from provisioner.errors import GuestUnreachable, OnboardingFailed, TimedOut
from provisioner.requests import login_name
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


# Run as the provisioner's own account. $1 is the owner's login, passed as an argument (never
# pasted into the script). cloud-init's exit status: 0 done, 2 done with recoverable errors.
ONBOARD_CHECK = r"""
user=$1
cloud-init status --wait >/dev/null 2>&1; status=$?
if [ "$status" != 0 ] && [ "$status" != 2 ]; then
  echo "cloud-init ended with status $status: $(cloud-init status --long 2>&1 | tr '\n' ' ')"
  exit 3
fi
getent passwd "$user" >/dev/null || { echo "account $user is missing"; exit 4; }
case " $(id -nG "$user") " in
  *" sudo "*) ;;
  *) echo "account $user is not in group sudo"; exit 5;;
esac
home=$(getent passwd "$user" | cut -d: -f6)
sudo -n cat "$home/.ssh/authorized_keys" 2>/dev/null | awk '{print $2}'
"""
ONBOARD_TIMEOUT = 600.0


async def onboard_guest(ctx: StepContext) -> str:
    """Wait for cloud-init to finish, then check the owner's account, groups and SSH keys."""
    ws = ctx.workspace
    await require_domain(ctx)
    if ctx.link is None or not ws.address or not ws.guest_host_key:
        return "skipped: this node is not reached over SSH, so neither is its guest"
    user = login_name(ws.owner)
    result = await ctx.link.run_on_guest(
        ws.address,
        ctx.login.user,
        ws.guest_host_key,
        ["sh", "-c", ONBOARD_CHECK, "onboard", user],
        timeout=ONBOARD_TIMEOUT,
    )
    if result.exit_status is None:
        raise GuestUnreachable(f"guest {ws.domain_name} dropped the connection mid-check")
    if result.exit_status != 0:
        reason = (result.stdout.strip() or result.stderr.strip())[-300:]
        raise OnboardingFailed(f"onboarding of {ws.name} failed: {reason}")
    installed = set(result.stdout.split())
    missing = [key for key in ctx.owner_keys if key.split()[1] not in installed]
    if missing:
        raise OnboardingFailed(
            f"onboarding of {ws.name} failed: {len(missing)} of the owner's "
            f"{len(ctx.owner_keys)} SSH key(s) are not in {user}'s authorized_keys"
        )
    return f"cloud-init done; account {user} (sudo) with {len(ctx.owner_keys)} SSH key(s)"
