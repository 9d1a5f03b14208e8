"""Steps on the tailnet: a join key for the seed, the device found and tagged, the device removed.

A key's secret lives only in memory and in the seed it is written into; the store keeps its id,
so a later step (or a failed create's undo) can revoke it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from provisioner.domain_steps import require_domain
from provisioner.errors import TimedOut
from provisioner.models import TailnetReach
from provisioner.ports import AuthKey, Tailnet, TailnetDevice
from provisioner.requests import owner_tag
from provisioner.step_context import StepContext

FORGET_DEVICE = {
    "tailscale_device_id": None,
    "tailscale_hostname": None,
    "tailscale_ip": None,
    "tailscale_ipv6": None,
    "tailscale_reach": None,
}


def workspace_tags(ctx: StepContext) -> tuple[str, ...]:
    """The owner's tag, then the base tags every workspace gets, without repeats."""
    return tuple(dict.fromkeys((owner_tag(ctx.workspace.owner), *ctx.join.base_tags)))


async def mint_join_key(ctx: StepContext, **remember: object) -> AuthKey | None:
    """A new single-use key for the seed, stored by id with `remember`; None if Tailscale is off.

    A key left by an earlier attempt is revoked first: its secret is gone with that attempt.
    """
    if ctx.tailnet is None:
        if remember:
            await ctx.remember(**remember)
        return None
    ws = ctx.workspace
    if ws.tailscale.key_id:
        await ctx.tailnet.revoke_auth_key(ws.tailscale.key_id)
    tags = workspace_tags(ctx)
    if ctx.tag_policy is not None:
        await ctx.tag_policy.ensure_tags(tags)  # a new owner's tag is not in the policy yet
    key = await ctx.tailnet.create_auth_key(
        tags=tags,
        expiry_seconds=ctx.join.key_expiry_seconds,
        description=f"provisioner workspace {ws.name}",
    )
    # One write for the caller's facts and the key's id (a crash before it leaves a key that
    # only expires: its secret was never written anywhere).
    await ctx.remember(
        **remember,
        tailscale_key_id=key.id,
        tailscale_key_created_at=key.created,
        tailscale_tags=tags,
    )
    return key


async def join_tailnet(ctx: StepContext) -> str:
    """Find the guest's device by hostname, make its tags right and record its addresses."""
    await require_domain(ctx)
    if ctx.tailnet is None:
        return "skipped: Tailscale is off"
    ws = ctx.workspace
    device = await _wait_for_device(ctx, ctx.tailnet)
    if device is None:
        seconds = f"{ctx.join.timeout:g} s"
        if ctx.join.required:
            raise TimedOut(
                f"workspace {ws.name} did not appear on the tailnet within {seconds}; check "
                f"that image {ws.image} has tailscale installed, and the guest's console log "
                f"/var/log/libvirt/qemu/{ws.domain_name}-console.log on node {ws.node}"
            )
        await _revoke_pending_key(ctx, ctx.tailnet)
        await ctx.remember(tailscale_reach=TailnetReach.NODE_ONLY)
        return f"not on the tailnet after {seconds}: reachable through node {ws.node} only"
    tags = workspace_tags(ctx)
    if set(device.tags) != set(tags):
        await ctx.tailnet.set_device_tags(device.id, tags)
    if not device.key_expiry_disabled:
        await ctx.tailnet.disable_key_expiry(device.id)
    if ws.tailscale.key_id:
        await ctx.tailnet.revoke_auth_key(ws.tailscale.key_id)
    ipv4 = next((a for a in device.addresses if ":" not in a), None)
    ipv6 = next((a for a in device.addresses if ":" in a), None)
    await ctx.remember(
        tailscale_device_id=device.id,
        tailscale_hostname=device.name,
        tailscale_ip=ipv4,
        tailscale_ipv6=ipv6,
        tailscale_tags=tags,
        tailscale_reach=TailnetReach.TAILNET,
        tailscale_key_id=None,
    )
    return f"on the tailnet as {device.name} ({ipv4 or ipv6}), tags {' '.join(tags)}"


async def leave_tailnet(ctx: StepContext) -> str:
    """Delete the workspace's device (and any newer one by its name) and revoke an unused key."""
    ws = ctx.workspace
    if ctx.tailnet is None:
        if ws.tailscale.device_id:
            return f"skipped: Tailscale is off; remove device {ws.tailscale.device_id} by hand"
        return "skipped: Tailscale is off"
    done: list[str] = []
    if ws.tailscale.key_id:
        await _revoke_pending_key(ctx, ctx.tailnet)
        done.append("revoked its unused auth key")
    # A create that failed mid-join may have a device it never recorded: look it up by name.
    found = await _devices_of(ctx, ctx.tailnet) if ws.tailscale.key_created_at else []
    device_ids = dict.fromkeys([ws.tailscale.device_id, *(d.id for d in found)])
    for device_id in filter(None, device_ids):
        await ctx.tailnet.delete_device(device_id)
        done.append(f"deleted device {device_id}")
    await ctx.remember(**FORGET_DEVICE)
    return "; ".join(done) or "not on the tailnet"


async def _wait_for_device(ctx: StepContext, tailnet: Tailnet) -> TailnetDevice | None:
    """Poll for the workspace's device until the join timeout; the newest one, or None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.join.timeout
    while True:
        found = await _devices_of(ctx, tailnet)
        if found:
            return found[-1]
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(ctx.timeouts.poll)


async def _devices_of(ctx: StepContext, tailnet: Tailnet) -> list[TailnetDevice]:
    """Devices named like the workspace that joined after its key was minted, oldest first.

    A workspace name used again later must never match the device of the one before it.
    """
    minted = ctx.workspace.tailscale.key_created_at
    devices = await tailnet.devices(hostname=ctx.workspace.name)
    ours = [d for d in devices if joined_since(d, minted)]
    return sorted(ours, key=lambda d: d.created.timestamp() if d.created else 0.0)


def joined_since(device: TailnetDevice, minted: datetime | None) -> bool:
    """Whether the device was created no earlier than the key's second.

    Tailscale stamps whole seconds: a device created in the key's own second is still newer.
    """
    if minted is None or device.created is None:
        return minted is None
    return device.created >= minted.replace(microsecond=0)


async def _revoke_pending_key(ctx: StepContext, tailnet: Tailnet) -> None:
    """Revoke the key minted for the seed, if one is still recorded, and forget it."""
    key_id = ctx.workspace.tailscale.key_id
    if key_id:
        await tailnet.revoke_auth_key(key_id)
        await ctx.remember(tailscale_key_id=None)
