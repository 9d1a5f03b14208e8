"""The e2e tailnet: the fake Tailscale API on the namespace's loopback, and the guest's join.

The e2e image has no tailscale binary (the tier has no internet), so its seed's `tailscale up`
fails and the key file is removed anyway; the test plays the join with the key it reads from
the seed volume in the node's pool, the file the guest boots with.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import libvirt

from tests.fakes.guest_join import seed_auth_key
from tests.fakes.tailscale_api import FakeTailscale

from .guest import POOL
from .world import OWNER

OWNER_TAG = "tag:" + OWNER.split("@")[0]
BASE_TAG = "tag:provisioner-workspace"
POLICY = {
    "tagOwners": {
        "tag:provisioner": [],
        OWNER_TAG: ["tag:provisioner"],
        BASE_TAG: ["tag:provisioner"],
    },
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


def tailnet_env(fake: FakeTailscale) -> dict[str, str]:
    """Settings for a serve child that uses the fake tailnet."""
    fake.set_policy(json.dumps(POLICY))
    return {
        "TAILSCALE_API_URL": fake.base_url,
        "TAILSCALE_API_KEY": fake.add_api_key("ops@example.com", role="admin"),
        "PROVISIONER_TAILSCALE_TAGS": BASE_TAG,
    }


async def join_from_seed(
    fake: FakeTailscale, conn: Any, domain: str, hostname: str, *, not_key: str | None = None
) -> tuple[str, Path]:
    """Wait for the domain's seed in the pool, read its key, join with it; (key, seed path)."""
    pool = conn.storagePoolLookupByName(POOL)
    for _ in range(1200):
        pool.refresh(0)
        try:
            path = Path(pool.storageVolLookupByName(f"{domain}-seed.iso").path())
        except libvirt.libvirtError:
            await asyncio.sleep(0.25)
            continue
        key = seed_auth_key(path.read_bytes())
        if key is not None and key != not_key:
            fake.register_device(key, hostname)
            return key, path
        await asyncio.sleep(0.25)
    raise AssertionError(f"no seed with a fresh auth key appeared for {domain}")


def files_holding(secret: str, *roots: Path) -> list[Path]:
    """Every file under `roots` whose bytes contain `secret`."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(path)
    return found
