"""The baseline of `guest_boot`: a guest booted with plain virsh, timed from start to SSH login.

Everything goes through the `virsh` command (as an operator would type it) against the private
namespace's libvirtd: the image is imported with vol-create-as + vol-upload, each run gets a
qcow2 overlay (`vol-create` with a <backingStore>) and a NoCloud seed ISO (genisoimage, uploaded
the same way), a TCG domain with direct kernel boot is defined and started, its address is read
from the DHCP lease of network e2e-net, and `ssh -J` through the loopback sshd node logs in.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.stats import percentile
from tests.e2e.guest import (
    NETWORK,
    POOL,
    REPO,
    GuestImage,
    GuestSpec,
    Jump,
    SshNode,
    guest_domain_xml,
    keypair,
    overlay_volume_xml,
    public_key_line,
    seed_iso,
)

URI = "qemu:///system"
USER = "bench"
DISK_GIB = 10  # plan `small`, what the provisioner gives a workspace by default
LEASE_POLL = 0.25
IPV4 = re.compile(r"ipv4\s+(\d+\.\d+\.\d+\.\d+)/")


class BenchError(Exception):
    """The benchmark cannot go on; the message says what failed."""


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a series of seconds."""
    return {
        "median": round(percentile(values, 50), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def virsh(*args: str, check: bool = True) -> str:
    """Run `virsh -c qemu:///system ARGS`; its output, or BenchError with virsh's complaint."""
    done = subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise BenchError(f"virsh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def setup_host() -> float:
    """libvirtd, virtlogd, network e2e-net and pool `default` (idempotent); seconds taken."""
    began = time.monotonic()
    done = subprocess.run(
        [str(REPO / "scripts" / "e2e" / "setup-host.sh"), "daemons"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"setup-host.sh daemons failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - began


def versions() -> dict[str, str]:
    """libvirt and QEMU versions, as `virsh version` reports them."""
    found: dict[str, str] = {}
    for line in virsh("version").splitlines():
        name, _, value = line.partition(":")
        if name.strip().startswith("Using library"):
            found["libvirt"] = value.split()[-1]
        elif name.strip().startswith("Running hypervisor"):
            found["qemu"] = value.split()[-1]
    return found


def pool_path(volume: str) -> str:
    """The file of a volume of the pool."""
    return virsh("vol-path", "--pool", POOL, volume).strip()


def upload(volume: str, source: Path, fmt: str, capacity: int | None = None) -> None:
    """vol-create-as + vol-upload: a new volume of the pool holding `source`'s bytes."""
    size = capacity or source.stat().st_size
    virsh("vol-create-as", POOL, volume, str(size), "--format", fmt)
    virsh("vol-upload", "--pool", POOL, volume, str(source))


def delete_volume(volume: str) -> None:
    """vol-delete, if the volume exists."""
    virsh("vol-delete", "--pool", POOL, volume, check=False)


def virtual_size(qcow2: Path) -> int:
    """The disk size a qcow2 file stands for."""
    info = subprocess.run(
        ["qemu-img", "info", "--output", "json", str(qcow2)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(json.loads(info.stdout)["virtual-size"])


@dataclass(frozen=True)
class Imported:
    """The image's volumes in the pool, and how long the import took."""

    base: str
    kernel: str
    initrd: str
    seconds: float
    bytes: int


@contextmanager
def imported(image: GuestImage, prefix: str) -> Iterator[Imported]:
    """The image uploaded into the pool with plain virsh; its volumes deleted afterwards."""
    names = (f"{prefix}-base.qcow2", f"{prefix}-vmlinuz", f"{prefix}-initrd.img")
    began = time.monotonic()
    try:
        upload(names[0], image.base, "qcow2", virtual_size(image.base))
        upload(names[1], image.kernel, "raw")
        upload(names[2], image.initrd, "raw")
        virsh("pool-refresh", POOL)
        total = sum(p.stat().st_size for p in (image.base, image.kernel, image.initrd))
        yield Imported(*names, seconds=time.monotonic() - began, bytes=total)
    finally:
        for name in names:
            delete_volume(name)


@dataclass
class BootRun:
    """One baseline boot, in seconds."""

    prepare: float = 0.0  # overlay + seed (build + upload) + define
    start: float = 0.0  # the `virsh start` command itself
    lease: float = 0.0  # start → DHCP lease seen
    ssh: float = 0.0  # start → first successful login running `true`
    address: str = ""


def lease_address(domain: str) -> str | None:
    """The guest's IPv4 address from the network's DHCP lease, if it has one yet."""
    found = IPV4.search(virsh("domifaddr", domain, "--source", "lease", check=False))
    return found.group(1) if found else None


def wait_for_address(domain: str, timeout: float, address: Callable[[str], str | None]) -> str:
    """Poll until the domain has an address; BenchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = address(domain)
        if found:
            return found
        if "running" not in virsh("domstate", domain, check=False):
            raise BenchError(f"domain {domain} stopped before it got an address")
        time.sleep(LEASE_POLL)
    raise BenchError(f"domain {domain} got no DHCP lease on {NETWORK} within {timeout:g} s")


def boot_once(
    node: SshNode, volumes: Imported, cmdline: str, key: Path, timeout: float, work: Path
) -> BootRun:
    """Prepare, define and start one guest, wait for SSH, then remove all of it."""
    name = f"bench-boot-{secrets.token_hex(3)}"
    disk, seed = f"{name}.qcow2", f"{name}-seed.iso"
    console = work / f"{name}-console.log"
    run = BootRun()
    began = time.monotonic()
    try:
        overlay = work / f"{name}-overlay.xml"
        overlay.write_text(overlay_volume_xml(disk, pool_path(volumes.base), DISK_GIB))
        virsh("vol-create", POOL, str(overlay))
        host_key = keypair(work / f"{name}-hostkey", name)
        user_key = public_key_line(Path(f"{key}.pub"))
        iso = seed_iso(work / seed, USER, user_key, name, host_key)
        upload(seed, iso, "raw")
        spec = GuestSpec(
            name=name,
            disk_volume=disk,
            seed_volume=seed,
            kernel=pool_path(volumes.kernel),
            initrd=pool_path(volumes.initrd),
            cmdline=cmdline,
            console_log=str(console),
        )
        definition = work / f"{name}.xml"
        definition.write_text(guest_domain_xml(spec))
        virsh("define", str(definition))
        run.prepare = time.monotonic() - began
        started = time.monotonic()
        virsh("start", name)
        run.start = time.monotonic() - started
        run.address = wait_for_address(name, timeout, lease_address)
        run.lease = time.monotonic() - started
        with Jump(node.port, node.client_key, node.host_key) as jump:
            left = timeout - (time.monotonic() - started)
            pinned = public_key_line(Path(f"{host_key}.pub"))
            jump.wait(run.address, USER, key, left, host_key=pinned)
        run.ssh = time.monotonic() - started
        return run
    except (BenchError, TimeoutError) as error:
        tail = console.read_text(errors="replace").splitlines()[-25:] if console.exists() else []
        raise BenchError(f"{error}\n--- end of {name}'s console ---\n" + "\n".join(tail)) from None
    finally:
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
        delete_volume(disk)
        delete_volume(seed)


def leases() -> str:
    """`virsh net-dhcp-leases e2e-net`: what the network's DHCP server handed out."""
    return virsh("net-dhcp-leases", NETWORK, check=False)


def baseline(
    node: SshNode, image: GuestImage, runs: int, timeout: float, log: Callable[[str], None]
) -> dict[str, object]:
    """Import the image with virsh, then boot it `runs` times; raw timings and the import."""
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
        work = Path(tmp)
        key = keypair(work / "guest_key", "bench-guest-login")
        with imported(image, f"bench-{secrets.token_hex(3)}") as volumes:
            log(f"image imported with virsh in {volumes.seconds:.1f} s")
            done: list[BootRun] = []
            for i in range(runs):
                run = boot_once(node, volumes, image.cmdline, key, timeout, work)
                log(
                    f"baseline run {i + 1}/{runs}: start → lease {run.lease:.1f} s, "
                    f"→ SSH {run.ssh:.1f} s ({run.address})"
                )
                done.append(run)
            seen = leases()  # before the last run's lease could expire
    return {"import": volumes, "runs": done, "leases": seen}
