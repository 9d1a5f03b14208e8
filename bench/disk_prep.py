"""`guest_boot --disk-prep`: libvirt's time to create a qcow2 overlay over a small and a large base.

An overlay must cost the same whatever its base holds: only qcow2 metadata is written. Bases,
both volumes of the pool: `small`, the real guest image (2 GiB virtual, ~500 MB written);
`large`, a 20 GiB qcow2 with 300 MiB written in 1 MiB pieces spread over all of it (qemu-img +
qemu-io), so that it has many L2 tables. Each rep is one `createXML` of a volume with a
<backingStore>, the two bases taking turns, then the volume is deleted (not timed). Both in
pool `default` (on the namespace's tmpfs) and in a scratch dir pool under /var/tmp (a disk).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from bench.stats import percentile
from tests.e2e.guest import POOL, GuestImage, overlay_volume_xml

URI = "qemu:///system"
LARGE_GIB = 20
LARGE_WRITES = 300  # of 1 MiB each
OVERLAY_GIB = 10  # plan `small`; an overlay is at least as large as its base
DISK_POOL = "bench-disk"
DISK_POOL_PARENT = "/var/tmp"  # on the root file system, not a tmpfs


def _pool_dir(pool: Any) -> Path:
    """Where the dir pool keeps its volumes."""
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
    if not path:
        raise RuntimeError(f"pool {POOL} has no target path")
    return Path(path)


def _large_base(path: Path) -> None:
    """A 20 GiB qcow2 with 300 MiB of data spread evenly over it."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{LARGE_GIB}G"], check=True
    )
    step = (LARGE_GIB << 30) // LARGE_WRITES
    commands = []
    for i in range(LARGE_WRITES):
        commands += ["-c", f"write -q -P {i % 250 + 1} {i * step} 1M"]
    subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(path)], check=True)


def _summary(ms: list[float]) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    return {
        "median": round(percentile(ms, 50), 2),
        "min": round(min(ms), 2),
        "max": round(max(ms), 2),
    }


def _on_pool(pool: Any, image: GuestImage, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Time overlay creation over both bases in `pool`; every volume made is deleted."""
    where = _pool_dir(pool)
    bases = {"small": "bench-small-base.qcow2", "large": "bench-large-base.qcow2"}
    made = list(bases.values())
    try:
        began = time.monotonic()
        shutil.copyfile(image.base, where / bases["small"])
        _large_base(where / bases["large"])
        pool.refresh(0)
        log(f"pool {pool.name()} ({where}): bases ready in {time.monotonic() - began:.1f} s")
        times: dict[str, list[float]] = {kind: [] for kind in bases}
        overlay_bytes: dict[str, int] = {}
        for rep in range(reps + 1):  # the first round warms caches and is not counted
            for kind, base in bases.items():
                volume = pool.storageVolLookupByName(base)
                gib = max(OVERLAY_GIB, int(volume.info()[1]) >> 30)
                name = f"bench-overlay-{kind}-{rep}.qcow2"
                made.append(name)
                xml = overlay_volume_xml(name, volume.path(), gib)
                started = time.perf_counter()
                overlay = pool.createXML(xml, 0)
                elapsed = time.perf_counter() - started
                overlay_bytes[kind] = int(overlay.info()[2])
                overlay.delete(0)
                made.remove(name)
                if rep:
                    times[kind].append(elapsed * 1000)
        result: dict[str, Any] = {"path": str(where)}
        for kind, base in bases.items():
            _type, capacity, allocation = pool.storageVolLookupByName(base).info()
            result[kind] = {
                "base_virtual_gib": round(capacity / (1 << 30), 1),
                "base_allocated_mb": round(allocation / 1e6, 1),
                "overlay_allocated_kb": round(overlay_bytes[kind] / 1e3, 1),
                "create_ms": _summary(times[kind]),
            }
        result["difference_ms"] = round(
            result["large"]["create_ms"]["median"] - result["small"]["create_ms"]["median"], 2
        )
        return result
    finally:
        pool.refresh(0)
        for name in made:
            with contextlib.suppress(libvirt.libvirtError):
                pool.storageVolLookupByName(name).delete(0)


@contextlib.contextmanager
def _disk_pool(conn: Any) -> Iterator[Any]:
    """A scratch dir pool on the real disk (the namespace's `default` is on tmpfs)."""
    where = Path(tempfile.mkdtemp(prefix="bench-pool-", dir=DISK_POOL_PARENT))
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{DISK_POOL}</name><target><path>{where}</path></target></pool>",
        0,
    )
    try:
        pool.create(0)
        yield pool
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            pool.destroy()
        pool.undefine()
        shutil.rmtree(where, ignore_errors=True)


def disk_prep(image: GuestImage, reps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Overlay creation times over both bases, in pool `default` and in a disk-backed pool."""
    conn = libvirt.open(URI)
    try:
        result: dict[str, Any] = {"reps": reps}
        result["tmpfs"] = _on_pool(conn.storagePoolLookupByName(POOL), image, reps, log)
        with _disk_pool(conn) as pool:
            result["disk"] = _on_pool(pool, image, reps, log)
        return result
    finally:
        conn.close()


def table(result: dict[str, Any], target_ms: float) -> list[str]:
    """The report's lines."""
    lines = [
        "disk prep: qcow2 overlay creation (libvirt storageVolCreateXML with <backingStore>), "
        f"{result['reps']} reps per base and pool",
        f"  {'pool, base':40}{'median':>8}{'min':>8}{'max':>8}   (ms)   overlay on disk",
    ]
    for where in ("tmpfs", "disk"):
        on = result[where]
        for kind in ("small", "large"):
            r = on[kind]
            label = (
                f"{where}, {kind}: {r['base_virtual_gib']:g} GiB, "
                f"{r['base_allocated_mb']:g} MB written"
            )
            s = r["create_ms"]
            lines.append(
                f"  {label:40}{s['median']:8.2f}{s['min']:8.2f}{s['max']:8.2f}"
                f"          {r['overlay_allocated_kb']:g} kB"
            )
    for where in ("tmpfs", "disk"):
        on = result[where]
        diff = on["difference_ms"]
        slowest = max(on[kind]["create_ms"]["median"] for kind in ("small", "large"))
        ok = "ok  " if slowest <= target_ms and abs(diff) <= target_ms else "MISS"
        lines.append(
            f"{ok} {where} ({on['path']}): large - small, median {diff:+.2f} ms; "
            f"slower median {slowest:.2f} ms (target: equal, each ≤ {target_ms:g} ms)"
        )
    return lines
