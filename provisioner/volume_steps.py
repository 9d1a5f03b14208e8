"""Steps on a workspace's volumes: the copy-on-write disk and the cloud-init seed."""

from __future__ import annotations

import asyncio

from provisioner.errors import Conflict
from provisioner.ports import SeedSpec
from provisioner.requests import login_name
from provisioner.step_context import StepContext
from provisioner.tailnet_steps import mint_join_key


async def prepare_disk(ctx: StepContext) -> str:
    """Create the workspace's qcow2 overlay on the image's base volume, sized to the plan."""
    ws = ctx.workspace
    if await ctx.hypervisor.volume(ws.disk_volume) is not None:
        return "already there"
    base = ctx.image.base_volume
    if await ctx.hypervisor.volume(base) is None:
        raise Conflict(
            f"image {ctx.image.name} ({base}) is not on node {ws.node}; "
            f"import it: provisioner image import {ctx.image.name} FILE --node {ws.node}",
            code="image_missing",
        )
    await ctx.hypervisor.create_overlay(ws.disk_volume, base, ctx.size.disk_gib)
    return f"{ctx.size.disk_gib} GiB copy-on-write disk over {base}"


async def write_seed(ctx: StepContext) -> str:
    """Upload the cloud-init seed, whose guest host key is stored before the guest exists."""
    ws = ctx.workspace
    if ws.guest_host_key and await ctx.hypervisor.volume(ws.seed_volume) is not None:
        return "already there"
    # A seed without a stored key (a crash between the two) is replaced, never trusted.
    await ctx.hypervisor.delete_volume(ws.seed_volume)
    # Off the loop: key generation (and, the first time, loading its library) takes a while.
    private, public = await asyncio.to_thread(ctx.seeds.host_keypair)
    # The host key is stored before the guest can present it: the seed is not uploaded yet.
    join_key = await mint_join_key(ctx, guest_host_key=public)
    user = login_name(ws.owner)
    spec = SeedSpec(
        instance_id=ws.id,
        hostname=ws.name,
        user=user,
        user_keys=ctx.owner_keys,
        admin_user=ctx.login.user,
        admin_key=ctx.login.public_key,
        host_key_private=private,
        host_key_public=public,
        tailscale_auth_key=join_key.secret if join_key else None,
        tailscale_hostname=ws.name if join_key else None,
    )
    seed = await asyncio.to_thread(ctx.seeds.build, spec)
    await ctx.hypervisor.upload_volume(ws.seed_volume, seed)
    keys = len(ctx.owner_keys)
    joins = f", joins the tailnet as {ws.name}" if join_key else ""
    return f"cloud-init seed: hostname {ws.name}, user {user} with {keys} SSH key(s){joins}"


async def delete_disk(ctx: StepContext) -> str:
    """Delete the workspace's disk overlay if it exists."""
    return await _delete(ctx, ctx.workspace.disk_volume)


async def delete_seed(ctx: StepContext) -> str:
    """Delete the workspace's seed volume if it exists."""
    return await _delete(ctx, ctx.workspace.seed_volume)


async def _delete(ctx: StepContext, volume: str) -> str:
    """Delete one of the workspace's own volumes."""
    if await ctx.hypervisor.volume(volume) is None:
        return "no volume"
    await ctx.hypervisor.delete_volume(volume)
    return f"deleted {volume}"
