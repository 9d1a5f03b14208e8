"""What Tailscale adds to a create: the same creates with the tailnet off and on (fake API).

In one process, on libvirt's test driver and SQLite: N creates one after another, each timed
from the core's accept to the operation's end, first without a tailnet, then with the fake
Tailscale API on loopback. A guest player reads each seed's auth key from the node's pool and
joins with it as soon as the seed is written (a real guest joins while it boots), so the time
measured is ours: minting the key, finding the device, its key expiry, revoking the key.

    python -m bench.tailnet_overhead [--creates 40] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.stats import Summary
from provisioner.app import composition
from provisioner.models import Actor, OperationState, Role
from provisioner.requests import CreateRequest
from provisioner.settings import Settings, TailnetSettings
from tests.fakes.guest_join import seed_auth_key
from tests.fakes.tailnet_common import JoinRefused
from tests.fakes.tailscale_api import FakeTailscale

TARGET_EXTRA_P50_MS = 20.0
OWNER = "bench@example.com"
TAGS = {"tag:provisioner": [], "tag:bench": ["tag:provisioner"], "tag:ws": ["tag:provisioner"]}
ADMIN = Actor("bench", Role.ADMIN, "bench")


@contextlib.asynccontextmanager
async def system(settings: Settings) -> AsyncIterator[composition.System]:
    """The whole system in this process, workers running."""
    async with composition.built(settings) as built:
        built.runner.start()
        try:
            yield built
        finally:
            await built.runner.stop(drain_seconds=5)


async def play_guests(built: composition.System, fake: FakeTailscale) -> None:
    """Join every new seed's key as its guest would, until cancelled."""
    hypervisor = await built.fleet.hypervisor("local")
    joined: set[str] = set()
    while True:
        for volume in await hypervisor.volumes():
            if volume.endswith("-seed.iso") and volume not in joined:
                key = seed_auth_key(await hypervisor.download_volume(volume, 1 << 20))
                name = volume.removeprefix("ws-").rsplit("-", 2)[0]
                if key is not None:
                    with contextlib.suppress(JoinRefused):
                        fake.register_device(key, name)
                joined.add(volume)
        await asyncio.sleep(0.001)


async def timed_creates(built: composition.System, prefix: str, n: int) -> list[float]:
    """Seconds from accept to succeeded, for each of `n` creates one after another."""
    times = []
    for i in range(n):
        started = time.perf_counter()
        request = CreateRequest(plan="small", image="debian-12", name=f"{prefix}{i}", owner=OWNER)
        _, op = await built.core.create_workspace(ADMIN, request)
        while True:
            done = await built.core.get_operation(ADMIN, op.id)
            if done.state.terminal:
                break
            await asyncio.sleep(0.001)
        if done.state != OperationState.SUCCEEDED:
            raise RuntimeError(f"create {prefix}{i} {done.state.value}: {done.error}")
        times.append(time.perf_counter() - started)
    return times


async def round_of(tmp: Path, n: int, index: int) -> dict[str, Any]:
    """One round: n creates without a tailnet, then n with the fake one."""
    base = Settings(
        data_dir=tmp / f"off{index}",
        database_url=f"sqlite+aiosqlite:///{tmp / f'off{index}.db'}",
        admin_token=None,
    )
    async with system(base) as built:
        off = await timed_creates(built, "off", n)
    async with FakeTailscale.running() as fake:
        fake.set_policy(json.dumps({"tagOwners": TAGS}))
        ts = TailnetSettings(
            kind="tailscale",
            api_url=fake.base_url,
            api_key=fake.add_api_key("ops@example.com", role="admin"),
            tags=("tag:ws",),
        )
        on_settings = replace(
            base,
            data_dir=tmp / f"on{index}",
            database_url=f"sqlite+aiosqlite:///{tmp / f'on{index}.db'}",
            tailnet=ts,
        )
        async with system(on_settings) as built:
            player = asyncio.create_task(play_guests(built, fake))
            try:
                on = await timed_creates(built, "on", n)
            finally:
                player.cancel()
    off_s, on_s = Summary.of(off), Summary.of(on)
    return {
        "off_ms": off_s.as_dict(),
        "on_ms": on_s.as_dict(),
        "extra_p50_ms": round(on_s.p50 - off_s.p50, 1),
        "extra_p99_ms": round(on_s.p99 - off_s.p99, 1),
    }


async def measure(creates: int, rounds: int) -> dict[str, Any]:
    """Every round's numbers."""
    with tempfile.TemporaryDirectory(prefix="bench-tailnet-") as tmp:
        return {"rounds": [await round_of(Path(tmp), creates, i) for i in range(rounds)]}


def main(argv: list[str] | None = None) -> int:
    """Run and print; exit 1 when a round misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--creates", type=int, default=40, help="creates per configuration")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(measure(args.creates, args.rounds))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"create, accept → succeeded, {args.creates} sequential creates per configuration")
        for i, r in enumerate(results["rounds"], 1):
            off, on = r["off_ms"], r["on_ms"]
            print(
                f"  round {i}: off p50 {off['p50']:.1f} p99 {off['p99']:.1f} ms | "
                f"on p50 {on['p50']:.1f} p99 {on['p99']:.1f} ms | "
                f"extra p50 {r['extra_p50_ms']:+.1f} ms (target ≤ {TARGET_EXTRA_P50_MS:g})"
            )
    met = all(r["extra_p50_ms"] <= TARGET_EXTRA_P50_MS for r in results["rounds"])
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
